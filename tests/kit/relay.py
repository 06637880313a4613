"""The relay's driver on a real store and a fake clock, for the tests that drive a dispatcher."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from adapters import base as msg
from gateway.config import load_config
from gateway.demo import write_demo_config
from gateway.metrics import GatewayMetrics
from gateway.relay import BankDispatcher
from gateway.store import migrate
from gateway.store.db import Database

__all__ = ["RecordingSession", "setup", "settle"]


class RecordingSession:
    """A bank link session that keeps what the dispatcher sends."""

    def __init__(self) -> None:
        self.sent: list[msg.Message] = []

    def send(self, message: msg.Message) -> None:
        self.sent.append(message)

    def of(self, kind: type) -> list:
        return [m for m in self.sent if isinstance(m, kind)]


@pytest.fixture
def setup(tmp_path):
    """The demo config's store, migrated and running, and bank B001's dispatcher on a fake clock."""
    config = load_config(write_demo_config(tmp_path), check_files=False)
    migrate.upgrade(config.database)
    db = Database(reactor, config.database)
    db.startService()
    clock = Clock()
    dispatcher = BankDispatcher(config.banks["B001"], config, db, clock, GatewayMetrics())
    yield config, db, clock, dispatcher
    pytest_twisted.blockon(db.stopService())


async def settle(db, dispatcher) -> None:
    """Let queued writes commit and their effects run (bank facts wait for the end of a reactor turn)."""
    for _ in range(10):
        dispatcher.clock.advance(0)
        await db.writer.idle()
        if not dispatcher._batch:
            return
