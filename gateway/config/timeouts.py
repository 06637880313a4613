"""``[timeouts]``: heartbeats, dead peers, receipts, results and status queries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.config._base import Checker

_TIMEOUT_SECONDS = ("heartbeat_interval", "dead_after", "receipt_timeout", "result_timeout",
                    "status_query_interval", "max_feed_wait", "balance_query_interval",
                    "refuse_when_link_down_for", "shutdown_drain", "lease_ttl")
_TIMEOUT_KEYS = _TIMEOUT_SECONDS + ("status_query_attempts",)


@dataclass(frozen=True)
class Timeouts:
    """Link and instruction timers in seconds.  Defaults are the example config's values.

    Promise (when loaded): every value is finite and > 0, and ``dead_after > heartbeat_interval``.
    """

    heartbeat_interval: float = 15.0
    dead_after: float = 45.0
    receipt_timeout: float = 10.0
    result_timeout: float = 30.0
    status_query_interval: float = 5.0
    status_query_attempts: int = 5
    max_feed_wait: float = 30.0
    balance_query_interval: float = 300.0
    refuse_when_link_down_for: float = 300.0
    shutdown_drain: float = 10.0
    lease_ttl: float = 3.0


class TimeoutsSection(Checker):
    """The checks of ``[timeouts]`` (a part of the config checker)."""

    def timeouts(self, table: dict[str, Any] | None) -> Timeouts | None:
        if table is None:
            return None
        at = ("timeouts",)
        self.keys(table, at, _TIMEOUT_KEYS)
        defaults = Timeouts()
        seconds = {key: self.seconds(table, at, key, getattr(defaults, key))
                   for key in _TIMEOUT_SECONDS}
        attempts = self.integer(table, at, "status_query_attempts", 1, None,
                                default=defaults.status_query_attempts)
        heartbeat, dead_after = seconds["heartbeat_interval"], seconds["dead_after"]
        if heartbeat is not None and dead_after is not None and dead_after <= heartbeat:
            # A peer must get at least one probe before it is declared dead.
            self.problem(at + ("dead_after",),
                         f"must be greater than timeouts.heartbeat_interval ({heartbeat:g})")
            return None
        if attempts is None or any(v is None for v in seconds.values()):
            return None
        return Timeouts(**seconds, status_query_attempts=attempts)
