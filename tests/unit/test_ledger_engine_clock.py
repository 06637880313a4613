"""The match engine's deadlines wait for a batch the ledger is still filing (MatchEngine.arrived).

A saturated relay run raised balance-break on consistent data: a batch took longer than
result_deadline to check and store, the stream clock ran on in real time meanwhile, and a
balance pair was settled before the movement inside that batch was matched.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor, task

from gateway.ledger import store
from gateway.ledger.engine import MatchEngine
from gateway.ledger.matcher import Registry, Thresholds
from gateway.ledger.metrics import LedgerMetrics
from tests.kit.ledger import T0, file, make_copy


@pytest_twisted.inlineCallbacks
def test_deadlines_wait_while_a_batch_is_being_filed(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store.MIGRATIONS.upgrade(url)
    ldb = store.LedgerDatabase(reactor, url)
    ldb.startService()
    wall = [T0 / 1_000_000 + 0.5]  # the ledger's clock, moved by the test
    engine = MatchEngine(ldb, Registry(), Thresholds(large_amount=100_000_000, result_deadline_s=10.0,
                                                     booking_deadline_s=100.0),
                         LedgerMetrics(), task.Clock(), clock=lambda: wall[0])
    engine.startService()
    try:
        yield engine._starting
        outcomes = yield file(ldb, [make_copy(1)])  # an instruction received, its result still to come
        engine.observe([o.row for o in outcomes if o.row is not None])
        assert engine.matcher.pending()["result"] == 1

        token = engine.arrived()       # a batch comes in and takes a minute to check and store
        wall[0] += 60.0
        engine.tick()
        assert engine.matcher.pending()["result"] == 1, "a deadline ran while its copies could be in the batch"

        engine.settled(token)          # the batch is matched (it held nothing for I1)
        engine.tick()
        assert engine.matcher.pending()["result"] == 0
    finally:
        yield engine.stopService()
        yield ldb.stopService()
