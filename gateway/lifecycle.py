"""The instruction state machine of docs/architecture.md ("Model and lifecycle"), with no I/O.

``advance(state, event)`` returns the next state, or raises
:class:`IllegalTransition`.  The relay calls it for every fact it learns, so a
fact that does not fit the instruction's history (a receipt for an instruction
never sent, a second result that contradicts the first) is refused here, in
one place, instead of being half-applied.

A fact that repeats what is already known (the same result twice, a receipt
after the result) is not an error: ``advance`` returns the same state and the
caller sees that nothing changed.  That is what makes replayed bank messages
harmless (promise G3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from gateway.model import FINAL_STATES, State

__all__ = [
    "IllegalTransition", "ConflictingOutcome",
    "Sent", "ReceiptConfirmed", "ResultReceived", "ResultOverdue", "NotFoundAtBank",
    "ManualResolution", "PolicyRefusal", "Event", "advance",
]


class IllegalTransition(ValueError):
    """The event cannot happen to an instruction in this state."""

    def __init__(self, state: State, event: "Event") -> None:
        super().__init__(f"{type(event).__name__} is not allowed in state {state.value}")
        self.state = state
        self.event = event


class ConflictingOutcome(IllegalTransition):
    """The bank reported an outcome that contradicts the one already recorded."""


@dataclass(frozen=True)
class PolicyRefusal:
    """Intake refused the instruction on policy (unregistered counterparty, missing approval)."""

    reason: str


@dataclass(frozen=True)
class Sent:
    """The instruction was written to the bank link (first send or a resend)."""


@dataclass(frozen=True)
class ReceiptConfirmed:
    """The bank confirmed it holds the instruction and is executing it."""


@dataclass(frozen=True)
class ResultReceived:
    """The bank's final outcome."""

    succeeded: bool


@dataclass(frozen=True)
class ResultOverdue:
    """No result by the deadline and the status inquiries did not resolve it."""


@dataclass(frozen=True)
class NotFoundAtBank:
    """A status inquiry answered that the bank never received the instruction."""


@dataclass(frozen=True)
class ManualResolution:
    """An operator resolved an in-doubt instruction with evidence (audited)."""

    succeeded: bool


Event = Union[PolicyRefusal, Sent, ReceiptConfirmed, ResultReceived, ResultOverdue, NotFoundAtBank,
              ManualResolution]

_S = State


def _outcome(succeeded: bool) -> State:
    return _S.SUCCEEDED if succeeded else _S.FAILED


def advance(state: State, event: Event) -> State:
    """The state after ``event``; the same state when the event repeats known facts."""
    match event:
        case PolicyRefusal():
            if state is _S.RECEIVED:
                return _S.REJECTED
        case Sent():
            if state in (_S.RECEIVED, _S.SENT):
                return _S.SENT
        case ReceiptConfirmed():
            if state in (_S.RECEIVED, _S.SENT):
                # RECEIVED: the send was not yet recorded when the receipt came back.
                return _S.ACCEPTED
            if state in (_S.ACCEPTED, _S.IN_DOUBT, _S.SUCCEEDED, _S.FAILED):
                return state  # a late or repeated receipt adds nothing
        case ResultReceived(succeeded=ok):
            if state in (_S.RECEIVED, _S.SENT, _S.ACCEPTED, _S.IN_DOUBT):
                return _outcome(ok)
            if state in (_S.SUCCEEDED, _S.FAILED):
                if state is _outcome(ok):
                    return state
                raise ConflictingOutcome(state, event)
        case ResultOverdue():
            if state in (_S.SENT, _S.ACCEPTED):
                # SENT: resent until the deadline and never even confirmed; whether
                # the bank has it is unknown, so only a person (or a late answer) settles it.
                return _S.IN_DOUBT
            if state is _S.IN_DOUBT:
                return state
        case NotFoundAtBank():
            if state in (_S.RECEIVED, _S.SENT):
                return state  # never arrived: the caller may resend with the same reference
            if state is _S.ACCEPTED:
                # The bank confirmed receipt and now denies it: only a person can settle that.
                return _S.IN_DOUBT
            if state is _S.IN_DOUBT:
                return state
        case ManualResolution(succeeded=ok):
            if state is _S.IN_DOUBT:
                return _outcome(ok)
    raise IllegalTransition(state, event)


def is_final(state: State) -> bool:
    """True once nothing more can happen to the instruction at the bank."""
    return state in FINAL_STATES
