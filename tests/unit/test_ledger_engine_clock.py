"""The match engine's deadlines wait for copies the ledger does not have yet (bench/README.md, item 39).

A saturated relay run raised balance-break on consistent data, twice.  First a batch took
longer than result_deadline to check and store, the stream clock ran on in real time
meanwhile, and a balance pair was settled before the movement inside that batch was matched
(MatchEngine.arrived).  Then the movement was still at the gateway: the POST before it went
unanswered and was sent again 42 s later, and the ledger, seeing no copy, ran its clock in
real time (StreamClock.head: each batch says how far the gateway's journal had got).
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import reactor, task

from gateway.copies import Unreadable, read
from gateway.ledger import store
from gateway.ledger.engine import MatchEngine
from gateway.ledger.matcher import Fact, Matcher, Registry, StreamClock, Thresholds
from gateway.ledger.metrics import LedgerMetrics
from tests.kit.ledger import DEBIT, T0, file, make_copy, movement_payload, row_of


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


# -- copies still at the gateway (StreamClock.head) ---------------------------------------------

DEADLINE = 10.0   # result_deadline in the demo and the benchmark: a balance pair settles 10 s on
LOST_POST = 42.0  # the movement's POST went unanswered and was sent again this much later
FLOOR = 0.05      # the quickest delivery: a copy reaches the ledger 50 ms after its journal time


def _balance(seq: int, balance: int, at: str, made_s: float) -> dict[str, Any]:
    return make_copy(seq, kind="bank.balance", state=None, instruction_id=None,
                     created_us=T0 + int(made_s * 1_000_000),
                     payload={"account": DEBIT, "balance": balance, "available": balance, "overdraft": 0,
                              "status": "0", "as_of": f"2026-11-27T{at}", "bank": "B001"})


def _item39() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The account's journal at the gateway: a snapshot, a later one, and the movement between
    them, which the bank reported (and the gateway journalled) 1.4 s after the later snapshot."""
    moved = -160_267
    earlier = _balance(1, 10_000_000, "10:30:00", 0.0)
    later = _balance(2, 10_000_000 + moved, "10:30:02", 2.0)
    movement = make_copy(3, kind="bank.movement", state=None, instruction_id=None,
                         created_us=T0 + 3_400_000, payload=dict(movement_payload("H0001", moved), time="10:30:01"))
    return earlier, later, movement


def _deliver(clock: StreamClock, *, head: bool, movement_at: float | None,
             until: float) -> tuple[list[str], Matcher, list[tuple[float, dict[str, tuple[int, float]]]]]:
    """Item 39's delivery, as the engine feeds the matcher: the earlier snapshot alone, at
    once; the later one in a batch sent after the movement was journalled (so a gateway that
    says so says its journal is at seq 3), then nothing until the movement at ``movement_at``
    (never, when None).  Ticks every half second; ledger time 0 is the gateway's time 0.
    Returns the rules raised, the matcher, and what :meth:`StreamClock.behind` said at each tick."""
    earlier, later, movement = _item39()
    gw = (T0 / 1e6)  # a ledger clock on the gateway's: delay = ledger time - journal time
    m = Matcher(Registry(), Thresholds(large_amount=10**12, result_deadline_s=DEADLINE, booking_deadline_s=100.0))
    arrivals: list[tuple[float, list[dict[str, Any]], int]] = [(FLOOR, [earlier], 1), (3.4 + FLOOR, [later], 3)]
    if movement_at is not None:
        arrivals.append((movement_at, [movement], 3))
    rules: list[str] = []
    seen: list[tuple[float, dict[str, tuple[int, float]]]] = []
    t = 0.0
    while t < until:
        while arrivals and arrivals[0][0] <= t:
            _, batch, head_seq = arrivals.pop(0)
            if head:
                clock.head("main", head_seq)
            for doc in batch:
                clock.reached("main", doc["seq"], gw + t)
                now = clock.copy("main", doc["created_us"], gw + t)
                rules += [a.rule for a in m.observe(Fact.from_copy(doc), now)]
        rules += [a.rule for a in m.tick(clock.now(gw + t))]
        seen.append((t, clock.behind(gw + t)))
        t += 0.5
    return rules, m, seen


def test_a_balance_pair_waits_for_a_movement_the_gateway_said_it_had():
    """Item 39 as it happened: the movement between two snapshots reaches the ledger 42 s
    after the later one, its POST having gone unanswered.  The batch with the later snapshot
    said the gateway's journal was already at the movement's seq, so the pair is not settled
    before the movement is matched: no balance-break.  It is settled once it is."""
    rules, m, seen = _deliver(StreamClock(), head=True, movement_at=3.45 + LOST_POST, until=120.0)
    assert "balance-break" not in rules
    assert m.pending().get("balance", 0) == 0, "the pair was never settled: the test proves nothing"
    waiting = [b["main"] for t, b in seen if 10.0 <= t < 3.45 + LOST_POST]
    assert waiting and all(events == 1 and held > 0 for events, held in waiting)  # what the gauges show
    assert seen[-1][1]["main"] == (0, 0.0)


def test_a_gateway_that_does_not_say_how_far_it_is_is_judged_as_before():
    """Without ``head_seq`` (a gateway of an earlier release) the same delivery raises the
    balance-break item 39 found: the ledger cannot know of copies it has not seen."""
    rules, _, seen = _deliver(StreamClock(), head=False, movement_at=3.45 + LOST_POST, until=120.0)
    assert rules.count("balance-break") == 1
    assert all(b.get("main", (0, 0.0)) == (0, 0.0) for _, b in seen)


def test_a_gateway_silent_past_the_bound_no_longer_holds_the_deadlines():
    """The gateway dies after saying it had the movement: the pair waits ``hold_s`` from the
    gateway's last copy taken, then the clock runs in real time again and the pair is judged
    on what arrived (here a break: the movement never came)."""
    hold = 30.0
    last_taken = 3.5  # the later snapshot, taken at the first tick after it arrived
    rules, _, seen = _deliver(StreamClock(hold_s=hold), head=True, movement_at=None, until=last_taken + hold + 5)
    assert rules.count("balance-break") == 1
    held = {t: b.get("main") for t, b in seen}
    assert held[30.0] == (1, 30.0 - last_taken)                   # still waiting, and it shows
    assert held[34.5] == (1, 0.0)                                 # past the bound: known behind, not waiting
    # ... and the break came only once the bound had passed (none in the ticks before it).
    early, _, _ = _deliver(StreamClock(hold_s=hold), head=True, movement_at=None, until=last_taken + hold - 0.5)
    assert "balance-break" not in early


def test_a_gateway_behind_holds_the_clock_only_between_its_copies():
    """A gateway delivering a backlog is behind at every batch: each copy taken moves the held
    clock to that copy's time (plus the quickest delivery), so deadlines keep falling due, a
    batch behind; a head already reached or one a stale resend repeats holds nothing."""
    c = StreamClock(hold_s=60.0)
    us = lambda s: int(s * 1_000_000)  # noqa: E731
    c.reached("main", 1, 100.0)
    assert c.copy("main", us(1000), wall=100.0) == 100.0      # floor: 900 s (the clocks' offset)
    c.head("main", 5)
    assert c.now(130.0) == 100.0                                # held at the last copy's time
    c.reached("main", 2, 131.0)
    assert c.copy("main", us(1010), wall=131.0) == 110.0       # the next copy moves it on
    assert c.now(140.0) == 110.0
    c.reached("main", 5, 141.0)
    assert c.copy("main", us(1040), wall=141.0) == 140.0       # caught up
    c.head("main", 4)                                           # a resend's older head: nothing missing
    assert c.now(150.0) == 149.0 and c.behind(150.0) == {"main": (0, 0.0)}
    c.head("other", 9)                                          # a gateway never timed holds nothing
    assert c.now(151.0) == 150.0 and c.behind(151.0)["other"] == (9, 0.0)


@pytest_twisted.inlineCallbacks
def test_the_engine_waits_for_a_reported_head_and_gauges_it(tmp_path):
    """The engine takes each stored copy's gateway seq (readable or not), and a head reported
    with a batch (``Ingest.file`` calls ``reported_head``) holds its deadlines, for at most
    ``behind_hold`` seconds after the gateway's last copy; the two gauges say so."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store.MIGRATIONS.upgrade(url)
    ldb = store.LedgerDatabase(reactor, url)
    ldb.startService()
    wall = [T0 / 1_000_000 + 0.5]
    metrics = LedgerMetrics()
    engine = None

    def gauge(name: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"gateway": "main"})

    try:
        engine = MatchEngine(ldb, Registry(), Thresholds(large_amount=100_000_000, result_deadline_s=10.0,
                                                         booking_deadline_s=100.0),
                             metrics, task.Clock(), clock=lambda: wall[0], behind_hold=45.0)
        engine.startService()
        yield engine._starting
        engine.reported_head("main", 3)     # the batch holding seq 1 said the journal was at 3
        outcomes = yield file(ldb, [make_copy(1)])  # an instruction received, its result still to come
        engine.observe([o.row for o in outcomes if o.row is not None])
        wall[0] += 40.0                     # seq 2 and 3 unanswered for 40 s
        engine.tick()
        assert engine.matcher.pending()["result"] == 1, "a deadline ran while its result was still at the gateway"
        assert gauge("hpf_ledger_gateway_behind_events") == 2.0
        assert gauge("hpf_ledger_gateway_hold_seconds") == 40.0

        wall[0] += 10.0                     # past behind_hold: the gateway may be dead
        engine.tick()
        assert engine.matcher.pending()["result"] == 0
        assert (gauge("hpf_ledger_gateway_behind_events"), gauge("hpf_ledger_gateway_hold_seconds")) == (2.0, 0.0)

        unreadable = read(make_copy(3, instruction_id="I3", payload={"not": "readable"}), expected_alg="ed25519")
        assert isinstance(unreadable, Unreadable)
        late = yield ldb.write(lambda tx: store.store_copies(
            tx, "main", [row_of(make_copy(2, instruction_id="I2")), store.CopyRow.unreadable(unreadable)]))
        assert [o.status for o in late] == ["stored", "refused-stored"]
        engine.observe([o.row for o in late if o.row is not None])  # the unreadable copy is delivered too
        engine.tick()
        assert gauge("hpf_ledger_gateway_behind_events") == 0.0
    finally:
        if engine is not None:
            yield engine.stopService()
        yield ldb.stopService()
