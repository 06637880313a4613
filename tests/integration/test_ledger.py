"""The supervision ledger daemon over real loopback TLS: ingest, supervisor API, ops, restart.

Certificates come from the development PKI; the gateway's Ed25519 signing key
is made here.  Every wait is bounded.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import gc
import io
import os
import signal
from typing import Any

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher

from gateway.ledger import store
from gateway.ledger.checks import CheckPool
from gateway.ledger.config import LedgerConfig, load_ledger_config
from gateway.ledger.engine import registry_from_config, thresholds_from_config
from gateway.ledger.matcher import Fact, Matcher
from gateway.ledger.service import makeLedgerService
from gateway.ledger.verify import verify_database
from gateway.pki import issue
from gateway.store.db import make_engine
from tests.kit.ledger import (
    DEBIT,
    GATEWAY_KEY,
    PAYEE,
    gateway_signer,
    make_copy,
    movement_frame,
    movement_payload,
    received_payload,
    result_frame,
    result_payload,
    sign_batch,
)
from tests.kit.ledger_env import Client, Env, env  # noqa: F401,F811  (env: the fixture)
from tests.kit.wait import until

DAY = dt.date(2026, 11, 27)
CST = dt.timezone(dt.timedelta(hours=8))
AT = int(dt.datetime(2026, 11, 27, 10, 0, tzinfo=CST).timestamp()) * 1_000_000
TIMEOUT = 10.0


def keys_of(alerts: list[dict[str, Any]]) -> list[str]:
    return sorted(a["key"] for a in alerts)


async def all_alerts(env: Env) -> list[dict[str, Any]]:
    status, _, body = await env.read("/v1/alerts?limit=1000")
    assert status == 200, body
    return body["alerts"]


# -- ingest -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_signed_copies_are_stored_duplicates_answered_and_forgeries_refused_with_one_alert(env):
    await env.start()
    c1, c2 = make_copy(1), make_copy(2, instruction_id="I2")
    forged = make_copy(3, instruction_id="I3")
    forged = dict(forged, payload=forged["payload"].replace("100.00", "99999.00"))
    north = make_copy(4, instruction_id="I4", gateway="north")

    first = await env.file([c1, c2])
    assert [r["status"] for r in first] == ["stored", "stored"]
    again = await env.file([c1, forged, north])
    # nothing after a refused copy is stored: the gateway resends from the refused one on
    assert [r["status"] for r in again] == ["duplicate", "refused", "skipped"]
    assert "signature" in again[1]["reason"]
    claim = await env.file([north])
    assert claim[0]["status"] == "refused" and "claims gateway 'north'" in claim[0]["reason"]
    retry = await env.file([forged])
    assert retry[0]["status"] == "refused"

    alerts = await all_alerts(env)
    forged_alerts = [a for a in alerts if a["rule"] == "forged-copy"]
    assert [a["evidence"] for a in forged_alerts] == [[forged["event_id"]]]
    rows = await env.ledger.db.read(store.copies_after, 0, 100)
    assert [r["event_id"] for r in rows] == [c1["event_id"], c2["event_id"]]

    # Only configured gateways file copies: a centre or a supervisor is refused, and counted.
    status, ctype, body = await env.client("centre", "C52240").call(
        "POST", env.url("ingest", "/v1/copies"), {"copies": [c1]})
    assert (status, ctype, body["status"]) == (403, "application/problem+json", 403)
    status, _, _ = await env.client("supervisor", "sup1").call(
        "POST", env.url("ingest", "/v1/copies"), {"copies": [c1]})
    assert status == 403
    status, _, metrics = await env.client("gateway").call("GET", env.url("ops", "/metrics"), accept="text/plain")
    assert 'hpf_ledger_denied_total{listener="ingest",reason="not-a-gateway"} 2.0' in metrics
    assert 'hpf_ledger_copies_total{gateway="main",status="stored"} 2.0' in metrics
    assert 'hpf_ledger_gateway_last_seq{gateway="main"} 2.0' in metrics
    assert "hpf_ledger_match_lag_seconds_count 2.0" in metrics
    status, _, text = await env.client("gateway").call("GET", env.url("ops", "/readyz"), accept="text/plain")
    assert (status, text.strip()) == (200, "ready")


@pytest_twisted.ensureDeferred
async def test_a_batch_says_how_far_the_gateways_journal_is_and_a_malformed_head_is_refused_alone(env):
    """``head_seq`` (bench/README.md, item 39): the ledger gauges how far behind the gateway is
    known to be; a head that is not a journal seq is refused 422 like any malformed body,
    nothing of that request is stored, and the next good request is taken as usual."""
    await env.start()
    gateway = env.client("gateway")
    url = env.url("ingest", "/v1/copies")
    c1, c2, c3 = (make_copy(n, instruction_id=f"I{n}") for n in (1, 2, 3))
    for bad in (-1, 2**63, 10**400, True, None, "3", 3.0, [3], {"seq": 3}):
        status, ctype, body = await gateway.call("POST", url, {"copies": [c1], "head_seq": bad})
        assert (status, ctype) == (422, "application/problem+json"), (bad, body)
        assert body["errors"] == [{"field": "head_seq", "reason": "when given, an integer from 0 to "
                                   f"{2**63 - 1}: the newest seq of the sender's journal"}], bad
    assert await env.ledger.db.read(store.copies_after, 0, 10) == []

    async def gauge(value: float) -> bool:
        _, _, text = await gateway.call("GET", env.url("ops", "/metrics"), accept="text/plain")
        return f'hpf_ledger_gateway_behind_events{{gateway="main"}} {value}' in text

    status, _, body = await gateway.call("POST", url, {"copies": [c1], "head_seq": 3})
    assert status == 200 and [r["status"] for r in body["results"]] == ["stored"]
    await until(lambda: gauge(2.0), "the ledger to gauge two copies still at the gateway", TIMEOUT)
    assert [r["status"] for r in await env.file([c2, c3])] == ["stored", "stored"]  # no head: as before
    await until(lambda: gauge(0.0), "the gateway caught up", TIMEOUT)


@pytest_twisted.ensureDeferred
async def test_a_well_signed_copy_the_ledger_cannot_read_is_stored_as_refused_and_the_rest_go_on(env):
    """The manual-resolution stall: one copy the ledger cannot read must not hold back the ones
    behind it.  It is kept (verbatim, in the chain), answered ``refused-stored`` and alerted."""
    await env.start()
    c1 = make_copy(1)
    unreadable = make_copy(2, instruction_id="I2", state="succeeded", payload={"bank_ref": "R2", "verdict": "ok"})
    c3 = make_copy(3, instruction_id="I3")
    results = await env.file([c1, unreadable, c3])
    assert [r["status"] for r in results] == ["stored", "refused-stored", "stored"]
    assert "payload.result" in results[1]["reason"]
    again = await env.file([unreadable])
    assert again[0]["status"] == "duplicate"

    [alert] = [a for a in await all_alerts(env) if a["rule"] == "copy-refused"]
    assert alert["evidence"] == [unreadable["event_id"]] and alert["centre_id"] == "C52240"
    assert alert["key"] == f"copy-refused:main:{unreadable['event_id']}"
    status, _, trail = await env.read("/v1/trail/C52240/I2")
    assert status == 200 and trail["copies"][0]["signature_verified"] is True
    assert "payload.result" in trail["copies"][0]["refused"]

    # A restart replays the journal through the matcher: the refused copy is passed by, not an error.
    await env.stop()
    await env.start()
    status, _, metrics = await env.client("gateway").call("GET", env.url("ops", "/metrics"), accept="text/plain")
    assert 'hpf_ledger_copies_total{gateway="main",status="refused-stored"}' not in metrics  # a fresh process
    assert "hpf_ledger_matcher_errors_total 0.0" in metrics
    report = verify_database(env.config.database, kind="ledger",
                             keys={"main": ("ed25519", GATEWAY_KEY.public_key())})
    assert report.ok and report.rows == 3, report.describe()


def _reconfigure(env: Env, **ledger: Any) -> None:
    """Rewrite the ledger section of ``env``'s config (before it starts)."""
    text = env.config.path.read_text(encoding="utf-8")
    for key, value in ledger.items():
        text = text.replace("[ledger]\n", f"[ledger]\n{key} = {value}\n", 1)
    env.config.path.write_text(text, encoding="utf-8")
    env.config = load_ledger_config(env.config.path)


@pytest.mark.parametrize("processes", [0, 2])
@pytest_twisted.ensureDeferred
async def test_a_batch_checked_in_slices_is_answered_as_one_checked_whole(env, monkeypatch, processes):
    """In processes the batch is checked in slices of one copy here, stored and matched slice
    by slice; the answer, what is stored and the alerts are those of the whole batch checked on
    a thread: nothing after the first refused copy is stored, and a later forgery still alerts."""
    _reconfigure(env, check_processes=processes)
    monkeypatch.setattr(CheckPool, "MIN_SLICE", 1)
    ledger = await env.start()
    assert len(ledger.checks.pids()) == processes
    copies = [make_copy(n, instruction_id=f"I{n}") for n in range(1, 7)]
    forged = (2, 5)
    for n in forged:
        copies[n - 1] = dict(copies[n - 1], payload=copies[n - 1]["payload"].replace("100.00", "99999.00"))
    answer = await env.file(copies)
    assert [r["status"] for r in answer] == ["stored", "refused", "skipped", "skipped", "skipped", "skipped"]
    rows = await env.ledger.db.read(store.copies_after, 0, 100)
    assert [r["event_id"] for r in rows] == [copies[0]["event_id"]]
    forged_alerts = sorted(a["evidence"][0] for a in await all_alerts(env) if a["rule"] == "forged-copy")
    assert forged_alerts == sorted(copies[n - 1]["event_id"] for n in forged)
    honest = [make_copy(n, instruction_id=f"I{n}") for n in range(2, 7)]
    assert [r["status"] for r in await env.file(honest)] == ["stored"] * 5


@pytest.mark.parametrize("processes", [0, 2])
@pytest_twisted.ensureDeferred
async def test_batches_signed_once_are_refused_where_altered_reordered_or_cut_short(env, monkeypatch, processes):
    """Copies signed per batch, checked in slices of two: a copy altered in its batch is refused
    (forged) and the copies before it stored; a batch reordered or cut short is refused where it
    breaks; the whole batch, sent again in order, is stored in one transaction, and each copy
    verifies alone."""
    _reconfigure(env, check_processes=processes)
    monkeypatch.setattr(CheckPool, "MIN_SLICE", 2)
    await env.start()
    signer = gateway_signer(env.tmp)
    batch = sign_batch(signer, [make_copy(n, instruction_id=f"I{n}") for n in range(1, 7)])
    altered = list(batch)
    altered[3] = dict(altered[3], payload=altered[3]["payload"].replace("100.00", "99999.00"))
    answer = await env.file(altered)
    assert [r["status"] for r in answer] == ["stored"] * 3 + ["refused", "skipped", "skipped"]
    assert "signature" in answer[3]["reason"]
    reordered = await env.file([batch[0], batch[4], batch[3], batch[5]])
    assert [r["status"] for r in reordered] == ["duplicate", "refused", "skipped", "skipped"]
    assert "order" in reordered[1]["reason"]
    cut = sign_batch(signer, [make_copy(n, instruction_id=f"I{n}") for n in range(4, 10)])[:4]
    assert [r["status"] for r in await env.file(cut)] == ["refused"] + ["skipped"] * 3
    forged = sorted(a["evidence"][0] for a in await all_alerts(env) if a["rule"] == "forged-copy")
    assert forged == sorted({batch[3]["event_id"], batch[4]["event_id"], cut[0]["event_id"]})
    writes = []
    real_write = env.ledger.db.write
    monkeypatch.setattr(env.ledger.db, "write", lambda op: writes.append(op) or real_write(op))
    assert [r["status"] for r in await env.file(batch)] == ["duplicate"] * 3 + ["stored"] * 3
    assert len(writes) == 1  # the batch, checked in three slices, is stored in one transaction
    status, _, trail = await env.read("/v1/trail/C52240/I5")
    assert status == 200, trail
    [copy] = trail["copies"]
    assert copy["signature_verified"] and copy["batch"]["index"] == 4 and copy["batch"]["count"] == 6


@pytest_twisted.ensureDeferred
async def test_a_killed_check_process_fails_its_batch_with_503_and_the_next_is_checked(env):
    ledger = await env.start()
    victims = ledger.checks.pids()
    assert len(victims) == 2
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    statuses = []
    for n in range(1, 4):  # the death is noticed at the latest by the first batch after it
        status, _, body = await env.client("gateway").call(
            "POST", env.url("ingest", "/v1/copies"), {"copies": [make_copy(n, instruction_id=f"I{n}")]})
        statuses.append(status)
        if status == 200:
            assert body["results"][0]["status"] == "stored"
            break
        assert status == 503, body
    assert statuses[-1] == 200
    assert not set(ledger.checks.pids()) & set(victims)


@pytest_twisted.ensureDeferred
async def test_results_that_cannot_be_read_back_fail_their_batch_and_store_nothing(env, monkeypatch):
    """A fault reading a check process's packed results (gateway.ledger.checks.unpack) answers
    the batch with an error at once, stores nothing of it, and the next batch is checked."""
    from gateway.ledger import checks

    await env.start()
    real = checks.unpack
    monkeypatch.setattr(checks, "unpack", lambda packed: 1 / 0)
    copies = [make_copy(n, instruction_id=f"I{n}") for n in range(1, 3)]
    status, _, _ = await env.client("gateway").call("POST", env.url("ingest", "/v1/copies"), {"copies": copies})
    assert status == 500
    assert await env.ledger.db.read(store.copies_after, 0, 100) == []
    monkeypatch.setattr(checks, "unpack", real)
    assert [r["status"] for r in await env.file(copies)] == ["stored", "stored"]


@pytest_twisted.ensureDeferred
async def test_a_bank_frame_that_contradicts_the_copy_is_refused_as_forged(env):
    await env.start()
    frame = result_frame(5, "H0005")
    received = make_copy(1, instruction_id="I5", payload=received_payload("I5", 5))
    honest = make_copy(2, instruction_id="I5", state="succeeded", payload=result_payload(5, "H0005"),
                       raw=frame, adapter="bdc")
    lying = make_copy(3, instruction_id="I5", state="succeeded", payload=result_payload(5, "H7777"),
                      raw=frame, adapter="bdc", event_id="0005f3lying0000001")
    results = await env.file([received, lying, honest])
    assert [r["status"] for r in results] == ["stored", "refused", "skipped"]
    assert "the bank's frame disagrees" in results[1]["reason"]
    assert (await env.file([honest]))[0]["status"] == "stored"
    alerts = await all_alerts(env)
    assert [a["key"] for a in alerts if a["rule"] == "forged-copy"] == [f"forged-copy:main:{lying['event_id']}"]


# -- supervisor API: reads ---------------------------------------------------------------------


def _day_copies() -> list[dict[str, Any]]:
    """One instruction's whole life on 2026-11-27 (UTC+8), its movement, booking and two balances."""
    booking = {"booking_id": "BK1", "instruction_id": "I1", "host_seq_no": None, "account": DEBIT,
               "amount": "-12000.00", "voucher_no": "V0001", "booked_on": "2026-11-27"}
    bal = {"bank": "B001", "account": DEBIT, "available": 0, "overdraft": 0, "status": "normal"}
    return [
        make_copy(1, kind="bank.balance", state=None, instruction_id=None, created_us=AT,
                  payload=dict(bal, balance=5_000_000, as_of="2026-11-27T09:00:00+08:00")),
        make_copy(2, instruction_id="I1", created_us=AT + 1,
                  payload=received_payload("I1", 1, amount="12000.00")),
        make_copy(3, instruction_id="I1", state="succeeded", created_us=AT + 2,
                  payload=result_payload(1, "H0001"), raw=result_frame(1, "H0001"), adapter="bdc"),
        make_copy(4, kind="bank.movement", state=None, instruction_id=None, created_us=AT + 3,
                  payload=movement_payload("H0001", -1_200_000, summary="I1"),
                  raw=movement_frame("H0001", -1_200_000), adapter="bdc"),
        make_copy(5, kind="booking", state=None, instruction_id="I1", created_us=AT + 4, payload=booking),
        # 50,000.00 - 12,000.00 is 38,000.00; the bank reports 37,000.00: a break of 1,000.00.
        make_copy(6, kind="bank.balance", state=None, instruction_id=None, created_us=AT + 5,
                  payload=dict(bal, balance=3_700_000, as_of="2026-11-27T11:00:00+08:00")),
    ]


@pytest_twisted.ensureDeferred
async def test_supervisor_reads_the_trail_balances_and_the_daily_report_as_json_and_csv(env):
    await env.start()
    copies = _day_copies()
    assert {r["status"] for r in await env.file(copies)} == {"stored"}

    status, _, trail = await env.read("/v1/trail/C52240/I1")
    assert status == 200
    assert [c["event_id"] for c in trail["copies"]] == [c["event_id"] for c in copies[1:5]]
    assert all(c["signature_verified"] is True for c in trail["copies"])
    assert base64.b64decode(trail["copies"][1]["raw"]) == result_frame(1, "H0001")
    assert trail["copies"][1]["payload"]["result"]["host_seq_no"] == "H0001"
    status, _, _ = await env.read("/v1/trail/C52240/NOPE")
    assert status == 404

    status, _, balances = await env.read(f"/v1/accounts/{DEBIT}/balances")
    assert status == 200 and balances["registered"] is True
    last = balances["snapshots"][-1]
    assert (last["expected"], last["reported"], last["difference"], last["continuous"]) == \
        ("38000.00", "37000.00", "-1000.00", False)
    assert balances["breaks"] == 1

    status, _, report = await env.read("/v1/reports/daily?date=2026-11-27")
    assert status == 200 and report["date"] == "2026-11-27"
    [row] = [r for r in report["rows"] if r["account"] == DEBIT]
    assert (row["centre_id"], row["bank_id"]) == ("C52240", "B001")
    assert (row["instructed_count"], row["instructed_sum"]) == (1, "12000.00")
    assert (row["executed_count"], row["executed_sum"]) == (1, "12000.00")
    assert (row["booked_count"], row["booked_sum"]) == (1, "-12000.00")
    assert (row["debit_count"], row["debit_sum"], row["closing_balance"]) == (1, "12000.00", "37000.00")
    status, ctype, text = await env.read("/v1/reports/daily?date=2026-11-27", accept="text/csv")
    assert status == 200 and ctype.startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(text)))
    [csv_row] = [r for r in lines if r["account"] == DEBIT]
    assert (csv_row["instructed_sum"], csv_row["executed_count"], csv_row["closing_balance"]) == \
        ("12000.00", "1", "37000.00")
    assert lines[-1]["centre_id"] == "TOTAL"
    status, _, empty = await env.read("/v1/reports/daily?date=2026-11-26")
    assert status == 200 and empty["rows"] == []
    status, _, _ = await env.read("/v1/reports/daily?date=27-11-2026")
    assert status == 400

    async def balance_break() -> bool:
        return any(a["rule"] == "balance-break" for a in await all_alerts(env))

    await until(balance_break, "the matcher's balance-break alert", TIMEOUT)
    status, _, found = await env.read("/v1/alerts?state=open&rule=balance-break&since=2020-01-01")
    assert status == 200 and [a["account"] for a in found["alerts"]] == [DEBIT]
    assert copies[5]["event_id"] in found["alerts"][0]["evidence"]
    status, _, later = await env.read("/v1/alerts?since=2099-01-01T00:00:00Z")
    assert status == 200 and later["alerts"] == []
    # Alerts count on the day they were raised (today, UTC+8), against their account.
    raised = dt.datetime.fromisoformat(found["alerts"][0]["created_at"].replace("Z", "+00:00"))
    today = raised.astimezone(CST).date().isoformat()
    status, _, report = await env.read(f"/v1/reports/daily?date={today}")
    [row] = [r for r in report["rows"] if r["account"] == DEBIT]
    assert (row["balance_breaks"], row["alerts"]) == (1, 1)


# -- supervisor API: the only writes, and every other write refused -----------------------------


@pytest_twisted.ensureDeferred
async def test_notes_and_state_changes_are_recorded_with_who_and_every_other_write_is_refused(env):
    await env.start()
    forged = make_copy(1)
    forged = dict(forged, payload=forged["payload"].replace("100.00", "5.00"))
    await env.file([forged])
    [alert] = await all_alerts(env)
    sup = env.client("supervisor", "sup1")
    base_url = env.url("supervisor", f"/v1/alerts/{alert['id']}")

    status, _, note = await sup.call("POST", base_url + "/notes", {"text": "asked the gateway's operator"})
    assert status == 201 and note["note"]["who"] == "hpf://supervisor/sup1"
    status, _, _skipped = await sup.call("POST", base_url + "/state", {"state": "resolved", "reason": "skip"})
    assert status == 409
    status, _, acked = await sup.call("POST", base_url + "/state", {"state": "acknowledged", "reason": "on it"})
    assert status == 200 and acked["state"] == "acknowledged"
    status, _, done = await sup.call("POST", base_url + "/state", {"state": "resolved", "reason": "key rotated"})
    assert status == 200 and done["state"] == "resolved"
    assert [(n["who"], n["action"], n["text"]) for n in done["notes"]] == [
        ("hpf://supervisor/sup1", "note", "asked the gateway's operator"),
        ("hpf://supervisor/sup1", "acknowledged", "on it"),
        ("hpf://supervisor/sup1", "resolved", "key rotated")]
    status, _, _ = await sup.call("POST", base_url + "/notes", {"text": "x", "extra": 1})
    assert status == 422

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        writes = [("PUT", base_url, {}), ("DELETE", base_url, None), ("PATCH", base_url, {}),
                  ("POST", env.url("supervisor", "/v1/alerts"), {}),
                  ("POST", env.url("supervisor", "/v1/copies"), {"copies": [make_copy(2)]}),
                  ("POST", base_url + "/evidence", {})]
        for method, url, body in writes:
            status, ctype, problem = await sup.call(method, url, body)
            assert (status, ctype) == (403, "application/problem+json"), (method, url)
            assert problem["type"].endswith("read-only")
        centre = env.client("centre", "C52240")
        for method, url, body in [("GET", env.url("supervisor", "/v1/alerts"), None),
                                  ("POST", base_url + "/notes", {"text": "hi"})]:
            status, _, problem = await centre.call(method, url, body)
            assert status == 403 and problem["type"].endswith("not-a-supervisor")
        sup2_cert, sup2_key = issue(env.pki.ca_cert, env.pki.ca_key, env.tmp / "extra", "supervisor", "sup2")
        status, _, _ = await Client(sup2_cert, sup2_key, env.pki.ca_cert).call(
            "GET", env.url("supervisor", "/v1/alerts"))
        assert status == 403  # a supervisor certificate not listed in the config
    finally:
        globalLogPublisher.removeObserver(events.append)
    denied = [e for e in events if e.get("log_format") == "ledger.denied"]
    assert {e["peer"] for e in denied} == {"hpf://supervisor/sup1", "hpf://centre/C52240",
                                           "hpf://supervisor/sup2"}
    assert len(denied) == len(writes) + 3
    status, _, metrics = await sup.call("GET", env.url("ops", "/metrics"), accept="text/plain")
    assert f'hpf_ledger_denied_total{{listener="supervisor",reason="read-only"}} {len(writes)}.0' in metrics
    assert 'hpf_ledger_denied_total{listener="supervisor",reason="not-a-supervisor"} 3.0' in metrics
    final = await env.ledger.db.read(store.get_alert, alert["id"])
    assert final["state"] == "resolved" and len(final["notes"]) == 3  # the refused writes changed nothing


# -- restart -------------------------------------------------------------------------------------


def _reference_keys(config: LedgerConfig, copies: list[dict[str, Any]]) -> set[str]:
    """The alerts one uninterrupted matcher raises for ``copies`` once every deadline has passed."""
    matcher = Matcher(registry_from_config(config), thresholds_from_config(config))
    keys = set()
    for c in copies:
        keys |= {d.key for d in matcher.observe(Fact.from_copy(c), 0.0)}
    keys |= {d.key for d in matcher.tick(1e9)}
    return keys


@pytest_twisted.ensureDeferred
async def test_restart_mid_stream_neither_repeats_nor_misses_an_alert(env):
    forged = make_copy(7, instruction_id="I7")
    forged = dict(forged, payload=forged["payload"].replace("100.00", "1.00"))
    phase1 = [
        make_copy(1, instruction_id="I1", payload=received_payload("I1", 1, amount="2000000.00",
                                                                    approval_ref="APP-1")),
        make_copy(2, instruction_id="I2"),                 # never completes: missing-result across restarts
        make_copy(3, instruction_id="I3"),
        make_copy(4, instruction_id="I3", state="succeeded", payload=result_payload(3, "H0003"),
                  raw=result_frame(3, "H0003"), adapter="bdc"),
        make_copy(5, kind="bank.movement", state=None, instruction_id=None,
                  payload=movement_payload("H0003", -10_000), raw=movement_frame("H0003", -10_000),
                  adapter="bdc"),
        make_copy(6, kind="booking", state=None, instruction_id="I3",
                  payload={"booking_id": "BK3", "instruction_id": "I3", "host_seq_no": None, "account": DEBIT,
                           "amount": "-100.00", "voucher_no": "V3", "booked_on": "2026-11-27"}),
    ]
    phase2 = [
        make_copy(8, instruction_id="I4"),
        make_copy(9, instruction_id="I4", state="succeeded", payload=result_payload(8, "H0004")),  # no booking
        make_copy(10, kind="bank.movement", state=None, instruction_id=None,
                  payload=movement_payload("H0099", -50_000)),  # nobody instructed it
    ]
    phase3 = [make_copy(11, instruction_id="I5")]

    await env.start()
    assert {r["status"] for r in await env.file(phase1)} == {"stored"}
    assert (await env.file([forged]))[0]["status"] == "refused"
    await env.stop()
    engine = make_engine(env.config.database)
    with engine.connect() as conn:
        saved = conn.execute(sa.select(store.matcher_state)).mappings().one()
    assert saved["last_seq"] == len(phase1)  # a clean stop saves the snapshot covering everything
    assert saved["snapshot"].startswith(store.PACKED)   # compressed as it was written

    await env.start()
    again = await env.file([phase1[0], forged])
    assert [r["status"] for r in again] == ["duplicate", "refused"]
    again = await env.file(phase2)
    assert [r["status"] for r in again] == ["stored"] * len(phase2)
    await env.stop()
    # A crash after phase 2 was committed but before its snapshot: the old snapshot is all there is.
    with engine.begin() as conn:
        conn.execute(sa.update(store.matcher_state).values(last_seq=saved["last_seq"],
                                                          snapshot=saved["snapshot"]))
    engine.dispose()

    await env.start()
    assert {r["status"] for r in await env.file(phase3)} == {"stored"}
    expected = _reference_keys(env.config, phase1 + phase2 + phase3) | {f"forged-copy:main:{forged['event_id']}"}
    assert {"missing-result:C52240/I2", "missing-result:C52240/I5"} <= expected
    assert any(k.startswith("unsolicited-debit:") for k in expected)
    assert any(k.startswith("booking-mismatch:C52240/I4") for k in expected)

    async def complete() -> bool:
        return set(keys_of(await all_alerts(env))) >= expected

    await until(complete, f"alerts {sorted(expected)}", TIMEOUT)
    await deferLater(reactor, 1.5, lambda: None)  # a few more ticks: nothing else may appear
    final = keys_of(await all_alerts(env))
    assert final == sorted(expected)  # every alert once: none repeated, none missed, none spurious


@pytest_twisted.ensureDeferred
async def test_deadlines_run_on_the_gateways_time_while_the_copies_lag(env):
    """The gateway had I1's result 0.15 s after I1; the ledger, falling behind, gets it 2.5 s
    after (the deadline is 1.5 s): no missing-result for I1.  I2, which never ends, gets one."""
    await env.start()
    t0 = int(reactor.seconds() * 1_000_000)
    bal = {"bank": "B001", "account": DEBIT, "balance": 5_000_000, "available": 5_000_000, "overdraft": 0,
           "status": "normal"}
    await env.file([make_copy(1, instruction_id="I1", created_us=t0, payload=received_payload("I1", 1)),
                    make_copy(2, instruction_id="I2", created_us=t0 + 1_000, payload=received_payload("I2", 2))])
    for k in range(10):  # the gateway commits a copy every 10 ms; they arrive every 250 ms
        await deferLater(reactor, 0.25, lambda: None)
        await env.file([make_copy(3 + k, kind="bank.balance", state=None, instruction_id=None,
                                  created_us=t0 + 2_000 + k * 10_000,
                                  payload=dict(bal, as_of=f"2026-11-27T09:00:{k:02d}+08:00"))])
    await env.file([make_copy(13, instruction_id="I1", state="succeeded", created_us=t0 + 150_000,
                              payload=result_payload(1, "H0001"))])

    async def i2_missing() -> bool:
        return "missing-result:C52240/I2" in keys_of(await all_alerts(env))

    await until(i2_missing, "the missing result of I2", TIMEOUT)
    missing = [k for k in keys_of(await all_alerts(env)) if k.startswith("missing-result:")]
    assert missing == ["missing-result:C52240/I2"]


@pytest.mark.parametrize("says_head", [True, False])
@pytest_twisted.ensureDeferred
async def test_a_balance_pair_waits_for_a_movement_a_batch_said_was_still_at_the_gateway(env, says_head):
    """bench/README.md, item 39, end to end: two snapshots, and the movement between them that
    the gateway journalled before it sent the later one but that reaches the ledger 5 s after
    it (the deadline is 1.5 s).  The later snapshot's batch said the journal was at the
    movement's seq: no balance-break.  A gateway that does not say (an older release) gets the
    break item 39 found, as before."""
    await env.start()
    gateway = env.client("gateway")
    url = env.url("ingest", "/v1/copies")
    t0 = int(reactor.seconds() * 1_000_000)
    moved = -160_267

    def balance(seq: int, amount: int, at: str, made_us: int) -> dict[str, Any]:
        return make_copy(seq, kind="bank.balance", state=None, instruction_id=None, created_us=made_us,
                         payload={"bank": "B001", "account": DEBIT, "balance": amount, "available": amount,
                                  "overdraft": 0, "status": "normal", "as_of": f"2026-11-27T10:30:{at}+08:00"})

    async def post(copies: list[dict[str, Any]], head: int) -> None:
        body: dict[str, Any] = {"copies": copies}
        if says_head:
            body["head_seq"] = head
        status, _, answer = await gateway.call("POST", url, body)
        assert status == 200 and [r["status"] for r in answer["results"]] == ["stored"] * len(copies), answer

    # Journalled 1.4 s after the later snapshot: within its 1.5 s on the gateway's time, which the
    # stream clock measures from the copies' own times, so the outcome does not depend on the load.
    movement = make_copy(3, kind="bank.movement", state=None, instruction_id=None, created_us=t0 - 600_000,
                         payload=dict(movement_payload("H0001", moved), time="10:30:01"))
    await post([balance(1, 10_000_000, "00", t0 - 3_000_000)], 1)
    await post([balance(2, 10_000_000 + moved, "02", t0 - 2_000_000)], 3)
    await deferLater(reactor, 5.0, lambda: None)  # the movement's POST unanswered, sent again
    await post([movement], 3)

    async def judged() -> bool:
        _, _, text = await gateway.call("GET", env.url("ops", "/metrics"), accept="text/plain")
        return 'hpf_ledger_deadlines_pending{rule="balance"} 0.0' in text \
            and "hpf_ledger_alerts_unstored 0.0" in text

    await until(judged, "the balance pair settled", TIMEOUT)
    breaks = [k for k in keys_of(await all_alerts(env)) if k.startswith("balance-break:")]
    assert len(breaks) == (0 if says_head else 1), breaks


@pytest_twisted.ensureDeferred
async def test_the_matcher_snapshot_is_taken_with_the_collector_paused(env, monkeypatch):
    """A snapshot allocates a container per record; with the collector running, that set off
    full collections over the whole heap (three quarters of the snapshot's time)."""
    seen: list[bool] = []
    snapshot_parts = Matcher.snapshot_parts  # what the engine stores, packed as it comes

    def watched(self: Matcher):
        seen.append(gc.isenabled())   # on the first piece: the snapshot is being written
        yield from snapshot_parts(self)

    monkeypatch.setattr(Matcher, "snapshot_parts", watched)
    await env.start()
    assert {r["status"] for r in await env.file([make_copy(1, instruction_id="I1")])} == {"stored"}
    await env.stop()  # a clean stop saves a snapshot
    assert seen and not any(seen)
    assert gc.isenabled()


def test_the_ledger_refuses_a_certificate_that_does_not_name_it(env):
    """ledger.name must be the NAME in the certificate's hpf://ledger/NAME, before anything listens."""
    from dataclasses import replace

    with pytest.raises(ValueError, match="names hpf://ledger/main, not hpf://ledger/north"):
        makeLedgerService(replace(env.config, name="north"), reactor)
    with pytest.raises(ValueError, match="names hpf://gateway/main"):
        makeLedgerService(replace(env.config, tls=replace(env.config.tls, certificate=env.pki.cert("gateway"),
                                                          private_key=env.pki.key("gateway"))), reactor)
