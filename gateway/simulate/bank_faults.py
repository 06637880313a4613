"""The offences the simulated bank commits on purpose, and their schedule.

Each is named after the supervision ledger rule (docs/architecture.md, "The ledger") it
should trigger; :class:`~gateway.simulate.bank.BankCore` commits them (see there for what
each leaves behind) and :func:`fault_schedule` says when.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "BANK_FAULTS",
    "FAULT_MISMATCH_EXTRA",
    "FAULT_BALANCE_DRIFT",
    "FAULT_AMOUNT_RANGE",
    "FAULT_COUNTERPARTY_ACCOUNT",
    "FAULT_COUNTERPARTY_NAME",
    "FAULT_COUNTERPARTY_BANK_CODE",
    "FAULT_OFF_REGISTER_ACCOUNT",
    "FAULT_SUMMARIES",
    "Offence",
    "check_faults",
    "parse_faults",
    "fault_schedule",
    "offences_in",
]

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


def check_faults(faults: Iterable[str]) -> frozenset[str]:
    """``faults`` as a set of names from :data:`BANK_FAULTS`; ``ValueError`` names an unknown one."""
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
    chosen = check_faults(faults)
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
