"""Keeping a lease: which node of several sharing one database acts for a bank link or the forwarder.

A :class:`LeaseKeeper` tries every ``ttl / 4`` seconds to take or renew its
lease (:mod:`gateway.store.leases`).  It calls ``on_gain(epoch)`` when this
node starts owning and ``on_lose()`` when it stops: when another node holds
the lease, when a renewal is refused, or when renewals have failed for most of
the TTL (the database is unreachable: another node may take over, so stop
acting before the lease can expire).  Takeover after the owner dies is thus
bounded by the TTL plus one attempt.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gateway.store import leases
from gateway.store.db import Database

__all__ = ["LeaseKeeper"]

log = Logger()


class LeaseKeeper(Service):
    """Holds lease ``lease`` for ``owner`` while it can (see the module docstring)."""

    def __init__(self, db: Database, clock: IReactorTime, *, lease: str, owner: str, ttl: float,
                 on_gain: Callable[[int], Any], on_lose: Callable[[], Any]) -> None:
        self.db = db
        self.clock = clock
        self.lease = lease
        self.owner = owner
        self.ttl = ttl
        self.on_gain = on_gain
        self.on_lose = on_lose
        self.epoch: int | None = None
        self.renewed_at = 0.0
        self._busy = False
        self._loop = LoopingCall(self.attempt)
        self._loop.clock = clock
        self.setName(f"lease-{lease}")

    @property
    def held(self) -> bool:
        return self.epoch is not None

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.ttl / 4, now=True)

    def stopService(self) -> Any:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        if self.epoch is not None:
            epoch, self.epoch = self.epoch, None
            self.on_lose()
            d = self.db.write_now(lambda tx: leases.release(tx, self.lease, self.owner, epoch))
            return d.addErrback(lambda f: log.failure("lease.release_failed", f, lease=self.lease))
        return None

    def attempt(self) -> None:
        now = self.clock.seconds()
        if self.epoch is not None and now - self.renewed_at > self.ttl * 0.75:
            log.warn("lease.expiring", lease=self.lease, owner=self.owner, since_renewal_s=round(now - self.renewed_at, 2))
            self._lost()
        if self._busy:
            return
        self._busy = True
        held = self.epoch
        ttl_us = int(self.ttl * 1_000_000)
        d = self.db.write_now(lambda tx: leases.acquire(tx, self.lease, self.owner, ttl_us, held))
        d.addCallbacks(self._answer, self._failed, callbackArgs=(held, now))

    def _answer(self, epoch: int | None, asked_with: int | None, at: float) -> None:
        self._busy = False
        if not self.running:
            return
        if epoch is None:
            if self.epoch is not None:
                log.warn("lease.taken_over", lease=self.lease, owner=self.owner)
                self._lost()
            return
        self.renewed_at = at
        if self.epoch == epoch:
            return
        if self.epoch is not None:
            self._lost()  # our epoch went stale
        self.epoch = epoch
        log.info("lease.gained", lease=self.lease, owner=self.owner, epoch=epoch)
        try:
            self.on_gain(epoch)
        except Exception:
            log.failure("lease.on_gain_failed", lease=self.lease)

    def _failed(self, failure: Any) -> None:
        self._busy = False
        log.warn("lease.attempt_failed", lease=self.lease, error=failure.getErrorMessage()[:200])

    def _lost(self) -> None:
        if self.epoch is None:
            return
        self.epoch = None
        try:
            self.on_lose()
        except Exception:
            log.failure("lease.on_lose_failed", lease=self.lease)

    def fresh(self) -> bool:
        """Whether the lease is held and was renewed recently enough to act on it now."""
        return self.epoch is not None and self.clock.seconds() - self.renewed_at < self.ttl * 0.75

    def fenced(self) -> None:
        """A fenced write proved the lease gone: stop acting now."""
        self._lost()
