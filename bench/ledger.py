"""``python -m bench ledger``: the supervision ledger's ingest + match throughput and match lag.

The ledger daemon (:func:`gateway.ledger.service.makeLedgerService`) runs in a
process of its own (:mod:`bench.ledgerhost`, which also records the exact
match lag of every copy).  The bench process plays a gateway's forwarder:
it generates the journal of realistic instruction lifecycles, turns each
event into a copy with :func:`gateway.copies.copy_of`, signs each POST's copies
as one batch with :class:`gateway.signing.Signer` (Ed25519, one signature per
batch, as the forwarder signs) and POSTs batches over mTLS with
the gateway's certificate, one batch in flight at a time, in journal order —
as ``LedgerForwarder`` does (a full batch is followed at once, a partial one
after 50 ms).

One instruction is six events on one of the banks (one bank per installed
adapter that carries pushed notices, in turn; the poll-only front-end protocols do not): ``received`` (the canonical instruction), ``sent``,
``accepted`` (with the bank's Receipt frame), ``succeeded`` (with its Result
frame), a ``bank.movement`` (the debit, with the bank's notice frame) and a
``bank.balance`` (the new balance, with the bank's frame).  The bank frames
are real, encoded by that bank's adapter, so the ledger's checks
(signature, shape, the bank's own bytes agreeing with the copy) all run.
Amounts, counterparties and balances are consistent, so a correct matcher
raises no alert; the number it raised is reported.

Phases, in this order:

1. **max** — copies for ``--burst`` instructions generated and signed
   beforehand, then posted back to back for at most ``--seconds``: the most
   events/s the ledger ingests and matches (its capacity here).
2. **half capacity** — only when ``--rate`` is beyond the capacity: half the
   capacity offered for ``--seconds``, so that the match lag is measured
   where it is a latency rather than a growing queue.
3. **offered** — ``--rate`` instructions/s (default 1,000, i.e. 6,000
   events/s) for ``--seconds``, generated and signed as time passes
   (``created_us`` is the moment of generation): events/s stored, the match
   lag (journal time at the "gateway" to matched at the ledger) p50/p99,
   and the backlog when offering stopped.  Last, because an unsent backlog
   is dropped (as whole instructions, balances rolled back).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import random
import signal
import time
from collections import deque
from dataclasses import asdict, dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from bench.common import (
    BenchError,
    Report,
    free_port,
    http_get,
    latency_summary,
    memory_parts_kb,
    python_argv,
    run_reactor,
    scrape_metrics,
    self_cpu_seconds,
    start_bench_log,
    wait_until,
)
from bench.env import CENTRE, Workspace, add_workspace_arguments, fresh_database
from bench.tracehost import diff_table, top_table

HELP = "ledger ingest + match: events/s and match lag p50/p99 at an offered instruction rate, and max events/s"
DEFAULT_SECONDS = 15.0

EVENTS_PER_INSTRUCTION = 6
_GATEWAY = "main"
_GATEWAY_NODE = "D00000"
_TZ = _dt.timezone(_dt.timedelta(hours=8))
_COUNTERPARTIES = (
    ("6200009999000011", "张三", "105100000017"),
    ("6222008888000022", "示例房地产开发有限公司", "102100000030"),
    ("6217001234567890", "李四", "103100000026"),
)
_OPENING_BALANCE = 100_000_000_000  # fen: enough that the run never overdraws


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, default=1000.0, help="offered instructions per second (default 1000)")
    p.add_argument("--batch", type=int, default=500, help="copies per POST, as the forwarder's default (500)")
    p.add_argument("--burst", type=int, default=None,
                   help="instructions pre-signed for the max phase (default: 300 x --seconds)")
    p.add_argument("--phase", choices=("both", "rate", "max"), default="both")
    p.add_argument("--check-processes", type=int, default=None,
                   help="the ledger's check_processes (default: the ledger's own default, 2; 0 checks on a thread)")
    p.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                   help="run the ledger under tracemalloc with FRAMES frames (bench/tracehost.py) and print "
                        "what it holds at the end of each phase; slows it down (default 0: off)")
    add_workspace_arguments(p)


# -- the journal of a gateway ----------------------------------------------------------------


@dataclass
class _Bank:
    bank_id: str
    adapter_name: str
    adapter: Any
    node: str
    account: str
    account_name: str
    balance: int


def _banks() -> list[_Bank]:
    from adapters.base import iter_adapter_names, load_adapter

    banks = []
    names = [n for n in sorted(iter_adapter_names()) if _carries_lifecycle(load_adapter(n))]
    for i, name in enumerate(names, start=1):
        banks.append(_Bank(f"B{i:03d}", name, load_adapter(name), f"{100000 + i * 1000:06d}",
                           f"62000011112222{i:02d}", f"示例中心专户{i}", _OPENING_BALANCE))
    if not banks:
        raise BenchError("no adapter is installed: the ledger's copies need bank frames")
    return banks


def _carries_lifecycle(adapter: Any) -> bool:
    """Whether ``adapter`` carries the messages a journal lifecycle holds: a pushed movement
    notice, a result with a code, a balance with a status and a time.  Poll-only front-end
    protocols (bocb2e, icbc, ccb) carry none of the first and refuse the others' extras."""
    from adapters import base
    from adapters.base import AdapterError

    day = _dt.date(2026, 11, 27)
    entry = base.Entry("6200001111222201", "H1", -100, day, _dt.time(10, 0), "6200009999000011", "张三",
                       "105100000017", 0, "I1", "R1")
    probes = (base.Result("10500026112700000010", "52240261127000000001", "52240261127000000001", True,
                          "H1", "S1", "0000", "交易成功"),
              base.Movement("10500026112700000012", (entry,)),
              base.Balance("10500026112700000013", "26112700000000000006", "6200001111222201", 0, 0, 0,
                           "示例", "0", _dt.datetime(2026, 11, 27, 10, 30, 15)))
    try:
        for probe in probes:
            adapter.encode(probe, sender="105000", receiver=_GATEWAY_NODE)
    except AdapterError:
        return False
    return True


class Journal:
    """Generates a gateway's journal of instruction lifecycles as copies, and signs them per batch.

    Rows are built as ``gateway.store`` would journal them (payload JSON
    compact and sorted, ``created_us`` of the commit, the chain hash of
    :func:`gateway.store.db.chain_hash`); copies come from
    :func:`gateway.copies.copy_of`, and :meth:`body` signs a POST's copies as
    one batch with :meth:`gateway.signing.Signer.sign_batch_json`, as the forwarder does.
    """

    def __init__(self, signing_key: Path, banks: list[_Bank], *, seed: int = 1) -> None:
        from gateway.signing import Signer

        self.signer = Signer(signing_key)
        self.banks = banks
        self.rng = random.Random(seed)
        self.seq = 0
        self.instructions = 0
        self._prev_hash = "0" * 64
        self._id_prefix = os.urandom(3).hex()
        self._counter = 0
        self._prefix = f"K{int(time.time()) % 10**8:08d}-"

    def _event_id(self, at_us: int) -> str:
        self._counter = (self._counter + 1) & 0xFFFF
        return f"{at_us:014x}{self._id_prefix}{self._counter:04x}"

    def _copy(self, bank: _Bank, kind: str, payload: dict[str, Any], *, instruction_id: str | None,
              state: str | None, raw: bytes | None) -> dict[str, Any]:
        from gateway.copies import copy_of
        from gateway.store.db import chain_hash

        at_us = time.time_ns() // 1000
        self.seq += 1
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
        row = {"seq": self.seq, "event_id": self._event_id(at_us), "kind": kind, "centre_id": CENTRE,
               "instruction_id": instruction_id, "bank_id": bank.bank_id, "account": bank.account, "state": state,
               "created_us": at_us, "payload": text, "raw": raw}
        row["hash"] = self._prev_hash = chain_hash(self._prev_hash, row)
        return copy_of(row, _GATEWAY, bank.adapter_name)

    def body(self, units: list[Lifecycle]) -> bytes:
        """The request body of one POST: the copies of ``units`` signed as one batch."""
        copies = ",".join(self.signer.sign_batch_json([dict(c) for unit in units for c in unit.copies]))
        return f'{{"copies":[{copies}]}}'.encode()

    def lifecycle(self) -> Lifecycle:
        """The six copies (unsigned) of the next instruction's life."""
        from adapters import base
        from gateway.model import parse_instruction
        from gateway.simulate.centre_load import make_instruction

        self.instructions += 1
        n = self.instructions
        bank = self.banks[n % len(self.banks)]
        now = _dt.datetime.now(_TZ)
        day = now.date()
        body = make_instruction(n, id_prefix=self._prefix, rng=self.rng, debit_accounts=(bank.account,),
                                counterparties=_COUNTERPARTIES, amount_fen=(100, 500_000))
        instruction = parse_instruction(CENTRE, body, ceiling_fen=5_000_000_000, today=day)
        iid = instruction.instruction_id
        ref = f"{CENTRE[-5:]}{day:%y%m%d}{n % 10**9:09d}"
        serial = f"{bank.node}{day:%y%m%d}{n % 10**8:08d}"
        host = f"H{bank.bank_id[-1]}{day:%y%m%d}{n % 10**9:09d}"
        bank_seq = f"S{day:%y%m%d}{n % 10**9:09d}"
        query = f"{day:%y%m%d}{n % 10**14:014d}"  # the gateway's balance query this snapshot answers
        amount = instruction.amount
        cp = instruction.creditor

        def frame(message: Any) -> bytes:
            return bank.adapter.encode(message, sender=bank.node, receiver=_GATEWAY_NODE)

        bank.balance -= amount
        entry = base.Entry(account=bank.account, host_seq_no=host, amount=-amount, value_date=day,
                           time=now.time().replace(microsecond=0), counterparty_account=cp.account,
                           counterparty_name=cp.name, counterparty_bank_code=cp.bank_code,
                           balance_after=bank.balance, summary=iid, remark=ref, reversal=False)
        entry_json = asdict(entry)
        entry_json.update(value_date=entry.value_date.isoformat(), time=entry.time.isoformat(), bank=bank.bank_id)
        as_of = now.replace(microsecond=0, tzinfo=None)  # banks report local (China) time, naive
        result = {"succeeded": True, "host_seq_no": host, "bank_seq_no": bank_seq, "code": "0000", "text": "交易成功"}
        return Lifecycle(bank, amount, (
            self._copy(bank, "instruction.state", {"instruction": instruction.to_json(), "bank": bank.bank_id,
                                                   "bank_ref": ref},
                       instruction_id=iid, state="received", raw=None),
            self._copy(bank, "instruction.state", {"bank_ref": ref}, instruction_id=iid, state="sent", raw=None),
            self._copy(bank, "instruction.state", {"bank_ref": ref}, instruction_id=iid, state="accepted",
                       raw=frame(base.Receipt(serial, ref, ref, bank_seq))),
            self._copy(bank, "instruction.state", {"bank_ref": ref, "result": result}, instruction_id=iid,
                       state="succeeded",
                       raw=frame(base.Result(serial[:-1] + "1", ref, ref, True, host, bank_seq, "0000", "交易成功"))),
            self._copy(bank, "bank.movement", entry_json, instruction_id=None, state=None,
                       raw=frame(base.Movement(serial[:-1] + "2", (entry,)))),
            self._copy(bank, "bank.balance",
                       {"account": bank.account, "balance": bank.balance, "available": bank.balance, "overdraft": 0,
                        "status": "0", "as_of": as_of.isoformat(), "bank": bank.bank_id},
                       instruction_id=None, state=None,
                       raw=frame(base.Balance(serial[:-1] + "3", query, bank.account, bank.balance, bank.balance, 0,
                                              bank.account_name, "0", as_of))),
        ))

    def forget(self, dropped: list[Lifecycle]) -> None:
        """Undo the balances of lifecycles that will never be sent (the unsent tail of a phase).

        Later snapshots then continue from the last one the ledger has, so the
        balance chain it checks stays unbroken.
        """
        for unit in reversed(dropped):
            unit.bank.balance += unit.amount


@dataclass(frozen=True)
class Lifecycle:
    """One instruction's copies (unsigned), in journal order, and the debit it made."""

    bank: _Bank
    amount: int
    copies: tuple[dict[str, Any], ...]


# -- the ledger -------------------------------------------------------------------------------


def _write_ledger_config(directory: Path, database: str, banks: list[_Bank], ports: dict[str, int],
                         check_processes: int | None = None) -> Path:
    from gateway.config import render_toml

    ledger: dict[str, Any] = {"name": "main", "database": database}
    if check_processes is not None:
        ledger["check_processes"] = check_processes
    data = {
        "ledger": ledger,
        "tls": {"certificate": "keys/ledger.crt", "private_key": "keys/ledger.key", "ca": "keys/ca.crt"},
        "listen": {name: f"tcp:{port}:interface=127.0.0.1" for name, port in ports.items()},
        "gateways": {_GATEWAY: {"signing_key": "keys/gateway-signing.pub", "signature_alg": "ed25519"}},
        "supervisors": {"sup1": {}},
        # conf/ledger.example.toml's thresholds: no deadline falls inside a run.
        "thresholds": {"large_amount": "1000000.00", "result_deadline": 300.0, "booking_deadline": 86400.0,
                       "balance_tolerance": "0.00"},
        "accounts": {b.account: {"bank": b.bank_id, "centre": CENTRE, "name": b.account_name, "type": "collection"}
                     for b in banks},
        "counterparties": {a: {"name": n, "bank_code": c} for a, n, c in _COUNTERPARTIES},
    }
    path = directory / "ledger.toml"
    path.write_text("# Written by the benchmark harness (bench/ledger.py).\n" + render_toml(data), encoding="utf-8")
    return path


class _Poster:
    """POSTs copies to the ledger's ingest over mTLS as the gateway, one batch at a time."""

    def __init__(self, reactor: Any, keys: Path, url: str) -> None:
        from twisted.web.client import Agent, HTTPConnectionPool

        from gateway.tls import ExpectPeer, FixedCreatorPolicy, client_options

        creator = ExpectPeer(client_options(keys / "gateway.crt", keys / "gateway.key", [keys / "ca.crt"]),
                             "ledger", "main")

        self.reactor = reactor
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 1
        self.agent = Agent(reactor, contextFactory=FixedCreatorPolicy(creator), pool=self.pool, connectTimeout=10)
        self.url = url.encode("ascii")
        self.stored = 0
        self.other: dict[str, int] = {}

    async def post(self, body: bytes) -> None:
        from twisted.web.client import FileBodyProducer, readBody
        from twisted.web.http_headers import Headers

        d = self.agent.request(b"POST", self.url, Headers({b"content-type": [b"application/json"]}),
                               FileBodyProducer(BytesIO(body)))
        d.addTimeout(120, self.reactor)
        response = await d
        data = await readBody(response)
        if response.code != 200:
            raise BenchError(f"the ledger answered {response.code}: {data[:300]!r}")
        for result in json.loads(data)["results"]:
            status = result.get("status")
            if status == "stored":
                self.stored += 1
            else:
                key = f"{status}: {str(result.get('reason'))[:120]}"
                self.other[key] = self.other.get(key, 0) + 1
                if status in ("refused", "skipped"):
                    # The forwarder would stop and retry; a benchmark stops and says why.
                    raise BenchError(f"the ledger did not store a generated copy ({key})")


def _units_per_post(batch: int) -> int:
    # Whole instructions per POST (83 x 6 = 498 copies for the forwarder's 500), so that whatever is
    # left unsent at the end of a phase is whole instructions that Journal.forget can take back.
    return max(1, batch // EVENTS_PER_INSTRUCTION)


async def _post_units(poster: _Poster, journal: Journal, units: list[Lifecycle]) -> None:
    await poster.post(journal.body(units))  # signed as the forwarder signs: once per batch, when sent


async def _rate_phase(reactor: Any, journal: Journal, poster: _Poster, *, rate: float, seconds: float,
                      batch: int, drain_s: float) -> dict[str, Any]:
    """Offer ``rate`` instructions/s for ``seconds``, generated and signed as time passes; post like the forwarder."""
    from twisted.internet.task import LoopingCall, deferLater

    pending: deque[Lifecycle] = deque()
    base_n, stored0 = journal.instructions, poster.stored
    t0 = time.time()
    stop_at = t0 + seconds
    state: dict[str, Any] = {"error": None, "backlog_at_stop": None}

    def generate() -> None:
        now = time.time()
        due = int(rate * (min(now, stop_at) - t0)) - (journal.instructions - base_n)
        for _ in range(max(0, due)):
            pending.append(journal.lifecycle())
        if now >= stop_at and loop.running:
            loop.stop()
            state["backlog_at_stop"] = len(pending) * EVENTS_PER_INSTRUCTION

    loop = LoopingCall(generate)
    loop.clock = reactor
    loop.start(0.01, now=True).addErrback(lambda f: state.update(error=f))
    per_post = _units_per_post(batch)
    while True:
        if state["error"] is not None:
            state["error"].raiseException()  # the generator failed: say why rather than measure nothing
        if not loop.running and (not pending or time.time() > stop_at + drain_s):
            break
        if pending:
            units = [pending.popleft() for _ in range(min(per_post, len(pending)))]
            await _post_units(poster, journal, units)
            if len(units) == per_post:
                continue
        await deferLater(reactor, 0.05)  # the forwarder's interval after a partial batch
    t_end = time.time()
    unsent = list(pending)
    journal.forget(unsent)
    return {"t0": t0, "t_end": t_end, "offered_instructions": journal.instructions - base_n,
            "stored": poster.stored - stored0, "backlog_at_stop": state["backlog_at_stop"],
            "left_unsent": len(unsent) * EVENTS_PER_INSTRUCTION}


async def _max_phase(reactor: Any, journal: Journal, poster: _Poster, *, instructions: int, seconds: float,
                     batch: int) -> dict[str, Any]:
    """Pre-sign ``instructions`` lifecycles (in the POSTs' batches), then post them back to back for
    at most ``seconds``."""
    g0 = time.monotonic()
    units = [journal.lifecycle() for _ in range(instructions)]
    per_post = _units_per_post(batch)
    bodies = [journal.body(units[i:i + per_post]) for i in range(0, len(units), per_post)]
    generate_s = time.monotonic() - g0
    stored0 = poster.stored
    t0 = time.time()
    i = 0
    for body in bodies:
        if time.time() - t0 >= seconds:
            break
        await poster.post(body)
        i += per_post
    t_end = time.time()
    journal.forget(units[i:])
    return {"t0": t0, "t_end": t_end, "stored": poster.stored - stored0,
            "offered": len(units) * EVENTS_PER_INSTRUCTION, "generate_s": generate_s}


def _rate_figures(r: dict[str, Any], samples: list[list[float]], rate: float, batch: int) -> dict[str, Any]:
    span = r["t_end"] - r["t0"]
    lat = latency_summary([lag for t, lag in samples if r["t0"] <= t <= r["t_end"] + 1.0])
    return {
        "offered_instructions_per_s": round(rate, 1), "offered_events_per_s": round(rate * EVENTS_PER_INSTRUCTION),
        "instructions_offered": r["offered_instructions"], "events_stored": r["stored"],
        "events_per_s": round(r["stored"] / span, 1) if span > 0 else None, "span_s": round(span, 2),
        "match_lag_p50_ms": lat["p50_ms"], "match_lag_p95_ms": lat["p95_ms"], "match_lag_p99_ms": lat["p99_ms"],
        "match_lag_max_ms": lat["max_ms"], "lag_samples": lat["count"],
        "backlog_at_stop_events": r["backlog_at_stop"], "left_unsent_events": r["left_unsent"],
        "kept_up": r["backlog_at_stop"] is not None and r["backlog_at_stop"] <= 2 * batch,
        "ledger_cpu_s_per_1000_events": round(r["ledger_cpu_s"] * 1000 / r["stored"], 3) if r["stored"] else None,
        "bench_cpu_s": round(r["bench_cpu_s"], 2),
        "ledger_runqueue_wait_s": round(r["ledger_wait_s"], 2),
    }


def run(args: argparse.Namespace) -> Report:
    try:
        import gateway.ledger.service  # noqa: F401  (the daemon the host runs)
        from gateway.ledger import store as ledger_store
        from gateway.signing import init_signing_key
    except ImportError as e:
        message = f"the ledger is not importable yet ({e}); nothing measured"
        return Report("ledger", "ledger: ingest + match", (("status", message, ""),),
                      {"error": message}, {"seconds": args.seconds}, (message,))
    from gateway.pki import init_dev_pki

    if args.rate <= 0 or not EVENTS_PER_INSTRUCTION <= args.batch <= 1000:
        raise BenchError(f"--rate must be positive and --batch within {EVENTS_PER_INSTRUCTION}..1000")
    burst = args.burst if args.burst is not None else int(300 * args.seconds)
    notes: list[str] = []
    with Workspace(args.dir, keep=args.keep) as ws:
        if ws.keep:
            notes.append(f"work directory kept: {ws.directory}")
        directory = ws.sub("ledger")
        with fresh_database(args.database, directory, filename="ledger.db") as database:
            try:
                banks = _banks()
                keys = directory / "keys"
                init_dev_pki(keys, banks=[b.bank_id for b in banks], centres=[CENTRE])
                signing_key, _ = init_signing_key(keys)
                ports = {"ingest": free_port(), "supervisor": free_port(), "ops": free_port()}
                config = _write_ledger_config(directory, database, banks, ports, args.check_processes)
                ledger_store.MIGRATIONS.upgrade(database)
                lags_path = directory / "lags.json"
                trace_dir = directory / "tracemalloc"
                traced = ("-m", "bench.tracehost", str(trace_dir), str(args.tracemalloc), "--") \
                    if args.tracemalloc else ("-m",)
                host = ws.children.spawn("ledger", python_argv(*traced, "bench.ledgerhost", "-c", str(config),
                                                               "--lags", str(lags_path)),
                                         log=directory / "ledger.log", cwd=directory)
                wait_until(lambda: http_get(f"http://127.0.0.1:{ports['ops']}/readyz", timeout=1.0)[0] == 200,
                           timeout=90, what="the ledger's /readyz", children=[host])
                journal = Journal(signing_key, banks)
                log_file = start_bench_log(ws.directory / "bench.log")

                async def rate_phase(poster: _Poster, reactor: Any, rate: float) -> dict[str, Any]:
                    c0, b0, w0 = host.cpu_seconds(), self_cpu_seconds(), host.runqueue_wait_seconds()
                    r = await _rate_phase(reactor, journal, poster, rate=rate, seconds=args.seconds,
                                          batch=args.batch, drain_s=args.seconds)
                    r.update(ledger_cpu_s=host.cpu_seconds() - c0, bench_cpu_s=self_cpu_seconds() - b0,
                             ledger_wait_s=host.runqueue_wait_seconds() - w0)
                    return r

                snaps: list[tuple[str, str]] = []
                snaps_at: list[tuple[str, Path]] = []

                def trace_snapshot(label: str) -> None:
                    if not args.tracemalloc:
                        return
                    path = trace_dir / f"snap-{len(snaps)}.pickle"
                    os.kill(host.pid, signal.SIGUSR2)
                    wait_until(path.exists, timeout=120, what="the ledger's tracemalloc snapshot", children=[host])
                    if snaps_at:
                        first = snaps_at[0]
                        table = [f"what grew since {first[0]} (by file, then by line):",
                                 *diff_table(first[1], path, key="filename", top=12), "",
                                 *diff_table(first[1], path, key="lineno", top=25, depth=1)]
                    else:
                        table = [*top_table(path, key="filename", top=10), "", *top_table(path, key="lineno", top=20)]
                    snaps_at.append((label, path))
                    snaps.append((label, "\n  ".join(table)))

                async def main(reactor: Any) -> dict[str, Any]:
                    from twisted.internet.task import LoopingCall

                    poster = _Poster(reactor, keys, f"https://localhost:{ports['ingest']}/v1/copies")
                    out: dict[str, Any] = {"rss_samples": []}
                    t0 = time.monotonic()
                    sampler = LoopingCall(lambda: out["rss_samples"].append(
                        (round(time.monotonic() - t0, 1), round(host.memory_kb()[0] / 1024, 1),
                         {k: round(v / 1024, 1) for k, v in memory_parts_kb(host.pid).items()})))
                    sampler.clock = reactor
                    sampler.start(1.0, now=True)
                    trace_snapshot("once ready")
                    try:
                        if args.phase in ("both", "max"):
                            c0, w0 = host.cpu_seconds(), host.runqueue_wait_seconds()
                            out["max"] = await _max_phase(reactor, journal, poster, instructions=burst,
                                                          seconds=args.seconds, batch=args.batch)
                            out["max"].update(ledger_cpu_s=host.cpu_seconds() - c0,
                                              ledger_wait_s=host.runqueue_wait_seconds() - w0,
                                              rss_kb=host.memory_kb()[0])
                            trace_snapshot("after max")
                            m = out["max"]
                            capacity = m["stored"] / (m["t_end"] - m["t0"]) if m["t_end"] > m["t0"] else 0.0
                            sustainable = 0.5 * capacity / EVENTS_PER_INSTRUCTION
                            if args.phase == "both" and 0 < sustainable < args.rate:
                                # The offered rate is beyond what this machine's ledger ingests: measure the
                                # lag also where it is a latency and not a queue (half the capacity).
                                out["sustainable"] = await rate_phase(poster, reactor, sustainable)
                        if args.phase in ("both", "rate"):
                            # Last, so that a backlog it leaves unsent disturbs no later phase.
                            out["rate"] = await rate_phase(poster, reactor, args.rate)
                            trace_snapshot("after offered")
                    finally:
                        sampler.stop()
                        await poster.pool.closeCachedConnections()
                    out["other_statuses"] = dict(poster.other)
                    out["metrics"] = scrape_metrics(ports["ops"])
                    out["hwm_kb"] = host.memory_kb()[1]
                    return out

                try:
                    out = run_reactor(main, timeout=6 * args.seconds + burst / 100 + 300)
                finally:
                    log_file.close()
                ws.children.stop(host, timeout=60)
                try:
                    samples = json.loads(lags_path.read_text(encoding="utf-8"))["samples"]
                except (OSError, ValueError, KeyError):
                    samples = []
                    notes.append("the ledger host wrote no lag samples (did it stop cleanly? see ledger.log)")
            finally:
                ws.children.stop_all()

    metrics = out["metrics"]
    alerts = {dict(labels).get("rule", "?"): int(v) for (name, labels), v in metrics.items()
              if name == "hpf_ledger_alerts_raised_total"}
    figures: dict[str, Any] = {"database": "sqlite (WAL, synchronous=FULL)" if args.database == "sqlite"
                               else "postgresql", "batch": args.batch, "banks": [b.adapter_name for b in banks],
                               "alerts_raised": alerts, "other_statuses": out["other_statuses"],
                               "ledger_peak_rss_mb": round(out["hwm_kb"] / 1024, 1),
                               "ledger_rss_samples_mb": out["rss_samples"]}
    rows: list[tuple[str, Any, str]] = [("database", figures["database"], ""),
                                        ("banks (one per adapter that carries pushes)", ", ".join(figures["banks"]), "")]
    if "max" in out:
        m = out["max"]
        span = m["t_end"] - m["t0"]
        eps = m["stored"] / span if span > 0 else 0.0
        figures["max"] = {"events_stored": m["stored"], "events_presigned": m["offered"], "span_s": round(span, 2),
                          "events_per_s": round(eps, 1),
                          "instructions_per_s": round(eps / EVENTS_PER_INSTRUCTION, 1),
                          "ledger_cpu_s_per_1000_events": round(m["ledger_cpu_s"] * 1000 / m["stored"], 3)
                          if m["stored"] else None,
                          "ledger_cpu_share": round(m["ledger_cpu_s"] / span, 3) if span > 0 else None,
                          "ledger_runqueue_wait_s": round(m["ledger_wait_s"], 2),
                          "presign_s": round(m["generate_s"], 2),
                          "ledger_rss_after_mb": round(m["rss_kb"] / 1024, 1)}
        rows += [("max: events ingested + matched", eps,
                  f"events/s = {eps / EVENTS_PER_INSTRUCTION:,.0f} instructions/s (pre-signed, back to back)"),
                 ("max: ledger CPU per 1,000 events", figures["max"]["ledger_cpu_s_per_1000_events"], "CPU s"),
                 ("max: ledger CPU share", figures["max"]["ledger_cpu_share"], "cores"),
                 ("max: ledger RSS at its end", figures["max"]["ledger_rss_after_mb"],
                  f"MB, {m['stored']:,} events stored"),
                 ("max: ledger waiting for a CPU", figures["max"]["ledger_runqueue_wait_s"],
                  f"thread-s in {span:.1f} s (ready, but the CPUs were busy)")]
    for key, label in (("sustainable", "half capacity"), ("rate", "offered")):
        if key not in out:
            continue
        f = figures[key] = _rate_figures(out[key], samples, out[key]["offered_instructions"] / args.seconds
                                         if key == "sustainable" else args.rate, args.batch)
        rows += [
            (f"{label}: offered", f"{f['offered_instructions_per_s']:g} instr/s = {f['offered_events_per_s']:,}",
             "events/s"),
            (f"{label}: events stored", f["events_per_s"], "events/s"),
            (f"{label}: match lag p50", f["match_lag_p50_ms"], "ms"),
            (f"{label}: match lag p99", f["match_lag_p99_ms"], "ms"),
            (f"{label}: backlog when offering stopped", f["backlog_at_stop_events"], "events"),
            (f"{label}: kept up", f["kept_up"], ""),
        ]
        if not f["kept_up"]:
            notes.append(f"{label}: the ledger did not keep up with {f['offered_instructions_per_s']:g} "
                         "instructions/s; its lag is queueing that grows with the run's length, not a latency")
        if f["left_unsent_events"]:
            notes.append(f"{label}: {f['left_unsent_events']} events were still unsent when the drain bound ran out "
                         "(dropped as whole instructions)")
    rows += [("alerts raised (consistent data: expect 0)", sum(alerts.values()), ""),
             ("ledger peak RSS (VmHWM)", figures["ledger_peak_rss_mb"], "MB")]
    if alerts:
        notes.append(f"alerts by rule: {alerts}")
    for label, table in snaps:
        notes.append(f"tracemalloc, what the ledger holds {label}:\n  {table}")
    if out["other_statuses"]:
        notes.append(f"copies not stored: {out['other_statuses']}")
    params = {"seconds": args.seconds, "rate": args.rate, "batch": args.batch, "burst": burst, "phase": args.phase,
              "database": "sqlite" if args.database == "sqlite" else "postgresql",
              "check_processes": args.check_processes}
    return Report("ledger", "ledger: ingest + match of signed copies over mTLS", tuple(rows), figures, params,
                  tuple(notes))
