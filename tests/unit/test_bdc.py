"""The bdc adapter: framing, every neutral message kind, the protocol's own examples, and
hostile input (always an AdapterError, never another exception, in bounded time)."""

from __future__ import annotations

import datetime as dt
import re
import time
import tracemalloc
import zlib
from dataclasses import replace
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import base
from adapters.base import (
    Ack, Adapter, AdapterError, Balance, BalanceQuery, Entry, Framer, Heartbeat, HeartbeatAnswer,
    Instruction, Movement, NotFound, Receipt, Result, SignOn, SignOnAnswer, Statement, StatusQuery,
)
from adapters.bdc import BdcAdapter, BdcFramer
from adapters.bdc.codec import AnswerRefused
from adapters.bdc._values import MAX_FEN
from gateway.model import PURPOSES

NOW = dt.datetime(2017, 11, 30, 10, 15, 2, 123456)
CENTRE = "C12340"
BANK = "105000"
ADAPTER = BdcAdapter(clock=lambda: NOW)
CANONICAL = BdcAdapter(clock=lambda: NOW, echo=False)
CEILING = 9_999_999_999_999  # 99,999,999,999.99


def frame_of(body: bytes, node: bytes = b"105000", flag: bytes = b"0",
             padding: bytes = bytes(9), length: int | None = None) -> bytes:
    """A frame around ``body`` with any header field forced."""
    size = len(body) if length is None else length
    return node + flag + padding + size.to_bytes(4, "big") + body


def body_text(frame: bytes) -> str:
    return frame[20:].decode("gbk")


def rebuilt(frame: bytes, old: str, new: str, count: int = 1) -> bytes:
    """``frame`` with ``old`` replaced by ``new`` in its XML body, header length fixed up."""
    text = body_text(frame)
    assert old in text, old
    return frame_of(text.replace(old, new, count).encode("gbk"), node=frame[:6], flag=frame[6:7])


def refused(frame: bytes) -> str:
    with pytest.raises(AdapterError) as info:
        ADAPTER.decode(frame)
    return str(info.value)


# -- strategies ---------------------------------------------------------------------

_GBK_CHAR = st.one_of(
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5),  # all in GBK
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),      # includes & < > " '
    st.sampled_from("·、。，（）《》—…“”【】￥"),
)


def gbk_text(min_size: int = 0, max_size: int = 60) -> st.SearchStrategy[str]:
    return st.text(_GBK_CHAR, min_size=min_size, max_size=max_size)


def file_text(max_size: int) -> st.SearchStrategy[str]:
    """Text a '|'-separated file column can carry."""
    return (st.text(_GBK_CHAR.filter(lambda c: c != "|"), max_size=max_size)
            .filter(lambda s: s != "null"))


names = gbk_text(1, 60).filter(lambda s: s.strip() != "")
serials = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E).filter(lambda c: c != "|"),
                  min_size=1, max_size=32)
opt_serials = st.one_of(st.just(""), serials)
nodes = st.from_regex(r"[A-Z0-9]{6}", fullmatch=True)
accounts = st.from_regex(r"[0-9A-Za-z-]{1,32}", fullmatch=True)
bank_codes = st.from_regex(r"[0-9]{12}", fullmatch=True)
positive = st.one_of(st.sampled_from([1, CEILING, MAX_FEN]), st.integers(1, MAX_FEN))
signed = st.one_of(st.sampled_from([1, -1, 0, CEILING, -CEILING, -MAX_FEN]),
                   st.integers(-MAX_FEN, MAX_FEN))
times = st.times().map(lambda t: t.replace(microsecond=0))
codes = gbk_text(0, 32).filter(lambda s: s not in ("00000", "10000"))
texts = gbk_text(0, 256).filter(lambda s: s not in ("成功", "失败"))

instructions = st.builds(
    Instruction, seq_no=serials, send_date=st.dates(), centre_node=nodes,
    unit_no=st.from_regex(r"[0-9]{15}", fullmatch=True), debit_account=accounts, debit_name=names,
    creditor_account=accounts, creditor_name=names,
    creditor_bank_code=st.one_of(bank_codes, st.just("")), creditor_personal=st.booleans(),
    same_bank=st.booleans(), amount=positive, purpose=st.sampled_from(sorted(PURPOSES)),
    memo=gbk_text(0, 140), reference=gbk_text(0, 60), signature=st.binary(max_size=300),
).filter(lambda m: m.same_bank or m.creditor_bank_code != "")

entries = st.builds(
    Entry, account=accounts, host_seq_no=opt_serials, amount=signed, value_date=st.dates(),
    time=times, counterparty_account=file_text(64), counterparty_name=file_text(60),
    counterparty_bank_code=st.one_of(st.just(""), bank_codes),
    balance_after=st.one_of(st.none(), signed), summary=file_text(140), remark=file_text(140),
    reversal=st.booleans(),
)


@st.composite
def answers_about(draw: st.DrawFn, kind: type, **fields: st.SearchStrategy[Any]) -> Any:
    """A Receipt/Result answering either the instruction itself or a later StatusQuery."""
    ref = draw(serials)
    reply_to = ref if draw(st.booleans()) else draw(serials.filter(lambda s: s != ref))
    values = {name: draw(strategy) for name, strategy in fields.items()}
    return kind(seq_no=draw(serials), reply_to=reply_to, ref=ref, **values)


@st.composite
def statements(draw: st.DrawFn) -> Statement:
    account = draw(accounts)
    lines = draw(st.lists(entries, max_size=4))
    return Statement(seq_no=draw(serials), reply_to=draw(serials), account=account,
                     entries=tuple(replace(e, account=account) for e in lines))


KINDS: dict[str, st.SearchStrategy[Any]] = {
    "SignOn": st.builds(SignOn, seq_no=serials, node=nodes),
    "SignOnAnswer": st.builds(SignOnAnswer, seq_no=serials, reply_to=serials, node=nodes,
                              ok=st.booleans(), code=codes, text=texts),
    "Heartbeat": st.builds(Heartbeat, seq_no=serials, node=st.one_of(nodes, st.just(CENTRE))),
    "HeartbeatAnswer": st.builds(HeartbeatAnswer, seq_no=serials, reply_to=serials, node=nodes),
    "Instruction": instructions,
    "StatusQuery": st.builds(StatusQuery, seq_no=serials, ref=serials, ref_date=st.dates()),
    "BalanceQuery": st.builds(BalanceQuery, seq_no=serials, account=accounts),
    "Ack": st.builds(Ack, seq_no=serials, reply_to=serials, ok=st.booleans(), code=codes, text=texts),
    "Receipt": answers_about(Receipt, bank_seq_no=opt_serials),
    "Result": answers_about(Result, succeeded=st.booleans(), host_seq_no=opt_serials,
                            bank_seq_no=opt_serials, code=codes, text=texts),
    "NotFound": st.builds(NotFound, seq_no=serials, reply_to=serials, ref=serials),
    "Movement": st.builds(Movement, seq_no=serials,
                          entries=st.lists(entries, max_size=4).map(tuple)),
    "Balance": st.builds(Balance, seq_no=serials, reply_to=serials, account=accounts,
                         balance=signed, available=signed, overdraft=signed,
                         account_name=gbk_text(0, 60), status=gbk_text(0, 16),
                         as_of=st.datetimes().map(lambda d: d.replace(microsecond=0))),
    "Statement": statements(),
}
any_message = st.one_of(*KINDS.values())


def test_every_neutral_kind_has_a_strategy() -> None:
    assert set(KINDS) == {k.__name__ for k in base.OUTBOUND + base.INBOUND}


# -- round trips --------------------------------------------------------------------


def _round_trip(strategy: st.SearchStrategy[Any]) -> Callable[..., None]:
    # One test function per kind (not @pytest.mark.parametrize: pytest-twisted re-wraps a
    # parametrized Hypothesis test once per parameter and then fails).
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(message=strategy, sender=nodes, receiver=nodes)
    def test(message: Any, sender: str, receiver: str) -> None:
        frame = ADAPTER.encode(message, sender=sender, receiver=receiver)
        assert frame[:6] == sender.encode()
        assert ADAPTER.decode(frame) == message
    return test


for _kind, _strategy in KINDS.items():
    _name = re.sub(r"(?<!^)(?=[A-Z])", "_", _kind).lower()
    globals()[f"test_{_name}_round_trips_exactly"] = _round_trip(_strategy)


def test_maximum_field_lengths_round_trip() -> None:
    ins = Instruction(
        seq_no="S" * 32, send_date=dt.date(9999, 12, 31), centre_node=CENTRE, unit_no="9" * 15,
        debit_account="9" * 32, debit_name="归" * 60, creditor_account="A-" * 16,
        creditor_name="张" * 60, creditor_bank_code="1" * 12, creditor_personal=True,
        same_bank=False, amount=MAX_FEN, purpose="refund", memo="资" * 140, reference="R" * 60,
        signature=bytes(range(256)) * 64)
    assert ADAPTER.decode(ADAPTER.encode(ins, sender=CENTRE, receiver=BANK)) == ins
    entry = Entry(account="9" * 32, host_seq_no="H" * 32, amount=-MAX_FEN,
                  value_date=dt.date(1, 1, 1), time=dt.time(23, 59, 59),
                  counterparty_account="对" * 64, counterparty_name="名" * 60,
                  counterparty_bank_code="9" * 12, balance_after=MAX_FEN, summary="摘" * 140,
                  remark="备" * 140, reversal=True)
    notice = Movement(seq_no="M" * 32, entries=(entry,) * 500)
    assert ADAPTER.decode(ADAPTER.encode(notice, sender=BANK, receiver=CENTRE)) == notice


@pytest.mark.parametrize("fen,wire", [(1, "0.01"), (CEILING, "99999999999.99"), (250_000, "2500.00")])
def test_amounts_travel_as_plain_decimals(fen: int, wire: str) -> None:
    ins = Instruction("S1", dt.date(2017, 11, 30), CENTRE, "1" * 15, "62", "甲", "63", "乙",
                      "105100000017", False, True, fen, "allocation")
    frame = ADAPTER.encode(ins, sender=CENTRE, receiver=BANK)
    assert f'<field name="Amt">{wire}</field>' in body_text(frame)
    assert ADAPTER.decode(frame).amount == fen  # type: ignore[union-attr]


def test_balance_without_as_of_is_stamped_with_the_clock_to_the_second() -> None:
    balance = Balance("R1", "Q1", "6200001111222233", 100, 100)
    decoded = ADAPTER.decode(ADAPTER.encode(balance, sender=BANK, receiver=CENTRE))
    assert decoded == replace(balance, as_of=NOW.replace(microsecond=0))


def test_generic_codes_and_texts_read_back_as_empty() -> None:
    ack = Ack("A1", "M1", ok=True, code="00000", text="成功")
    assert ADAPTER.decode(ADAPTER.encode(ack, sender=CENTRE, receiver=BANK)) == Ack("A1", "M1")
    frame = ADAPTER.encode(Ack("A1", "M1", ok=False), sender=CENTRE, receiver=BANK)
    assert '<field name="RtnCode">10000</field><field name="RtnMessage">失败</field>' in body_text(frame)


# -- the wire shape -----------------------------------------------------------------


@pytest.mark.parametrize("message,flag", [
    # Answers carry '0' as the deployed centre writes its replies, even in clear.
    (SignOn("S1", CENTRE), b"1"), (SignOnAnswer("R1", "S1", BANK), b"0"),
    (Heartbeat("H1", CENTRE), b"1"), (HeartbeatAnswer("R1", "H1", BANK), b"0"),
    (StatusQuery("Q1", "S0", dt.date(2017, 11, 30)), b"0"), (Ack("A1", "M1"), b"0"),
    (NotFound("R1", "Q1", "S0"), b"0"),
])
def test_header_flag_is_1_only_for_sign_in_class_requests(message: Any, flag: bytes) -> None:
    frame = ADAPTER.encode(message, sender=CENTRE, receiver=BANK)
    assert frame[6:7] == flag
    assert frame[7:16] == bytes(9)
    assert int.from_bytes(frame[16:20], "big") == len(frame) - 20


def test_body_is_gbk_xml_with_the_declaration_and_a_newline() -> None:
    frame = ADAPTER.encode(SignOn("S1", CENTRE), sender=CENTRE, receiver=BANK)
    assert frame[20:].startswith(b'<?xml version="1.0" encoding="GBK"?>\n<message><head>')


def test_answers_echo_the_request_serial_in_send_seq_no() -> None:
    frame = ADAPTER.encode(Result("R1", "S9", "S9", True, "H1"), sender=BANK, receiver=CENTRE)
    assert '<field name="SendSeqNo">S9</field>' in body_text(frame)
    assert '<field name="ReceiveSeqNo">R1</field>' in body_text(frame)


def test_instruction_request_head_follows_the_centre_layout() -> None:
    ins = Instruction("12340171130000000007", dt.date(2017, 11, 29), CENTRE, "123400000000000",
                      "6200001111222233", "甲", "6200004444555566", "乙", "105100000017",
                      True, False, 100, "withdrawal", "m", "r")
    head = re.search(r"<head>(.*)</head>", body_text(ADAPTER.encode(ins, sender=CENTRE, receiver=BANK)))
    assert head is not None
    assert re.findall(r'name="(\w+)"', head.group(1)) == [
        "SendDate", "SendTime", "SendSeqNo", "TxUnitNo", "SendNode", "TxCode", "ReceiveNode",
        "CustNo", "OperNo"]
    assert '<field name="SendDate">20171129</field><field name="SendTime">101502</field>' in head.group(1)
    assert '<field name="ReceiveNode">105000</field>' in head.group(1)


def test_ack_leaves_the_bdc_stamp_empty_as_the_centre_does() -> None:
    text = body_text(ADAPTER.encode(Ack("A1", "M1"), sender=CENTRE, receiver="D00000"))
    assert ('<field name="BDCDate"/><field name="BDCTime"/><field name="BDCSeqNo"/>'
            '<field name="SendNode">D00000</field>') in text


@pytest.mark.parametrize("purpose,bus_type", [
    ("withdrawal", "02"), ("loan_disbursement", "04"), ("allocation", "18"),
    ("deposit_placement", "09"), ("fee", "13"), ("refund", "2713"), ("other", "20")])
def test_purpose_maps_to_bus_type(purpose: str, bus_type: str) -> None:
    ins = Instruction("S1", dt.date(2017, 11, 30), CENTRE, "1" * 15, "62", "甲", "63", "乙",
                      "105100000017", False, True, 1, purpose)
    assert f'<field name="BusType">{bus_type}</field>' in body_text(
        ADAPTER.encode(ins, sender=CENTRE, receiver=BANK))


def test_notice_file_is_named_by_the_clock_and_deflated_hex() -> None:
    entry = Entry("62", "H1", -200_000, dt.date(2017, 11, 30), dt.time(10, 30, 15))
    text = body_text(ADAPTER.encode(Movement("M1", (entry,)), sender=BANK, receiver=CENTRE))
    assert '<field name="NAME">BDC_BAL_NTF_20171130_101502123.act</field>' in text
    data = re.search(r'<field name="DATA">([0-9A-F]+)</field>', text)
    assert data is not None and data.group(1).startswith("789C")
    columns = ["1", "62", "H1", "", "", "", "-2000.00", "20171130", "103015", "", "", "", "156", "1",
               "", "", "", "", "", "", "N", "00", "000"]
    assert zlib.decompress(bytes.fromhex(data.group(1))).decode("gbk") == "|".join(columns) + "|"


def test_adapter_satisfies_the_contract_and_is_registered() -> None:
    assert isinstance(ADAPTER, Adapter)
    assert isinstance(ADAPTER.framer(), Framer)
    assert BdcAdapter.name == "bdc" and BdcAdapter.max_frame == 1024 * 1024
    assert isinstance(base.load_adapter("bdc"), BdcAdapter)


# -- the protocol's own examples (restated in docs/protocols/bdc.md) ---------------------------

EXAMPLE_REQUEST = """<?xml version="1.0" encoding="GBK"?>
<message><head>
 <field name="SendDate">20171130</field><field name="SendTime">101502</field>
 <field name="SendSeqNo">12340171130000000007</field><field name="TxUnitNo">123400000000000</field>
 <field name="SendNode">C12340</field><field name="TxCode">BDC109</field>
 <field name="ReceiveNode">105000</field><field name="CustNo">KH0001</field>
 <field name="OperNo">123400000000000000001</field>
</head><body>
 <field name="SettleType">1</field><field name="BusType">18</field>
 <field name="DeAcctNo">6200001111222233</field><field name="DeAcctName">示例中心归集户</field>
 <field name="DeAcctClass">2</field><field name="CrAcctNo">6200004444555566</field>
 <field name="CrAcctName">示例中心增值收益户</field><field name="CrAcctClass">2</field>
 <field name="CrBankClass">0</field><field name="CrBankName"/><field name="CrChgNo"/>
 <field name="Amt">2500.00</field><field name="RefAcctNo"/><field name="RefSeqNo"/>
 <field name="Summary">081711300000042</field><field name="Remark">资金划转</field>
</body></message>"""

# The documented response plus our one departure: SendSeqNo echoes the request serial.
EXAMPLE_RESPONSE = """<?xml version="1.0" encoding="GBK"?>
<message><head>
 <field name="TxStatus">0</field><field name="RtnCode">00000</field>
 <field name="RtnMessage">交易成功</field><field name="ReceiveDate">20171130</field>
 <field name="ReceiveTime">101503</field><field name="ReceiveSeqNo">B20171130000981</field>
 <field name="ReceiveNode">105000</field><field name="TxCode">BDC109</field>
 <field name="BDCDate">20171130</field><field name="BDCTime">101503</field>
 <field name="BDCSeqNo">D0000020171130004711</field><field name="SendNode">C12340</field>
 <field name="SendSeqNo">12340171130000000007</field>
</head><body>
 <field name="HostStatus">0</field><field name="HostSeqNo">H000123456</field>
</body></message>"""

EXAMPLE_LINE = ("3|6200001111222233|H000123457||6200009999000011|张三|-2000.00|20171130|103015|"
                "98000.00|01234|部分提取|156|1|98000.00|0|||105100000017|部分提取|N|00|000|")
EXAMPLE_ENTRY = Entry(
    account="6200001111222233", host_seq_no="H000123457", amount=-200_000,
    value_date=dt.date(2017, 11, 30), time=dt.time(10, 30, 15),
    counterparty_account="6200009999000011", counterparty_name="张三",
    counterparty_bank_code="105100000017", balance_after=9_800_000, summary="部分提取",
    remark="部分提取", reversal=False)


def test_protocol_example_bdc109_request_decodes() -> None:
    decoded = ADAPTER.decode(frame_of(EXAMPLE_REQUEST.encode("gbk"), node=b"C12340"))
    assert decoded == Instruction(
        seq_no="12340171130000000007", send_date=dt.date(2017, 11, 30), centre_node="C12340",
        unit_no="123400000000000", debit_account="6200001111222233", debit_name="示例中心归集户",
        creditor_account="6200004444555566", creditor_name="示例中心增值收益户",
        creditor_bank_code="", creditor_personal=False, same_bank=True, amount=250_000,
        purpose="allocation", memo="资金划转", reference="081711300000042")


def test_protocol_example_bdc109_response_decodes() -> None:
    assert ADAPTER.decode(frame_of(EXAMPLE_RESPONSE.encode("gbk"))) == Result(
        seq_no="B20171130000981", reply_to="12340171130000000007", ref="12340171130000000007",
        succeeded=True, host_seq_no="H000123456", bank_seq_no="D0000020171130004711",
        text="交易成功")


def notice(file_text: str, *, spaced: bool = False, data: str | None = None) -> bytes:
    hexed = zlib.compress(file_text.encode("gbk")).hex().upper()
    if spaced:  # as in the captured payload: groups of 64 separated by whitespace
        hexed = " ".join(hexed[i:i + 64] for i in range(0, len(hexed), 64))
    body = ('<?xml version="1.0" encoding="GBK"?>\n<message><head>'
            '<field name="SendDate">20171130</field><field name="SendTime">103016</field>'
            '<field name="SendSeqNo">D000001</field><field name="SendNode">D00000</field>'
            '<field name="TxCode">SBDC100</field><field name="ReceiveNode">C12340</field>'
            '<field name="BDCDate">20171130</field><field name="BDCTime">103016</field>'
            '<field name="BDCSeqNo">D000001</field></head><body>'
            '<field-list name="FILE_LIST"><field-list name="0">'
            '<field name="NAME">BDC_BAL_NTF_20171130_103016000.act</field>'
            f'<field name="DATA">{hexed if data is None else data}</field>'
            '</field-list></field-list></body></message>')
    return frame_of(body.encode("gbk"), node=b"D00000")


def test_protocol_example_notice_line_decodes() -> None:
    assert ADAPTER.decode(notice(EXAMPLE_LINE)) == Movement("D000001", (EXAMPLE_ENTRY,))


def test_notice_tolerates_spaced_hex_crlf_null_and_end_trailer() -> None:
    line2 = EXAMPLE_LINE.replace("|6200009999000011|张三|", "|null|null|").replace("|01234|", "|null|")
    decoded = ADAPTER.decode(notice(EXAMPLE_LINE + "\r\n" + line2 + "\n#END", spaced=True))
    assert decoded == Movement("D000001", (
        EXAMPLE_ENTRY, replace(EXAMPLE_ENTRY, counterparty_account="", counterparty_name="")))


def test_sys600_reply_with_flag_0_is_tolerated() -> None:
    frame = ADAPTER.encode(HeartbeatAnswer("R1", "H1", BANK), sender=BANK, receiver=CENTRE)
    assert ADAPTER.decode(frame[:6] + b"0" + frame[7:]) == HeartbeatAnswer("R1", "H1", BANK)


def test_header_padding_other_than_nul_is_tolerated() -> None:
    frame = ADAPTER.encode(SignOn("S1", CENTRE), sender=CENTRE, receiver=BANK)
    assert ADAPTER.decode(frame[:7] + b"\xff" * 9 + frame[16:]) == SignOn("S1", CENTRE)


def test_absent_pin_attribute_and_pretty_printing_are_tolerated() -> None:
    frame = rebuilt(ADAPTER.encode(SignOn("S1", CENTRE), sender=CENTRE, receiver=BANK),
                    '<field name="OperNo">', '\n  <field name="OperNo" pin="false">')
    assert ADAPTER.decode(frame) == SignOn("S1", CENTRE)


# -- framing ------------------------------------------------------------------------

SAMPLE_FRAMES = [
    ADAPTER.encode(Instruction("12340171130000000007", dt.date(2017, 11, 30), CENTRE,
                               "123400000000000", "6200001111222233", "示例中心归集户",
                               "6200004444555566", "张三", "105100000017", True, False, 250_000,
                               "withdrawal", "部分提取", "081711300000042"),
                   sender=CENTRE, receiver=BANK),
    ADAPTER.encode(Movement("M1", (EXAMPLE_ENTRY,) * 3), sender=BANK, receiver=CENTRE),
    ADAPTER.encode(Heartbeat("H1", BANK), sender=BANK, receiver=CENTRE),
]


@pytest.mark.parametrize("frame", SAMPLE_FRAMES, ids=["instruction", "movement", "heartbeat"])
def test_frame_split_at_every_byte_boundary_is_reassembled(frame: bytes) -> None:
    for cut in range(len(frame) + 1):
        framer = ADAPTER.framer()
        assert framer.feed(frame[:cut]) + framer.feed(frame[cut:]) == [frame]


def test_frame_fed_byte_by_byte_is_reassembled() -> None:
    framer = ADAPTER.framer()
    out: list[bytes] = []
    for i in range(len(SAMPLE_FRAMES[0])):
        out += framer.feed(SAMPLE_FRAMES[0][i:i + 1])
    assert out == [SAMPLE_FRAMES[0]]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(any_message, min_size=1, max_size=6), data=st.data())
def test_many_frames_in_arbitrary_chunks_come_out_whole_and_in_order(
        messages: list[Any], data: st.DataObject) -> None:
    frames = [ADAPTER.encode(m, sender=BANK, receiver=CENTRE) for m in messages]
    stream = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    framer = ADAPTER.framer()
    out: list[bytes] = []
    for a, b in zip([0] + cuts, cuts + [len(stream)]):
        out += framer.feed(stream[a:b])
    assert out == frames
    assert [ADAPTER.decode(f) for f in out] == messages


def test_many_frames_in_one_chunk() -> None:
    stream = b"".join(SAMPLE_FRAMES * 50)
    assert ADAPTER.framer().feed(stream) == SAMPLE_FRAMES * 50


@pytest.mark.parametrize("prefix,reason", [
    (b"c", "node"), (b"10500 ", "node"), (b"105000" + b"2", "flag"), (b"\x00", "node"),
])
def test_bad_header_is_refused_as_soon_as_its_byte_arrives(prefix: bytes, reason: str) -> None:
    with pytest.raises(AdapterError, match=reason):
        ADAPTER.framer().feed(prefix)


@pytest.mark.parametrize("length", [0, 1024 * 1024 + 1, 10 * 1024 * 1024, 2**32 - 1])
def test_bad_length_is_refused_before_any_body_is_buffered(length: int) -> None:
    framer = ADAPTER.framer()
    with pytest.raises(AdapterError, match="length"):
        framer.feed(frame_of(b"", length=length))
    with pytest.raises(AdapterError):
        ADAPTER.decode(frame_of(b"<x/>", length=length))


def test_largest_allowed_body_is_framed() -> None:
    frame = frame_of(b"x" * (1024 * 1024))
    assert ADAPTER.framer().feed(frame) == [frame]


def test_framer_stays_broken_after_a_violation() -> None:
    framer = ADAPTER.framer()
    with pytest.raises(AdapterError):
        framer.feed(b"bad!")
    with pytest.raises(AdapterError):
        framer.feed(SAMPLE_FRAMES[0])


def test_framer_holds_at_most_one_frame() -> None:
    framer = BdcFramer()
    frame = SAMPLE_FRAMES[0]
    framer.feed(frame * 3 + frame[:-1])
    assert len(framer._buf) == len(frame) - 1  # only the unfinished frame is buffered


# -- hostile input ------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_are_refused_by_decode(data: bytes) -> None:
    with pytest.raises(AdapterError):
        ADAPTER.decode(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bodies_behind_a_valid_header_are_refused(body: bytes) -> None:
    with pytest.raises(AdapterError):
        ADAPTER.decode(frame_of(body))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_fed_to_the_framer_raise_nothing_but_adapter_error(data: bytes) -> None:
    try:
        for frame in ADAPTER.framer().feed(data):
            try:
                ADAPTER.decode(frame)
            except AdapterError:
                pass
    except AdapterError:
        pass


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, 10**6), value=st.integers(0, 255), which=st.integers(0, 2))
def test_any_corrupted_byte_gives_a_message_or_adapter_error(index: int, value: int,
                                                             which: int) -> None:
    frame = bytearray(SAMPLE_FRAMES[which])
    frame[index % len(frame)] = value
    try:
        ADAPTER.decode(bytes(frame))
    except AdapterError:
        pass


@pytest.mark.parametrize("frame", SAMPLE_FRAMES, ids=["instruction", "movement", "heartbeat"])
def test_every_truncation_of_a_frame_is_refused(frame: bytes) -> None:
    for cut in range(len(frame)):
        with pytest.raises(AdapterError):
            ADAPTER.decode(frame[:cut])
        assert ADAPTER.framer().feed(frame[:cut]) == []  # still waiting for the rest


def test_length_header_that_lies_long_keeps_the_framer_waiting_and_is_refused_by_decode() -> None:
    frame = SAMPLE_FRAMES[0]
    liar = frame[:16] + (len(frame) - 20 + 10).to_bytes(4, "big") + frame[20:]
    assert ADAPTER.framer().feed(liar) == []
    assert "header says" in refused(liar)


def test_length_header_that_lies_short_cuts_inside_the_xml_and_is_refused() -> None:
    frame = SAMPLE_FRAMES[0]
    liar = frame[:16] + (len(frame) - 20 - 30).to_bytes(4, "big") + frame[20:]
    framer = ADAPTER.framer()
    try:
        frames = framer.feed(liar)
    except AdapterError:
        frames = []  # the leftover 30 bytes were refused as the next header
    assert len(frames) <= 1
    for cut in frames:
        refused(cut)
    with pytest.raises(AdapterError):
        framer.feed(b"C12340" + b"0" + bytes(13))  # whatever follows, the link is done


def test_dtd_is_refused() -> None:
    frame = rebuilt(SAMPLE_FRAMES[2], "\n<message>",
                    "\n<!DOCTYPE message [<!ELEMENT message ANY>]><message>")
    assert "DTD" in refused(frame)


def test_external_entity_is_refused() -> None:
    frame = rebuilt(SAMPLE_FRAMES[2], "\n<message>",
                    '\n<!DOCTYPE message [<!ENTITY x SYSTEM "file:///etc/passwd">]><message>')
    frame = rebuilt(frame, '<field name="SendSeqNo">H1', '<field name="SendSeqNo">&x;')
    assert "DTD" in refused(frame)


def test_billion_laughs_is_refused_quickly() -> None:
    ents = '<!ENTITY l0 "lol">' + "".join(
        f'<!ENTITY l{i} "{("&l%d;" % (i - 1)) * 10}">' for i in range(1, 10))
    frame = rebuilt(SAMPLE_FRAMES[2], "\n<message>", f"\n<!DOCTYPE message [{ents}]><message>")
    frame = rebuilt(frame, '<field name="SendSeqNo">H1', '<field name="SendSeqNo">&l9;')
    start = time.monotonic()
    refused(frame)
    assert time.monotonic() - start < 1.0


def test_ten_thousand_deep_nesting_is_refused_quickly() -> None:
    body = b'<?xml version="1.0" encoding="GBK"?>\n' + b"<message>" * 10_000 + b"</message>" * 10_000
    start = time.monotonic()
    refused(frame_of(body))
    assert time.monotonic() - start < 1.0


def test_non_gbk_bytes_in_the_body_are_refused() -> None:
    frame = SAMPLE_FRAMES[2]
    text = frame[20:]
    bad = text.replace(b"<field name=\"SendSeqNo\">H1", b"<field name=\"SendSeqNo\">\xff\xff")
    assert "invalid in the declared encoding" in refused(frame_of(bad))


def test_body_declared_in_another_encoding_is_refused() -> None:
    body = body_text(SAMPLE_FRAMES[2]).replace('encoding="GBK"', 'encoding="UTF-8"').encode("utf-8")
    assert "not accepted" in refused(frame_of(body))


def test_zlib_bomb_in_data_is_refused_quickly() -> None:
    bomb = zlib.compress(b"0" * (64 * 1024 * 1024), 9).hex().upper()
    frame = notice("", data=bomb)
    assert len(frame) < 1024 * 1024
    tracemalloc.start()
    try:
        start = time.monotonic()
        assert "inflates beyond" in refused(frame)
        elapsed = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 2.0
    assert peak < 16 * 1024 * 1024  # inflation stopped near the 4 MiB bound, not at 64 MiB


@pytest.mark.parametrize("data,reason", [
    ("789CZZ", "not hexadecimal"), ("789C0", "not hexadecimal"), ("00112233", "not a zlib stream"),
    (zlib.compress(b"1|2|")[:-3].hex(), "truncated"),
    (zlib.compress(b"x").hex() + "00", "after the zlib"),
    (zlib.compress(b"\xff\xff").hex(), "invalid in GBK"),
])
def test_bad_file_data_is_refused(data: str, reason: str) -> None:
    assert reason in refused(notice("", data=data))


@pytest.mark.parametrize("line,reason", [
    (EXAMPLE_LINE.replace("|N|00|000|", "|N|00|"), "22 columns"),
    (EXAMPLE_LINE + "tail", "after the last separator"),
    (EXAMPLE_LINE.replace("|156|", "|840|"), "CurrNo"),
    (EXAMPLE_LINE.replace("-2000.00", "-2000.001"), "amt"),
    (EXAMPLE_LINE.replace("20171130", "20171131"), "no such date"),
    (EXAMPLE_LINE.replace("|N|", "|X|"), "redo"),
    (EXAMPLE_LINE.replace("6200001111222233", ""), "acct"),
])
def test_bad_notice_lines_are_refused(line: str, reason: str) -> None:
    assert reason in refused(notice(line))


def instruction_frame() -> bytes:
    return SAMPLE_FRAMES[0]


@pytest.mark.parametrize("old,new,reason", [
    ('<field name="TxCode">BDC101', '<field name="TxCode">BDC777', "not supported"),
    ('<field name="Amt">2500.00</field>', "", "required field Amt missing"),
    ('<field name="Amt">2500.00', '<field name="Amt">2500.001', "Amt"),
    ('<field name="Amt">2500.00', '<field name="Amt">-2500.00', "Amt"),
    ('<field name="Amt">2500.00', '<field name="Amt">0.00', "Amt"),
    ('<field name="Amt">2500.00', '<field name="Amt">2,500.00', "Amt"),
    ('<field name="Amt">2500.00', '<field name="Amt">1e', "Amt"),
    ('<field name="SendDate">20171130', '<field name="SendDate">20171301', "SendDate"),
    ('<field name="SendTime">101502', '<field name="SendTime">246000', "SendTime"),
    ('<field name="CrBankClass">1', '<field name="CrBankClass">0', "CrBankClass"),
    ('<field name="SettleType">2', '<field name="SettleType">3', "SettleType"),
    ('<field name="BusType">02', '<field name="BusType">99', "BusType"),
    ('<field name="DeAcctClass">2', '<field name="DeAcctClass">1', "DeAcctClass"),
    ('<field name="CrChgNo">105100000017', '<field name="CrChgNo">', "CrChgNo"),
    ('<field name="RefAcctNo"/>', '<field name="RefAcctNo">X</field>', "RefAcctNo"),
    ('<field name="TxUnitNo">123400000000000', '<field name="TxUnitNo">1234', "TxUnitNo"),
    ('<field name="SendNode">C12340', '<field name="SendNode">c12340', "SendNode"),
    ('<field name="Remark">', '<field name="Remark">\x01', "malformed"),
    ('<field name="Remark">', '<field name="Remark" lang="zh">', "attribute"),
    ('<field name="Remark">', '<field name="Remark" pin="yes">', "pin"),
    ('<field name="Remark">部分提取</field>', '<field name="Remark"><b/></field>', "child"),
    ('<field name="Remark">部分提取</field>',
     '<field name="Remark">x</field><field name="Remark">y</field>', "twice"),
    ("</body>", "stray</body>", "stray text"),
    ("<body>", "<body><field>x</field>", "without a name"),
    ("<head>", '<head><field-list name="L"/>', "unexpected element"),
    ("</message>", "<body/></message>", "unexpected element"),
    ("<message>", '<message xmlns="urn:x">', "message"),
    ('<field name="Summary">081711300000042', '<field name="Summary">' + "9" * 61, "Summary"),
    ('<field name="CrAcctName">张三', '<field name="CrAcctName">' + "张" * 61, "CrAcctName"),
    ('<field name="CrAcctName">张三', '<field name="CrAcctName"> ', "CrAcctName"),
])
def test_malformed_instruction_bodies_are_refused_naming_the_problem(old: str, new: str,
                                                                      reason: str) -> None:
    assert reason in refused(rebuilt(instruction_frame(), old, new))


def test_signature_that_is_not_base64_is_refused() -> None:
    frame = rebuilt(instruction_frame(), "</body>", '<field name="Signature">@@@</field></body>')
    assert "Signature" in refused(frame)


def test_business_message_with_the_sign_in_flag_is_refused() -> None:
    frame = instruction_frame()
    assert "sign-in flag" in refused(frame[:6] + b"1" + frame[7:])


def result_frame(**kw: Any) -> bytes:
    return ADAPTER.encode(Result("R1", "S1", "S1", True, "H1", "D1", **kw), sender=BANK, receiver=CENTRE)


@pytest.mark.parametrize("old,new,reason", [
    ('<field name="SendSeqNo">S1</field>', '<field name="SendSeqNo">S 1</field>', "SendSeqNo"),
    ('<field name="TxStatus">0', '<field name="TxStatus">9', "TxStatus"),
    ('<field name="ReceiveDate">20171130', '<field name="ReceiveDate">2017113', "ReceiveDate"),
    ('<field name="BDCDate">20171130', '<field name="BDCDate">20170230', "BDCDate"),
    ('<field name="ReceiveNode">105000', '<field name="ReceiveNode">10500', "ReceiveNode"),
    ('<field name="TxCode">BDC109', '<field name="TxCode">BDC105', "not supported"),
    ('<field name="TxStatus">0</field>', "", "OperNo missing"),  # no TxStatus: a request
])
def test_malformed_answers_are_refused_naming_the_problem(old: str, new: str, reason: str) -> None:
    assert reason in refused(rebuilt(result_frame(), old, new))


def test_host_status_other_than_success_with_tx_status_0_is_only_a_receipt() -> None:
    frame = rebuilt(result_frame(), '<field name="HostStatus">0', '<field name="HostStatus">9')
    assert ADAPTER.decode(frame) == Receipt("R1", "S1", "S1", "D1")


def test_failed_bdc110_without_the_echo_is_a_failed_query_not_a_guess() -> None:
    frame = ADAPTER.encode(NotFound("R1", "Q1", "S1"), sender=BANK, receiver=CENTRE)
    frame = rebuilt(frame, '<field name="TxSeqNo">S1</field>', "")
    with pytest.raises(AnswerRefused) as info:
        ADAPTER.decode(frame)
    assert info.value.tx_code == "BDC110" and info.value.code == "10000"


def test_no_invented_not_found_code_is_written() -> None:
    for adapter in (ADAPTER, CANONICAL):
        frame = adapter.encode(NotFound("R1", "Q1", "S1"), sender=BANK, receiver=CENTRE)
        assert b"40004" not in frame


def test_bdc110_answer_without_tx_seq_no_is_read() -> None:
    frame = ADAPTER.encode(Result("R1", "Q1", "S1", True, "H1"), sender=BANK, receiver=CENTRE)
    assert ADAPTER.decode(rebuilt(frame, '<field name="TxSeqNo">S1</field>', "")) == \
        Result("R1", "Q1", "", True, "H1")


def test_failed_balance_answer_is_refused_naming_the_code() -> None:
    frame = ADAPTER.encode(Balance("R1", "Q1", "62", 1, 1), sender=BANK, receiver=CENTRE)
    frame = rebuilt(frame, '<field name="TxStatus">0', '<field name="TxStatus">1')
    with pytest.raises(AnswerRefused, match="BDC123 answered TxStatus failed"):
        ADAPTER.decode(frame)


def test_statement_lines_for_another_account_are_refused() -> None:
    frame = ADAPTER.encode(Statement("R1", "Q1", "62", (replace(EXAMPLE_ENTRY, account="62"),)),
                           sender=BANK, receiver=CENTRE)
    assert "differs" in refused(rebuilt(frame, '<field name="AcctNo">62', '<field name="AcctNo">63'))


def test_file_list_with_two_files_gives_every_line() -> None:
    frame = notice(EXAMPLE_LINE)
    frame = rebuilt(frame, "</field-list></field-list>",
                    '</field-list><field-list name="1"><field name="NAME">x</field>'
                    '<field name="DATA"/></field-list></field-list>')
    assert ADAPTER.decode(frame).entries == (EXAMPLE_ENTRY,)


@settings(max_examples=100, deadline=None)
@given(message=any_message, cut=st.integers(0, 10**6), junk=st.binary(min_size=1, max_size=8))
def test_corrupted_bodies_of_every_kind_give_a_message_or_adapter_error(
        message: Any, cut: int, junk: bytes) -> None:
    frame = ADAPTER.encode(message, sender=BANK, receiver=CENTRE)
    body = frame[20:]
    at = cut % len(body)
    try:
        ADAPTER.decode(frame_of(body[:at] + junk + body[at:]))
    except AdapterError:
        pass


# -- encode refusals ----------------------------------------------------------------

GOOD = Instruction(
    "S1", dt.date(2017, 11, 30), CENTRE, "1" * 15, "6200001111222233", "甲", "6200004444555566",
    "乙", "105100000017", True, False, 100, "withdrawal", "m", "r")


@pytest.mark.parametrize("bad", ["😀", "\u20ac", "\u00e9\u0301", "\U00020000"])
@pytest.mark.parametrize("field", ["debit_name", "creditor_name", "memo", "reference"])
def test_characters_outside_gbk_are_refused_never_replaced(field: str, bad: str) -> None:
    message = replace(GOOD, **{field: "名" + bad})
    with pytest.raises(AdapterError, match="GBK"):
        ADAPTER.encode(message, sender=CENTRE, receiver=BANK)


@pytest.mark.parametrize("make", [
    lambda t: Entry("62", "H1", 1, dt.date(2017, 1, 1), dt.time(1), counterparty_name=t),
    lambda t: Entry("62", "H1", 1, dt.date(2017, 1, 1), dt.time(1), summary=t),
    lambda t: Entry("62", "H1", 1, dt.date(2017, 1, 1), dt.time(1), remark=t),
])
def test_entry_text_outside_gbk_or_with_a_separator_is_refused(make: Callable[[str], Entry]) -> None:
    for bad in ("😀", "\u20ac", "a|b", "a\nb", "a\rb", "null"):
        with pytest.raises(AdapterError):
            ADAPTER.encode(Movement("M1", (make(bad),)), sender=BANK, receiver=CENTRE)


@pytest.mark.parametrize("message", [
    SignOnAnswer("R1", "S1", BANK, ok=False, text="😀"),
    Ack("A1", "M1", ok=False, text="\u20ac"),
    Result("R1", "S1", "S1", False, text="😀"),
    Balance("R1", "Q1", "62", 1, 1, account_name="😀"),
])
def test_answer_text_outside_gbk_is_refused(message: Any) -> None:
    with pytest.raises(AdapterError, match="GBK"):
        ADAPTER.encode(message, sender=BANK, receiver=CENTRE)


@pytest.mark.parametrize("change,reason", [
    ({"amount": 0}, "amount"), ({"amount": -1}, "amount"), ({"amount": MAX_FEN + 1}, "amount"),
    ({"amount": 1.5}, "amount"), ({"purpose": "bribe"}, "purpose"),
    ({"debit_name": "名" * 61}, "debit_name"), ({"debit_name": "  "}, "debit_name"),
    ({"memo": "x" * 141}, "memo"), ({"memo": "a\x00b"}, "memo"), ({"memo": "a\nb"}, "memo"),
    ({"creditor_account": "62 00"}, "creditor_account"),
    ({"creditor_bank_code": "1051"}, "creditor_bank_code"),
    ({"creditor_bank_code": ""}, "creditor_bank_code"), ({"unit_no": "C52240"}, "unit_no"),
    ({"seq_no": ""}, "seq_no"), ({"seq_no": "S" * 33}, "seq_no"), ({"seq_no": "a b"}, "seq_no"),
    ({"centre_node": "C1234"}, "node"), ({"signature": b"x" * 20_000}, "signature"),
])
def test_instruction_values_bdc_cannot_carry_are_refused(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(AdapterError, match=reason):
        ADAPTER.encode(replace(GOOD, **change), sender=CENTRE, receiver=BANK)


def test_statement_with_opening_or_closing_balance_is_refused() -> None:
    for kw in ({"opening_balance": 0}, {"closing_balance": 5}):
        with pytest.raises(AdapterError, match="bdc statements carry no opening/closing balance"):
            ADAPTER.encode(Statement("R1", "Q1", "62", (), **kw), sender=BANK, receiver=CENTRE)


def test_statement_entry_for_another_account_is_refused() -> None:
    with pytest.raises(AdapterError, match="account"):
        ADAPTER.encode(Statement("R1", "Q1", "63", (replace(EXAMPLE_ENTRY, account="62"),)),
                       sender=BANK, receiver=CENTRE)


@pytest.mark.parametrize("message", [
    Balance("R1", "Q1", "62", 1, 1, as_of=dt.datetime(2017, 1, 1, 1, 1, 1, 5)),
    Balance("R1", "Q1", "62", 1, 1, as_of=dt.datetime(2017, 1, 1, tzinfo=dt.timezone.utc)),
    Movement("M1", (Entry("62", "H1", 1, dt.date(2017, 1, 1), dt.time(1, 1, 1, 5)),)),
    Ack("A1", ""), Result("R1", "", "S1", True),
    Movement("M1", (Entry("62", "H1", MAX_FEN + 1, dt.date(2017, 1, 1), dt.time(1)),)),
])
def test_values_bdc_cannot_carry_exactly_are_refused(message: Any) -> None:
    with pytest.raises(AdapterError):
        ADAPTER.encode(message, sender=BANK, receiver=CENTRE)


@pytest.mark.parametrize("sender,receiver", [("c12340", BANK), (CENTRE, ""), (CENTRE, "10500")])
def test_bad_or_missing_nodes_are_refused(sender: str, receiver: str) -> None:
    with pytest.raises(AdapterError):
        ADAPTER.encode(SignOn("S1", CENTRE), sender=sender, receiver=receiver)


def test_unknown_message_type_is_refused() -> None:
    with pytest.raises(AdapterError, match="cannot carry"):
        ADAPTER.encode("hello", sender=CENTRE, receiver=BANK)  # type: ignore[arg-type]


def test_too_many_entries_for_one_frame_are_refused() -> None:
    entry = replace(EXAMPLE_ENTRY, summary="摘" * 140, remark="备" * 140, counterparty_name="名" * 60)
    entries = tuple(replace(entry, host_seq_no=f"H{i:031d}") for i in range(6_000))
    with pytest.raises(AdapterError):
        ADAPTER.encode(Movement("M1", entries), sender=BANK, receiver=CENTRE)
