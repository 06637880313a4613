"""A whole relay world around the pure Outbox, in memory and deterministic: for the property test and the simulation.

The world holds what a gateway node and its bank are made of, with no
reactor, no database and no sockets:

- a durable **store** (what the database would hold: each reference's state
  and recorded sends, the journal of state changes), applying facts with the
  real :func:`gateway.lifecycle.advance`, as ``gateway.store.instructions`` does;
- the **outbox** of the running node, and the commits it asked for that have
  not happened yet (claims and bank facts: a crash loses them);
- a **line** in each direction that the schedule may make lose, duplicate and
  reorder messages, and that dies with the link;
- a **model bank** that executes each reference at most once (it dedupes by
  reference, as banks do), answers receipts, results and status inquiries,
  pushes late results until they are acknowledged, and may leave a reference
  unexecuted for ever (a stuck instruction the gateway must give up on).

Every step is checked as it happens (:class:`Broken` names the promise); a
restart is a fresh Outbox rebuilt from the store alone.  :class:`Node` is
the hand-driven counterpart for example tests (no bank, no randomness).
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

from adapters import base as msg
from gateway import lifecycle
from gateway.model import FINAL_STATES, State
from gateway.outbox import (Ack, Claim, Effect, Foreign, Open, Outbox, Outcome, Phase, Query, Record, Schedule,
                            Send)

__all__ = ["Broken", "World", "Node", "SCHEDULE", "NODE_SCHEDULE", "STEPS", "apply_step", "random_steps"]

SCHEDULE = Schedule(receipt_timeout=2.0, give_up_unconfirmed=7.0, first_query_after=3.0, query_interval=1.0,
                    query_backoff=2.0, max_query_interval=3.0, query_attempts=3, give_up_after=None)

_OPEN = {State.RECEIVED.value, State.SENT.value, State.ACCEPTED.value}
_FINAL = {s.value for s in FINAL_STATES}
_RANK = {"received": 0, "sent": 1, "accepted": 2, "in_doubt": 3, "succeeded": 4, "failed": 4}
_DAY = dt.date(2026, 12, 7)


class Broken(AssertionError):
    """A promise of the relay was broken (the message names which)."""


@dataclass
class _Stored:
    state: str = "received"
    sends: int = 0


@dataclass
class _BankRef:
    outcome: bool | None = None   # None: executing (or stuck)
    silent: bool = False          # the bank never says anything about it (a black hole)
    executions: int = 0
    done_at: float | None = None  # when it finishes (None: never)


@dataclass
class World:
    """See the module docstring.  ``window`` and ``schedule`` configure the outbox."""

    rng: random.Random
    window: int = 3
    schedule: Schedule = SCHEDULE
    now: float = 0.0
    store: dict[str, _Stored] = field(default_factory=dict)
    journal: list[tuple[str, str]] = field(default_factory=list)
    pending_db: list[tuple[Any, Any]] = field(default_factory=list)  # (the outbox that asked, Claim | Record)
    to_bank: list[Any] = field(default_factory=list)
    to_gateway: list[Any] = field(default_factory=list)
    up: bool = False
    bank: dict[str, _BankRef] = field(default_factory=dict)
    unacked: dict[str, msg.Message] = field(default_factory=dict)  # bank pushes awaiting the gateway's Ack
    stuck_rate: float = 0.1
    silent_rate: float = 0.03
    sync_rate: float = 0.3
    restarts: int = 0
    seq: int = 0

    def __post_init__(self) -> None:
        self.outbox = self._new_outbox()
        self._told: set[str] = set()   # refs this incarnation heard a receipt or result for
        self._last_send: dict[str, tuple[float, int]] = {}  # ref -> (time, link generation) of its last Send
        self._not_found_since: set[str] = set()  # refs a NotFound answered since their last Send
        self._finals: dict[str, str] = {}
        # Across restarts (the world knows what really went out): refs sent at least once, and
        # whether a NotFound about each reached a gateway since its last send.
        self._ever_sent: set[str] = set()
        self._nf_since_send: dict[str, bool] = {}

    # -- the gateway node ---------------------------------------------------------

    def _new_outbox(self) -> Outbox:
        return Outbox(self.window, self.schedule, self._new_seq)

    def _new_seq(self) -> str:
        self.seq += 1
        return f"G{self.seq:08d}"

    def _run(self, effects: list[Effect], *, after_commit: bool = False) -> None:
        """Carry out what the outbox said, checking each effect against the promises."""
        ob = self.outbox
        for e in effects:
            if isinstance(e, Claim):
                self.pending_db.append((ob, e))
            elif isinstance(e, Record):
                self.pending_db.append((ob, e))
            elif isinstance(e, Send):
                self._check_send(e.ref)
                self.bank_line(("instruction", e.ref))
            elif isinstance(e, Query):
                if self.store[e.ref].state not in (State.SENT.value, State.ACCEPTED.value):
                    raise Broken(f"status inquiry about {e.ref} in state {self.store[e.ref].state}")
                self.bank_line(msg.StatusQuery(e.seq, e.ref, _DAY))
            elif isinstance(e, (Ack, Foreign)):
                if not after_commit:
                    raise Broken(f"G1: {type(e).__name__} before its fact was committed")
                ok = isinstance(e, Ack) and e.ok
                self.bank_line(msg.Ack(self._new_seq(), e.message.seq_no, ok))
        self.outbox.check()

    def _check_send(self, ref: str) -> None:
        """G2: sent only while unconfirmed, and again only after its receipt deadline, a relink or a NotFound."""
        state = self.store[ref].state
        if state not in (State.SENT.value,):
            raise Broken(f"G2: {ref} sent in state {state} (the send must be recorded first)")
        if ref in self._told:
            raise Broken(f"G2: {ref} sent again after its receipt or result reached the gateway")
        if not self.up:
            raise Broken(f"{ref} sent with the link down")
        last = self._last_send.get(ref)
        if last is not None:
            at, link = last
            if not (self.now - at >= self.schedule.receipt_timeout or link != self.outbox.link
                    or ref in self._not_found_since):
                raise Broken(f"G2: {ref} sent twice within {self.now - at:g} s on one link with no status answer")
        if self.schedule.ask_before_resend and ref in self._ever_sent and not self._nf_since_send.get(ref):
            raise Broken(f"G2: {ref} sent again without the bank saying it has it not (ask_before_resend)")
        self._ever_sent.add(ref)
        self._nf_since_send[ref] = False
        self._last_send[ref] = (self.now, self.outbox.link)
        self._not_found_since.discard(ref)
        # The window, seen from outside: sent on this link, no answer yet, receipt deadline not passed.
        out = [r for r, (at, link) in self._last_send.items()
               if link == self.outbox.link and self.now - at < self.schedule.receipt_timeout
               and r not in self._told and r not in self._not_found_since
               and self.store[r].state == State.SENT.value]
        if len(out) > self.window:
            raise Broken(f"window: {len(out)} references awaiting a receipt, window {self.window}")

    def bank_line(self, item: Any) -> None:
        if self.up:
            self.to_bank.append(item)

    # -- inputs -------------------------------------------------------------------------

    def submit(self, n: int) -> None:
        """The centre's intake commits ``n`` instructions (durable first), then wakes the outbox."""
        items = []
        for _ in range(n):
            ref = f"R{len(self.store):06d}"
            self.store[ref] = _Stored()
            self.journal.append((ref, "received"))
            items.append(Open(ref, ref))
        self._run(self.outbox.committed(items, self.now))

    def commit_one(self, fail: bool = False) -> None:
        """The database commits the oldest pending write (or, ``fail``, refuses it)."""
        if not self.pending_db:
            return
        ob, op = self.pending_db.pop(0)
        if isinstance(op, Claim):
            if fail:
                effects = ob.claim_failed(op, self.now)
            else:
                for ref in op.refs:
                    s = self.store[ref]
                    s.sends += 1
                    self._apply(ref, lifecycle.Sent())
                effects = ob.claimed(op, self.now)
            if ob is self.outbox:
                self._run(effects)
            return
        if fail:
            self.pending_db.insert(0, (ob, op))  # the driver retries bank facts, in order
            return
        outcome, state = self._apply(op.ref, op.event)
        if outcome is Outcome.CHANGED and state in _FINAL:
            b = self.bank.get(op.ref)
            if b is None or b.outcome is None or (state == "succeeded") != b.outcome:
                raise Broken(f"{op.ref} recorded {state}, the bank's outcome is {b and b.outcome}")
        if ob is self.outbox:
            self._run(ob.recorded(op, outcome, state), after_commit=True)

    def _apply(self, ref: str, event: lifecycle.Event) -> tuple[Outcome, str | None]:
        s = self.store.get(ref)
        if s is None:
            return Outcome.UNKNOWN, None
        old = State(s.state)
        try:
            new = lifecycle.advance(old, event)
        except lifecycle.ConflictingOutcome:
            return Outcome.CONFLICT, s.state
        except lifecycle.IllegalTransition:
            return Outcome.ILLEGAL, s.state
        if new is old:
            return Outcome.SAME, s.state
        if _RANK[new.value] < _RANK[old.value]:
            raise Broken(f"{ref} went back from {old.value} to {new.value}")
        if old.value in _FINAL:
            raise Broken(f"{ref} final twice: {old.value} then {new.value}")
        s.state = new.value
        self.journal.append((ref, new.value))
        return Outcome.CHANGED, new.value

    def link_up(self) -> None:
        if self.up:
            return
        self.up = True
        self._run(self.outbox.link_up(self.now))
        # A signed-on bank pushes again whatever the gateway has not acknowledged.
        self.to_gateway.extend(self.unacked.values())

    def link_down(self) -> None:
        if not self.up:
            return
        self.up = False
        self.to_bank.clear()
        self.to_gateway.clear()
        self._run(self.outbox.link_down(self.now))

    def crash(self, commits: int) -> None:
        """SIGKILL: ``commits`` pending writes made it, the rest are lost; a fresh node loads the store."""
        for _ in range(min(commits, len(self.pending_db))):
            ob, op = self.pending_db.pop(0)
            if isinstance(op, Claim):
                for ref in op.refs:
                    self.store[ref].sends += 1
                    self._apply(ref, lifecycle.Sent())
            else:
                self._apply(op.ref, op.event)
        self.pending_db.clear()
        self.up = False
        self.to_bank.clear()
        self.to_gateway.clear()
        self.restarts += 1
        self.outbox = self._new_outbox()
        self._told.clear()
        self._last_send.clear()
        self._not_found_since.clear()
        items = [Open(ref, ref, accepted=s.state == State.ACCEPTED.value, sends=s.sends)
                 for ref, s in self.store.items() if s.state in _OPEN]
        self._run(self.outbox.loaded(items, self.now))

    def deliver_to_gateway(self, i: int) -> None:
        if not self.to_gateway:
            return
        m = self.to_gateway.pop(i % len(self.to_gateway))
        if isinstance(m, (msg.Receipt, msg.Result)):
            self._told.add(m.ref)
        if isinstance(m, msg.NotFound):
            self._not_found_since.add(m.ref)
            self._nf_since_send[m.ref] = True
        self._run(self.outbox.bank(m, b"", self.now))

    def deliver_to_bank(self, i: int) -> None:
        if not self.to_bank:
            return
        m = self.to_bank.pop(i % len(self.to_bank))
        for answer in self._bank_receives(m):
            self.to_gateway.append(answer)

    def duplicate(self, towards_bank: bool, i: int) -> None:
        line = self.to_bank if towards_bank else self.to_gateway
        if line:
            line.append(line[i % len(line)])

    def lose(self, towards_bank: bool, i: int) -> None:
        line = self.to_bank if towards_bank else self.to_gateway
        if line:
            line.pop(i % len(line))

    def advance(self, seconds: float) -> None:
        """Time passes: the driver's timer fires at each of the outbox's deadlines; the bank finishes work."""
        end = self.now + seconds
        while True:
            due = self.outbox.next_deadline()
            if due is None or due > end:
                break
            self.now = max(self.now, due)
            self._run(self.outbox.tick(self.now))
        self.now = end
        self._bank_tick()

    # -- the model bank -------------------------------------------------------------------

    def _bank_seq(self) -> str:
        self.seq += 1
        return f"B{self.seq:08d}"

    def _bank_receives(self, m: Any) -> list[msg.Message]:
        if isinstance(m, tuple):  # ("instruction", ref)
            ref = m[1]
            b = self.bank.get(ref)
            if b is None:
                b = self.bank[ref] = _BankRef(executions=1)
                if self.rng.random() < self.silent_rate:
                    b.silent = True
                    return []
                if self.rng.random() < self.sync_rate:
                    b.outcome = self.rng.random() < 0.8
                    return [msg.Result(self._bank_seq(), ref, ref, b.outcome, "H" + ref)]
                if self.rng.random() >= self.stuck_rate:
                    b.done_at = self.now + self.rng.choice([0.5, 2.0, 5.0, 12.0])
                return [msg.Receipt(self._bank_seq(), ref, ref)]
            # The same reference again: a duplicate, answered as what the bank knows (never executed twice).
            if b.silent:
                return []
            if b.outcome is not None:
                return [msg.Result(self._bank_seq(), ref, ref, b.outcome, "H" + ref)]
            return [msg.Receipt(self._bank_seq(), ref, ref)]
        if isinstance(m, msg.StatusQuery):
            b = self.bank.get(m.ref)
            if b is not None and b.silent:
                return []
            if b is None:
                return [msg.NotFound(self._bank_seq(), m.seq_no, m.ref)]
            if b.outcome is None:
                return [msg.Receipt(self._bank_seq(), m.seq_no, m.ref)]  # still processing
            return [msg.Result(self._bank_seq(), m.seq_no, m.ref, b.outcome, "H" + m.ref)]
        if isinstance(m, msg.Ack):
            self.unacked.pop(m.reply_to, None)
        return []

    def _bank_tick(self) -> None:
        for ref, b in self.bank.items():
            if b.outcome is None and b.done_at is not None and b.done_at <= self.now:
                b.outcome = self.rng.random() < 0.8
                push = msg.Result(self._bank_seq(), ref, ref, b.outcome, "H" + ref)
                self.unacked[push.seq_no] = push
                if self.up:
                    self.to_gateway.append(push)

    # -- the end ------------------------------------------------------------------------------

    def heal_and_settle(self, limit: float = 120.0) -> None:
        """The line heals and time passes: everything must end final or in_doubt, finals executed once."""
        if self.pending_db:
            while self.pending_db:
                self.commit_one()
        self.link_up()
        waited = 0.0
        for _ in range(100_000):
            if self.to_bank:
                self.deliver_to_bank(0)
            elif self.to_gateway:
                self.deliver_to_gateway(0)
            elif self.pending_db:
                self.commit_one()
            elif all(s.state not in _OPEN for s in self.store.values()) or waited >= limit:
                break
            else:
                self.advance(0.5)
                waited += 0.5
        else:
            raise Broken("the line never goes quiet")
        stuck = {ref: s.state for ref, s in self.store.items() if s.state in _OPEN}
        if stuck:
            raise Broken(f"G6: not final nor in_doubt {limit:g} s after the line healed: {stuck}")
        for ref, s in self.store.items():
            b = self.bank.get(ref)
            if b is not None and b.executions > 1:
                raise Broken(f"G2: {ref} executed {b.executions} times")
            if s.state in _FINAL and (b is None or b.executions != 1 or b.silent):
                raise Broken(f"{ref} is {s.state} but the bank executed it {b and b.executions} times")
        if self.outbox.entries:
            left = {ref: e.phase for ref, e in self.outbox.entries.items()}
            raise Broken(f"the outbox still holds settled references: {left}")
        assert all(p is Phase.SETTLING or n == 0 for p, n in self.outbox.counts.items())


STEPS = ("submit", "commit", "commit_fail", "to_bank", "to_gateway", "dup", "lose", "down", "up",
         "time", "crash")
_WEIGHTS = (3, 8, 1, 8, 8, 1, 1, 1, 2, 4, 0.3)


def apply_step(world: World, step: tuple[str, int, int]) -> None:
    """One step of a schedule: (kind, a, b) with small integers choosing which and how much."""
    kind, a, b = step
    if kind == "submit":
        world.submit(1 + a % 3)
    elif kind == "commit":
        world.commit_one()
    elif kind == "commit_fail":
        world.commit_one(fail=True)
    elif kind == "to_bank":
        world.deliver_to_bank(a)
    elif kind == "to_gateway":
        world.deliver_to_gateway(a)
    elif kind == "dup":
        world.duplicate(bool(b % 2), a)
    elif kind == "lose":
        world.lose(bool(b % 2), a)
    elif kind == "down":
        world.link_down()
    elif kind == "up":
        world.link_up()
    elif kind == "time":
        world.advance((0.25, 1.0, 2.5, 6.0)[a % 4])
    elif kind == "crash":
        world.crash(a % 3)
    else:
        raise ValueError(kind)


def random_steps(rng: random.Random, n: int) -> list[tuple[str, int, int]]:
    kinds = rng.choices(STEPS, weights=_WEIGHTS, k=n)
    return [(k, rng.randrange(1000), rng.randrange(1000)) for k in kinds]


NODE_SCHEDULE = Schedule(receipt_timeout=10.0, give_up_unconfirmed=30.0, first_query_after=30.0, query_interval=5.0,
                         query_attempts=5)


class Node:
    """An outbox driven by hand for example tests: its clock, and what it made happen."""

    def __init__(self, window: int = 4, schedule: Schedule = NODE_SCHEDULE) -> None:
        self.n = 0
        self.ob = Outbox(window, schedule, self.seq)
        self.now = 0.0
        self.sent: list[tuple[float, str]] = []
        self.queries: list[tuple[float, str, str]] = []
        self.records: list[Record] = []
        self.acks: list[Ack | Foreign] = []
        self.claims: list[Claim] = []
        self.hold_claims = False
        self.states: dict[str, str] = {}

    def seq(self) -> str:
        self.n += 1
        return f"G{self.n}"

    def run(self, effects: list) -> None:
        for e in effects:
            if isinstance(e, Claim):
                self.claims.append(e)
                if not self.hold_claims:
                    self.commit_claim()
            elif isinstance(e, Send):
                self.sent.append((self.now, e.ref))
            elif isinstance(e, Query):
                self.queries.append((self.now, e.ref, e.seq))
            elif isinstance(e, Record):
                self.records.append(e)
            else:
                self.acks.append(e)
        self.ob.check()

    def commit_claim(self) -> None:
        claim = self.claims.pop(0)
        for ref in claim.refs:
            self.states[ref] = "sent"
        self.run(self.ob.claimed(claim, self.now))

    def commit(self, outcome: Outcome = Outcome.CHANGED) -> list[Record]:
        """Commit every recorded fact with ``outcome`` (its state from the lifecycle)."""
        done, self.records = self.records, []
        for r in done:
            old = self.states.get(r.ref, "sent")
            state = lifecycle.advance(lifecycle.State(old), r.event).value if outcome is Outcome.CHANGED else old
            self.states[r.ref] = state
            self.run(self.ob.recorded(r, outcome, state))
        return done

    def submit(self, *refs: str) -> None:
        self.run(self.ob.committed([Open(ref, {"ref": ref}) for ref in refs], self.now))

    def up(self) -> None:
        self.run(self.ob.link_up(self.now))

    def down(self) -> None:
        self.run(self.ob.link_down(self.now))

    def hear(self, m: msg.Message) -> None:
        self.run(self.ob.bank(m, b"raw", self.now))

    def wait(self, seconds: float) -> None:
        """Time passes; the driver's timer fires at every deadline on the way."""
        end = self.now + seconds
        while (due := self.ob.next_deadline()) is not None and due <= end:
            self.now = max(self.now, due)
            self.run(self.ob.tick(self.now))
        self.now = end

    def sent_refs(self) -> list[str]:
        return [ref for _, ref in self.sent]
