"""``python -m bench idle``: what the whole demo costs when nothing is asked of it.

``hpf-gateway demo --serve`` runs every daemon in one process: the gateway,
the supervision ledger (with its check processes), a simulated bank per
adapter, the second city's gateway and bank, and the centres.  Started here
as ``python -m gateway.cli demo --serve --count N`` (the ``hpf-gateway``
entry point without the shell shim, so the PID read in ``/proc`` is the
demo's), it submits its few instructions (``--count``, 1 by default: the
demo's centre refuses 0; its side flows add about fifty more: the bdc
centres, two bank batches, the second city), waits until they are final and
their copies are at the ledger, and then prints "still serving".  From then
on nothing is submitted: what runs is what an idle deployment runs
(heartbeats, balance queries, front-end status and statement polls, the
ledger's deadline rules and snapshots, the results feed's long polls).

After ``--warmup`` seconds more, the CPU of the demo process and of every
process it started (user + system, all threads, ``/proc/PID/stat``) is read
over ``--seconds`` and given as a percentage of one core, with a reading per
second so that periodic work shows; and the voluntary context switches of
every thread (``/proc/PID/task/*/status``): how often the process's threads
went to sleep and were woken, i.e. its wakeups per second.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from bench.common import BenchError, Report, memory_kb, proc_cpu_seconds, python_argv, wait_until
from bench.env import Workspace

HELP = "the demo idle (every daemon in one process, nothing submitted): CPU % of a core and wakeups/s"
DEFAULT_SECONDS = 30.0

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_READY = "still serving"
_FAILED = ("demo failed", "NOT as expected")
_START_TIMEOUT_S = 300.0  # a cold start, the PKI, and the demo's own instructions on a busy machine


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--warmup", type=float, default=10.0,
                   help="seconds to let the demo settle after it says it is serving (default 10)")
    p.add_argument("--count", type=int, default=1,
                   help="instructions the demo's centre submits before serving (default 1, the least it takes)")
    p.add_argument("--dir", help="work here (the demo's directory, its logs) and keep it; default: a temporary "
                                 "directory removed afterwards")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (its path is printed)")


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process descended from it that is running now."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            data = (entry / "stat").read_text()
            ppid = int(data[data.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [pid], list(parents.get(pid, ()))
    while todo:
        child = todo.pop()
        tree.append(child)
        todo += parents.get(child, ())
    return tree


def context_switches(pid: int) -> tuple[int, int, int]:
    """(voluntary, involuntary, threads) summed over the threads of ``pid`` now alive.

    A voluntary switch is a thread giving up the CPU to wait (a sleep, a poll
    with a timeout, a lock); each one is followed by a wakeup.
    """
    voluntary = involuntary = threads = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            lines = (task / "status").read_text().splitlines()
        except OSError:
            continue  # a thread that ended meanwhile
        threads += 1
        for line in lines:
            if line.startswith("voluntary_ctxt_switches:"):
                voluntary += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                involuntary += int(line.split()[1])
    return voluntary, involuntary, threads


def _reading(pid: int) -> dict[str, Any]:
    """CPU seconds and context switches of ``pid`` and of each process under it, now."""
    procs: dict[int, dict[str, float]] = {}
    for p in process_tree(pid):
        try:
            voluntary, involuntary, threads = context_switches(p)
            procs[p] = {"cpu_s": proc_cpu_seconds(p), "voluntary": voluntary, "involuntary": involuntary,
                        "threads": threads}
        except OSError:
            continue
    return {"t": time.monotonic(), "cpu_with_children_s": proc_cpu_seconds(pid, with_children=True),
            "main_thread_cpu_s": _thread_cpu_seconds(pid, pid), "procs": procs}


def _thread_cpu_seconds(pid: int, tid: int) -> float:
    """User + system CPU seconds of one thread (the main thread: ``tid == pid``)."""
    data = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    fields = data[data.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def summarise(first: dict[str, Any], last: dict[str, Any], pid: int) -> dict[str, Any]:
    """The figures between two readings: CPU % of a core and wakeups per second, the demo
    process apart from the processes it started (counted only if alive at both readings)."""
    wall = last["t"] - first["t"]
    if wall <= 0:
        raise ValueError("the readings must be apart in time")

    def delta(p: int, key: str) -> float:
        return last["procs"][p][key] - first["procs"][p][key]

    both = [p for p in first["procs"] if p in last["procs"]]
    children = [p for p in both if p != pid]
    own_cpu = delta(pid, "cpu_s")
    all_cpu = last["cpu_with_children_s"] - first["cpu_with_children_s"]
    return {
        "seconds": round(wall, 2),
        "cpu_percent_of_a_core": round(100.0 * all_cpu / wall, 3),
        "demo_process_cpu_percent": round(100.0 * own_cpu / wall, 3),
        # The main thread runs the reactor (every daemon's timers and protocols); the others
        # are the database and check thread pools.
        "reactor_thread_cpu_percent": round(100.0 * (last["main_thread_cpu_s"] - first["main_thread_cpu_s"])
                                            / wall, 3),
        "children_cpu_percent": round(100.0 * (all_cpu - own_cpu) / wall, 3),
        "children": len(children),
        "threads": int(last["procs"][pid]["threads"]),
        "wakeups_per_s": round(sum(delta(p, "voluntary") for p in both) / wall, 1),
        "demo_process_wakeups_per_s": round(delta(pid, "voluntary") / wall, 1),
        "involuntary_switches_per_s": round(sum(delta(p, "involuntary") for p in both) / wall, 1),
    }


def _demo_log(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def run(args: argparse.Namespace) -> Report:
    if args.count < 1 or args.warmup < 0:
        raise BenchError("--count must be at least 1 and --warmup not negative")
    notes: list[str] = []
    with Workspace(args.dir, keep=args.keep) as ws:
        if ws.keep:
            notes.append(f"work directory kept: {ws.directory}")
        out_log = ws.directory / "demo.out"
        demo = ws.children.spawn(
            "demo", python_argv("-m", "gateway.cli", "demo", "--serve", "--count", str(args.count),
                                "--dir", str(ws.directory / "demo")),
            log=out_log, cwd=ws.directory, env={"PYTHONUNBUFFERED": "1"})  # its progress lines, as printed
        t_start = time.monotonic()
        try:
            wait_until(lambda: _READY in _demo_log(out_log) or any(f in _demo_log(out_log) for f in _FAILED),
                       timeout=_START_TIMEOUT_S, interval=0.5, what="the demo to say it is serving",
                       children=[demo])
            text = _demo_log(out_log)
            failed = [f for f in _FAILED if f in text]
            if failed:
                raise BenchError(f"the demo did not run as expected ({failed[0]!r}); its output ({out_log}) "
                                 f"ends:\n{demo.tail(25)}")
            ready_s = time.monotonic() - t_start
            time.sleep(args.warmup)
            first = _reading(demo.pid)
            rss_start_kb = memory_kb(demo.pid)[0]
            readings = [first]
            deadline = first["t"] + args.seconds
            while time.monotonic() < deadline:
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                if not demo.alive():
                    raise BenchError(f"the demo exited with status {demo.popen.returncode} while measured; "
                                     f"its output ends:\n{demo.tail(25)}")
                readings.append(_reading(demo.pid))
            rss_end_kb, hwm_kb = memory_kb(demo.pid)
        finally:
            ws.children.stop_all()
    last = readings[-1]
    figures = summarise(first, last, demo.pid)
    per_second = [round(100.0 * (b["cpu_with_children_s"] - a["cpu_with_children_s"]) / (b["t"] - a["t"]), 1)
                  for a, b in zip(readings, readings[1:]) if b["t"] > a["t"]]
    figures.update({
        "ready_after_s": round(ready_s, 1), "warmup_s": args.warmup, "count": args.count,
        "cpu_percent_per_second": per_second,
        "cpu_percent_busiest_second": max(per_second) if per_second else None,
        "rss_start_mb": round(rss_start_kb / 1024, 1), "rss_end_mb": round(rss_end_kb / 1024, 1),
        "peak_rss_mb": round(hwm_kb / 1024, 1),
    })
    if per_second and figures["cpu_percent_busiest_second"] > 5 * max(figures["cpu_percent_of_a_core"], 0.1):
        notes.append("the CPU comes in bursts (see cpu_percent_per_second): periodic work, not a steady spin")
    notes.append(f"the demo submitted {args.count} instruction(s) and its side flows (bdc centres, bank batches, "
                 "the second city) before serving; measured from --warmup s after it said it was serving")
    rows = (
        ("the demo ready (its instructions final)", figures["ready_after_s"], "s after start"),
        ("measured", figures["seconds"], f"s, after {args.warmup:g} s of warm-up"),
        ("CPU, the demo and its processes", figures["cpu_percent_of_a_core"], "% of a core"),
        ("  the demo process (every daemon)", figures["demo_process_cpu_percent"], "% of a core"),
        ("    of which its main thread (the reactor)", figures["reactor_thread_cpu_percent"], "% of a core"),
        ("  the processes it started", figures["children_cpu_percent"],
         f"% of a core ({figures['children']} processes: the ledger's check processes and their helpers)"),
        ("busiest second", figures["cpu_percent_busiest_second"], "% of a core"),
        ("wakeups (voluntary context switches)", figures["wakeups_per_s"], "/s, every thread of every process"),
        ("  of the demo process", figures["demo_process_wakeups_per_s"], f"/s over {figures['threads']} threads"),
        ("involuntary context switches", figures["involuntary_switches_per_s"], "/s"),
        ("RSS of the demo process", f"{figures['rss_start_mb']:g} -> {figures['rss_end_mb']:g}", "MB"),
    )
    params = {"seconds": args.seconds, "warmup": args.warmup, "count": args.count}
    return Report("idle", "idle: the whole demo serving, nothing submitted", rows, figures, params, tuple(notes))
