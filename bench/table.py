"""``python -m bench.table``: every figure of issue 20 from one script, on one machine, in one hour.

Runs each benchmark the table needs as its own process, ``python -m bench
NAME ... --json FILE`` from the tree it measures, keeps every JSON document
(and each run's printed table) in ``--out DIR``, and prints one Markdown
table: figure | measured | target | met?, with the machine line
(:func:`bench.common.machine_info`: CPU, cores, Python, commit, the
calibration loop, the load) and, per run, the loop and load it began with.

``--before REV`` also measures REV: ``git archive REV`` extracted into a
temporary directory, with this tree's ``bench/*.py`` and centre simulator
(``gateway/simulate/centre.py``, ``centre_load.py``: the instrument, not the
gateway measured) copied over it, as bench/README.md item 36 did by hand.
Before and after alternate per benchmark (before first for the first, after
first for the next, and so on), so that a machine that slows down over the
hour weighs on both columns alike.

Nothing here judges the code: the "met?" column compares each figure with
issue 20's target, on this machine, at this load.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import REPO, Children, machine_info, now_iso, python_argv, write_json

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

#: What ``--quick`` and a full run give each benchmark's ``--seconds`` (relay, intake, ledger, idle).
SECONDS = {"full": {"relay": 20.0, "intake": 15.0, "ledger": 15.0, "idle": 30.0, "idle_warmup": 10.0, "raw": 5.0},
           "quick": {"relay": 4.0, "intake": 3.0, "ledger": 3.0, "idle": 5.0, "idle_warmup": 2.0, "raw": 1.0}}
_RUN_TIMEOUT_S = 1200.0  # one benchmark; the benchmarks bound themselves well within this
_LONG_RATE = 300.0  # the long run's offered rate (bench/README.md: the real run used 300-550/s)


@dataclass(frozen=True)
class Run:
    """One benchmark run the table needs: a key, and the arguments after ``python -m bench``."""

    key: str
    argv: tuple[str, ...]
    timeout_s: float = _RUN_TIMEOUT_S


#: The keys of the runs, as ``--only`` takes them.
KEYS = ("relay100", "relay500", "saturate", "saturate_no_ledger", "saturate_pg", "intake", "ledger", "idle",
        "memory_long")


def plan(*, quick: bool, pg_url: str | None, long_instructions: int | None) -> list[Run]:
    """The runs behind the table, in order; ``pg_url`` None leaves the PostgreSQL ones out."""
    s = SECONDS["quick" if quick else "full"]
    relay = ("relay", "--seconds", f"{s['relay']:g}", "--raw-seconds", f"{s['raw']:g}")
    saturate = (*relay, "--saturate", "--final-timeout", "60")  # time for the ledger's copies to drain
    runs = [
        Run("relay100", (*relay, "--rate", "100")),
        Run("relay500", (*relay, "--rate", "500")),
        Run("saturate", saturate),
        Run("saturate_no_ledger", (*saturate, "--no-ledger")),
    ]
    if pg_url:
        runs.append(Run("saturate_pg", (*saturate, "--database", pg_url)))
    runs += [
        Run("intake", ("intake", "--seconds", f"{s['intake']:g}", "--database", "sqlite",
                       *(("--database", pg_url) if pg_url else ()))),
        Run("ledger", ("ledger", "--seconds", f"{s['ledger']:g}", "--rate", "500")),
        Run("idle", ("idle", "--seconds", f"{s['idle']:g}", "--warmup", f"{s['idle_warmup']:g}")),
    ]
    if long_instructions:
        runs.append(Run("memory_long", ("memory", "--part", "long", "--instructions", str(long_instructions),
                                        "--long-rate", f"{_LONG_RATE:g}"),
                        timeout_s=_RUN_TIMEOUT_S + 3 * long_instructions / _LONG_RATE))
    return runs


def sides_for(index: int, *, before: bool) -> tuple[str, ...]:
    """The trees run for the ``index``-th benchmark, in order: before and after alternate which
    goes first, so that a machine growing busier over the run weighs on both alike."""
    if not before:
        return ("after",)
    return ("before", "after") if index % 2 == 0 else ("after", "before")


# -- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the table: the figure, what was measured, issue 20's target, and whether it
    was met (None: not judged, e.g. not measured, or a figure the target does not govern)."""

    figure: str
    measured: str
    target: str
    met: bool | None
    note: str = ""


def _r(doc: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return None if doc is None else doc.get("results")


def _num(v: Any, digits: int = 0) -> str:
    if v is None:
        return "–"
    if isinstance(v, (int, float)):
        return f"{v:,.{digits}f}"
    return str(v)


def _le(v: Any, limit: float) -> bool | None:
    return None if v is None else v <= limit


def _all(*checks: bool | None) -> bool | None:
    """True when every check holds, False when one fails, None when one could not be made."""
    if any(c is False for c in checks):
        return False
    return None if any(c is None for c in checks) else True


_NOT_RUN = "not measured"


def _latency_rows(doc: Mapping[str, Any] | None, rate: str) -> list[Row]:
    r = _r(doc)
    figure = f"relay at {rate}/s offered, single POSTs: submit→final p50 / p99"
    if r is None:
        return [Row(figure, _NOT_RUN, "≤ 15 / 50 ms", None)]
    push, polled = r.get("latency_push_banks"), r.get("latency_polled_banks")
    overall = f"{_num(r['p50_ms'])} / {_num(r['p99_ms'])} ms"
    if not push or not push.get("banks"):
        return [Row(figure + ", all banks", overall, "≤ 15 / 50 ms", _all(_le(r["p50_ms"], 15), _le(r["p99_ms"], 50)),
                    "no per-bank figures in this run")]
    cadence = ", ".join(f"{c:g}" for c in polled.get("status_first_after_s") or []) if polled else ""
    rows = [Row(f"{figure}, banks that push results ({', '.join(push['adapters'])})",
                f"{_num(push['p50_ms'])} / {_num(push['p99_ms'])} ms ({push['final']:,})", "≤ 15 / 50 ms",
                _all(_le(push["p50_ms"], 15), _le(push["p99_ms"], 50)))]
    if polled and polled.get("banks"):
        rows.append(Row(f"{figure}, front-end banks the gateway polls ({', '.join(polled['adapters'])})",
                        f"{_num(polled['p50_ms'])} / {_num(polled['p99_ms'])} ms ({polled['final']:,})",
                        f"the bank's poll cadence: first status query {cadence or '?'} s after its receipt", None,
                        "the front-end pushes nothing; its latency is the cadence set in the bank's config"))
    rows.append(Row(f"{figure}, all banks", overall, "–", None))
    return rows


def table_rows(docs: Mapping[str, Mapping[str, Any] | None], *, cores: int | None = None) -> list[Row]:
    """Issue 20's rows from the runs' JSON documents (``docs[key]`` None: not run or failed)."""
    rows = _latency_rows(docs.get("relay100"), "100")
    r = _r(docs.get("relay100"))
    rows.append(Row("gateway CPU per 1,000 instructions at 100/s", _NOT_RUN if r is None else
                    f"{_num(r['gateway_cpu_s_per_1000'], 2)} s", "≤ 0.6 s",
                    None if r is None else _le(r["gateway_cpu_s_per_1000"], 0.6)))

    r = _r(docs.get("idle"))
    rows.append(Row("the demo idle (all daemons, one process, nothing submitted): CPU",
                    _NOT_RUN if r is None else f"{_num(r['cpu_percent_of_a_core'], 2)} % "
                    f"({_num(r['wakeups_per_s'])} wakeups/s)", "≤ 0.5 % of a core",
                    None if r is None else _le(r["cpu_percent_of_a_core"], 0.5)))

    r = _r(docs.get("relay500"))
    figure = "relay at 500/s offered, single POSTs: rate reached; p99; gateway CPU per 1,000"
    if r is None:
        rows.append(Row(figure, _NOT_RUN, "500/s reached; p99 ≤ 80 ms; gateway ≤ 0.8 s", None))
    else:
        centre = r.get("centre", {})
        reached = (r["submitted_per_s"] >= 0.95 * 500 and centre.get("not_final", 1) == 0
                   and centre.get("refused", 1) == 0)
        push, polled = r.get("latency_push_banks") or {}, r.get("latency_polled_banks") or {}
        if push.get("banks"):
            p99, p99_text = push["p99_ms"], (f"p99 {_num(push['p99_ms'])} ms pushing banks, "
                                             f"{_num(polled.get('p99_ms'))} ms polled")
        else:
            p99, p99_text = r["p99_ms"], f"p99 {_num(r['p99_ms'])} ms"
        rows.append(Row(figure, f"{_num(r['submitted_per_s'])}/s submitted, {centre.get('final', 0):,} of "
                        f"{centre.get('submitted', 0):,} final; {p99_text}; gateway "
                        f"{_num(r['gateway_cpu_s_per_1000'], 2)} s", "500/s reached; p99 ≤ 80 ms; gateway ≤ 0.8 s",
                        _all(reached, _le(p99, 80), _le(r["gateway_cpu_s_per_1000"], 0.8)),
                        "p99 judged on the banks that push results (the polled ones follow their cadence)"
                        if push.get("banks") else ""))

    r = _r(docs.get("saturate"))
    figure = "relay --saturate, batch, ledger on: final/s; gateway / ledger CPU s per 1,000"
    if r is None:
        rows.append(Row(figure, _NOT_RUN, "gateway ≤ 0.4, ledger ≤ 0.3; copies keep up with finals", None))
    else:
        costs = r["cpu_s_per_1000_by_process"]
        with_copies = r.get("instructions_per_s_copies_delivered")
        drain = r.get("ledger_drain_after_last_final_s")
        # Keeping up: every copy delivered, and the rate with copies within 5 % of the finals'.
        keep_up = (None if r["instructions_per_s"] is None else drain is not None and with_copies is not None
                   and with_copies >= 0.95 * r["instructions_per_s"])
        timeout = (docs.get("saturate") or {}).get("params", {}).get("final_timeout")
        copies = (f"with copies {_num(with_copies)}/s (the last {_num(drain, 1)} s after the last final)"
                  if drain is not None else
                  f"copies NOT all delivered within {_num(timeout)} s of the last final "
                  f"({r.get('ledger_copies', 0):,} delivered)")
        rows.append(Row(figure, f"{_num(r['instructions_per_s'])} final/s; gateway {_num(costs['gateway'], 2)} / "
                        f"ledger {_num(costs['ledger'], 2)} s; {copies}",
                        "gateway ≤ 0.4, ledger ≤ 0.3; copies keep up with finals",
                        _all(_le(costs["gateway"], 0.4), _le(costs["ledger"], 0.3), keep_up)))

    r = _r(docs.get("saturate_no_ledger"))
    rows.append(Row("relay --saturate --no-ledger: final/s", _NOT_RUN if r is None else
                    f"{_num(r['instructions_per_s'])}/s", "≥ 2,500/s",
                    None if r is None else r["instructions_per_s"] >= 2500))

    r = _r(docs.get("saturate"))
    cores_text = f"{cores} cores" if cores else "this machine's cores"
    rows.append(Row(f"\"the most these costs allow\", all processes, {cores_text} (relay --saturate, ledger on)",
                    _NOT_RUN if r is None else f"{_num(r['cpu_bound_instructions_per_s'])}/s", "≥ 2,000/s",
                    None if r is None or r["cpu_bound_instructions_per_s"] is None
                    else r["cpu_bound_instructions_per_s"] >= 2000))

    intake = (_r(docs.get("intake")) or {}).get("databases", {})
    sqlite = intake.get("sqlite")
    rows.append(Row("intake, SQLite FULL, batch API", _NOT_RUN if sqlite is None else
                    f"{_num(sqlite['instructions_per_s'])}/s", "≥ 15,000/s",
                    None if sqlite is None else sqlite["instructions_per_s"] >= 15000))

    pg = intake.get("postgresql")
    intake_ratio = (pg["instructions_per_s"] / sqlite["instructions_per_s"]
                    if pg and sqlite and sqlite["instructions_per_s"] else None)
    sat, sat_pg = _r(docs.get("saturate")), _r(docs.get("saturate_pg"))
    relay_ratio = (sat_pg["instructions_per_s"] / sat["instructions_per_s"]
                   if sat and sat_pg and sat["instructions_per_s"] else None)
    rows.append(Row("intake / relay on PostgreSQL, relative to SQLite",
                    f"{_num(intake_ratio, 2)} / {_num(relay_ratio, 2)}"
                    + (f" ({_num(pg['instructions_per_s'])}/s; {_num(sat_pg['instructions_per_s'])} final/s)"
                       if pg and sat_pg else ""),
                    "≥ 0.8 / 0.9",
                    _all(None if intake_ratio is None else intake_ratio >= 0.8,
                         None if relay_ratio is None else relay_ratio >= 0.9),
                    "" if pg or sat_pg else "PostgreSQL not measured"))

    r = _r(docs.get("ledger"))
    m = (r or {}).get("max")
    rows.append(Row("ledger max ingest + match", _NOT_RUN if m is None else f"{_num(m['events_per_s'])} events/s",
                    "≥ 20,000 events/s", None if m is None else m["events_per_s"] >= 20000))
    rate, half = (r or {}).get("rate"), (r or {}).get("sustainable")
    half_text = ("" if half is None else f"; at half its capacity ({_num(half['offered_instructions_per_s'])}/s) "
                 f"p99 {_num(half['match_lag_p99_ms'])} ms")
    rows.append(Row("ledger match lag p99 at half its capacity",
                    _NOT_RUN if rate is None else f"{_num(rate['match_lag_p99_ms'])} ms at "
                    f"{_num(rate['offered_instructions_per_s'])} instructions/s"
                    f"{'' if rate['kept_up'] else ', not kept up'}{half_text}",
                    "≤ 100 ms at 500 instructions/s",
                    None if rate is None else _all(_le(rate["match_lag_p99_ms"], 100), rate["kept_up"])))
    rows.append(Row("ledger peak RSS in its bench", _NOT_RUN if r is None else f"{_num(r['ledger_peak_rss_mb'])} MB",
                    "≤ 200 MB", None if r is None else _le(r["ledger_peak_rss_mb"], 200)))

    g = (_r(docs.get("memory_long")) or {}).get("long_run")
    rows.append(Row("gateway RSS over a long run",
                    "not run (--long N)" if g is None else
                    f"{_num(g['rss_start_mb'])} → {_num(g['rss_warm_mb'])} (warm) → {_num(g['rss_end_mb'])} MB "
                    f"over {g['final']:,} final; {_num(g['growth_mb_per_100k_after_warmup'], 1)} MB per 100,000 "
                    "after warm-up",
                    "flat after warm-up (≤ 1 MB per 100,000)",
                    None if g is None else _le(g["growth_mb_per_100k_after_warmup"], 1.0)))
    return rows


def _met(v: bool | None) -> str:
    return "–" if v is None else ("yes" if v else "**no**")


def markdown(after: Sequence[Row], before: Sequence[Row] | None = None) -> str:
    """The table in Markdown: one measured column, or before and after."""
    lines = []
    if before is None:
        lines += ["| figure | measured | target | met? |", "|---|---|---|---|"]
        for row in after:
            note = f" ({row.note})" if row.note else ""
            lines.append(f"| {row.figure}{note} | {row.measured} | {row.target} | {_met(row.met)} |")
    else:
        lines += ["| figure | before | after | target | met? before / after |", "|---|---|---|---|---|"]
        olds = {row.figure: row for row in before}
        for row in after:
            old = olds.get(row.figure)
            note = f" ({row.note})" if row.note else ""
            lines.append(f"| {row.figure}{note} | {old.measured if old else _NOT_RUN} | {row.measured} | "
                         f"{row.target} | {_met(old.met if old else None)} / {_met(row.met)} |")
    return "\n".join(lines)


def machine_line(machine: Mapping[str, Any]) -> str:
    """The machine and code, as every benchmark prints them."""
    dirty = machine.get("git_dirty_files")
    return (f"{machine['nproc']} × {machine['cpu_model']} (nproc {machine['nproc']}), {machine['memory_mb']:,} MB, "
            f"{machine['implementation']} {machine['python']}, commit {(machine['git_commit'] or '?')[:12]}"
            f"{f' + {dirty} uncommitted files' if dirty else ''}, a 2,000,000-step Python loop "
            f"{machine['python_loop_ms']:g} ms, load average {' '.join(str(x) for x in machine['load_average_at_start'])}")


# -- running ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one run of one benchmark on one tree left: its JSON document, or why there is none."""

    key: str
    side: str
    argv: tuple[str, ...]
    json_path: Path
    log_path: Path
    started_at: str = ""
    elapsed_s: float = 0.0
    status: int | None = None
    doc: dict[str, Any] | None = field(default=None, repr=False)
    error: str = ""


def run_one(children: Children, run: Run, *, side: str, tree: Path, out: Path) -> Outcome:
    """``python -m bench ARGV --json FILE`` with ``tree`` as the working directory and first on the path."""
    stem = f"{run.key}-{side}"
    outcome = Outcome(run.key, side, run.argv, out / f"{stem}.json", out / f"{stem}.txt")
    argv = python_argv("-m", "bench", *run.argv, "--json", str(outcome.json_path))
    outcome.started_at, t0 = now_iso(), time.monotonic()
    child = children.spawn(stem, argv, log=outcome.log_path, cwd=tree,
                           env={"PYTHONPATH": os.pathsep.join(filter(None, [str(tree),
                                                                            os.environ.get("PYTHONPATH")]))})
    try:
        outcome.status = child.popen.wait(run.timeout_s)
    except subprocess.TimeoutExpired:
        outcome.error = f"did not finish within {run.timeout_s:g} s; stopped"
        # SIGTERM first: the benchmark stops its own children (10 s each), then SIGKILL.
        outcome.status = children.stop(child, timeout=60)
    else:
        children.stop(child)
    outcome.elapsed_s = time.monotonic() - t0
    if outcome.status == 0 and outcome.json_path.exists():
        outcome.doc = json.loads(outcome.json_path.read_text(encoding="utf-8"))
    elif not outcome.error:
        outcome.error = f"exit status {outcome.status}: {child.tail(5)}"
    return outcome


def before_tree(rev: str, directory: Path) -> tuple[Path, str]:
    """REV's tree in ``directory`` with this tree's bench/*.py and centre simulator over it; (path, commit)."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                            capture_output=True, text=True, check=False)
    if commit.returncode != 0:
        raise SystemExit(f"python -m bench.table: --before {rev}: not a commit of {REPO}: {commit.stderr.strip()}")
    tree = directory / f"before-{commit.stdout.strip()[:12]}"
    tree.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", commit.stdout.strip()], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(tree)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise SystemExit(f"python -m bench.table: git archive {rev} failed")
    for source in (REPO / "bench").glob("*.py"):
        shutil.copy2(source, tree / "bench" / source.name)
    simulate = tree / "gateway" / "simulate"
    if (simulate / "centre_load.py").exists():  # the centre is the instrument; older layouts keep theirs
        for name in ("centre.py", "centre_load.py"):
            shutil.copy2(REPO / "gateway" / "simulate" / name, simulate / name)
    return tree, commit.stdout.strip()


def pg_reachable(url: str) -> str | None:
    """None when a PostgreSQL server answers at ``url``; otherwise why not."""
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as e:  # noqa: BLE001 (any failure means: skip those rows, and say why)
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return None


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.table", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--out", type=Path, default=None,
                   help="where the JSON documents, each run's output and the table go (default: a new "
                        "directory under the system's temporary directory)")
    p.add_argument("--quick", action="store_true", help="every --seconds shortened: a smoke run, not figures")
    p.add_argument("--database-url", default=DEFAULT_PG,
                   help=f"the PostgreSQL server for the PostgreSQL rows (default {DEFAULT_PG}); "
                        "unreachable: those rows are skipped, with a note")
    p.add_argument("--before", metavar="REV", help="also measure REV (git archive + this tree's bench/), "
                                                   "alternating with this tree per benchmark")
    p.add_argument("--only", metavar="KEYS", default=None,
                   help="run only these rows' benchmarks, comma-separated, of: " + ", ".join(KEYS))
    p.add_argument("--long", type=int, metavar="N", default=None,
                   help=f"also run the gateway's memory long run over N instructions at {_LONG_RATE:g}/s "
                        "(1000000 for the real one: about an hour)")
    return p


def main(argv: Sequence[str] | None = None, *, say: Callable[[str], None] = print) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    out = (args.out or Path(tempfile.gettempdir()) / f"hpf-bench-table-{time.strftime('%Y%m%dT%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    machine = machine_info()
    started_at, t0 = now_iso(), time.monotonic()
    say(f"machine: {machine_line(machine)}")
    say(f"writing to {out}")
    problem = pg_reachable(args.database_url)
    if problem:
        notes.append(f"PostgreSQL rows skipped: no server at {args.database_url} ({problem})")
        say(f"note: {notes[-1]}")
    runs = plan(quick=args.quick, pg_url=None if problem else args.database_url, long_instructions=args.long)
    if args.only:
        wanted = {k.strip() for k in args.only.split(",") if k.strip()}
        unknown = wanted - set(KEYS)
        if unknown:
            raise SystemExit(f"python -m bench.table: --only: unknown {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(KEYS)}")
        runs = [r for r in runs if r.key in wanted]
        notes.append(f"only {', '.join(r.key for r in runs)} run (--only)")
    children = Children()
    outcomes: list[Outcome] = []
    scratch = Path(tempfile.mkdtemp(prefix="hpf-bench-before-")) if args.before else None
    before_commit = None
    try:
        trees = {"after": REPO}
        if args.before:
            assert scratch is not None
            trees["before"], before_commit = before_tree(args.before, scratch)
        for i, run in enumerate(runs):
            for side in sides_for(i, before=bool(args.before)):
                say(f"[{i + 1}/{len(runs)}] {side}: python -m bench {' '.join(run.argv)}")
                outcome = run_one(children, run, side=side, tree=trees[side], out=out)
                outcomes.append(outcome)
                m = (outcome.doc or {}).get("machine", {})
                say(f"    {'done' if outcome.doc else 'FAILED: ' + outcome.error} in {outcome.elapsed_s:.0f} s"
                    + (f" (loop {m.get('python_loop_ms')} ms, load {m.get('load_average_at_start')})" if m else ""))
    except KeyboardInterrupt:
        say("interrupted: the table below has what finished")
        notes.append("interrupted before every run finished")
    finally:
        children.stop_all(timeout=60)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    finished_at = now_iso()
    docs = {side: {o.key: o.doc for o in outcomes if o.side == side} for side in ("before", "after")}
    cores = machine.get("nproc")
    after_rows = table_rows(docs["after"], cores=cores)
    before_rows = table_rows(docs["before"], cores=cores) if args.before else None
    for o in outcomes:
        if o.doc is None:
            notes.append(f"{o.key} ({o.side}) gave no figures: {o.error}")
    text = render(machine, started_at, finished_at, after_rows, before_rows, outcomes, notes,
                  before=f"{args.before} ({before_commit[:12]})" if before_commit else None, quick=args.quick)
    (out / "table.txt").write_text(text + "\n", encoding="utf-8")
    write_json(out / "table.json", {
        "benchmark": "table", "started_at": started_at, "elapsed_s": round(time.monotonic() - t0, 1),
        "machine": machine, "before": before_commit, "quick": args.quick,
        "rows": {"after": [asdict(r) for r in after_rows],
                 "before": [asdict(r) for r in before_rows] if before_rows else None},
        "runs": [{"key": o.key, "side": o.side, "argv": list(o.argv), "json": o.json_path.name,
                  "started_at": o.started_at, "elapsed_s": round(o.elapsed_s, 1), "status": o.status,
                  "error": o.error} for o in outcomes],
        "notes": notes})
    say("")
    say(text)
    say(f"\nfigures, outputs and this table (table.txt, table.json) in {out}")
    return 0 if outcomes and all(o.doc is not None for o in outcomes) else 1


def render(machine: Mapping[str, Any], started_at: str, finished_at: str, after: Sequence[Row],
           before_rows: Sequence[Row] | None, outcomes: Sequence[Outcome], notes: Sequence[str], *,
           before: str | None = None, quick: bool = False) -> str:
    """The whole Markdown report: the machine line, the table, each run's loop and load, the notes."""
    def hm(iso: str) -> str:
        with contextlib.suppress(ValueError):
            return _dt.datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")
        return iso

    lines = [f"Issue 20's figures, {hm(started_at)}–{hm(finished_at)[-5:]} UTC"
             + (" (--quick: a smoke run, not figures)" if quick else ""), "",
             f"machine: {machine_line(machine)}"]
    if before:
        lines.append(f"before: {before}, with this tree's bench/*.py and centre simulator; after: this tree")
    lines += ["", markdown(after, before_rows), "", "| run | side | started | loop ms | load at start | took |",
              "|---|---|---|---:|---|---:|"]
    for o in outcomes:
        m = (o.doc or {}).get("machine", {})
        lines.append(f"| `{' '.join(o.argv)}` | {o.side} | {o.started_at[11:19]} | "
                     f"{m.get('python_loop_ms', '–')} | {' '.join(str(x) for x in m.get('load_average_at_start', []))} "
                     f"| {o.elapsed_s:.0f} s{'' if o.doc else ' (failed)'} |")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
