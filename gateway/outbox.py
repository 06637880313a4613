"""The relay toward one bank as a pure machine: one record per reference, inputs in, effects out.

An :class:`Outbox` holds every open instruction of one bank as one
:class:`Entry` whose :class:`Phase` says exactly where it stands.  It does no
I/O and reads no clock: the driver (:class:`gateway.relay.BankDispatcher`)
feeds it inputs with the time (``committed``, ``loaded``, ``link_up``,
``link_down``, ``claimed``, ``claim_failed``, ``bank``, ``recorded``,
``tick``) and carries out the effects each returns, in order (:class:`Claim`,
:class:`Send`, :class:`Query`, :class:`Record`, :class:`Ack`,
:class:`Foreign`), then arms one timer for :meth:`Outbox.next_deadline`.

Phases of an entry (it leaves the outbox once its final or ``in_doubt`` fact
is recorded)::

    QUEUED ──claim──▶ CLAIMING ──claimed──▶ AWAITING_RECEIPT ──receipt──▶ AWAITING_RESULT
      ▲  ▲                │ link changed,          │ receipt_timeout,             │ queries on the
      │  └────────────────┘ claim failed           │ link down, NotFound          │ bank's schedule
      └────────────────────────────────────────────┘                              ▼
    any phase ──result──▶ SETTLING ◀── overdue (never confirmed / inquiries used up / NotFound after receipt)

With ``ask_before_resend`` (a bank whose handling of a resent reference is
unknown), a QUEUED entry that was sent before goes to ASKING instead of
CLAIMING: a status inquiry, asked again at each receipt deadline, and a new
send only once the bank answers NotFound (a receipt or result confirms it).

Promises (checked by tests/unit/test_outbox.py, property and examples; for bank batches
by tests/unit/test_outbox_batch.py):

- G1: an :class:`Ack` for a bank message is only ever returned by
  :meth:`Outbox.recorded`, i.e. after the driver committed what it said.
- G2: a :class:`Send` follows only a :class:`Claim` that the driver confirmed
  committed (:meth:`Outbox.claimed`) on the same link generation, so every
  send is recorded (and fenced by the lease) first.  A reference is sent only
  while no receipt, result or status answer confirming it has come in; two
  sends of one reference are separated by its receipt deadline
  (``receipt_timeout``), a link drop, or a status answer saying the bank has
  not got it (NotFound); with ``ask_before_resend``, by a NotFound always.
  After the receipt only :class:`Query` goes out.
- G6: an unconfirmed reference is given up into ``in_doubt`` once its first
  send is ``give_up_unconfirmed`` old; a confirmed one is asked about on the
  bank's :class:`Schedule` and goes ``in_doubt`` when the inquiries are used
  up (or ``give_up_after`` has passed since the receipt).
- The window: ``CLAIMING + AWAITING_RECEIPT + ASKING <= window`` at all times.
- Commit order: first sends go out in the order the instructions were
  committed (resends of unconfirmed ones go first).

A bank batch (bdc BDC103/104: docs/protocols/bdc.md, "Batches") is one entry
whose ``members`` are the references of the instructions it carries, its lines.
It moves through the same phases as one reference, so the window counts it once
and G2 and G6 hold for it as they do for one instruction, with two differences:
a batch sent before is always asked about before it is sent again (as with
``ask_before_resend``: nothing says a bank takes a batch request twice as one),
and once the bank named its ``BatchNo`` (:meth:`Outbox.batch_accepted`) its
inquiries are batch inquiries (:class:`Query` ``kind`` ``batch_status``, then
``batch_results`` once the bank says it is complete: :meth:`Outbox.batch_status`),
and the result file's lines (:meth:`Outbox.batch_results`) settle each member
on its own.  Every fact goes to the store as a :class:`Record` about a member,
never about the batch: a receipt, a result, a give-up into ``in_doubt``; none is
ever acknowledged (answers, not pushes), and each member gets at most one
settling Record.  The batch leaves once every member's settling fact is
recorded.  The batch's reference (its request serial) is its first member's:
that member's own reference never goes out on its own.

(Over 600 lines because the bank batch record lives in the same machine as the single
reference: it shares the phases, the timers, the queue and the window, and one set of
transitions keeping G2 and G6 for both is safer than two copies of them.)
"""

from __future__ import annotations

import enum
import heapq
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Union

from adapters import base as msg
from adapters._frozen import quick_init
from gateway import lifecycle

__all__ = ["Phase", "Schedule", "Open", "Entry", "Outbox", "Outcome",
           "Claim", "Send", "Query", "Record", "Ack", "Foreign", "Effect"]


DAY = 86400.0


class Phase(enum.Enum):
    QUEUED = "queued"                      # waits for a live link and a window slot
    CLAIMING = "claiming"                  # its send is being recorded (fenced); goes out once committed
    AWAITING_RECEIPT = "awaiting_receipt"  # on the wire; resent, same reference, if no receipt in time
    ASKING = "asking"                      # sent before, unconfirmed: its status is asked before any resend
    AWAITING_RESULT = "awaiting_result"    # the bank confirmed it: from now on only status inquiries
    SETTLING = "settling"                  # its final or in_doubt fact is being recorded; nothing goes out


@dataclass(frozen=True)
class Schedule:
    """A bank's timers, in seconds.

    Status inquiries for a confirmed reference: the first ``first_query_after``
    after its receipt, then waits of ``query_interval`` growing by
    ``query_backoff`` per inquiry up to ``max_query_interval`` (a day when not
    set); ``in_doubt`` one wait after the last of ``query_attempts`` inquiries,
    or ``give_up_after`` after the receipt if that comes first.
    """

    receipt_timeout: float = 10.0
    give_up_unconfirmed: float = 30.0
    first_query_after: float = 30.0
    query_interval: float = 5.0
    query_backoff: float = 1.0
    max_query_interval: float | None = None
    query_attempts: int = 5
    give_up_after: float | None = None
    claim_retry: float = 0.1
    ask_before_resend: bool = False  # for a bank whose handling of a resent reference is unknown

    def wait_after(self, queries: int) -> float:
        """The wait after the ``queries``-th inquiry (1-based) before the next step (at most a day uncapped)."""
        # The exponent is bounded so that a long backoff never overflows a float.
        wait = self.query_interval * self.query_backoff ** min(max(queries - 1, 0), 64)
        if self.max_query_interval is not None:
            return min(wait, self.max_query_interval)
        return min(wait, max(DAY, self.query_interval))  # without backoff: the interval as configured


@quick_init
@dataclass(frozen=True)
class Open:
    """An open instruction handed to the outbox: its reference and what sending it needs (opaque)."""

    ref: str
    payload: Any
    accepted: bool = False  # the store says the bank confirmed it (a reload after restart or takeover)
    sends: int = 0          # sends the store recorded before this outbox existed
    members: tuple[str, ...] = ()  # a bank batch: its lines' references in line order (the first is ``ref``)
    batch_no: str = ""      # a bank batch: the bank's BatchNo, once it named it (then ``accepted``)
    done: frozenset[str] = frozenset()  # a bank batch: the lines settled already (a reload)


@dataclass(eq=False, slots=True)
class Entry:
    """Everything the outbox knows of one reference."""

    ref: str
    payload: Any
    phase: Phase
    order: int                        # commit order
    sends: int = 0                    # recorded sends, the store's and this outbox's
    first_sent: float | None = None   # first send by this outbox: the unconfirmed give-up runs from it
    sent_at: float | None = None      # the latest send
    accepted_at: float | None = None  # receipt seen (or loaded as accepted)
    queries: int = 0                  # status inquiries sent since the receipt
    next_query_at: float | None = None  # next inquiry (or, inquiries used up, in_doubt) is due
    asked: tuple[str, ...] = ()       # seq_nos of the inquiries sent
    cleared: bool = False             # a NotFound said the bank has it not: sending again is safe
    deadline: float | None = None     # when tick() must look at it next
    members: tuple[str, ...] = ()     # a bank batch: its lines' references, in line order
    pending: set[str] | None = None   # a bank batch: members not yet given their settling Record
    inflight: int = 0                 # a bank batch: settling Records not yet recorded
    batch_no: str = ""                # a bank batch: the bank's BatchNo
    complete: bool = False            # a bank batch: the bank said it is complete; its result file is next
    sent_asks: int = 0                # len(asked) at its latest send: older inquiries' "not found" is stale


# -- effects -------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """Record one send of each of ``refs``, fenced by the link lease; report with claimed/claim_failed."""

    refs: tuple[str, ...]
    link: int  # the link generation the claim was made for


@dataclass(frozen=True)
class Send:
    """Write the instruction ``ref`` to the link (its claim has committed)."""

    ref: str
    payload: Any
    resend: bool


@dataclass(frozen=True)
class Query:
    """Ask the bank the status of ``ref`` with serial ``seq``.

    ``kind``: ``status`` (the status of a reference: bdc BDC110, also for a batch whose
    BatchNo is not known), ``batch_status`` (how far batch ``batch_no`` is: BDC107) or
    ``batch_results`` (its result file: BDC108).
    """

    ref: str
    seq: str
    payload: Any
    kind: str = "status"
    batch_no: str = ""


@dataclass(frozen=True)
class Record:
    """Commit ``event`` about ``ref`` (from ``message``, or the outbox's own ``text``); report with recorded."""

    ref: str
    event: lifecycle.Event
    message: msg.Message | None = None
    raw: bytes | None = None
    ack: bool = False  # acknowledge ``message`` once committed
    text: str = ""
    bank_seq_no: str = ""  # a batch line's receipt: the batch's BatchNo


@dataclass(frozen=True)
class Ack:
    """Acknowledge ``message`` to the bank (only ever after its fact committed: G1)."""

    message: msg.Message
    ok: bool = True
    code: str = ""
    text: str = ""


@dataclass(frozen=True)
class Foreign:
    """The bank spoke of a reference that is not its own: refuse ``message``."""

    message: msg.Message
    ref: str


Effect = Union[Claim, Send, Query, Record, Ack, Foreign]


class Outcome(enum.Enum):
    """What committing a :class:`Record` did in the store."""

    CHANGED = "changed"      # the state moved (to the state given with it)
    SAME = "same"            # a repeat of a known fact
    ILLEGAL = "illegal"      # does not fit the instruction's history (out of order)
    CONFLICT = "conflict"    # contradicts the recorded outcome
    UNKNOWN = "unknown"      # not this bank's reference


_SETTLED_STATES = frozenset({"succeeded", "failed", "rejected", "in_doubt"})
_UNCONFIRMED = (Phase.QUEUED, Phase.CLAIMING, Phase.AWAITING_RECEIPT, Phase.ASKING)
_OUT = (Phase.CLAIMING, Phase.AWAITING_RECEIPT, Phase.ASKING)  # what the window counts
_SETTLING_EVENTS = (lifecycle.ResultReceived, lifecycle.ResultOverdue, lifecycle.NotFoundAtBank)


class Outbox:
    """The open instructions of one bank and what to do about each (see the module docstring)."""

    def __init__(self, window: int, schedule: Schedule, new_seq: Callable[[], str]) -> None:
        self.window = window
        self.schedule = schedule
        self.new_seq = new_seq
        self.entries: dict[str, Entry] = {}
        self.up = False
        self.link = 0  # generation: bumped by every link_up
        self.counts: dict[Phase, int] = {p: 0 for p in Phase}
        self._queue: OrderedDict[str, None] = OrderedDict()  # exactly the QUEUED refs, in send order
        self._claim: Claim | None = None  # the claim being committed (one at a time)
        self._retry_at: float | None = None  # after a failed claim, none before this
        self._timers: list[tuple[float, int, str]] = []  # (deadline, n, ref); stale items skipped
        self._n = 0
        self.refused_batches = 0  # batches not taken because a line of theirs was held on its own
        self._member: dict[str, str] = {}    # a batch member's reference -> its batch's
        self._batch_no: dict[str, str] = {}  # a BatchNo -> its batch's reference

    # -- inputs ------------------------------------------------------------------

    def committed(self, items: Iterable[Open], now: float) -> list[Effect]:
        """New instructions committed for this bank, in commit order."""
        for item in items:
            self._add(item, now)
        return self._pump(now)

    def loaded(self, items: Iterable[Open], now: float) -> list[Effect]:
        """The open instructions the store holds (start-up, takeover); those already held are kept."""
        return self.committed(items, now)

    def link_up(self, now: float) -> list[Effect]:
        """A session signed on: what has no receipt goes (again) first, then the queue."""
        self.link += 1
        self.up = True
        self._requeue_unconfirmed()
        for e in self.entries.values():
            if e.phase is Phase.AWAITING_RESULT:
                self._schedule_result(e, now)  # inquiries held while the link was down are due
        return self.tick(now)

    def link_down(self, now: float) -> list[Effect]:
        """The session is gone: whatever awaited a receipt is queued to go again on the next one."""
        self.up = False
        self._requeue_unconfirmed()
        return []

    def claimed(self, claim: Claim, now: float) -> list[Effect]:
        """The claim committed: send what is still to be sent, if the link is the one it was made for."""
        if claim is self._claim:
            self._claim = None
        effects: list[Effect] = []
        if not self.up or claim.link != self.link:
            self._requeue([ref for ref in claim.refs if self._phase(ref) is Phase.CLAIMING])
            return effects + self._pump(now)
        for ref in claim.refs:
            e = self.entries.get(ref)
            if e is None or e.phase is not Phase.CLAIMING:
                continue  # confirmed or settled while the claim committed: nothing to send
            effects.append(Send(ref, e.payload, resend=e.sends > 0))
            e.sends += 1
            e.sent_asks = len(e.asked)
            e.cleared = False
            if e.first_sent is None:
                e.first_sent = now
            e.sent_at = now
            self._set(e, Phase.AWAITING_RECEIPT)
            self._due(e, now + self.schedule.receipt_timeout)
        return effects + self._pump(now)

    def claim_failed(self, claim: Claim, now: float) -> list[Effect]:
        """The claim did not commit (or cannot be used): queue its references again; retry a little later."""
        if claim is self._claim:
            self._claim = None
        self._requeue([ref for ref in claim.refs if self._phase(ref) is Phase.CLAIMING])
        self._retry_at = now + self.schedule.claim_retry
        return []

    def bank(self, message: msg.Message, raw: bytes | None, now: float) -> list[Effect]:
        """A receipt, result or status answer from the bank."""
        ref = getattr(message, "ref", None)
        if isinstance(ref, str) and ref in self._member:
            batch = self.entries.get(self._member[ref])
            if batch is not None and batch.ref == ref and isinstance(message, msg.NotFound) \
                    and batch.phase in _UNCONFIRMED and message.reply_to in batch.asked[batch.sent_asks:]:
                # About the batch's request, to an inquiry made after its latest send (an older
                # one may have been answered before that send arrived): a resend is safe now.
                return self._not_found(message, raw, now)
            # A receipt or result about a batch's request names no BatchNo, and a line's own
            # reference never went out: nothing to record, no resend allowed (G2).
            return []
        match message:
            case msg.Receipt():
                return self._receipt(message, raw, now)
            case msg.Result():
                return self._result(message, raw, now)
            case msg.NotFound():
                return self._not_found(message, raw, now)
        raise TypeError(f"not a message about an instruction: {type(message).__name__}")

    def batch_accepted(self, ref: str, batch_no: str, now: float) -> list[Effect]:
        """The bank took batch ``ref`` and named it ``batch_no`` (its answer, or a status answer
        naming it): from now on it is asked about by that number, never sent again."""
        e = self.entries.get(ref)
        if e is None or not e.members or not batch_no:
            return []
        if e.phase not in _UNCONFIRMED:
            return []  # a repeat: it is confirmed already
        assert e.pending is not None
        e.batch_no = batch_no
        self._batch_no[batch_no] = ref
        self._accept(e, now)
        return [Record(m, lifecycle.ReceiptConfirmed(), bank_seq_no=batch_no)
                for m in e.members if m in e.pending] + self._pump(now)

    def batch_status(self, batch_no: str, state: str, reason: str, now: float) -> list[Effect]:
        """How far the bank says batch ``batch_no`` is: ``processing`` or ``partial`` (asked
        again on the schedule), ``complete`` (its result file is asked now) or ``failed``
        (every open line failed, ``reason`` the bank's)."""
        e = self._by_batch_no(batch_no)
        if e is None:
            return []
        if state == "complete":
            if e.complete:
                return []
            e.complete = True
            return [self._inquiry(e)]  # the result file at once (not counted as an inquiry)
        if state == "failed":
            e.complete = False
            return self._settle(e, lifecycle.ResultReceived(False), reason or "the bank failed the whole batch")
        return []

    def batch_results(self, batch_no: str, results: Iterable[msg.Result], now: float) -> list[Effect]:
        """The result file of batch ``batch_no``, as one Result per line it holds (``ref`` the
        line's member): each open line it names settles with its own outcome; lines it does
        not name stay open and are asked about again (BDC107, then the file)."""
        e = self._by_batch_no(batch_no)
        if e is None:
            return []
        assert e.pending is not None
        effects: list[Effect] = []
        for r in results:
            if r.ref in e.pending:
                e.pending.discard(r.ref)
                e.inflight += 1
                effects.append(Record(r.ref, lifecycle.ResultReceived(r.succeeded), r))
        e.complete = False
        if not e.pending:
            self._set(e, Phase.SETTLING)
        return effects

    def batch_asked(self, seq: str) -> str | None:
        """The held batch whose request (its reference) or inquiry had serial ``seq``, or None."""
        e = self.entries.get(seq)
        if e is not None and e.members:
            return seq
        for e in self.entries.values():
            if e.members and seq in e.asked:
                return e.ref
        return None

    def batch_of(self, batch_no: str) -> str | None:
        """The reference of the held batch the bank numbered ``batch_no``, or None."""
        return self._batch_no.get(batch_no)

    def _by_batch_no(self, batch_no: str) -> Entry | None:
        ref = self._batch_no.get(batch_no)
        e = self.entries.get(ref) if ref is not None else None
        return e if e is not None and e.phase is Phase.AWAITING_RESULT else None

    def recorded(self, record: Record, outcome: Outcome, state: str | None = None) -> list[Effect]:
        """``record`` committed with ``outcome`` (``state``: the state it is in now, when known)."""
        if record.ref in self._member:
            self._member_recorded(record, state)
            return []  # a batch line's fact: never acknowledged, never a refusal (nothing of the bank's)
        e = self.entries.get(record.ref)
        m = record.message
        effects: list[Effect] = []
        if outcome is Outcome.UNKNOWN:
            if m is not None:
                effects.append(Foreign(m, record.ref))
        elif outcome is Outcome.CONFLICT:
            if record.ack and m is not None:
                effects.append(Ack(m, ok=False, code="E409", text="contradicts the recorded outcome"))
        elif record.ack and m is not None:
            effects.append(Ack(m))
        if e is None:
            return effects
        if state in _SETTLED_STATES or outcome is Outcome.CONFLICT or outcome is Outcome.UNKNOWN \
                or e.phase is Phase.SETTLING:
            # Settled in the store (or the store refuses what settling it said): it leaves.
            self._drop(e)
        return effects

    def tick(self, now: float) -> list[Effect]:
        """Everything due by ``now``: resends without receipt, inquiries, give-ups, a failed claim's retry."""
        effects: list[Effect] = []
        resend: list[Entry] = []
        while self._timers and self._timers[0][0] <= now:
            when, _, ref = heapq.heappop(self._timers)
            e = self.entries.get(ref)
            if e is None or e.deadline != when:
                continue  # stale: the entry moved on or left
            e.deadline = None
            if e.phase in (Phase.AWAITING_RECEIPT, Phase.ASKING):
                assert e.first_sent is not None
                if now - e.first_sent >= self.schedule.give_up_unconfirmed:
                    # Sent again and again and never confirmed: nothing is left stuck silently (G6).
                    effects += self._settle(e, lifecycle.ResultOverdue(), (
                        f"no receipt from the bank within {self.schedule.give_up_unconfirmed:g} s "
                        f"of the first send"))
                else:
                    resend.append(e)  # queued again: sent, or with ask_before_resend asked first
            elif e.phase is Phase.AWAITING_RESULT:
                effects += self._result_due(e, now)
        if resend:
            resend.sort(key=lambda e: (e.sent_at or 0.0, e.order))
            self._requeue([e.ref for e in resend])
        if self._retry_at is not None and self._retry_at <= now:
            self._retry_at = None
        return effects + self._pump(now)

    # -- what the driver asks ----------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do; None: nothing until an input comes."""
        while self._timers:
            when, _, ref = self._timers[0]
            e = self.entries.get(ref)
            if e is not None and e.deadline == when:
                break
            heapq.heappop(self._timers)
        when = self._timers[0][0] if self._timers else None
        if self._retry_at is not None and self._queue and self.up:
            when = self._retry_at if when is None else min(when, self._retry_at)
        return when

    def phase(self, ref: str) -> Phase | None:
        return self._phase(ref)

    @property
    def depth(self) -> int:
        """Instructions held and not settling: queued, on the wire or awaiting their result."""
        return len(self.entries) - self.counts[Phase.SETTLING]

    @property
    def unconfirmed(self) -> int:
        return sum(self.counts[p] for p in _UNCONFIRMED)

    def check(self) -> None:
        """Assert the invariants between the record and its indexes (tests call it after every input)."""
        counts = {p: 0 for p in Phase}
        for ref, e in self.entries.items():
            assert e.ref == ref
            counts[e.phase] += 1
            assert (e.phase is Phase.QUEUED) == (ref in self._queue), ref
            if e.phase is Phase.CLAIMING:
                assert self._claim is not None and ref in self._claim.refs, ref
            if e.phase in (Phase.AWAITING_RECEIPT, Phase.ASKING):
                assert self.up and e.first_sent is not None and e.deadline is not None, ref
            if e.phase is Phase.AWAITING_RESULT:
                assert e.accepted_at is not None, ref
            if e.phase in (Phase.QUEUED, Phase.CLAIMING, Phase.SETTLING):
                assert e.deadline is None, ref
            if e.members:
                assert e.pending is not None and e.pending <= set(e.members) and e.inflight >= 0, ref
                assert all(self._member.get(m) == ref for m in e.members), ref
                assert (e.phase is Phase.SETTLING) == (not e.pending), ref
                assert not e.batch_no or self._batch_no.get(e.batch_no) == ref, ref
        assert counts == self.counts, (counts, self.counts)
        assert all(m in self.entries[b].members for m, b in self._member.items())
        assert len(self._queue) == counts[Phase.QUEUED]
        assert sum(counts[p] for p in _OUT) <= self.window

    # -- the bank's messages -----------------------------------------------------

    def _receipt(self, m: msg.Receipt, raw: bytes | None, now: float) -> list[Effect]:
        e = self.entries.get(m.ref)
        if e is not None and e.phase in _UNCONFIRMED:
            self._accept(e, now)
        return [Record(m.ref, lifecycle.ReceiptConfirmed(), m, raw)] + self._pump(now)

    def _result(self, m: msg.Result, raw: bytes | None, now: float) -> list[Effect]:
        e = self.entries.get(m.ref)
        answered = False  # an answer to our send or inquiry is not acknowledged; a push is
        if e is not None:
            answered = e.phase in (Phase.AWAITING_RECEIPT, Phase.ASKING) or m.reply_to in e.asked
            self._set(e, Phase.SETTLING)
        return [Record(m.ref, lifecycle.ResultReceived(m.succeeded), m, raw, ack=not answered)] + self._pump(now)

    def _not_found(self, m: msg.NotFound, raw: bytes | None, now: float) -> list[Effect]:
        e = self.entries.get(m.ref)
        if e is not None and e.phase in _UNCONFIRMED:
            if self.schedule.ask_before_resend and m.reply_to != e.ref and m.reply_to not in e.asked[e.sent_asks:]:
                # It answers an inquiry made before the latest send, which may have reached the
                # bank after that answer: it clears nothing (a batch is kept so by ``bank``).
                return []
            # Never arrived: safe to send again, with the same reference.
            e.cleared = True
            if e.phase in (Phase.AWAITING_RECEIPT, Phase.ASKING):
                self._requeue([e.ref])
            return self._pump(now)
        if e is not None:
            self._set(e, Phase.SETTLING)
        return [Record(m.ref, lifecycle.NotFoundAtBank(), m, raw,
                       text="the bank denies an instruction it had confirmed")]

    # -- moving entries ----------------------------------------------------------

    def _add(self, item: Open, now: float) -> None:
        if item.ref in self.entries or (item.ref in self._member and not item.members):
            return  # held already (a single reference that is a held batch's line too)
        if item.members and not set(item.members) - item.done:
            return  # every line settled: nothing left to do
        if item.members and (item.members[0] != item.ref or len(set(item.members)) != len(item.members)):
            raise ValueError(f"batch {item.ref}: its first member must be its reference, its members distinct")
        if item.members and any(m in self._member or m in self.entries for m in item.members):
            # A line held already on its own: cannot be, as the store writes a batch with its
            # lines and they are read batch after rows (gateway/relay_batch.py); never both.
            self.refused_batches += 1
            return
        self._n += 1
        e = Entry(item.ref, item.payload, Phase.QUEUED, order=self._n, sends=item.sends)
        self.entries[item.ref] = e
        self.counts[Phase.QUEUED] += 1
        self._queue[item.ref] = None
        if item.members:
            e.members, e.pending = item.members, set(item.members) - item.done
            for m in item.members:
                self._member[m] = item.ref
            if item.batch_no:
                e.batch_no = item.batch_no
                self._batch_no[item.batch_no] = item.ref
        if item.accepted and (not item.members or item.batch_no):
            self._accept(e, now)  # a batch without its BatchNo cannot be asked about by it: asked by serial

    def _accept(self, e: Entry, now: float) -> None:
        self._set(e, Phase.AWAITING_RESULT)
        e.accepted_at = now
        e.queries = 0
        e.next_query_at = now + self.schedule.first_query_after
        self._schedule_result(e, now)

    def _give_up_at(self, e: Entry) -> float | None:
        if self.schedule.give_up_after is None:
            return None
        assert e.accepted_at is not None
        return e.accepted_at + self.schedule.give_up_after

    def _schedule_result(self, e: Entry, now: float) -> None:
        """Arm a confirmed entry's next step: an inquiry needs the link; giving up does not."""
        assert e.next_query_at is not None
        candidates = [t for t in (self._give_up_at(e),) if t is not None]
        if self.up or e.queries >= self.schedule.query_attempts:
            candidates.append(e.next_query_at)
        self._due(e, min(candidates) if candidates else None)

    def _result_due(self, e: Entry, now: float) -> list[Effect]:
        give_up = self._give_up_at(e)
        assert e.next_query_at is not None and e.accepted_at is not None
        if give_up is not None and now >= give_up:
            return self._settle(e, lifecycle.ResultOverdue(), (
                f"no result within {self.schedule.give_up_after:g} s of the receipt, "
                f"after {e.queries} status inquiries"))
        if now >= e.next_query_at:
            if e.queries >= self.schedule.query_attempts:
                return self._settle(e, lifecycle.ResultOverdue(), f"no result after {e.queries} status inquiries")
            if self.up:
                e.queries += 1
                e.next_query_at = now + self.schedule.wait_after(e.queries)
                self._schedule_result(e, now)
                return [self._inquiry(e)]
        self._schedule_result(e, now)
        return []

    def _pump(self, now: float) -> list[Effect]:
        """Claim queued references while the window has room: one claim at a time, in queue order."""
        if not self.up or self._claim is not None or not self._queue:
            return []
        if self._retry_at is not None and now < self._retry_at:
            return []
        self._retry_at = None
        room = self.window - sum(self.counts[p] for p in _OUT)
        refs: list[str] = []
        asks: list[Effect] = []
        while self._queue and len(refs) + len(asks) < room:
            ref, _ = self._queue.popitem(last=False)
            e = self.entries[ref]
            self.counts[Phase.QUEUED] -= 1
            if (self.schedule.ask_before_resend or e.members) and e.sends > 0 and not e.cleared:
                # Sent before (maybe by a node that died): ask, and send again only on "not found".
                e.phase = Phase.ASKING
                self.counts[Phase.ASKING] += 1
                asks.append(self._ask(e, now))
                continue
            e.phase = Phase.CLAIMING
            self.counts[Phase.CLAIMING] += 1
            refs.append(ref)
        if not refs:
            return asks
        self._claim = Claim(tuple(refs), self.link)
        return asks + [self._claim]

    def _ask(self, e: Entry, now: float) -> Query:
        """An unconfirmed entry's status inquiry; asked again at its receipt deadline until given up."""
        if e.first_sent is None:
            e.first_sent = now  # sent by an earlier node: the give-up runs from the first ask
        self._due(e, now + self.schedule.receipt_timeout)
        return self._inquiry(e)

    def _inquiry(self, e: Entry) -> Query:
        """The next inquiry about ``e``: its status; for a batch the bank named, how far it is
        or, once the bank said it is complete, its result file."""
        seq = self.new_seq()
        e.asked += (seq,)
        if e.members and e.batch_no and e.phase is Phase.AWAITING_RESULT:
            return Query(e.ref, seq, e.payload, "batch_results" if e.complete else "batch_status", e.batch_no)
        return Query(e.ref, seq, e.payload)

    def _settle(self, e: Entry, event: lifecycle.Event, text: str) -> list[Effect]:
        """``e`` settles with ``event`` (a give-up): one Record, or one per open line of a batch."""
        self._set(e, Phase.SETTLING)
        if not e.members:
            return [Record(e.ref, event, text=text)]
        assert e.pending is not None
        refs = [m for m in e.members if m in e.pending]
        e.pending.clear()
        e.inflight += len(refs)
        return [Record(m, event, text=text) for m in refs]

    def _member_recorded(self, record: Record, state: str | None) -> None:
        e = self.entries.get(self._member[record.ref])
        if e is None or e.pending is None:
            return
        if isinstance(record.event, _SETTLING_EVENTS):
            e.inflight = max(e.inflight - 1, 0)
        elif state in _SETTLED_STATES:
            e.pending.discard(record.ref)  # settled in the store already (another node, an operator)
        if not e.pending and e.inflight == 0:
            self._drop(e)
        elif not e.pending and e.phase is not Phase.SETTLING:
            self._set(e, Phase.SETTLING)

    def _requeue_unconfirmed(self) -> None:
        out = [e for e in self.entries.values() if e.phase in (Phase.AWAITING_RECEIPT, Phase.ASKING)]
        out.sort(key=lambda e: (e.sent_at or 0.0, e.order))
        self._requeue([e.ref for e in out])

    def _requeue(self, refs: list[str]) -> None:
        """Put ``refs`` at the front of the queue, in the order given."""
        for ref in reversed(refs):
            e = self.entries[ref]
            self._set(e, Phase.QUEUED)
            self._queue[ref] = None
            self._queue.move_to_end(ref, last=False)

    def _set(self, e: Entry, phase: Phase) -> None:
        if e.phase is Phase.QUEUED and phase is not Phase.QUEUED:
            self._queue.pop(e.ref, None)
        self.counts[e.phase] -= 1
        self.counts[phase] += 1
        e.phase = phase
        e.deadline = None  # a timer of the old phase is stale now

    def _due(self, e: Entry, when: float | None) -> None:
        e.deadline = when
        if when is not None:
            self._n += 1
            heapq.heappush(self._timers, (when, self._n, e.ref))
            if len(self._timers) > 2 * len(self.entries) + 64:
                # Stale timers stay until they reach the top; behind a long deadline they would
                # pile up (one per send), so rebuild from the live ones.
                self._timers = [(x.deadline, i, x.ref) for i, x in enumerate(self.entries.values())
                                if x.deadline is not None]
                heapq.heapify(self._timers)

    def _drop(self, e: Entry) -> None:
        self._set(e, Phase.SETTLING)
        self.counts[Phase.SETTLING] -= 1
        del self.entries[e.ref]
        for m in e.members:
            self._member.pop(m, None)
        if e.batch_no:
            self._batch_no.pop(e.batch_no, None)

    def _phase(self, ref: str) -> Phase | None:
        e = self.entries.get(ref)
        return None if e is None else e.phase
