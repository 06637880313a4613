"""The wall clock against the monotonic clock: steps seen, and a time that does not step.

A host's wall clock (``time.time``) is stepped when NTP corrects a large error
or an operator sets it; the monotonic clock is not (both are slewed alike by
NTP's frequency corrections).  So the wall time elapsed less the monotonic time
elapsed is how far the wall clock was stepped.  Both daemons use that:

- :class:`ClockWatch` reads the two together.  The gateway's group-commit
  writer takes each transaction's timestamp from it and, when the wall clock
  stepped since the last commit, journals a ``gateway.clock_step`` event first
  in that transaction (docs/reliability.md, "Clocks"): every event after it in
  the journal is stamped on the new wall clock, every event before it on the
  old, so the ledger can undo the step exactly.  ``stepped_s`` is the
  ``hpf_gateway_clock_step_seconds`` / ``hpf_ledger_clock_step_seconds`` gauge.
- :func:`steady_clock` is the ledger matcher's time: the wall clock at start,
  advanced by the monotonic clock, so durations (deadlines) are real seconds
  whatever is done to the host's clock while it runs.

Pure but for the two clock readings, which are parameters for tests.
"""

from __future__ import annotations

import datetime as _dt
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BUSINESS_TZ", "STEP_THRESHOLD_S", "ClockWatch", "Reading", "business_date", "steady_clock"]

BUSINESS_TZ = _dt.timezone(_dt.timedelta(hours=8), "+08:00")
"""The business day of the fund and its banks: China Standard Time (UTC+8, no daylight saving)."""


def business_date(at_us: int) -> _dt.date:
    """The business date of an instant (µs since the epoch): its date in China.

    An instruction's date is taken once, from its intake's journal time, and every message about
    it says the same one (its bank reference, the transfer's SendDate, each status query), as the
    ledger's daily report counts it on the same day: a clock stepped across midnight moves later
    instructions to another day, never one instruction to two days.
    """
    return _date_of_second(at_us // 1_000_000)  # a date changes on a whole second (UTC+8)


@functools.lru_cache(maxsize=8)
def _date_of_second(second: int) -> _dt.date:
    # Cached: the intake asks once per instruction (its encodability check), within the same second.
    return _dt.datetime.fromtimestamp(second, BUSINESS_TZ).date()


STEP_THRESHOLD_S = 1.0
"""The smallest jump between two readings that counts as a step (NTP slews smaller errors)."""

_SLEW = 1e-3
"""The most NTP slews a clock, as a fraction of the time elapsed (500 ppm, doubled): drift between
two readings far apart is not a step unless it exceeds this share of the time between them too."""


def _boot_ns() -> int:
    """The monotonic clock that also counts a suspended host's sleep (Linux ``CLOCK_BOOTTIME``), so
    a resumed host's wall clock, which did count it, is not taken for a step; else ``monotonic``."""
    return time.clock_gettime_ns(_BOOT)


_BOOT = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


@dataclass(frozen=True)
class Reading:
    """One reading: the wall time (µs since the epoch), the two clocks' offset (ns), the monotonic
    time (ns), and the step (µs, 0 when none) since the reading last settled."""

    now_us: int
    offset_ns: int
    mono_ns: int
    step_us: int
    before_us: int


class ClockWatch:
    """Wall-clock steps, measured against the monotonic clock (see the module docstring)."""

    def __init__(self, *, threshold_s: float = STEP_THRESHOLD_S,
                 wall_ns: Callable[[], int] | None = None,
                 mono_ns: Callable[[], int] | None = None) -> None:
        # Looked up at each reading, not bound here: gateway.faults (HPF_CLOCK_STEP) replaces them.
        self._wall_ns = wall_ns or (lambda: time.time_ns())
        self._mono_ns = mono_ns or _boot_ns
        wall_ns, mono_ns = self._wall_ns, self._mono_ns
        self._threshold_ns = int(threshold_s * 1e9)
        mono = mono_ns()
        self._origin = wall_ns() - mono          # the offset at start
        self._last, self._last_mono = self._origin, mono  # the offset settled last, and when

    def stepped_s(self) -> float:
        """How far the wall clock was stepped since this watch started (negative: back)."""
        mono = self._mono_ns()
        return (self._wall_ns() - mono - self._origin) / 1e9

    def read(self) -> Reading:
        """The time now, and the step since the last :meth:`settle` if it is one."""
        mono = self._mono_ns()
        wall = self._wall_ns()
        offset = wall - mono
        jump = offset - self._last
        allowed = max(self._threshold_ns, int((mono - self._last_mono) * _SLEW))
        step = jump // 1000 if abs(jump) >= allowed else 0
        return Reading(wall // 1000, offset, mono, step, (self._last + mono) // 1000)

    def settle(self, reading: Reading) -> None:
        """Take ``reading`` as the new reference (its step, if any, is now recorded)."""
        self._last, self._last_mono = reading.offset_ns, reading.mono_ns


def steady_clock(wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> Callable[[], float]:
    """Seconds since the epoch that advance with the monotonic clock: the wall time at this call plus
    the monotonic time elapsed since.  A step of the host's clock later on does not move it."""
    wall0, mono0 = wall(), mono()
    return lambda: wall0 + (mono() - mono0)
