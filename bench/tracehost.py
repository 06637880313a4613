"""``python -m bench.tracehost DIR FRAMES -- MODULE ARGS``: ``python -m MODULE ARGS`` with tracemalloc on.

Where a daemon's memory goes, for ``bench memory --tracemalloc`` and ``bench ledger
--tracemalloc``: tracemalloc is started with ``FRAMES`` frames per allocation before the
daemon's code (``gateway.cli`` or ``bench.ledgerhost``) is imported, and every SIGUSR2 writes a snapshot to ``DIR/snap-N.pickle``
(N counting from 0; the file appears whole, renamed from a temporary name) and prints
pymalloc's and glibc's arena statistics to the process's stderr (``sys._debugmallocstats``,
``malloc_stats(3)``): what tracemalloc does not see, memory held but not in use.  The bench
compares two snapshots with :func:`diff_table` (growth) or reads one with
:func:`top_table` (what is held).  Tracing costs CPU and memory of its own (about twice
the CPU, and its records): figures of a traced run are not the untraced run's.  Test and
bench use only; the daemon itself has no such hook.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import tracemalloc
from pathlib import Path

__all__ = ["diff_table", "main", "top_table"]


def _install(directory: Path) -> None:
    count = [0]

    def dump(signum: int, frame: object) -> None:  # runs between two bytecodes of the reactor thread
        path = directory / f"snap-{count[0]}.pickle"
        tmp = path.with_suffix(".tmp")
        snap = tracemalloc.take_snapshot().filter_traces((
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        ))
        snap.dump(str(tmp))
        # And where the rest of the heap is, to the process's stderr (its log): pymalloc's
        # arenas (live blocks against arenas held) and glibc's (bytes in use against held).
        sys.stderr.flush()
        sys._debugmallocstats()
        try:
            import ctypes

            ctypes.CDLL(None).malloc_stats()
            lib = ctypes.CDLL("libsqlite3.so.0")  # the one _sqlite3 is linked to, already loaded
            lib.sqlite3_memory_used.restype = ctypes.c_int64
            lib.sqlite3_memory_highwater.restype = ctypes.c_int64
            print(f"sqlite3_memory_used {lib.sqlite3_memory_used()} "
                  f"highwater {lib.sqlite3_memory_highwater(0)}", file=sys.stderr, flush=True)
        except (OSError, AttributeError):
            pass
        os.replace(tmp, path)
        count[0] += 1

    signal.signal(signal.SIGUSR2, dump)


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: python -m bench.tracehost DIR FRAMES -- MODULE ARGS", file=sys.stderr)
        return 2
    directory, frames, module, rest = Path(argv[0]), int(argv[1]), argv[3], argv[4:]
    directory.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(frames)
    _install(directory)
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


def _label(stat: tracemalloc.StatisticDiff | tracemalloc.Statistic, depth: int) -> str:
    frames = list(stat.traceback)[-depth:] if depth else list(stat.traceback)
    # Newest frame first, paths from the repository root where possible.
    root = str(Path(__file__).resolve().parent.parent) + os.sep
    parts = [f"{f.filename.replace(root, '')}:{f.lineno}" for f in reversed(frames)]
    return " < ".join(parts)


def diff_table(before: Path, after: Path, *, top: int = 15, key: str = "traceback",
               depth: int = 4) -> list[str]:
    """The ``top`` allocation sites by growth of bytes held, ``after`` less ``before``."""
    a = tracemalloc.Snapshot.load(str(before))
    b = tracemalloc.Snapshot.load(str(after))
    stats = b.compare_to(a, key)
    total = sum(s.size_diff for s in stats)
    lines = [f"total growth {total / 1024:+,.0f} KiB over {len(stats)} sites"]
    for s in stats[:top]:
        lines.append(f"{s.size_diff / 1024:+9,.0f} KiB {s.count_diff:+8,d} blocks  {_label(s, depth)}")
    return lines


def top_table(snapshot: Path, *, top: int = 15, key: str = "traceback", depth: int = 4) -> list[str]:
    """The ``top`` allocation sites by bytes held in ``snapshot``."""
    s = tracemalloc.Snapshot.load(str(snapshot))
    stats = s.statistics(key)
    total = sum(x.size for x in stats)
    lines = [f"total held {total / 1024:,.0f} KiB over {len(stats)} sites"]
    for x in stats[:top]:
        lines.append(f"{x.size / 1024:9,.0f} KiB {x.count:8,d} blocks  {_label(x, depth)}")
    return lines


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
