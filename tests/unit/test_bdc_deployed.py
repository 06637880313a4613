"""The bdc codec against the interface as deployed: the canonical dialect, outcomes,
requests filled as the deployed centre fills them, binding answers to their connection's
request, and the protocol's own refusal of a request we cannot take."""

from __future__ import annotations

import datetime as dt

import pytest

from adapters.base import (
    AdapterError, Balance, BalanceQuery, Heartbeat, Instruction, Movement, NotFound, Receipt,
    Result, SignOn, SignOnAnswer, StatusQuery,
)
from adapters.bdc import BdcAdapter
from adapters.bdc import _values as v
from adapters.bdc.codec import AnswerRefused, CentreProfile

NOW = dt.datetime(2017, 11, 30, 10, 15, 2)
CENTRE, BANK = "C12340", "105000"
CANONICAL = BdcAdapter(clock=lambda: NOW, echo=False)
ECHO = BdcAdapter(clock=lambda: NOW)

INSTRUCTION = Instruction(
    "12340171130000000007", dt.date(2017, 11, 30), CENTRE, "123400000000000", "6200001111222233",
    "示例中心", "6200004444555566", "张三", "104100000017", True, False, 250000, "withdrawal",
    "部分提取", "081711300000042")


def text(frame: bytes) -> str:
    return frame[20:].decode("gbk")


@pytest.mark.parametrize("written,fen", [
    ("0", 0), ("-5", -500), ("2000", 200000), ("1.5", 150), ("12.30", 1230), ("1000000", 100000000),
    ("-2000", -200000), ("1E+3", 100000), ("0.10", 10), ("1.500", 150),
])
def test_amounts_are_read_as_any_decimal_exact_in_fen(written: str, fen: int) -> None:
    assert v.parse_amount("Amt", written) == fen


@pytest.mark.parametrize("written", ["1.005", "1,000", ".5", "1e", "", "abc", "--1"])
def test_amounts_not_exact_in_fen_or_not_decimal_are_refused(written: str) -> None:
    with pytest.raises(AdapterError, match="Amt"):
        v.parse_amount("Amt", written)


@pytest.mark.parametrize("fen,written", [(0, "0.00"), (-500, "-5.00"), (150, "1.50"), (100000000, "1000000.00")])
def test_amounts_are_written_canonically(fen: int, written: str) -> None:
    assert v.format_amount("Amt", fen) == written


def test_canonical_answers_carry_the_twelve_deployed_head_fields_only() -> None:
    frame = CANONICAL.encode(Result("B1", "S1", "S1", True, "H1"), sender=BANK, receiver=CENTRE)
    body = text(frame)
    assert "SendSeqNo" not in body
    names = [part.split('"')[0] for part in body.split("<head>")[1].split("</head>")[0]
             .split('<field name="')[1:]]
    assert names == ["TxStatus", "RtnCode", "RtnMessage", "ReceiveDate", "ReceiveTime",
                     "ReceiveSeqNo", "ReceiveNode", "TxCode", "BDCDate", "BDCTime", "BDCSeqNo",
                     "SendNode"]


def test_canonical_bdc110_answer_carries_no_tx_seq_no() -> None:
    frame = CANONICAL.encode(Result("B1", "Q1", "S1", False, "H1"), sender=BANK, receiver=CENTRE)
    assert "TxSeqNo" not in text(frame) and '<field name="OldTxStatus">1</field>' in text(frame)


def test_an_answer_is_bound_to_the_request_of_its_connection() -> None:
    frame = CANONICAL.encode(Result("B1", INSTRUCTION.seq_no, INSTRUCTION.seq_no, True, "H1"),
                             sender=BANK, receiver=CENTRE)
    assert CANONICAL.decode(frame).reply_to == ""  # the frame names no request
    bound = CANONICAL.decode_answer(frame, INSTRUCTION)
    assert bound == Result("B1", INSTRUCTION.seq_no, INSTRUCTION.seq_no, True, "H1")


def test_a_status_answer_is_bound_to_the_queried_instruction() -> None:
    query = StatusQuery("Q7", INSTRUCTION.seq_no, dt.date(2017, 11, 30))
    frame = CANONICAL.encode(Result("B2", "Q7", INSTRUCTION.seq_no, False, ""), sender=BANK,
                             receiver=CENTRE)
    assert CANONICAL.decode_answer(frame, query) == Result("B2", "Q7", INSTRUCTION.seq_no, False)


def test_an_answer_of_the_wrong_kind_or_naming_another_request_is_refused() -> None:
    balance = ECHO.encode(Balance("B1", "Q1", "62", 1, 1, as_of=NOW), sender=BANK, receiver=CENTRE)
    with pytest.raises(AdapterError, match="cannot answer"):
        ECHO.decode_answer(balance, INSTRUCTION)
    with pytest.raises(AdapterError, match="echoes"):
        ECHO.decode_answer(balance, BalanceQuery("Q2", "62"))


@pytest.mark.parametrize("status,host", [("1", "1"), ("1", ""), ("2", ""), ("0", "9"), ("1", "0")])
def test_a_non_zero_tx_status_on_bdc109_is_unconfirmed_as_deployed(status: str, host: str) -> None:
    frame = CANONICAL.encode(Result("B1", "S1", "S1", True, "H1"), sender=BANK, receiver=CENTRE)
    body = text(frame).replace('<field name="TxStatus">0', f'<field name="TxStatus">{status}')
    body = body.replace('<field name="HostStatus">0', f'<field name="HostStatus">{host}')
    raw = body.encode("gbk")
    frame = frame[:16] + len(raw).to_bytes(4, "big") + raw
    assert CANONICAL.decode_answer(frame, INSTRUCTION.__class__(**{**INSTRUCTION.__dict__, "seq_no": "S1"})) \
        == Receipt("B1", "S1", "S1", "")


@pytest.mark.parametrize("old,expected", [("0", "ok"), ("1", "failed"), ("2", "receipt")])
def test_old_tx_status_gives_the_outcome(old: str, expected: str) -> None:
    query = StatusQuery("Q1", "S1", dt.date(2017, 11, 30))
    frame = CANONICAL.encode(Result("B1", "Q1", "S1", True, "H1"), sender=BANK, receiver=CENTRE)
    body = text(frame).replace('<field name="OldTxStatus">0', f'<field name="OldTxStatus">{old}')
    raw = body.encode("gbk")
    got = CANONICAL.decode_answer(frame[:16] + len(raw).to_bytes(4, "big") + raw, query)
    if expected == "receipt":
        assert isinstance(got, Receipt) and got.ref == "S1"
    else:
        assert isinstance(got, Result) and got.succeeded is (expected == "ok") and got.ref == "S1"


def test_a_failed_status_query_is_no_outcome_and_no_invented_code() -> None:
    frame = CANONICAL.encode(NotFound("B1", "Q1", "S1"), sender=BANK, receiver=CENTRE)
    assert b"40004" not in frame
    with pytest.raises(AnswerRefused):
        CANONICAL.decode_answer(frame, StatusQuery("Q1", "S1", dt.date(2017, 11, 30)))


def test_requests_are_filled_from_the_centre_profile() -> None:
    adapter = CANONICAL.variant(centres={CENTRE: CentreProfile("123400000000000", "KH0001",
                                                               "123400000000000000001")})
    body = text(adapter.encode(INSTRUCTION, sender="C99999", receiver=BANK))
    for field, value in (("TxUnitNo", "123400000000000"), ("CustNo", "KH0001"),
                         ("OperNo", "123400000000000000001"), ("CrBankName", "中国银行股份有限公司"),
                         ("RefSeqNo1", "081711300000042"), ("Summary", "081711300000042"),
                         ("SendSeqNo", "12340171130000000007")):
        assert f'<field name="{field}">{value}</field>' in body
    query = text(adapter.encode(BalanceQuery("12340171130000000008", "62"), sender=CENTRE, receiver=BANK))
    assert '<field name="CustNo">KH0001</field>' in query


def test_a_centre_without_a_profile_still_writes_every_field() -> None:
    body = text(CANONICAL.encode(SignOn("12340171130999999999", CENTRE), sender=CENTRE, receiver=BANK))
    assert '<field name="CustNo"/>' in body and '<field name="OperNo">hpf-gateway</field>' in body


def test_unknown_fields_are_ignored_and_counted() -> None:
    adapter = BdcAdapter(clock=lambda: NOW, echo=False)
    frame = adapter.encode(Result("B1", "S1", "S1", True, "H1"), sender=BANK, receiver=CENTRE)
    body = text(frame).replace("</body>", '<field name="Remark">备注</field></body>')
    body = body.replace("</head>", '<field name="Extra">x</field></head>')
    raw = body.encode("gbk")
    adapter.decode(frame[:16] + len(raw).to_bytes(4, "big") + raw)
    assert adapter.ignored == {"Remark": 1, "Extra": 1}


@pytest.mark.parametrize("request_message", [
    SignOn("S1", CENTRE), Heartbeat("S2", CENTRE), INSTRUCTION,
    StatusQuery("S3", "S1", dt.date(2017, 11, 30)), BalanceQuery("S4", "62"),
])
def test_every_request_is_refused_in_protocol_when_unsupported(request_message: object) -> None:
    frame = CANONICAL.encode(request_message, sender=CENTRE, receiver=BANK)  # type: ignore[arg-type]
    answer = CANONICAL.refusal(frame, sender=BANK, seq_no="B9")
    assert answer is not None and answer[:7] == b"1050000"
    body = text(answer)
    assert '<field name="TxStatus">1</field><field name="RtnCode">10000</field>' in body
    assert '<field name="RtnMessage">失败</field>' in body
    assert f'<field name="SendNode">{CENTRE}</field>' in body
    assert '<field name="BDCDate"/><field name="BDCTime"/><field name="BDCSeqNo"/>' in body


def test_an_answer_or_garbage_gets_no_refusal() -> None:
    answer = CANONICAL.encode(SignOnAnswer("B1", "S1", BANK), sender=BANK, receiver=CENTRE)
    assert CANONICAL.refusal(answer, sender=CENTRE, seq_no="C1") is None
    assert CANONICAL.refusal(b"C123401" + bytes(9) + b"\x00\x00\x00\x03abc", sender=BANK, seq_no="B1") is None


def test_an_empty_notice_file_is_an_empty_movement() -> None:
    frame = ECHO.encode(Movement("D1", ()), sender="D00000", receiver=CENTRE)
    body = text(frame)
    start = body.index('<field name="DATA">')
    body = body[:start] + '<field name="DATA"/></field-list></field-list></body></message>'
    raw = body.encode("gbk")
    assert ECHO.decode(frame[:16] + len(raw).to_bytes(4, "big") + raw) == Movement("D1", ())


def test_a_centres_config_fills_its_bdc_heads(tmp_path: object) -> None:
    import tomllib
    from pathlib import Path

    from gateway.config import load_config
    from tests.kit.config import EXAMPLE, write

    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    data["centres"]["C52240"].update(cust_no="KH0001", oper_no="OP-7")
    config = load_config(write(Path(str(tmp_path)), data), check_files=False)
    assert (config.centres["C52240"].cust_no, config.centres["C52240"].oper_no) == ("KH0001", "OP-7")
    bank = next(iter(config.banks.values()))
    adapter = BdcAdapter(clock=lambda: NOW).for_gateway(config, bank)
    body = text(adapter.encode(SignOn("S1", "C52240"), sender="C52240", receiver=BANK))
    assert '<field name="TxUnitNo">522400000000000</field>' in body
    assert '<field name="CustNo">KH0001</field>' in body and '<field name="OperNo">OP-7</field>' in body


def test_a_partial_withdrawal_goes_as_a_single_payment_and_comes_back_unchanged() -> None:
    frame = ECHO.encode(INSTRUCTION, sender=CENTRE, receiver=BANK)
    body = text(frame)
    assert '<field name="TxCode">BDC101</field>' in body
    assert '<field name="CapAmt">2500.00</field>' in body and '<field name="IntAmt"/>' in body
    assert ECHO.decode(frame) == INSTRUCTION
    other = ECHO.encode(INSTRUCTION.__class__(**{**INSTRUCTION.__dict__, "purpose": "allocation"}),
                        sender=CENTRE, receiver=BANK)
    assert '<field name="TxCode">BDC109</field>' in text(other)


def test_a_single_payment_answer_gives_the_principal_host_serial() -> None:
    frame = CANONICAL.encode(Result("B1", "S1", "S1", True, "H1"), sender=BANK, receiver=CENTRE)
    body = text(frame).replace(">BDC109<", ">BDC101<").replace('name="HostSeqNo"', 'name="CapHostSeqNo"')
    raw = body.encode("gbk")
    got = CANONICAL.decode_answer(frame[:16] + len(raw).to_bytes(4, "big") + raw,
                                  INSTRUCTION.__class__(**{**INSTRUCTION.__dict__, "seq_no": "S1"}))
    assert got == Result("B1", "S1", "S1", True, "H1")


@pytest.mark.parametrize("old,new,reason", [
    ('<field name="CapAmt">2500.00', '<field name="CapAmt">2400.00', "CapAmt"),
    ('<field name="IntAmt"/>', '<field name="IntAmt">1.00</field>', "IntAmt"),
    ('<field name="BusType">02', '<field name="BusType">18', "single payment"),
])
def test_single_payments_we_cannot_carry_are_refused(old: str, new: str, reason: str) -> None:
    frame = ECHO.encode(INSTRUCTION, sender=CENTRE, receiver=BANK)
    body = text(frame).replace(old, new).encode("gbk")
    with pytest.raises(AdapterError, match=reason):
        ECHO.decode(frame[:16] + len(body).to_bytes(4, "big") + body)


def test_the_direct_answer_to_a_single_payment_is_a_bdc101_answer() -> None:
    answer = Result("B1", INSTRUCTION.seq_no, INSTRUCTION.seq_no, True, "H1")
    frame = CANONICAL.encode_answer(answer, INSTRUCTION, sender=BANK, receiver=CENTRE)
    body = text(frame)
    assert '<field name="TxCode">BDC101</field>' in body and '<field name="CapHostSeqNo">H1</field>' in body
    assert CANONICAL.decode_answer(frame, INSTRUCTION) == answer
    transfer = INSTRUCTION.__class__(**{**INSTRUCTION.__dict__, "purpose": "allocation"})
    assert CANONICAL.encode_answer(answer, transfer, sender=BANK, receiver=CENTRE) == \
        CANONICAL.encode(answer, sender=BANK, receiver=CENTRE)


# -- hostile input on the new paths: an AdapterError or a message, never anything else ----

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_REQUEST = ECHO.encode(INSTRUCTION, sender=CENTRE, receiver=BANK)
_ANSWER = CANONICAL.encode(Result("B1", INSTRUCTION.seq_no, INSTRUCTION.seq_no, True, "H1"),
                           sender=BANK, receiver=CENTRE)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, 10**6), junk=st.binary(max_size=16), where=st.sampled_from(["request", "answer"]))
def test_exchange_evidence_corrupted_anywhere_is_refused_or_read(cut: int, junk: bytes, where: str) -> None:
    request, answer = _REQUEST, _ANSWER
    if where == "request":
        at = cut % len(request)
        request = request[:at] + junk + request[at + len(junk):]
    else:
        at = cut % len(answer)
        answer = answer[:at] + junk + answer[at + len(junk):]
    try:
        got = ECHO.decode_all(request + answer)
    except AdapterError:
        return
    assert len(got) == 1


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200), cut=st.integers(0, 10**6))
def test_refusal_of_any_bytes_is_a_frame_or_none(data: bytes, cut: int) -> None:
    at = cut % len(_REQUEST)
    for frame in (data, _REQUEST[:at] + data, _REQUEST[:20] + data):
        answer = CANONICAL.refusal(frame, sender=BANK, seq_no="B9")
        assert answer is None or CANONICAL.framer().feed(answer) == [answer]
