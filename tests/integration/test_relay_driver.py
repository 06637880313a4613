"""The relay's driver against a real store on a fake clock: effects carried out, one timer, nothing when idle.

The rules themselves (resend, inquire, in_doubt, the window) are the pure
Outbox's, tested in tests/unit/test_relay.py and tests/unit/test_outbox.py.
"""

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
from tests.kit.relay import RecordingSession, settle, setup  # noqa: F401,F811  (setup: the fixture)
from tests.kit.store import make_instruction


async def _intake(db, dispatcher, n: int) -> list[dict]:
    outs = await db.write(lambda tx: q.intake(tx, [q.IntakeItem(make_instruction(i), "B001") for i in range(n)]))
    rows = [o.record for o in outs]
    dispatcher.enqueue(rows)
    await settle(db, dispatcher)  # the fenced claim commits, then the frames go out
    return rows


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
    # A session opens with the balances, before anything else it sends.
    [query] = session.of(msg.BalanceQuery)
    assert session.sent[0] == query and query.account == "6200001111222233"
    assert d.query_balances() == 1
    assert len(session.of(msg.BalanceQuery)) == 2
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
async def test_a_commit_wakes_the_dispatcher_and_an_idle_one_arms_no_timer(setup):
    config, db, clock, d = setup
    session = RecordingSession()
    d.link_up(session)
    assert clock.getDelayedCalls() == [], "an idle relay arms nothing"
    [row] = await _intake(db, d, 1)  # no tick: the commit itself sent it
    assert [m.seq_no for m in session.of(msg.Instruction)] == [row["bank_ref"]]
    [timer] = clock.getDelayedCalls()  # the receipt deadline, and nothing else
    assert timer.getTime() == pytest.approx(clock.seconds() + config.timeouts.receipt_timeout)
    ref = row["bank_ref"]
    d.handle(msg.Result("BANK1", ref, ref, True, "H1"), b"raw-result")
    await settle(db, d)
    assert (await db.read(q.get, "C52240", "I0"))["state"] == "succeeded"
    assert clock.getDelayedCalls() == [], "settled: nothing left to wait for"


@pytest_twisted.ensureDeferred
async def test_the_timer_fires_the_resend_at_the_receipt_deadline_without_any_tick(setup):
    config, db, clock, d = setup
    session = RecordingSession()
    d.link_up(session)
    [row] = await _intake(db, d, 1)
    clock.advance(config.timeouts.receipt_timeout)
    await settle(db, d)
    assert [m.seq_no for m in session.of(msg.Instruction)] == [row["bank_ref"]] * 2


@pytest_twisted.ensureDeferred
async def test_status_inquiries_and_in_doubt_come_from_the_timer_on_the_banks_cadence(tmp_path):
    import dataclasses

    from gateway.config import StatusPolicy

    config = load_config(write_demo_config(tmp_path), check_files=False)
    migrate.upgrade(config.database)
    db = Database(reactor, config.database)
    db.startService()
    try:
        clock = Clock()
        bank = dataclasses.replace(config.banks["B001"], status=StatusPolicy(
            first_after=1.0, interval=1.0, backoff=2.0, max_interval=3.0, attempts=4))
        d = BankDispatcher(bank, config, db, clock, GatewayMetrics())
        session = RecordingSession()
        d.link_up(session)
        [row] = await _intake(db, d, 1)
        ref = row["bank_ref"]
        d.handle(msg.Receipt("BANK1", ref, ref), b"raw-receipt")
        await settle(db, d)
        asked = []
        for _ in range(20):
            clock.advance(0.5)
            await settle(db, d)
            asked += [clock.seconds()] * (len(session.of(msg.StatusQuery)) - len(asked))
        assert asked == [1.0, 2.0, 4.0, 7.0]  # 1, then waits of 1, 2, 3 (capped)
        assert (await db.read(q.get, "C52240", "I0"))["state"] == "in_doubt"  # one capped wait later
        assert clock.getDelayedCalls() == []
    finally:
        await db.stopService()


def test_alone_on_sqlite_the_relay_polls_nothing(tmp_path):
    from gateway.relay import Relay

    config = load_config(write_demo_config(tmp_path), check_files=False)
    clock = Clock()
    relay = Relay(config, None, clock, GatewayMetrics(), {})  # type: ignore[arg-type]
    for d in relay.dispatchers.values():
        d.active = False  # nothing to load: this checks the timers alone
    relay.startService()
    try:
        assert not relay._poll.running
        # only the balance schedule is armed: a real deadline, minutes away
        assert [round(c.getTime() - clock.seconds()) for c in clock.getDelayedCalls()] == \
            [round(config.timeouts.balance_query_interval)]
    finally:
        relay.stopService()


def _with_bank_keys(tmp_path, **keys):
    import tomllib

    from gateway.config import render_toml

    path = write_demo_config(tmp_path)
    data = tomllib.loads(path.read_text())
    data["banks"]["B001"].update(keys)
    path.write_text(render_toml(data))
    return path


def test_a_banks_status_cadence_is_read_from_its_section_and_defaults_to_the_timeouts(tmp_path):
    from gateway.relay import schedule_for

    config = load_config(_with_bank_keys(tmp_path, status_first_after=2, status_interval=1.5,
                                         status_backoff=2.0, status_max_interval=60,
                                         status_attempts=12, status_give_up_after=3600,
                                         status_before_resend=True),
                         check_files=False)
    s = schedule_for(config.banks["B001"], config.timeouts)
    assert (s.first_query_after, s.query_interval, s.query_backoff, s.max_query_interval, s.query_attempts,
            s.give_up_after, s.ask_before_resend) == (2.0, 1.5, 2.0, 60.0, 12, 3600.0, True)
    t = config.timeouts
    default = schedule_for(config.banks["B003"], t)  # no status keys: today's behaviour
    assert (default.first_query_after, default.query_interval, default.query_backoff,
            default.max_query_interval, default.query_attempts, default.give_up_after) == \
        (t.result_timeout, t.status_query_interval, 1.0, None, t.status_query_attempts, None)
    assert (default.receipt_timeout, default.give_up_unconfirmed) == (t.receipt_timeout, t.result_timeout)
    assert not default.ask_before_resend


@pytest.mark.parametrize("keys, problem", [
    ({"status_backoff": 0.5}, "banks.B001.status_backoff: must be a number from 1 to 10"),
    ({"status_interval": 0}, "banks.B001.status_interval: must be a finite number greater than 0"),
    ({"status_attempts": 0}, "banks.B001.status_attempts: must be from 1 to 1000"),
    ({"status_interval": 10, "status_max_interval": 5},
     "banks.B001.status_max_interval: must not be below status_interval"),
    ({"status_every": 5}, "banks.B001.status_every"),
    ({"status_before_resend": "yes"}, "banks.B001.status_before_resend: must be true or false"),
])
def test_bad_status_cadence_keys_are_refused(tmp_path, keys, problem):
    from gateway.config import ConfigError

    with pytest.raises(ConfigError) as e:
        load_config(_with_bank_keys(tmp_path, **keys), check_files=False)
    assert any(problem in p for p in e.value.problems), e.value.problems


@pytest_twisted.ensureDeferred
async def test_a_link_that_dies_inside_send_loses_nothing_and_sends_nothing_more_on_it(setup):
    """A transport may fail while writing (one connection per request): the rest waits for the next link."""
    config, db, clock, d = setup

    class Dying(RecordingSession):
        def send(self, message: msg.Message) -> None:
            super().send(message)
            if isinstance(message, msg.Instruction):
                d.link_down(self)

    dying = Dying()
    d.link_up(dying)
    rows = await _intake(db, d, 3)
    assert len(dying.of(msg.Instruction)) == 1  # the first write killed it; nothing more on it
    fresh = RecordingSession()
    d.link_up(fresh)
    await settle(db, d)
    assert [m.seq_no for m in fresh.of(msg.Instruction)] == [r["bank_ref"] for r in rows]


@pytest_twisted.ensureDeferred
async def test_after_a_restart_a_bank_that_wants_it_is_asked_before_anything_is_sent_again(setup):
    """status_before_resend: what an earlier process sent is reconciled by a status inquiry, never resent blindly."""
    import dataclasses

    from gateway.config import StatusPolicy

    config, db, clock, d = setup
    d.link_up(RecordingSession())
    [row] = await _intake(db, d, 1)  # sent (and recorded as sent) by the process that then died
    bank = dataclasses.replace(config.banks["B001"], status=StatusPolicy(before_resend=True))
    again = BankDispatcher(bank, config, db, clock, GatewayMetrics())
    await again.load()
    session = RecordingSession()
    again.link_up(session)
    await settle(db, again)
    assert session.of(msg.Instruction) == []
    [query] = session.of(msg.StatusQuery)
    assert query.ref == row["bank_ref"]
    again.handle(msg.NotFound("BANK1", query.seq_no, row["bank_ref"]), b"raw-not-found")
    await settle(db, again)
    assert [m.seq_no for m in session.of(msg.Instruction)] == [row["bank_ref"]]


@pytest_twisted.ensureDeferred
async def test_a_load_the_store_fails_is_tried_again_and_its_instructions_are_sent(setup):
    """A node taking the link over while the database fails must not sit on an empty outbox."""
    from twisted.internet.defer import fail
    from twisted.internet.task import deferLater

    from gateway.relay import LOAD_RETRY
    from gateway.store.db import StoreUnavailable

    config, db, clock, d = setup
    # Committed before this node took the link over: only a load finds them.
    await db.write(lambda tx: q.intake(tx, [q.IntakeItem(make_instruction(i), "B001") for i in range(3)]))
    real, tries = db.read, []

    def failing_once(fn, *args):
        tries.append(fn)
        return fail(StoreUnavailable("server closed the connection")) if len(tries) == 1 else real(fn, *args)

    db.read = failing_once
    session = RecordingSession()
    d.link_up(session)
    await d.load()
    assert not session.of(msg.Instruction)  # the load failed: nothing known yet
    clock.advance(LOAD_RETRY)
    for _ in range(50):  # the second load reads in the store's thread, then the claim commits
        await deferLater(reactor, 0.02, lambda: None)
        await settle(db, d)
        if len(session.of(msg.Instruction)) == 3:
            break
    assert len(tries) == 2
    assert len(session.of(msg.Instruction)) == 3
