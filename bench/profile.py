"""``python -m bench.profile``: a benchmark under py-spy, and its top frames per process.

    python -m bench.profile OUT.txt -- relay --saturate --seconds 15      # record, then print the tables
    python -m bench.profile --tables OUT.txt [--top 15]                   # the tables of a recorded file

Recording runs ``py-spy record --format raw --rate R --subprocesses -o OUT.txt -- python -m
bench ARGS``: py-spy starts the benchmark as its child, so it reads the processes it samples as
their ancestor (this sandbox allows reading another process's memory to root only, and
``kernel.yama.ptrace_scope`` is 2), and ``--subprocesses`` follows every process the benchmark
starts: the gateway, the simulated banks, the ledger and its check processes, the raw relay.
py-spy means to sample only threads that are running, but on this machine it also samples
threads blocked in a wait (a thread pool's idle workers in ``Condition.wait``, a reactor in
``epoll``: more than half of a gateway's samples), so the tables leave out every sample whose
top frame is one of :data:`WAITS` and say how many they left out.  What remains is the
samples of threads running or ready to run; on a busy machine a ready thread may wait long for
a CPU, so the shares say where a process's work is, and the benchmark's ``/proc`` figures say
how much CPU it took.

The tables, per process role (the process's command line says which): **self** -- the frame
on top of the stack (where the CPU was when sampled), summed over its lines, any code;
**cumulative** -- the project's own functions (``gateway/``, ``adapters/``, ``bench/``, less
the entry points every sample passes through), each counted once per sample it is on the
stack of (the share of the samples during which that function, or something it called, was
running).  Samples taken while a process imports modules (its start) are left out too.  py-spy is a PyPI package
(``pip install py-spy``, in the ``test`` extra).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

WAITS = ("Condition.wait (threading.py)", "_PollLikeSelector.select (selectors.py)",
         "EPollReactor.doPoll (twisted/internet/epollreactor.py)", "SemLock.__enter__ (multiprocessing/synchronize.py)",
         "Connection._recv (multiprocessing/connection.py)", "main (multiprocessing/resource_tracker.py)")
"""Top frames that are a thread waiting (for work, for a lock, for a socket), not running."""
_PROCESS = re.compile(r'^process (\d+):"(.*)"$')
_LINE = re.compile(r":\d+\)$")


def role(command: str) -> str:
    """Which part of the system a sampled process is, from its command line."""
    if not command:  # py-spy names the process it started (the benchmark's own) with no command
        return "bench process (centre / forwarder)"
    if "multiprocessing" in command:
        return "ledger check process"
    for needle, name in (("gateway.cli run", "gateway"), ("gateway.cli ledger", "ledger"),
                         ("bench.ledgerhost", "ledger"), ("simulate bank", "simulated banks"),
                         ("bench.bankhost", "simulated banks"), ("bench.rawrelay", "raw relay"),
                         ("-m bench", "bench process (centre / forwarder)")):
        if needle in command:
            return name
    return "other"


def read_raw(path: Path) -> dict[str, list[tuple[list[str], int]]]:
    """The samples of a py-spy ``raw`` file, by role: (frames root first, without the process
    frames; count)."""
    out: dict[str, list[tuple[list[str], int]]] = defaultdict(list)
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        command = ""
        while frames and frames[0].startswith("process "):
            head = frames.pop(0)
            while not _PROCESS.match(head) and frames:  # a command line holding ";"
                head += ";" + frames.pop(0)
            m = _PROCESS.match(head)
            command = (m.group(2) if m else "") or command
        out[role(command)].append(([_LINE.sub(")", f) for f in frames], int(count)))
    return out


def tables(path: Path, *, top: int = 15, rate: float = 50.0) -> str:
    """Markdown: per role, the top frames by self and by cumulative samples."""
    lines: list[str] = []
    by_role = read_raw(path)
    order = sorted(by_role, key=lambda r: -sum(c for _, c in by_role[r]))
    for name in order:
        waiting = sum(c for frames, c in by_role[name] if frames and _waits(frames[-1]))
        importing = sum(c for frames, c in by_role[name] if frames and not _waits(frames[-1])
                        and any(f.startswith("_find_and_load (") for f in frames))
        samples = [(frames, c) for frames, c in by_role[name] if frames and not _waits(frames[-1])
                   and not any(f.startswith("_find_and_load (") for f in frames)]
        total = sum(c for _, c in samples)
        if total < 10:
            continue
        own: Counter[str] = Counter()
        cumulative: Counter[str] = Counter()
        for frames, count in samples:
            if frames:
                own[frames[-1]] += count
            for f in set(frames):
                cumulative[f] += count
        lines += ["", f"**{name}**: {total:,} samples ({waiting:,} in a wait and {importing:,} importing "
                      "modules at start, left out)", "",
                  "| self % | frame (self) | | cum. % | frame (cumulative) |", "|---:|---|---|---:|---|"]
        cum_rows = [(f, c) for f, c in cumulative.most_common() if _ours(f)][:top]
        own_rows = own.most_common(top)
        for i in range(top):
            cells = []
            for found in (own_rows, cum_rows):
                frame, count = found[i] if i < len(found) else ("", 0)
                cells.append((f"{100 * count / total:.1f}", f"`{_short(frame)}`") if frame else ("", ""))
            lines.append(f"| {cells[0][0]} | {cells[0][1]} | | {cells[1][0]} | {cells[1][1]} |")
    return "\n".join(lines).lstrip("\n")


def _waits(frame: str) -> bool:
    return any(frame.endswith(w) for w in WAITS)


_ENTRY = ("cmd_", "run_daemon ", "run_ledger ", "run_bank ", "main ", "<module> ", "_check_in_worker ")


def _ours(frame: str) -> bool:
    # The project's own functions, less the entry points every sample of a process passes through.
    where = frame.partition(" (")[2]
    return where.startswith(("gateway/", "adapters/", "bench/")) and not frame.startswith(_ENTRY)


def _short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for prefix in ("site-packages/", "python3.11/"):
        if prefix in where:
            where = where.split(prefix, 1)[1]
    return f"{name} ({where})".replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--tables", action="store_true", help="only print the tables of an existing file")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--rate", type=float, default=50.0, help="samples per second (default 50)")
    p.add_argument("out", type=Path, help="the py-spy raw file to write (or read, with --tables)")
    p.add_argument("bench", nargs=argparse.REMAINDER, help="-- then the arguments of python -m bench")
    args = p.parse_args(argv)
    if args.tables and args.bench:  # options given after the file (--top, --rate): read them too
        args = p.parse_args(["--tables", *args.bench, str(args.out)])
    if not args.tables:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        bench = [a for a in args.bench if a != "--"] if args.bench[:1] == ["--"] else args.bench
        if not bench:
            p.error("give the benchmark's arguments after --")
        rc = subprocess.call([spy, "record", "--format", "raw", "--rate", f"{args.rate:g}", "--subprocesses",
                              "-o", str(args.out), "--", sys.executable, "-m", "bench", *bench])
        if rc != 0 or not args.out.exists():
            print(f"python -m bench.profile: py-spy ended with status {rc}", file=sys.stderr)
            return 1
    print(tables(args.out, top=args.top, rate=args.rate))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
