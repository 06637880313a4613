"""The console's watch: alerts for inquiries and rectification steps past their deadline, and the day
totals folded as copies and alerts arrive."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gateway.ledger.console import queries
from gateway.ledger.console.common import _now_us

if TYPE_CHECKING:
    from gateway.ledger.console.state import Console

__all__ = ["OverdueWatch"]

log = Logger()


class OverdueWatch(Service):
    """Every ``interval`` seconds, raise an alert for each inquiry and rectification step past its
    deadline (once each)."""

    name = "console-overdue"

    def __init__(self, console: Console, interval: float | None = None) -> None:
        assert console.config.console is not None
        self.console = console
        self._loop = LoopingCall(self.check)
        self._loop.clock = console.engine.reactor
        self.interval = interval if interval is not None else console.config.console.overdue_check

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def check(self) -> Deferred[Any]:
        c = self.console
        now_us = _now_us()

        async def run() -> None:
            created = await c.db.write(lambda tx: queries.raise_overdue(tx, now_us)
                                       + queries.raise_overdue_rectifications(tx, now_us))
            if created:
                c.engine.alerts_created(created)
            for totals in (c.totals, c.alert_totals):  # the day totals the overview and the reports read
                while await c.db.write(totals.fold):
                    pass

        d = Deferred.fromCoroutine(run())
        d.addErrback(lambda f: log.failure("console.overdue_failed", f))
        return d
