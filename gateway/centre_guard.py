"""The centre API's abuse guards (``[limits] centre_*``).

:func:`connection_limits` feeds the shared :class:`gateway.web.ConnectionGuard`
(handshake and request deadlines, connections per source address and per
certificate identity, failed handshakes reported), on every listener of the
gateway; :class:`RateLimiter` gives each peer a token bucket of requests, and
the centre API answers 429 with Retry-After beyond it.
"""

from __future__ import annotations

from gateway.config import Limits
from gateway.token_bucket import TokenBucket
from gateway.web import ConnectionLimits

__all__ = ["RateLimiter", "connection_limits"]


class RateLimiter:
    """One :class:`TokenBucket` per peer key; buckets follow changed limits (SIGHUP)."""

    _PRUNE_ABOVE = 10_000

    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str, now: float, rate: float, burst: int) -> float:
        """Take a token for ``key``: 0.0 when allowed, else the seconds to wait."""
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate != rate or bucket.capacity != burst:
            if len(self._buckets) > self._PRUNE_ABOVE:
                # Full buckets hold no state worth keeping; this bounds memory under key churn.
                self._buckets = {k: b for k, b in self._buckets.items() if not b.full(now)}
            bucket = self._buckets[key] = TokenBucket(rate, burst, now=now)
        return bucket.wait(now)


def connection_limits(limits: Limits) -> ConnectionLimits:
    """The ``[limits] centre_*`` guards, as every gateway listener applies them."""
    return ConnectionLimits(connections_per_ip=limits.centre_connections_per_ip,
                            connections_per_peer=limits.centre_connections_per_centre,
                            handshake_timeout=limits.centre_handshake_timeout,
                            request_timeout=limits.centre_request_timeout,
                            idle_timeout=limits.centre_idle_timeout)
