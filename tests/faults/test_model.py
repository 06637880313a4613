"""The relay core against a model, under a hostile line: Hypothesis drives G2–G6 step by step.

A real :class:`~gateway.relay.BankDispatcher` (fake clock; a real SQLite
:class:`~gateway.store.db.Database` and group-commit writer whose worker
thread and thread hop are replaced by explicit steps, :class:`Steps`) talks
to a real :class:`~gateway.simulate.bank.BankCore` through an in-memory line
that the state machine makes lose (any message, or specifically a receipt or
result), duplicate, delay and reorder in either direction, drop and
re-establish (at most twice a run), while time advances and the centre submits.

After every step (``@invariant``):

- G2: the bank executed no reference more than once, and only references of
  submitted instructions; the gateway sent an instruction (again) only while
  it had no receipt for it;
- G3/G5: the journal (the centre's feed) holds each (instruction, state) at
  most once and each bank movement at most once;
- no instruction's journal goes back to an earlier state;
- an outcome the gateway recorded is the outcome the bank made;
- the gateway logged no exception (nothing failed out of sight).

At the end of every run (``teardown``) the line heals and time advances:
every instruction must then be final or ``in_doubt`` (G6), and every one
that is final was executed exactly once (G2: it reached the bank).

Random but bounded (max_examples 30, 40 steps); a failure prints the shrunk
steps that reproduce it (and Hypothesis keeps the example in its database).
Checked against mutants of the gateway while writing it: no movement dedupe,
no status inquiries, a resend after the receipt — each is caught.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from adapters import base as msg
from gateway.config import GatewayConfig, load_config, render_toml
from gateway.demo import write_demo_config
from gateway.metrics import GatewayMetrics
from gateway.relay import BankDispatcher
from gateway.simulate.bank import BankCore
from gateway.store import instructions as q
from gateway.store import migrate, schema
from gateway.store.db import Database
from tests.kit.store import make_instruction

CENTRE = "C52240"
FINAL = {"succeeded", "failed"}
SETTLED = FINAL | {"in_doubt"}
RANK = {"received": 0, "sent": 1, "accepted": 2, "in_doubt": 3, "succeeded": 4, "failed": 4}
# Short timers, so that a few advance_time steps cross them: resend, inquire, give up into in_doubt.
MODEL_TIMEOUTS = {"receipt_timeout": 2.0, "result_timeout": 4.0, "status_query_interval": 1.0,
                  "status_query_attempts": 2}
HEAL_SECONDS = 300.0
MAX_DROPS = 2
MAX_HEAL_DELIVERIES = 5_000  # bounded: a healthy settle takes a few dozen  # simulated time the teardown grants once the line is healthy


class _Template:
    """One migrated SQLite file and config, copied for every example (migrating each time is slow)."""

    def __init__(self) -> None:
        # fsync on every commit (synchronous=FULL): keep the files in memory when the machine allows.
        base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
        self.dir = Path(tempfile.mkdtemp(prefix="hpf-model-", dir=base))
        path = write_demo_config(self.dir)
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        data["timeouts"].update(MODEL_TIMEOUTS)
        path.write_text(render_toml(data), encoding="utf-8")
        self.config: GatewayConfig = load_config(path, check_files=False)
        migrate.upgrade(self.config.database)
        self.db_file = self.dir / "var" / "gateway.db"
        self.runs = 0

    def fresh(self) -> str:
        """A database URL for a fresh copy of the migrated file."""
        self.runs += 1
        copy = self.dir / f"run-{self.runs}.db"
        shutil.copyfile(self.db_file, copy)
        return f"sqlite:///{copy}"

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


_TEMPLATE: _Template | None = None


class Steps:
    """A worker "thread" and a reactor thread hop that run only when the test says so.

    Pass it as the Database's reactor and pools: ``deferToThreadPool`` queues
    the work here, :meth:`run` executes it (the real SQL, in the real
    group-commit writer) and then delivers the results as the reactor would,
    in order.  Tests run inside the Twisted greenlet (pytest-twisted), where
    nothing may block on a Deferred; this keeps the database real and the
    stepping deterministic.
    """

    def __init__(self) -> None:
        self.work: list[tuple[Any, Any, tuple[Any, ...], dict[str, Any]]] = []
        self.hops: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []

    # ThreadPool, as deferToThreadPool uses it
    def callInThreadWithCallback(self, on_result: Any, func: Any, *args: Any, **kw: Any) -> None:
        self.work.append((on_result, func, args, kw))

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    # IReactorThreads, as deferToThreadPool uses it
    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:
        self.hops.append((f, args, kw))

    def run(self) -> bool:
        """Run the queued work, then deliver its results; whether anything happened."""
        did = False
        while self.work or self.hops:
            did = True
            work, self.work = self.work, []
            for on_result, func, args, kw in work:
                try:
                    value, ok = func(*args, **kw), True
                except BaseException:  # noqa: BLE001 (a worker thread hands every failure to its Deferred)
                    value, ok = Failure(), False
                on_result(ok, value)
            hops, self.hops = self.hops, []
            for f, args, kw in hops:
                f(*args, **kw)
        return did


def _stepped_database(url: str, steps: Steps) -> Database:
    db = Database(steps, url)
    # The pools are the Database's own ThreadPools; swap them for the stepper before anything runs.
    db.writer._pool = steps  # type: ignore[assignment]
    db._read_pool = steps  # type: ignore[assignment]
    if hasattr(db, "_urgent_pool"):
        db._urgent_pool = steps
    return db


def _result(d: Deferred[Any]) -> Any:
    """The value of a Deferred that has fired (raising its failure)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


class Line:
    """The gateway's side of one connection: what it sends goes to the bank's queue while it lives."""

    def __init__(self, machine: RelayMachine) -> None:
        self.machine = machine
        self.alive = True

    def send(self, message: msg.Message) -> None:
        if isinstance(message, msg.Instruction):
            # G2: an instruction goes (again) only while the gateway has no receipt for it.  Noted,
            # not asserted: this runs inside Deferred callbacks, which would swallow the error.
            state = self.machine.state_of_ref(message.seq_no)
            if state not in ("received", "sent"):
                self.machine.violations.append(f"{message.seq_no} sent again in state {state}")
        if isinstance(message, msg.StatusQuery):
            self.machine.inquiries += 1
        if self.alive:
            self.machine.to_bank.append(message)


class RelayMachine(RuleBasedStateMachine):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        assert _TEMPLATE is not None
        self.config = _TEMPLATE.config
        self.steps = Steps()
        self.db = _stepped_database(_TEMPLATE.fresh(), self.steps)
        self.clock = Clock()
        self.clock.advance(1_800_000_000)  # a plausible epoch: bank dates are derived from it
        self.dispatcher = BankDispatcher(self.config.banks["B001"], self.config, self.db, self.clock,
                                         GatewayMetrics())
        self.to_bank: list[msg.Message] = []
        self.to_gateway: list[msg.Message] = []
        self.line: Line | None = None
        self.submitted: dict[str, str] = {}  # instruction_id -> bank_ref
        self.core: BankCore | None = None
        self.drops = 0
        self.violations: list[str] = []  # broken promises seen inside callbacks
        self.failures: list[str] = []    # exceptions the gateway logged (log.failure)
        self._observer = self._watch_failures
        globalLogPublisher.addObserver(self._observer)
        self.inquiries = 0  # status inquiries the gateway sent
        self.journal_seq = 0  # how far the invariant has read the journal
        self.facts: set[tuple[str, ...]] = set()
        self.last_rank: dict[str, int] = {}

    # -- plumbing --------------------------------------------------------------

    def _watch_failures(self, event: dict[str, Any]) -> None:
        if "log_failure" in event:
            self.failures.append(f"{event.get('log_format') or event.get('event')}: "
                                 f"{event['log_failure'].getErrorMessage()}")

    def quiesce(self) -> None:
        """Run everything due now on the fake clock and wait for every database write and its callbacks."""
        for _ in range(1000):
            self.clock.advance(0)
            ran = self.steps.run()
            due = [c for c in self.clock.getDelayedCalls() if c.getTime() <= self.clock.seconds()]
            if not ran and not due:
                return
        raise AssertionError("the dispatcher did not quiesce")

    def bank_says(self, out: list[msg.Message]) -> None:
        if self.line is not None:
            self.to_gateway.extend(out)

    def connect(self) -> None:
        assert self.core is not None
        self.line = Line(self)
        self.dispatcher.link_up(self.line)
        self.quiesce()
        # A signed-on session: the bank pushes everything still unacknowledged.
        self.to_gateway.extend(self.core.pending_pushes())

    def state_of_ref(self, ref: str) -> str | None:
        i = schema.instructions
        with self.db.engine.connect() as c:
            return c.execute(select(i.c.state).where(i.c.bank_ref == ref)).scalar()

    def states(self) -> dict[str, str]:
        i = schema.instructions
        with self.db.engine.connect() as c:
            return {r.instruction_id: r.state for r in c.execute(select(i.c.instruction_id, i.c.state))}

    # -- rules -----------------------------------------------------------------

    @initialize(synchronous=st.booleans(), delay=st.sampled_from([1.0, 4.0, 15.0]),
                failure_rate=st.sampled_from([0.0, 0.3]), seed=st.integers(0, 1000), first=st.integers(1, 4))
    def open_bank(self, synchronous: bool, delay: float, failure_rate: float, seed: int, first: int) -> None:
        """The bank answers at once with the result, or with a receipt and pushes the result after ``delay``.

        ``first`` instructions are submitted at once, so that every run has something to relay.
        """
        self.core = BankCore(node=self.config.banks["B001"].node, gateway_node=self.config.node,
                             accounts={"6200001111222233": 10**14}, delay=0.0 if synchronous else delay,
                             reply_within=0.0, failure_rate=failure_rate, seed=seed)
        self.connect()
        self.submit(first)

    @rule(count=st.integers(1, 3))
    def submit(self, count: int) -> None:
        """The centre submits ``count`` instructions in one request (one intake commit)."""
        n = len(self.submitted)
        items = [q.IntakeItem(make_instruction(n + k), "B001") for k in range(count)]
        d = self.db.write(lambda tx: q.intake(tx, items))
        self.quiesce()
        records = [o.record for o in _result(d)]
        for rec in records:
            self.submitted[rec["instruction_id"]] = rec["bank_ref"]
        self.dispatcher.enqueue(records)
        self.quiesce()

    @precondition(lambda self: bool(self.to_bank))
    @rule(data=st.data())
    def deliver_to_bank(self, data: st.DataObject) -> None:
        """The bank takes one message (any of those on the line: reordering)."""
        if self.to_bank and self.core is not None:
            i = data.draw(st.integers(0, len(self.to_bank) - 1), label="to_bank index")
            self.bank_says(self.core.receive(self.to_bank.pop(i), self.clock.seconds()))

    @precondition(lambda self: bool(self.to_gateway))
    @rule(data=st.data())
    def deliver_to_gateway(self, data: st.DataObject) -> None:
        """The gateway takes one message (any of those on the line: reordering)."""
        if self.to_gateway and self.line is not None:
            i = data.draw(st.integers(0, len(self.to_gateway) - 1), label="to_gateway index")
            m = self.to_gateway.pop(i)
            self.dispatcher.handle(m, repr(m).encode())
            self.quiesce()

    @precondition(lambda self: bool(self.to_bank or self.to_gateway))
    @rule(data=st.data(), towards_bank=st.booleans())
    def lose(self, data: st.DataObject, towards_bank: bool) -> None:
        queue = self.to_bank if towards_bank else self.to_gateway
        if queue:
            queue.pop(data.draw(st.integers(0, len(queue) - 1), label="lost index"))

    @precondition(lambda self: any(isinstance(m, (msg.Receipt, msg.Result)) for m in self.to_gateway))
    @rule(data=st.data())
    def lose_an_answer(self, data: st.DataObject) -> None:
        """A receipt or result is lost: the messages whose loss the gateway must notice by itself."""
        answers = [i for i, m in enumerate(self.to_gateway) if isinstance(m, (msg.Receipt, msg.Result))]
        self.to_gateway.pop(data.draw(st.sampled_from(answers), label="lost answer"))

    @precondition(lambda self: bool(self.to_bank or self.to_gateway))
    @rule(data=st.data(), towards_bank=st.booleans())
    def duplicate(self, data: st.DataObject, towards_bank: bool) -> None:
        """The same message twice: a replay (same seq_no, same content)."""
        queue = self.to_bank if towards_bank else self.to_gateway
        if queue:
            queue.append(queue[data.draw(st.integers(0, len(queue) - 1), label="replayed index")])

    # At most MAX_DROPS per run: a reconnect makes the bank push everything unacknowledged again,
    # which would hide a gateway that forgets to ask about results lost on a living line.
    @precondition(lambda self: self.line is not None and self.drops < MAX_DROPS)
    @rule()
    def drop_link(self) -> None:
        """The connection dies: whatever was on the line is gone."""
        if self.line is not None:
            self.drops += 1
            self.line.alive = False
            self.dispatcher.link_down(self.line)
            self.line = None
            self.to_bank.clear()
            self.to_gateway.clear()
            self.quiesce()

    @precondition(lambda self: self.line is None)
    @rule()
    def reconnect(self) -> None:
        if self.line is None:
            self.connect()

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.5, 5.0, 12.0]))
    def advance_time(self, seconds: float) -> None:
        """Time passes: the gateway's timers (resend, inquire, in_doubt) and the bank's executions."""
        assert self.core is not None
        self.clock.advance(seconds)
        self.dispatcher.tick()
        self.quiesce()
        self.bank_says(self.core.tick(self.clock.seconds()))

    # -- what must hold after every step ---------------------------------------------

    @invariant()
    def nothing_went_wrong_out_of_sight(self) -> None:
        """No promise broken inside a callback, no exception logged by the gateway."""
        assert not self.violations, self.violations
        assert not self.failures, self.failures

    @invariant()
    def each_reference_executes_at_most_once(self) -> None:
        if self.core is None:
            return
        assert max(self.core.executions.values(), default=0) <= 1, self.core.executions
        assert set(self.core.executions) <= set(self.submitted.values())

    @invariant()
    def the_journal_repeats_nothing_never_goes_back_and_matches_the_bank(self) -> None:
        """Read what the journal gained since the last step (the feed is made of it) and check it."""
        if self.core is None:
            return
        e = schema.events
        with self.db.engine.connect() as c:
            rows = c.execute(select(e.c.seq, e.c.kind, e.c.instruction_id, e.c.state, e.c.payload)
                             .where(e.c.seq > self.journal_seq).order_by(e.c.seq)).all()
        for r in rows:
            self.journal_seq = r.seq
            if r.kind == "instruction.state":
                fact: tuple[str, ...] = ("state", r.instruction_id, r.state)
                last = self.last_rank.get(r.instruction_id, -1)
                assert RANK[r.state] >= last, f"{r.instruction_id} went back to {r.state}"
                self.last_rank[r.instruction_id] = RANK[r.state]
                if r.state in FINAL:  # the outcome recorded is the outcome the bank made
                    outcome = self.core.outcome(self.submitted[r.instruction_id])
                    assert outcome is not None and outcome.succeeded == (r.state == "succeeded"), \
                        (r.instruction_id, r.state, outcome)
            elif r.kind == "bank.movement":
                p = json.loads(r.payload)
                fact = ("movement", p["account"], p["host_seq_no"])
            else:
                continue
            assert fact not in self.facts, f"journalled twice: {fact}"
            self.facts.add(fact)

    # -- the end of a run: heal the line, let time pass ------------------------------------

    def teardown(self) -> None:
        try:
            if self.core is not None:
                self._heal_and_settle()
        finally:
            globalLogPublisher.removeObserver(self._observer)
            self.db.engine.dispose()

    def _heal_and_settle(self) -> None:
        assert self.core is not None
        if self.line is None:
            self.connect()
        waited = 0.0
        deliveries = 0
        while True:
            while self.to_bank or self.to_gateway:  # a healthy line: everything arrives, in order
                deliveries += 1
                assert deliveries <= MAX_HEAL_DELIVERIES, "the line never goes quiet: the two sides ping-pong"
                if self.to_bank:
                    self.bank_says(self.core.receive(self.to_bank.pop(0), self.clock.seconds()))
                if self.to_gateway:
                    m = self.to_gateway.pop(0)
                    self.dispatcher.handle(m, repr(m).encode())
                    self.quiesce()
            states = self.states()
            if all(states.get(i) in SETTLED for i in self.submitted) or waited >= HEAL_SECONDS:
                break
            self.clock.advance(1.0)
            waited += 1.0
            self.dispatcher.tick()
            self.quiesce()
            self.bank_says(self.core.tick(self.clock.seconds()))
        # What the run went through, for --hypothesis-show-statistics.
        event(f"instructions: {min(len(self.submitted), 5)}{'+' if len(self.submitted) >= 5 else ''}")
        for state in sorted(set(states.values())):
            event(f"ended {state}")
        if sum(self.core.duplicates.values()):
            event("the bank saw a resent or replayed instruction")
        if self.inquiries:
            event("the gateway asked the bank for a status")
        if self.core.counts.get("acks_unknown"):
            event("the bank saw a repeated acknowledgement")
        stuck = {i: states.get(i) for i in self.submitted if states.get(i) not in SETTLED}
        assert not stuck, f"not final nor in_doubt {HEAL_SECONDS:g}s after the line healed: {stuck}"
        self.nothing_went_wrong_out_of_sight()
        for instruction_id, state in states.items():
            if state in FINAL:  # reached the bank, exactly once
                assert self.core.executions[self.submitted[instruction_id]] == 1, instruction_id


def test_the_relay_keeps_its_promises_on_a_lossy_duplicating_reordering_line() -> None:
    global _TEMPLATE
    _TEMPLATE = _Template()
    try:
        run_state_machine_as_test(RelayMachine, settings=settings(
            max_examples=30, stateful_step_count=40, deadline=None,
            suppress_health_check=[HealthCheck.too_slow]))
    finally:
        _TEMPLATE.remove()
        _TEMPLATE = None
