"""Crash points for the fault suite: the process kills itself with SIGKILL at a named point.

``HPF_CRASH_AT=NAME`` (or ``NAME@N``: on the Nth time the point is reached)
makes :func:`crash_point` deliver SIGKILL to this very process there, which
is indistinguishable from ``kill -9`` arriving at that instant: no cleanup,
no flush, no atexit.  Unset (production), a crash point is one comparison.

Points: ``intake.commit`` (inside the intake transaction, before COMMIT),
``intake.respond`` (committed, before the centre's answer is written),
``bank.sent`` (instruction written to the bank link, before its receipt),
``bank.result`` (a result read from the link, before it is committed and
acknowledged), ``ledger.forward`` (copies answered by the ledger, before the
delivery cursor is saved); in the bank simulator, ``simbank.answer`` (an
instruction executed and journalled, before the bank's answer is written).
"""

from __future__ import annotations

import os
import signal

__all__ = ["POINTS", "crash_point", "armed"]

POINTS = ("intake.commit", "intake.respond", "bank.sent", "bank.result", "ledger.forward", "simbank.answer")

_target, _, _nth = os.environ.get("HPF_CRASH_AT", "").partition("@")
_remaining = int(_nth) if _nth.isdigit() else 1
if _target and _target not in POINTS:
    raise SystemExit(f"HPF_CRASH_AT={_target!r}: not a crash point; known: {', '.join(POINTS)}")


def crash_point(name: str) -> None:
    """SIGKILL this process if ``HPF_CRASH_AT`` names this point (and its count is reached)."""
    global _remaining
    if name != _target:
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)


def armed(name: str) -> bool:
    """Whether ``name`` is the crash point this process was started with."""
    return name == _target
