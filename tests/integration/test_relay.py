"""The relay end to end over real loopback TLS: centre -> gateway -> simulated bdc banks -> feed."""

from __future__ import annotations

import socket
import ssl
import struct
from typing import Any

import pytest
import pytest_twisted
from sqlalchemy import func, select
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from gateway.store import schema
from tests.integration.harness import (
    DEBIT_B001, DEBIT_B002, OTHER_ACCOUNT, OTHER_CENTRE, PAYEE, Harness, start_harness,
)


@pytest_twisted.async_yield_fixture
async def harness(tmp_path):
    h = await start_harness(tmp_path)
    await h.link_up("B001")
    await h.link_up("B002")
    yield h
    await h.stop()


async def stored(h: Harness) -> int:
    return await h.gateway.db.read(lambda c: c.execute(select(func.count()).select_from(schema.instructions)).scalar())


def executions(h: Harness, bank_id: str) -> dict[str, int]:
    return dict(h.banks[bank_id].core.stats()["executions"])


@pytest_twisted.ensureDeferred
async def test_an_instruction_travels_to_the_bank_and_its_result_reaches_the_feed(harness):
    c = harness.client()
    status, record = await c.submit("E2E-1", amount="1234.56")
    assert status == 202, record
    assert record["state"] == "received" and record["bank"] == "B001" and len(record["bank_ref"]) == 20
    final = await c.wait_state("E2E-1", {"succeeded", "failed"})
    assert final["state"] == "succeeded" and final["result"]["host_seq_no"].startswith("H")
    assert executions(harness, "B001") == {record["bank_ref"]: 1}
    status, feed = await c.request("GET", "/v1/results?after=0")
    states = [r["state"] for r in feed["results"] if r["instruction_id"] == "E2E-1"]
    assert states[0] == "received" and states[-1] == "succeeded"
    # replayable: from the cursor before the last item we get exactly the last item again
    cursor = feed["results"][-2]["cursor"]
    _, again = await c.request("GET", f"/v1/results?after={cursor}")
    assert again["results"] == feed["results"][-1:]


@pytest_twisted.ensureDeferred
async def test_both_link_directions_relay(harness):
    c = harness.client()
    await c.submit("DIR-1", debit=DEBIT_B001)
    await c.submit("DIR-2", debit=DEBIT_B002,
                   creditor={"account": "6222008888000022", "name": "示例房地产开发有限公司",
                             "bank_code": "102100000030"})
    assert (await c.wait_state("DIR-1", {"succeeded"}))["bank"] == "B001"
    assert (await c.wait_state("DIR-2", {"succeeded"}))["bank"] == "B002"


@pytest_twisted.ensureDeferred
async def test_resubmission_is_idempotent_and_a_changed_body_is_a_conflict(harness):
    c = harness.client()
    first, rec = await c.submit("IDEM-1", amount="10.00")
    again, rec2 = await c.submit("IDEM-1", amount="10.00")
    clash, problem = await c.submit("IDEM-1", amount="11.00")
    assert (first, again, clash) == (202, 200, 409)
    assert rec2["bank_ref"] == rec["bank_ref"]
    assert problem["type"].endswith("conflict") and problem["errors"][0]["field"] == "instruction_id"
    await c.wait_state("IDEM-1", {"succeeded"})
    assert await stored(harness) == 1
    assert executions(harness, "B001") == {rec["bank_ref"]: 1}


@pytest_twisted.ensureDeferred
async def test_a_centre_debiting_another_centres_account_gets_403_and_nothing_is_stored(harness):
    c = harness.client()
    status, problem = await c.submit("FOREIGN-1", debit=OTHER_ACCOUNT)
    assert status == 403 and problem["errors"][0]["field"] == "debit_account"
    other = harness.client(OTHER_CENTRE)
    status, _ = await other.submit("FOREIGN-2", debit=DEBIT_B001)
    assert status == 403
    assert await stored(harness) == 0


@pytest_twisted.ensureDeferred
async def test_a_centre_cannot_read_another_centres_instruction(harness):
    await harness.client().submit("MINE-1")
    status, _ = await harness.client(OTHER_CENTRE).request("GET", "/v1/instructions/MINE-1")
    assert status == 404


@pytest_twisted.ensureDeferred
async def test_policy_refusals_are_stored_as_rejected_and_reported(harness):
    c = harness.client()
    status, rec = await c.submit("POL-1", creditor={"account": "9999", "name": "无名", "bank_code": "105100000017"})
    assert status == 202 and rec["state"] == "rejected" and "counterparty" in rec["reason"]
    status, rec = await c.submit("POL-2", amount="1000000.00")
    assert status == 202 and rec["state"] == "rejected" and "approval" in rec["reason"]
    status, rec = await c.submit("POL-3", amount="1000000.00", approval_ref="SP-2026-001")
    assert status == 202 and rec["state"] == "received"
    _, feed = await c.request("GET", "/v1/results?after=0")
    rejected = {r["instruction_id"] for r in feed["results"] if r["state"] == "rejected"}
    assert rejected == {"POL-1", "POL-2"}
    await c.wait_state("POL-3", {"succeeded"})
    assert len(executions(harness, "B001")) == 1  # the rejected ones never reached the bank


@pytest_twisted.ensureDeferred
async def test_malformed_instructions_get_422_naming_every_bad_field(harness):
    c = harness.client()
    status, problem = await c.request("POST", "/v1/instructions", {
        "instruction_id": "bad id!", "debit_account": DEBIT_B001, "amount": 12.5, "purpose": "lunch",
        "creditor": {"account": "1", "name": "x", "bank_code": "12"}, "colour": "red"})
    assert status == 422
    fields = {e["field"] for e in problem["errors"]}
    assert fields == {"instruction_id", "amount", "purpose", "creditor.bank_code", "colour"}
    for raw in (b'{"instruction_id": "A", "instruction_id": "B"}', b'{"amount": NaN}', b"\xff\xfe",
                b"[" * 100000):
        status, problem = await c.request("POST", "/v1/instructions", raw=raw)
        assert status == 400, raw[:20]
    assert await stored(harness) == 0


@pytest_twisted.ensureDeferred
async def test_an_instruction_the_banks_protocol_cannot_carry_gets_422_and_is_not_stored(harness):
    """bdc speaks GBK: a memo with a character outside it is refused at intake, naming the
    wire field, instead of being stored and failing at the link; the same memo in GBK goes."""
    c = harness.client()
    status, problem = await c.submit("ENC-1", memo="公积金提取 \U0001f600")
    assert status == 422, problem
    assert "cannot be carried in GBK" in problem["errors"][0]["reason"]
    status, out = await c.request("POST", "/v1/instructions/batch", {"instructions": [
        {"instruction_id": "ENC-2", "debit_account": DEBIT_B001, "creditor": PAYEE, "amount": "1.00",
         "purpose": "withdrawal", "memo": "\u20ac"},
        {"instruction_id": "ENC-3", "debit_account": DEBIT_B001, "creditor": PAYEE, "amount": "1.00",
         "purpose": "withdrawal", "memo": "公积金提取"}]})
    assert status == 200 and [r["status"] for r in out["results"]] == [422, 202]
    await c.wait_state("ENC-3", {"succeeded"})
    assert await stored(harness) == 1


@pytest_twisted.ensureDeferred
async def test_batch_answers_one_result_per_item(harness):
    c = harness.client()
    body = {"instructions": [
        {"instruction_id": "B-1", "debit_account": DEBIT_B001, "creditor": PAYEE, "amount": "1.00",
         "purpose": "withdrawal"},
        {"instruction_id": "B-2", "debit_account": DEBIT_B001, "creditor": PAYEE, "amount": "-1",
         "purpose": "withdrawal"},
        {"instruction_id": "B-3", "debit_account": OTHER_ACCOUNT, "creditor": PAYEE, "amount": "1.00",
         "purpose": "withdrawal"},
    ]}
    status, out = await c.request("POST", "/v1/instructions/batch", body)
    assert status == 200
    assert [r["status"] for r in out["results"]] == [202, 422, 403]
    await c.wait_state("B-1", {"succeeded"})
    assert await stored(harness) == 1


@pytest_twisted.ensureDeferred
async def test_the_feed_long_poll_wakes_when_a_state_changes(harness):
    c = harness.client()
    _, feed = await c.request("GET", "/v1/results?after=0")
    start = reactor.seconds()
    waiting = defer.ensureDeferred(c.request("GET", f"/v1/results?after={feed['next']}&wait=10"))
    await deferLater(reactor, 0.2, lambda: None)
    await c.submit("LP-1")
    status, out = await waiting
    assert status == 200 and out["results"][0]["instruction_id"] == "LP-1"
    assert reactor.seconds() - start < 5


@pytest_twisted.ensureDeferred
async def test_clients_without_a_certificate_or_from_another_ca_are_refused(harness, other_ca_pki):
    for client in (harness.client(anonymous=True), harness.client(pki=other_ca_pki)):
        with pytest.raises(Exception):
            await client.submit("NOCERT-1")
    assert await stored(harness) == 0


@pytest_twisted.ensureDeferred
async def test_a_bank_link_presenting_a_centres_certificate_is_refused(harness):
    """Dial the B001 bank listener with a valid certificate of the wrong role: no sign-on is sent."""
    port = int(harness.config.banks["B001"].endpoint.split(":")[1])
    pki = harness.pki
    received = await deferToThread(_tls_dial, port, pki.cert("centre", "C52240"), pki.key("centre", "C52240"),
                                   pki.ca_cert, b"")
    assert received == b""
    assert harness.gateway.metrics.security_events.labels("bank_link_wrong_peer")._value.get() >= 1


@pytest_twisted.ensureDeferred
async def test_hostile_bdc_frames_are_refused_and_recorded_and_the_session_goes_on(harness):
    """B001 speaks bdc as deployed, a connection per request.  A bad frame header closes its
    connection; a well-framed bad message is refused on its own (an unsupported request
    answered in protocol, TxStatus 1) and journalled, and none of it costs the bank's session."""
    port = int(harness.config.banks["B001"].endpoint.split(":")[1])
    pki = harness.pki
    body_dtd = ('<?xml version="1.0" encoding="GBK"?><!DOCTYPE m [<!ENTITY x "y">]><message><head/>'
                '<body/></message>').encode()
    unsupported = ('<?xml version="1.0" encoding="GBK"?>\n<message><head>'
                   '<field name="SendDate">20171130</field><field name="SendTime">103016</field>'
                   '<field name="SendSeqNo">10500017113000000001</field><field name="SendNode">105000</field>'
                   '<field name="TxCode">BDC904</field><field name="ReceiveNode">D00000</field>'
                   '<field name="BDCDate"/><field name="BDCTime"/><field name="BDCSeqNo"/>'
                   '</head><body/></message>').encode("gbk")

    def framed(body: bytes) -> bytes:
        return b"105000" + b"0" + b"\0" * 9 + struct.pack(">I", len(body)) + body

    def dial(payload: bytes) -> Any:
        return deferToThread(_tls_dial, port, pki.cert("bank", "B001"), pki.key("bank", "B001"),
                             pki.ca_cert, payload)

    def by_kind(c: Any) -> dict[str, int]:
        # The real bank's session keeps reporting balances meanwhile: those are not the hostile peer's.
        rows = c.execute(select(schema.events.c.kind, func.count()).group_by(schema.events.c.kind))
        return {kind: n for kind, n in rows if kind != "bank.balance"}

    before = await harness.gateway.db.read(by_kind)
    got = await dial(framed(unsupported))
    assert '<field name="TxStatus">1</field><field name="RtnCode">10000</field>' in got.decode("gbk", "replace")
    for payload in (framed(body_dtd), framed(b"\xff\xfe\xfd<msg\x81\x00\x80")):
        assert await dial(payload) == b""
    for payload in (b"105000" + b"0" + b"\0" * 9 + struct.pack(">I", 50_000_000), b"\x00" * 40):
        assert await dial(payload) == b""
    refused = harness.gateway.metrics.refused
    assert refused.labels("bank:B001", "bad_message")._value.get() >= 3
    assert refused.labels("bank:B001", "bad_frame")._value.get() >= 2
    assert harness.gateway.relay.dispatchers["B001"].session is not None  # the session goes on
    assert await stored(harness) == 0
    after = await harness.gateway.db.read(by_kind)
    # Each well-framed bad message is journalled as refused (its copy raises an alert at the
    # ledger); a bad frame header is only counted; nothing else is stored.
    grown = {kind: n - before.get(kind, 0) for kind, n in after.items() if n != before.get(kind, 0)}
    assert grown == {"bank.refused": 3}, grown


@pytest_twisted.ensureDeferred
async def test_an_instruction_queued_while_the_link_is_down_is_delivered_once_after_reconnect(harness):
    c = harness.client()
    await harness.stop_bank("B001")
    for _ in range(100):
        if harness.gateway.relay.dispatchers["B001"].session is None:
            break
        await deferLater(reactor, 0.05, lambda: None)
    status, rec = await c.submit("DOWN-1")
    assert status == 202
    await deferLater(reactor, 0.3, lambda: None)
    _, now = await c.request("GET", "/v1/instructions/DOWN-1")
    assert now["state"] == "received"
    harness.start_bank("B001")
    await harness.link_up("B001")
    final = await c.wait_state("DOWN-1", {"succeeded"})
    assert executions(harness, "B001") == {final["bank_ref"]: 1}


@pytest_twisted.ensureDeferred
async def test_ops_endpoints_serve_metrics_health_and_readiness(harness):
    from twisted.web.client import Agent, readBody

    port = harness.config.ops.split(":")[1]
    agent = Agent(reactor)
    await harness.client().submit("OPS-1")
    await harness.client().wait_state("OPS-1", {"succeeded"})
    for path, needle in ((b"/metrics", b"hpf_gateway_instructions_total"), (b"/healthz", b"ok"),
                         (b"/readyz", b"ready")):
        resp = await agent.request(b"GET", b"http://127.0.0.1:%s%s" % (port.encode(), path))
        body = await readBody(resp)
        assert resp.code == 200 and needle in body, (path, body[:200])


def deferToThread(f, *args):
    from twisted.internet.threads import deferToThread as d2t

    return d2t(f, *args)


def _tls_dial(port: int, cert, key, ca, payload: bytes) -> bytes:
    """Blocking TLS client (run in a thread): send payload, return what came back before close."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as s:
            s.settimeout(5)
            try:
                if payload:
                    s.sendall(payload)
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except (ConnectionError, ssl.SSLError, OSError):
                pass
    return data


@pytest_twisted.ensureDeferred
async def test_bookings_are_journalled_once_and_checked(harness):
    c = harness.client()
    await c.submit("BK-1", amount="50.00")
    booking = {"booking_id": "V-1", "instruction_id": "BK-1", "account": DEBIT_B001, "amount": "-50.00",
               "voucher_no": "PZ2026-0001", "booked_on": "2026-11-27"}
    first, body = await c.request("POST", "/v1/bookings", booking)
    again, _ = await c.request("POST", "/v1/bookings", booking)
    clash, _ = await c.request("POST", "/v1/bookings", dict(booking, amount="-51.00"))
    assert (first, again, clash) == (202, 200, 409) and body["amount"] == "-50.00"
    status, problem = await c.request("POST", "/v1/bookings", dict(booking, booking_id="V-2", account=OTHER_ACCOUNT))
    assert status == 403
    status, problem = await c.request("POST", "/v1/bookings", dict(booking, booking_id="V-3", instruction_id="NOPE"))
    assert status == 422 and problem["errors"][0]["field"] == "instruction_id"
    kinds = await harness.gateway.db.read(
        lambda conn: conn.execute(select(schema.events.c.kind).where(schema.events.c.kind == "booking")).all())
    assert len(kinds) == 1
