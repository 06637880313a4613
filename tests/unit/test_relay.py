"""The dispatcher's timing rules on a fake clock: resend without receipt, inquire, then in_doubt (G2, G6)."""

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
from gateway.store import instructions as q
from gateway.store import migrate
from gateway.store.db import Database
from tests.unit.test_store import make_instruction


class RecordingSession:
    def __init__(self) -> None:
        self.sent: list[msg.Message] = []

    def send(self, message: msg.Message) -> None:
        self.sent.append(message)

    def of(self, kind: type) -> list:
        return [m for m in self.sent if isinstance(m, kind)]


@pytest.fixture
def setup(tmp_path):
    config = load_config(write_demo_config(tmp_path), check_files=False)
    migrate.upgrade(config.database)
    db = Database(reactor, config.database)
    db.startService()
    clock = Clock()
    dispatcher = BankDispatcher(config.banks["B001"], config, db, clock, GatewayMetrics())
    yield config, db, clock, dispatcher
    pytest_twisted.blockon(db.stopService())


async def settle(db, dispatcher) -> None:
    """Let queued bank facts commit (they wait for the end of the reactor turn: clock.advance(0))."""
    for _ in range(10):
        dispatcher.clock.advance(0)
        await db.writer.idle()
        if not dispatcher._batch:
            return


async def _intake(db, dispatcher, n: int) -> list[dict]:
    outs = await db.write(lambda tx: q.intake(tx, [q.IntakeItem(make_instruction(i), "B001") for i in range(n)]))
    rows = [o.record for o in outs]
    dispatcher.enqueue(rows)
    await settle(db, dispatcher)  # the fenced claim commits, then the frames go out
    return rows


@pytest_twisted.ensureDeferred
async def test_without_a_receipt_the_instruction_is_resent_with_the_same_reference(setup):
    config, db, clock, d = setup
    session = RecordingSession()
    d.link_up(session)
    [row] = await _intake(db, d, 1)
    assert [m.seq_no for m in session.of(msg.Instruction)] == [row["bank_ref"]]
    clock.advance(config.timeouts.receipt_timeout - 0.1)
    d.tick()
    await settle(db, d)
    assert len(session.of(msg.Instruction)) == 1
    clock.advance(0.2)
    d.tick()
    await settle(db, d)
    assert [m.seq_no for m in session.of(msg.Instruction)] == [row["bank_ref"]] * 2


@pytest_twisted.ensureDeferred
async def test_after_a_receipt_the_gateway_only_asks_and_finally_goes_in_doubt(setup):
    config, db, clock, d = setup
    t = config.timeouts
    session = RecordingSession()
    d.link_up(session)
    [row] = await _intake(db, d, 1)
    ref = row["bank_ref"]
    d.handle(msg.Receipt("BANK1", ref, ref, "BDC1"), b"raw-receipt")
    await settle(db, d)
    clock.advance(t.result_timeout + 0.01)
    for _ in range(t.status_query_attempts):
        d.tick()
        clock.advance(t.status_query_interval)
    d.tick()
    await settle(db, d)
    assert len(session.of(msg.Instruction)) == 1, "never resent after the receipt"
    queries = session.of(msg.StatusQuery)
    assert len(queries) == t.status_query_attempts and {m.ref for m in queries} == {ref}
    rec = await db.read(q.get, "C52240", "I0")
    assert rec["state"] == "in_doubt"
    # a late result still settles it, and is acknowledged once committed
    d.handle(msg.Result("BANK2", ref, ref, True, "H000000000001"), b"raw-result")
    await settle(db, d)
    rec = await db.read(q.get, "C52240", "I0")
    assert rec["state"] == "succeeded"
    assert [a.reply_to for a in session.of(msg.Ack)] == ["BANK2"]


@pytest_twisted.ensureDeferred
async def test_the_window_bounds_instructions_awaiting_receipt(setup):
    config, db, clock, d = setup
    session = RecordingSession()
    d.link_up(session)
    await _intake(db, d, config.banks["B001"].window + 5)
    assert len(session.of(msg.Instruction)) == config.banks["B001"].window
    first = session.of(msg.Instruction)[0]
    d.handle(msg.Receipt("BANK1", first.seq_no, first.seq_no), b"r")
    await settle(db, d)
    assert len(session.of(msg.Instruction)) == config.banks["B001"].window + 1


@pytest_twisted.ensureDeferred
async def test_a_relinked_session_gets_everything_without_a_receipt_again_in_order(setup):
    config, db, clock, d = setup
    s1 = RecordingSession()
    d.link_up(s1)
    rows = await _intake(db, d, 3)
    d.handle(msg.Receipt("B", rows[1]["bank_ref"], rows[1]["bank_ref"]), b"r")
    d.link_down(s1)
    s2 = RecordingSession()
    d.link_up(s2)
    await settle(db, d)
    assert [m.seq_no for m in s2.of(msg.Instruction)] == [rows[0]["bank_ref"], rows[2]["bank_ref"]]


@pytest_twisted.ensureDeferred
async def test_a_result_for_another_banks_reference_is_refused_and_changes_nothing(setup):
    config, db, clock, d = setup
    session = RecordingSession()
    d.link_up(session)
    outs = await db.write(lambda tx: q.intake(tx, [q.IntakeItem(make_instruction(1), "B002")]))
    ref = outs[0].record["bank_ref"]
    d.handle(msg.Result("X1", ref, ref, True, "H1"), b"forged")
    await settle(db, d)
    rec = await db.read(q.get, "C52240", "I1")
    assert rec["state"] == "received"
    [nack] = session.of(msg.Ack)
    assert not nack.ok and nack.reply_to == "X1"


@pytest_twisted.ensureDeferred
async def test_movements_on_foreign_accounts_are_refused_and_ours_acknowledged_after_commit(setup):
    import datetime as dt

    config, db, clock, d = setup
    session = RecordingSession()
    d.link_up(session)
    entry = msg.Entry("6200001111222233", "H7", -100, dt.date(2026, 11, 27), dt.time(10, 0))
    foreign = msg.Entry("6222002222333344", "H8", -100, dt.date(2026, 11, 27), dt.time(10, 0))
    d.handle(msg.Movement("N1", (foreign,)), b"n1")
    d.handle(msg.Movement("N2", (entry,)), b"n2")
    d.handle(msg.Movement("N3", (entry,)), b"n2-replayed")
    await settle(db, d)
    acks = {a.reply_to: a.ok for a in session.of(msg.Ack)}
    assert acks == {"N1": False, "N2": True, "N3": True}
    from sqlalchemy import select
    from gateway.store import schema

    kinds = await db.read(lambda c: c.execute(select(schema.events.c.kind)).scalars().all())
    assert kinds.count("bank.movement") == 1


@pytest_twisted.ensureDeferred
async def test_movements_on_unregistered_accounts_are_kept_for_the_ledger(setup):
    import datetime as dt
    from sqlalchemy import select
    from gateway.store import schema

    config, db, clock, d = setup
    session = RecordingSession()
    d.link_up(session)
    stray = msg.Entry("9999000011112222", "H9", -5000, dt.date(2026, 11, 27), dt.time(9, 0))
    d.handle(msg.Movement("N9", (stray,)), b"n9")
    await settle(db, d)
    assert [(a.reply_to, a.ok) for a in session.of(msg.Ack)] == [("N9", True)]
    rows = await db.read(lambda c: c.execute(select(schema.events.c.kind, schema.events.c.centre_id)).all())
    assert [tuple(r) for r in rows] == [("bank.movement", None)]


@pytest_twisted.ensureDeferred
async def test_balances_of_every_account_at_the_bank_are_queried_and_stored(setup):
    import datetime as dt
    from sqlalchemy import select
    from gateway.store import schema

    config, db, clock, d = setup
    session = RecordingSession()
    assert d.query_balances() == 0  # no link, nothing asked
    d.link_up(session)
    assert d.query_balances() == 1
    [query] = session.of(msg.BalanceQuery)
    assert query.account == "6200001111222233"
    d.handle(msg.Balance("BB1", query.seq_no, query.account, 123456, 120000,
                         as_of=dt.datetime(2026, 11, 27, 10, 0)), b"bal")
    await settle(db, d)
    rows = await db.read(lambda c: c.execute(select(schema.events.c.kind, schema.events.c.payload)).all())
    assert rows[0].kind == "bank.balance" and '"balance":123456' in rows[0].payload


@pytest_twisted.ensureDeferred
async def test_a_node_that_lost_its_lease_sends_nothing(setup):
    """Fencing: the claim checks (owner, epoch) in the store before any frame goes out."""
    from gateway.store import leases

    config, db, clock, d = setup
    epoch = await db.write(lambda tx: leases.acquire(tx, d.lease_name, "node-a", 60_000_000, None))
    fenced = []
    d.on_fenced = lambda: fenced.append(True)
    await d.activate("node-a", d.lease_name, epoch)
    session = RecordingSession()
    d.link_up(session)
    await _intake(db, d, 1)
    assert len(session.of(msg.Instruction)) == 1
    # node-b takes the lease over (node-a was paused past the TTL)
    await db.write(lambda tx: tx.conn.execute(leases.L.update().values(expires_us=0)))
    assert await db.write(lambda tx: leases.acquire(tx, d.lease_name, "node-b", 60_000_000, None)) == epoch + 1
    await _intake(db, d, 2)
    assert len(session.of(msg.Instruction)) == 1 and fenced == [True]


@pytest_twisted.ensureDeferred
async def test_an_instruction_the_bank_never_confirms_goes_in_doubt_instead_of_being_resent_forever(setup):
    config, db, clock, d = setup
    t = config.timeouts
    session = RecordingSession()
    d.link_up(session)
    [row] = await _intake(db, d, 1)
    for _ in range(int(t.result_timeout / t.receipt_timeout) + 2):
        clock.advance(t.receipt_timeout)
        d.tick()
        await settle(db, d)
    rec = await db.read(q.get, "C52240", "I0")
    assert rec["state"] == "in_doubt" and "no receipt" in rec["reason"]
    sends = len(session.of(msg.Instruction))
    clock.advance(t.receipt_timeout * 3)
    d.tick()
    await settle(db, d)
    assert len(session.of(msg.Instruction)) == sends, "no resends once in doubt"
    assert sends >= 2  # it was resent (same reference) while the deadline ran
    assert {m.seq_no for m in session.of(msg.Instruction)} == {row["bank_ref"]}
