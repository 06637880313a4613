"""``python -m bench intake``: durable acceptance only — batch POSTs, group commit, no bank.

The gateway runs in its own process with the demo's banks configured and
none connected (no simulator runs), so every instruction stops at
``received``: what is measured is validation, authorisation, policy and the
durable commit (promise G1: the 200 is sent only after the commit), shared
by concurrent requests through the group-commit writer.

``--clients N`` loops in the bench process each keep one
``POST /v1/instructions/batch`` of ``--batch`` fresh instructions
outstanding, as fast as the answers come, for ``--seconds`` after a short
warm-up.  Reported per database: instructions accepted per second (items
answered 202) and the latency of the POST (sent to the whole answer read).
``--database`` may be given more than once; each runs on a fresh gateway
(PostgreSQL: in a database created for the run and dropped after).

``--nodes N`` (PostgreSQL only) runs N gateway nodes on the one database, as
a deployment with several nodes does (each its own process, instance name
and ports: :func:`bench.env.another_node`), each with its own ``--clients``;
the figures are the nodes' sum, and each node's CPU is reported.  On one
machine the nodes share its cores with the server and the clients, so this
says what a second process buys here, not what a second machine would.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from io import BytesIO
from typing import Any

from bench.common import (
    BenchError,
    Report,
    cpu_bound,
    latency_summary,
    run_reactor,
    self_cpu_seconds,
    start_bench_log,
    usable_cores,
)
from bench.env import (
    Workspace,
    another_node,
    fresh_database,
    make_gateway_env,
    pg_backend_cpu_seconds,
    start_gateway,
)

HELP = "durable acceptance only: concurrent batch POSTs with no bank connected, per database"
DEFAULT_SECONDS = 15.0

_AMOUNT_FEN = (100, 500_000)  # 1.00 .. 5000.00: below the demo's large_amount, so nothing is refused by policy


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    p.add_argument("--batch", type=int, default=100, help="instructions per batch POST (default 100)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring (default 1)")
    p.add_argument("--database", action="append", default=None,
                   help="'sqlite' (WAL, synchronous=FULL) or a PostgreSQL server URL (a fresh database is "
                        "created there and dropped after); repeat to measure several (default: sqlite)")
    p.add_argument("--count-round-trips", action="store_true",
                   help="on PostgreSQL, run the gateway under bench/pgcount.py and report its requests to the "
                        "server per 1,000 instructions, by SQL verb (its CPU figures are then not comparable)")
    p.add_argument("--nodes", type=int, default=1,
                   help="gateway nodes sharing each PostgreSQL database, each with its own --clients (default 1; "
                        "SQLite runs one)")
    p.add_argument("--dir", help="work here and keep it (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")


async def offer(reactor: Any, env: Any, *, clients: int, batch: int, seconds: float,
                warmup: float, node: int = 1) -> dict[str, Any]:
    """Run ``clients`` closed-loop batch posters against ``env``'s gateway; the figures of the window."""
    from twisted.internet.defer import Deferred, gatherResults
    from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
    from twisted.web.http_headers import Headers

    from gateway.simulate.centre import GatewayTLSPolicy
    from gateway.simulate.centre_load import make_instruction

    opts = env.centre_options()
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = clients
    agent = Agent(reactor, contextFactory=GatewayTLSPolicy(opts["certificate"], opts["private_key"], opts["ca"]),
                  pool=pool, connectTimeout=10)
    url = (env.api_url + "/v1/instructions/batch").encode("ascii")
    rng = random.Random(node)
    prefix = f"I{int(time.time()) % 10**8:08d}-{node}-"  # nodes of one run must not share ids
    state = {"n": 0, "stop": False}
    latencies: list[float] = []
    items: Counter[int] = Counter()
    http: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    t_start = time.monotonic() + warmup
    t_end = t_start + seconds

    def bodies() -> bytes:
        first = state["n"] + 1
        state["n"] += batch
        docs = [make_instruction(n, id_prefix=prefix, rng=rng, debit_accounts=opts["debit_accounts"],
                                 counterparties=opts["counterparties"], amount_fen=_AMOUNT_FEN)
                for n in range(first, first + batch)]
        return json.dumps({"instructions": docs}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    async def client() -> None:
        headers = Headers({b"content-type": [b"application/json"], b"accept": [b"application/json"]})
        while not state["stop"]:
            payload = bodies()
            t0 = time.monotonic()
            try:
                d = agent.request(b"POST", url, headers, FileBodyProducer(BytesIO(payload)))
                d.addTimeout(60, reactor)
                response = await d
                data = await readBody(response)
            except Exception as e:  # noqa: BLE001 (counted, not raised: a refused connection is a figure too)
                errors[type(e).__name__] += 1
                continue
            t1 = time.monotonic()
            if t1 > t_end:
                state["stop"] = True
            if not (t_start <= t1 <= t_end):
                continue
            latencies.append(t1 - t0)
            http[response.code] += 1
            if response.code == 200:
                for item in json.loads(data).get("results", []):
                    items[int(item.get("status", 0))] += 1

    cpu0 = self_cpu_seconds()
    await gatherResults([Deferred.fromCoroutine(client()) for _ in range(clients)], consumeErrors=True)
    await pool.closeCachedConnections()
    window = seconds
    return {"accepted": items.get(202, 0), "items_by_status": {str(k): v for k, v in sorted(items.items())},
            "http_by_status": {str(k): v for k, v in sorted(http.items())},
            "errors": dict(errors), "window_s": window, "latencies": latencies,
            "bench_cpu_s": self_cpu_seconds() - cpu0}


def _merged(outs: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of several nodes' offers over the same window, as one."""
    if len(outs) == 1:
        return outs[0]
    total: dict[str, Any] = {"accepted": 0, "latencies": [], "window_s": outs[0]["window_s"], "bench_cpu_s": 0.0}
    for key in ("items_by_status", "http_by_status", "errors"):
        summed: Counter[str] = Counter()
        for o in outs:
            summed.update(o[key])
        total[key] = dict(sorted(summed.items()))
    for o in outs:
        total["accepted"] += o["accepted"]
        total["latencies"] += o["latencies"]
        # One process plays every node's clients over the same window: its CPU, not the sum.
        total["bench_cpu_s"] = max(total["bench_cpu_s"], o["bench_cpu_s"])
    return total


def run(args: argparse.Namespace) -> Report:
    if args.clients < 1 or not 1 <= args.batch <= 1000:
        raise BenchError("--clients must be positive and --batch within 1..1000")
    if args.nodes < 1:
        raise BenchError("--nodes must be positive")
    databases = args.database or ["sqlite"]
    results: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    with Workspace(args.dir, keep=args.keep) as ws:
        if ws.keep:
            notes.append(f"work directory kept: {ws.directory}")
        log_file = start_bench_log(ws.directory / "bench.log")

        async def main(reactor: Any) -> None:
            from twisted.internet.defer import Deferred, gatherResults

            for i, spec in enumerate(databases):
                label = "sqlite" if spec == "sqlite" else "postgresql"
                if label in results:
                    label = f"{label}-{i + 1}"
                part = ws.sub(f"gateway-{i + 1}-{label}")
                # Setting up blocks the reactor for a few seconds; nothing else runs on it meanwhile.
                with fresh_database(spec, part) as database:
                    try:
                        # No bank is connected, so everything accepted stays queued: lift the
                        # per-bank queue limit, or backpressure (503) would end the measurement.
                        env = make_gateway_env(part, database=database,
                                               overrides={"limits": {"max_queue_per_bank": 10_000_000}})
                        counts_path = part / "pg-requests.json"
                        counting = args.count_round_trips and label.startswith("postgresql")
                        nodes = args.nodes if label.startswith("postgresql") else 1
                        envs = [env] + [another_node(env, f"node-{k}") for k in range(2, nodes + 1)]
                        gateways = [start_gateway(ws.children, e, name="gateway" if k == 1 else f"gateway-{k}",
                                                  wrapper=("bench.pgcount", str(counts_path), "--")
                                                  if counting and k == 1 else ())
                                    for k, e in enumerate(envs, start=1)]
                        cpu0 = [g.cpu_seconds() for g in gateways]
                        wait0, t0 = [g.runqueue_wait_seconds() for g in gateways], time.monotonic()
                        outs = await gatherResults([Deferred.fromCoroutine(
                            offer(reactor, e, clients=args.clients, batch=args.batch, seconds=args.seconds,
                                  warmup=args.warmup, node=k)) for k, e in enumerate(envs, start=1)])
                        cpus = [g.cpu_seconds() - c for g, c in zip(gateways, cpu0)]
                        cpu = sum(cpus)
                        wait = sum(g.runqueue_wait_seconds() - w for g, w in zip(gateways, wait0))
                        wall = time.monotonic() - t0
                        hwm_kb = max(g.memory_kb()[1] for g in gateways)
                        server_cpu = pg_backend_cpu_seconds(database)
                    finally:
                        ws.children.stop_all()
                    counts = json.loads(counts_path.read_text(encoding="utf-8")) if counting \
                        and counts_path.exists() else None
                out = _merged(outs)
                accepted = out["accepted"]
                lat = latency_summary(out["latencies"])
                results[label] = {
                    "database": "PostgreSQL" if label.startswith("postgresql") else "SQLite (WAL, synchronous=FULL)",
                    "instructions_per_s": round(accepted / out["window_s"], 1),
                    "accepted": accepted,
                    "posts": lat["count"],
                    "post_p50_ms": lat["p50_ms"], "post_p99_ms": lat["p99_ms"], "post_max_ms": lat["max_ms"],
                    "items_by_status": out["items_by_status"], "http_by_status": out["http_by_status"],
                    "errors": out["errors"],
                    # CPU over warm-up + window + drain, per instruction accepted in the window: an upper bound.
                    "gateway_cpu_s_per_1000": round(cpu * 1000.0 / accepted, 3) if accepted else None,
                    "gateway_cpu_share": round(cpu / wall, 3) if wall else None,
                    "gateway_runqueue_wait_s": round(wait, 2), "wall_s": round(wall, 2),
                    "nodes": nodes,
                    "node_cpu_s_per_1000": [round(c * 1000.0 / accepted, 3) if accepted else None for c in cpus],
                    "node_accepted": [o["accepted"] for o in outs],
                    "gateway_peak_rss_mb": round(hwm_kb / 1024, 1),
                    "bench_cpu_s": round(out["bench_cpu_s"], 2),
                    "database_server_cpu_s_per_1000": round(server_cpu * 1000.0 / accepted, 3)
                    if accepted and server_cpu is not None else None,
                    # Requests over the gateway's whole life (start-up included), per instruction accepted.
                    "pg_requests_per_1000": {k: round(v * 1000.0 / accepted, 1) for k, v in counts["requests"].items()}
                    if counts and accepted else None,
                    "clients_cpu_s_per_1000": round(out["bench_cpu_s"] * 1000.0 / accepted, 3) if accepted else None,
                }
                r = results[label]
                r["cpu_bound_instructions_per_s"] = cpu_bound([r["gateway_cpu_s_per_1000"],
                                                               r["clients_cpu_s_per_1000"],
                                                               r["database_server_cpu_s_per_1000"]])

        try:
            run_reactor(main, timeout=len(databases) * (args.seconds + args.warmup + 240))
        finally:
            log_file.close()

    rows: list[tuple[str, Any, str]] = [("clients x batch", f"{args.clients} x {args.batch}", "instructions/POST")]
    for label, r in results.items():
        rows += [
            (f"{label}: accepted", r["instructions_per_s"], "instructions/s"),
            (f"{label}: POST latency p50", r["post_p50_ms"], "ms"),
            (f"{label}: POST latency p99", r["post_p99_ms"], "ms"),
            (f"{label}: gateway CPU per 1,000", r["gateway_cpu_s_per_1000"], "CPU s (upper bound)"),
            (f"{label}: the clients' CPU per 1,000", r["clients_cpu_s_per_1000"], "CPU s (upper bound)"),
            (f"{label}: the database server's CPU per 1,000", r["database_server_cpu_s_per_1000"],
             "CPU s (upper bound: its backends' whole life)"),
            (f"{label}: the most these costs allow", r["cpu_bound_instructions_per_s"],
             f"/s on {usable_cores()} cores, gateway, clients and server at full use"),
            (f"{label}: gateway CPU share", r["gateway_cpu_share"], "cores" + (
                f", {r['nodes']} nodes: CPU per 1,000 " + " / ".join(f"{c:g}" for c in r["node_cpu_s_per_1000"])
                + ", accepted " + " / ".join(str(a) for a in r["node_accepted"]) if r["nodes"] > 1 else "")),
            (f"{label}: gateway waiting for a CPU", r["gateway_runqueue_wait_s"], f"thread-s in {r['wall_s']:g} s"),
            (f"{label}: gateway peak RSS", r["gateway_peak_rss_mb"], "MB"),
        ]
        if r["pg_requests_per_1000"]:
            total = sum(r["pg_requests_per_1000"].values())
            rows.append((f"{label}: requests to the server per 1,000", round(total, 1),
                         ", ".join(f"{k} {v:g}" for k, v in r["pg_requests_per_1000"].items())))
        refused = {k: v for k, v in r["items_by_status"].items() if k != "202"}
        if refused or r["errors"]:
            notes.append(f"{label}: items not accepted {refused}, request errors {r['errors']}")
    figures = {"clients": args.clients, "batch": args.batch, "databases": results}
    params = {"seconds": args.seconds, "clients": args.clients, "batch": args.batch, "warmup": args.warmup,
              "nodes": args.nodes,
              "databases": ["sqlite" if d == "sqlite" else "postgresql" for d in databases]}
    return Report("intake", "intake: durable acceptance (batch API, group commit, no bank)", tuple(rows),
                  figures, params, tuple(notes))
