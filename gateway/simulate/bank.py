"""A simulated commissioned bank: a pure ledger core and its Twisted link edge.

:class:`BankCore` is the bank itself, with no I/O and no clock of its own: it
is fed neutral messages (:mod:`adapters.base`) with the current time and
returns the messages it sends.  It keeps accounts in fen, executes each
instruction reference at most once (a resend gets the original outcome),
pushes a :class:`~adapters.base.Movement` notice after every executed
transfer and keeps every push pending until the gateway acknowledges it.

:func:`make_bank_service` puts a core on a mutually-authenticated TLS link,
either dialling the gateway or listening for it, speaking any installed
adapter.  Fault knobs (execution delay, failure rate, connection drops,
silence) are seeded so that runs reproduce.

The bank can also misbehave on purpose (``faults``, :data:`BANK_FAULTS`):
commit, on a fixed schedule, each bank-side offence the supervision ledger
exists to catch (an unsolicited debit, a result that differs from the
instruction, a double execution, a balance answer that breaks continuity, money
from an unregistered counterparty, a movement on an account off the register).
See :class:`BankCore` for what each offence leaves behind and
:func:`fault_schedule` for when.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import random
import re
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHandshakeListener,
    IListeningPort,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from adapters import base
from adapters.base import (
    Adapter,
    Ack,
    AdapterError,
    Balance,
    BalanceQuery,
    Entry,
    Heartbeat,
    HeartbeatAnswer,
    Message,
    Movement,
    NotFound,
    Receipt,
    Result,
    SignOn,
    SignOnAnswer,
    StatusQuery,
    load_adapter,
)
from gateway.faults import crash_point
from gateway.model import mask_account
from gateway.tls import (
    PeerIdentity,
    client_options,
    peer_identity,
    server_options,
    tls_client_endpoint,
    tls_server_factory,
)

__all__ = [
    "CODE_OK",
    "CODE_INSUFFICIENT_FUNDS",
    "CODE_UNKNOWN_ACCOUNT",
    "CODE_INVALID_AMOUNT",
    "CODE_HOST_DECLINED",
    "CODE_SIGN_ON_REFUSED",
    "BANK_TZ",
    "BANK_FAULTS",
    "FAULT_MISMATCH_EXTRA",
    "FAULT_BALANCE_DRIFT",
    "FAULT_AMOUNT_RANGE",
    "FAULT_COUNTERPARTY_ACCOUNT",
    "FAULT_COUNTERPARTY_NAME",
    "FAULT_COUNTERPARTY_BANK_CODE",
    "FAULT_OFF_REGISTER_ACCOUNT",
    "FAULT_SUMMARIES",
    "Outcome",
    "Offence",
    "BankCore",
    "parse_opening_balance",
    "parse_faults",
    "fault_schedule",
    "offences_in",
    "BankLink",
    "BankSimProtocol",
    "BankSimFactory",
    "BankService",
    "ExchangeBankLink",
    "ExchangeBankProtocol",
    "make_bank_service",
    "write_json_atomically",
]

# Return codes the simulated host gives.  bdc uses "00000" for success; the
# failure codes are the simulator's own, stable so tests can name them.
CODE_OK = "00000"
CODE_INSUFFICIENT_FUNDS = "E1001"
CODE_UNKNOWN_ACCOUNT = "E1002"
CODE_INVALID_AMOUNT = "E1003"
CODE_HOST_DECLINED = "E1099"
CODE_SIGN_ON_REFUSED = "E0001"

_TEXTS = {
    CODE_OK: "transfer executed",
    CODE_INSUFFICIENT_FUNDS: "insufficient funds",
    CODE_UNKNOWN_ACCOUNT: "unknown debit account",
    CODE_INVALID_AMOUNT: "invalid amount",
    CODE_HOST_DECLINED: "declined by the bank host",
    CODE_SIGN_ON_REFUSED: "sign-on refused: unknown node",
}

BANK_TZ = _dt.timezone(_dt.timedelta(hours=8), "CST")
"""Banks book in China Standard Time; value dates and times are taken in it."""

_NODE = re.compile(r"[0-9A-Za-z]{1,12}")
_SERIAL_LIMIT = 10**12  # host serials are "H" + 12 digits

# -- deliberate misbehaviour -------------------------------------------------------

BANK_FAULTS: tuple[str, ...] = (
    "unsolicited-debit",
    "result-mismatch",
    "duplicate-execution",
    "balance-break",
    "unregistered-counterparty",
    "unregistered-account",
)
"""The offences the simulated bank can commit on purpose, in their fixed order.

Each is named after the supervision ledger rule (docs/architecture.md, "The ledger") it should
trigger.  The order is part of the schedule (:func:`fault_schedule`) and of the
order in which one transfer's offences are pushed.
"""

FAULT_MISMATCH_EXTRA = 100
"""result-mismatch: fen booked on top of the instructed amount (1.00)."""

FAULT_BALANCE_DRIFT = -10_000
"""balance-break: fen each offence adds to the drift of the reported balance (−100.00)."""

FAULT_AMOUNT_RANGE = (100_000, 1_000_000)
"""Fen range [low, high) of the seeded amounts of unsolicited debits and the two unregistered credits."""

FAULT_COUNTERPARTY_ACCOUNT = "6299990000000001"
"""unregistered-counterparty: the made-up payer, on nobody's counterparty register."""
FAULT_COUNTERPARTY_NAME = "未备案单位"
FAULT_COUNTERPARTY_BANK_CODE = "999999999999"

FAULT_OFF_REGISTER_ACCOUNT = "6200000000009999"
"""unregistered-account: the account the bank books on although no register holds it.

It must be on no gateway register (the gateway keeps movements on an account
nobody registered, but refuses one on another bank's account).
"""

FAULT_SUMMARIES: Mapping[str, str] = MappingProxyType({
    "unsolicited-debit": "其他扣款",
    "unregistered-counterparty": "往来款",
    "unregistered-account": "现金存入",
})
"""Summaries of the offences' own movements: no ASCII word or digit run, so they name no reference."""


def _check_faults(faults: Iterable[str]) -> frozenset[str]:
    if isinstance(faults, (str, bytes)):
        # A string is iterable too; "balance-break" must not become a set of letters.
        raise TypeError("faults must be a set of fault names; use parse_faults() for text")
    chosen = frozenset(faults)
    unknown = sorted(str(f) for f in chosen if f not in BANK_FAULTS)
    if unknown:
        raise ValueError(f"unknown bank fault(s) {', '.join(unknown)}; known: {', '.join(BANK_FAULTS)}")
    return chosen


def _check_every(fault_every: object) -> int:
    if type(fault_every) is not int or fault_every < 1:
        raise ValueError(f"fault_every must be a positive int, not {fault_every!r}")
    return fault_every


def parse_faults(text: str) -> frozenset[str]:
    """The faults named in ``text``: comma-separated names from :data:`BANK_FAULTS`, or ``all``.

    Blanks around names are ignored; an empty or all-blank text means no
    faults.  An unknown or empty name raises ``ValueError`` naming the known ones.
    """
    if not text.strip():
        return frozenset()
    names: set[str] = set()
    for raw in text.split(","):
        name = raw.strip()
        if name == "all":
            names.update(BANK_FAULTS)
        elif name in BANK_FAULTS:
            names.add(name)
        else:
            what = f"unknown bank fault {name!r}" if name else f"empty fault name in {text!r}"
            raise ValueError(f"{what}; known: {', '.join(BANK_FAULTS)} (or all)")
    return frozenset(names)


def fault_schedule(faults: Iterable[str], fault_every: int = 50) -> dict[str, int]:
    """The offset of each enabled offence in every run of ``fault_every`` booked transfers.

    The schedule, exactly: number the transfers the bank books 1, 2, 3, …
    (an execution that succeeded and moved money; failures, refusals and
    resends do not count).  Take the enabled offences in :data:`BANK_FAULTS`
    order as ``f_0 … f_(F-1)``; offence ``f_j`` has the offset
    ``o_j = 1 + (j * fault_every) // F`` and is committed with booked
    transfer ``k`` exactly when ``k >= o_j`` and ``(k - o_j) % fault_every == 0``.
    The offences are so spread evenly over each run; when ``fault_every < F``
    some share a transfer, and then all of them are committed with it.
    Returns ``{offence: o_j}`` in :data:`BANK_FAULTS` order.
    """
    chosen = _check_faults(faults)
    every = _check_every(fault_every)
    enabled = [f for f in BANK_FAULTS if f in chosen]
    return {f: 1 + (j * every) // len(enabled) for j, f in enumerate(enabled)}


def offences_in(faults: Iterable[str], fault_every: int, transfers: int) -> dict[str, int]:
    """How often each enabled offence is committed while the bank books ``transfers`` transfers.

    ``(transfers - o) // fault_every + 1`` for an offset ``o`` reached, else 0
    (see :func:`fault_schedule`): what a demo of that many successful
    instructions should show the ledger raise.
    """
    if transfers < 0:
        raise ValueError("transfers must not be negative")
    return {f: (transfers - o) // fault_every + 1 if transfers >= o else 0
            for f, o in fault_schedule(faults, fault_every).items()}


@dataclass(frozen=True)
class Outcome:
    """The host's final outcome for one instruction reference; never changes once made."""

    ref: str
    succeeded: bool
    host_seq_no: str
    bank_seq_no: str
    code: str
    text: str
    executed_at: float


@dataclass(frozen=True)
class Offence:
    """One offence the bank committed on purpose, for logs and tests.

    ``transfer`` is the booked-transfer number it was scheduled on and ``ref``
    that transfer's instruction reference; ``account`` the account it hit;
    ``host_seq_no`` the serial of its movement (for result-mismatch the
    transfer's own, for balance-break empty); ``amount`` the signed fen of the
    offending entry (balance-break: the drift the reported balance now has).
    """

    fault: str
    transfer: int
    ref: str
    account: str
    host_seq_no: str
    amount: int
    at: float


@dataclass
class _Transfer:
    """What the bank keeps per instruction reference (mutable while executing)."""

    instruction: base.Instruction
    bank_seq_no: str
    received_at: float
    due: float
    # The seq_no to answer when execution finishes (the bank replies "within
    # the call"); empty when the instruction was answered with a Receipt and
    # the outcome is pushed instead.
    answer_to: str
    outcome: Outcome | None = None


def parse_opening_balance(text: str) -> tuple[str, int]:
    """Parse ``ACCOUNT=AMOUNT`` (amount a plain decimal such as ``1000000.00``) into (account, fen).

    Raises ``ValueError`` naming the problem; a zero balance is allowed, a negative one is not.
    """
    account, sep, amount = text.partition("=")
    if not sep or not re.fullmatch(r"[0-9A-Za-z-]{1,32}", account):
        raise ValueError(f"{text!r}: expected ACCOUNT=AMOUNT with a 1-32 character account")
    m = re.fullmatch(r"(0|[1-9][0-9]{0,15})(?:\.([0-9]{1,2}))?", amount)
    if m is None:
        raise ValueError(f"{text!r}: amount must be a plain decimal with at most two decimals")
    return account, int(m.group(1)) * 100 + int((m.group(2) or "0").ljust(2, "0"))


class BankCore:
    """The simulated bank's host: accounts, execution, dedupe, notices.  Pure: no I/O, no clock.

    Promises:

    - each instruction reference (``Instruction.seq_no``) is executed at most
      once; every later copy is answered with the original outcome (or a
      Receipt while still executing), and counted in ``duplicates``;
    - every executed transfer that moved money is followed by a Movement
      notice, and every notice and pushed Result stays in
      :meth:`pending_pushes` until an ``Ack`` with ``reply_to`` its seq_no
      arrives (``ok`` true);
    - the bank's own seq_nos are unique and at most 20 characters, host serials
      are ``H`` + 12 digits and unique; both start at ``first_serial``, so a
      restarted simulator should be given a higher one (see
      :meth:`serial_start_for`);
    - outcomes drawn with ``failure_rate`` depend only on ``seed`` and the
      reference, not on arrival order, so runs reproduce.

    ``delay`` is the host's execution time in seconds.  When it exceeds
    ``reply_within`` the instruction is answered at once with a Receipt and,
    with ``push_results``, the outcome is pushed when :meth:`tick` reaches it,
    as a late answer to the instruction (``reply_to`` is the reference), and
    kept until the gateway acknowledges it; the gateway can always ask for it
    with a StatusQuery.  Otherwise the Result answers the instruction when
    execution finishes (at once when ``delay`` is 0).

    ``silent`` ignores every instruction (no answer, no execution).  ``drop_rate``
    is only drawn here (:meth:`draw_drop`); the link acts on it.

    ``faults`` (names from :data:`BANK_FAULTS`) makes the bank misbehave on
    purpose, on the schedule of :func:`fault_schedule` (``fault_every``): each
    offence is committed with the booked transfer it falls on, "transfer k"
    below, and every movement it makes is pushed like any notice (pending
    until acknowledged), after transfer k's own notice, in :data:`BANK_FAULTS`
    order.  The book always stays right: every change to it is notified, and
    ``balance_after`` is the true balance.  What each offence leaves behind:

    - ``unsolicited-debit``: a Movement debiting transfer k's debit account
      (fresh host serial, summary :data:`FAULT_SUMMARIES` naming no reference,
      no remark) by a seeded amount (:data:`FAULT_AMOUNT_RANGE`), paid to
      transfer k's creditor (a counterparty the gateway let through); an own
      creditor is credited too, as an own transfer would be;
    - ``result-mismatch``: transfer k is booked for its amount plus
      :data:`FAULT_MISMATCH_EXTRA`; the Result says success, the notice and
      the book show the wrong amount;
    - ``duplicate-execution``: transfer k is booked a second time with a fresh
      host serial and pushed in a second Movement; the Result names the first;
      ``executions`` (and ``executions_by_reference``) show 2 for it;
    - ``balance-break``: every later Balance answer for transfer k's debit
      account is off the true book by a further :data:`FAULT_BALANCE_DRIFT`
      (the drift accumulates, so each offence breaks continuity once);
    - ``unregistered-counterparty``: a Movement crediting transfer k's debit
      account with a seeded amount from :data:`FAULT_COUNTERPARTY_ACCOUNT`
      (on no register);
    - ``unregistered-account``: a Movement crediting
      :data:`FAULT_OFF_REGISTER_ACCOUNT` (a cash deposit, no counterparty)
      with a seeded amount; the bank keeps that account off its book (no
      balance answer, not in ``stats()["balances"]``).

    Seeded amounts depend only on ``fault_seed``, the offence and its
    occurrence number.  An offence may overdraw an account (the bank
    misbehaves); a bank without faults never does.
    """

    def __init__(
        self,
        *,
        node: str,
        accounts: Mapping[str, int],
        account_names: Mapping[str, str] | None = None,
        gateway_node: str = "D00000",
        delay: float = 0.0,
        reply_within: float = 0.0,
        failure_rate: float = 0.0,
        drop_rate: float = 0.0,
        silent: bool = False,
        push_results: bool = True,
        seed: int = 0,
        first_serial: int = 1,
        tz: _dt.tzinfo = BANK_TZ,
        faults: AbstractSet[str] = frozenset(),
        fault_every: int = 50,
        fault_seed: int = 0,
    ) -> None:
        if not _NODE.fullmatch(node) or len(node) > 6:
            raise ValueError(f"node {node!r} must be 1-6 letters or digits")
        if not _NODE.fullmatch(gateway_node):
            raise ValueError(f"gateway_node {gateway_node!r} must be letters or digits")
        for name, rate in (("failure_rate", failure_rate), ("drop_rate", drop_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {rate}")
        if delay < 0 or reply_within < 0:
            raise ValueError("delay and reply_within must not be negative")
        if not 1 <= first_serial < _SERIAL_LIMIT:
            raise ValueError(f"first_serial must be between 1 and {_SERIAL_LIMIT - 1}")
        for account, balance in accounts.items():
            if type(balance) is not int or balance < 0:
                raise ValueError(f"opening balance of {account!r} must be a non-negative int (fen)")
        chosen = _check_faults(faults)
        offsets = fault_schedule(chosen, fault_every)
        if type(fault_seed) is not int:
            raise ValueError(f"fault_seed must be an int, not {fault_seed!r}")
        # The offences' made-up accounts must really be nobody's, this bank's included.
        for fault, made_up in (("unregistered-counterparty", FAULT_COUNTERPARTY_ACCOUNT),
                               ("unregistered-account", FAULT_OFF_REGISTER_ACCOUNT)):
            if fault in chosen and made_up in accounts:
                raise ValueError(f"fault {fault} needs account {made_up} to be none of the bank's")
        self.node = node
        self.gateway_node = gateway_node
        self.delay = float(delay)
        self.reply_within = float(reply_within)
        self.failure_rate = float(failure_rate)
        self.drop_rate = float(drop_rate)
        self.silent = silent
        self.push_results = push_results
        self.seed = seed
        self.tz = tz
        self._balances: dict[str, int] = dict(accounts)
        self._names: dict[str, str] = dict(account_names or {})
        self._serial = first_serial
        self._drop_rng = random.Random(f"{seed}:drop")
        self._transfers: dict[str, _Transfer] = {}
        # The transfers still executing (no outcome yet): few at any time, whereas
        # _transfers keeps every one ever received (resends are answered from it).
        self._executing: dict[str, _Transfer] = {}
        # Pushed messages by seq_no, in push order (dicts keep insertion order).
        self._pending: dict[str, Message] = {}
        # Outcomes made since the last take_executed(); bounded for a core nobody drains.
        self._executed: deque[Outcome] = deque(maxlen=10_000)
        self.executions: Counter[str] = Counter()
        """Executions per instruction reference: must never exceed 1."""
        self.executions_by_reference: Counter[str] = Counter()
        """Executions per (centre node, centre reference): catches one instruction sent under two refs."""
        self.duplicates: Counter[str] = Counter()
        """Copies of an already received reference, per reference."""
        self.counts: Counter[str] = Counter()
        """Event counts: succeeded, failed, failed.<code>, conflicting_resends, ignored, acks, …"""
        self.version = 0
        """Increases whenever state changes; lets a writer skip unchanged snapshots."""
        self.faults: frozenset[str] = chosen
        self.fault_every = fault_every
        self.fault_seed = fault_seed
        self._fault_offsets = offsets
        self._booked = 0  # transfers booked so far: the clock of the fault schedule
        self._drift: dict[str, int] = {}  # balance-break: reported minus true balance, per account
        self._off_book: dict[str, int] = {}  # unregistered-account: balances kept off the book
        self.offences: Counter[str] = Counter()
        """Offences committed, per fault name."""
        self._offences: deque[Offence] = deque(maxlen=10_000)

    # -- serials ---------------------------------------------------------------

    @staticmethod
    def serial_start_for(now: float) -> int:
        """A ``first_serial`` derived from wall-clock time, for a simulator that may be restarted.

        It leaves room for 10 000 serials per second of wall time, so a
        restarted bank does not reuse the serials of its previous run.
        """
        return max(1, (int(now) * 10_000) % _SERIAL_LIMIT)

    def _next(self) -> int:
        n = self._serial
        self._serial = n + 1 if n + 1 < _SERIAL_LIMIT else 1
        return n

    def next_seq_no(self) -> str:
        """A fresh seq_no for a message this bank sends: the node, then 14 digits (≤ 20 chars)."""
        return f"{self.node}{self._next():014d}"

    def _host_seq_no(self) -> str:
        return f"H{self._next():012d}"

    # -- queries -----------------------------------------------------------------

    def balance(self, account: str) -> int | None:
        """The ledger balance of ``account`` in fen, or None for an account the bank does not hold."""
        return self._balances.get(account)

    def outcome(self, ref: str) -> Outcome | None:
        """The final outcome of ``ref``, or None while unknown or still executing."""
        t = self._transfers.get(ref)
        return t.outcome if t else None

    def pending_pushes(self) -> list[Message]:
        """Every pushed message not yet acknowledged, oldest first: send these after (re)connecting."""
        return list(self._pending.values())

    def next_due(self) -> float | None:
        """When the earliest executing instruction finishes, or None when nothing is executing."""
        return min((t.due for t in self._executing.values()), default=None)

    def reported_balance(self, account: str) -> int | None:
        """The balance a Balance answer gives for ``account``: the book plus any balance-break drift."""
        balance = self._balances.get(account)
        return None if balance is None else balance + self._drift.get(account, 0)

    def offences_due(self, transfer: int) -> tuple[str, ...]:
        """The offences scheduled with booked transfer number ``transfer`` (1-based), in order."""
        every = self.fault_every
        return tuple(f for f, o in self._fault_offsets.items() if transfer >= o and (transfer - o) % every == 0)

    def take_offences(self) -> list[Offence]:
        """The offences committed since the last call, oldest first (for the edge to log)."""
        offences = list(self._offences)
        self._offences.clear()
        return offences

    def take_executed(self) -> list[Outcome]:
        """The outcomes made since the last call, oldest first (for the edge to log)."""
        executed = list(self._executed)
        self._executed.clear()
        return executed

    def discard_push(self, seq_no: str) -> bool:
        """Give up a pending push (the link cannot carry it); True if it was pending."""
        if self._pending.pop(seq_no, None) is None:
            return False
        self.counts["pushes_discarded"] += 1
        self.version += 1
        return True

    def draw_drop(self) -> bool:
        """Whether the link should drop the connection instead of answering this frame (``drop_rate``)."""
        if self.drop_rate <= 0.0:
            return False
        return self._drop_rng.random() < self.drop_rate

    def heartbeat(self) -> Heartbeat:
        """The bank's own line probe."""
        return Heartbeat(seq_no=self.next_seq_no(), node=self.node)

    # -- input -------------------------------------------------------------------

    def receive(self, message: Message, now: float) -> list[Message]:
        """Handle one message from the gateway at time ``now``; return what the bank sends.

        The returned list holds the answer (if any) followed by any pushes the
        message caused (a Movement after an immediate execution).  Pushes are
        also kept in :meth:`pending_pushes` until acknowledged.  Messages the
        bank never expects from a gateway are counted and not answered.
        """
        if isinstance(message, Heartbeat):
            return [HeartbeatAnswer(seq_no=self.next_seq_no(), reply_to=message.seq_no, node=self.node)]
        if isinstance(message, HeartbeatAnswer):
            return []
        self.version += 1
        if isinstance(message, SignOn):
            return [self._sign_on(message)]
        if isinstance(message, base.Instruction):
            return self._instruction(message, now)
        if isinstance(message, StatusQuery):
            return [self._status(message)]
        if isinstance(message, BalanceQuery):
            return self._balance(message, now)
        if isinstance(message, Ack):
            self._ack(message)
            return []
        self.counts["unexpected." + type(message).__name__] += 1
        return []

    def tick(self, now: float) -> list[Message]:
        """Finish every execution due by ``now``; return the answers and pushes it produces."""
        due = sorted((t for t in self._executing.values() if t.due <= now),
                     key=lambda t: (t.due, t.received_at))
        out: list[Message] = []
        for transfer in due:
            out.extend(self._execute(transfer, now))
        if due:
            self.version += 1
        return out

    # -- handlers ----------------------------------------------------------------

    def _sign_on(self, message: SignOn) -> SignOnAnswer:
        if message.node == self.gateway_node:
            self.counts["sign_ons"] += 1
            return SignOnAnswer(seq_no=self.next_seq_no(), reply_to=message.seq_no, node=self.node)
        self.counts["sign_ons_refused"] += 1
        return SignOnAnswer(seq_no=self.next_seq_no(), reply_to=message.seq_no, node=self.node,
                            ok=False, code=CODE_SIGN_ON_REFUSED, text=_TEXTS[CODE_SIGN_ON_REFUSED])

    def _instruction(self, message: base.Instruction, now: float) -> list[Message]:
        if self.silent:
            # "The bank never answers": nothing is recorded, so nothing can execute.
            self.counts["ignored"] += 1
            return []
        ref = message.seq_no
        known = self._transfers.get(ref)
        if known is not None:
            self.duplicates[ref] += 1
            if known.instruction != message:
                # Same reference, other content: the original stands, never a second execution.
                self.counts["conflicting_resends"] += 1
            return [self._answer_for(known, reply_to=message.seq_no)]
        synchronous = self.delay <= self.reply_within
        transfer = _Transfer(instruction=message, bank_seq_no=self.next_seq_no(), received_at=now,
                             due=now + self.delay, answer_to=message.seq_no if synchronous else "")
        self._transfers[ref] = transfer
        self._executing[ref] = transfer
        self.counts["received"] += 1
        if not synchronous:
            return [Receipt(seq_no=self.next_seq_no(), reply_to=message.seq_no, ref=ref,
                            bank_seq_no=transfer.bank_seq_no)]
        if self.delay > 0:
            return []  # answered by tick() when execution finishes
        return self._execute(transfer, now)

    def _answer_for(self, transfer: _Transfer, *, reply_to: str) -> Message:
        o = transfer.outcome
        if o is None:
            return Receipt(seq_no=self.next_seq_no(), reply_to=reply_to, ref=transfer.instruction.seq_no,
                           bank_seq_no=transfer.bank_seq_no)
        return Result(seq_no=self.next_seq_no(), reply_to=reply_to, ref=o.ref, succeeded=o.succeeded,
                      host_seq_no=o.host_seq_no, bank_seq_no=o.bank_seq_no, code=o.code, text=o.text)

    def _status(self, message: StatusQuery) -> Message:
        # Looked up by reference alone: references are unique forever, so the
        # date the gateway quotes adds nothing and a mismatch must not hide an outcome.
        transfer = self._transfers.get(message.ref)
        if transfer is None:
            return NotFound(seq_no=self.next_seq_no(), reply_to=message.seq_no, ref=message.ref)
        return self._answer_for(transfer, reply_to=message.seq_no)

    def _balance(self, message: BalanceQuery, now: float) -> list[Message]:
        balance = self._balances.get(message.account)
        if balance is None:
            # The neutral vocabulary has no failed balance answer (bdc's failed
            # BDC123 has no neutral message), so the query goes unanswered.
            self.counts["balance_queries_unknown_account"] += 1
            return []
        # as_of is the bank's local time, without zone, as bank protocols carry it.
        as_of = _dt.datetime.fromtimestamp(now, self.tz).replace(tzinfo=None, microsecond=0)
        # balance-break: the answer lies, the book does not.
        balance += self._drift.get(message.account, 0)
        return [Balance(seq_no=self.next_seq_no(), reply_to=message.seq_no, account=message.account,
                        balance=balance, available=balance, overdraft=0,
                        account_name=self._names.get(message.account, ""), status="0", as_of=as_of)]

    def _ack(self, message: Ack) -> None:
        if message.reply_to not in self._pending:
            self.counts["acks_unknown"] += 1
            return
        if not message.ok:
            # The gateway could not take it: keep it and push again on the next session.
            self.counts["acks_refused"] += 1
            return
        del self._pending[message.reply_to]
        self.counts["acks"] += 1

    def _push(self, message: Message) -> Message:
        self._pending[message.seq_no] = message
        self.counts["pushed." + type(message).__name__] += 1
        return message

    def _execute(self, transfer: _Transfer, now: float) -> list[Message]:
        ins = transfer.instruction
        ref = ins.seq_no
        self.executions[ref] += 1
        if ins.reference:
            self.executions_by_reference[f"{ins.centre_node}/{ins.reference}"] += 1
        code = self._host_check(ins)
        entries: tuple[Entry, ...] = ()
        host_seq_no = ""
        offences: tuple[str, ...] = ()
        booked = ins.amount
        if code == CODE_OK:
            self._booked += 1
            offences = self.offences_due(self._booked) if self.faults else ()
            if "result-mismatch" in offences:
                booked = ins.amount + FAULT_MISMATCH_EXTRA
            host_seq_no = self._host_seq_no()
            entries = self._post(ins, booked, host_seq_no, now, summary=ins.reference, remark=ins.memo)
        outcome = Outcome(ref=ref, succeeded=code == CODE_OK, host_seq_no=host_seq_no,
                          bank_seq_no=transfer.bank_seq_no, code=code, text=_TEXTS[code], executed_at=now)
        transfer.outcome = outcome
        self._executing.pop(ref, None)
        self._executed.append(outcome)
        self.counts["succeeded" if outcome.succeeded else "failed"] += 1
        if not outcome.succeeded:
            self.counts["failed." + code] += 1
        out: list[Message] = []
        if transfer.answer_to:
            out.append(self._answer_for(transfer, reply_to=transfer.answer_to))
        elif self.push_results:
            # A late answer to the instruction itself: reply_to is the reference, as
            # every protocol can carry it (bdc: the BDC109 answer, sent late).
            out.append(self._push(self._answer_for(transfer, reply_to=ref)))
        if entries:
            out.append(self._push(Movement(seq_no=self.next_seq_no(), entries=entries)))
        if offences:
            out.extend(self._offend(offences, ins, booked, host_seq_no, now))
        return out

    def _offend(self, offences: tuple[str, ...], ins: base.Instruction, booked: int, host_seq_no: str,
                now: float) -> list[Message]:
        """Commit ``offences`` with the transfer just booked (``booked`` fen, ``host_seq_no``)."""
        k = self._booked
        out: list[Message] = []

        def record(fault: str, account: str, host: str, amount: int) -> None:
            self.offences[fault] += 1
            self._offences.append(Offence(fault=fault, transfer=k, ref=ins.seq_no, account=account,
                                          host_seq_no=host, amount=amount, at=now))

        for fault in offences:  # already in BANK_FAULTS order
            if fault == "result-mismatch":
                record(fault, ins.debit_account, host_seq_no, -booked)
            elif fault == "duplicate-execution":
                self.executions[ins.seq_no] += 1
                if ins.reference:
                    self.executions_by_reference[f"{ins.centre_node}/{ins.reference}"] += 1
                again = self._host_seq_no()
                entries = self._post(ins, booked, again, now, summary=ins.reference, remark=ins.memo)
                out.append(self._push(Movement(seq_no=self.next_seq_no(), entries=entries)))
                record(fault, ins.debit_account, again, -booked)
            elif fault == "balance-break":
                drift = self._drift.get(ins.debit_account, 0) + FAULT_BALANCE_DRIFT
                self._drift[ins.debit_account] = drift
                record(fault, ins.debit_account, "", drift)
            elif fault == "unsolicited-debit":
                amount = self._fault_amount(fault)
                host = self._host_seq_no()
                entries = self._post(ins, amount, host, now, summary=FAULT_SUMMARIES[fault], remark="")
                out.append(self._push(Movement(seq_no=self.next_seq_no(), entries=entries)))
                record(fault, ins.debit_account, host, -amount)
            elif fault == "unregistered-counterparty":
                amount = self._fault_amount(fault)
                host = self._host_seq_no()
                self._balances[ins.debit_account] += amount
                entry = self._entry(ins.debit_account, host, amount, now,
                                    counterparty_account=FAULT_COUNTERPARTY_ACCOUNT,
                                    counterparty_name=FAULT_COUNTERPARTY_NAME,
                                    counterparty_bank_code=FAULT_COUNTERPARTY_BANK_CODE,
                                    balance_after=self._balances[ins.debit_account],
                                    summary=FAULT_SUMMARIES[fault])
                out.append(self._push(Movement(seq_no=self.next_seq_no(), entries=(entry,))))
                record(fault, ins.debit_account, host, amount)
            elif fault == "unregistered-account":
                amount = self._fault_amount(fault)
                host = self._host_seq_no()
                account = FAULT_OFF_REGISTER_ACCOUNT
                self._off_book[account] = self._off_book.get(account, 0) + amount
                entry = self._entry(account, host, amount, now, balance_after=self._off_book[account],
                                    summary=FAULT_SUMMARIES[fault])
                out.append(self._push(Movement(seq_no=self.next_seq_no(), entries=(entry,))))
                record(fault, account, host, amount)
        if "duplicate-execution" in offences:
            self.counts["duplicate_executions_committed"] += 1
        return out

    def _fault_amount(self, fault: str) -> int:
        # Drawn per (seed, offence, occurrence) so amounts do not depend on what else happened.
        low, high = FAULT_AMOUNT_RANGE
        return random.Random(f"{self.fault_seed}:{fault}:{self.offences[fault] + 1}").randrange(low, high)

    def _entry(self, account: str, host_seq_no: str, amount: int, now: float, **fields: Any) -> Entry:
        at = _dt.datetime.fromtimestamp(now, self.tz)
        return Entry(account=account, host_seq_no=host_seq_no, amount=amount, value_date=at.date(),
                     time=at.time().replace(microsecond=0, tzinfo=None), **fields)

    def _host_check(self, ins: base.Instruction) -> str:
        if type(ins.amount) is not int or ins.amount <= 0:
            return CODE_INVALID_AMOUNT
        balance = self._balances.get(ins.debit_account)
        if balance is None:
            return CODE_UNKNOWN_ACCOUNT
        if balance < ins.amount:
            return CODE_INSUFFICIENT_FUNDS
        # Drawn per reference so the outcome does not depend on arrival order.
        if self.failure_rate > 0 and random.Random(f"{self.seed}:{ins.seq_no}").random() < self.failure_rate:
            return CODE_HOST_DECLINED
        return CODE_OK

    def _post(self, ins: base.Instruction, amount: int, host_seq_no: str, now: float, *,
              summary: str, remark: str) -> tuple[Entry, ...]:
        """Book ``amount`` fen from ``ins``'s debit account to its creditor; the notice's entries."""
        self._balances[ins.debit_account] -= amount
        debit = self._entry(
            ins.debit_account, host_seq_no, -amount, now,
            counterparty_account=ins.creditor_account, counterparty_name=ins.creditor_name,
            counterparty_bank_code=ins.creditor_bank_code,
            balance_after=self._balances[ins.debit_account], summary=summary, remark=remark,
        )
        if ins.creditor_account not in self._balances:
            return (debit,)
        # The creditor banks here too: book the credit leg under its own host serial.
        self._balances[ins.creditor_account] += amount
        credit = Entry(
            account=ins.creditor_account, host_seq_no=self._host_seq_no(), amount=amount,
            value_date=debit.value_date, time=debit.time,
            counterparty_account=ins.debit_account, counterparty_name=ins.debit_name,
            counterparty_bank_code=ins.creditor_bank_code if ins.same_bank else "",
            balance_after=self._balances[ins.creditor_account], summary=summary, remark=remark,
        )
        return (debit, credit)

    # -- stats -------------------------------------------------------------------

    def stats(self, *, per_reference: bool = True) -> dict[str, Any]:
        """A JSON-ready snapshot: execution counts, duplicates, failures, balances.

        With ``per_reference`` it also lists ``executions`` per instruction
        reference and ``executions_by_reference`` per centre reference, which
        fault tests compare with what the gateway acknowledged, and every
        reference received with the duplicates of each (the frames per reference).
        ``duplicate_executions_committed`` counts the executions the bank
        repeated on purpose (always 0 without the duplicate-execution fault), and
        ``faults`` describes the misbehaviour: what is enabled, its schedule,
        the transfers booked so far, the offences committed, the balance drift
        per account and the balances kept off the book.
        """
        counts = dict(self.counts)
        out: dict[str, Any] = {
            "node": self.node,
            "received": counts.get("received", 0),
            "executed": sum(self.executions.values()),
            "succeeded": counts.get("succeeded", 0),
            "failed": counts.get("failed", 0),
            "executing": len(self._executing),
            "duplicates": sum(self.duplicates.values()),
            "conflicting_resends": counts.get("conflicting_resends", 0),
            "max_executions_per_ref": max(self.executions.values(), default=0),
            "max_executions_per_reference": max(self.executions_by_reference.values(), default=0),
            "duplicate_executions_committed": counts.get("duplicate_executions_committed", 0),
            "pending_pushes": len(self._pending),
            "balances": dict(sorted(self._balances.items())),
            "counts": dict(sorted(counts.items())),
            "faults": {
                "enabled": [f for f in BANK_FAULTS if f in self.faults],
                "every": self.fault_every,
                "seed": self.fault_seed,
                "schedule": dict(self._fault_offsets),
                "booked_transfers": self._booked,
                "committed": {f: self.offences[f] for f in BANK_FAULTS if self.offences[f]},
                "balance_drift": dict(sorted(self._drift.items())),
                "off_book_balances": dict(sorted(self._off_book.items())),
            },
        }
        if per_reference:
            out["executions"] = dict(self.executions)
            out["executions_by_reference"] = dict(self.executions_by_reference)
            out["received_references"] = sorted(self._transfers)
            out["duplicates_by_reference"] = dict(self.duplicates)
        return out


# =============================================================================
# The Twisted edge: the core on a mutually-authenticated TLS link.
# =============================================================================

_log = Logger()


class BankLink:
    """Drives one :class:`BankCore` on a reactor: sessions, execution timer, counters, stats.

    Every frame in and out is counted (``counters``: ``frames_in``,
    ``frames_out``, per kind ``frames_in.<Kind>`` …, ``connections``,
    ``peers_refused``, ``adapter_errors``, ``frames_before_sign_on``,
    ``connections_dropped``).  What the core produces outside a request
    (executions finishing) goes to the most recently signed-on session; when
    there is none, pushes simply stay pending in the core and go out at the
    next sign-on.
    """

    def __init__(self, reactor: IReactorTime, core: BankCore, adapter: Adapter, *, bank_id: str,
                 heartbeat_interval: float = 15.0) -> None:
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive")
        self.reactor = reactor
        self.core = core
        self.adapter = adapter
        self.bank_id = bank_id
        self.heartbeat_interval = heartbeat_interval
        self.counters: Counter[str] = Counter()
        self.sessions: list[BankSimProtocol] = []  # signed on, oldest first
        self._connections: set[BankSimProtocol] = set()
        self._timer: IDelayedCall | None = None

    # -- sessions ------------------------------------------------------------

    def connection_made(self, protocol: "BankSimProtocol") -> None:
        self._connections.add(protocol)
        self.counters["connections"] += 1

    def connection_lost(self, protocol: "BankSimProtocol") -> None:
        self._connections.discard(protocol)
        if protocol in self.sessions:
            self.sessions.remove(protocol)

    def signed_on(self, protocol: "BankSimProtocol") -> None:
        self.sessions.append(protocol)
        self.counters["sessions"] += 1
        pending = self.core.pending_pushes()
        if pending:
            _log.info("bank.repush bank={bank} count={count}", bank=self.bank_id, count=len(pending))
        for message in pending:
            protocol.send(message)

    def close_all(self) -> None:
        """Close every connection (the service is stopping)."""
        for protocol in list(self._connections):
            protocol.transport.loseConnection()

    # -- the core ------------------------------------------------------------

    def receive(self, message: Message) -> list[Message]:
        """Feed one message to the core now; re-arm the execution timer."""
        out = self.core.receive(message, self.reactor.seconds())
        if isinstance(message, base.Instruction):
            crash_point("simbank.answer")
        if isinstance(message, base.Instruction) and self.core.duplicates[message.seq_no]:
            _log.info("bank.duplicate bank={bank} ref={ref} copies={copies}", bank=self.bank_id,
                      ref=message.seq_no, copies=self.core.duplicates[message.seq_no])
        self._log_executed()
        self._arm()
        return out

    def _log_executed(self) -> None:
        for o in self.core.take_executed():
            _log.debug("bank.executed bank={bank} ref={ref} succeeded={succeeded} code={code} "
                      "host_seq_no={host_seq_no}", bank=self.bank_id, ref=o.ref, succeeded=o.succeeded,
                      code=o.code, host_seq_no=o.host_seq_no)
        for f in self.core.take_offences():
            # Said loudly on purpose: a demo shows these beside the ledger's alerts.
            _log.warn("bank.offence bank={bank} fault={fault} transfer={transfer} ref={ref} account={account} "
                      "host_seq_no={host_seq_no} amount={amount}", bank=self.bank_id, fault=f.fault,
                      transfer=f.transfer, ref=f.ref, account=mask_account(f.account),
                      host_seq_no=f.host_seq_no, amount=f.amount)

    def _arm(self) -> None:
        due = self.core.next_due()
        if due is None:
            return
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= due:
                return
            self._timer.cancel()
        self._timer = self.reactor.callLater(max(0.0, due - self.reactor.seconds()), self._tick)

    def _tick(self) -> None:
        self._timer = None
        out = self.core.tick(self.reactor.seconds())
        self._log_executed()
        if out and self.sessions:
            session = self.sessions[-1]
            for message in out:
                session.send(message)
        self._arm()

    def stop(self) -> None:
        """Cancel the execution timer (executions still due stay due in the core)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # -- stats ---------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The core's stats plus this link's counters, JSON-ready."""
        out = self.core.stats()
        out["bank_id"] = self.bank_id
        out["link"] = dict(sorted(self.counters.items()))
        return out


#: Probes (heartbeat intervals) without a byte from the gateway before the line is taken for dead.
DEAD_AFTER_PROBES = 3


@implementer(IHandshakeListener)
class BankSimProtocol(Protocol):
    """One connection of the simulated bank with the gateway.

    After the TLS handshake the peer must present an ``hpf://gateway/…``
    identity, else the connection is closed.  The gateway signs on first;
    until then only SignOn and Heartbeat are answered.  Once signed on the
    bank pushes its pending notices and results and probes the line every
    ``heartbeat_interval``; a gateway silent for :data:`DEAD_AFTER_PROBES`
    probes is taken for dead and the connection aborted, as a bank's front-end
    does with a half-open line.  Any :class:`AdapterError` closes the connection.
    """

    def __init__(self, link: BankLink) -> None:
        self.link = link
        self.framer = link.adapter.framer()
        self.peer: PeerIdentity | None = None
        self.is_signed_on = False
        self._closing = False
        self._heartbeat: LoopingCall | None = None
        self._last_rx = 0.0
        self._sign_on_deadline: IDelayedCall | None = None

    # -- connection ------------------------------------------------------------

    def connectionMade(self) -> None:
        self._last_rx = self.link.reactor.seconds()
        # A line that never gets as far as a sign-on (a handshake that hangs, a peer that
        # accepted and says nothing) is given up like a silent one.
        self._sign_on_deadline = self.link.reactor.callLater(
            DEAD_AFTER_PROBES * self.link.heartbeat_interval, self._no_sign_on)
        self.link.connection_made(self)

    def _no_sign_on(self) -> None:
        self._sign_on_deadline = None
        if not self.is_signed_on and not self._closing:
            self.link.counters["dead_peers"] += 1
            _log.warn("bank.no_sign_on bank={bank}", bank=self.link.bank_id)
            self._close(abort=True)

    def handshakeCompleted(self) -> None:
        try:
            peer = peer_identity(self.transport)
        except ValueError as e:
            self._refuse_peer(str(e))
            return
        if peer is None or peer.role != "gateway":
            self._refuse_peer("peer is not a gateway: " + (peer.uri if peer else "no certificate"))
            return
        self.peer = peer
        _log.info("bank.peer_verified bank={bank} peer={peer} fingerprint={fingerprint}",
                  bank=self.link.bank_id, peer=peer.uri, fingerprint=peer.fingerprint)

    def _refuse_peer(self, reason: str) -> None:
        self.link.counters["peers_refused"] += 1
        _log.warn("bank.peer_refused bank={bank} reason={reason}", bank=self.link.bank_id, reason=reason)
        self._close(abort=True)

    def _close(self, *, abort: bool = False) -> None:
        self._closing = True
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        if self._sign_on_deadline is not None and self._sign_on_deadline.active():
            self._sign_on_deadline.cancel()
        self.link.connection_lost(self)
        _log.info("bank.connection_lost bank={bank} reason={reason}", bank=self.link.bank_id,
                  reason=reason.getErrorMessage())

    # -- frames ----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if self.peer is None:
            # Application data can only follow a completed handshake; be strict anyway.
            self._refuse_peer("data before the peer was verified")
            return
        counters = self.link.counters
        counters["bytes_in"] += len(data)
        self._last_rx = self.link.reactor.seconds()
        try:
            for frame in self.framer.feed(data):
                if self._closing:
                    return
                message = self.link.adapter.decode(frame)
                counters["frames_in"] += 1
                counters["frames_in." + type(message).__name__] += 1
                self._handle(message)
        except AdapterError as e:
            counters["adapter_errors"] += 1
            _log.warn("bank.frame_refused bank={bank} reason={reason}", bank=self.link.bank_id, reason=str(e))
            self._close()

    def _handle(self, message: Message) -> None:
        link = self.link
        if not self.is_signed_on and not isinstance(message, (SignOn, Heartbeat)):
            link.counters["frames_before_sign_on"] += 1
            _log.warn("bank.not_signed_on bank={bank} kind={kind}", bank=link.bank_id,
                      kind=type(message).__name__)
            return
        drop = link.core.draw_drop()
        out = link.receive(message)
        if drop:
            # The frame was taken (an instruction may have executed) but its answer is lost.
            link.counters["connections_dropped"] += 1
            _log.info("bank.connection_dropped bank={bank} kind={kind}", bank=link.bank_id,
                      kind=type(message).__name__)
            self._close(abort=True)
            return
        for answer in out:
            self.send(answer)
        if isinstance(message, SignOn) and out and isinstance(out[0], SignOnAnswer):
            if out[0].ok and not self.is_signed_on:
                self.is_signed_on = True
                if self._sign_on_deadline is not None and self._sign_on_deadline.active():
                    self._sign_on_deadline.cancel()
                _log.info("bank.signed_on bank={bank} node={node}", bank=link.bank_id, node=message.node)
                self._heartbeat = LoopingCall(self._probe)
                self._heartbeat.clock = link.reactor
                self._heartbeat.start(link.heartbeat_interval, now=False)
                link.signed_on(self)
            elif not out[0].ok:
                _log.warn("bank.sign_on_refused bank={bank} node={node}", bank=link.bank_id, node=message.node)
                self._close()

    def _probe(self) -> None:
        silent = self.link.reactor.seconds() - self._last_rx
        if silent >= DEAD_AFTER_PROBES * self.link.heartbeat_interval:
            self.link.counters["dead_peers"] += 1
            _log.warn("bank.dead_peer bank={bank} silent_s={silent}", bank=self.link.bank_id,
                      silent=round(silent, 1))
            self._close(abort=True)
            return
        self.send(self.link.core.heartbeat())

    def send(self, message: Message) -> None:
        """Encode and write one message.

        A push the adapter cannot encode is given up (it would fail again on
        every reconnect); any other encoding failure closes the connection.
        """
        if self._closing:
            return
        link = self.link
        try:
            frame = link.adapter.encode(message, sender=link.core.node, receiver=link.core.gateway_node)
        except AdapterError as e:
            link.counters["adapter_errors"] += 1
            _log.error("bank.encode_failed bank={bank} kind={kind} reason={reason}", bank=link.bank_id,
                       kind=type(message).__name__, reason=str(e))
            if link.core.discard_push(message.seq_no):
                # Pushing it again after a reconnect would fail again: give it up, keep the link.
                return
            self._close()
            return
        counters = self.link.counters
        counters["frames_out"] += 1
        counters["frames_out." + type(message).__name__] += 1
        counters["bytes_out"] += len(frame)
        self.transport.write(frame)


class BankSimFactory(Factory):
    """Builds a :class:`BankSimProtocol` per connection, all sharing one :class:`BankLink`."""

    def __init__(self, link: BankLink) -> None:
        self.link = link

    def buildProtocol(self, addr: IAddress) -> BankSimProtocol:
        return BankSimProtocol(self.link)


class ExchangeBankLink(BankLink):
    """The bank as the deployed bdc interface serves it: one request per connection.

    Each connection carries one request and its answer, then closes; nothing names the
    request but the connection.  An answer the core gives later (an execution that must
    finish before the answer) is written on the connection still waiting for it.  What
    the bank pushes (notices, late results) goes to the gateway each on a connection of
    its own, dialled through ``push`` (a :class:`gateway.exchange.Transport`), and stays
    pending in the core until the gateway's answer acknowledges it; pending pushes are
    sent again every ``push_every`` seconds.
    """

    def __init__(self, reactor: IReactorTime, core: BankCore, adapter: Adapter, *, bank_id: str,
                 heartbeat_interval: float = 15.0, push: Any = None, push_every: float = 1.0,
                 deployed_style: bool = True) -> None:
        super().__init__(reactor, core, adapter, bank_id=bank_id, heartbeat_interval=heartbeat_interval)
        self.push = push
        self.waiting: dict[str, "ExchangeBankProtocol"] = {}  # request serial -> its connection
        self.pushing: set[str] = set()
        self._repush = LoopingCall(self.push_pending)
        self._repush.clock = reactor
        self.push_every = push_every
        self.deployed_style = deployed_style
        self._unconfirmed = 0

    def styled(self, frame: bytes, message: Message) -> bytes:
        """``frame`` as the deployed systems would write it, when ``deployed_style``; and a
        not-yet answer to an instruction with TxStatus ``1`` rather than ``2`` every other time
        (both mean "unconfirmed, ask BDC110" to the deployed centre)."""
        if not self.deployed_style:
            return frame
        if isinstance(message, Receipt) and message.reply_to == message.ref:
            self._unconfirmed += 1
            if self._unconfirmed % 2:
                frame = frame.replace(b'<field name="TxStatus">2</field>', b'<field name="TxStatus">1</field>', 1)
        return deployed_style(frame)

    def start(self) -> None:
        if self.push is not None and not self._repush.running:
            self._repush.start(self.push_every, now=False)

    def stop(self) -> None:
        super().stop()
        if self._repush.running:
            self._repush.stop()

    def exchange(self, protocol: "ExchangeBankProtocol", message: Message) -> None:
        """One request from its connection: answer it there now, or when the core has the answer."""
        drop = self.core.draw_drop()
        out = self.receive(message)
        if drop:
            self.counters["connections_dropped"] += 1
            protocol._close(abort=True)
            self._route(out)
            return
        answers = [m for m in out if getattr(m, "reply_to", None) == message.seq_no]
        self._route([m for m in out if m not in answers])
        protocol.request = message
        if answers:
            protocol.answer(answers[0])
        elif isinstance(message, base.Instruction) and self.core.outcome(message.seq_no) is None \
                and not self.core.silent:
            self.waiting[message.seq_no] = protocol  # answered when execution finishes
        else:
            protocol._close()

    def _tick(self) -> None:
        self._timer = None
        out = self.core.tick(self.reactor.seconds())
        self._log_executed()
        self._route(out)
        self._arm()

    def _route(self, out: list[Message]) -> None:
        for message in out:
            waiting = self.waiting.pop(getattr(message, "reply_to", ""), None)
            if waiting is not None:
                waiting.answer(message)
            elif message.seq_no in {m.seq_no for m in self.core.pending_pushes()}:
                self._send_push(message)

    def push_pending(self) -> None:
        for message in self.core.pending_pushes():
            self._send_push(message)

    def _send_push(self, message: Message) -> None:
        if self.push is None or message.seq_no in self.pushing:
            return
        try:
            frame = self.adapter.encode(message, sender=self.core.node, receiver=self.core.gateway_node)
        except AdapterError as e:
            self.counters["adapter_errors"] += 1
            _log.error("bank.encode_failed bank={bank} reason={reason}", bank=self.bank_id, reason=str(e))
            self.core.discard_push(message.seq_no)
            return
        frame = self.styled(frame, message)
        self.pushing.add(message.seq_no)
        self.counters["frames_out"] += 1
        self.counters["frames_out." + type(message).__name__] += 1

        def answered(answer_frame: bytes) -> None:
            bind = getattr(self.adapter, "decode_answer", None)
            ack = bind(answer_frame, message) if bind else self.adapter.decode(answer_frame)
            self.counters["frames_in"] += 1
            self.counters["frames_in." + type(ack).__name__] += 1
            self.receive(ack)

        def failed(f: Failure) -> None:
            self.counters["pushes_unanswered"] += 1
            _log.info("bank.push_unanswered bank={bank} reason={reason}", bank=self.bank_id,
                      reason=f.getErrorMessage()[:200])

        d = self.push.request(frame)
        d.addCallbacks(answered, failed)
        d.addBoth(lambda _: self.pushing.discard(message.seq_no))


_AMOUNT_FIELD = re.compile(r'(<field name="(?:Amt|CapAmt|AcctBal|AcctRestBal|AcctOverBal)">)(-?[0-9]+\.[0-9]{2})(</field>)')
_DATA_FIELD = re.compile(r'(<field name="DATA">)([0-9A-F]+)(</field>)')


def _java_amount(text: str) -> str:
    """An amount as the public centre-side Java writes a BigDecimal made from it: no trailing zeros."""
    from decimal import Decimal

    return f"{Decimal(text).normalize():f}"


def _java_line(line: str) -> str:
    """A notice line as the public project's AccChangeNoticeFile writes one: unset columns as
    ``null``, amounts without trailing zeros."""
    if "|" not in line:
        return line
    cols = line[:line.rfind("|")].split("|")
    for i in (3, 9, 10, 15, 16, 17, 18):
        if i < len(cols) and cols[i] == "":
            cols[i] = "null"
    for i in (6, 14):
        if i < len(cols) and cols[i]:
            cols[i] = _java_amount(cols[i])
    return "|".join(cols) + "|"


def deployed_style(frame: bytes) -> bytes:
    """A clear bdc frame rewritten the way the deployed systems write it (docs/protocols/bdc.md):
    amounts without trailing zeros, notice lines with ``null`` columns, the body before the head,
    indented.  The same message; only the writing differs, so a tolerant reader reads the same."""
    from adapters.bdc._files import pack_data, unpack_data

    text = frame[20:].decode("gbk")
    if not text.startswith("<?xml"):
        return frame  # encrypted: left alone
    text = _AMOUNT_FIELD.sub(lambda m: m.group(1) + _java_amount(m.group(2)) + m.group(3), text)
    text = _DATA_FIELD.sub(lambda m: m.group(1) + pack_data(
        "\n".join(_java_line(x) for x in unpack_data(m.group(2)).split("\n"))) + m.group(3), text)
    head = text[text.index("<head>"):text.index("</head>") + len("</head>")]
    body_start = text.index("</head>") + len("</head>")
    body = text[body_start:text.rindex("</message>")]
    text = (text[:text.index("<head>")] + " \n  " + body + "  \n  " + head.replace("><field", ">\n    <field")
            + " \n</message>\n")
    raw = text.encode("gbk")
    return frame[:16] + len(raw).to_bytes(4, "big") + raw


class ExchangeBankProtocol(BankSimProtocol):
    """One request of the gateway on its own connection (see :class:`ExchangeBankLink`)."""

    link: ExchangeBankLink

    def dataReceived(self, data: bytes) -> None:
        if self._closing or getattr(self, "_taken", False):
            return
        if self.peer is None:
            self._refuse_peer("data before the peer was verified")
            return
        try:
            frames = self.framer.feed(data)
        except AdapterError as e:
            self.link.counters["adapter_errors"] += 1
            _log.warn("bank.frame_refused bank={bank} reason={reason}", bank=self.link.bank_id, reason=str(e))
            self._close(abort=True)
            return
        if not frames:
            return
        self._taken = True
        try:
            message = self.link.adapter.decode(frames[0])
        except AdapterError as e:
            self.link.counters["adapter_errors"] += 1
            _log.warn("bank.frame_refused bank={bank} reason={reason}", bank=self.link.bank_id, reason=str(e))
            refusal = getattr(self.link.adapter, "refusal", None)
            answer = refusal(frames[0], sender=self.link.core.node, seq_no=self.link.core.next_seq_no()) \
                if refusal else None
            if answer is not None:
                self.transport.write(answer)
            self._close()
            return
        self.link.counters["frames_in"] += 1
        self.link.counters["frames_in." + type(message).__name__] += 1
        self.link.exchange(self, message)

    request: Message | None = None

    def answer(self, message: Message) -> None:
        """Write the answer to this connection's request (a BDC101 answer to a single payment)."""
        encode_answer = getattr(self.link.adapter, "encode_answer", None)
        if encode_answer is not None and self.request is not None and not self._closing:
            try:
                frame = encode_answer(message, self.request, sender=self.link.core.node,
                                      receiver=self.link.core.gateway_node)
            except AdapterError as e:
                self.link.counters["adapter_errors"] += 1
                _log.error("bank.encode_failed bank={bank} reason={reason}", bank=self.link.bank_id,
                           reason=str(e))
                self._close()
                return
            self.link.counters["frames_out"] += 1
            self.link.counters["frames_out." + type(message).__name__] += 1
            self.transport.write(self.link.styled(frame, message))
        else:
            self.send(message)
        self._close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        for seq_no, protocol in list(self.link.waiting.items()):
            if protocol is self:
                del self.link.waiting[seq_no]
        super().connectionLost(reason)


class ExchangeBankFactory(Factory):
    """Builds an :class:`ExchangeBankProtocol` per connection, all sharing one link."""

    def __init__(self, link: ExchangeBankLink) -> None:
        self.link = link

    def buildProtocol(self, addr: IAddress) -> ExchangeBankProtocol:
        return ExchangeBankProtocol(self.link)


class _ListenService(Service):
    """Listens on a server endpoint while running; tells waiters the bound port."""

    def __init__(self, endpoint: IStreamServerEndpoint, factory: Factory) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.port: IListeningPort | None = None
        self._failure: Failure | None = None
        self._waiters: list[Deferred[IListeningPort]] = []

    def startService(self) -> None:
        super().startService()
        self.endpoint.listen(self.factory).addCallbacks(self._listening, self._failed)

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        if not self.running:  # stopped while the listen was in progress
            port.stopListening()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(port)

    def _failed(self, failure: Failure) -> None:
        self._failure = failure
        _log.failure("bank.listen_failed", failure)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(failure)

    def when_listening(self) -> Deferred[IListeningPort]:
        """Fires with the listening port (or the reason listening failed)."""
        if self.port is not None:
            return succeed(self.port)
        if self._failure is not None:
            return fail(self._failure)
        d: Deferred[IListeningPort] = Deferred()
        self._waiters.append(d)
        return d

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return maybeDeferred(port.stopListening)
        return None


class BankService(MultiService):
    """The running simulated bank: its link service and, with ``stats_path``, a stats writer.

    ``core`` and ``link`` are the live objects (tests read them);
    :meth:`when_listening` gives the bound port in the "listen" role.  Stats
    are written as JSON atomically every second while they change, and once
    more at stop.
    """

    def __init__(self, link: BankLink, *, stats_path: Path | None = None) -> None:
        super().__init__()
        self.link = link
        self.core = link.core
        self.stats_path = stats_path
        self._listener: _ListenService | None = None
        self._stats_loop: LoopingCall | None = None
        self._written: tuple[int, int] | None = None

    def when_listening(self) -> Deferred[IListeningPort]:
        """The listening port in the "listen" role; fails in the "dial" role."""
        if self._listener is None:
            return fail(RuntimeError("this bank dials the gateway; it does not listen"))
        return self._listener.when_listening()

    def startService(self) -> None:
        super().startService()
        if self.stats_path is not None:
            self._stats_loop = LoopingCall(self._write_stats_if_changed)
            self._stats_loop.clock = self.link.reactor
            self._stats_loop.start(1.0, now=True)

    def stopService(self) -> Deferred[None]:
        if self._stats_loop is not None and self._stats_loop.running:
            self._stats_loop.stop()
        d = maybeDeferred(super().stopService)
        self.link.close_all()
        self.link.stop()

        def final(result: object) -> object:
            if self.stats_path is not None:
                self.write_stats()
            return result

        return d.addBoth(final)

    def _write_stats_if_changed(self) -> None:
        mark = (self.core.version, sum(self.link.counters.values()))
        if mark != self._written:
            self.write_stats()
            self._written = mark

    def write_stats(self) -> None:
        """Write the stats JSON to ``stats_path`` atomically (temp file, then rename)."""
        if self.stats_path is None:
            return
        try:
            write_json_atomically(self.stats_path, self.link.stats())
        except OSError as e:
            _log.error("bank.stats_write_failed path={path} reason={reason}", path=str(self.stats_path),
                       reason=str(e))


def write_json_atomically(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON so that a reader sees the old or the new file, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def make_bank_service(
    reactor: Any,
    *,
    adapter_name: str,
    bank_id: str,
    node: str,
    role: Literal["dial", "listen"],
    endpoint: str,
    certificate: Path,
    private_key: Path,
    trust: Sequence[Path],
    core: BankCore,
    gateway_node: str = "D00000",
    heartbeat_interval: float = 15.0,
    stats_path: Path | None = None,
    retry_policy: Callable[[int], float] | None = None,
    connection: Literal["persistent", "per_request"] = "persistent",
    push_endpoint: str | None = None,
) -> BankService:
    """The simulated bank ``bank_id`` as a service, speaking adapter ``adapter_name`` over mutual TLS.

    ``role`` "dial": the bank dials the gateway's bank listener at the client
    endpoint string ``endpoint`` and redials with exponential backoff and
    jitter (``retry_policy``, default 0.5 s doubling up to 30 s) whenever the
    connection ends.  ``role`` "listen": the bank listens on the server
    endpoint string ``endpoint`` and the gateway dials it.  Either way the
    bank presents ``certificate``/``private_key``, trusts only ``trust``, and
    talks only to a peer whose certificate names ``hpf://gateway/…``.

    ``connection`` "per_request" is the deployed bdc model (:class:`ExchangeBankLink`): the
    bank listens on ``endpoint`` for the gateway's requests, one per connection, and
    dials ``push_endpoint`` (a client endpoint string) for each of its pushes; ``role``
    is then "listen".

    ``node`` and ``gateway_node`` must be the core's (they are checked, so a
    CLI cannot wire a bank that refuses its own gateway).  Raises
    ``ValueError``/``KeyError`` for bad options, an unknown adapter or bad TLS files.
    """
    if node != core.node:
        raise ValueError(f"node {node!r} is not the core's node {core.node!r}")
    if gateway_node != core.gateway_node:
        raise ValueError(f"gateway_node {gateway_node!r} is not the core's {core.gateway_node!r}")
    adapter = load_adapter(adapter_name)
    if connection == "per_request":
        return _exchange_bank_service(reactor, adapter, bank_id=bank_id, endpoint=endpoint,
                                      push_endpoint=push_endpoint, certificate=certificate,
                                      private_key=private_key, trust=trust, core=core,
                                      heartbeat_interval=heartbeat_interval, stats_path=stats_path)
    link = BankLink(reactor, core, adapter, bank_id=bank_id, heartbeat_interval=heartbeat_interval)
    factory = BankSimFactory(link)
    service = BankService(link, stats_path=stats_path)
    if role == "dial":
        tls_endpoint = tls_client_endpoint(clientFromString(reactor, endpoint),
                                           client_options(certificate, private_key, trust))
        policy = retry_policy or backoffPolicy(initialDelay=0.5, maxDelay=30.0, factor=2.0)
        ClientService(tls_endpoint, factory, retryPolicy=policy, clock=reactor).setServiceParent(service)
    elif role == "listen":
        listener = _ListenService(serverFromString(reactor, endpoint),
                                  tls_server_factory(factory, server_options(certificate, private_key, trust)))
        listener.setServiceParent(service)
        service._listener = listener
    else:
        raise ValueError(f"role must be 'dial' or 'listen', not {role!r}")
    return service


def _exchange_bank_service(reactor: Any, adapter: Adapter, *, bank_id: str, endpoint: str,
                           push_endpoint: str | None, certificate: Path, private_key: Path,
                           trust: Sequence[Path], core: BankCore, heartbeat_interval: float,
                           stats_path: Path | None) -> BankService:
    """The per-request bank (see :func:`make_bank_service`)."""
    from gateway.exchange import StreamTransport

    variant = getattr(adapter, "variant", None)
    if variant is not None:
        adapter = variant(echo=False)  # the deployed dialect: answers name no request
    # The deployed interface pushes no results: an outcome not in the answer is asked with
    # BDC110 (and the money shows in the SBDC100 notice).
    core.push_results = False
    push = None
    if push_endpoint is not None:
        def gateway_only(transport: Any) -> str | None:
            try:
                peer = peer_identity(transport)
            except ValueError as e:
                return str(e)
            return None if peer is not None and peer.role == "gateway" else "peer is not a gateway"

        push = StreamTransport(
            tls_client_endpoint(clientFromString(reactor, push_endpoint),
                                client_options(certificate, private_key, trust)),
            adapter.framer, reactor, timeout=max(heartbeat_interval, 5.0), check_peer=gateway_only)
    link = ExchangeBankLink(reactor, core, adapter, bank_id=bank_id, heartbeat_interval=heartbeat_interval,
                            push=push)
    service = _ExchangeBankService(link, stats_path=stats_path)
    listener = _ListenService(serverFromString(reactor, endpoint),
                              tls_server_factory(ExchangeBankFactory(link),
                                                 server_options(certificate, private_key, trust)))
    listener.setServiceParent(service)
    service._listener = listener
    return service


class _ExchangeBankService(BankService):
    link: ExchangeBankLink

    def startService(self) -> None:
        super().startService()
        self.link.start()
