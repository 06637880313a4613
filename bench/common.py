"""What every benchmark shares: the machine, child processes, /proc readings, tables and JSON.

Nothing here asserts a speed.  The helpers measure and report; the numbers
are only as good as the machine was quiet, which is why every report names
the machine (:func:`machine_info`) and the load average when it started.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gateway.daemon import die_with_parent
from gateway.ports import free_port

__all__ = [
    "REPO",
    "BenchError",
    "Child",
    "Children",
    "Report",
    "free_port",
    "http_get",
    "latency_summary",
    "machine_info",
    "memory_kb",
    "now_iso",
    "percentile",
    "proc_cpu_seconds",
    "python_argv",
    "run_reactor",
    "runqueue_wait_seconds",
    "scrape_metrics",
    "self_cpu_seconds",
    "start_bench_log",
    "wait_until",
    "write_json",
]

T = TypeVar("T")

#: The repository this harness belongs to (bench/ sits at its top).
REPO: Path = Path(__file__).resolve().parent.parent

_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A benchmark could not run (a process did not start, a port never opened); the message says why."""


# -- the machine ----------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def python_speed_ms() -> float:
    """Milliseconds one core takes for a fixed pure-Python loop (best of 5): the machine's speed
    for this code at the moment of measuring.  On a shared virtual machine it moves by half
    from one hour to the next, and every figure here moves with it."""
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 1)


def machine_info() -> dict[str, Any]:
    """The machine and code a figure was measured on: cores, CPU, Python, git commit, load.

    ``git_dirty`` counts files differing from the commit (uncommitted work
    changes what was measured); git state is only read, never changed.
    """
    status = _git("status", "--porcelain")
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    try:
        mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                          if line.startswith("MemTotal:")))
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_mb": mem_kb // 1024,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty_files": None if status is None else len([s for s in status.splitlines() if s.strip()]),
        "load_average_at_start": load,
        "python_loop_ms": python_speed_ms(),
    }


# -- /proc ------------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    data = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return data[data.rindex(")") + 2:].split()


def proc_cpu_seconds(pid: int, *, with_children: bool = False) -> float:
    """User + system CPU seconds used so far by every thread of process ``pid`` (from /proc/PID/stat).

    ``with_children``: and by every process it started, those still running (e.g. the
    ledger's check processes) and those it has reaped.
    """
    fields = _stat(pid)
    ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
    if with_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime: its reaped children's
        parents: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parents.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
                except (OSError, ValueError, IndexError):
                    continue  # ended meanwhile
        todo = list(parents.get(pid, ()))
        while todo:
            child = todo.pop()
            try:
                child_fields = _stat(child)
            except OSError:
                continue
            ticks += int(child_fields[11]) + int(child_fields[12])
            todo += parents.get(child, ())
    return ticks / _CLK_TCK


def runqueue_wait_seconds(pid: int) -> float:
    """Thread-seconds the threads of ``pid`` now alive have spent ready to run but waiting for a CPU.

    From ``/proc/PID/task/*/schedstat`` (second field, ns), summed over the
    threads, so it can exceed the wall time when several wait at once.  A
    process limited by its own work shows little wait; one starved by other
    processes on a shared machine shows a lot.  0.0 where the kernel keeps
    no schedstats.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile
    return total / 1e9


def self_cpu_seconds() -> float:
    """CPU seconds used so far by this process (all threads)."""
    return proc_cpu_seconds(os.getpid())


def usable_cores() -> int:
    """The cores this process (and the processes it starts) may run on."""
    return len(os.sched_getaffinity(0))


def cpu_bound(cpu_s_per_1000: Iterable[float | None], cores: int | None = None) -> int | None:
    """The most items per second that ``cores`` fully used could carry at these CPU costs
    (CPU seconds per 1,000 items, one per process; None for a process not run)."""
    total = sum(c for c in cpu_s_per_1000 if c is not None)
    if total <= 0:
        return None
    return int((cores or usable_cores()) * 1000.0 / total)


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of process ``pid`` in KiB: resident now, and the peak resident so far."""
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm


def memory_parts_kb(pid: int) -> dict[str, int]:
    """Where process ``pid``'s resident memory is, in KiB (``/proc/PID/status``): ``anon``
    (heap: Python objects, malloc arenas, the SQLite page cache), ``file`` (mapped files:
    code, shared libraries) and ``shmem`` (shared mappings, e.g. SQLite's ``-shm`` WAL index)."""
    names = {"RssAnon:": "anon", "RssFile:": "file", "RssShmem:": "shmem"}
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(None, 1)[0] if line else ""
        if key in names:
            out[names[key]] = int(line.split()[1])
    return out


# -- child processes ----------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # If the bench itself is killed (even with SIGKILL), the kernel sends the
    # child SIGTERM: no simulator or gateway outlives the run.
    die_with_parent(signal.SIGTERM)


@dataclass
class Child:
    """One process the bench started: its name, handle and log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        """True while the process has not exited."""
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        """CPU seconds this process has used (all threads), and the processes it started."""
        return proc_cpu_seconds(self.pid, with_children=True)

    def memory_kb(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in KiB."""
        return memory_kb(self.pid)

    def runqueue_wait_seconds(self) -> float:
        """Seconds its threads have waited for a CPU while ready to run."""
        return runqueue_wait_seconds(self.pid)

    def tail(self, lines: int = 15) -> str:
        """The end of its log, for an error message."""
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


class Children:
    """The processes of one run; all are stopped on exit, on Ctrl-C and on error.

    Children get a session of their own (a Ctrl-C reaches the bench, which
    then stops them in order) and die with the bench if it is killed.
    ``stop_all`` is registered with :mod:`atexit`, and is idempotent.
    """

    def __init__(self) -> None:
        self._children: list[Child] = []
        atexit.register(self.stop_all)

    def spawn(self, name: str, argv: Sequence[str], *, log: Path, cwd: Path | None = None,
              env: Mapping[str, str] | None = None) -> Child:
        """Start ``argv`` with stdout and stderr appended to ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        full_env = dict(os.environ)
        # bench helpers run as ``python -m bench.X``: the repository must be importable.
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH", "")]))
        full_env.update(env or {})
        with open(log, "ab") as out:
            popen = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=str(cwd) if cwd else None, env=full_env, start_new_session=True,
                                     preexec_fn=_die_with_parent)  # noqa: PLW1509 (see _die_with_parent)
        child = Child(name, popen, log)
        self._children.append(child)
        return child

    def stop(self, child: Child, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit status."""
        if child.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.popen.send_signal(signal.SIGTERM)
            try:
                child.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    child.popen.kill()
                child.popen.wait(5)
        if child in self._children:
            self._children.remove(child)
        return child.popen.returncode

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every child still running: SIGTERM to all at once, SIGKILL to any left after ``timeout``."""
        children = list(reversed(self._children))
        for child in children:
            if child.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in children:
            with contextlib.suppress(Exception):
                self.stop(child, timeout=max(0.1, deadline - time.monotonic()))

    def __iter__(self) -> Iterator[Child]:
        return iter(list(self._children))


# -- network helpers ---------------------------------------------------------------------




def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body text) of a plain-HTTP GET; status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError):
        return 0, ""


def scrape_metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on ``http://127.0.0.1:PORT/metrics``, keyed by (name, sorted labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    # A daemon on an overloaded host can take seconds to answer: an empty answer read as
    # "every counter 0" once showed a run's copies as none delivered.
    for _ in range(3):
        status, text = http_get(f"http://127.0.0.1:{port}/metrics", timeout=10.0)
        if status == 200:
            break
    else:
        return {}
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def wait_until(check: Callable[[], bool], *, timeout: float, what: str,
               children: Sequence[Child] = (), interval: float = 0.1) -> None:
    """Poll ``check`` until it holds; ``BenchError`` after ``timeout`` or when a child died."""
    deadline = time.monotonic() + timeout
    while not check():
        for child in children:
            if not child.alive():
                raise BenchError(f"{child.name} exited with status {child.popen.returncode} while waiting "
                                 f"for {what}; its log ({child.log}) ends:\n{child.tail()}")
        if time.monotonic() > deadline:
            logs = "".join(f"\n--- {c.name} ({c.log}):\n{c.tail()}" for c in children)
            raise BenchError(f"not within {timeout:g} s: {what}{logs}")
        time.sleep(interval)


# -- the reactor ----------------------------------------------------------------------------


def start_bench_log(path: Path) -> Any:
    """Send this process's Twisted log (e.g. the centre simulator's warnings) to ``path`` as JSON lines."""
    from twisted.logger import globalLogBeginner, jsonFileLogObserver

    f = open(path, "a", encoding="utf-8")  # noqa: SIM115 (the caller closes it when the run ends)
    globalLogBeginner.beginLoggingTo([jsonFileLogObserver(f)], redirectStandardIO=False)
    return f


def run_reactor(main: Callable[[Any], Coroutine[Any, Any, T]], *, timeout: float) -> T:
    """Run the reactor until ``main(reactor)`` finishes; at most ``timeout`` seconds.

    The reactor runs once per process, so a benchmark calls this once.  A
    Ctrl-C stops the reactor and raises ``KeyboardInterrupt`` here; the
    timeout cancels ``main`` and raises :class:`BenchError`.
    """
    from twisted.internet import reactor
    from twisted.internet.defer import CancelledError, Deferred
    from twisted.internet.defer import TimeoutError as DeferredTimeout

    box: dict[str, Any] = {}

    def start() -> None:
        d = Deferred.fromCoroutine(main(reactor))
        d.addTimeout(timeout, reactor)
        d.addCallbacks(lambda r: box.setdefault("result", r), lambda f: box.setdefault("failure", f))
        d.addBoth(lambda _: reactor.stop() if reactor.running else None)

    reactor.callWhenRunning(start)
    reactor.run()  # type: ignore[attr-defined]
    if "failure" in box:
        failure = box["failure"]
        if failure.check(DeferredTimeout, CancelledError):
            raise BenchError(f"the benchmark did not finish within its {timeout:g} s bound")
        failure.raiseException()
    if "result" not in box:
        raise KeyboardInterrupt("interrupted")
    return box["result"]  # type: ignore[no-any-return]


# -- figures ---------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of ascending values (the centre simulator's definition); None if empty."""
    from gateway.simulate.centre_load import percentile as nearest_rank

    return nearest_rank(sorted_values, p)


def latency_summary(values_s: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50/p95/p99 and max in milliseconds of latencies given in seconds."""
    ordered = sorted(values_s)

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000.0, 3)

    return {"count": len(ordered), "p50_ms": ms(percentile(ordered, 50)), "p95_ms": ms(percentile(ordered, 95)),
            "p99_ms": ms(percentile(ordered, 99)), "max_ms": ms(ordered[-1] if ordered else None)}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@dataclass(frozen=True)
class Report:
    """One benchmark's outcome: table rows for people, figures for JSON, notes for both.

    ``rows`` are (label, value, unit); a row whose value is None prints as
    ``-``.  ``sections`` are preformatted blocks printed after the rows (a
    wider table).  ``figures`` is what ``--json`` writes under ``results``.
    """

    benchmark: str
    title: str
    rows: tuple[tuple[str, Any, str], ...]
    figures: Mapping[str, Any]
    params: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()

    def table(self) -> str:
        """The report as an aligned text table."""
        width = max([len(label) for label, _, _ in self.rows] + [10])
        values = [_fmt(v) for _, v, _ in self.rows]
        vwidth = max([len(v) for v in values] + [5])
        lines = [self.title, "=" * len(self.title)]
        for (label, _, unit), value in zip(self.rows, values):
            lines.append(f"{label.ljust(width)}  {value.rjust(vwidth)}  {unit}".rstrip())
        for section in self.sections:
            lines.extend(["", section])
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def document(self, machine: Mapping[str, Any], started_at: str, elapsed_s: float) -> dict[str, Any]:
        """The JSON document ``--json`` writes."""
        return {"benchmark": self.benchmark, "title": self.title, "started_at": started_at,
                "elapsed_s": round(elapsed_s, 2), "machine": dict(machine), "params": dict(self.params),
                "results": dict(self.figures), "notes": list(self.notes)}


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    """Write ``document`` to ``path`` (pretty, UTF-8), via a temporary file so readers never see half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def now_iso() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def python_argv(*args: str) -> list[str]:
    """``python ARGS`` with this interpreter."""
    return [sys.executable, *args]
