"""A bank batch in the pure outbox (gateway/outbox.py): examples and its promises under random inputs.

No reactor: the tests play driver, store and bank.  The property drives one outbox
holding two bank batches and a single instruction through any sequence of claims
that commit or fail, messages lost or delivered, link drops, time and store commits,
against a model bank that executes whatever batch request reaches it, and checks at
every step:

- never executed twice: the bank receives each batch request at most once (a batch
  sent before goes again only after a status answer saying the bank has it not);
- a Send of a batch follows its committed claim on the same link;
- the window (``Outbox.check``), and no acknowledgement or refusal ever for a batch;
- each line gets at most one settling fact; a line's final state is the bank's
  outcome of that line (or ``in_doubt``);
- with the line healed at the end, every line is final or ``in_doubt``, the outbox
  is empty, and every line the bank executed is final with the bank's outcome or in_doubt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import count

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters import base as msg
from gateway import lifecycle
from gateway.model import State
from gateway.outbox import (
    Ack,
    Claim,
    Foreign,
    Open,
    Outbox,
    Outcome,
    Phase,
    Query,
    Record,
    Schedule,
    Send,
)

SCHEDULE = Schedule(receipt_timeout=10.0, give_up_unconfirmed=60.0, first_query_after=5.0, query_interval=5.0,
                    query_attempts=6)
SETTLED = {"succeeded", "failed", "rejected", "in_doubt"}


class Broken(AssertionError):
    pass


@dataclass
class Bank:
    """A bank that executes each batch request it receives (all lines) and answers about it."""

    outcomes: dict[str, bool]                       # line ref -> succeeded, decided up front
    received: dict[str, str] = field(default_factory=dict)   # batch ref -> BatchNo
    deliveries: dict[str, int] = field(default_factory=dict)  # batch ref -> requests received
    done: set[str] = field(default_factory=set)      # BatchNos complete
    serial: count = field(default_factory=lambda: count(1))


class World:
    def __init__(self, rnd: random.Random, window: int) -> None:
        self.rnd = rnd
        self.now = 0.0
        self.seq = count(1)
        self.ob = Outbox(window, SCHEDULE, lambda: f"Q{next(self.seq)}")
        self.batches = {"A1": ("A1", "A2", "A3"), "B1": ("B1", "B2")}
        self.single = "S1"
        self.members = {m: b for b, ms in self.batches.items() for m in ms}
        self.state = {r: State.RECEIVED for r in [*self.members, self.single]}
        self.bank = Bank({m: rnd.random() < 0.7 for m in self.members})
        self.claims: list[Claim] = []
        self.records: list[Record] = []
        self.wire: list[object] = []          # effects on their way to the bank
        self.answers: list[tuple[str, object]] = []  # answers on their way back
        self.cleared_since_send: dict[str, bool] = {}
        self.settling: dict[str, int] = {}
        self.store_sends: dict[str, int] = {}

    # -- running effects ---------------------------------------------------------

    def run(self, effects: list) -> None:
        for e in effects:
            match e:
                case Claim():
                    self.claims.append(e)
                case Send(ref=ref):
                    if ref in self.batches:
                        if self.store_sends.get(ref, 0) == 0:
                            raise Broken(f"send of {ref} before its claim committed")
                        if ref in self.cleared_since_send and not self.cleared_since_send[ref]:
                            raise Broken(f"{ref} sent again without a status answer clearing it")
                        self.cleared_since_send[ref] = False
                    self.wire.append(e)
                case Query():
                    self.wire.append(e)
                case Record(ref=ref, event=event):
                    if ref in self.members and isinstance(event, (lifecycle.ResultReceived, lifecycle.ResultOverdue,
                                                                  lifecycle.NotFoundAtBank)):
                        self.settling[ref] = self.settling.get(ref, 0) + 1
                        if self.settling[ref] > 1:
                            raise Broken(f"line {ref} given two settling facts")
                    self.records.append(e)
                case Ack(message=m) | Foreign(message=m) if getattr(m, "ref", None) in self.members:
                    raise Broken(f"{e} for a bank batch")
        self.ob.check()

    # -- the store ---------------------------------------------------------------

    def commit_claim(self, ok: bool) -> None:
        if not self.claims:
            return
        claim = self.claims.pop(0)
        if not ok:
            self.run(self.ob.claim_failed(claim, self.now))
            return
        for ref in claim.refs:
            for r in self.batches.get(ref, (ref,)):
                self.store_sends[ref] = self.store_sends.get(ref, 0) + 1
                if self.state[r] is State.RECEIVED:
                    self.state[r] = State.SENT
        self.run(self.ob.claimed(claim, self.now))

    def commit_record(self) -> None:
        if not self.records:
            return
        r = self.records.pop(0)
        old = self.state[r.ref]
        try:
            new = lifecycle.advance(old, r.event)
        except lifecycle.IllegalTransition:
            self.run(self.ob.recorded(r, Outcome.ILLEGAL))
            return
        except lifecycle.ConflictingOutcome:
            self.run(self.ob.recorded(r, Outcome.CONFLICT))
            return
        if isinstance(r.event, lifecycle.ResultReceived) and r.ref in self.members \
                and r.event.succeeded != self.bank.outcomes[r.ref]:
                raise Broken(f"line {r.ref} recorded as {r.event.succeeded}, the bank said otherwise")
        self.state[r.ref] = new
        self.run(self.ob.recorded(r, Outcome.CHANGED if new is not old else Outcome.SAME, new.value))

    # -- the bank ----------------------------------------------------------------

    def deliver(self, lose: bool) -> None:
        if not self.wire:
            return
        m = self.wire.pop(0)
        if lose and self.rnd.random() < 0.5:
            # Lost before the bank got it, or the answer lost on the way back.
            if self.rnd.random() < 0.5:
                return
            self._bank_takes(m)
            return
        answer = self._bank_takes(m)
        if answer is not None:
            self.answers.append(answer)

    def _bank_takes(self, m: object):
        b = self.bank
        if isinstance(m, Send):
            if m.ref == self.single:
                return ("single", msg.Result("X", m.ref, m.ref, True, "H1"))
            b.deliveries[m.ref] = b.deliveries.get(m.ref, 0) + 1
            if b.deliveries[m.ref] > 1:
                raise Broken(f"the bank executed batch {m.ref} twice")
            b.received[m.ref] = f"N{next(b.serial)}"
            return ("accepted", (m.ref, b.received[m.ref]))
        assert isinstance(m, Query)
        if m.kind == "status":
            if m.ref == self.single:
                return ("single", msg.Result("X", m.seq, m.ref, True, "H1"))
            if m.ref in b.received:
                return ("accepted", (m.ref, b.received[m.ref]))   # a status answer naming the BatchNo
            return ("single", msg.NotFound("X", m.seq, m.ref))
        if m.kind == "batch_status":
            return ("status", (m.batch_no, "complete" if m.batch_no in b.done else "processing"))
        if m.batch_no not in b.done:
            return None  # no result file before it is complete
        ref = next(r for r, n in b.received.items() if n == m.batch_no)
        lines = [msg.Result("X", m.seq, r, b.outcomes[r], f"H{r}") for r in self.batches[ref]]
        return ("results", (m.batch_no, self.rnd.sample(lines, self.rnd.randint(0, len(lines)))))

    def answer(self) -> None:
        if not self.answers:
            return
        kind, a = self.answers.pop(0)
        if kind == "single":
            if isinstance(a, msg.NotFound) and a.ref in self.batches:
                self.cleared_since_send[a.ref] = True
            self.run(self.ob.bank(a, None, self.now))
        elif kind == "accepted":
            self.run(self.ob.batch_accepted(a[0], a[1], self.now))
        elif kind == "status":
            self.run(self.ob.batch_status(a[0], a[1], "", self.now))
        else:
            self.run(self.ob.batch_results(a[0], a[1], self.now))

    def finish(self) -> None:
        self.bank.done.update(self.bank.received.values())

    def tick(self, dt: float) -> None:
        self.now += dt
        self.run(self.ob.tick(self.now))


STEPS = ("claim", "claim_fail", "deliver", "deliver_lossy", "answer", "record", "tick", "down", "up", "finish")


def apply(w: World, step: str, n: int) -> None:
    if step == "claim":
        w.commit_claim(True)
    elif step == "claim_fail":
        w.commit_claim(False)
    elif step == "deliver":
        w.deliver(False)
    elif step == "deliver_lossy":
        w.deliver(True)
    elif step == "answer":
        w.answer()
    elif step == "record":
        w.commit_record()
    elif step == "tick":
        w.tick(1 + n % 12)
    elif step == "down":
        w.wire.clear()
        w.answers.clear()
        w.run(w.ob.link_down(w.now))
    elif step == "up":
        if not w.ob.up:
            w.run(w.ob.link_up(w.now))
    else:
        w.finish()


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(STEPS), st.integers(0, 99)), max_size=90),
       seed=st.integers(0, 2**32), window=st.integers(1, 3))
def test_a_bank_batch_keeps_the_outbox_promises_whatever_comes_in(steps, seed, window) -> None:
    w = World(random.Random(seed), window)
    w.run(w.ob.link_up(w.now))
    w.run(w.ob.committed([Open("A1", {"lines": 3}, members=w.batches["A1"]), Open(w.single, {}),
                          Open("B1", {"lines": 2}, members=w.batches["B1"])], w.now))
    for s, n in steps:
        apply(w, s, n)
    # Heal: the link up, nothing lost, the bank finishes, time runs until everything settled.
    if not w.ob.up:
        w.run(w.ob.link_up(w.now))
    w.finish()
    for _ in range(400):
        while w.claims or w.wire or w.answers or w.records:
            w.commit_claim(True)
            w.deliver(False)
            w.answer()
            w.commit_record()
        if not w.ob.entries:
            break
        w.finish()
        w.tick(5)
    assert not w.ob.entries
    for ref, state in w.state.items():
        assert state.value in SETTLED, (ref, state)
        if ref in w.members and state.value != "in_doubt":
            assert (state is State.SUCCEEDED) == w.bank.outcomes[ref]
            assert w.bank.deliveries.get(w.members[ref]) == 1  # final: the bank executed it, once


# -- examples -------------------------------------------------------------------------------


def _outbox(window: int = 2) -> tuple[Outbox, list[str]]:
    seqs = (f"Q{i}" for i in count(1))
    ob = Outbox(window, SCHEDULE, lambda: next(seqs))
    ob.link_up(0.0)
    return ob, []


def test_a_batch_goes_out_once_is_asked_by_its_number_and_settles_each_line_on_its_own() -> None:
    ob, _ = _outbox()
    [claim] = ob.committed([Open("L1", "payload", members=("L1", "L2", "L3"))], 0.0)
    assert claim.refs == ("L1",) and ob.counts[Phase.CLAIMING] == 1   # one bank message: one window slot
    [send] = ob.claimed(claim, 0.1)
    assert send == Send("L1", "payload", resend=False)
    receipts = ob.batch_accepted("L1", "BN7", 0.5)
    assert [(r.ref, type(r.event), r.bank_seq_no) for r in receipts] == [
        (m, lifecycle.ReceiptConfirmed, "BN7") for m in ("L1", "L2", "L3")]
    for r in receipts:
        assert ob.recorded(r, Outcome.CHANGED, "accepted") == []
    assert ob.phase("L1") is Phase.AWAITING_RESULT
    [q] = ob.tick(5.5)
    assert (q.kind, q.batch_no) == ("batch_status", "BN7")
    assert ob.batch_status("BN7", "processing", "", 6.0) == []
    [q] = ob.tick(10.5)
    [q] = ob.batch_status("BN7", "complete", "", 11.0)
    assert (q.kind, q.batch_no) == ("batch_results", "BN7")
    # The file names two lines: they settle; the third is asked about again.
    recs = ob.batch_results("BN7", [msg.Result("X", q.seq, "L3", False, "", code="E1", text="closed"),
                                    msg.Result("X", q.seq, "L1", True, "H1")], 11.5)
    assert [(r.ref, r.event) for r in recs] == [("L3", lifecycle.ResultReceived(False)),
                                                ("L1", lifecycle.ResultReceived(True))]
    for r in recs:
        assert ob.recorded(r, Outcome.CHANGED, "failed" if r.ref == "L3" else "succeeded") == []
    assert ob.phase("L1") is Phase.AWAITING_RESULT
    [q] = ob.tick(20.0)
    assert q.kind == "batch_status"
    [q] = ob.batch_status("BN7", "complete", "", 20.5)
    [r] = ob.batch_results("BN7", [msg.Result("X", q.seq, "L2", True, "H2"),
                                   msg.Result("X", q.seq, "L1", True, "H1")], 21.0)  # L1 again: nothing
    assert r.ref == "L2" and ob.phase("L1") is Phase.SETTLING
    assert ob.recorded(r, Outcome.CHANGED, "succeeded") == []
    assert ob.entries == {} and ob.batch_of("BN7") is None
    ob.check()


def test_a_batch_whose_answer_was_lost_is_asked_by_its_serial_before_any_resend() -> None:
    ob, _ = _outbox()
    [claim] = ob.committed([Open("L1", "p", members=("L1", "L2"))], 0.0)
    ob.claimed(claim, 0.0)
    # No answer: at the receipt deadline, a status inquiry (BDC110 on its serial), no send.
    [q] = ob.tick(10.0)
    assert isinstance(q, Query) and (q.kind, q.ref) == ("status", "L1") and ob.phase("L1") is Phase.ASKING
    # A link drop does not make a resend safe either: asked again on the next link.
    ob.link_down(11.0)
    effects = ob.link_up(12.0)
    assert [type(e) for e in effects] == [Query]
    # A receipt about the batch's serial names no BatchNo: still no resend.
    assert ob.bank(msg.Receipt("X", effects[0].seq, "L1"), None, 13.0) == []
    # Only "not found" clears it: then it is claimed and sent again, same serial.
    [claim] = ob.bank(msg.NotFound("X", effects[0].seq, "L1"), None, 14.0)
    [send] = ob.claimed(claim, 14.1)
    assert send.resend and send.ref == "L1"


def test_a_batch_never_confirmed_goes_in_doubt_line_by_line() -> None:
    ob, _ = _outbox()
    [claim] = ob.committed([Open("L1", "p", members=("L1", "L2"))], 0.0)
    ob.claimed(claim, 0.0)
    effects = []
    t = 0.0
    while not effects or not isinstance(effects[0], Record):
        t += 10.0
        effects = ob.tick(t)
    assert [(r.ref, r.event) for r in effects] == [("L1", lifecycle.ResultOverdue()),
                                                   ("L2", lifecycle.ResultOverdue())]
    assert t >= SCHEDULE.give_up_unconfirmed
    for r in effects:
        ob.recorded(r, Outcome.CHANGED, "in_doubt")
    assert ob.entries == {}


def test_a_failed_batch_fails_every_open_line_with_the_banks_reason() -> None:
    ob, _ = _outbox()
    [claim] = ob.committed([Open("L1", "p", members=("L1", "L2"))], 0.0)
    ob.claimed(claim, 0.0)
    ob.batch_accepted("L1", "BN1", 1.0)
    recs = ob.batch_status("BN1", "failed", "账户余额不足", 2.0)
    assert [(r.ref, r.event, r.text) for r in recs] == [
        ("L1", lifecycle.ResultReceived(False), "账户余额不足"),
        ("L2", lifecycle.ResultReceived(False), "账户余额不足")]


def test_a_reloaded_batch_with_its_number_is_asked_by_it_and_one_without_by_its_serial() -> None:
    ob, _ = _outbox()
    effects = ob.loaded([Open("L1", "p", accepted=True, sends=1, members=("L1", "L2"), batch_no="BN3"),
                         Open("M1", "p", sends=1, members=("M1",))], 0.0)
    assert [(type(e).__name__, getattr(e, "kind", ""), getattr(e, "ref", "")) for e in effects] == [
        ("Query", "status", "M1")]   # sent before by a node that died: asked, not sent
    [q] = ob.tick(SCHEDULE.first_query_after)
    assert (q.kind, q.batch_no) == ("batch_status", "BN3")


def test_a_lines_own_reference_is_never_taken_as_a_single_instruction() -> None:
    ob, _ = _outbox()
    ob.committed([Open("L1", "p", members=("L1", "L2"))], 0.0)
    assert ob.committed([Open("L2", "p")], 0.0) == []      # a poll that saw the line's row: ignored
    assert set(ob.entries) == {"L1"}
    # A bank result about a line's reference (which never went out on its own) changes nothing.
    assert ob.bank(msg.Result("X", "L2", "L2", True, "H"), None, 1.0) == []


def test_a_not_found_answering_an_inquiry_older_than_the_latest_send_clears_nothing() -> None:
    ob, _ = _outbox()
    [claim] = ob.committed([Open("L1", "p", members=("L1", "L2"))], 0.0)
    ob.claimed(claim, 0.0)
    [q1] = ob.tick(10.0)
    [q2] = ob.tick(20.0)                                   # asked again: both on the wire
    [claim] = ob.bank(msg.NotFound("X", q1.seq, "L1"), None, 21.0)
    [_send] = ob.claimed(claim, 21.0)                      # sent again: the bank had it not
    # q2 was answered before that send arrived: its "not found" is stale and must not
    # send the batch a third time (the bank has it now).
    assert ob.bank(msg.NotFound("X", q2.seq, "L1"), None, 22.0) == []
    assert ob.phase("L1") is Phase.AWAITING_RECEIPT
