"""``TokenBucket``: tokens accrue at a rate up to a capacity and are spent.  Pure: the caller gives the time.

One bucket serves the centre API's per-peer rate limit
(:class:`gateway.centre_guard.RateLimiter`) and the centre simulator's pacing
(:class:`gateway.simulate.centre.CentreRun`).
"""

from __future__ import annotations

import math

__all__ = ["TokenBucket"]


class TokenBucket:
    """At most ``capacity`` tokens, refilled continuously at ``rate`` per second.

    Over any interval the amount taken is at most ``initial + rate * elapsed``
    and never more than ``capacity`` at once, so a stall is caught up by at
    most one burst.  ``initial`` defaults to a full bucket.
    """

    def __init__(self, rate: float, capacity: float, *, now: float, initial: float | None = None) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError("rate must be a positive number")
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.rate = rate
        self.capacity = capacity
        self._tokens = float(capacity if initial is None else min(initial, capacity))
        self._at = now

    def available(self, now: float) -> float:
        """Tokens that could be spent at ``now``."""
        self._refill(now)
        return self._tokens

    def take(self, n: int, now: float) -> bool:
        """Spend ``n`` tokens if there are that many; else spend none and return False."""
        self._refill(now)
        # A hair of tolerance so that float accrual (0.02 s * 50/s) does not
        # leave a request waiting one extra tick for 1e-15 of a token.
        if self._tokens + 1e-9 < n:
            return False
        self._tokens -= n
        return True

    def wait(self, now: float) -> float:
        """Take one token: 0.0 when there was one, else the seconds until there will be one (none taken)."""
        if self.take(1, now):
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def full(self, now: float) -> bool:
        """Whether the bucket would be full at ``now`` (so forgetting it changes nothing)."""
        return self.available(now) >= self.capacity

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
