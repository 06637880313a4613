"""The matcher's records: what it remembers of each instruction, movement, booking and account.

Mutable state private to :class:`gateway.ledger.matcher.Matcher` (each record dumps to JSON for
its snapshot and loads back), the clock its deadlines run on (:class:`StreamClock`), and the pure
helpers its rules share (the bank-time and same-second balance arithmetic, reference tokens,
the index lists).  No I/O.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.model import parse_amount

__all__ = ["StreamClock"]

# Bank protocols carry local times without a zone; the banks are in China.
_CST = _dt.timezone(_dt.timedelta(hours=8))


_intern = sys.intern
_NONE: tuple[str, ...] = ()   # the ``others`` of a record no fact has repeated (shared)


@dataclass(frozen=True, slots=True)
class _Body:
    """What an instruction said, as the matcher compares it.

    ``debit_account`` is the centre's account the movement is expected on: debited by a
    transfer, credited by a ``collection`` (then the counterparty is the payer).  The
    accounts, the name and the bank code are interned: the same few accounts and payees
    come back in thousands of instructions, each copy with its own unpickled string.
    """

    debit_account: str
    cp_account: str
    cp_name: str
    cp_bank: str
    amount: int
    approval_ref: str | None
    collection: bool = False

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> "_Body":
        if data.get("kind") == "collection":
            d = data["debtor"]
            return cls.of(data["credit_account"], d["account"], d.get("name") or "", d.get("bank_code") or "",
                          parse_amount(data["amount"]), data.get("approval_ref") or None, True)
        c = data["creditor"]
        return cls.of(data["debit_account"], c["account"], c.get("name") or "", c.get("bank_code") or "",
                      parse_amount(data["amount"]), data.get("approval_ref") or None)

    @classmethod
    def of(cls, debit_account: str, cp_account: str, cp_name: str, cp_bank: str, amount: int,
           approval_ref: str | None, collection: bool = False) -> "_Body":
        return cls(_intern(debit_account), _intern(cp_account), _intern(cp_name), _intern(cp_bank),
                   amount, approval_ref, collection)

    def expects(self, amount: int) -> bool:
        """Whether a movement of signed ``amount`` goes the way this instruction moves money."""
        return amount > 0 if self.collection else amount < 0

    def signed(self) -> int:
        """The signed movement this instruction should cause on the centre's account."""
        return self.amount if self.collection else -self.amount

    def dump(self) -> list[Any]:
        return [self.debit_account, self.cp_account, self.cp_name, self.cp_bank, self.amount,
                self.approval_ref, self.collection]


class _Repeated:
    """What a record does with a fact it already holds: its further event ids are kept in
    ``others`` (the evidence of later alerts; shared ``_NONE`` until the first)."""

    __slots__ = ()
    others: tuple[str, ...] | list[str]
    event_id: str

    def events(self) -> list[str]:
        return [self.event_id, *self.others]

    def repeat(self, eid: str) -> None:
        """Record a further event id reporting a fact already known."""
        if self.others is _NONE:
            self.others = [eid]
        else:
            self.others.append(eid)  # type: ignore[union-attr]


class _Instr(_Repeated):
    """One instruction as the matcher knows it.

    Kept for ``Thresholds.retention`` after its last fact, since a booking may come a day
    later; most are settled long before, so the record is lean by default (bench/README.md,
    item 40): the containers a clean lifecycle never fills (``others``, ``bookings``,
    ``raised``; ``debits`` until its debit) are None or a shared empty tuple until something
    goes in, the instruction id is read from the key, and the strings repeated across
    records (centre, bank, state names) are interned.  What every later rule may read stays: the event ids are the
    evidence of any alert a late fact raises and what makes a repeated fact a no-op.
    """

    __slots__ = (
        "bank",
        "bank_ref",
        "body",
        "bookings",
        "centre",
        "debits",
        "key",
        "last_s",
        "others",
        "raised",
        "result",
        "states",
        "success_s",
    )

    def __init__(self, key: str, centre: str, iid: str, now: float) -> None:
        if key != f"{centre}/{iid}":
            raise ValueError(f"instruction key {key!r} is not {centre!r}/{iid!r}")
        self.key = key
        self.centre = _intern(centre)
        self.bank: str | None = None
        self.bank_ref: str | None = None
        self.body: _Body | None = None
        self.states: dict[str, str] = {}        # state (interned) -> first event id reporting it
        self.others: tuple[str, ...] | list[str] = _NONE   # further event ids (repeats)
        self.result: tuple[bool, str] | None = None   # (succeeded, host serial)
        self.success_s: float | None = None
        self.last_s = now
        self.debits: dict[str, str] | None = None      # movement key -> event id, debits matched here
        self.bookings: dict[str, None] | None = None   # booking keys naming this instruction
        self.raised: set[str] | None = None             # alert keys raised (None: none yet)

    @property
    def iid(self) -> str:
        return self.key[len(self.centre) + 1:]

    def events(self) -> list[str]:
        return [*self.states.values(), *self.others]


    def set_bank(self, bank: str | None) -> None:
        self.bank = _intern(bank) if bank is not None else None

    def add_state(self, state: str, eid: str) -> None:
        self.states[_intern(state)] = eid

    def add_debit(self, mkey: str, eid: str) -> None:
        if self.debits is None:
            self.debits = {}
        self.debits[mkey] = eid

    def add_booking(self, bkey: str) -> None:
        if self.bookings is None:
            self.bookings = {}
        self.bookings[bkey] = None

    def final(self) -> bool:
        s = self.states
        return "succeeded" in s or "failed" in s or "rejected" in s

    def dump(self) -> list[Any]:
        return [self.key, self.centre, self.iid, self.bank, self.bank_ref,
                self.body.dump() if self.body else None, dict(self.states),
                list(self.others), list(self.result) if self.result else None, self.success_s,
                self.last_s, dict(self.debits or ()), list(self.bookings or ()), sorted(self.raised or ())]

    @classmethod
    def load(cls, d: list[Any]) -> _Instr:
        (key, centre, iid, bank, ref, body, states, others, result, success_s, last_s,
         debits, bookings, raised) = d
        r = cls(key, centre, iid, last_s)
        r.set_bank(bank)
        r.bank_ref = ref
        r.body = _Body.of(*body) if body else None
        for state, eid in states.items():
            r.add_state(state, eid)
        r.others = list(others) if others else _NONE
        r.result = (bool(result[0]), str(result[1])) if result else None
        r.success_s = success_s
        r.debits = dict(debits) if debits else None
        r.bookings = dict.fromkeys(bookings) if bookings else None
        r.raised = set(raised) if raised else None
        return r


class _Move(_Repeated):
    """One movement (a bank's host serial on one account).

    As lean as :class:`_Instr`, for the same reason; its summary's reference ``tokens`` are
    dropped once it is matched to an instruction, the one moment after which no rule reads
    them (they serve to find its instruction, and to index it while it waits for one).
    """

    __slots__ = (
        "account",
        "amount",
        "bank",
        "centre",
        "cp_account",
        "cp_bank",
        "event_id",
        "host",
        "instr",
        "key",
        "large_pending",
        "last_s",
        "others",
        "raised",
        "reversal",
        "t",
        "tokens",
        "waiting",
        "cp_name",
    )

    def __init__(self, key: str, bank: str, account: str, host: str, amount: int, cp_account: str,
                 cp_bank: str, reversal: bool, centre: str, t: str, tokens: list[str] | tuple[str, ...],
                 event_id: str, now: float) -> None:
        self.key = key
        self.bank = _intern(bank)
        self.account = _intern(account)
        self.host = host
        self.amount = amount
        self.cp_account = _intern(cp_account)
        self.cp_bank = _intern(cp_bank)
        self.reversal = reversal
        self.centre = _intern(centre)
        self.t = t
        self.tokens: tuple[str, ...] = tuple(tokens) if tokens else _NONE
        self.event_id = event_id
        self.others: tuple[str, ...] | list[str] = _NONE
        self.last_s = now
        self.instr: str | None = None           # the instruction this debit is matched to
        self.waiting = False                    # in the unmatched-debit indexes
        self.large_pending = False              # large-amount still to be judged
        self.raised: set[str] | None = None
        self.cp_name = ""                       # the counterparty's name, for a deferred alert


    def matched(self, instr: str) -> None:
        """Matched to instruction ``instr`` (already out of the waiting indexes): its tokens go."""
        assert not self.waiting
        self.instr = instr
        self.tokens = _NONE

    def dump(self) -> list[Any]:
        return [self.key, self.bank, self.account, self.host, self.amount, self.cp_account,
                self.cp_bank, self.reversal, self.centre, self.t, list(self.tokens), self.event_id,
                list(self.others), self.last_s, self.instr, self.waiting, self.large_pending,
                sorted(self.raised or ()), self.cp_name]

    @classmethod
    def load(cls, d: list[Any]) -> _Move:
        m = cls(*d[:12], now=d[13])
        m.others, m.instr, m.waiting, m.large_pending = list(d[12]) or _NONE, d[14], d[15], d[16]
        if m.instr is not None and not m.waiting:
            m.tokens = _NONE  # matched: as :meth:`matched` leaves it (older snapshots kept them)
        m.raised = set(d[17]) or None
        m.cp_name = d[18] if len(d) > 18 else ""  # snapshots before collections lack it
        return m


class _Booking(_Repeated):
    __slots__ = (
        "account",
        "amount",
        "centre",
        "event_id",
        "host",
        "instr",
        "key",
        "last_s",
        "matched",
        "others",
        "raised",
    )

    def __init__(self, key: str, centre: str, instr: str | None, host: str | None, account: str,
                 amount: int, event_id: str, now: float) -> None:
        self.key = key
        self.centre = _intern(centre)
        self.instr = instr
        self.host = host
        self.account = _intern(account)
        self.amount = amount
        self.event_id = event_id
        self.others: tuple[str, ...] | list[str] = _NONE
        self.last_s = now
        self.matched = False                    # its instruction or movement has been seen
        self.raised: set[str] | None = None

    def content(self) -> tuple[Any, ...]:
        return (self.instr, self.host, self.account, self.amount)


    def dump(self) -> list[Any]:
        return [self.key, self.centre, self.instr, self.host, self.account, self.amount,
                self.event_id, list(self.others), self.last_s, self.matched, sorted(self.raised or ())]

    @classmethod
    def load(cls, d: list[Any]) -> _Booking:
        b = cls(*d[:7], now=d[8])
        b.others, b.matched, b.raised = list(d[7]) or _NONE, d[9], set(d[10]) or None
        return b


class _Account:
    """Balance continuity of one account at one bank.

    Its snapshots and movements are tuples (not lists: nothing changes them in place).
    """

    __slots__ = ("account", "bank", "base", "key", "kept", "moves", "pending", "pending_ids")

    def __init__(self, bank: str, account: str) -> None:
        self.bank = _intern(bank)
        self.account = _intern(account)
        self.key = _intern(f"{bank}:{account}")     # its deadlines' key, one string for them all
        self.base: tuple[Any, ...] | None = None    # (t, balance, event id): last settled snapshot
        self.pending: list[tuple[Any, ...]] = []    # (t, balance, event id, seen_s), sorted
        self.pending_ids: set[str] = set()          # event ids in ``pending``
        self.moves: list[tuple[Any, ...]] = []      # (t, amount, event id, seen_s), sorted by t
        self.kept = 0                               # size after the last prune (no snapshot yet)

    def dump(self) -> list[Any]:
        return [self.bank, self.account, list(self.base) if self.base else None,
                [list(x) for x in self.pending], [list(x) for x in self.moves], self.kept]

    @classmethod
    def load(cls, d: list[Any]) -> _Account:
        a = cls(d[0], d[1])
        a.base = tuple(d[2]) if d[2] else None
        a.pending = [tuple(x) for x in d[3]]
        a.pending_ids = {x[2] for x in a.pending}
        a.moves = [tuple(x) for x in d[4]]
        a.kept = d[5]
        return a


class StreamClock:
    """The time the matcher's deadlines are measured in: the ledger's clock, held back by how
    far the copies lag behind the gateways that made them.

    "No result 60 s after the instruction was seen" must not count the seconds the copies
    spent queued on their way: when the ledger ingests more slowly than a gateway commits,
    an instruction's result reaches it later and later after the instruction itself, and a
    deadline on the ledger's own clock fires for results the gateway had long ago.  Each
    copy's delay (the ledger's time when it is matched minus the gateway's ``created_us``)
    is compared with the smallest delay seen from that gateway, which is the two clocks'
    offset plus the quickest delivery; the excess is how far the ledger is behind.  The
    clock runs the ledger's time less the largest such excess over the gateways, and never
    backwards.  While a gateway sends nothing its last excess stands, so deadlines still
    fall due in real time once the ledger has caught up with it.

    The ledger's time is its own and does not step (:func:`gateway.clock.steady_clock`).
    A gateway's times step with its wall clock; it journals each step
    (``gateway.clock_step``, first in the first transaction stamped after it), and
    :meth:`copy` undoes it: that copy and every later one of the gateway are read
    ``step_s`` earlier, so a step back does not look like copies an hour late (every
    deadline of every gateway held back by the hour) and a step forward does not make the
    next step back look like one.  A step the gateway could not see (taken while it was
    stopped) shows as a copy made more than :data:`SKEW_S` before the one before it, which a
    journal written in order cannot hold: that copy is taken as delivered as quickly as any
    (its excess 0), so the ledger's time goes on at once; if the ledger was in fact behind at
    that moment its deadlines run early by as much until the next copies show it again.

    **Copies the gateway has and the ledger has not.**  The lag is measured on copies that
    arrived; copies still at the gateway or on the wire (a POST unanswered and sent again
    a minute later) leave nothing to measure, and the clock would run on in real time while
    a balance pair is settled before the movement between its snapshots arrives: a false
    balance-break (bench/README.md, item 39).  So each batch says how far the gateway's
    journal had got when it was sent (:meth:`head`), and every copy taken says where it is
    in that journal (:meth:`reached`).  While a gateway is known to have journalled beyond
    its last copy taken, the clock runs no later than that copy's time plus the gateway's
    quickest delivery (the floor): every copy made before it is here (copies arrive in
    journal order), any made after may not be.  Seqs, not times, say "behind": they are
    exact, do not step with the gateway's clock and need no skew allowance.  The hold is
    bounded: ``hold_s`` seconds after the gateway's last copy was taken, the clock runs in
    real time again (as if the gateway had said nothing), so a gateway that dies or is cut
    off while behind, or is stuck resending a copy the ledger refuses, delays deadlines by at
    most ``hold_s`` and freezes none.  Nothing is said for a gateway that had sent
    everything it had when its link went quiet: the ledger cannot know of copies journalled
    after its last batch.
    Pure: the caller passes the ledger's time.
    """

    __slots__ = ("_floor", "_excess", "_now", "_shift", "_last", "_head", "_reached", "_heard", "hold_s")

    SKEW_S = 2.0
    """How far a gateway's copy may be stamped before the one before it (its nodes' clocks
    differ a little) before the ledger takes it as an unreported step back."""

    HOLD_S = 120.0
    """How long, by default, the clock waits for a gateway known to be behind, from its last
    copy taken: two of its forwarder's longest retry cycles (a 30 s request timeout and a 30 s
    backoff).  The ledger's ``[thresholds] gateway_behind_hold``."""

    def __init__(self, hold_s: float = HOLD_S) -> None:
        self._floor: dict[str, float] = {}    # gateway -> smallest delay seen
        self._excess: dict[str, float] = {}   # gateway -> its last copy's delay over that
        self._shift: dict[str, float] = {}    # gateway -> seconds added to its times (steps undone)
        self._last: dict[str, float] = {}     # gateway -> its last copy's time, shifted
        self._head: dict[str, int] = {}       # gateway -> journal seq it said it had, beyond _reached
        self._reached: dict[str, int] = {}    # gateway -> the newest of its journal seqs taken
        self._heard: dict[str, float] = {}    # gateway -> ledger time _reached last moved
        self.hold_s = hold_s
        self._now = float("-inf")

    def copy(self, gateway: str, created_us: int, wall: float, *, step_s: float = 0.0) -> float:
        """The time to match a copy of ``gateway`` made at ``created_us`` by, at ledger time ``wall``;
        ``step_s``: the copy is the gateway's record of its clock stepped by that much."""
        shift = self._shift.get(gateway, 0.0) - step_s
        made = created_us / 1_000_000 + shift
        floor = self._floor.get(gateway)
        last = self._last.get(gateway)
        if floor is not None and last is not None and made < last - self.SKEW_S:
            # An unreported step back: re-based so that this copy's delay is the floor.
            shift += (wall - made) - floor
            made = created_us / 1_000_000 + shift
        self._shift[gateway] = shift
        self._last[gateway] = made if last is None else max(last, made)
        delay = wall - made
        if floor is None or delay < floor:
            self._floor[gateway] = floor = delay
        self._excess[gateway] = delay - floor
        return self.now(wall)

    def reached(self, gateway: str, seq: int, wall: float) -> None:
        """A copy of ``gateway`` at its journal ``seq`` was taken at ledger time ``wall`` (one
        the matcher could not read too: it is delivered all the same)."""
        if seq > self._reached.get(gateway, -1):
            self._reached[gateway] = seq
            self._heard[gateway] = wall
            if self._head.get(gateway, -1) <= seq:
                self._head.pop(gateway, None)

    def head(self, gateway: str, seq: int) -> None:
        """``gateway`` said its journal had reached ``seq`` when it sent a batch of copies."""
        if seq > max(self._head.get(gateway, -1), self._reached.get(gateway, -1)):
            self._head[gateway] = seq

    def now(self, wall: float) -> float:
        """The time to run deadlines by, at ledger time ``wall``."""
        behind = max(self._excess.values(), default=0.0)
        for gateway in self._head:
            held = self._held(gateway, wall)
            if held is not None and held > behind:
                behind = held
        if wall - behind > self._now:
            self._now = wall - behind
        return self._now

    def _held(self, gateway: str, wall: float) -> float | None:
        """How far ``gateway``, known to be behind, holds the clock back at ``wall``; None when it
        does not (caught up, unheard for longer than ``hold_s``, or no copy timed yet)."""
        if gateway not in self._head:
            return None
        heard = self._heard.get(gateway)
        floor = self._floor.get(gateway)
        if heard is None or floor is None or wall - heard > self.hold_s:
            return None
        return wall - (self._last[gateway] + floor)

    def behind(self, wall: float) -> dict[str, tuple[int, float]]:
        """Per gateway heard from: journal seqs it said it had beyond its last copy taken (0 when
        none are known missing), and the seconds deadlines have waited for them (0 when they
        do not wait, the bound passed included)."""
        out: dict[str, tuple[int, float]] = {}
        for gateway in self._reached.keys() | self._head.keys():
            head = self._head.get(gateway)
            reached = self._reached.get(gateway, 0)
            waiting = self._held(gateway, wall) is not None
            out[gateway] = (head - reached if head is not None else 0,
                            max(0.0, wall - self._heard[gateway]) if waiting else 0.0)
        return out


def _t(row: list[Any]) -> str:
    return row[0]


def _explained(diff: int, tie_p: list[int], tie_s: list[int], *, same_time: bool, tolerance: int) -> bool:
    """Whether the movements stamped in the same second as the two snapshots account for
    ``diff`` (the later balance minus the earlier one and every movement strictly between).

    Bank times have whole seconds, and a busy account moves many times a second, so a
    snapshot holds some of its own second's movements: those the bank executed before it,
    which are the first ones it reported.  ``tie_p`` and ``tie_s`` are the movements of
    the earlier and the later snapshot's second, in the order the bank reported them.  The
    later snapshot adds the ones of ``tie_p`` the earlier had not (a tail) and holds the
    first ones of ``tie_s`` (a head).  With both snapshots in one second (``same_time``),
    it holds a longer head of the same movements than the earlier one, or a shorter one
    when the earlier was taken later.
    """
    def near(sums: list[int], target: int) -> bool:  # some value of ascending ``sums`` within tolerance
        i = bisect.bisect_left(sums, target - tolerance)
        return i < len(sums) and sums[i] <= target + tolerance

    if same_time:
        heads = [0]
        for amount in tie_p:
            heads.append(heads[-1] + amount)
        seen: list[int] = []
        for head in heads:  # a segment sum is one head minus an earlier (or later) one
            bisect.insort(seen, head)
            if near(seen, head - diff) or near(seen, head + diff):
                return True
        return False
    heads = [0]
    for amount in tie_s:
        heads.append(heads[-1] + amount)
    heads.sort()
    tail = 0
    if near(heads, diff):
        return True
    for amount in reversed(tie_p):
        tail += amount
        if near(heads, diff - tail):
            return True
    return False


_WORD = re.compile(r"[A-Za-z0-9_-]+")
_DIGITS = re.compile(r"[0-9]{8,}")


def _tokens(*texts: str) -> list[str]:
    """Candidate references in a movement's summary/remark: words and long digit runs."""
    found: dict[str, None] = {}
    for text in texts:
        if text:
            for w in _WORD.findall(text):
                if len(w) <= 32:
                    found[w] = None
            for d in _DIGITS.findall(text):
                if len(d) <= 32:
                    found[d] = None
    return list(found)[:16]


def _bank_time(as_of: str | None, created_us: int) -> str:
    """A snapshot's bank-local time as an ISO string comparable with movement times.

    Without ``as_of`` the gateway's journal time stands in for it.
    """
    if as_of:
        d = _dt.datetime.fromisoformat(as_of)
        if d.tzinfo is not None:
            d = d.astimezone(_CST).replace(tzinfo=None)
    else:
        d = _dt.datetime.fromtimestamp(created_us / 1_000_000, _CST).replace(tzinfo=None)
    return d.isoformat()


def _append(index: dict[str, list[str]], key: str, value: str) -> None:
    lst = index.get(key)
    if lst is None:
        index[key] = [value]
    elif value not in lst:
        lst.append(value)


def _remove(index: dict[str, list[str]], key: str, value: str) -> None:
    lst = index.get(key)
    if lst is not None and value in lst:
        lst.remove(value)
        if not lst:
            del index[key]
