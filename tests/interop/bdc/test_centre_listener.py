"""The centre role, the rest of issue 18 item 8, over real loopback mutual TLS through the
daemon's own ``[listen] centre_bdc`` listener and ``[centres.X] bdc_notify``:

- a BDC102 single collection written byte for byte as the public centre-side code writes
  it becomes the same durable instruction as the HTTPS API's, executed once, answered as
  BDC102;
- hostile and unsupported frames are answered in protocol (or, a broken header, closed),
  each counted, journalled as ``centre.refused`` through the path bank refusals take, and its
  ledger copy raises ``centre-message-refused``; the listener goes on;
- the movements of the centre's accounts are pushed to the centre's own listener as SBDC100
  notices, sent again (same SendSeqNo, same lines) until the centre answers as its
  ``CenterImpl`` does, and never again after that.
"""

from __future__ import annotations

import datetime as dt
import json
import zlib

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from adapters.base import Result, StatusQuery
from gateway.exchange import StreamTransport
from gateway.listener import when_listening
from gateway.tls import (
    client_options,
    server_options,
    tls_client_endpoint,
    tls_server_factory,
)
from tests.integration.harness import (
    CENTRE,
    DEBIT_B001,
    DEBIT_B002,
    PAYEE,
    start_harness,
)
from tests.interop.bdc import centre_side as java
from tests.interop.bdc.centre_client import UNIT, centre_codec, head

TODAY = dt.date.today()


def _transport(h, port: int) -> StreamTransport:
    options = client_options(h.pki.cert("centre", CENTRE), h.pki.key("centre", CENTRE), [h.pki.ca_cert])
    return StreamTransport(tls_client_endpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port), options),
                           centre_codec().framer, reactor, timeout=10.0)


def _head_in(seq: str, code: str, receiver: str = "105000") -> list[tuple[str, str | None]]:
    """CenterHeadIn as the centre fills it."""
    return list(zip(java.CENTER_HEAD_IN, (f"{TODAY:%Y%m%d}", "101502", seq, UNIT, CENTRE, code, receiver,
                                          "GZ20057304", "522400000000000000001")))


def _collection(seq: str, payer: str, amount: str, agreement: str | None = None) -> bytes:
    """A BDC102 as ParmBean2XMLBean + JAXBUtil write it: the payer at another bank (SettleType 2,
    DeBankClass 1, its branch in DeChgNo), ConAgrNo and RefAcctNo null, the amount as
    BigDecimal.toString writes it."""
    body = list(zip(java.SINGLE_COLLECTION_IN, (
        "2", "18", DEBIT_B002, "示例中心贷款户", "2", payer, "示例中心归集户", "2", "示例银行",
        "105100000017", "1", agreement, java.amount(amount), None, "021711300000042", "021711300000042", "资金归集")))
    return java.frame(CENTRE, java.jaxb_xml(_head_in(seq, "BDC102"), body))


async def _events(h, kind: str) -> list[dict]:
    from gateway.store import journal

    return [r for r in await h.gateway.db.read(journal.events_after, 0, 100_000) if r["kind"] == kind]


@pytest_twisted.ensureDeferred
async def test_a_collection_as_the_centre_writes_it_is_one_durable_instruction(tmp_path):
    h = await start_harness(tmp_path, banks={"B001": {}}, listen={"centre_bdc": "tcp:0:interface=127.0.0.1"})
    try:
        await h.link_up("B001")
        port = (await when_listening(h.gateway.listeners["centre_bdc"])).getHost().port
        centre = _transport(h, port)
        seq = f"52240{TODAY:%y%m%d}000000102"
        answer = await centre.request(_collection(seq, DEBIT_B001, "66.6"))
        fields = head(answer)
        assert fields["TxCode"] == "BDC102" and fields["TxStatus"] in ("0", "2"), fields
        assert answer[:7] == b"D000000"  # the settlement system's node, flag '0'

        instruction_id = f"{TODAY:%Y%m%d}-{seq}"
        record = await h.client().wait_state(instruction_id, {"succeeded"}, timeout=20)
        assert record["amount"] == "66.60" and record["instruction"]["debit_account"] == DEBIT_B001
        assert record["instruction"]["creditor"]["account"] == DEBIT_B002
        # The register's (Bank of China's 104… since the demo's B002 became one; was 102…).
        assert record["instruction"]["creditor"]["bank_code"] == h.config.accounts[DEBIT_B002].bank_code == "104100000030"
        # BDC110, as the deployed centre asks: succeeded, with the host serial.
        status = centre_codec().decode_answer(
            await centre.request(centre_codec().encode(StatusQuery(f"52240{TODAY:%y%m%d}000000103", seq, TODAY),
                                                       sender=CENTRE, receiver="105000")),
            StatusQuery(f"52240{TODAY:%y%m%d}000000103", seq, TODAY))
        assert isinstance(status, Result) and status.succeeded and status.host_seq_no
        # The same frame again: the same instruction, executed once, answered as BDC102.
        again = head(await centre.request(_collection(seq, DEBIT_B001, "66.6")))
        assert (again["TxCode"], again["TxStatus"]) == ("BDC102", "0")
        core = h.banks["B001"].link.core
        assert core.executions[record["bank_ref"]] == 1 and set(core.executions.values()) == {1}
        assert await _events(h, "centre.refused") == []

        # From a payer that is not the centre's, into the centre's account at a bank whose
        # protocol has no collection (B002, bocb2e): refused in protocol, nothing stored, recorded.
        other = f"52240{TODAY:%y%m%d}000000104"
        refused = head(await centre.request(_collection(other, PAYEE["account"], "10", "AGR-1")))
        assert (refused["TxCode"], refused["TxStatus"], refused["RtnCode"]) == ("BDC102", "1", "10000")
        assert "no collection" in refused["RtnMessage"] and "bocb2e" in refused["RtnMessage"]
        status_code, _ = await h.client().request("GET", f"/v1/instructions/{TODAY:%Y%m%d}-{other}")
        assert status_code == 404
        for _ in range(50):
            rows = await _events(h, "centre.refused")
            if rows:
                break
            await deferLater(reactor, 0.1, lambda: None)
        (row,) = rows
        assert row["centre_id"] == CENTRE and row["bank_id"] is None
        assert "no collection" in json.loads(row["payload"])["reason"]
    finally:
        await h.stop()


EMPLOYER = "6222000011112222"  # an employer holding its account at B001: not the centre's


def _employer_collection(seq: str, amount: str, agreement: str | None) -> bytes:
    """A BDC102 as ParmBean2XMLBean + JAXBUtil write it for a contribution by direct debit: the
    employer at the bank of the centre's account (SettleType 1, DeBankClass 0, DeChgNo null),
    BusType 01, the multi-party agreement in ConAgrNo."""
    body = list(zip(java.SINGLE_COLLECTION_IN, (
        "1", "01", DEBIT_B001, "示例中心归集户", "2", EMPLOYER, "示例有限公司", "2", None,
        None, "0", agreement, java.amount(amount), None, "021712070000077", "021712070000077", "12月缴存")))
    return java.frame(CENTRE, java.jaxb_xml(_head_in(seq, "BDC102"), body))


@pytest_twisted.ensureDeferred
async def test_a_collection_from_an_employer_is_a_collection_instruction_executed_once(tmp_path):
    h = await start_harness(tmp_path, banks={"B001": {"customers": {EMPLOYER: 500_000_00}}},
                            listen={"centre_bdc": "tcp:0:interface=127.0.0.1"})
    try:
        await h.link_up("B001")
        port = (await when_listening(h.gateway.listeners["centre_bdc"])).getHost().port
        centre = _transport(h, port)
        core = h.banks["B001"].link.core
        before = core.stats()["balances"][DEBIT_B001]
        seq = f"52240{TODAY:%y%m%d}000000201"
        fields = head(await centre.request(_employer_collection(seq, "1200.5", "AGR-2026-0001")))
        assert fields["TxCode"] == "BDC102" and fields["TxStatus"] in ("0", "2"), fields

        record = await h.client().wait_state(f"{TODAY:%Y%m%d}-{seq}", {"succeeded"}, timeout=20)
        ins = record["instruction"]
        assert (ins["kind"], ins["credit_account"], ins["purpose"]) == ("collection", DEBIT_B001, "contribution")
        assert ins["debtor"] == {"account": EMPLOYER, "name": "示例有限公司", "bank_code": "105100000017",
                                 "agreement_no": "AGR-2026-0001"}
        again = head(await centre.request(_employer_collection(seq, "1200.5", "AGR-2026-0001")))
        assert (again["TxCode"], again["TxStatus"]) == ("BDC102", "0")
        assert core.executions[record["bank_ref"]] == 1
        stats = core.stats()["balances"]
        assert stats[EMPLOYER] == 500_000_00 - 120_050 and stats[DEBIT_B001] == before + 120_050

        # Without ConAgrNo: no agreement, no direct debit; refused in protocol, nothing stored.
        bare = f"52240{TODAY:%y%m%d}000000202"
        refused = head(await centre.request(_employer_collection(bare, "10", None)))
        assert (refused["TxStatus"], refused["RtnCode"]) == ("1", "10000") and "agreement_no" in refused["RtnMessage"]
        status_code, _ = await h.client().request("GET", f"/v1/instructions/{TODAY:%Y%m%d}-{bare}")
        assert status_code == 404
    finally:
        await h.stop()


@pytest_twisted.ensureDeferred
async def test_hostile_and_unsupported_frames_are_answered_recorded_alerted_and_cost_nothing(tmp_path):
    import hashlib

    from adapters.base import load_adapter
    from gateway.copies import copy_of
    from gateway.ledger.checks import CopyChecker, ParsedCopy
    from gateway.ledger.config import load_public_key
    from gateway.ledger.matcher import Matcher, Registry, Thresholds
    from gateway.signing import Signer, init_signing_key

    h = await start_harness(tmp_path, banks={"B001": {}}, listen={"centre_bdc": "tcp:0:interface=127.0.0.1"})
    try:
        await h.link_up("B001")
        port = (await when_listening(h.gateway.listeners["centre_bdc"])).getHost().port
        centre = _transport(h, port)
        seq = f"52240{TODAY:%y%m%d}0000002"
        deposit = java.frame(CENTRE, java.jaxb_xml(_head_in(seq + "01", "BDC114"), list(zip(
            java.TIME_DEPOSIT_IN, ("156", "1", DEBIT_B001, "示例中心归集户", None, None, "12", None,
                                   java.amount("1000"), "1", None, "定期")))))
        transfer_in = java.frame(CENTRE, java.jaxb_xml(_head_in(seq + "02", "BDC901", "D00000"),
                                                       [("ConNum", "5224001711300001")]))
        unknown = java.frame(CENTRE, java.jaxb_xml(_head_in(seq + "03", "BDC999")))
        broken = java.frame(CENTRE, java.jaxb_xml(_head_in(seq + "04", "BDC102"),
                                                  [("SettleType", "2"), ("BusType", "18")]))
        entity = java.frame(CENTRE, b'<?xml version="1.0" encoding="GBK"?>\n<!DOCTYPE m [<!ENTITY x "y">]>'
                                    b"<message><head/><body/></message>")
        answered, reasons = [], []
        for frame in (deposit, transfer_in, unknown, broken):
            fields = head(await centre.request(frame))
            assert (fields["TxStatus"], fields["RtnCode"], fields["SendNode"]) == ("1", "10000", CENTRE), fields
            answered.append(fields["TxCode"])
            reasons.append(fields["RtnMessage"])
        assert answered == ["BDC114", "BDC901", "BDC999", "BDC102"]
        assert "not supported" in reasons[0] and "not supported" in reasons[1]
        # No head to answer (a DTD is refused before anything is read): the connection closes.
        closed = await centre.request(entity).addErrback(lambda f: None)
        assert closed is None
        # A header that cannot be a bdc frame (a length of 2 GiB): closed, nothing read after it.
        assert await centre.request(CENTRE.encode() + b"0" + bytes(9) + b"\x7f\xff\xff\xff").addErrback(
            lambda f: None) is None

        # Each one counted, and journalled once, with its bytes and hash (numbers masked).
        metric = h.gateway.metrics.refused
        assert metric.labels(f"centre_bdc:{CENTRE}", "bad_message")._value.get() == 5
        assert metric.labels(f"centre_bdc:{CENTRE}", "bad_frame")._value.get() == 1
        for _ in range(50):
            rows = await _events(h, "centre.refused")
            if len(rows) == 6:
                break
            await deferLater(reactor, 0.1, lambda: None)
        assert len(rows) == 6
        raws = {bytes(r["raw"]) for r in rows}
        assert {deposit, transfer_in, unknown, broken, entity} <= raws
        for r in rows:
            payload = json.loads(r["payload"])
            assert payload["centre"] == CENTRE and payload["size"] == len(r["raw"])
            assert payload["sha256"] == hashlib.sha256(r["raw"]).hexdigest()
            assert DEBIT_B001 not in r["payload"]

        # The ledger's own code reads the copy and raises centre-message-refused on it.
        key, pub = init_signing_key(tmp_path / "ledger-keys")
        checker = CopyChecker({"main": ("ed25519", load_public_key(pub, "ed25519"))}, load_adapter)
        row = next(r for r in rows if bytes(r["raw"]) == deposit)
        (parsed,) = checker.check("main", [json.loads(Signer(key).sign_json(copy_of(row, "main", "bdc")))])
        assert isinstance(parsed, ParsedCopy) and parsed.fact is not None
        matcher = Matcher(Registry(), Thresholds(large_amount=10**12, result_deadline_s=30, booking_deadline_s=60))
        assert [(a.rule, a.subject, a.evidence) for a in matcher.observe(parsed.fact, 0.0)] == [
            ("centre-message-refused", CENTRE, (row["event_id"],))]
        # A copy claiming to be another centre's refusal, or a bank's, is refused by the checker.
        forged = dict(copy_of(row, "main", "bdc"), bank_id="B001")
        (bad,) = checker.check("main", [json.loads(Signer(key).sign_json(forged))])
        assert not isinstance(bad, ParsedCopy) or bad.fact is None

        # The listener goes on: a collection from the centre's own account is still taken; a
        # second frame on the same connection is not read (one request per connection).
        ok = head(await centre.request(_collection(seq + "05", DEBIT_B001, "1")
                                       + _collection(seq + "06", DEBIT_B001, "2")))
        assert (ok["TxCode"], ok["RtnCode"] in ("00000", "")) == ("BDC102", True) and ok["TxStatus"] in ("0", "2")
        await h.client().wait_state(f"{TODAY:%Y%m%d}-{seq}05", {"succeeded"}, timeout=20)
        status_code, _ = await h.client().request("GET", f"/v1/instructions/{TODAY:%Y%m%d}-{seq}06")
        assert status_code == 404
    finally:
        await h.stop()


class _CentreServer(Protocol):
    """The centre's CRFCenterServer: one frame (16 + 4 + N bytes), one reply, close.  The
    reply is CenterImpl's (TxStatus 0/00000/成功, ReceiveSeqNo a fresh serial, BDCDate/BDCTime/
    BDCSeqNo null, SendNode the request's), or none at all while ``silent`` says so."""

    def __init__(self, world: dict) -> None:
        self.world, self.buf = world, b""

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) < 20 or len(self.buf) < 20 + int.from_bytes(self.buf[16:20], "big"):
            return
        frame = self.buf[:20 + int.from_bytes(self.buf[16:20], "big")]
        self.world["frames"].append(frame)
        if self.world["silent"] > 0:
            self.world["silent"] -= 1
            self.transport.abortConnection()
            return
        fields = head(frame)
        self.world["serial"] += 1
        reply = list(zip(java.CENTER_HEAD_OUT, ("0", "00000", "成功", f"{TODAY:%Y%m%d}", "101600",
                                                f"52240{TODAY:%y%m%d}{self.world['serial']:09d}", CENTRE,
                                                fields["TxCode"], None, None, None, fields["SendNode"])))
        self.transport.write(java.frame(CENTRE, java.jaxb_xml(reply)))
        self.transport.loseConnection()


def _notice_lines(frame: bytes) -> list[list[str]]:
    text = frame[20:].decode("gbk")
    data = text.split('<field name="DATA">')[1].split("<")[0]
    lines = zlib.decompress(bytes.fromhex("".join(data.split()))).decode("gbk").split("\n")
    return [line.split("|")[:-1] for line in lines if line]


@pytest_twisted.ensureDeferred
async def test_movements_are_pushed_to_the_centre_as_sbdc100_until_it_answers(tmp_path):
    world = {"frames": [], "silent": 2, "serial": 0}
    factory = Factory.forProtocol(lambda: _CentreServer(world))
    # The centre's listener (centerPort), with its own certificate; the gateway must chain to the CA.
    from gateway.pki import init_dev_pki

    pki = init_dev_pki(tmp_path / "keys", banks=["B001", "B002"], centres=[CENTRE, "C11000"])
    listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        tls_server_factory(factory, server_options(pki.cert("centre", CENTRE), pki.key("centre", CENTRE),
                                                   [pki.ca_cert])))
    notify = f"tcp:127.0.0.1:{listening.getHost().port}"
    h = await start_harness(tmp_path, banks={"B001": {}}, centres={CENTRE: {"bdc_notify": notify}})
    try:
        h.gateway.notice_pusher.retry_first = 0.2
        await h.link_up("B001")
        c = h.client()
        assert (await c.submit("NOTIFY-1", amount="12.34"))[0] == 202
        record = await c.wait_state("NOTIFY-1", {"succeeded"}, timeout=20)
        pusher = h.gateway.notice_pusher
        for _ in range(200):
            if pusher.pushed.get(CENTRE):
                break
            await deferLater(reactor, 0.1, lambda: None)
        assert pusher.pushed.get(CENTRE), world["frames"]
        # Twice unanswered, then acknowledged: the same notice each time.
        first, *rest = world["frames"]
        assert len(rest) >= 2 and all(f[20:].split(b"SendTime")[0] == first[20:].split(b"SendTime")[0]
                                      for f in rest)
        for frame in world["frames"]:
            fields = head(frame)
            assert frame[:7] == b"D000000" and frame[7:16] == bytes(9)
            assert list(fields)[:9] == list(java.SYS_HEAD_OUT)
            assert (fields["TxCode"], fields["SendNode"], fields["ReceiveNode"]) == ("SBDC100", "D00000", CENTRE)
            assert fields["SendSeqNo"] == head(first)["SendSeqNo"]
            assert _notice_lines(frame) == _notice_lines(first)
        lines = _notice_lines(first)
        assert all(len(line) == 23 for line in lines)
        debit = [line for line in lines if line[1] == DEBIT_B001 and line[2] == record["result"]["host_seq_no"]]
        assert len(debit) == 1 and debit[0][6] == "-12.34" and debit[0][12:14] == ["156", "1"]
        # Acknowledged: the cursor moved and nothing is pushed again.
        from gateway.centre_notify import cursor_name
        from gateway.store import journal

        assert await h.gateway.db.read(journal.delivered, cursor_name(CENTRE)) == pusher.cursors[CENTRE] > 0
        pushed = len(world["frames"])
        await deferLater(reactor, 1.5, lambda: None)
        assert all(host not in {line[2] for f in world["frames"][pushed:] for line in _notice_lines(f)}
                   for host in [record["result"]["host_seq_no"]])
    finally:
        await h.stop()
        await listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_centre_counts_only_with_a_certificate_from_its_own_anchor(tmp_path):
    """Centre C11000 has a CA of its own: a certificate naming it from the gateway's default CA
    (which vouches for C52240) is refused in the handshake, one from its own CA is taken."""
    import pytest

    from adapters.base import SignOn, SignOnAnswer
    from adapters.bdc import BdcAdapter
    from adapters.bdc.codec import CentreProfile
    from gateway.exchange import ExchangeFailed
    from gateway.pki import init_dev_pki

    own = init_dev_pki(tmp_path / "c11000-pki", banks=[], centres=["C11000"])
    h = await start_harness(tmp_path, banks={}, listen={"centre_bdc": "tcp:0:interface=127.0.0.1"},
                            centres={"C11000": {"ca": str(own.ca_cert)}})
    try:
        port = (await when_listening(h.gateway.listeners["centre_bdc"])).getHost().port
        codec = BdcAdapter(echo=False, centres={"C11000": CentreProfile("110000000000000", "", "")})
        sign_on = SignOn(f"11000{TODAY:%y%m%d}999999999", "C11000")

        def call(pki):
            options = client_options(pki.cert("centre", "C11000"), pki.key("centre", "C11000"), [h.pki.ca_cert])
            transport = StreamTransport(tls_client_endpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port), options),
                                        codec.framer, reactor, timeout=10.0)
            return transport.request(codec.encode(sign_on, sender="C11000", receiver="D00000"))

        with pytest.raises(ExchangeFailed):
            await call(h.pki)  # the default CA's certificate naming C11000
        answer = codec.decode_answer(await call(own), sign_on)
        assert isinstance(answer, SignOnAnswer) and answer.ok
    finally:
        await h.stop()
