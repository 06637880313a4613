"""Interop with the public centre-side code (WJustHM/housingfund), both directions.

Every frame here is built as :mod:`tests.interop.bdc.centre_side` restates the public
project's classes; each test names the class it relies on.  Where the public code is the
party answering (the centre's replies to SBDC100 and SYS600) our frames must equal its
byte for byte; where it reads ours, every field its bean reads must be there, by name, in
its order.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from adapters.base import (
    Ack, AdapterError, Balance, BalanceQuery, Entry, Heartbeat, HeartbeatAnswer, Instruction,
    Movement, Receipt, Result, SignOn, StatusQuery,
)
from adapters.bdc import BdcAdapter
from adapters.bdc.codec import AnswerRefused, CentreProfile
from tests.interop.bdc import centre_side as java
from tests.interop.bdc.heads import (
    BANK,
    BDC,
    CENTRE,
    NOTICE_HEAD,
    NOW,
    SEQ,
    answer_head,
    centre_head,
    line,
)

ADAPTER = BdcAdapter(clock=lambda: NOW, echo=False, centres={
    CENTRE: CentreProfile("522400000000000", "GZ20057304", "522400000000000000001")})


def body_names(frame: bytes, part: str) -> list[str]:
    text = frame[20:].decode("gbk")
    inner = text.split(f"<{part}>")[1].split(f"</{part}>")[0] if f"<{part}>" in text else ""
    return [chunk.split('"')[0] for chunk in inner.split('<field name="')[1:]]


INSTRUCTION = Instruction(
    SEQ, dt.date(2017, 11, 30), CENTRE, "522400000000000", "6200001111222233", "示例中心归集户",
    "6200004444555566", "张三", "104100000017", True, False, 250000, "withdrawal", "部分提取",
    "021711300000042")


# -- centre to bank: what the centre writes, read ----------------------------------------


TRANSFER = dataclasses.replace(INSTRUCTION, purpose="allocation", creditor_personal=False,
                               reference="081711300000042", memo="资金划转")


@pytest.mark.parametrize("amt", [java.amount("2500"), java.amount("2500.00"), java.amount("2.5E+3")])
def test_single_transfer_request_as_the_centre_writes_it_is_read(amt: str) -> None:
    """SingleTransferAccountIn + CenterHeadIn via ParmBean2XMLBean and JAXBUtil: no RefSeqNo,
    RefAcctNo null, the amount as BigDecimal.toString writes it."""
    body = list(zip(java.SINGLE_TRANSFER_IN, (
        "2", "18", "6200001111222233", "示例中心归集户", "2", "6200004444555566", "张三", "2", "1",
        "中国银行", "104100000017", amt, None, "081711300000042", "资金划转")))
    frame = java.frame(CENTRE, java.jaxb_xml(centre_head("BDC109"), body))
    assert ADAPTER.decode(frame) == TRANSFER


def test_partial_withdrawal_as_the_centre_writes_it_is_read() -> None:
    """SinglePaymentIn (CollectionWithdrawlTrader's call): principal only, interest legs null,
    no RefSeqNo1/RefSeqNo2 in the bean."""
    body = list(zip(java.SINGLE_PAYMENT_IN, (
        "2", "02", "6200001111222233", "示例中心归集户", "2", java.amount("2500"), None, None, None,
        None, None, "6200004444555566", "张三", "1", "1", "中国银行", "104100000017",
        java.amount("2500"), None, "021711300000042", "部分提取")))
    frame = java.frame(CENTRE, java.jaxb_xml(centre_head("BDC101"), body))
    assert ADAPTER.decode(frame) == INSTRUCTION


def test_result_query_request_as_the_centre_writes_it_is_read() -> None:
    """TransactionResultQueryIn: TxDate and TxSeqNo of the original request."""
    body = list(zip(java.RESULT_QUERY_IN, ("20171130", SEQ)))
    frame = java.frame(CENTRE, java.jaxb_xml(centre_head("BDC110", "52240171130000000008"), body))
    assert ADAPTER.decode(frame) == StatusQuery("52240171130000000008", SEQ, dt.date(2017, 11, 30))


def test_balance_request_with_the_centres_swapped_currency_fields_is_read() -> None:
    """ActivedAccBalanceQueryIn as SettlementSpecialBankAccountManageServiceImpl fills it:
    CurrNo 1 and CurrIden 156 (swapped)."""
    body = list(zip(java.BALANCE_QUERY_IN, ("1", "156", "6200001111222233", "1")))
    frame = java.frame(CENTRE, java.jaxb_xml(centre_head("BDC123", "52240171130000000009"), body))
    assert ADAPTER.decode(frame) == BalanceQuery("52240171130000000009", "6200001111222233")


def test_sign_in_as_the_centre_writes_it_is_read() -> None:
    """LoginIn: head only (an empty <body/>), clear flag '1', SendSeqNo ending 999999999."""
    frame = java.frame(CENTRE, java.jaxb_xml(centre_head("BDC001", "52240171130999999999",
                                                         "105000")), flag=b"1")
    assert ADAPTER.decode(frame) == SignOn("52240171130999999999", CENTRE)


def test_our_requests_carry_every_field_of_the_centres_beans_in_their_order() -> None:
    """CenterHeadIn and SingleTransferAccountIn field order; PROTOCOL's RefSeqNo after RefAcctNo."""
    frame = ADAPTER.encode(TRANSFER, sender=BDC, receiver=BANK)
    assert body_names(frame, "head") == list(java.CENTER_HEAD_IN)
    expected = list(java.SINGLE_TRANSFER_IN)
    expected.insert(expected.index("RefAcctNo") + 1, "RefSeqNo")
    assert body_names(frame, "body") == expected
    for name, value in (("CrBankName", "中国银行股份有限公司"), ("Summary", "081711300000042"),
                        ("RefSeqNo", "081711300000042"), ("CustNo", "GZ20057304"), ("Amt", "2500.00")):
        assert f'<field name="{name}">{value}</field>' in frame[20:].decode("gbk")
    payment = ADAPTER.encode(INSTRUCTION, sender=BDC, receiver=BANK)  # SinglePaymentIn's order,
    expected = list(java.SINGLE_PAYMENT_IN)                          # PROTOCOL's RefSeqNo1/2 added
    expected[expected.index("RefAcctNo") + 1:expected.index("RefAcctNo") + 1] = ["RefSeqNo1", "RefSeqNo2"]
    assert body_names(payment, "body") == expected
    query = ADAPTER.encode(StatusQuery("Q1", SEQ, dt.date(2017, 11, 30)), sender=CENTRE, receiver=BANK)
    assert body_names(query, "body") == list(java.RESULT_QUERY_IN)
    balance = ADAPTER.encode(BalanceQuery("Q2", "62"), sender=CENTRE, receiver=BANK)
    assert body_names(balance, "body") == list(java.BALANCE_QUERY_IN)


# -- bank to centre: answers and notices as the centre reads them ------------------------


def test_simulated_transfer_answer_is_a_success_bound_to_its_request() -> None:
    """BankImpl's answer: TxStatus 0, 00000, success, no other head value (so no SendSeqNo);
    SingleTransferAccountOut HostStatus 0, HostSeqNo = the request's SendSeqNo."""
    body = list(zip(java.SINGLE_TRANSFER_OUT, ("0", SEQ)))
    frame = java.frame(BANK, java.jaxb_xml(answer_head("BDC109"), body))
    got = ADAPTER.decode_answer(frame, INSTRUCTION)
    assert got == Result("", SEQ, SEQ, True, SEQ, "", "", "success")


@pytest.mark.parametrize("status", ["1", "2"])
def test_a_non_zero_transfer_status_is_unconfirmed(status: str) -> None:
    """The centre (HandleAccChangeNotice) asks BDC110 whenever TxStatus is not 0."""
    frame = java.frame(BANK, java.jaxb_xml(answer_head("BDC109", status, "BANCS.0169", "失败"),
                                           [("HostStatus", None), ("HostSeqNo", None)]))
    assert ADAPTER.decode_answer(frame, INSTRUCTION) == Receipt("", SEQ, SEQ, "")


@pytest.mark.parametrize("old,succeeded", [("0", True), ("1", False), ("2", None)])
def test_result_query_answer_without_tx_seq_no_gives_the_outcome(old: str, succeeded: bool | None) -> None:
    """TransactionResultQueryOut (OldTxStatus 0 success, 1 failure, 2 processing/unknown);
    the answer names no transaction: the query on its connection does."""
    body = list(zip(java.RESULT_QUERY_OUT, (old, "H000123456", None, None, None, None)))
    frame = java.frame(BANK, java.jaxb_xml(answer_head("BDC110", text="成功"), body))
    query = StatusQuery("Q1", SEQ, dt.date(2017, 11, 30))
    got = ADAPTER.decode_answer(frame, query)
    if succeeded is None:
        assert got == Receipt("", "Q1", SEQ, "")
    else:
        assert isinstance(got, Result) and got.succeeded is succeeded and got.ref == SEQ
        assert got.host_seq_no == "H000123456"


def test_a_failed_result_query_leaves_the_outcome_unknown() -> None:
    """TxStatus 1 on BDC110: the centre hands the item to manual handling, guessing nothing."""
    frame = java.frame(BANK, java.jaxb_xml(answer_head("BDC110", "1", "10000", "失败"),
                                           [(n, None) for n in java.RESULT_QUERY_OUT]))
    with pytest.raises(AnswerRefused):
        ADAPTER.decode_answer(frame, StatusQuery("Q1", SEQ, dt.date(2017, 11, 30)))


def test_balance_answer_with_integer_amounts_is_read() -> None:
    """ActivedAccBalanceQueryOut with AcctOverBal 0 and BigDecimal amounts without decimals."""
    body = list(zip(java.BALANCE_QUERY_OUT, ("6200001111222233", "示例中心归集户", "1000000",
                                             "999999.5", "0", "正常")))
    frame = java.frame(BANK, java.jaxb_xml(answer_head("BDC123", ReceiveDate="20171130",
                                                       ReceiveTime="103016"), body))
    got = ADAPTER.decode_answer(frame, BalanceQuery("Q2", "6200001111222233"))
    assert got == Balance("", "Q2", "6200001111222233", 100000000, 99999950, 0, "示例中心归集户",
                          "正常", NOW)


def test_unknown_answer_fields_are_ignored_and_counted() -> None:
    """XMLBean2ParmBean sets bean fields by name and ignores the rest (a Remark in BDC109)."""
    adapter = ADAPTER.variant()
    adapter.ignored = type(adapter.ignored)()
    body = [("HostStatus", "0"), ("HostSeqNo", "H1"), ("Remark", "备注")]
    frame = java.frame(BANK, java.jaxb_xml(answer_head("BDC109"), body))
    assert isinstance(adapter.decode_answer(frame, INSTRUCTION), Result)
    assert adapter.ignored["Remark"] == 1


# -- notices --------------------------------------------------------------------------





ENTRY = Entry("6200001111222233", SEQ, -250000, dt.date(2017, 11, 30), dt.time(10, 30, 15),
              "6200004444555566", "张三", "", 100000000, "部分提取", "021711300000042", False)
def test_simulated_notice_is_read_and_acknowledged_as_the_centre_replies() -> None:
    """BankImpl's SBDC100 (body first, indented, serial line number, null columns, -2500 and
    1000000); the reply equals CenterImpl + ParmBean2XMLBean + CRFCenterServer's, byte for byte."""
    frame = java.frame(BDC, java.simulator_notice(NOTICE_HEAD, "BDC_BAL_NTF_1512009016000.act",
                                                  java.data(line(no=SEQ))))
    assert ADAPTER.decode(frame) == Movement("D0000020171130004711", (ENTRY,))
    ack = ADAPTER.encode(Ack("52240171130000000011", "D0000020171130004711"), sender=CENTRE,
                         receiver=BDC)
    head = list(zip(java.CENTER_HEAD_OUT, ("0", "00000", "成功", "20171130", "103016",
                                           "52240171130000000011", CENTRE, "SBDC100", None, None,
                                           None, BDC)))
    assert ack == java.frame(CENTRE, java.jaxb_xml(head))


def test_probe_is_answered_as_the_centre_answers_it() -> None:
    """SYS600 from BDC (SysHeadOut); the reply as CenterImpl fills InterfaceCheckIn's head."""
    head = [(n, v if n != "TxCode" else "SYS600") for n, v in NOTICE_HEAD]
    probe = java.frame(BDC, java.jaxb_xml(head), flag=b"1")
    assert ADAPTER.decode(probe) == Heartbeat("D0000020171130004711", BDC)
    answer = ADAPTER.encode(HeartbeatAnswer("52240171130000000012", "D0000020171130004711", CENTRE),
                            sender=CENTRE, receiver=BDC)
    expected = list(zip(java.CENTER_HEAD_OUT, ("0", "00000", "成功", "20171130", "103016",
                                               "52240171130000000012", CENTRE, "SYS600", None,
                                               None, None, BDC)))
    assert answer == java.frame(CENTRE, java.jaxb_xml(expected))


def notice(file_text: str, *, row: str = "0", rows: int = 1, empty: bool = False,
           grouped: bool = False) -> bytes:
    data = "" if empty else java.data(file_text, grouped=grouped)
    xml = java.jaxb_xml(NOTICE_HEAD, (), ("BDC_BAL_NTF_20171130_103016000.act", data)).decode("gbk")
    one = xml.split('<field-list name="FILE_LIST">')[1].split("</field-list></field-list>")[0]
    xml = xml.replace(f"{one}</field-list>", (one + "</field-list>") * rows, 1)
    xml = xml.replace('<field-list name="0">', f'<field-list name="{row}">')
    return java.frame(BDC, xml.encode("gbk"))


@pytest.mark.parametrize("case,frame,entries", [
    ("a 24th column (AccChangeNoticeFile's scan-file field)", lambda: notice(line(extra=("scan.pdf",))), 1),
    ("a FILE_LIST row named Name", lambda: notice(line(), row="Name"), 1),
    ("two FILE_LIST rows", lambda: notice(line(), rows=2), 2),
    ("an empty DATA", lambda: notice("", empty=True), 0),
    ("CurrNo and CurrIden swapped", lambda: notice(line(curr=("1", "156"))), 1),
    ("a 3-digit bank code", lambda: notice(line(bank_no="104")), 1),
    ("a 14-digit bank code", lambda: notice(line(bank_no="10410000001712")), 1),
    ("DATA in spaced groups (the capture)", lambda: notice(line() + "\n" + line(no="2"), grouped=True), 2),
    ("#END trailer", lambda: notice(line() + "\n#END"), 1),
])
def test_notice_quirks_the_centre_accepts_are_read(case: str, frame, entries: int) -> None:  # type: ignore[no-untyped-def]
    got = ADAPTER.decode(frame())
    assert isinstance(got, Movement) and len(got.entries) == entries, case
    for e in got.entries:
        assert e.amount == -250000 and e.balance_after == 100000000


def test_an_unsupported_inbound_code_is_refused_in_protocol() -> None:
    """BDC904 from BDC: CRFCenterServer answers what it does not handle with TxStatus 1;
    PROTOCOL's centre reply for an unknown TxCode is 1 / 10000 / 失败 (§3.3)."""
    head = [(n, v if n != "TxCode" else "BDC904") for n, v in NOTICE_HEAD]
    frame = java.frame(BDC, java.jaxb_xml(head, [("OrConNum", "52240017113000001")]))
    with pytest.raises(AdapterError, match="not supported"):
        ADAPTER.decode(frame)
    refusal = ADAPTER.refusal(frame, sender=CENTRE, seq_no="52240171130000000013")
    expected = list(zip(java.CENTER_HEAD_OUT, ("1", "10000", "失败", "20171130", "103016",
                                               "52240171130000000013", CENTRE, "BDC904", None,
                                               None, None, BDC)))
    assert refusal == java.frame(CENTRE, java.jaxb_xml(expected))


def test_our_notices_are_lines_the_centre_reads() -> None:
    """What we push as BDC: 23 columns each followed by '|', CurrNo 156 then CurrIden 1."""
    frame = ADAPTER.encode(Movement("D1", (dataclasses.replace(ENTRY, host_seq_no="H1"),)),
                           sender=BDC, receiver=CENTRE)
    assert body_names(frame, "head") == list(java.SYS_HEAD_OUT)
    decoded = ADAPTER.decode(frame)
    assert isinstance(decoded, Movement) and decoded.entries[0].host_seq_no == "H1"
