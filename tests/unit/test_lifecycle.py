"""The instruction state machine, checked exhaustively against docs/architecture.md ("Model and lifecycle")."""

import itertools

import pytest
from hypothesis import given, strategies as st

from gateway.lifecycle import (
    ConflictingOutcome, IllegalTransition, ManualResolution, NotFoundAtBank, PolicyRefusal,
    ReceiptConfirmed, ResultOverdue, ResultReceived, Sent, advance, is_final,
)
from gateway.model import State

R, S, A, OK, KO, D, X = (State.RECEIVED, State.SENT, State.ACCEPTED, State.SUCCEEDED, State.FAILED,
                         State.IN_DOUBT, State.REJECTED)
EVENTS = {
    "refuse": PolicyRefusal("unregistered counterparty"),
    "sent": Sent(),
    "receipt": ReceiptConfirmed(),
    "ok": ResultReceived(True),
    "ko": ResultReceived(False),
    "overdue": ResultOverdue(),
    "notfound": NotFoundAtBank(),
    "manual_ok": ManualResolution(True),
    "manual_ko": ManualResolution(False),
}
# Every (state, event) pair; None means the transition is illegal, "conflict" a contradiction.
TABLE = {
    R: dict(refuse=X, sent=S, receipt=A, ok=OK, ko=KO, overdue=None, notfound=R, manual_ok=None, manual_ko=None),
    S: dict(refuse=None, sent=S, receipt=A, ok=OK, ko=KO, overdue=D, notfound=S, manual_ok=None, manual_ko=None),
    A: dict(refuse=None, sent=None, receipt=A, ok=OK, ko=KO, overdue=D, notfound=D, manual_ok=None, manual_ko=None),
    D: dict(refuse=None, sent=None, receipt=D, ok=OK, ko=KO, overdue=D, notfound=D, manual_ok=OK, manual_ko=KO),
    OK: dict(refuse=None, sent=None, receipt=OK, ok=OK, ko="conflict", overdue=None, notfound=None, manual_ok=None, manual_ko=None),
    KO: dict(refuse=None, sent=None, receipt=KO, ok="conflict", ko=KO, overdue=None, notfound=None, manual_ok=None, manual_ko=None),
    X: dict(refuse=None, sent=None, receipt=None, ok=None, ko=None, overdue=None, notfound=None, manual_ok=None, manual_ko=None),
}


def test_table_covers_every_state_and_event():
    assert set(TABLE) == set(State)
    assert all(set(row) == set(EVENTS) for row in TABLE.values())


@pytest.mark.parametrize("state,event_name", list(itertools.product(State, EVENTS)))
def test_every_transition_matches_the_design(state, event_name):
    expected = TABLE[state][event_name]
    event = EVENTS[event_name]
    if expected is None:
        with pytest.raises(IllegalTransition):
            advance(state, event)
    elif expected == "conflict":
        with pytest.raises(ConflictingOutcome):
            advance(state, event)
    else:
        assert advance(state, event) is expected


def test_final_states_are_succeeded_failed_rejected():
    assert {s for s in State if is_final(s)} == {OK, KO, X}


@given(st.lists(st.sampled_from(sorted(EVENTS)), max_size=30))
def test_a_final_outcome_never_changes_whatever_follows(names):
    """Once succeeded or failed, no sequence of events (replays included) moves it elsewhere."""
    state = R
    first_final = None
    for name in names:
        try:
            state = advance(state, EVENTS[name])
        except IllegalTransition:
            continue
        if is_final(state) and first_final is None:
            first_final = state
        if first_final is not None:
            assert state is first_final
