"""Crash points for the fault suite: the process kills itself with SIGKILL at a named point.

``HPF_CRASH_AT=NAME`` (or ``NAME@N``: on the Nth time the point is reached)
makes :func:`crash_point` deliver SIGKILL to this very process there, which
is indistinguishable from ``kill -9`` arriving at that instant: no cleanup,
no flush, no atexit.  Unset (production), a crash point is one comparison.

Points: ``intake.commit`` (inside the intake transaction, before COMMIT),
``intake.respond`` (committed, before the centre's answer is written),
``bank.sent`` (instruction written to the bank link, before its receipt),
``bank.result`` (a result read from the link, before it is committed and
acknowledged), ``bank.batch_answer`` (a bank's answer taking a batch request, read
from the link, before it is committed: the batch is on the bank's side, its answer
lost), ``ledger.forward`` (copies answered by the ledger, before the
delivery cursor is saved); in the bank simulator, ``simbank.answer`` (an
instruction executed and journalled, before the bank's answer is written).

``HPF_CLOCK_STEP=SECONDS@AFTER`` steps this process's wall clock by SECONDS
(negative: backwards), AFTER seconds (monotonic) after start: ``time.time``,
``time.time_ns`` and Twisted's ``reactor.seconds`` jump, as they do when NTP
or an operator sets the host's clock; ``time.monotonic`` does not.  With
``HPF_CLOCK_START=EPOCH_SECONDS`` the wall clock starts at that instant (a test
puts the step across midnight).  (Python's
``datetime.now`` reads the system clock directly and is not stepped.)
"""

from __future__ import annotations

import os
import signal

__all__ = ["POINTS", "crash_point", "armed", "step_clock"]

POINTS = ("intake.commit", "intake.respond", "bank.sent", "bank.result", "bank.batch_answer", "ledger.forward",
          "simbank.answer")

_target, _, _nth = os.environ.get("HPF_CRASH_AT", "").partition("@")
_remaining = int(_nth) if _nth.isdigit() else 1
if _target and _target not in POINTS:
    raise SystemExit(f"HPF_CRASH_AT={_target!r}: not a crash point; known: {', '.join(POINTS)}")


def step_clock(spec: str) -> None:
    """Install the wall clock step ``SECONDS@AFTER`` (see the module docstring) in this process."""
    import time

    from twisted.internet import base
    from twisted.python import runtime

    step_s, _, after_s = spec.partition("@")
    step, after = float(step_s), float(after_s or 0)
    real, real_ns, monotonic = time.time, time.time_ns, time.monotonic
    start = monotonic()
    begin = float(os.environ.get("HPF_CLOCK_START") or 0) or real()
    shift = begin - real()  # HPF_CLOCK_START: the clock starts at that instant (seconds since the epoch)

    def offset() -> float:
        return shift + (step if monotonic() - start >= after else 0.0)

    def stepped() -> float:
        return real() + offset()

    def stepped_ns() -> int:
        return real_ns() + int(offset() * 1_000_000_000)

    time.time, time.time_ns = stepped, stepped_ns  # type: ignore[assignment]
    runtime.seconds = stepped  # type: ignore[assignment]
    base.ReactorBase.seconds = staticmethod(stepped)  # type: ignore[assignment,method-assign]


if os.environ.get("HPF_CLOCK_STEP"):
    step_clock(os.environ["HPF_CLOCK_STEP"])


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
