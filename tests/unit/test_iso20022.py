"""The iso20022 adapter: round trips, official-schema validity, framing, hostile input, bank files."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from adapters import base
from adapters.base import AdapterError, decode_all, load_adapter
from adapters.iso20022 import MAX_FRAME, Iso20022Adapter, Iso20022Framer
from adapters.iso20022._schema import DOCUMENTS, ISO_PREFIX, LINK_NS
from tests.kit.bank_peer import make_instruction

SCHEMAS = Path(__file__).resolve().parents[2] / "adapters" / "iso20022" / "schemas"
DATA = Path(__file__).resolve().parents[1] / "data" / "iso20022"
GATEWAY, BANK = "D00000", "105000"
FIXED_NOW = dt.datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=dt.UTC)

ADAPTER = Iso20022Adapter(clock=lambda: FIXED_NOW, validate_outbound=True)
ANY_CURRENCY = Iso20022Adapter(currencies=None)


def _official(name: str) -> etree.XMLSchema:
    # Loaded straight from the shipped files, independently of the adapter's combined schema.
    return etree.XMLSchema(etree.parse(str(SCHEMAS / f"{name}.xsd")))


OFFICIAL = {name: _official(name) for name in ("head.001.001.02",) + DOCUMENTS}


def assert_officially_valid(frame: bytes) -> None:
    """The AppHdr and the ISO Document of a frame each validate against their own official XSD."""
    root = etree.fromstring(frame[4:])
    assert root.tag == f"{{{LINK_NS}}}Frame"
    header, payload = root
    head = OFFICIAL["head.001.001.02"]
    assert head.validate(etree.fromstring(etree.tostring(header))), head.error_log
    ns = etree.QName(payload).namespace
    if ns != LINK_NS:
        schema = OFFICIAL[ns.removeprefix(ISO_PREFIX)]
        assert schema.validate(etree.fromstring(etree.tostring(payload))), schema.error_log


def round_trip(message: base.Message, adapter: Iso20022Adapter = ADAPTER) -> bytes:
    frame = adapter.encode(message, sender=GATEWAY, receiver=BANK)
    assert_officially_valid(frame)
    assert adapter.decode(frame) == message
    return frame


def framed(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def reframe(frame: bytes, old: bytes, new: bytes) -> bytes:
    body = frame[4:]
    assert old in body
    return framed(body.replace(old, new))


def refused(frame: bytes, adapter: Iso20022Adapter = ADAPTER) -> str:
    with pytest.raises(AdapterError) as info:
        adapter.decode_all(frame)
    return str(info.value)


# -- strategies ------------------------------------------------------------------------

SERIALS = st.from_regex(r"[!-~]{1,35}", fullmatch=True)
NODES = st.from_regex(r"[A-Za-z0-9._-]{1,35}", fullmatch=True)
ACCOUNTS = st.from_regex(r"[0-9A-Za-z-]{1,34}", fullmatch=True)
CHARS = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff")
CHINESE = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5)


def texts(max_size: int, *, min_size: int = 0) -> st.SearchStrategy[str]:
    """Text with Chinese, markup characters, and the maximum length now and then."""
    pieces = st.text(st.one_of(CHARS, CHINESE, st.sampled_from("<>&'\"]")), min_size=min_size,
                     max_size=max_size)
    return st.one_of(pieces, st.text(CHINESE, min_size=max_size, max_size=max_size))


AMOUNTS = st.one_of(st.sampled_from([1, 9_999_999_999_999]), st.integers(1, 9_999_999_999_999))
SIGNED = st.one_of(AMOUNTS, AMOUNTS.map(lambda x: -x), st.just(0))
OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
ZONES = st.one_of(st.none(), st.just(dt.UTC), OFFSETS)
DATES = st.dates(dt.date(1990, 1, 1), dt.date(2100, 12, 31))
DATETIMES = st.datetimes(dt.datetime(1990, 1, 1), dt.datetime(2100, 1, 1), timezones=ZONES)
TIMES = st.times(timezones=ZONES)


@st.composite
def instructions(draw: Any) -> base.Instruction:
    same_bank = draw(st.booleans())
    return base.Instruction(
        seq_no=draw(SERIALS), send_date=draw(DATES), centre_node=draw(NODES),
        unit_no=draw(st.from_regex(r"[0-9]{15}", fullmatch=True)),
        debit_account=draw(ACCOUNTS), debit_name=draw(texts(140)),
        creditor_account=draw(ACCOUNTS), creditor_name=draw(texts(140)),
        creditor_bank_code=draw(st.from_regex(r"[0-9]{12}", fullmatch=True) | st.just("")
                                if same_bank else st.from_regex(r"[0-9]{12}", fullmatch=True)),
        creditor_personal=draw(st.booleans()), same_bank=same_bank, amount=draw(AMOUNTS),
        purpose=draw(st.sampled_from(sorted(["withdrawal", "loan_disbursement", "allocation",
                                             "deposit_placement", "refund", "fee", "other"]))),
        memo=draw(texts(140)), reference=draw(texts(35)),
        signature=draw(st.binary(max_size=300)),
    )


@st.composite
def entries(draw: Any, account: str | None = None) -> base.Entry:
    return base.Entry(
        account=account or draw(ACCOUNTS), host_seq_no=draw(texts(35)), amount=draw(SIGNED),
        value_date=draw(DATES), time=draw(TIMES), counterparty_account=draw(texts(34)),
        counterparty_name=draw(texts(140)),
        counterparty_bank_code=draw(st.from_regex(r"[0-9]{12}", fullmatch=True) | texts(35)),
        balance_after=draw(st.none() | SIGNED), summary=draw(texts(140)), remark=draw(texts(500)),
        reversal=draw(st.booleans()),
    )


@st.composite
def statements(draw: Any) -> base.Statement:
    account = draw(ACCOUNTS)
    return base.Statement(
        seq_no=draw(SERIALS), reply_to=draw(SERIALS | st.just("")), account=account,
        entries=tuple(draw(st.lists(entries(account), max_size=4))),
        opening_balance=draw(st.none() | SIGNED), closing_balance=draw(st.none() | SIGNED))


BALANCES = st.builds(
    base.Balance, seq_no=SERIALS, reply_to=SERIALS | st.just(""), account=ACCOUNTS, balance=SIGNED,
    available=SIGNED, overdraft=st.just(0) | AMOUNTS, account_name=texts(70),
    status=st.sampled_from(["ITBD", "CLBD", "ITAV", "0", "冻结"]) | texts(35, min_size=1).map(str.strip).filter(bool),
    as_of=DATETIMES)

CODES, WORDS = texts(35), texts(500)
STATUS_ANSWERS = st.one_of(
    st.builds(base.Receipt, seq_no=SERIALS, reply_to=SERIALS, ref=SERIALS, bank_seq_no=texts(35)),
    st.builds(base.Result, seq_no=SERIALS, reply_to=SERIALS, ref=SERIALS, succeeded=st.booleans(),
              host_seq_no=texts(35), bank_seq_no=texts(35), code=CODES.filter(lambda c: c != "NOTFOUND"),
              text=WORDS),
    st.builds(base.NotFound, seq_no=SERIALS, reply_to=SERIALS, ref=SERIALS),
)
LINK_CONTROL = st.one_of(
    st.builds(base.SignOn, seq_no=SERIALS, node=NODES),
    st.builds(base.SignOnAnswer, seq_no=SERIALS, reply_to=SERIALS, node=NODES, ok=st.booleans(),
              code=CODES, text=WORDS),
    st.builds(base.Heartbeat, seq_no=SERIALS, node=NODES),
    st.builds(base.HeartbeatAnswer, seq_no=SERIALS, reply_to=SERIALS, node=NODES),
    st.builds(base.Ack, seq_no=SERIALS, reply_to=SERIALS, ok=st.booleans(), code=CODES, text=WORDS),
    st.builds(base.StatusQuery, seq_no=SERIALS, ref=SERIALS, ref_date=DATES),
    st.builds(base.BalanceQuery, seq_no=SERIALS, account=ACCOUNTS),
)

ROUND_TRIP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- round trips of every kind (each frame also checked against the official schemas) -----------


@ROUND_TRIP
@given(instructions())
def test_instruction_round_trips_as_a_valid_pain001(m: base.Instruction) -> None:
    round_trip(m)


@ROUND_TRIP
@given(STATUS_ANSWERS)
def test_receipt_result_and_not_found_round_trip_as_a_valid_pain002(m: base.Message) -> None:
    round_trip(m)


@ROUND_TRIP
@given(LINK_CONTROL)
def test_link_control_messages_round_trip(m: base.Message) -> None:
    round_trip(m)


@ROUND_TRIP
@given(BALANCES)
def test_balance_round_trips_as_a_valid_camt052(m: base.Balance) -> None:
    round_trip(m)


@ROUND_TRIP
@given(statements())
def test_statement_round_trips_as_a_valid_camt053_or_camt052(m: base.Statement) -> None:
    frame = round_trip(m)
    has_balance = m.opening_balance is not None or m.closing_balance is not None
    assert (b"camt.053.001.08" in frame) == has_balance


@ROUND_TRIP
@given(st.lists(entries(), min_size=1, max_size=5), SERIALS)
def test_movement_round_trips_as_a_valid_camt054_keeping_entry_order(entry_list: list[base.Entry],
                                                                      seq_no: str) -> None:
    round_trip(base.Movement(seq_no=seq_no, entries=tuple(entry_list)))


@settings(max_examples=25, deadline=None)
@given(st.lists(instructions(), min_size=1, max_size=5, unique_by=lambda m: m.seq_no))
def test_batch_is_one_valid_pain001_and_decode_all_returns_every_instruction(
        batch: list[base.Instruction]) -> None:
    frame = ADAPTER.encode_batch(batch, sender=GATEWAY, receiver=BANK)
    assert_officially_valid(frame)
    assert ADAPTER.decode_all(frame) == batch
    assert decode_all(ADAPTER, frame) == batch
    if len(batch) > 1:
        with pytest.raises(AdapterError, match=f"{len(batch)} messages"):
            ADAPTER.decode(frame)


def test_extreme_values_round_trip() -> None:
    longest = "张" * 140
    for amount in (1, 9_999_999_999_999):
        round_trip(make_instruction(amount=amount, debit_name=longest, creditor_name=longest,
                                    memo=longest, reference="R" * 35, seq_no="S" * 35,
                                    signature=bytes(range(256)) * 64))
    entry = base.Entry(account="A", host_seq_no="H", amount=-9_999_999_999_999,
                       value_date=dt.date(2025, 1, 1),
                       time=dt.time(23, 59, 59, 999999, tzinfo=dt.timezone(-dt.timedelta(hours=14))),
                       balance_after=-1, remark="备" * 500, reversal=True)
    round_trip(base.Movement(seq_no="M", entries=(entry,)))
    round_trip(base.Balance(seq_no="B", reply_to="Q", account="A", balance=-1, available=1,
                            overdraft=9_999_999_999_999, status="ITBD",
                            as_of=dt.datetime(2025, 1, 1, 0, 0, 0, 1)))


def test_entry_point_loads_the_adapter_with_cny_only() -> None:
    adapter = load_adapter("iso20022")
    assert isinstance(adapter, Iso20022Adapter) and isinstance(adapter, base.Adapter)
    assert isinstance(adapter.framer(), base.Framer)
    assert adapter.currencies == frozenset({"CNY"})
    assert adapter.max_frame == MAX_FRAME == 4 * 1024 * 1024


def test_receipt_and_results_use_the_iso_status_codes() -> None:
    ins = make_instruction()
    ok = round_trip(base.Result("1", ins.seq_no, ins.seq_no, True, "H1", "B1", "00000", "done"))
    failed = round_trip(base.Result("2", "q", ins.seq_no, False, code="E1001", text="insufficient"))
    missing = round_trip(base.NotFound("3", "q", ins.seq_no))
    receipt = round_trip(base.Receipt("4", ins.seq_no, ins.seq_no, "B1"))
    assert b"<TxSts>ACSC</TxSts>" in ok and b"<AcctSvcrRef>H1</AcctSvcrRef>" in ok
    assert b"<TxSts>RJCT</TxSts>" in failed and b"<Prtry>E1001</Prtry>" in failed
    assert b"<Prtry>NOTFOUND</Prtry>" in missing
    assert b"<TxSts>ACSP</TxSts>" in receipt and b"<ClrSysRef>B1</ClrSysRef>" in receipt
    assert b"<OrgnlMsgId>q</OrgnlMsgId>" in failed and b"<OrgnlEndToEndId>" + ins.seq_no.encode() in failed


def test_instruction_maps_every_field_where_the_brief_puts_it() -> None:
    ins = make_instruction(same_bank=False, creditor_personal=False, signature=b"sig")
    doc = etree.fromstring(round_trip(ins)[4:])[1]
    ns = {"p": ISO_PREFIX + "pain.001.001.09", "h": LINK_NS}

    def at(path: str) -> str:
        return doc.xpath(f"string({path})", namespaces=ns)

    tx = "p:CstmrCdtTrfInitn/p:PmtInf/p:CdtTrfTxInf"
    assert at("p:CstmrCdtTrfInitn/p:GrpHdr/p:MsgId") == ins.seq_no
    assert at("p:CstmrCdtTrfInitn/p:GrpHdr/p:NbOfTxs") == "1"
    assert at("p:CstmrCdtTrfInitn/p:GrpHdr/p:CtrlSum") == "100.00"
    assert at(f"{tx}/p:PmtId/p:EndToEndId") == ins.seq_no
    assert at(f"{tx}/p:PmtId/p:InstrId") == ins.reference
    assert at(f"{tx}/p:Amt/p:InstdAmt/@Ccy") == "CNY"
    assert at(f"{tx}/p:CdtrAgt/p:FinInstnId/p:ClrSysMmbId/p:ClrSysId/p:Cd") == "CNAPS"
    assert at(f"{tx}/p:CdtrAgt/p:FinInstnId/p:ClrSysMmbId/p:MmbId") == ins.creditor_bank_code
    assert at(f"{tx}/p:RmtInf/p:Ustrd") == ins.memo
    assert at(f"{tx}/p:SplmtryData/p:Envlp/h:Sgntr") == base64.b64encode(b"sig").decode()


# -- framing --------------------------------------------------------------------------


def some_frames() -> list[bytes]:
    ins = make_instruction()
    return [ADAPTER.encode(m, sender=GATEWAY, receiver=BANK) for m in (
        base.SignOn("1", GATEWAY), ins,
        base.Result("2", ins.seq_no, ins.seq_no, True, "H1"), base.Heartbeat("3", BANK))]


def test_frames_split_at_every_byte_come_out_whole() -> None:
    frames = some_frames()
    stream = b"".join(frames)
    for cut in range(len(stream) + 1):
        framer = ADAPTER.framer()
        assert framer.feed(stream[:cut]) + framer.feed(stream[cut:]) == frames


def test_byte_by_byte_and_many_frames_per_chunk() -> None:
    frames = some_frames() * 10
    framer = ADAPTER.framer()
    got = [f for i in range(len(b"".join(frames))) for f in framer.feed(b"".join(frames)[i:i + 1])]
    assert got == frames
    assert ADAPTER.framer().feed(b"".join(frames)) == frames
    assert [ADAPTER.decode(f) for f in frames[:4]][1] == make_instruction()


@pytest.mark.parametrize("header, reason", [
    (b"\x00\x00\x00\x00", "length 0"),
    ((10 * 1024 * 1024).to_bytes(4, "big"), "exceeds"),
    ((MAX_FRAME + 1).to_bytes(4, "big"), "exceeds"),
])
def test_zero_or_oversized_length_is_refused_before_buffering_and_the_framer_stays_broken(
        header: bytes, reason: str) -> None:
    framer = ADAPTER.framer()
    good = some_frames()[0]
    with pytest.raises(AdapterError, match=reason):
        framer.feed(good + header)           # refused as soon as the 4 bytes are in
    with pytest.raises(AdapterError, match="already failed"):
        framer.feed(good)
    with pytest.raises(AdapterError):
        ADAPTER.decode(header + b"<x/>")


def test_pending_counts_the_bytes_of_an_incomplete_frame() -> None:
    frame = some_frames()[0]
    framer = ADAPTER.framer()
    assert framer.feed(frame[:10]) == [] and framer.pending() == 10
    assert framer.feed(frame[10:]) == [frame] and framer.pending() == 0


def test_a_frame_of_exactly_max_frame_is_framed_and_one_more_byte_is_not() -> None:
    framer = Iso20022Framer(max_body=16)
    assert framer.feed(framed(b"x" * 16)) == [framed(b"x" * 16)]
    with pytest.raises(AdapterError):
        framer.feed(framed(b"x" * 17))


# -- hostile input ----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_ever_raise_adapter_error(data: bytes) -> None:
    for candidate in (data, framed(data)):
        try:
            ADAPTER.decode_all(candidate)
        except AdapterError:
            pass
        try:
            ADAPTER.framer().feed(candidate)
        except AdapterError:
            pass
    try:
        ANY_CURRENCY.decode_document(data)
    except AdapterError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_frames_only_ever_raise_adapter_error(data: st.DataObject) -> None:
    frame = data.draw(st.sampled_from(some_frames()))
    body = bytearray(frame[4:])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.sampled_from(b"<>/&\"x0 \xff"))
    try:
        ADAPTER.decode_all(framed(bytes(body)))
    except AdapterError:
        pass


def test_truncated_and_lying_frames_are_refused() -> None:
    frame = some_frames()[1]
    for cut in (0, 3, 4, 50, len(frame) - 1):
        refused(frame[:cut])
    assert "header says" in refused((len(frame)).to_bytes(4, "big") + frame[4:])
    assert "header says" in refused(frame + b" ")


HOSTILE_BODIES = {
    "dtd": b'<?xml version="1.0"?><!DOCTYPE hpf:Frame><hpf:Frame xmlns:hpf="urn:hpf-gateway:iso20022-link:1"/>',
    "external entity": (b'<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                        b'<hpf:Frame xmlns:hpf="urn:hpf-gateway:iso20022-link:1">&x;</hpf:Frame>'),
    "billion laughs": (b'<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
                       b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]><a>&lol3;</a>'),
    "deep nesting": b"<a>" * 10_000 + b"</a>" * 10_000,
    "processing instruction": b'<?xml-stylesheet href="x"?><a/>',
    "not a frame": b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.10"/>',
    "utf-16": "<a/>".encode("utf-16"),
    "not xml": b"\x00\x01\x02garbage",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
def test_hostile_bodies_are_refused_with_adapter_error(name: str) -> None:
    body = HOSTILE_BODIES[name]
    refused(framed(body))
    with pytest.raises(AdapterError):
        ANY_CURRENCY.decode_document(body)


def test_schema_invalid_documents_are_refused_naming_the_schema() -> None:
    ins = make_instruction()
    result = ADAPTER.encode(base.Result("R1", ins.seq_no, ins.seq_no, True), sender=BANK, receiver=GATEWAY)
    cases = [
        (result, b"<TxSts>ACSC</TxSts>", b"<TxSts>ACSCX</TxSts>"),            # too long for Max4Text
        (result, b"<GrpHdr><MsgId>R1</MsgId>", b"<GrpHdr>"),                 # required MsgId gone
        (result, b"<OrgnlEndToEndId>", b"<Unknown/><OrgnlEndToEndId>"),     # undeclared element
        (result, b"<MsgDefIdr>", b"<MsgDefIdr>x</MsgDefIdr><MsgDefIdr>"),     # AppHdr broken
    ]
    for frame, old, new in cases:
        assert "schema" in refused(reframe(frame, old, new))
    hb = ADAPTER.encode(base.Heartbeat("1", GATEWAY), sender=GATEWAY, receiver=BANK)
    assert "schema" in refused(reframe(hb, b"<hpf:Node>D00000</hpf:Node>", b"<hpf:Node>D 0</hpf:Node>"))
    assert "schema" in refused(reframe(hb, b"</hpf:Heartbeat>", b"<hpf:Extra/></hpf:Heartbeat>"))


def test_header_and_document_that_disagree_are_refused() -> None:
    ins = make_instruction()
    result = ADAPTER.encode(base.Result("R1", ins.seq_no, ins.seq_no, True), sender=BANK, receiver=GATEWAY)
    assert "MsgDefIdr" in refused(reframe(result, b"<MsgDefIdr>pain.002.001.10", b"<MsgDefIdr>pain.001.001.09"))
    assert "differs from GrpHdr/MsgId" in refused(reframe(result, b"<BizMsgIdr>R1<", b"<BizMsgIdr>R2<"))
    ack = ADAPTER.encode(base.Ack("1", "M1"), sender=GATEWAY, receiver=BANK)
    assert "needs AppHdr/Rltd" in refused(reframe(ack, ack[ack.index(b"<Rltd>"):ack.index(b"</Rltd>") + 7], b""))
    sign_on = ADAPTER.encode(base.SignOn("1", GATEWAY), sender=GATEWAY, receiver=BANK)
    related = ack[ack.index(b"<Rltd>"):ack.index(b"</Rltd>") + 7]
    assert "answers nothing" in refused(reframe(sign_on, b"</AppHdr>", related + b"</AppHdr>"))


def test_cny_only_link_keeps_a_euro_part_as_a_problem_and_refuses_a_euro_instruction() -> None:
    instruction = ADAPTER.encode(make_instruction(), sender=GATEWAY, receiver=BANK)
    assert "EUR" in refused(reframe(instruction, b'Ccy="CNY"', b'Ccy="EUR"'))
    balance = ADAPTER.encode(base.Balance("B", "", "A1", 100, 100, status="ITBD", as_of=FIXED_NOW),
                             sender=BANK, receiver=GATEWAY)
    movement = ADAPTER.encode(base.Movement("M", (base.Entry("A1", "H", 5, dt.date(2025, 1, 1),
                                                             dt.time(1)),)),
                              sender=BANK, receiver=GATEWAY)
    for frame in (balance, movement):
        euro = reframe(frame, b'Ccy="CNY"', b'Ccy="EUR"')
        (message,) = ADAPTER.decode_all(euro)
        # Nothing in euro is booked on a CNY link; the part is kept, bytes and reason, to alert on.
        assert isinstance(message, (base.Statement, base.Movement)) and not message.entries
        (problem,) = message.problems
        assert "EUR" in problem.reason and b'Ccy="EUR"' in problem.raw
        read = ANY_CURRENCY.decode_all(euro)[0]  # an operator reading files takes any currency
        assert "EUR" in {getattr(read, "currency", ""), *(e.currency for e in getattr(read, "entries", ()))}


def test_any_currency_mode_reads_each_currency_with_its_own_exponent() -> None:
    frame = ADAPTER.encode(base.Balance("B", "", "A1", 100, 100, status="ITBD", as_of=FIXED_NOW),
                           sender=BANK, receiver=GATEWAY)
    (yen,) = ANY_CURRENCY.decode_all(reframe(frame, b'Ccy="CNY"', b'Ccy="JPY"'))
    assert isinstance(yen, base.Balance) and (yen.balance, yen.currency) == (1, "JPY")
    (fils,) = ANY_CURRENCY.decode_all(reframe(reframe(frame, b'Ccy="CNY"', b'Ccy="BHD"'), b">1.00<", b">1.005<"))
    assert isinstance(fils, base.Balance) and (fils.balance, fils.currency) == (1005, "BHD")
    (finer,) = ANY_CURRENCY.decode_all(reframe(frame, b">1.00<", b">1.005<"))
    assert isinstance(finer, base.Statement) and "more than 2 decimals" in finer.problems[0].reason
    (balance,) = ANY_CURRENCY.decode_all(reframe(frame, b">1.00<", b">1.0000<"))
    assert isinstance(balance, base.Balance) and balance.balance == 100
    (metal,) = ANY_CURRENCY.decode_all(reframe(frame, b'Ccy="CNY"', b'Ccy="XAU"'))
    assert isinstance(metal, base.Statement) and "XAU" in metal.problems[0].reason


# -- what cannot be carried is refused at encode ------------------------------------------


@pytest.mark.parametrize("message, field", [
    (make_instruction(creditor_name="张" * 141), "creditor_name"),
    (make_instruction(memo="a\nb"), "memo"),
    (make_instruction(reference="R" * 36), "reference"),
    (make_instruction(seq_no="has space"), "seq_no"),
    (make_instruction(same_bank=False, creditor_bank_code=""), "creditor_bank_code"),
    (make_instruction(amount=0), "amount"),
    (make_instruction(purpose="gift"), "purpose"),
    (base.Result("1", "2", "3", False, code="NOTFOUND"), "code"),
    (base.Result("1", "2", "3", False, text="x" * 501), "text"),
    (base.Balance("1", "", "A", 1, 1, status="", as_of=FIXED_NOW), "status"),
    (base.Balance("1", "", "A", 1, 1, status=" ", as_of=FIXED_NOW), "status"),
    (base.Balance("1", "", "A", 1, 1, status="ITBD"), "as_of"),
    (base.Balance("1", "", "A", 1, 1, overdraft=-1, status="ITBD", as_of=FIXED_NOW), "overdraft"),
    (base.Movement("1", ()), "entries"),
    (base.Statement("1", "", "A", (base.Entry("B", "", 1, dt.date(2025, 1, 1), dt.time(0)),)), "account"),
    (base.SignOnAnswer("1", "", GATEWAY), "reply_to"),
    (base.Ack("1", "2", code="c" * 36), "code"),
])
def test_values_the_schemas_cannot_carry_are_refused_at_encode(message: base.Message, field: str) -> None:
    with pytest.raises(AdapterError, match=field):
        ADAPTER.encode(message, sender=GATEWAY, receiver=BANK)


def test_nodes_are_checked_and_the_receiver_is_required() -> None:
    with pytest.raises(AdapterError, match="receiver"):
        ADAPTER.encode(base.SignOn("1", GATEWAY), sender=GATEWAY)
    with pytest.raises(AdapterError, match="sender"):
        ADAPTER.encode(base.SignOn("1", GATEWAY), sender="bad node", receiver=BANK)


# -- status reports from other banks --------------------------------------------------------


def pain002(inner: str, *, msg_id: str = "S1", original: str = "O1") -> bytes:
    return (f'<Document xmlns="{ISO_PREFIX}pain.002.001.10"><CstmrPmtStsRpt><GrpHdr><MsgId>{msg_id}</MsgId>'
            f"<CreDtTm>2025-01-01T10:00:00</CreDtTm></GrpHdr><OrgnlGrpInfAndSts><OrgnlMsgId>{original}"
            f"</OrgnlMsgId><OrgnlMsgNmId>pain.001.001.09</OrgnlMsgNmId>{inner}</CstmrPmtStsRpt>"
            f"</Document>").encode()


def test_group_status_alone_speaks_of_the_original_message() -> None:
    body = pain002("<GrpSts>RJCT</GrpSts><StsRsnInf><Rsn><Cd>AM04</Cd></Rsn><AddtlInf>no money</AddtlInf>"
                   "</StsRsnInf></OrgnlGrpInfAndSts>")
    assert ADAPTER.decode_document(body) == [
        base.Result("S1", "O1", "O1", False, code="AM04", text="no money")]


def test_several_transactions_give_one_message_each_with_inherited_status() -> None:
    body = pain002("<GrpSts>ACCP</GrpSts></OrgnlGrpInfAndSts><OrgnlPmtInfAndSts><OrgnlPmtInfId>P"
                   "</OrgnlPmtInfId><PmtInfSts>ACSC</PmtInfSts>"
                   "<TxInfAndSts><OrgnlEndToEndId>E1</OrgnlEndToEndId><AcctSvcrRef>H1</AcctSvcrRef></TxInfAndSts>"
                   "<TxInfAndSts><OrgnlEndToEndId>E2</OrgnlEndToEndId><TxSts>PDNG</TxSts></TxInfAndSts>"
                   "<TxInfAndSts><OrgnlEndToEndId>E3</OrgnlEndToEndId><TxSts>RJCT</TxSts>"
                   "<StsRsnInf><Rsn><Prtry>NOTFOUND</Prtry></Rsn></StsRsnInf></TxInfAndSts>"
                   "</OrgnlPmtInfAndSts>")
    assert ADAPTER.decode_document(body) == [
        base.Result("S1", "O1", "E1", True, host_seq_no="H1"),
        base.Receipt("S1", "O1", "E2"),
        base.NotFound("S1", "O1", "E3"),
    ]


def test_status_without_neutral_meaning_is_refused_naming_it() -> None:
    body = pain002("<GrpSts>PART</GrpSts></OrgnlGrpInfAndSts>")
    with pytest.raises(AdapterError, match="PART"):
        ADAPTER.decode_document(body)


# -- camt from banks: 2009 versions, several accounts -----------------------------------------


def test_camt054_version_02_is_read() -> None:
    body = (f'<Document xmlns="{ISO_PREFIX}camt.054.001.02"><BkToCstmrDbtCdtNtfctn><GrpHdr><MsgId>N1</MsgId>'
            "<CreDtTm>2025-01-01T10:00:00+08:00</CreDtTm></GrpHdr><Ntfctn><Id>1</Id>"
            "<CreDtTm>2025-01-01T10:00:00+08:00</CreDtTm><Acct><Id><Othr><Id>6200001111222233</Id></Othr></Id>"
            '</Acct><Ntry><Amt Ccy="CNY">12.30</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts>'
            "<BookgDt><DtTm>2025-01-01T09:30:00</DtTm></BookgDt><ValDt><Dt>2025-01-01</Dt></ValDt>"
            "<AcctSvcrRef>H9</AcctSvcrRef><BkTxCd/><NtryDtls><TxDtls><RltdPties><Dbtr><Nm>单位</Nm></Dbtr>"
            "<DbtrAcct><Id><Othr><Id>99</Id></Othr></Id></DbtrAcct></RltdPties><RltdAgts><DbtrAgt>"
            "<FinInstnId><BIC>ICBKCNBJ</BIC></FinInstnId></DbtrAgt></RltdAgts></TxDtls></NtryDtls>"
            "</Ntry></Ntfctn></BkToCstmrDbtCdtNtfctn></Document>").encode()
    (movement,) = ADAPTER.decode_document(body)
    assert movement == base.Movement("N1", (base.Entry(
        "6200001111222233", "H9", 1230, dt.date(2025, 1, 1), dt.time(9, 30), counterparty_account="99",
        counterparty_name="单位", counterparty_bank_code="ICBKCNBJ"),))
    (pending,) = ADAPTER.decode_document(body.replace(b"<Sts>BOOK</Sts>", b"<Sts>PDNG</Sts>"))
    # Announced, not booked: kept as a pending fact, never among the booked entries.
    assert isinstance(pending, base.Movement) and pending.entries == ()
    assert pending.pending == movement.entries


def test_a_report_on_two_accounts_decodes_to_two_messages_and_decode_refuses_it() -> None:
    one = ADAPTER.encode(base.Balance("B", "Q", "A1", 100, 90, status="ITBD", as_of=FIXED_NOW),
                         sender=BANK, receiver=GATEWAY)
    body = one[4:]
    report = body[body.index(b"<Rpt>"):body.index(b"</Rpt>") + 6]
    two = framed(body.replace(report, report + report.replace(b"<Id>A1</Id>", b"<Id>A2</Id>")))
    assert [m.account for m in ADAPTER.decode_all(two)] == ["A1", "A2"]  # type: ignore[union-attr]
    with pytest.raises(AdapterError, match="2 messages"):
        ADAPTER.decode(two)


# -- the bank's sample files ------------------------------------------------------------------


def count(path: Path, local: str) -> int:
    return sum(1 for el in etree.parse(str(path)).iter() if etree.QName(el).localname == local)


@pytest.mark.parametrize("name", ["camt052_001_02.xml", "camt053_001_02.xml"])
def test_sample_files_report_every_entry_and_every_balance(name: str) -> None:
    path = DATA / name
    messages = ANY_CURRENCY.decode_document(path.read_bytes())
    statements = [m for m in messages if isinstance(m, base.Statement)]
    balances = [m for m in messages if isinstance(m, base.Balance)]
    assert len(statements) + len(balances) == len(messages)
    assert sum(len(s.entries) for s in statements) == count(path, "Ntry") > 0
    carried = sum((s.opening_balance is not None) + (s.closing_balance is not None) for s in statements)
    assert carried + len(balances) == count(path, "Bal") > 0
    tree = etree.parse(str(path))
    amounts = sorted(round(float(a.text) * 100) for a in tree.iter()
                     if etree.QName(a).localname == "Amt" and etree.QName(a.getparent()).localname == "Ntry")
    assert sorted(abs(e.amount) for s in statements for e in s.entries) == amounts


def test_sample_statement_details() -> None:
    messages = ANY_CURRENCY.decode_document((DATA / "camt053_001_02.xml").read_bytes())
    statement, *balances = messages
    assert isinstance(statement, base.Statement)
    assert (statement.account, statement.opening_balance, statement.closing_balance) == (
        "DD01100056869", -84368620, -84666515)
    assert [b.status for b in balances] == ["OPAV", "CLAV"]  # type: ignore[union-attr]
    assert sum(e.reversal for e in statement.entries) == 3
    eur = [e for e in statement.entries if e.amount == -2906]  # the EUR entry, in cents
    assert len(eur) == 1 and eur[0].counterparty_name


def test_sample_files_are_refused_by_a_cny_only_adapter() -> None:
    with pytest.raises(AdapterError, match="USD"):
        ADAPTER.decode_document((DATA / "camt053_001_02.xml").read_bytes())


def test_pain001_version_08_is_not_accepted_on_input() -> None:
    with pytest.raises(AdapterError, match="not a supported ISO 20022 Document: .pain.001.001.08"):
        ANY_CURRENCY.decode_document((DATA / "pain001_001_08.xml").read_bytes())


def test_a_sample_entry_made_schema_invalid_is_set_apart_and_the_rest_read() -> None:
    whole = ANY_CURRENCY.decode_document((DATA / "camt052_001_02.xml").read_bytes())
    body = (DATA / "camt052_001_02.xml").read_bytes().replace(b"<Sts>BOOK</Sts>", b"<Sts>DONE</Sts>", 1)
    before = [m for m in whole if isinstance(m, base.Statement)]
    after = [m for m in ANY_CURRENCY.decode_document(body) if isinstance(m, base.Statement)]
    (problem,) = [p for m in after for p in m.problems]
    assert problem.part.endswith("/Ntry[1]") and "schema" in problem.reason
    assert b"<Sts>DONE</Sts>" in problem.raw
    booked = [e for m in before for e in m.entries]
    assert [e for m in after for e in m.entries] == booked[1:]   # only that entry is set apart


def test_a_sample_made_schema_invalid_outside_any_entry_or_balance_is_refused() -> None:
    body = (DATA / "camt052_001_02.xml").read_bytes().replace(b"<MsgId>", b"<MsgId>" + b"x" * 40, 1)
    with pytest.raises(AdapterError, match="schema"):
        ANY_CURRENCY.decode_document(body)
