"""问题纠正: a rectification's steps and who may take each (pure).

awaiting-plan --submit-plan (centre staff)--> plan-submitted
plan-submitted --approve (supervisor)--> in-progress
plan-submitted --return (supervisor)--> awaiting-plan
in-progress --progress (centre staff)--> in-progress
in-progress --close (supervisor, with evidence)--> closed

A step past its deadline raises an alert: the plan by ``plan_due``, the
closure by ``done_due``.
"""

from __future__ import annotations

__all__ = ["STATES", "ACTIONS", "next_state", "overdue_step"]

STATES = ("awaiting-plan", "plan-submitted", "in-progress", "closed")
# (state, action) -> (next state, who may: "staff" or "supervisor")
ACTIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("awaiting-plan", "submit-plan"): ("plan-submitted", "staff"),
    ("plan-submitted", "approve"): ("in-progress", "supervisor"),
    ("plan-submitted", "return"): ("awaiting-plan", "supervisor"),
    ("in-progress", "progress"): ("in-progress", "staff"),
    ("in-progress", "close"): ("closed", "supervisor"),
}


def next_state(state: str, action: str, supervisor: bool) -> str | None:
    """The state after ``action``, or None when it is not allowed now or not to this user."""
    found = ACTIONS.get((state, action))
    if found is None or (found[1] == "supervisor") != supervisor:
        return None
    return found[0]


def overdue_step(state: str, plan_due_us: int, done_due_us: int, now_us: int) -> str | None:
    """The step that is late at ``now_us`` ("plan" or "closure"), or None."""
    if state == "awaiting-plan" and now_us >= plan_due_us:
        return "plan"
    if state in ("plan-submitted", "in-progress") and now_us >= done_due_us:
        return "closure"
    return None
