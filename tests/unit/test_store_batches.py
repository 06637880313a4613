"""Bank batches in the store (gateway/store/batches.py), on SQLite and PostgreSQL, and the relay's
reads of them (gateway/relay_batch.py): stored whole or refused whole, found again after a restart
and by another node's poll, never taken for single instructions."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from gateway import lifecycle
from gateway import relay_batch as rb
from gateway.store import batches as sb
from gateway.store import instructions as q
from gateway.store.db import Database
from tests.kit.store import make_instruction


@pytest.fixture
def db(database_url):
    database = Database(reactor, database_url)
    database.startService()
    yield database
    pytest_twisted.blockon(database.stopService())


def _items(*ns: int) -> list[q.IntakeItem]:
    return [q.IntakeItem(make_instruction(n), "B001") for n in ns]


@pytest_twisted.inlineCallbacks
def test_a_bank_batch_is_stored_whole_and_found_again_as_one(db):
    single = yield db.write(lambda tx: q.intake(tx, _items(9)))
    outs = yield db.write(lambda tx: sb.intake_bank_batch(tx, _items(1, 2, 3)))
    assert [o.status for o in outs] == ["created"] * 3
    refs = [o.record["bank_ref"] for o in outs]
    assert {o.record["batch_ref"] for o in outs} == {refs[0]}

    rows, batches = yield db.read(rb.load_all, "B001")
    assert [r["bank_ref"] for r in rows] == [single[0].record["bank_ref"]]   # the lines are not singles
    [batch] = batches
    assert batch["batch_ref"] == refs[0] and [r["bank_ref"] for r in batch["lines"]] == refs
    item = rb.batch_open(batch, lambda r: r["bank_ref"])
    assert (item.ref, item.members, item.accepted, item.batch_no) == (refs[0], tuple(refs), False, "")

    # Another node's poll sees the single as a single and the lines as their batch.
    singles, polled, top = yield db.read(rb.poll_new, "B001", 0, 100)
    assert [r["bank_ref"] for r in singles] == [single[0].record["bank_ref"]]
    assert [b["batch_ref"] for b in polled] == [refs[0]] and top == max(o.record["id"] for o in outs)

    # Sent, then confirmed under a BatchNo, one line settled: a reload knows all of it.
    yield db.write(lambda tx: q.record_sent(tx, "B001", refs))
    yield db.write(lambda tx: q.apply_bank_batch(tx, "B001", [
        q.BankFact(r, lifecycle.ReceiptConfirmed(), bank_seq_no="BN42") for r in refs]))
    yield db.write(lambda tx: q.apply_bank_batch(tx, "B001", [
        q.BankFact(refs[1], lifecycle.ResultReceived(True), host_seq_no="H2", bank_seq_no="BN42")]))
    _, [batch] = yield db.read(rb.load_all, "B001")
    item = rb.batch_open(batch, lambda r: r["bank_ref"])
    assert (item.accepted, item.batch_no, item.sends, item.done) == (True, "BN42", 1, frozenset({refs[1]}))
    # Every line settled: no batch left to relay.
    yield db.write(lambda tx: q.apply_bank_batch(tx, "B001", [
        q.BankFact(r, lifecycle.ResultReceived(False), text="closed") for r in (refs[0], refs[2])]))
    _, batches = yield db.read(rb.load_all, "B001")
    assert batches == []


@pytest_twisted.inlineCallbacks
def test_a_bank_batch_repeated_whole_is_recognised_and_in_part_is_refused(db):
    yield db.write(lambda tx: sb.intake_bank_batch(tx, _items(1, 2)))
    again = yield db.write(lambda tx: sb.intake_bank_batch(tx, _items(1, 2)))
    assert [o.status for o in again] == ["existing", "existing"]
    for ns in ((1, 2, 3), (2, 1), (1,)):
        with pytest.raises(sb.BatchConflict):
            yield db.write(lambda tx, ns=ns: sb.intake_bank_batch(tx, _items(*ns)))
    # Stored singly before: not a bank batch afterwards.
    yield db.write(lambda tx: q.intake(tx, _items(5, 6)))
    with pytest.raises(sb.BatchConflict):
        yield db.write(lambda tx: sb.intake_bank_batch(tx, _items(5, 6)))
    # Nothing of a refused batch was stored.
    row = yield db.read(q.get, "C52240", "I3")
    assert row is None
    # A line policy refuses refuses the whole batch.
    with pytest.raises(sb.BatchConflict):
        yield db.write(lambda tx: sb.intake_bank_batch(tx, [q.IntakeItem(make_instruction(7), "B001"),
                                                           q.IntakeItem(make_instruction(8), "B001", refusal="no")]))
    row = yield db.read(q.get, "C52240", "I7")
    assert row is None
