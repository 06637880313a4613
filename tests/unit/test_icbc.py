"""ICBC through NC: forms, documents, NC's answers, the Result mapping, amounts in fen, the
simulated NC, and a session over real loopback HTTP.  Fixtures: tests/data/icbc/README.md."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import pytest_twisted
from twisted.internet import reactor

from adapters import base
from adapters.base import AdapterError
from adapters.icbc import Corporate, HistoryPage, NcError, Refused, Session
from adapters.icbc import codec as c
from gateway.http_transport import HttpTransport
from gateway.simulate.icbc import SIM_CODES, TRADE_PATH, NcFrontEnd, make_sites

DATA = Path(__file__).parent.parent / "data" / "icbc"
T0 = dt.datetime(2016, 6, 4, 2, 11, 26, 420000)
CORP = Corporate("400090005211857", "840209.y.4000")
PAYER, PAYEE = "4000023319200888888", "6226200600888888"


def nc(doc_bytes: bytes) -> bytes:
    return b"reqData=" + base64.b64encode(doc_bytes)


def session() -> Session:
    return Session(CORP, lambda: T0)


def instruction(seq_no: str = "68612255120160604021120300", amount: int = 1,
                same_bank: bool = False) -> base.Instruction:
    return base.Instruction(
        seq_no=seq_no, send_date=T0.date(), centre_node="C52240", unit_no="522400000000000",
        debit_account=PAYER, debit_name="深圳市星电商科技有限公司", creditor_account=PAYEE,
        creditor_name="张三", creditor_bank_code="" if same_bank else "305584018060",
        creditor_personal=True, same_bank=same_bank, amount=amount, purpose="withdrawal",
        memo="星意", reference="R-1")


def test_payent_package_is_keyed_by_the_durable_serial_in_fen() -> None:
    doc = c.read_document(session().payent_document(instruction(amount=123456)))
    p = doc.pub
    assert (p.TransCode, p.CIS, p.BankCode, p.ID, p.fSeqno) == (
        "PAYENT", CORP.cis, "102", CORP.cert_id, "68612255120160604021120300")
    assert (p.TranDate, p.TranTime) == ("20160604", "021126420000")
    assert doc.get("TotalNum") == "1" and doc.get("TotalAmt") == "123456"
    [rd] = doc.records
    assert rd.get("iSeqno") == "1" and rd.get("PayAmt") == "123456" and rd.get("CurrType") == "001"
    assert rd.get("SysIOFlg") == "2" and rd.get("RecBankNo") == "305584018060"
    assert rd.get("RecAccNameCN") == "张三" and rd.get("ERPSqn") == "R-1"
    same = c.read_document(session().payent_document(instruction(same_bank=True))).records[0]
    assert same.get("SysIOFlg") == "1" and same.get("RecBankNo") == ""


def test_the_form_carries_the_signed_package_in_gbk() -> None:
    form = session().payent_form(instruction(), "SIGNED+/=")
    fields = c.read_form(form)
    assert fields == {"TransCode": "PAYENT", "BankCode": "102", "GroupCIS": CORP.cis,
                      "ID": CORP.cert_id, "PackageID": "68612255120160604021120300",
                      "reqData": "SIGNED+/="}
    query = parse_qs(c.nc_query(form, T0))
    assert query == {"userID": [CORP.cert_id], "PackageID": ["68612255120160604021120300"],
                     "SendTime": ["20160604021126"]}


def test_a_query_form_carries_the_plain_document() -> None:
    q = base.StatusQuery("Q1", "68612255120160604021120300", T0.date())
    fields = c.read_form(session().request(q))
    doc = c.read_document(fields["reqData"].encode("gbk"))
    assert doc.pub.TransCode == "QPAYENT" and doc.pub.fSeqno == "Q1"
    assert doc.get("QryfSeqno") == "68612255120160604021120300"
    assert doc.records[0].leaves == {"iSeqno": "1", "QryiSeqno": "1"}


def test_the_source_sample_qpayent_result_4_is_still_in_progress() -> None:
    q = base.StatusQuery("Q1", "68612255120160604021120300", T0.date())
    [got] = session().read(q, nc((DATA / "QPAYENT-rs.xml").read_bytes()))
    assert got == base.Receipt("68612255120160604021126", "Q1", "68612255120160604021120300",
                               bank_seq_no="CMM700429979")


@pytest.mark.parametrize(("result", "kind", "ok"), [
    *[(str(r), base.Receipt, None) for r in (0, 1, 2, 3, 4, 5, 9, 10)],
    ("7", base.Result, True), ("6", base.Result, False), ("8", base.Result, False),
    ("11", base.Result, False)])
def test_every_result_code_maps_exactly(result: str, kind: type, ok: bool | None) -> None:
    q = base.StatusQuery("Q1", "68612255120160604021120300", T0.date())
    data = (DATA / "QPAYENT-rs.xml").read_bytes().replace(b"<Result>4</Result>",
                                                          f"<Result>{result}</Result>".encode())
    [got] = session().read(q, nc(data))
    assert type(got) is kind
    if ok is not None:
        assert got.succeeded is ok
        if not ok:
            assert got.code == "D0504" and got.text == "跨行支付报文已发送"


@pytest.mark.parametrize("result", ["", "12", "-1", "７"])
def test_an_unknown_result_is_no_outcome(result: str) -> None:
    q = base.StatusQuery("Q1", "68612255120160604021120300", T0.date())
    data = (DATA / "QPAYENT-rs.xml").read_bytes().replace(b"<Result>4</Result>",
                                                          f"<Result>{result}</Result>".encode("gbk"))
    with pytest.raises(AdapterError):
        session().read(q, nc(data))


def test_nc_error_code_and_a_refused_package_are_errors_not_outcomes() -> None:
    q = base.StatusQuery("Q1", "68612255120160604021120300", T0.date())
    with pytest.raises(NcError, match="40418"):
        session().read(q, b"errorCode=40418")
    data = (DATA / "QPAYENT-rs.xml").read_bytes().replace(b"<RetCode>0</RetCode>",
                                                          b"<RetCode>B0116</RetCode>")
    with pytest.raises(Refused):
        session().read(q, nc(data))


def test_balance_in_fen() -> None:
    [b] = session().read(base.BalanceQuery("B1", PAYER), nc((DATA / "QACCBAL-rs.xml").read_bytes()))
    assert (b.balance, b.available, b.reply_to) == (1234567, 1200000, "B1")


def test_history_page_with_next_tag() -> None:
    page = HistoryPage("H1", PAYER, dt.date(2016, 6, 1), dt.date(2016, 6, 3))
    doc = c.read_document(c.read_form(session().request(page))["reqData"].encode("gbk"))
    assert (doc.get("AccNo"), doc.get("BeginDate"), doc.get("EndDate"), doc.get("NextTag")) == (
        PAYER, "20160601", "20160603", "")
    got = session().read(page, nc((DATA / "QHISD-rs.xml").read_bytes()))
    assert got.more and got.next_tag == "2"
    debit, credit = got.statement.entries
    assert (debit.amount, debit.balance_after, debit.host_seq_no) == (-100, 1234467, "S0001")
    assert debit.counterparty_bank_code == "305584018060" and debit.remark == "附言"
    assert (credit.amount, credit.time, credit.value_date) == (5000, dt.time(10, 20, 30),
                                                               dt.date(2016, 6, 3))


@pytest.mark.parametrize("body", [b"", b"reqData=!!!", b"reqData=" + base64.b64encode(b"<x/>"),
                                  b"hello", b"errorCode=", b"reqData=" + base64.b64encode(
                                      b'<?xml version="1.0" encoding="GBK"?><CMS><eb><pub/></eb></CMS>')])
def test_hostile_nc_answers_are_refused(body: bytes) -> None:
    with pytest.raises(AdapterError):
        session().read(base.BalanceQuery("B1", PAYER), body)


def test_the_signature_is_what_nc_puts_between_sign_tags() -> None:
    assert c.read_signature(b"<result><sign>AB\r\nCD</sign></result>") == "ABCD"
    with pytest.raises(AdapterError):
        c.read_signature(b"<result><error>1</error></result>")


# -- the simulated NC ----------------------------------------------------------------------------


def drive(front: NcFrontEnd, s: Session, message: object, now: dt.datetime = T0) -> object:
    if isinstance(message, base.Instruction):
        signed = c.read_signature(front.sign(c.sign_request(s.payent_document(message))))
        return s.read(message, front.trade(s.payent_form(message, signed), now))
    return s.read(message, front.trade(s.request(message), now))


def test_simulated_nc_processes_then_settles_once_and_keeps_balances() -> None:
    front = NcFrontEnd(CORP.cis, CORP.cert_id, {PAYER: 10_000, PAYEE: 0}, polls_before_final=2)
    s = session()
    ins = instruction("P1", 3_000, same_bank=True)
    [receipt] = drive(front, s, ins)
    assert isinstance(receipt, base.Receipt) and receipt.bank_seq_no.startswith("CMM")
    q = base.StatusQuery("Q1", "P1", T0.date())
    assert type(drive(front, s, q)[0]) is base.Receipt
    assert type(drive(front, s, q)[0]) is base.Receipt
    [result] = drive(front, s, q)
    assert isinstance(result, base.Result) and result.succeeded
    drive(front, s, ins)   # resent package: answered as before, nothing executes again
    drive(front, s, q)
    assert front.executions == 1 and front.balances == {PAYER: 7_000, PAYEE: 3_000}
    [b] = drive(front, s, base.BalanceQuery("B1", PAYER))
    assert b.balance == 7_000


def test_simulated_nc_refuses_an_unaffordable_payment_and_an_unknown_package() -> None:
    front = NcFrontEnd(CORP.cis, CORP.cert_id, {PAYER: 10}, polls_before_final=0)
    s = session()
    drive(front, s, instruction("P2", 3_000))
    [result] = drive(front, s, base.StatusQuery("Q", "P2", T0.date()))
    assert not result.succeeded and result.code == SIM_CODES["insufficient_funds"]
    with pytest.raises(Refused) as e:
        drive(front, s, base.StatusQuery("Q", "never", T0.date()))
    assert e.value.code == SIM_CODES["no_such_package"]


def test_simulated_nc_answers_a_bad_form_with_an_error_code() -> None:
    front = NcFrontEnd(CORP.cis, CORP.cert_id, {})
    assert front.trade(b"TransCode=QACCBAL&BankCode=999", T0) == \
        b"errorCode=" + SIM_CODES["bad_form"].encode()
    unsigned = session().payent_form(instruction(), "not base64 <CMS>")
    assert front.trade(unsigned, T0).startswith(b"errorCode=")


def test_simulated_nc_pages_history_by_next_tag() -> None:
    front = NcFrontEnd(CORP.cis, CORP.cert_id, {PAYER: 100_000}, polls_before_final=0, page_size=2)
    s = session()
    for i in range(5):
        drive(front, s, instruction(f"P{i}", 100 + i, same_bank=True))
        drive(front, s, base.StatusQuery(f"Q{i}", f"P{i}", T0.date()))
    tag, amounts, pages = "", [], 0
    while True:
        got = drive(front, s, HistoryPage(f"H{pages}", PAYER, T0.date(), T0.date(), tag))
        amounts += [e.amount for e in got.statement.entries]
        pages += 1
        if not got.more:
            break
        tag = got.next_tag
    assert pages == 3 and amounts == [-(100 + i) for i in range(5)]


@pytest_twisted.ensureDeferred
async def test_a_session_pays_through_nc_over_loopback_http() -> None:
    front = NcFrontEnd(CORP.cis, CORP.cert_id, {PAYER: 10_000, PAYEE: 0}, polls_before_final=0)
    trade_site, sign_site = make_sites(front, lambda: T0)
    trade = reactor.listenTCP(0, trade_site, interface="127.0.0.1")
    sign = reactor.listenTCP(0, sign_site, interface="127.0.0.1")
    try:
        base_url = f"http://127.0.0.1:{trade.getHost().port}{TRADE_PATH.decode()}"
        trading = HttpTransport(reactor, base_url, timeout=10,
                                content_type=b"application/x-www-form-urlencoded",
                                query=lambda form: c.nc_query(form, T0))
        signing = HttpTransport(reactor, f"http://127.0.0.1:{sign.getHost().port}", timeout=10,
                                content_type=b"INFOSEC_SIGN/1.0")
        s = session()
        ins = instruction("P9", 2_500, same_bank=True)
        signed = c.read_signature(await signing.request(c.sign_request(s.payent_document(ins))))
        [receipt] = s.read(ins, await trading.request(s.payent_form(ins, signed)))
        assert isinstance(receipt, base.Receipt)
        q = base.StatusQuery("Q9", "P9", T0.date())
        [result] = s.read(q, await trading.request(s.request(q)))
        assert isinstance(result, base.Result) and result.succeeded
        assert front.balances == {PAYER: 7_500, PAYEE: 2_500}
    finally:
        await trade.stopListening()
        await sign.stopListening()


def test_the_adapter_reads_the_source_sample_and_nc_answers_as_captured() -> None:
    from adapters.icbc import IcbcAdapter

    a = IcbcAdapter()
    sample = (DATA / "QPAYENT-rs.xml").read_bytes().strip()
    assert a.decode(sample) == base.Receipt(
        "68612255120160604021126", "68612255120160604021126", "68612255120160604021120300",
        bank_seq_no="CMM700429979")
    assert a.decode_document(nc(sample)) == [a.decode(sample)]
    with pytest.raises(AdapterError, match="40418"):
        a.decode_document(b"errorCode=40418")
    f = a.framer()
    assert f.feed(sample + (DATA / "QACCBAL-rs.xml").read_bytes().strip())[0] == sample


def test_the_adapter_writes_the_package_the_session_writes() -> None:
    from adapters.icbc import IcbcAdapter

    ins = instruction()
    by_adapter = c.read_document(IcbcAdapter(CORP).encode(ins, sender="C52240"))
    by_session = c.read_document(session().payent_document(ins))
    assert by_adapter.records == by_session.records


@pytest_twisted.ensureDeferred
async def test_the_adapter_and_nc_transport_pay_through_the_simulated_nc() -> None:
    """What a request/answer link drives: adapter.encode -> NcTransport (signing, form, URL
    query, base64) -> adapter.decode_answer; errorCode and signing failures as transport errors."""
    from adapters.icbc import IcbcAdapter
    from gateway.http_transport import NcTransport, TransportError

    front = NcFrontEnd(CORP.cis, CORP.cert_id, {PAYER: 10_000, PAYEE: 0}, polls_before_final=1)
    trade_site, sign_site = make_sites(front, lambda: T0)
    trade = reactor.listenTCP(0, trade_site, interface="127.0.0.1")
    sign = reactor.listenTCP(0, sign_site, interface="127.0.0.1")
    try:
        nc_link = NcTransport(
            HttpTransport(reactor, f"http://127.0.0.1:{trade.getHost().port}{TRADE_PATH.decode()}",
                          timeout=10, content_type=b"application/x-www-form-urlencoded",
                          query=lambda form: c.nc_query(form, T0)),
            HttpTransport(reactor, f"http://127.0.0.1:{sign.getHost().port}", timeout=10,
                          content_type=b"INFOSEC_SIGN/1.0"))
        a = IcbcAdapter(CORP, lambda: T0)

        async def exchange(m: base.Message) -> base.Message:
            frame = a.encode(m, sender="C52240", receiver="102000")
            return a.decode_answer(await nc_link.request(frame), m)

        ins = instruction("P7", 1_000, same_bank=True)
        receipt = await exchange(ins)
        assert isinstance(receipt, base.Receipt) and receipt.ref == "P7"
        q = base.StatusQuery("Q7", "P7", T0.date())
        assert isinstance(await exchange(q), base.Receipt)        # Result 4 first
        result = await exchange(q)
        assert isinstance(result, base.Result) and result.succeeded and result.reply_to == "Q7"
        balance = await exchange(base.BalanceQuery("B7", PAYER))
        assert balance.balance == 9_000
        with pytest.raises(Refused):
            await exchange(base.StatusQuery("Q8", "unknown", T0.date()))
        with pytest.raises(TransportError) as e:   # NC refuses a form of another customer
            other = IcbcAdapter(Corporate("999", CORP.cert_id), lambda: T0)
            await nc_link.request(other.encode(base.BalanceQuery("B8", PAYER), sender="C52240"))
        assert e.value.delivered is None and "errorCode" in str(e.value)
    finally:
        await trade.stopListening()
        await sign.stopListening()
    with pytest.raises(TransportError) as e:   # signing port gone: never delivered
        await nc_link.request(a.encode(instruction("P8", 1), sender="C52240"))
    assert e.value.delivered is False
    assert front.executions == 1


def test_the_evidence_of_one_exchange_decodes_to_the_bound_answer() -> None:
    from adapters.icbc import IcbcAdapter

    q = base.StatusQuery("Q1", "68612255120160604021120300", T0.date())
    request = IcbcAdapter(CORP, lambda: T0).encode(q, sender="C52240")
    [got] = IcbcAdapter().decode_all(request + (DATA / "QPAYENT-rs.xml").read_bytes())
    assert isinstance(got, base.Receipt) and got.reply_to == "Q1"


def test_simulated_nc_answers_a_bad_next_tag_instead_of_crashing() -> None:
    front = NcFrontEnd(CORP.cis, CORP.cert_id, {PAYER: 1})
    page = HistoryPage("H1", PAYER, T0.date(), T0.date(), "not-a-number")
    with pytest.raises(Refused):
        session().read(page, front.trade(session().request(page), T0))


def test_a_transfer_within_icbc_is_never_refused_for_carrying_a_bank_code() -> None:
    """The gateway may hold the payee's CNAPS code for a same-bank transfer; it is not written."""
    from adapters.icbc import IcbcAdapter

    ins = base.Instruction(**{**instruction(same_bank=True).__dict__, "creditor_bank_code": "102100000030"})
    [rd] = c.read_document(IcbcAdapter(CORP).encode(ins, sender="C52240")).records
    assert rd.get("SysIOFlg") == "1" and rd.get("RecBankNo") == ""


def test_a_payment_is_checked_without_writing_its_document(monkeypatch: pytest.MonkeyPatch) -> None:
    """The intake asks of every payment whether its link could send it: the check reads the
    document's values, and writes the document only to refuse it as encode does."""
    from adapters.icbc import IcbcAdapter

    adapter = IcbcAdapter(CORP)
    uncarried = base.Instruction(**{**instruction().__dict__, "memo": "星\u0e01"})  # Thai: not in GBK
    with pytest.raises(AdapterError) as refused:
        adapter.encode(uncarried, sender="C52240")
    written: list[c.Doc] = []
    write = c.write_document
    monkeypatch.setattr(c, "write_document", lambda doc: written.append(doc) or write(doc))
    adapter.check(instruction(), sender="C52240")
    assert written == []
    with pytest.raises(AdapterError) as checked:
        adapter.check(uncarried, sender="C52240")
    assert str(checked.value) == str(refused.value) and "Summary" in str(refused.value)
    assert len(written) == 1
