"""``[limits]``: amounts, queue bounds and the centre API's abuse guards."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.config._base import Checker
from gateway.model import format_amount

_LIMIT_KEYS = ("max_amount", "large_amount", "max_batch", "max_queue_per_bank", "centre_idle_timeout",
               "centre_handshake_timeout", "centre_request_timeout", "centre_connections_per_ip",
               "centre_connections_per_centre", "centre_requests_per_second", "centre_request_burst")


@dataclass(frozen=True)
class Limits:
    """Amount thresholds in fen, the batch size, and the centre API's guards against abuse.

    Defaults are the example config's values.  Promise (when loaded):
    ``0 < large_amount <= max_amount``, ``1 <= max_batch <= 1000``, every
    timeout finite and > 0 with ``centre_handshake_timeout <= centre_request_timeout``,
    and every connection and rate limit >= 1.

    The centre API guards: a connection must finish its TLS handshake within
    ``centre_handshake_timeout`` seconds and deliver each whole request
    within ``centre_request_timeout`` of its first byte (or of connecting);
    a keep-alive connection idle for ``centre_idle_timeout`` is closed.  At
    most ``centre_connections_per_ip`` connections from one source address
    (counted before the handshake) and ``centre_connections_per_centre`` per
    centre certificate identity are open at once; each centre may make
    ``centre_requests_per_second`` requests per second on average with bursts
    of ``centre_request_burst`` (a token bucket), beyond which it gets 429.
    """

    max_amount: int = 5_000_000_000  # 50,000,000.00 CNY
    large_amount: int = 100_000_000  # 1,000,000.00 CNY: approval_ref required at or above
    max_batch: int = 1000
    max_queue_per_bank: int = 20_000
    centre_idle_timeout: float = 75.0
    centre_handshake_timeout: float = 10.0
    centre_request_timeout: float = 60.0
    centre_connections_per_ip: int = 1024
    centre_connections_per_centre: int = 256
    centre_requests_per_second: float = 2000.0
    centre_request_burst: int = 2000


class LimitsSection(Checker):
    """The checks of ``[limits]`` (a part of the config checker)."""

    def limits(self, table: dict[str, Any] | None) -> Limits | None:
        if table is None:
            return None
        at = ("limits",)
        self.keys(table, at, _LIMIT_KEYS)
        defaults = Limits()
        max_amount = self.amount(table, at, "max_amount", defaults.max_amount)
        large_amount = self.amount(table, at, "large_amount", defaults.large_amount)
        max_batch = self.integer(table, at, "max_batch", 1, 1000, default=defaults.max_batch)
        max_queue = self.integer(table, at, "max_queue_per_bank", 1, 10_000_000,
                                 default=defaults.max_queue_per_bank)
        guards: dict[str, Any] = {
            key: self.seconds(table, at, key, getattr(defaults, key))
            for key in ("centre_idle_timeout", "centre_handshake_timeout", "centre_request_timeout")}
        for key in ("centre_connections_per_ip", "centre_connections_per_centre", "centre_request_burst"):
            guards[key] = self.integer(table, at, key, 1, 10_000_000, default=getattr(defaults, key))
        guards["centre_requests_per_second"] = self.rate(
            table, at, "centre_requests_per_second", defaults.centre_requests_per_second)
        if max_amount is None or large_amount is None or max_batch is None or max_queue is None \
                or any(v is None for v in guards.values()):
            return None
        if large_amount > max_amount:
            self.problem(at + ("large_amount",),
                         f"must not be above limits.max_amount ({format_amount(max_amount)})")
            return None
        # The request deadline also runs from the connection's start, so a longer
        # handshake allowance could never be used.
        if not self.not_above(at, guards, "centre_handshake_timeout", "centre_request_timeout"):
            return None
        return Limits(max_amount, large_amount, max_batch, max_queue, **guards)
