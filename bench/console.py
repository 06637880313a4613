"""The supervision console's page latency over a ledger holding many instructions and alerts.

    python -m bench.console [--instructions N] [--alerts M] [--requests K] [--json FILE] [--keep]

Fills a fresh SQLite ledger database directly (copies of received instructions,
a tenth of them today, and alerts spread over two centres, rules, severities
and states), records a matcher snapshot covering them (so the daemon does not
replay them: the matcher's speed is ``bench ledger``'s business), starts
``hpf-gateway ledger`` with the console on loopback, and times each page as a
province supervisor over mTLS: K requests per page, one at a time, median and
p95 of the whole request (TLS connection included).  Measures only; asserts nothing.

Module interface as the other benchmarks (``HELP``, ``DEFAULT_SECONDS``,
``add_arguments``, ``run``) so that ``bench/__init__.py`` can list it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import ssl
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.common import BenchError, Children, Report, free_port, latency_summary, machine_info, python_argv, \
    wait_until, write_json

HELP = "console page latency with many instructions and alerts in the ledger"
DEFAULT_SECONDS = 30.0
CENTRES = ("C52240", "C11000")
ACCOUNTS = {"C52240": "6200001111222233", "C11000": "6200005555666677"}
RULES = ("large-amount", "unregistered-counterparty", "result-mismatch", "balance-break", "missing-result")


def _centre_of(i: int) -> str:
    """Instruction i's centre: half each, and half each of today's (every tenth instruction is today's)."""
    return CENTRES[(i // 10) % 2]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--instructions", type=int, default=200_000, help="instruction copies in the ledger")
    p.add_argument("--alerts", type=int, default=20_000, help="alerts in the ledger")
    p.add_argument("--requests", type=int, default=20, help="requests per page")
    p.add_argument("--dir", type=Path, help="work here (kept)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")


def _fill(url: str, instructions: int, alerts: int, now_us: int) -> dict[str, Any]:
    """Rows straight into the ledger's tables; returns ids the pages will ask for."""
    import sqlalchemy as sa

    from gateway.ledger import store
    from gateway.ledger.console.totals import AlertTotals, DailyTotals
    from gateway.ledger.matcher import Matcher, Registry, Thresholds
    from gateway.store.db import make_engine

    engine = make_engine(url)
    day_us = 86_400_000_000
    with engine.begin() as conn:
        batch: list[dict[str, Any]] = []
        for i in range(1, instructions + 1):
            centre = _centre_of(i)
            created = now_us - (0 if i % 10 == 0 else (i % 90 + 1) * day_us) - i
            payload = json.dumps({"bank": "B001", "bank_ref": f"{i:020d}", "instruction": {
                "instruction_id": f"I{i}", "kind": "transfer", "debit_account": ACCOUNTS[centre],
                "creditor": {"account": "6200009999000011", "name": "张三", "bank_code": "105100000017"},
                "amount": f"{i % 100000}.{i % 100:02d}", "purpose": "withdrawal", "memo": "",
                "approval_ref": None, "requested_date": "2026-11-27"}}, ensure_ascii=False)
            batch.append(dict(seq=i, gateway="main", gateway_seq=i, event_id=f"e{i:016x}", kind="instruction.state",
                              centre_id=centre, instruction_id=f"I{i}", bank_id="B001", account=ACCOUNTS[centre],
                              state="received", created_us=created, payload=payload, raw=None, adapter=None,
                              gateway_hash="0" * 64, signature="AA==", signature_alg="ed25519", host_seq_no=None,
                              received_us=created, hash="0" * 64))
            if len(batch) == 5000:
                conn.execute(sa.insert(store.copies), batch)
                batch = []
        if batch:
            conn.execute(sa.insert(store.copies), batch)
        conn.execute(sa.insert(store.ledger_head).values(id=1, seq=instructions, hash="0" * 64))
    with engine.begin() as conn:
        snapshot = Matcher(Registry(), Thresholds(100_000_000, 300.0, 86_400.0)).snapshot()
        conn.execute(sa.insert(store.matcher_state).values(id=1, last_seq=instructions, snapshot=json.dumps(snapshot),
                                                           updated_us=now_us))
        rows = []
        for j in range(1, alerts + 1):
            i = max(1, instructions * j // max(1, alerts))
            centre = _centre_of(i)
            rows.append(dict(key=f"{RULES[j % len(RULES)]}:{centre}/I{i}:{j}", rule=RULES[j % len(RULES)],
                             severity=("critical", "major", "minor")[j % 3],
                             state=("open", "acknowledged", "resolved")[j % 3], subject=f"{centre}/I{i}",
                             summary=f"bench alert {j}", evidence=json.dumps([f"e{i:016x}"]), centre_id=centre,
                             bank_id="B001", account=ACCOUNTS[centre], created_us=now_us - (alerts - j) * 1_000_000,
                             updated_us=now_us))
            if len(rows) == 5000:
                conn.execute(sa.insert(store.alerts), rows)
                rows = []
        if rows:
            conn.execute(sa.insert(store.alerts), rows)
    # The day totals as the console keeps them while copies and alerts arrive (it folds them every few
    # seconds), timed apart: a one-off cost, paid in the background on a ledger's first start after L0004.
    t0 = time.monotonic()
    for totals in (DailyTotals(), AlertTotals()):
        more = True
        while more:
            with engine.begin() as conn:
                more = totals.fold(SimpleNamespace(conn=conn))
    fold_s = time.monotonic() - t0
    engine.dispose()
    return {"alert": alerts // 2 or 1, "before": alerts // 2 or 1, "fold_s": fold_s}


def run(args: argparse.Namespace) -> Report:
    from gateway.config import render_toml
    from gateway.ledger import store
    from gateway.pki import init_dev_pki
    from gateway.signing import init_signing_key

    work = args.dir or Path(tempfile.mkdtemp(prefix="hpf-bench-console-"))
    work.mkdir(parents=True, exist_ok=True)
    children = Children()
    try:
        pki = init_dev_pki(work / "keys", banks=("B001",), centres=())
        _, pub = init_signing_key(work / "keys")
        db = f"sqlite:///{work / 'ledger.db'}"
        store.MIGRATIONS.upgrade(db)
        t0 = time.monotonic()
        ids = _fill(db, args.instructions, args.alerts, int(time.time() * 1_000_000))
        fill_s = time.monotonic() - t0
        ports = {n: free_port() for n in ("ingest", "supervisor", "ops", "console")}
        config = {
            "ledger": {"name": "main", "database": db, "check_processes": 0},
            "tls": {"certificate": str(pki.cert("ledger")), "private_key": str(pki.key("ledger")),
                    "ca": str(pki.ca_cert)},
            "listen": {n: f"tcp:{ports[n]}:interface=127.0.0.1" for n in ("ingest", "supervisor", "ops")},
            "gateways": {"main": {"signing_key": str(pub)}},
            "supervisors": {"sup1": {}},
            "thresholds": {"large_amount": "1000000.00"},
            "accounts": {a: {"bank": "B001", "centre": c, "name": f"{c} 归集户", "type": "collection"}
                         for c, a in ACCOUNTS.items()},
            "console": {"listen": f"tcp:{ports['console']}:interface=127.0.0.1",
                        "cities": {"a": {"name": "甲市", "centres": ["C52240"]},
                                   "b": {"name": "乙市", "centres": ["C11000"]}}},
        }
        path = work / "ledger.toml"
        path.write_text(render_toml(config), encoding="utf-8")
        children.spawn("ledger", python_argv("-m", "gateway.cli", "ledger", "-c", str(path)), log=work / "ledger.log")
        wait_until(lambda: _ready(ports["ops"]), timeout=60, what="the ledger ready")
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(str(pki.cert("supervisor", "sup1")), str(pki.key("supervisor", "sup1")))
        base = f"https://localhost:{ports['console']}"
        today = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 8 * 3600))  # the console's day is UTC+8
        pages = {
            "overview": "/", "alerts": "/alerts", "alerts, page in the middle": f"/alerts?before={ids['before']}",
            "alerts, filtered": "/alerts?rule=balance-break&centre=C11000&state=open",
            "alert evidence": f"/alerts/{ids['alert']}", "accounts": "/accounts",
            "instructions": "/instructions", "instructions, today's received":
                f"/instructions?state=received&from={today}&to={today}&centre=C11000",
            "instructions, overdue": "/instructions?overdue=1",
            "instructions, match lag": "/instructions?unmatched=1",
            "report, month": "/reports?period=month", "report, year": "/reports?period=year",
            "inquiries": "/inquiries", "conditions": "/conditions",
        }
        rows: list[tuple[str, Any, str]] = [("instructions", args.instructions, ""), ("alerts", args.alerts, ""),
                                            ("fill", round(fill_s, 1), "s"),
                                            ("of which folding the day totals", round(ids["fold_s"], 1), "s")]
        figures: dict[str, Any] = {}
        deadline = time.monotonic() + args.seconds * 4
        for name, page in pages.items():
            times = []
            for _ in range(args.requests):
                t = time.perf_counter()
                with urllib.request.urlopen(urllib.request.Request(base + page), context=ctx, timeout=60) as r:
                    r.read()
                    if r.status != 200:
                        raise BenchError(f"{page} answered {r.status}")
                times.append(time.perf_counter() - t)
                if time.monotonic() > deadline:
                    break
            summary = latency_summary(times)
            summary["first_ms"] = round(times[0] * 1000, 3)  # the page's first request after the start
            figures[name] = summary
            rows.append((f"{name} p50", round(summary["p50_ms"], 1) if summary.get("p50_ms") is not None else None, "ms"))
            rows.append((f"{name} p95", round(summary["p95_ms"], 1) if summary.get("p95_ms") is not None else None, "ms"))
        return Report("console", "console page latency (one supervisor, one request at a time, mTLS each)",
                      tuple(rows), figures, params={"instructions": args.instructions, "alerts": args.alerts,
                                                    "requests": args.requests, "database": "sqlite"},
                      notes=("the matcher's snapshot is recorded as covering the copies (not replayed)",
                             "copies carry no valid signature: the evidence page shows them unverified"))
    finally:
        children.stop_all()
        if not args.dir and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.console", description=HELP)
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="time budget per page (x4)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    add_arguments(p)
    args = p.parse_args(argv)
    started = time.time()
    try:
        report = run(args)
    except BenchError as e:
        print(f"python -m bench.console: {e}", file=sys.stderr)
        return 1
    print(report.table())
    if args.json:
        write_json(args.json, report.document(machine_info(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                                              time.time() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
