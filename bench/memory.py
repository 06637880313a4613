"""``python -m bench memory``: the gateway's resident memory with many links and instructions in flight, and over a long run.

Two parts, each on a fresh gateway in its own process (RSS and the peak,
VmHWM, from ``/proc/PID/status``):

1. **in flight** — the demo config grown to ``--banks`` banks (default 50;
   the extra ones speak bdc, half dial in, half are dialled), all played by
   one :mod:`bench.bankhost` process with ``--silent`` banks that take every
   instruction and never answer.  Receipt, result and balance-query timers
   are set to an hour so nothing is resent while we look.  RSS is read with
   every link signed on and idle, then after ``--in-flight`` instructions
   (default 10,000) were accepted and handed to the bank dispatchers (the
   gateway's own queue gauges say how many it holds), and the difference is
   given per instruction.
2. **long run** — the demo config (its banks answering, one
   ``hpf-gateway simulate bank`` process each); ``--instructions`` (default
   ``--long-rate`` x ``--seconds``; ``1000000`` for the real thing, outside CI)
   submitted at ``--long-rate`` through the batch API.  RSS is sampled every
   second; reported: before the load, after the first 10 % (warmed up), at the
   end, the peak, and the growth per 100,000 instructions after warm-up.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BenchError,
    Report,
    python_argv,
    run_reactor,
    scrape_metrics,
    start_bench_log,
    wait_until,
)
from bench.env import (
    Workspace,
    fresh_database,
    make_gateway_env,
    start_bank_sims,
    start_gateway,
    wait_links_up,
)
from bench.tracehost import diff_table

HELP = "gateway RSS with 50 bank links and 10,000 instructions in flight, and start/end RSS of a long run"
DEFAULT_SECONDS = 20.0

_QUIET = {"receipt_timeout": 3600.0, "result_timeout": 3600.0, "balance_query_interval": 3600.0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--banks", type=int, default=50, help="bank links for the in-flight part (default 50)")
    p.add_argument("--in-flight", type=int, default=10_000, help="instructions held in flight (default 10,000)")
    p.add_argument("--instructions", type=int, default=None,
                   help="instructions in the long run (default --long-rate x --seconds; 1000000 for the real run)")
    p.add_argument("--long-rate", type=float, default=200.0, help="offered rate of the long run (default 200/s)")
    p.add_argument("--batch", type=int, default=50, help="instructions per batch POST in the long run (default 50)")
    p.add_argument("--part", choices=("both", "inflight", "long"), default="both")
    p.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                   help="long run: run the gateway under tracemalloc with FRAMES frames (bench/tracehost.py) "
                        "and print what grew between the warm point and the end; slows it down (default 0: off)")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds to let links settle before the idle reading, and for the in-flight count to "
                        "hold still before the loaded one (default 2)")
    p.add_argument("--database", default="sqlite", help="'sqlite' (default) or a PostgreSQL server URL")
    p.add_argument("--dir", help="work here and keep it (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")


def _mb(kb: int) -> float:
    return round(kb / 1024, 1)


def _held(port: int) -> int:
    """Instructions the gateway's dispatchers hold: queued or awaiting receipt, plus awaiting result."""
    samples = scrape_metrics(port)
    return int(sum(v for (name, _), v in samples.items()
                   if name in ("hpf_gateway_bank_queue_depth", "hpf_gateway_bank_awaiting_result")))


async def _in_flight(reactor: Any, ws: Workspace, args: argparse.Namespace) -> dict[str, Any]:
    from twisted.internet.defer import Deferred
    from twisted.internet.task import deferLater

    from gateway.simulate.centre import CentreRun
    from gateway.simulate.centre_load import CentreLoad

    part = ws.sub("inflight")
    with fresh_database(args.database, part) as database:
        try:
            env = make_gateway_env(part, database=database, bank_count=args.banks, overrides={"timeouts": _QUIET})
            # The banks start first and redial until the gateway listens: the two cold starts overlap.
            host = ws.children.spawn("bankhost", python_argv("-m", "bench.bankhost", "-c", str(env.config_path),
                                                             "--silent"),
                                     log=part / "bankhost.log", cwd=part)
            gateway = start_gateway(ws.children, env)
            wait_links_up(env, env.banks, [gateway, host], timeout=120)
            await deferLater(reactor, args.settle)  # let sign-on and the first heartbeats settle
            idle_kb, _ = gateway.memory_kb()
            host_kb, _ = host.memory_kb()
            load = CentreLoad(base_url=env.api_url, count=args.in_flight, rate=1e6, batch=500, max_outstanding=4,
                              id_prefix=f"M{int(time.time()) % 10**8:08d}-", final_timeout=3600.0,
                              **env.centre_options())
            run = CentreRun(reactor, load)
            finished = Deferred.fromCoroutine(run.run())
            deadline = time.monotonic() + max(120.0, args.in_flight / 100)
            while (run.book.submitted_count < args.in_flight or run.book.unanswered) \
                    and time.monotonic() < deadline and not finished.called:
                await deferLater(reactor, 0.25)
            run.stop()
            report = await finished
            # Wait until the dispatchers hold what was accepted (loaded from intake) and it stays put.
            held, stable_since = -1, time.monotonic()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                now_held = _held(env.ops_port)
                if now_held != held:
                    held, stable_since = now_held, time.monotonic()
                elif now_held >= report.accepted and time.monotonic() - stable_since >= args.settle:
                    break
                await deferLater(reactor, min(0.5, args.settle))
            loaded_kb, hwm_kb = gateway.memory_kb()
        finally:
            ws.children.stop_all()
    per_kb = (loaded_kb - idle_kb) / report.accepted if report.accepted else None
    return {"banks": len(env.banks), "accepted": report.accepted, "refused": report.refused, "held": held,
            "rss_idle_mb": _mb(idle_kb), "rss_in_flight_mb": _mb(loaded_kb), "peak_rss_mb": _mb(hwm_kb),
            "kb_per_instruction_in_flight": None if per_kb is None else round(per_kb, 2),
            "bankhost_rss_mb": _mb(host_kb)}


_LONG_RUN_BALANCE = "10000000000.00"


async def _long_run(reactor: Any, ws: Workspace, args: argparse.Namespace, count: int) -> dict[str, Any]:
    from twisted.internet.defer import Deferred
    from twisted.internet.task import LoopingCall

    from gateway.simulate.centre import CentreRun
    from gateway.simulate.centre_load import CentreLoad

    part = ws.sub("long")
    with fresh_database(args.database, part) as database:
        try:
            env = make_gateway_env(part, database=database)
            # Opening balances for a million transfers of up to 5,000.00 each: with the
            # simulator's default the accounts run dry after ~120,000 and the rest fail
            # at the bank, which spares the gateway the movements a success brings.
            banks = start_bank_sims(ws.children, env, env.banks, extra=("--balance", _LONG_RUN_BALANCE))
            trace_dir = part / "tracemalloc"
            gateway = start_gateway(ws.children, env,
                                    wrapper=("bench.tracehost", str(trace_dir), str(args.tracemalloc), "--")
                                    if args.tracemalloc else ())
            wait_links_up(env, env.banks, [gateway, *banks])
            start_kb, _ = gateway.memory_kb()

            def trace_snapshot() -> Path | None:
                if not args.tracemalloc:
                    return None
                path = trace_dir / f"snap-{len(list(trace_dir.glob('snap-*.pickle')))}.pickle"
                os.kill(gateway.pid, signal.SIGUSR2)
                wait_until(path.exists, timeout=120, what="the gateway's tracemalloc snapshot", children=[gateway])
                return path

            snaps: dict[str, Path | None] = {}
            load = CentreLoad(base_url=env.api_url, count=count, rate=args.long_rate, batch=args.batch, seed=3,
                              id_prefix=f"N{int(time.time()) % 10**8:08d}-", final_timeout=max(60.0, count / 50),
                              **env.centre_options())
            run = CentreRun(reactor, load)
            samples: list[tuple[float, int, int]] = []
            warm: dict[str, int] = {}
            warm_at = max(1, count // 10)
            t0 = time.monotonic()

            def sample() -> None:
                rss_kb = gateway.memory_kb()[0]
                final = run.book.final
                samples.append((time.monotonic() - t0, final, rss_kb))
                if "kb" not in warm and final >= warm_at:
                    # A tenth of the run is final: pools, caches and buffers have grown to their working size.
                    warm.update(kb=rss_kb, final=final)
                    snaps["warm"] = trace_snapshot()

            loop = LoopingCall(sample)
            loop.clock = reactor
            loop.start(1.0, now=True)
            try:
                report = await Deferred.fromCoroutine(run.run())
            finally:
                loop.stop()
            end_kb, hwm_kb = gateway.memory_kb()
            snaps["end"] = trace_snapshot()
            grew = diff_table(snaps["warm"], snaps["end"], top=20, depth=6) \
                if snaps.get("warm") and snaps.get("end") else None
        finally:
            ws.children.stop_all()
    growth = None
    if "kb" in warm and report.final > warm["final"]:
        growth = (end_kb - warm["kb"]) / (report.final - warm["final"]) * 100_000 / 1024
    return {"instructions": count, "final": report.final, "succeeded": report.succeeded,
            "not_final": report.not_final,
            "final_per_s": round(report.final_per_s, 1), "elapsed_s": round(report.elapsed_s, 1),
            "rss_start_mb": _mb(start_kb), "rss_warm_mb": _mb(warm["kb"]) if "kb" in warm else None,
            "rss_end_mb": _mb(end_kb), "peak_rss_mb": _mb(hwm_kb),
            "growth_mb_per_100k_after_warmup": None if growth is None else round(growth, 1),
            "rss_samples": [[round(t, 1), final, _mb(kb)] for t, final, kb in samples],
            "tracemalloc_growth_after_warmup": grew}


def run(args: argparse.Namespace) -> Report:
    if args.banks < 1 or args.in_flight < 1:
        raise BenchError("--banks and --in-flight must be positive")
    count = args.instructions if args.instructions is not None else max(100, int(args.long_rate * args.seconds))
    notes: list[str] = []
    out: dict[str, Any] = {}
    with Workspace(args.dir, keep=args.keep) as ws:
        if ws.keep:
            notes.append(f"work directory kept: {ws.directory}")
        log_file = start_bench_log(ws.directory / "bench.log")

        async def main(reactor: Any) -> None:
            if args.part in ("both", "inflight"):
                out["in_flight"] = await _in_flight(reactor, ws, args)
            if args.part in ("both", "long"):
                out["long_run"] = await _long_run(reactor, ws, args, count)

        try:
            run_reactor(main, timeout=600 + max(120.0, args.in_flight / 100) + 3 * count / args.long_rate)
        finally:
            log_file.close()

    rows: list[tuple[str, Any, str]] = []
    if "in_flight" in out:
        f = out["in_flight"]
        rows += [
            ("bank links (silent simulated banks)", f["banks"], ""),
            ("RSS, links up, idle", f["rss_idle_mb"], "MB"),
            ("instructions accepted and held", f"{f['accepted']:,} / {f['held']:,}", "(centre 2xx / gateway gauges)"),
            ("RSS with them in flight", f["rss_in_flight_mb"], "MB"),
            ("per instruction in flight", f["kb_per_instruction_in_flight"], "KB"),
            ("peak RSS (VmHWM)", f["peak_rss_mb"], "MB"),
        ]
        if f["refused"] or f["held"] < f["accepted"]:
            notes.append(f"in flight: {f['refused']} refused; the gateway's gauges show {f['held']} held of "
                         f"{f['accepted']} accepted")
    if "long_run" in out:
        g = out["long_run"]
        rows += [
            ("long run: instructions final", f"{g['final']:,} of {g['instructions']:,}",
             f"at {g['final_per_s']:g}/s, {g['succeeded']:,} succeeded"),
            ("long run: RSS at start", g["rss_start_mb"], "MB"),
            ("long run: RSS after 10 % (warm)", g["rss_warm_mb"], "MB"),
            ("long run: RSS at end", g["rss_end_mb"], "MB"),
            ("long run: peak RSS (VmHWM)", g["peak_rss_mb"], "MB"),
            ("long run: growth after warm-up", g["growth_mb_per_100k_after_warmup"], "MB per 100,000 instructions"),
        ]
        if g.get("tracemalloc_growth_after_warmup"):
            notes.append("long run, tracemalloc, what grew after warm-up (newest frame first):\n  "
                         + "\n  ".join(g["tracemalloc_growth_after_warmup"]))
        if g["not_final"]:
            notes.append(f"long run: {g['not_final']} instructions not final at the end")
        if g["instructions"] < 1_000_000:
            notes.append(f"long run of {g['instructions']:,} instructions; the real one is --instructions 1000000 "
                         "(outside CI)")
    params = {"seconds": args.seconds, "banks": args.banks, "in_flight": args.in_flight, "instructions": count,
              "long_rate": args.long_rate, "batch": args.batch, "part": args.part, "settle": args.settle,
              "database": "sqlite" if args.database == "sqlite" else "postgresql"}
    return Report("memory", "memory: gateway RSS", tuple(rows), out, params, tuple(notes))
