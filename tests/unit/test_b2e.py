"""The b2e adapter (adapters/b2e): round trips of every neutral kind, framing, and refusal of
hostile input with AdapterError only, in bounded time and memory."""

from __future__ import annotations

import datetime as _dt
import string
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapters import base
from adapters.b2e import (
    HEADER_LEN,
    MAX_BODY,
    PURPOSE_CODES,
    RET_ALREADY_DONE,
    RET_NOT_FOUND,
    B2eAdapter,
    B2eFramer,
)
from adapters.b2e._values import MAX_FEN
from adapters.base import (
    Ack,
    AdapterError,
    Balance,
    BalanceQuery,
    Entry,
    Heartbeat,
    HeartbeatAnswer,
    Instruction,
    Movement,
    NotFound,
    Receipt,
    Result,
    SignOn,
    SignOnAnswer,
    Statement,
    StatusQuery,
)
from tests.kit.bank_peer import make_instruction

NOW = _dt.datetime(2025, 1, 2, 3, 4, 5)
ADAPTER = B2eAdapter(clock=lambda: NOW)
GATEWAY, BANK = "D00000", "105000"

# -- strategies ---------------------------------------------------------------------

# Plain alphabets rather than from_regex: the same values, generated several times faster.
serials = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=32)
nodes = st.text(string.ascii_letters + string.digits, min_size=1, max_size=20)
accounts = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=32)
bank_codes = st.text(string.digits, min_size=12, max_size=12)
# GBK text without control characters, weighted towards Chinese and XML's special characters.
_chars = st.one_of(
    st.characters(codec="gbk", exclude_categories=("Cc", "Cs")),
    st.sampled_from("张三李四示例中心归集户住房公积金提取贷款发放中国建设银行·—“”《》（）"),
    st.sampled_from("<>&'\"]] \u3000"),
)


def texts(max_size: int, *, required: bool = False) -> st.SearchStrategy[str]:
    s = st.text(_chars, min_size=1 if required else 0, max_size=max_size)
    return s.filter(str.strip) if required else s


positive_amounts = st.one_of(st.sampled_from([1, MAX_FEN]), st.integers(1, MAX_FEN))
signed_amounts = st.one_of(st.sampled_from([1, -1, 0, MAX_FEN, -MAX_FEN]),
                           st.integers(-MAX_FEN, MAX_FEN))
times = st.times().map(lambda t: t.replace(microsecond=0))
stamps = st.datetimes().map(lambda t: t.replace(microsecond=0))
codes = texts(32)
refusal_codes = texts(32).filter(lambda c: c not in ("0000", "9999"))


@st.composite
def instructions(draw: st.DrawFn) -> Instruction:
    same_bank = draw(st.booleans())
    return Instruction(
        seq_no=draw(serials), send_date=draw(st.dates()),
        centre_node=draw(st.text(string.ascii_uppercase + string.digits, min_size=6, max_size=6)),
        unit_no=draw(st.text(string.digits, min_size=15, max_size=15)),
        debit_account=draw(accounts), debit_name=draw(texts(60, required=True)),
        creditor_account=draw(accounts), creditor_name=draw(texts(60, required=True)),
        creditor_bank_code=draw(st.one_of(st.just(""), bank_codes) if same_bank else bank_codes),
        creditor_personal=draw(st.booleans()), same_bank=same_bank,
        amount=draw(positive_amounts), purpose=draw(st.sampled_from(sorted(PURPOSE_CODES))),
        memo=draw(texts(140)), reference=draw(texts(60)), signature=draw(st.binary(max_size=300)),
    )


def entries(account: st.SearchStrategy[str] = accounts) -> st.SearchStrategy[Entry]:
    return st.builds(
        Entry, account=account, host_seq_no=serials, amount=signed_amounts, value_date=st.dates(),
        time=times, counterparty_account=st.one_of(st.just(""), accounts),
        counterparty_name=texts(60), counterparty_bank_code=st.one_of(st.just(""), bank_codes),
        balance_after=st.one_of(st.none(), signed_amounts), summary=texts(140), remark=texts(140),
        reversal=st.booleans())


@st.composite
def statements(draw: st.DrawFn) -> Statement:
    account = draw(accounts)
    return Statement(seq_no=draw(serials), reply_to=draw(serials), account=account,
                     entries=tuple(draw(st.lists(entries(st.just(account)), max_size=4))),
                     opening_balance=draw(st.one_of(st.none(), signed_amounts)),
                     closing_balance=draw(st.one_of(st.none(), signed_amounts)))


@st.composite
def outcomes(draw: st.DrawFn, kind: type) -> Any:
    """A Receipt or Result answering either the instruction itself or a status query."""
    ref = draw(serials)
    reply_to = draw(st.one_of(st.just(ref), serials))
    if kind is Receipt:
        return Receipt(seq_no=draw(serials), reply_to=reply_to, ref=ref,
                       bank_seq_no=draw(st.one_of(st.just(""), serials)))
    return Result(seq_no=draw(serials), reply_to=reply_to, ref=ref, succeeded=draw(st.booleans()),
                  host_seq_no=draw(st.one_of(st.just(""), serials)),
                  bank_seq_no=draw(st.one_of(st.just(""), serials)), code=draw(codes),
                  text=draw(texts(256)))


@st.composite
def refusable(draw: st.DrawFn, kind: type, **fields: Any) -> Any:
    """A SignOnAnswer or Ack: accepting (no code) or refusing (any non-reserved code)."""
    ok = draw(st.booleans())
    return kind(ok=ok, code="" if ok else draw(refusal_codes), text=draw(texts(256)), **fields)


MESSAGES: dict[type, st.SearchStrategy[Any]] = {
    SignOn: st.builds(SignOn, seq_no=serials, node=nodes),
    SignOnAnswer: st.deferred(lambda: st.tuples(serials, serials, nodes).flatmap(
        lambda t: refusable(SignOnAnswer, seq_no=t[0], reply_to=t[1], node=t[2]))),
    Heartbeat: st.builds(Heartbeat, seq_no=serials, node=nodes),
    HeartbeatAnswer: st.builds(HeartbeatAnswer, seq_no=serials, reply_to=serials, node=nodes),
    Instruction: instructions(),
    StatusQuery: st.builds(StatusQuery, seq_no=serials, ref=serials, ref_date=st.dates()),
    BalanceQuery: st.builds(BalanceQuery, seq_no=serials, account=accounts),
    Ack: st.tuples(serials, serials).flatmap(lambda t: refusable(Ack, seq_no=t[0], reply_to=t[1])),
    Receipt: outcomes(Receipt),
    Result: outcomes(Result),
    NotFound: st.builds(NotFound, seq_no=serials, reply_to=serials, ref=serials),
    Movement: st.builds(Movement, seq_no=serials,
                        entries=st.lists(entries(), min_size=1, max_size=4).map(tuple)),
    Balance: st.builds(Balance, seq_no=serials, reply_to=st.one_of(st.just(""), serials),
                       account=accounts, balance=signed_amounts, available=signed_amounts,
                       overdraft=signed_amounts, account_name=texts(60), status=texts(16),
                       as_of=st.one_of(st.none(), stamps)),
    Statement: statements(),
}


def frame_of(body: bytes) -> bytes:
    return b"%06d" % len(body) + body


def body_text(frame: bytes) -> str:
    return frame[HEADER_LEN:].decode("gbk")


def edit(frame: bytes, old: str, new: str) -> bytes:
    """``frame`` with ``old`` replaced by ``new`` in its body (once), length fixed."""
    text = body_text(frame)
    assert old in text, old
    return frame_of(text.replace(old, new, 1).encode("gbk"))


def refused(frame: bytes) -> str:
    with pytest.raises(AdapterError) as info:
        ADAPTER.decode(frame)
    return str(info.value)


def encoded(message: Any, sender: str = GATEWAY, receiver: str = BANK) -> bytes:
    return ADAPTER.encode(message, sender=sender, receiver=receiver)


def result(**kw: Any) -> Result:
    fields: dict[str, Any] = {"seq_no": "10500000000000000001", "reply_to": "52240250101000000001",
                                  "ref": "52240250101000000001", "succeeded": True,
                                  "host_seq_no": "H000000000001", "bank_seq_no": "105000000000001",
                                  "code": "00000", "text": "转账成功"}
    fields.update(kw)
    return Result(**fields)


def entry(**kw: Any) -> Entry:
    fields: dict[str, Any] = {"account": "6200001111222233", "host_seq_no": "H000000000001",
                                  "amount": -25_000, "value_date": _dt.date(2025, 1, 2),
                                  "time": _dt.time(3, 4, 5), "counterparty_account": "6200009999000011",
                                  "counterparty_name": "张三", "counterparty_bank_code": "105100000017",
                                  "balance_after": 975_000, "summary": "W00000001", "remark": "部分提取"}
    fields.update(kw)
    return Entry(**fields)


# -- the contract ---------------------------------------------------------------------


def test_adapter_is_registered_under_its_entry_point_and_meets_the_protocol() -> None:
    adapter = base.load_adapter("b2e")
    assert isinstance(adapter, B2eAdapter) and isinstance(adapter, base.Adapter)
    assert adapter.name == "b2e" and adapter.max_frame == MAX_BODY == 999_999
    assert isinstance(adapter.framer(), base.Framer)


def test_every_neutral_kind_has_a_strategy_here() -> None:
    kinds = {k for k in vars(base).values() if isinstance(k, type) and k in base.OUTBOUND + base.INBOUND}
    assert kinds == set(MESSAGES)


def _round_trip_test(kind: type) -> Callable[..., None]:
    # One function object per kind: pytest-twisted rewraps a Hypothesis test's inner function
    # in place, which breaks when one function is parametrized.
    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(message=MESSAGES[kind], sender=nodes, receiver=st.one_of(st.just(""), nodes))
    def test(message: Any, sender: str, receiver: str) -> None:
        frame = ADAPTER.encode(message, sender=sender, receiver=receiver)
        assert frame[:HEADER_LEN] == b"%06d" % (len(frame) - HEADER_LEN)
        assert B2eAdapter().framer().feed(frame) == [frame]
        assert ADAPTER.decode(frame) == message

    test.__name__ = test.__qualname__ = f"test_{kind.__name__}_round_trips_through_encode_framer_and_decode"
    test.__doc__ = f"decode(encode(m)) == m for every {kind.__name__} b2e can carry."
    return test


for _kind in MESSAGES:
    _test = _round_trip_test(_kind)
    globals()[_test.__name__] = _test
del _kind, _test


def test_fields_at_their_maximum_length_round_trip() -> None:
    ins = make_instruction(
        "S" * 32, debit_account="1" * 32, debit_name="归" * 60, creditor_account="9" * 32,
        creditor_name="张" * 60, memo="提" * 140, reference="W" * 60, amount=MAX_FEN,
        signature=bytes(range(256)) * 64)
    assert ADAPTER.decode(encoded(ins)) == ins
    e = entry(account="1" * 32, host_seq_no="H" * 32, amount=-MAX_FEN, counterparty_name="李" * 60,
              summary="摘" * 140, remark="附" * 140, balance_after=-MAX_FEN, reversal=True)
    movement = Movement(seq_no="N" * 32, entries=(e,) * 50)
    assert ADAPTER.decode(encoded(movement, sender=BANK, receiver=GATEWAY)) == movement
    r = result(code="E" * 32, text="败" * 256, succeeded=False)
    assert ADAPTER.decode(encoded(r, BANK, GATEWAY)) == r


@pytest.mark.parametrize("field, value, named", [
    ("debit_name", "归" * 61, "debit_name"), ("creditor_name", "张" * 61, "creditor_name"),
    ("memo", "提" * 141, "memo"), ("reference", "W" * 61, "reference"),
    ("amount", MAX_FEN + 1, "amount"), ("amount", 0, "amount"), ("amount", -1, "amount"),
    ("seq_no", "S" * 33, "seq_no"), ("debit_account", "1" * 33, "debit_account"),
    ("creditor_bank_code", "10510000001", "creditor_bank_code"),
    ("purpose", "gift", "purpose"), ("signature", b"x" * (16 * 1024 + 1), "signature"),
    ("debit_name", "  ", "debit_name"), ("memo", "a\nb", "memo"),
])
def test_values_b2e_cannot_carry_are_refused_at_encode_naming_the_field(
        field: str, value: Any, named: str) -> None:
    with pytest.raises(AdapterError, match=named):
        encoded(make_instruction(**{field: value}))


def test_amounts_are_plain_decimals_with_two_places() -> None:
    text = body_text(encoded(make_instruction(amount=1)))
    assert "<Amount>0.01</Amount>" in text
    text = body_text(encoded(make_instruction(amount=MAX_FEN)))
    assert "<Amount>99999999999.99</Amount>" in text
    text = body_text(encoded(Movement(seq_no="N1", entries=(entry(amount=-1),)), BANK, GATEWAY))
    assert "<Amount>-0.01</Amount>" in text


def test_a_cross_bank_transfer_needs_the_creditor_bank_code() -> None:
    with pytest.raises(AdapterError, match="creditor_bank_code"):
        encoded(make_instruction(same_bank=False, creditor_bank_code=""))
    ins = make_instruction(same_bank=True, creditor_bank_code="")
    assert ADAPTER.decode(encoded(ins)) == ins


# -- the wire shape -------------------------------------------------------------------


def test_frame_is_six_digit_length_then_gbk_xml_in_the_documented_shape() -> None:
    frame = encoded(make_instruction())
    assert frame[:6].isdigit() and int(frame[:6]) == len(frame) - 6
    text = body_text(frame)
    assert text.startswith('<?xml version="1.0" encoding="GBK"?>\n<B2E><head><TransCode>PAYENT'
                           '</TransCode><SerialNo>52240250101000000001</SerialNo>'
                           '<TransDate>20250102</TransDate><TransTime>030405</TransTime>'
                           '<SendNo>D00000</SendNo><RecvNo>105000</RecvNo></head><body>')
    assert "<PayAcctName>示例中心归集户</PayAcctName>" in text
    assert "示例中心归集户".encode("gbk") in frame


def test_a_hand_written_pretty_printed_answer_decodes() -> None:
    """A bank's own front end writes whitespace between elements; it means nothing."""
    body = """<?xml version="1.0" encoding="GBK"?>
<B2E>
  <head>
    <TransCode>QPAYENT</TransCode>
    <SerialNo>10500000000000000009</SerialNo>
    <ReplyTo>D0000000000000000042</ReplyTo>
    <TransDate>20250102</TransDate>
    <TransTime>030405</TransTime>
    <SendNo>105000</SendNo>
    <RecvNo>D00000</RecvNo>
    <RetCode>0000</RetCode>
    <RetMsg>交易成功</RetMsg>
  </head>
  <body>
    <OrigSerialNo>52240250101000000001</OrigSerialNo>
    <TxStatus>F</TxStatus>
    <HostSerialNo/>
    <BankSerialNo>105000000000001</BankSerialNo>
    <ResultCode>E1001</ResultCode>
    <ResultMsg>余额不足</ResultMsg>
  </body>
</B2E>
""".encode("gbk")
    assert ADAPTER.decode(frame_of(body)) == Result(
        seq_no="10500000000000000009", reply_to="D0000000000000000042", ref="52240250101000000001",
        succeeded=False, host_seq_no="", bank_seq_no="105000000000001", code="E1001", text="余额不足")


def test_a_resent_serial_answered_already_done_decodes_to_the_original_result() -> None:
    original = result()
    frame = encoded(original, BANK, GATEWAY)
    again = edit(frame, "<RetCode>0000</RetCode>", f"<RetCode>{RET_ALREADY_DONE}</RetCode>")
    again = edit(again, "<RetMsg>交易成功</RetMsg>", "<RetMsg>重复交易，返回原交易结果</RetMsg>")
    assert ADAPTER.decode(again) == ADAPTER.decode(frame) == original
    failed = result(succeeded=False, host_seq_no="", code="E1001", text="余额不足")
    frame = edit(encoded(failed, BANK, GATEWAY), "<RetCode>0000", f"<RetCode>{RET_ALREADY_DONE}")
    assert ADAPTER.decode(frame) == failed


@settings(max_examples=40, deadline=None)
@given(st.one_of(outcomes(Receipt), outcomes(Result)).filter(lambda m: m.reply_to == m.ref))
def test_an_already_done_answer_written_by_a_bank_decodes_to_its_outcome(message: Any) -> None:
    frame = ADAPTER.encode_already_done(message, sender=BANK, receiver=GATEWAY)
    assert f"<RetCode>{RET_ALREADY_DONE}</RetCode>" in body_text(frame)
    assert ADAPTER.decode(frame) == message


def test_an_already_done_answer_answers_the_transfer_itself_only() -> None:
    with pytest.raises(AdapterError, match="reply_to"):
        ADAPTER.encode_already_done(result(reply_to="Q1"), sender=BANK)
    with pytest.raises(AdapterError):
        ADAPTER.encode_already_done(NotFound(seq_no="B1", reply_to="Q1", ref="R1"),  # type: ignore[arg-type]
                                    sender=BANK)


def test_already_done_is_only_a_transfer_answer() -> None:
    frame = encoded(Balance(seq_no="B1", reply_to="Q1", account="6200001111222233", balance=1,
                            available=1), BANK, GATEWAY)
    assert "RetCode" in refused(edit(frame, "<RetCode>0000", f"<RetCode>{RET_ALREADY_DONE}"))


def test_status_query_answers_not_found_with_its_code() -> None:
    frame = encoded(NotFound(seq_no="B1", reply_to="Q1", ref="R1"), BANK, GATEWAY)
    assert f"<RetCode>{RET_NOT_FOUND}</RetCode>" in body_text(frame)
    assert "<OrigSerialNo>R1</OrigSerialNo></body>" in body_text(frame)


def test_a_result_pushed_late_is_a_transfer_answer_and_a_query_answer_names_the_transfer() -> None:
    late = body_text(encoded(result(), BANK, GATEWAY))
    assert "<TransCode>PAYENT</TransCode>" in late and "OrigSerialNo" not in late
    asked = body_text(encoded(result(reply_to="Q7"), BANK, GATEWAY))
    assert "<TransCode>QPAYENT</TransCode>" in asked
    assert "<OrigSerialNo>52240250101000000001</OrigSerialNo>" in asked


def test_a_pushed_balance_is_a_notice_and_an_asked_one_an_answer() -> None:
    b = Balance(seq_no="B1", reply_to="", account="6200001111222233", balance=-5, available=0)
    assert "<TransCode>BALNTF</TransCode>" in body_text(encoded(b, BANK, GATEWAY))
    assert "ReplyTo" not in body_text(encoded(b, BANK, GATEWAY))
    assert "<TransCode>QACCBAL</TransCode>" in body_text(encoded(
        Balance(seq_no="B2", reply_to="Q1", account="1", balance=0, available=0), BANK, GATEWAY))


@pytest.mark.parametrize("message", [
    SignOnAnswer(seq_no="B1", reply_to="S1", node=BANK, ok=True, code="E1"),
    SignOnAnswer(seq_no="B1", reply_to="S1", node=BANK, ok=False, code="0000"),
    Ack(seq_no="G1", reply_to="B1", ok=False, code="9999"),
    Ack(seq_no="G1", reply_to="", ok=True),
    Result(seq_no="B1", reply_to="", ref="R1", succeeded=True),
    Movement(seq_no="N1", entries=()),
    Movement(seq_no="N1", entries=[entry()]),  # type: ignore[arg-type]
    Statement(seq_no="B1", reply_to="Q1", account="1", entries=(entry(),)),
    Balance(seq_no="B1", reply_to="Q1", account="1", balance=0, available=0,
            as_of=_dt.datetime(2025, 1, 2, 3, 4, 5, 6)),
    Entry,  # not a message at all
], ids=["accepting-with-code", "refusing-with-0000", "refusing-with-9999", "ack-without-reply-to",
        "result-without-reply-to", "empty-notice", "entries-as-list", "foreign-statement-entry",
        "as-of-with-microseconds", "not-a-message"])
def test_messages_b2e_cannot_carry_faithfully_are_refused_at_encode(message: Any) -> None:
    with pytest.raises(AdapterError):
        encoded(message)


def test_a_refusal_without_a_code_travels_as_9999_and_comes_back_without_one() -> None:
    ack = Ack(seq_no="G1", reply_to="B1", ok=False, text="not an account of this bank")
    frame = encoded(ack)
    assert "<RetCode>9999</RetCode>" in body_text(frame)
    assert ADAPTER.decode(frame) == ack


@pytest.mark.parametrize("sender, receiver", [("", BANK), ("D-0000", BANK), (GATEWAY, "1" * 21)])
def test_bad_party_numbers_are_refused_at_encode(sender: str, receiver: str) -> None:
    with pytest.raises(AdapterError):
        ADAPTER.encode(Heartbeat(seq_no="H1", node=GATEWAY), sender=sender, receiver=receiver)


@pytest.mark.parametrize("name", ["张三😀", "Zoë\u20ac", "\u0e01", "a\ud800b"])
def test_characters_outside_gbk_are_refused_at_encode_never_replaced(name: str) -> None:
    with pytest.raises(AdapterError, match="creditor_name|RecAcctName|XML"):
        encoded(make_instruction(creditor_name=name))


# -- framing --------------------------------------------------------------------------


def _stream() -> tuple[list[bytes], bytes]:
    frames = [encoded(make_instruction()),
              encoded(Statement(seq_no="B1", reply_to="Q1", account="6200001111222233",
                                entries=(entry(), entry(amount=300, reversal=True))), BANK, GATEWAY),
              encoded(Heartbeat(seq_no="H1", node=BANK), BANK, GATEWAY)]
    return frames, b"".join(frames)


def test_a_stream_split_at_every_byte_boundary_yields_the_same_frames() -> None:
    frames, data = _stream()
    for cut in range(len(data) + 1):
        framer = B2eFramer()
        assert framer.feed(data[:cut]) + framer.feed(data[cut:]) == frames, cut


def test_a_stream_fed_one_byte_at_a_time_yields_the_same_frames() -> None:
    frames, data = _stream()
    framer = B2eFramer()
    out: list[bytes] = []
    for i in range(len(data)):
        out += framer.feed(data[i:i + 1])
    assert out == frames


def test_many_frames_in_one_chunk_all_come_out_in_order() -> None:
    frames = [encoded(Heartbeat(seq_no=f"H{i}", node=GATEWAY)) for i in range(500)]
    out = B2eFramer().feed(b"".join(frames))
    assert out == frames
    assert [ADAPTER.decode(f).seq_no for f in out] == [f"H{i}" for i in range(500)]


@pytest.mark.parametrize("data, reason", [
    (b"00a", "byte 2"), (b" 00012", "byte 0"), (b"-00012", "byte 0"), (b"000000", "length 0"),
    (b"000012x", "not '<'"), (b"000012\xef\xbb\xbf<a/>", "not '<'"),
])
def test_framer_refuses_a_bad_header_or_body_start_at_once_and_stays_broken(data: bytes, reason: str) -> None:
    framer = B2eFramer()
    with pytest.raises(AdapterError, match=reason):
        framer.feed(data)
    with pytest.raises(AdapterError, match="already failed"):
        framer.feed(encoded(Heartbeat(seq_no="H1", node=GATEWAY)))


def test_framer_refuses_a_length_above_its_maximum_before_buffering() -> None:
    framer = B2eFramer(max_body=100)
    with pytest.raises(AdapterError, match="exceeds 100"):
        framer.feed(b"000101")
    assert B2eFramer(max_body=101).feed(b"000101") == []


def test_a_complete_frame_before_a_violation_in_the_same_chunk_is_dropped_with_it() -> None:
    good = encoded(Heartbeat(seq_no="H1", node=GATEWAY))
    with pytest.raises(AdapterError):
        B2eFramer().feed(good + b"00x")


def test_the_largest_six_digit_length_buffers_one_frame_and_no_more() -> None:
    """999999 announces the largest body there is; what follows it is a new header, so a
    peer streaming megabytes behind it gets one (undecodable) frame, then a refusal."""
    framer = B2eFramer()
    body = b"<" + b"x" * (MAX_BODY - 1)
    fed = framer.feed(b"999999")
    for i in range(0, MAX_BODY, 64 * 1024):
        fed += framer.feed(body[i:i + 64 * 1024])
        assert len(framer._buf) <= HEADER_LEN + MAX_BODY
    assert fed == [b"999999" + body]
    refused(fed[0])  # no declaration: not a GBK document
    with pytest.raises(AdapterError, match="byte 0"):
        framer.feed(b"x" * (2 * 1024 * 1024))
    assert len(framer._buf) == 0


def test_a_ten_mebibyte_length_is_refused_at_its_seventh_digit() -> None:
    """Six digits cannot say 10485760: the framer reads 104857 and finds '6' where the body's
    '<' must be, before buffering anything of the body."""
    framer = B2eFramer()
    with pytest.raises(AdapterError, match="not '<'"):
        framer.feed(b"10485760" + b"<" * (1024 * 1024))
    framer = B2eFramer()
    assert framer.feed(b"104857") == []
    with pytest.raises(AdapterError, match="not '<'"):
        framer.feed(b"60")


def test_decode_refuses_truncated_and_overlong_frames() -> None:
    frame = encoded(make_instruction())
    assert "header says" in refused(frame[:-1])
    assert "header says" in refused(frame + b" ")
    assert "no body" in refused(frame[:6])
    assert "byte" in refused(b"abcdef<x/>")


def test_a_lying_short_length_cuts_the_frame_into_garbage_that_is_refused() -> None:
    frame = encoded(make_instruction())
    lying = b"%06d" % 100 + frame[6:]
    framer = B2eFramer()
    with pytest.raises(AdapterError):
        for f in framer.feed(lying):
            ADAPTER.decode(f)


# -- hostile bodies -----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
@example(b"")
@example(b"000000")
@example(b"999999<")
def test_random_bytes_are_refused_with_adapter_error_only(data: bytes) -> None:
    with pytest.raises(AdapterError):
        ADAPTER.decode(data)
    framer = B2eFramer()
    try:
        frames = framer.feed(data)
    except AdapterError:
        return
    for f in frames:
        with pytest.raises(AdapterError):
            ADAPTER.decode(f)


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_mutated_valid_frames_decode_or_raise_adapter_error_only(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(list(MESSAGES)))
    frame = bytearray(encoded(data.draw(MESSAGES[kind])))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(HEADER_LEN, len(frame) - 1))
        frame[i] = data.draw(st.integers(0, 255))
    try:
        message = ADAPTER.decode(bytes(frame))
    except AdapterError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert isinstance(message, tuple(MESSAGES))


def _timed_refusal(body: bytes) -> str:
    start = time.monotonic()
    reason = refused(frame_of(body))
    assert time.monotonic() - start < 1.0
    return reason


def test_a_dtd_is_refused() -> None:
    body = (b'<?xml version="1.0" encoding="GBK"?><!DOCTYPE B2E [<!ELEMENT B2E ANY>]>'
            b"<B2E><head/><body/></B2E>")
    assert "DTD" in _timed_refusal(body)


def test_an_external_entity_is_refused_before_any_file_is_read() -> None:
    body = (b'<?xml version="1.0" encoding="GBK"?><!DOCTYPE B2E [<!ENTITY x SYSTEM '
            b'"file:///etc/passwd">]><B2E><head><TransCode>&x;</TransCode></head><body/></B2E>')
    assert "DTD" in _timed_refusal(body)


def test_billion_laughs_is_refused_quickly() -> None:
    lol = [b'<!ENTITY l0 "lol">'] + [b'<!ENTITY l%d "%s">' % (i, b"&l%d;" % (i - 1) * 10)
                                     for i in range(1, 10)]
    body = (b'<?xml version="1.0" encoding="GBK"?><!DOCTYPE B2E [' + b"".join(lol) +
            b"]><B2E><head><RetMsg>&l9;</RetMsg></head><body/></B2E>")
    assert "DTD" in _timed_refusal(body)


def test_ten_thousand_deep_nesting_is_refused_quickly() -> None:
    body = b'<?xml version="1.0" encoding="GBK"?>' + b"<B2E>" * 10_000 + b"</B2E>" * 10_000
    _timed_refusal(body)


def test_bytes_that_are_not_gbk_are_refused() -> None:
    assert "invalid" in _timed_refusal(b'<?xml version="1.0" encoding="GBK"?><B2E>\xff\xff</B2E>')
    assert "invalid" in _timed_refusal(b'<?xml version="1.0" encoding="GBK"?><B2E>\x81</B2E>')


def test_only_gbk_documents_are_accepted() -> None:
    text = body_text(encoded(make_instruction()))
    assert "not accepted" in _timed_refusal(text.replace("GBK", "UTF-8").encode("utf-8"))
    assert "not accepted" in _timed_refusal(text.split("\n", 1)[1].encode("utf-8"))


# -- malformed messages are refused naming the field -----------------------------------


PAYENT = encoded(make_instruction())
ANSWER = encoded(result(), BANK, GATEWAY)


MALFORMED = [
    (edit(PAYENT, "<Memo>", "<Colour>red</Colour><Memo>"), "Colour"),
    (edit(PAYENT, "<Amount>100.00</Amount>", ""), "Amount"),
    (edit(PAYENT, "100.00", "100.0"), "Amount"),
    (edit(PAYENT, "100.00", "1e2"), "Amount"),
    (edit(PAYENT, "100.00", "+100.00"), "Amount"),
    (edit(PAYENT, "100.00", "0100.00"), "Amount"),
    (edit(PAYENT, "100.00", "-100.00"), "Amount"),
    (edit(PAYENT, "100.00", "0.00"), "Amount"),
    (edit(PAYENT, "100.00", "100000000000.00"), "Amount"),
    (edit(PAYENT, "<TxDate>20250101", "<TxDate>20250230"), "TxDate"),
    (edit(PAYENT, "<TransTime>030405", "<TransTime>250000"), "TransTime"),
    (edit(PAYENT, "<Purpose>01", "<Purpose>77"), "Purpose"),
    (edit(PAYENT, "<Currency>CNY", "<Currency>USD"), "Currency"),
    (edit(PAYENT, "<SameBank>1", "<SameBank>Y"), "SameBank"),
    (edit(PAYENT, "<RecAcctType>1", "<RecAcctType>2"), "RecAcctType"),
    (edit(PAYENT, "<CentreNo>C52240", "<CentreNo>c52240"), "CentreNo"),
    (edit(PAYENT, "<PayAcctName>示例中心归集户", "<PayAcctName>"), "PayAcctName"),
    (edit(PAYENT, "<Memo>", "<Memo>x</Memo><Memo>"), "Memo"),
    (edit(PAYENT, "<Memo>部分提取", "<Memo>部分<b>提取</b>"), "Memo"),
    (edit(PAYENT, "<Memo>", '<Memo lang="zh">'), "Memo"),
    (edit(PAYENT, "<body>", "<body>stray"), "stray"),
    (edit(PAYENT, "</Memo>", "</Memo>stray"), "stray"),
    (edit(PAYENT, "<TransCode>PAYENT", "<TransCode>PAYALL"), "PAYALL"),
    (edit(PAYENT, "<TransCode>PAYENT</TransCode>", ""), "TransCode"),
    (edit(PAYENT, "<SendNo>D00000</SendNo>", ""), "SendNo"),
    (edit(PAYENT, "<SerialNo>52240250101000000001", "<SerialNo>a b"), "SerialNo"),
    (edit(PAYENT, "<RecvNo>", "<ReplyTo>x</ReplyTo><RecvNo>"), "ReplyTo"),
    (edit(PAYENT, "<Memo>", "<Signature>***</Signature><Memo>"), "Signature"),
    (edit(PAYENT, "<Memo>", "<Entries/><Memo>"), "Entries"),
    (edit(PAYENT, "<B2E>", "<b2e>").replace(b"</B2E>", b"</b2e>"), "B2E"),
    (edit(PAYENT, "<head>", '<head xmlns="urn:x">'), "head"),
    (edit(PAYENT, "</body>", "</body><body/>"), "body"),
    (edit(ANSWER, "<RetCode>0000", "<RetCode>E042"), "RetCode"),
    (edit(ANSWER, "<RetCode>0000</RetCode>", "<RetCode></RetCode>"), "RetCode"),
    (edit(ANSWER, "<ReplyTo>52240250101000000001</ReplyTo>", ""), "ReplyTo"),
    (edit(ANSWER, "<TxStatus>S", "<TxStatus>X"), "TxStatus"),
    (edit(ANSWER, "<HostSerialNo>H000000000001", "<HostSerialNo>H 1"), "HostSerialNo"),
    (edit(ANSWER, "<ResultMsg>转账成功", "<ResultMsg>" + "败" * 257), "ResultMsg"),
]


@pytest.mark.parametrize("frame, named", MALFORMED,
                         ids=[f"{i}-{named}" for i, (_, named) in enumerate(MALFORMED)])
def test_malformed_messages_are_refused_with_a_one_line_reason_naming_the_field(
        frame: bytes, named: str) -> None:
    reason = refused(frame)
    assert named in reason and "\n" not in reason


def test_a_statement_request_has_no_neutral_message() -> None:
    head = ('<head><TransCode>QPD</TransCode><SerialNo>G1</SerialNo><TransDate>20250102</TransDate>'
            '<TransTime>030405</TransTime><SendNo>D00000</SendNo><RecvNo>105000</RecvNo></head>')
    body = '<body><AcctNo>6200001111222233</AcctNo><Currency>CNY</Currency><QueryDate>20250102</QueryDate></body>'
    doc = f'<?xml version="1.0" encoding="GBK"?>\n<B2E>{head}{body}</B2E>'.encode("gbk")
    assert "QPD" in refused(frame_of(doc))


def test_a_statement_entry_on_another_account_is_refused() -> None:
    frame = encoded(Statement(seq_no="B1", reply_to="Q1", account="6200001111222233",
                              entries=(entry(),)), BANK, GATEWAY)
    text = body_text(frame)
    i = text.index("<Entry><AcctNo>6200001111222233")
    bad = text[:i] + text[i:].replace("6200001111222233", "6200004444555566", 1)
    assert "AcctNo" in refused(frame_of(bad.encode("gbk")))


def test_an_empty_notice_is_refused() -> None:
    frame = encoded(Movement(seq_no="N1", entries=(entry(),)), BANK, GATEWAY)
    text = body_text(frame)
    empty = text[:text.index("<Entries>")] + "<Entries/></body></B2E>"
    assert "Entry" in refused(frame_of(empty.encode("gbk")))


@pytest.mark.parametrize("make", [
    lambda: edit(encoded(result(reply_to="Q1"), BANK, GATEWAY), "<RetCode>0000", "<RetCode>E1"),
    lambda: edit(encoded(Balance(seq_no="B1", reply_to="Q1", account="1", balance=0, available=0),
                         BANK, GATEWAY), "<RetCode>0000", "<RetCode>E1"),
    lambda: edit(encoded(HeartbeatAnswer(seq_no="B1", reply_to="H1", node=BANK), BANK, GATEWAY),
                 "<RetCode>0000", "<RetCode>E1"),
])
def test_a_refused_request_has_no_neutral_message_and_names_the_banks_code(
        make: Callable[[], bytes]) -> None:
    assert "RetCode 'E1'" in refused(make())
