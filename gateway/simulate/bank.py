"""A simulated commissioned bank's host: :class:`BankCore`, pure, with no I/O and no clock.

(Over 600 lines: one state machine whose answers, pushes, balances and planted faults share its
transfer records; the faults' catalogue is bank_faults, the wire bank_link and bank_exchange.)

It is fed neutral messages (:mod:`adapters.base`) with the current time and
returns the messages it sends.  It keeps accounts in fen, executes each
instruction reference at most once (a resend gets the original outcome),
pushes a :class:`~adapters.base.Movement` notice after every executed
transfer and keeps every push pending until the gateway acknowledges it.
Fault knobs (execution delay, failure rate, connection drops, silence) are
seeded so that runs reproduce.

The bank can also misbehave on purpose (``faults``,
:data:`~gateway.simulate.bank_faults.BANK_FAULTS`): commit, on a fixed
schedule, each bank-side offence the supervision ledger exists to catch (an
unsolicited debit, a result that differs from the instruction, a double
execution, a balance answer that breaks continuity, money from an unregistered
counterparty, a movement on an account off the register).  See
:class:`BankCore` for what each offence leaves behind and
:func:`~gateway.simulate.bank_faults.fault_schedule` for when.

The edges are beside it: :mod:`gateway.simulate.bank_link` (a persistent
link), :mod:`gateway.simulate.bank_exchange` (one request per connection) and
:mod:`gateway.simulate.bank_service` (:func:`make_bank_service`).  This module
is longer than most because :class:`BankCore` is one state machine, read whole.
"""

from __future__ import annotations

import datetime as _dt
import random
import re
from collections import Counter, deque
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from adapters import base
from adapters.base import (
    Ack,
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
)
from gateway.simulate.bank_faults import (
    BANK_FAULTS,
    FAULT_AMOUNT_RANGE,
    FAULT_BALANCE_DRIFT,
    FAULT_COUNTERPARTY_ACCOUNT,
    FAULT_COUNTERPARTY_BANK_CODE,
    FAULT_COUNTERPARTY_NAME,
    FAULT_MISMATCH_EXTRA,
    FAULT_OFF_REGISTER_ACCOUNT,
    FAULT_SUMMARIES,
    Offence,
    check_faults,
    fault_schedule,
)

__all__ = [
    "CODE_OK",
    "CODE_INSUFFICIENT_FUNDS",
    "CODE_UNKNOWN_ACCOUNT",
    "CODE_INVALID_AMOUNT",
    "CODE_HOST_DECLINED",
    "CODE_SIGN_ON_REFUSED",
    "BANK_TZ",
    "Outcome",
    "BankCore",
    "parse_opening_balance",
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
        customers: Mapping[str, int] | None = None,
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
        customers = dict(customers or {})
        for account, balance in (dict(accounts) | customers).items():
            if type(balance) is not int or balance < 0:
                raise ValueError(f"opening balance of {account!r} must be a non-negative int (fen)")
        if set(customers) & set(accounts):
            raise ValueError("an account is either the gateway's or another customer's, not both")
        chosen = check_faults(faults)
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
        self._balances: dict[str, int] = dict(accounts) | customers
        # The bank's other customers (the payers of collections): held and booked here, but
        # nothing about them is notified to the gateway, as a bank notifies only the
        # accounts a centre holds.
        self._customers: frozenset[str] = frozenset(customers)
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
        self.counts["status_queries"] += 1
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
            entries = tuple(e for e in entries if e.account not in self._customers)
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
