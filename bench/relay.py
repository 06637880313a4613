"""``python -m bench relay``: the whole lifecycle on this machine, and the machine's limit beside it.

Processes, all on loopback:

- the gateway: ``python -m gateway.cli run -c CONF`` (= ``hpf-gateway run``)
  in a process of its own, so its CPU time and resident memory are read from
  ``/proc/PID/stat`` and ``/proc/PID/status`` apart from everything else;
- the demo's two simulated banks (B001 dials in, the gateway dials B002),
  one ``hpf-gateway simulate bank -c CONF --bank B`` process each, answering
  at once;
- the supervision ledger: ``hpf-gateway ledger -c CONF`` (the demo's, on
  SQLite), to which the gateway forwards a signed copy of every journal
  event; the run is over only once every copy has been delivered (the
  gateway's ledger backlog is 0), and the time that took after the last
  final state is reported.  ``--no-ledger`` leaves it out;
- the centre: :func:`gateway.simulate.centre.run_centre` in the bench process,
  submitting over HTTPS with the centre's certificate and following the
  results feed; it times each instruction from submission to its final
  state on the feed, overall and per bank (told which bank holds each debit
  account).  The banks that push their results (bdc, ISO 20022) are reported
  apart from the front-end banks the gateway polls for status (Bank of
  China's bocb2e, ICBC's NC): a polled bank's latency starts at the first
  status query, ``status_first_after`` after its receipt, the bank's
  configured cadence.

Modes: ``--rate R`` offers R instructions/s for ``--seconds`` (single POSTs,
or ``--batch N``); ``--saturate`` runs closed-loop: ``--concurrency C`` batch
requests of ``--batch N`` outstanding at all times, which finds the most
final/s the gateway sustains.

Then, in the same run and with the gateway idle, the raw relay
(:mod:`bench.rawrelay`) passes the same bdc frames through a bytes-only
mTLS relay process with the gateway's concurrency (one link per bank, the
bank window outstanding on each): ``ratio = instructions_per_s /
raw_relay_msgs_per_s`` says how much of the machine's relaying capacity the
gateway's real work (HTTPS intake, validation, durable commits, the
lifecycle, the results feed) leaves.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

from bench.common import (
    BenchError,
    Report,
    cpu_bound,
    free_port,
    run_reactor,
    scrape_metrics,
    self_cpu_seconds,
    start_bench_log,
    usable_cores,
    wait_until,
)
from bench.env import (
    Workspace,
    add_workspace_arguments,
    fresh_database,
    make_gateway_env,
    pg_backend_cpu_seconds,
    port_open,
    start_bank_sims,
    start_gateway,
    start_ledger,
    wait_links_up,
)

HELP = "full lifecycle: gateway + simulated banks + centre, with a bytes-only mTLS relay as the machine's limit"
DEFAULT_SECONDS = 20.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, default=200.0, help="offered instructions per second (default 200)")
    p.add_argument("--saturate", action="store_true",
                   help="closed loop: keep --concurrency batch requests outstanding to find the max final/s")
    p.add_argument("--batch", type=int, default=None,
                   help="instructions per batch POST (default: single POSTs; 100 with --saturate)")
    p.add_argument("--concurrency", type=int, default=8,
                   help="outstanding requests with --saturate (default 8)")
    p.add_argument("--raw-seconds", type=float, default=None,
                   help="how long to measure the raw relay (default: min(10, --seconds))")
    p.add_argument("--final-timeout", type=float, default=None,
                   help="seconds to wait for outcomes after the last submission (default: max(30, --seconds))")
    p.add_argument("--no-ledger", dest="ledger", action="store_false",
                   help="run without the supervision ledger (the gateway forwards no copies)")
    p.add_argument("--count-round-trips", action="store_true",
                   help="on PostgreSQL, run the gateway under bench/pgcount.py and report its requests to the "
                        "server per 1,000 instructions, by SQL verb (its CPU figures are then not comparable)")
    p.add_argument("--banks", default=None,
                   help="comma-separated bank ids: the centre pays only from their accounts (every bank still "
                        "runs and keeps its link), so the CPU per instruction is one protocol's (default: all)")
    add_workspace_arguments(p)


#: Adapters whose banks are reached through a front-end that pushes nothing: the gateway asks
#: each instruction's status on the bank's configured cadence (``status_first_after`` and on).
_FRONT_END_FALLBACK = ("bocb2e", "icbc", "ccb")


def _front_end_adapters() -> tuple[str, ...]:
    try:
        from gateway.config import FRONT_END_ADAPTERS
    except ImportError:  # an older tree measured as "before"
        return _FRONT_END_FALLBACK
    return tuple(FRONT_END_ADAPTERS)


def bank_kinds(config: Any) -> dict[str, dict[str, Any]]:
    """Per bank of ``config``: its adapter, whether the gateway polls it for status (a front-end
    bank) or the bank pushes its results, and the polling cadence the bank's config sets."""
    front_end = _front_end_adapters()
    kinds: dict[str, dict[str, Any]] = {}
    for bank_id, bank in sorted(config.banks.items()):
        status = getattr(bank, "status", None)
        polled = bank.adapter in front_end
        kinds[bank_id] = {"adapter": bank.adapter, "polled": polled,
                          "status_first_after_s": getattr(status, "first_after", None) if polled else None,
                          "status_interval_s": getattr(status, "interval", None) if polled else None}
    return kinds


def latency_by_bank(centre: Mapping[str, Any], kinds: Mapping[str, Mapping[str, Any]],
                    latency: Any) -> dict[str, Any]:
    """Submission-to-final latency per bank, per adapter, and for the banks that push their
    results apart from the front-end banks the gateway polls.

    ``centre`` is the centre's report as JSON (its ``by_bank``), ``kinds`` what
    :func:`bank_kinds` says of each bank, ``latency(banks)`` the centre report's
    :meth:`~gateway.simulate.centre_load.CentreReport.latency` (percentiles over the union of
    banks need every latency, not each bank's percentiles).  A polled bank's latency starts at
    its first status query, ``status_first_after`` after the bank's receipt: that is the bank's
    cadence, set in its config, not the gateway's speed.
    """
    by_bank = {bank: {**dict(kinds.get(bank, {})), **figures} for bank, figures in centre.get("by_bank", {}).items()}
    adapters: dict[str, list[str]] = {}
    for bank, kind in kinds.items():
        adapters.setdefault(kind["adapter"], []).append(bank)

    def group(banks: list[str]) -> dict[str, Any]:
        return {"banks": banks, "adapters": sorted({kinds[b]["adapter"] for b in banks}),
                **latency(banks).to_json()}

    push = [b for b, k in kinds.items() if not k["polled"]]
    polled = [b for b, k in kinds.items() if k["polled"]]
    cadence = sorted({k["status_first_after_s"] for b, k in kinds.items() if k["polled"]
                      and k["status_first_after_s"] is not None})
    return {"by_bank": by_bank,
            "by_adapter": {name: group(banks) for name, banks in sorted(adapters.items())},
            "push_banks": group(push),
            "polled_banks": dict(group(polled), status_first_after_s=cadence)}


def _sum(samples: dict[Any, float], name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def _latency_rows(split: Mapping[str, Any] | None) -> list[tuple[str, Any, str]]:
    if split is None:
        return []

    def ms(g: Mapping[str, Any]) -> str:
        return " / ".join("-" if g[k] is None else f"{g[k]:,.0f}" for k in ("p50_ms", "p95_ms", "p99_ms"))

    rows = [(f"  {bank} ({b.get('adapter', '?')}, {'polled' if b.get('polled') else 'pushes'})", ms(b),
             f"ms p50 / p95 / p99, {b['final']:,} final") for bank, b in split["by_bank"].items()]
    for key, label in (("push_banks", "banks that push results"), ("polled_banks", "front-end banks, polled")):
        g = split[key]
        if g["banks"]:
            cadence = (f"; first status query {', '.join(f'{c:g}' for c in g['status_first_after_s'])} s after "
                       "the receipt (the bank's configured cadence)" if g.get("status_first_after_s") else "")
            rows.append((f"  {label} ({', '.join(g['adapters'])})", ms(g),
                         f"ms p50 / p95 / p99, {g['final']:,} final{cadence}"))
    return rows


def run(args: argparse.Namespace) -> Report:
    from bench.rawrelay import bank_argv, encode_frames, relay_argv

    batch = args.batch if args.batch is not None else (100 if args.saturate else 0)
    if not 0 <= batch <= 1000:
        raise BenchError("--batch must be within 0..1000")
    if args.concurrency < 1 or args.rate <= 0:
        raise BenchError("--concurrency and --rate must be positive")
    raw_seconds = args.raw_seconds if args.raw_seconds is not None else min(10.0, args.seconds)
    final_timeout = args.final_timeout if args.final_timeout is not None else max(30.0, args.seconds)
    rate = 1e6 if args.saturate else args.rate  # closed loop: only the outstanding bound paces
    max_outstanding = args.concurrency if args.saturate else 64
    notes: list[str] = []
    with Workspace(args.dir, keep=args.keep) as ws:
        if ws.keep:
            notes.append(f"work directory kept: {ws.directory}")
        with fresh_database(args.database, ws.sub("gateway")) as database:
            try:
                env = make_gateway_env(ws.sub("gateway"), database=database, ledger=args.ledger)
                # Everything starts at once (banks redial until the gateway listens): a cold
                # Python start costs about a CPU second each, and waiting in turn adds them up.
                frames = encode_frames()
                frames_path = ws.directory / "raw-frames.json"
                frames.save(frames_path)
                bank_port, relay_port = free_port(), free_port()
                raw_bank = ws.children.spawn("raw-bank", bank_argv(port=bank_port, keys=env.keys, frames=frames_path),
                                             log=ws.directory / "raw-bank.log")
                raw_relay = ws.children.spawn("raw-relay", relay_argv(port=relay_port, upstream=bank_port,
                                                                      keys=env.keys),
                                              log=ws.directory / "raw-relay.log")
                banks = start_bank_sims(ws.children, env, env.banks)
                ledger = start_ledger(ws.children, env) if args.ledger else None
                counts_path = ws.directory / "pg-requests.json"
                counting = args.count_round_trips and database.startswith("postgresql")
                gateway = start_gateway(ws.children, env,
                                        wrapper=("bench.pgcount", str(counts_path), "--") if counting else ())
                wait_links_up(env, env.banks, [gateway, *banks])
                wait_until(lambda: port_open(bank_port) and port_open(relay_port), timeout=60,
                           what="the raw relay's ports", children=[raw_bank, raw_relay])
                windows = [env.config.banks[b].window for b in env.banks]
                log_file = start_bench_log(ws.directory / "bench.log")

                async def measure(reactor: Any) -> dict[str, Any]:
                    from twisted.internet.task import deferLater

                    from bench import rawrelay
                    from gateway.simulate.centre import run_centre

                    # Which bank holds each debit account, so the centre times each bank apart.
                    per_bank = ({"account_banks": {n: a.bank for n, a in env.config.accounts.items()}}
                                if "account_banks" in inspect.signature(run_centre).parameters else {})
                    cpu0, bench0, bank0 = gateway.cpu_seconds(), self_cpu_seconds(), [b.cpu_seconds() for b in banks]
                    ledger0 = ledger.cpu_seconds() if ledger else 0.0
                    wait0 = gateway.runqueue_wait_seconds()
                    t0 = time.monotonic()
                    options = env.centre_options()
                    if args.banks:
                        only = set(args.banks.split(","))
                        unknown = only - set(env.banks)
                        if unknown:
                            raise BenchError(f"--banks: no bank {', '.join(sorted(unknown))} in the config "
                                             f"({', '.join(env.banks)})")
                        options["debit_accounts"] = [n for n in options["debit_accounts"]
                                                     if env.config.accounts[n].bank in only]
                    report = await run_centre(
                        reactor, base_url=env.api_url, rate=rate, duration=args.seconds, batch=batch, seed=1,
                        id_prefix=f"R{int(time.time()) % 10**8:08d}-", final_timeout=final_timeout,
                        max_outstanding=max_outstanding, **options, **per_bank)
                    wall = time.monotonic() - t0
                    # Every copy must reach the ledger before the run counts as done.
                    drain_s, backlog = None, None
                    if ledger is not None:
                        t_final = time.monotonic()
                        while time.monotonic() - t_final < final_timeout:
                            backlog = _sum(scrape_metrics(env.ops_port), "hpf_gateway_ledger_backlog")
                            if backlog == 0:
                                drain_s = time.monotonic() - t_final
                                break
                            await deferLater(reactor, 0.25)
                    ledger_cpu = (ledger.cpu_seconds() - ledger0) if ledger else None
                    cpu1, bench1 = gateway.cpu_seconds(), self_cpu_seconds()
                    wait = gateway.runqueue_wait_seconds() - wait0
                    bank1 = [b.cpu_seconds() for b in banks]
                    rss_kb, hwm_kb = gateway.memory_kb()
                    server_cpu = pg_backend_cpu_seconds(database)
                    if counting:
                        os.kill(gateway.pid, signal.SIGUSR2)
                        wait_until(counts_path.exists, timeout=30, what="the round-trip counts", children=[gateway])
                    samples = scrape_metrics(env.ops_port)
                    raw = await rawrelay.measure(reactor, keys=env.keys, frames=frames, port=relay_port,
                                                 links=len(env.banks), window=max(windows), seconds=raw_seconds,
                                                 relay_pid=raw_relay.pid, bank_pid=raw_bank.pid)
                    # The ledger's alerts after the raw relay's run: its deadline rules (10 s in the
                    # demo config) judge the last copies up to that long after they arrived.
                    ledger_samples = scrape_metrics(env.ledger_ops_port) if ledger is not None else {}
                    return {"report": report, "gateway_cpu_s": cpu1 - cpu0, "bench_cpu_s": bench1 - bench0,
                            "banks_cpu_s": sum(bank1) - sum(bank0), "wall_s": wall, "wait_s": wait,
                            "rss_kb": rss_kb, "ledger_drain_s": drain_s, "ledger_backlog": backlog,
                            "ledger_cpu_s": ledger_cpu, "server_cpu_s": server_cpu,
                            "pg_requests": json.loads(counts_path.read_text(encoding="utf-8")) if counting else None,
                            "hwm_kb": hwm_kb, "samples": samples, "ledger_samples": ledger_samples,
                            "raw": raw, "config": env.config}

                hard = args.seconds + final_timeout + raw_seconds + 120
                try:
                    out = run_reactor(measure, timeout=hard)
                finally:
                    log_file.close()
            finally:
                ws.children.stop_all()

    report = out["report"]
    raw = out["raw"]
    final = report.final
    ips = report.final_per_s
    cpu_per_1000 = out["gateway_cpu_s"] * 1000.0 / final if final else None
    ratio = ips / raw.msgs_per_s if raw.msgs_per_s else None
    samples = out["samples"]
    resends = _sum(samples, "hpf_gateway_bank_resends_total")
    in_doubt = _sum(samples, "hpf_gateway_in_doubt_total")
    submitted_per_s = report.submitted / args.seconds
    if not args.saturate and submitted_per_s < 0.95 * args.rate:
        notes.append(f"the offered rate was not reached: {submitted_per_s:.0f}/s submitted of {args.rate:g}/s "
                     f"(at most {max_outstanding} requests outstanding: the gateway answered more slowly)")
    if not args.saturate:
        notes.append("with --rate the ratio is the offered rate over the raw relay's limit; --saturate gives the "
                     "gateway's own limit")
    if args.saturate:
        notes.append("in --saturate, intake outruns the relay: a backlog builds while submitting and drains "
                     "after, so the latencies are queueing; final/s is the relay's sustained rate")
    if report.not_final or report.refused or report.duplicate_finals:
        notes.append(f"not every instruction completed cleanly: {report.not_final} not final, "
                     f"{report.refused} refused, {report.duplicate_finals} duplicate finals")
    copies = _sum(samples, "hpf_gateway_ledger_copies_total")
    # What the ledger's matching made of the run, by the time the copies had drained.
    alerts: dict[str, int] = {}
    for (name, labels), value in out["ledger_samples"].items():
        if name == "hpf_ledger_alerts_raised_total" and value:
            rule = dict(labels)["rule"]
            alerts[rule] = alerts.get(rule, 0) + int(value)
    # The whole lifecycle, copies included: finals over (first submission -> last copy delivered).
    with_copies = (final / (final / ips + out["ledger_drain_s"])
                   if args.ledger and ips and out["ledger_drain_s"] is not None else None)
    if args.ledger and out["ledger_drain_s"] is None:
        notes.append(f"copies to the ledger did not drain within {final_timeout:g} s "
                     f"(backlog {out['ledger_backlog']})")
    if resends:
        notes.append(f"the gateway resent {resends:.0f} instructions (receipt timeouts under load)")
    mode = (f"closed loop, {args.concurrency} outstanding batch requests of {batch}" if args.saturate
            else f"{args.rate:g}/s offered, {'batch ' + str(batch) if batch else 'single POSTs'}")
    figures = {
        "mode": "saturate" if args.saturate else "rate",
        "offered_rate": None if args.saturate else args.rate,
        "batch": batch,
        "concurrency": max_outstanding,
        "database": "postgresql" if str(database).startswith("postgresql") else "sqlite (WAL, synchronous=FULL)",
        "submitted_per_s": round(submitted_per_s, 2),
        "instructions_per_s": round(ips, 2),
        "p50_ms": report.p50_ms, "p95_ms": report.p95_ms, "p99_ms": report.p99_ms,
        "gateway_cpu_s_per_1000": None if cpu_per_1000 is None else round(cpu_per_1000, 3),
        "gateway_cpu_s": round(out["gateway_cpu_s"], 2),
        "gateway_cpu_share": round(out["gateway_cpu_s"] / out["wall_s"], 3) if out["wall_s"] else None,
        "gateway_runqueue_wait_s": round(out["wait_s"], 2),
        "gateway_peak_rss_mb": round(out["hwm_kb"] / 1024, 1),
        "gateway_rss_end_mb": round(out["rss_kb"] / 1024, 1),
        "banks_cpu_s": round(out["banks_cpu_s"], 2),
        "ledger": args.ledger,
        "ledger_copies": int(copies),
        "ledger_alerts_by_rule": dict(sorted(alerts.items())) if args.ledger else None,
        "instructions_per_s_copies_delivered": None if with_copies is None else round(with_copies, 2),
        "ledger_drain_after_last_final_s": (None if out["ledger_drain_s"] is None
                                            else round(out["ledger_drain_s"], 2)),
        "ledger_cpu_s": None if out["ledger_cpu_s"] is None else round(out["ledger_cpu_s"], 2),
        "bench_cpu_s": round(out["bench_cpu_s"], 2),
        "resends": int(resends), "in_doubt": int(in_doubt),
        "raw_relay_msgs_per_s": round(raw.msgs_per_s, 1),
        "raw_relay": dict(raw.to_json(), instruction_frame_bytes=len(frames.instruction),
                          result_frame_bytes=len(frames.result)),
        "ratio": None if ratio is None else float(f"{ratio:.4g}"),  # 4 significant figures, however small
        "centre": report.to_json(),
    }
    split = None
    if report.to_json().get("by_bank"):
        split = latency_by_bank(figures["centre"], bank_kinds(out["config"]), report.latency)
        figures["latency_by_bank"] = split["by_bank"]
        figures["latency_by_adapter"] = split["by_adapter"]
        figures["latency_push_banks"] = split["push_banks"]
        figures["latency_polled_banks"] = split["polled_banks"]
    # Where the two cores went: every process of the run, per instruction that became final.
    per = (lambda cpu: None if cpu is None or not final else round(cpu * 1000.0 / final, 2))
    by_process = figures["cpu_s_per_1000_by_process"] = {
        "gateway": per(out["gateway_cpu_s"]), "banks": per(out["banks_cpu_s"]),
        "ledger": per(out["ledger_cpu_s"]), "centre_bench_process": per(out["bench_cpu_s"])}
    if out["server_cpu_s"] is not None:
        # PostgreSQL's backends for the run's database, over their whole life (an upper bound).
        by_process["database_server"] = per(out["server_cpu_s"])
    if out["pg_requests"] and final:
        # The gateway's requests to the server over its whole life (start-up included), per final.
        figures["pg_requests_per_1000"] = {k: round(v * 1000.0 / final, 1)
                                           for k, v in out["pg_requests"]["requests"].items()}
        notes.append("requests to PostgreSQL per 1,000 instructions (round trips): "
                     f"{sum(figures['pg_requests_per_1000'].values()):,.0f} = "
                     + ", ".join(f"{k} {v:g}" for k, v in figures["pg_requests_per_1000"].items()))
    budget = ", ".join(f"{name.split('_')[0]} {'-' if cpu is None else cpu}" for name, cpu in by_process.items())
    bound = figures["cpu_bound_instructions_per_s"] = cpu_bound(by_process.values())
    figures["ledger_cpu_s_per_1000_copies"] = (round(out["ledger_cpu_s"] * 1000.0 / copies, 3)
                                               if args.ledger and copies and out["ledger_cpu_s"] else None)
    rows = (
        ("mode", mode, ""),
        ("database", figures["database"], ""),
        ("submitted", submitted_per_s, f"/s over {args.seconds:g} s"),
        ("instructions final", final, f"of {report.submitted} submitted"),
        ("instructions/s (final)", ips, "/s"),
        ("submit to final p50", report.p50_ms, "ms"),
        ("submit to final p95", report.p95_ms, "ms"),
        ("submit to final p99", report.p99_ms, "ms"),
        *_latency_rows(split),
        ("gateway CPU per 1,000 instructions", cpu_per_1000, "CPU s"),
        ("gateway CPU share during the run", figures["gateway_cpu_share"], "cores"),
        ("gateway waiting for a CPU (run queue)", figures["gateway_runqueue_wait_s"],
         f"thread-s in {out['wall_s']:.1f} s (ready, but the CPUs were busy)"),
        ("gateway peak RSS (VmHWM)", figures["gateway_peak_rss_mb"], "MB"),
        ("CPU per 1,000 instructions, by process", budget, "CPU s (run and drain)"),
        ("the most these costs allow", bound, f"/s on {usable_cores()} cores, every process at full use"),
        ("not final / refused / duplicate finals",
         f"{report.not_final} / {report.refused} / {report.duplicate_finals}", ""),
        ("copies delivered to the ledger", int(copies) if args.ledger else "no ledger",
         "" if not args.ledger else (f"all within {out['ledger_drain_s']:.1f} s of the last final"
                                     if out["ledger_drain_s"] is not None else "NOT all delivered")),
        ("instructions/s, copies delivered too", with_copies if args.ledger else "no ledger", "/s"),
        ("alerts the ledger raised", (", ".join(f"{rule} {n}" for rule, n in sorted(alerts.items())) or "none")
         if args.ledger else "no ledger",
         "" if not args.ledger else ("by rule, after the raw relay's run" if out["ledger_drain_s"] is not None
                                     else "by rule, after the raw relay's run; not every copy delivered")),
        ("raw mTLS relay (same frames)", raw.msgs_per_s, f"msgs/s ({raw.links} links x {raw.window} outstanding)"),
        ("raw relay CPU per 1,000 msgs (relay proc)", raw.relay_cpu_s_per_1000, "CPU s"),
        ("ratio gateway / raw relay", ratio, ""),
    )
    params = {"seconds": args.seconds, "rate": args.rate, "saturate": args.saturate, "batch": batch,
              "banks": args.banks,
              "concurrency": args.concurrency, "raw_seconds": raw_seconds, "final_timeout": final_timeout,
              "database": "sqlite" if args.database == "sqlite" else "postgresql", "ledger": args.ledger}
    return Report("relay", "relay: the full lifecycle on loopback", rows, figures, params, tuple(notes))
