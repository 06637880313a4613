"""``python -m bench NAME [--seconds S] [--json FILE] [options]``: run one benchmark, print its table.

Exit status: 0 when the benchmark ran (whatever the figures), 1 when it could
not run (the message says why), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench import BENCHMARKS
from bench.common import BenchError, machine_info, now_iso, write_json


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per benchmark, each with the common options."""
    p = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    sub = p.add_subparsers(dest="benchmark", required=True, metavar="NAME")
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        sp = sub.add_parser(name, help=module.HELP, description=module.HELP)
        sp.add_argument("--seconds", type=float, default=module.DEFAULT_SECONDS,
                        help=f"how long to measure (default {module.DEFAULT_SECONDS:g})")
        sp.add_argument("--json", type=Path, help="also write the figures, machine and options here")
        module.add_arguments(sp)
        sp.set_defaults(module=module)
    return p


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM outside the reactor: unwind like Ctrl-C, so every child is stopped and the
    # temporary directory removed.  (While the reactor runs, Twisted stops it on SIGTERM,
    # which bench.common.run_reactor turns into the same KeyboardInterrupt.)
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if not args.seconds > 0:
        print("python -m bench: --seconds must be positive", file=sys.stderr)
        return 2
    machine = machine_info()
    started_at, t0 = now_iso(), time.monotonic()
    try:
        report = args.module.run(args)
    except BenchError as e:
        print(f"python -m bench {args.benchmark}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\npython -m bench {args.benchmark}: interrupted; child processes stopped", file=sys.stderr)
        return 130
    print(report.table())
    print(f"machine: {machine['nproc']} x {machine['cpu_model']}, Python {machine['python']}, "
          f"commit {(machine['git_commit'] or '?')[:12]}"
          f"{' + uncommitted changes' if machine['git_dirty_files'] else ''}, "
          f"load average at start {' '.join(str(x) for x in machine['load_average_at_start'])}, "
          f"a 2,000,000-step Python loop took {machine['python_loop_ms']:g} ms")
    if args.json:
        # The load at the end says whether the machine stayed as busy as it was at the start.
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        write_json(args.json, report.document(machine, started_at, time.monotonic() - t0))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
