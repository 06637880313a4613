"""bocb2e: documents written and read, the neutral mapping, the token, amounts in yuan.

Fixtures under tests/data/bocb2e/ restate public samples; their README names each source.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from adapters import base
from adapters.base import AdapterError
from adapters.bocb2e import NotSignedOn, Refused, Session, StatementPage, Terminal
from adapters.bocb2e import _values as v
from adapters.bocb2e import codec as c

DATA = Path(__file__).parent.parent / "data" / "bocb2e"
NOW = dt.datetime(2021, 6, 24, 13, 58, 0)
TERMINAL = Terminal("E192168202063", "133832423", "136170292")


def fixture(name: str) -> bytes:
    return (DATA / name).read_bytes()


def signed_on() -> Session:
    s = Session(TERMINAL, "secret-pw", lambda: NOW)
    s.signed_on(fixture("b2e0001-rs.xml"))
    return s


def instruction(seq_no: str = "1234561191", amount: int = 5000_00) -> base.Instruction:
    return base.Instruction(
        seq_no=seq_no, send_date=dt.date(2021, 6, 24), centre_node="C52240",
        unit_no="522400000000000", debit_account="254608672703", debit_name="濮阳市某单位",
        creditor_account="249408672775", creditor_name="濮阳市中医院",
        creditor_bank_code="104100000004", creditor_personal=False, same_bank=False,
        amount=amount, purpose="withdrawal", memo="医保局往医院转")


# -- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "fen"), [("5000", 500000), ("1", 100), ("12.3", 1230),
                                           ("12.30", 1230), ("0.01", 1), ("12.300", 1230),
                                           ("99999999999.99", 9999999999999)])
def test_yuan_text_is_read_exactly_into_fen(text: str, fen: int) -> None:
    assert v.parse_yuan("trnamt", text) == fen


@pytest.mark.parametrize("text", ["1.001", "1e3", "-1", "", "1,000.00", "１２", "0x10",
                                  "100000000000.00", "nan"])
def test_yuan_text_that_is_not_exact_fen_is_refused(text: str) -> None:
    with pytest.raises(AdapterError):
        v.parse_yuan("trnamt", text)


def test_fen_is_written_as_yuan_with_two_decimals() -> None:
    assert v.format_yuan("trnamt", 500000) == "5000.00"
    assert v.format_yuan("acctbal", -5, signed=True) == "-0.05"
    for bad in (0, -1, 1.5, 10 ** 13):
        with pytest.raises(AdapterError):
            v.format_yuan("trnamt", bad, positive=True)


# -- sign-on and the token -------------------------------------------------------------------


def test_sign_on_request_carries_credentials_and_no_token() -> None:
    s = Session(TERMINAL, "secret-pw", lambda: NOW)
    req = c.read_request(s.sign_on("04051003127"))
    assert req.trncod == "b2e0001"
    assert (req.head.termid, req.head.custid, req.head.cusopr) == \
        ("E192168202063", "133832423", "136170292")
    assert req.head.token == ""
    assert req.records[0] == {"custdt": "20210624135800", "oprpwd": "secret-pw"}
    assert "secret-pw" not in repr(s)


def test_sign_on_answer_gives_the_token_used_on_every_request() -> None:
    s = Session(TERMINAL, "pw", lambda: NOW)
    with pytest.raises(NotSignedOn):
        s.request(base.BalanceQuery("q1", "254608672703"))
    answer = s.signed_on(fixture("b2e0001-rs.xml"))
    assert answer.ok and answer.reply_to == "04051003127"
    req = c.read_request(s.request(base.BalanceQuery("q1", "254608672703")))
    assert req.head.token == "0D6886D4498DB958C471131A189DF9CF"
    assert req.head.trnid == "q1" and req.trncod == "b2e0005"


def test_a_refused_sign_on_keeps_no_token() -> None:
    s = Session(TERMINAL, "pw", lambda: NOW)
    refused = fixture("b2e0001-rs.xml").replace(b"<rspcod>B001</rspcod>", b"<rspcod>E001</rspcod>")
    answer = s.signed_on(refused)
    assert not answer.ok and answer.code == "E001"
    assert s.token is None


def test_an_expired_token_answer_drops_the_token() -> None:
    s = signed_on()
    q = base.BalanceQuery("q1", "254608672703")
    with pytest.raises(NotSignedOn):
        s.read(q, fixture("b2eerror-rs.xml"))
    assert s.token is None
    for code in (b"1033",):
        s = signed_on()
        with pytest.raises(NotSignedOn):
            s.read(q, fixture("b2eerror-rs.xml").replace(b"B107", code))


def test_sign_off_drops_the_token() -> None:
    s = signed_on()
    req = c.read_request(s.sign_off("x1"))
    assert req.trncod == "b2e0002" and req.records[0] == {"custdt": "20210624135800"}
    assert s.token is None


# -- transfer and status ---------------------------------------------------------------------


def test_transfer_request_is_keyed_by_the_durable_serial_in_yuan() -> None:
    req = c.read_request(signed_on().request(instruction()))
    assert req.trncod == "b2e0009" and req.head.trnid == "1234561191"
    r = req.records[0]
    assert r["insid"] == "1234561191" and r["trnamt"] == "5000.00" and r["trncur"] == "001"
    assert r["fractn/actacn"] == "254608672703" and r["toactn/actacn"] == "249408672775"
    assert r["toactn/toname"] == "濮阳市中医院" and r["furinfo"] == "医保局往医院转"
    assert r["trfdate"] == "20210624"


def test_transfer_written_in_gb18030_declares_it() -> None:
    data = signed_on().request(instruction())
    assert data.startswith(b'<?xml version="1.0" encoding="GB18030"?>')
    assert "濮阳市中医院".encode("gb18030") in data


def test_transfer_answer_processing_is_a_receipt_with_the_bank_serial() -> None:
    s = signed_on()
    got = s.read(instruction(), fixture("b2e0009-rs.xml"))
    assert got == [base.Receipt("04051003128", "1234561191", "1234561191", bank_seq_no="16005010586")]


def test_transfer_answer_with_another_record_code_is_no_outcome() -> None:
    """Only b2e0007 gives a final outcome: a refused or unexplained record leaves the transfer
    in doubt (Refused), never failed, so a resent insid can never be mistaken for a refusal."""
    s = signed_on()
    data = fixture("b2e0009-rs.xml").replace(b"<rspcod>B059</rspcod>", b"<rspcod>E123</rspcod>")
    with pytest.raises(Refused) as e:
        s.read(instruction(), data)
    assert e.value.code == "E123"


def test_transfer_answer_for_another_insid_is_refused() -> None:
    with pytest.raises(AdapterError):
        signed_on().read(instruction("999"), fixture("b2e0009-rs.xml"))


@pytest.mark.parametrize(("code", "kind", "succeeded"), [
    ("B001", base.Result, True), ("B054", base.Receipt, None), ("B059", base.Receipt, None),
    ("B266", base.Receipt, None), ("E999", base.Result, False)])
def test_status_codes_map_exactly(code: str, kind: type, succeeded: bool | None) -> None:
    s = signed_on()
    q = base.StatusQuery("q7", "1234561191", dt.date(2021, 6, 24))
    req = c.read_request(s.request(q))
    assert req.trncod == "b2e0007" and req.records[0]["insid"] == "1234561191"
    data = fixture("b2e0007-rs.xml").replace(b"<rspcod>B001</rspcod>\n\t\t\t\t",
                                             f"<rspcod>{code}</rspcod>\n\t\t\t\t".encode())
    [got] = s.read(q, data)
    assert type(got) is kind and got.ref == "1234561191" and got.reply_to == "q7"
    assert got.bank_seq_no == "16005010586"
    if kind is base.Result:
        assert got.succeeded is succeeded
        assert got.code == ("" if succeeded else code)


def test_a_whole_answer_refused_is_refused() -> None:
    data = fixture("b2e0007-rs.xml").replace(b"<rspcod>B001</rspcod>", b"<rspcod>E500</rspcod>", 1)
    with pytest.raises(Refused):
        signed_on().read(base.StatusQuery("q", "1234561191", dt.date(2021, 6, 24)), data)


# -- balance and statement -------------------------------------------------------------------


def test_balance_answer_reads_book_available_and_date() -> None:
    q = base.BalanceQuery("q2", "254608672703")
    [b] = signed_on().read(q, fixture("b2e0005-rs.xml"))
    assert b == base.Balance("04051003129", "q2", "254608672703", balance=12345670,
                             available=10000000, overdraft=0, account_name="濮阳市某单位",
                             as_of=dt.datetime(2021, 6, 24))


def test_statement_page_with_more_to_come() -> None:
    s = signed_on()
    page = StatementPage("q3", "254608672703", dt.date(2021, 6, 1), dt.date(2021, 6, 30),
                         begnum=1, recnum=2)
    req = c.read_request(s.request(page))
    assert req.trncod == "b2e0035"
    r = req.records[0]
    assert (r["datescope/from"], r["datescope/to"], r["begnum"], r["recnum"]) == \
        ("20210601", "20210630", "1", "2")
    got = s.read(page, fixture("b2e0035-rs.xml"))
    assert got.more and got.next_begnum == 3 and got.total == 3
    debit, credit = got.statement.entries
    assert debit.amount == -5000 and debit.host_seq_no == "T20210624001"
    assert debit.counterparty_account == "249408672775" and debit.counterparty_name == "濮阳市中医院"
    assert debit.balance_after == 12340670 and debit.time == dt.time(13, 58, 47)
    assert credit.amount == 100000 and credit.counterparty_account == "6217000000000001"
    assert credit.counterparty_name == "张三"
    last = fixture("b2e0035-rs.xml").replace(b"<rspcod>B002</rspcod>", b"<rspcod>B001</rspcod>")
    assert not s.read(page, last).more


def test_a_row_with_a_direction_of_unknown_meaning_is_refused() -> None:
    data = fixture("b2e0035-rs.xml").replace(b"<direction></direction>", b"<direction>1</direction>", 1)
    page = StatementPage("q3", "254608672703", dt.date(2021, 6, 1), dt.date(2021, 6, 30))
    with pytest.raises(AdapterError, match="direction"):
        signed_on().read(page, data)


# -- hostile input ---------------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    b"", b"<bocb2e/>", b"<html>no</html>", b"\xff\xfe<bocb2e/>",
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><bocb2e>&a;</bocb2e>',
    b"<bocb2e><head/><trans><trn-b2e0005-rs/><trn-b2e0005-rs/></trans></bocb2e>",
    b"<bocb2e>" + b"<a>" * 100 + b"</a>" * 100 + b"</bocb2e>",
])
def test_hostile_answers_are_refused_with_adapter_error(data: bytes) -> None:
    with pytest.raises(AdapterError):
        c.read_answer(data)


def test_text_gb18030_cannot_carry_is_refused_naming_the_field() -> None:
    with pytest.raises(AdapterError, match="toname"):
        signed_on().request(instruction().__class__(**{**instruction().__dict__,
                                                       "creditor_name": "张\ud800"}))


# -- the neutral adapter (the contract's face) --------------------------------------------------


def test_the_adapter_reads_every_source_sample_as_a_neutral_message() -> None:
    from adapters.bocb2e import BocB2eAdapter

    a = BocB2eAdapter()
    assert a.decode(fixture("b2e0009-rs.xml").strip()) == base.Receipt(
        "04051003128", "04051003128", "1234561191", bank_seq_no="16005010586")
    assert a.decode(fixture("b2e0007-rs.xml").strip()) == base.Result(
        "04051003128", "04051003128", "1234561191", succeeded=True, host_seq_no="16005010586",
        bank_seq_no="16005010586", text="交易成功")
    balance = a.decode(fixture("b2e0005-rs.xml").strip())
    assert isinstance(balance, base.Balance) and balance.balance == 12345670
    statement = a.decode(fixture("b2e0035-rs.xml").strip())
    assert isinstance(statement, base.Statement) and statement.account == "254608672703"
    assert [e.amount for e in statement.entries] == [-5000, 100000]
    signon = a.decode(fixture("b2e0001-rs.xml").strip())
    assert isinstance(signon, base.SignOnAnswer) and signon.ok
    with pytest.raises(AdapterError, match="B107"):
        a.decode(fixture("b2eerror-rs.xml").strip())


def test_the_framer_cuts_captured_documents_at_each_root_end() -> None:
    from adapters.bocb2e import BocB2eAdapter

    a = BocB2eAdapter()
    one, two = fixture("b2e0009-rs.xml").strip(), fixture("b2e0005-rs.xml").strip()
    f = a.framer()
    assert f.feed(one[:50]) == [] and f.pending() == 50
    assert f.feed(one[50:] + two) == [one, two] and f.pending() == 0
    for bad in (b"x<bocb2e/>", b"<bocb2e>\x00"):
        with pytest.raises(AdapterError):
            a.framer().feed(bad)


def test_the_adapter_writes_what_the_session_writes_for_a_transfer() -> None:
    """One codec serves both faces: the same transfer, the same record."""
    from adapters.bocb2e import BocB2eAdapter

    ins = instruction()
    by_adapter = c.read_request(BocB2eAdapter(TERMINAL).encode(ins, sender="C52240"))
    by_session = c.read_request(signed_on().request(ins))
    assert by_adapter.records == by_session.records


def test_a_transfer_is_checked_without_writing_its_document(monkeypatch: pytest.MonkeyPatch) -> None:
    """The intake asks of every transfer whether its link could send it: the check reads the
    request's values and head, and writes the request only to refuse it as encode does."""
    from adapters.bocb2e import BocB2eAdapter

    uncarried = BocB2eAdapter(Terminal("T\x01", TERMINAL.custid, TERMINAL.cusopr))  # XML cannot carry \x01
    with pytest.raises(AdapterError) as refused:
        uncarried.encode(instruction(), sender="C52240")
    written: list[object] = []
    write = c.write_request
    monkeypatch.setattr(c, "write_request", lambda *args: written.append(args) or write(*args))
    BocB2eAdapter(TERMINAL).check(instruction(), sender="C52240")
    assert written == []
    with pytest.raises(AdapterError) as checked:
        uncarried.check(instruction(), sender="C52240")
    assert str(checked.value) == str(refused.value)
    assert len(written) == 1
