"""CCB WLPT: <TX> documents, DEAL_RESULT mapping, duplicates, 6WY101 details page by page,
the simulated client over TCP.

Samples restated: the 6W8010 and 6W0100 requests of a public Java socket client
(`com.mall.utils.SocketClient`, WLPT port 12345, GB2312), the 6W1503 request of a public
client (`REQUEST_SN1`), and a public 6W8010 answer (GB18030, RETURN_CODE 000000, CREDIT_NO,
CST_PAY_NO); the 6WY101 request and answer in tests/data/ccb (README there names each
source); see docs/protocols/ccb.md.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Protocol

from adapters import base
from adapters.base import AdapterError
from adapters.ccb import CcbAdapter, Customer, request_sn
from adapters.ccb import codec as c
from gateway.simulate.ccb import WlptClient, WlptFactory

T0 = dt.datetime(2017, 7, 10, 11, 21, 42)
CUSTOMER = Customer("JXP314676206#001", "WLPT03", "111111")
PAYER, PAYEE = "36001250310052510755", "36001050206052500154"

ANSWER_6W8010 = '''<?xml version="1.0" encoding="GB18030"?>
<TX>
  <REQUEST_SN>2017071000000237</REQUEST_SN>
  <CUST_ID>ZJ33000009170851001</CUST_ID>
  <TX_CODE>6W8010</TX_CODE>
  <RETURN_CODE>000000</RETURN_CODE>
  <RETURN_MSG></RETURN_MSG>
  <LANGUAGE>CN</LANGUAGE>
  <TX_INFO>
    <CREDIT_NO>100761892436</CREDIT_NO>
    <DEAL_TYPE>2</DEAL_TYPE>
    <VALIDATE_CODE>17623887193142</VALIDATE_CODE>
    <REM1></REM1>
    <REM2></REM2>
    <CST_PAY_NO>20170710112142319200000237</CST_PAY_NO>
  </TX_INFO>
</TX>'''.encode("gb18030")


def instruction(seq_no: str = "52240170710000000237", amount: int = 100_00,
                same_bank: bool = True) -> base.Instruction:
    return base.Instruction(
        seq_no=seq_no, send_date=T0.date(), centre_node="C52240", unit_no="522400000000000",
        debit_account=PAYER, debit_name="某中心", creditor_account=PAYEE, creditor_name="公司二零",
        creditor_bank_code="" if same_bank else "105100000017", creditor_personal=False,
        same_bank=same_bank, amount=amount, purpose="withdrawal", memo="用途")


def test_request_sn_is_the_reference_in_at_most_16_digits() -> None:
    assert request_sn("2017071000000237") == "2017071000000237"
    assert request_sn("52240170710000000237") == "170710000000237"
    for bad in ("abc", "1" * 17, "5224017071000000023x"):
        with pytest.raises(AdapterError):
            request_sn(bad)


def test_transfer_request_in_yuan_with_the_customer_head() -> None:
    tx = c.read_tx(CcbAdapter(CUSTOMER).encode(instruction(), sender="C52240"))
    assert tx.head == {"REQUEST_SN": "170710000000237", "CUST_ID": CUSTOMER.cust_id,
                       "USER_ID": "WLPT03", "PASSWORD": "111111", "TX_CODE": "6W8010",
                       "LANGUAGE": "CN", "SIGN_INFO": "", "SIGNCERT": ""}
    assert tx.get("AMOUNT") == "100.00" and tx.get("CUR_TYPE") == "01"
    assert "RECV_UBANKNO" not in tx.info
    other = c.read_tx(CcbAdapter(CUSTOMER).encode(instruction(same_bank=False), sender="C52240"))
    assert other.head["TX_CODE"] == "6W8060" and other.get("RECV_UBANKNO") == "105100000017"
    assert "111111" not in repr(CUSTOMER)


def test_the_public_answer_is_a_receipt_never_an_outcome() -> None:
    got = CcbAdapter().decode_answer(ANSWER_6W8010, instruction())
    assert got == base.Receipt(instruction().seq_no, instruction().seq_no, instruction().seq_no,
                               bank_seq_no="100761892436")


@pytest.mark.parametrize(("deal", "kind", "ok"), [("4", base.Result, True), ("3", base.Result, False),
                                                  ("0", base.Receipt, None), ("2", base.Receipt, None)])
def test_deal_result_maps_exactly(deal: str, kind: type, ok: bool | None) -> None:
    q = base.StatusQuery("Q1", "52240170710000000237", T0.date())
    answer = c.write_tx(c.Tx({"REQUEST_SN": "1", "CUST_ID": "", "TX_CODE": "6W1503",
                              "RETURN_CODE": "000000", "RETURN_MSG": "", "LANGUAGE": "CN"},
                             {"REQUEST_SN1": "170710000000237", "DEAL_RESULT": deal}))
    got = CcbAdapter().decode_answer(answer, q)
    assert type(got) is kind and got.reply_to == "Q1" and got.ref == q.ref
    if ok is not None:
        assert got.succeeded is ok


def test_no_such_request_is_not_found_and_an_unreadable_deal_result_is_refused() -> None:
    q = base.StatusQuery("Q1", "52240170710000000237", T0.date())
    head = {"REQUEST_SN": "1", "CUST_ID": "", "TX_CODE": "6W1503", "RETURN_MSG": "",
            "LANGUAGE": "CN"}
    gone = c.write_tx(c.Tx({**head, "RETURN_CODE": c.NOT_FOUND}, {}))
    assert CcbAdapter().decode_answer(gone, q) == base.NotFound("1", "Q1", q.ref)
    for deal in ("", "x", "４"):
        bad = c.write_tx(c.Tx({**head, "RETURN_CODE": "000000"}, {"DEAL_RESULT": deal}))
        with pytest.raises(AdapterError):
            CcbAdapter().decode_answer(bad, q)


def test_simulated_client_settles_once_and_answers_a_repeat_as_a_duplicate() -> None:
    wlpt = WlptClient(CUSTOMER.cust_id, CUSTOMER.user_id, "111111", {PAYER: 500_00, PAYEE: 0})
    a = CcbAdapter(CUSTOMER)

    def exchange(m: base.Message) -> base.Message:
        return a.decode_answer(wlpt.answer(a.encode(m, sender="C52240"), T0), m)

    ins = instruction()
    assert isinstance(exchange(ins), base.Receipt)
    again = exchange(ins)   # 记录重复: the bank has it; still only a receipt
    assert isinstance(again, base.Receipt)
    assert isinstance(exchange(base.StatusQuery("52240170710900000001", ins.seq_no, T0.date())),
                      base.Receipt)
    result = exchange(base.StatusQuery("52240170710900000002", ins.seq_no, T0.date()))
    assert isinstance(result, base.Result) and result.succeeded
    assert wlpt.executions == 1 and wlpt.balances == {PAYER: 400_00, PAYEE: 100_00}
    assert exchange(base.BalanceQuery("52240170710900000003", PAYER)).balance == 400_00
    assert isinstance(exchange(base.StatusQuery("52240170710900000004", "999", T0.date())),
                      base.NotFound)
    wrong = CcbAdapter(Customer(CUSTOMER.cust_id, "WLPT03", "bad"))
    with pytest.raises(AdapterError, match="SIM401"):
        wrong.decode_answer(wlpt.answer(wrong.encode(base.BalanceQuery("9", PAYER),
                                                     sender="C52240"), T0),
                            base.BalanceQuery("9", PAYER))


class _Collect(Protocol):
    def __init__(self, payload: bytes, done: Deferred[bytes]) -> None:
        self.payload, self.done, self.parts = payload, done, []

    def connectionMade(self) -> None:
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        self.parts.append(data)

    def connectionLost(self, reason: object) -> None:
        self.done.callback(b"".join(self.parts))


class _Once(ClientFactory):
    def __init__(self, payload: bytes, done: Deferred[bytes]) -> None:
        self.payload, self.done = payload, done

    def buildProtocol(self, addr: object) -> _Collect:
        return _Collect(self.payload, self.done)

    def clientConnectionFailed(self, connector: object, reason: object) -> None:
        self.done.errback(reason)


@pytest_twisted.ensureDeferred
async def test_one_tx_per_tcp_connection_over_loopback() -> None:
    wlpt = WlptClient(CUSTOMER.cust_id, CUSTOMER.user_id, "111111", {PAYER: 123_45})
    port = reactor.listenTCP(0, WlptFactory(wlpt, lambda: T0), interface="127.0.0.1")
    try:
        q = base.BalanceQuery("52240170710900000009", PAYER)
        done: Deferred[bytes] = Deferred()
        reactor.connectTCP("127.0.0.1", port.getHost().port,
                           _Once(CcbAdapter(CUSTOMER).encode(q, sender="C52240"), done), timeout=5)
        answer = await done
        assert CcbAdapter().decode_answer(answer, q).balance == 123_45
    finally:
        await port.stopListening()


def test_each_front_end_adapter_says_whether_it_signs_on_and_that_it_has_no_heartbeat() -> None:
    from adapters.bocb2e import BocB2eAdapter
    from adapters.icbc import IcbcAdapter

    assert (BocB2eAdapter.needs_sign_on, IcbcAdapter.needs_sign_on, CcbAdapter.needs_sign_on) == \
        (True, False, False)
    for adapter in (BocB2eAdapter(), IcbcAdapter(), CcbAdapter()):
        assert type(adapter).has_heartbeat is False
        with pytest.raises(AdapterError):
            adapter.encode(base.Heartbeat("1", "C52240"), sender="C52240")
        if not type(adapter).needs_sign_on:
            with pytest.raises(AdapterError):
                adapter.encode(base.SignOn("1", "C52240"), sender="C52240")


# -- 6WY101: an account's details, page by page --------------------------------------------

DATA = Path(__file__).resolve().parents[1] / "data" / "ccb"
DETAILS_ACCOUNT = "44201501100052511215"


def fixture(name: str) -> bytes:
    return (DATA / name).read_bytes()


def first_page() -> c.DetailsPage:
    return CcbAdapter().statement_page("2015101900000001", DETAILS_ACCOUNT, dt.date(2015, 10, 19), None)


def test_a_details_request_sends_every_leaf_the_public_client_sends_in_its_order() -> None:
    tx = c.read_tx(CcbAdapter(CUSTOMER).encode(first_page(), sender="C52240"))
    public = c.read_tx(fixture("6WY101-rq.xml"))
    assert tx.head["TX_CODE"] == "6WY101" and list(tx.info) == list(public.info)
    assert tx.info == {**public.info, "PAGE": "1", "POSTSTR": "", "TOTAL_RECORD": "100"}
    nxt = CcbAdapter().statement_page("2015101900000003", DETAILS_ACCOUNT, dt.date(2015, 10, 19),
                                      (2, "1010015131456736417027990+11+1+11+"))
    later = c.read_tx(CcbAdapter(CUSTOMER).encode(nxt, sender="C52240"))
    assert (later.get("PAGE"), later.get("POSTSTR")) == ("2", "1010015131456736417027990+11+1+11+")
    for bad in (c.DetailsPage("1", DETAILS_ACCOUNT, dt.date(2015, 10, 19), dt.date(2015, 10, 19), 2),
                c.DetailsPage("1", DETAILS_ACCOUNT, dt.date(2015, 10, 19), dt.date(2015, 10, 19),
                              per_page=201),
                c.DetailsPage("1", DETAILS_ACCOUNT, dt.date(2015, 10, 20), dt.date(2015, 10, 19))):
        with pytest.raises(AdapterError, match="6WY101"):
            CcbAdapter(CUSTOMER).encode(bad, sender="C52240")


def test_the_public_details_answer_is_a_page_of_the_accounts_statement() -> None:
    page = CcbAdapter().decode_answer(fixture("6WY101-rs.xml"), first_page())
    assert isinstance(page, c.DetailsAnswer)
    s = page.statement
    assert (s.seq_no, s.reply_to, s.account) == ("2015101900000001", "2015101900000001", DETAILS_ACCOUNT)
    assert [(e.amount, e.balance_after, e.host_seq_no) for e in s.entries] == [
        (-10_00, 70_00, "442000034A890000083"), (-10_00, 60_00, "442000034A890000084"),
        (25_50, 85_50, "442000034A890000091")]
    first = s.entries[0]
    assert (first.value_date, first.time) == (dt.date(2015, 10, 19), dt.time(17, 48, 15))
    assert (first.counterparty_account, first.counterparty_name, first.summary) == \
        ("6200009999000011", "张三", "劳务费")
    assert first.counterparty_bank_code == "" and first.remark == "" and not first.reversal
    assert page.more and page.cursor == (2, "1010015131456736417027990+11+1+11+")
    # The same page without its request (an operator's file): the answer names the account.
    assert CcbAdapter().decode_document(fixture("6WY101-rs.xml")) == [s]
    # One exchange's evidence, request then answer, reads as the page's statement.
    assert CcbAdapter().decode_document(fixture("6WY101-exchange.xml")) == [s]
    assert CcbAdapter().decode_all(fixture("6WY101-exchange.xml").strip()) == [s]


def test_no_rows_is_an_empty_last_page() -> None:
    page = CcbAdapter().decode_answer(fixture("6WY101-norows-rs.xml"), first_page())
    assert page.statement.entries == () and page.statement.account == DETAILS_ACCOUNT
    assert not page.more and page.cursor is None


def _with_row(**changes: str) -> bytes:
    text = fixture("6WY101-rs.xml").decode("gb18030")
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new, 1)
    return text.encode("gb18030")


@pytest.mark.parametrize(("old", "new", "named"), [
    ("<FLAG1>0</FLAG1>", "<FLAG1>2</FLAG1>", "FLAG1"),        # a sign never guessed
    ("<FLAG1>0</FLAG1>", "<FLAG1></FLAG1>", "FLAG1"),
    ("<AMT>10.00</AMT>", "<AMT>-10.00</AMT>", "AMT"),         # FLAG1 gives the sign, AMT none
    ("<TRAN_FLOW>442000034A890000083</TRAN_FLOW>", "<TRAN_FLOW></TRAN_FLOW>", "TRAN_FLOW"),
    ("<TRANDATE>2015/10/19</TRANDATE>", "<TRANDATE>2015/13/19</TRANDATE>", "TRANDATE"),
])
def test_an_unreadable_row_is_kept_as_a_problem_and_the_other_rows_are_read(
        old: str, new: str, named: str) -> None:
    page = CcbAdapter().decode_answer(_with_row(**{old: new}), first_page())
    s = page.statement
    assert [e.host_seq_no for e in s.entries] == ["442000034A890000084", "442000034A890000091"]
    [problem] = s.problems
    assert problem.part == "DETAILINFO[0]" and named in problem.reason
    assert problem.raw.startswith(b"<DETAILINFO>") and b"<DET_NO>3465</DET_NO>" in problem.raw
    assert page.more    # the page still leads to the next


@pytest.mark.parametrize(("old", "new", "named"), [
    ("<CURR_COD>01</CURR_COD>", "<CURR_COD>14</CURR_COD>", "CURR_COD"),
    ("<ACCNO1>44201501100052511215</ACCNO1>", "<ACCNO1>44201501100052519999</ACCNO1>", "another account"),
    ("<PAGE>1</PAGE>", "<PAGE>2</PAGE>", "PAGE"),
    ("<RETURN_CODE>000000</RETURN_CODE>", "<RETURN_CODE>0130Z1100001</RETURN_CODE>", "refused"),
])
def test_a_details_page_not_for_the_request_is_refused_naming_the_field(
        old: str, new: str, named: str) -> None:
    with pytest.raises(AdapterError, match=named):
        CcbAdapter().decode_answer(_with_row(**{old: new}), first_page())


def test_a_details_page_round_trips_through_the_shared_writer() -> None:
    page = CcbAdapter().decode_answer(fixture("6WY101-rs.xml"), first_page())
    again = CcbAdapter().decode(CcbAdapter().encode(page.statement, sender="105000"))
    assert again == page.statement
    with pytest.raises(AdapterError, match="6WY101"):
        CcbAdapter().decode_answer(fixture("6W0100-rs.xml"), first_page())


def test_simulated_client_pages_the_details_of_executed_transfers() -> None:
    wlpt = WlptClient(CUSTOMER.cust_id, CUSTOMER.user_id, "111111", {PAYER: 1_000_00, PAYEE: 0},
                      polls_before_final=0)
    a = CcbAdapter(CUSTOMER)
    serials = iter(range(1, 1000))

    def exchange(m: object) -> object:
        return a.decode_answer(wlpt.answer(a.encode(m, sender="C52240"), T0), m)

    day = T0.date()
    page = exchange(a.statement_page(f"{next(serials):016d}", PAYER, day, None))
    assert page.statement.entries == () and not page.more    # 8350ZX100000 before any transfer
    for i in range(5):
        ins = instruction(seq_no=f"52240170710{i + 1:09d}", amount=(i + 1) * 10_00)
        exchange(ins)
        assert exchange(base.StatusQuery(f"{next(serials):016d}", ins.seq_no, day)).succeeded
    seen: list[base.Entry] = []
    cursor = None
    while True:
        request = c.DetailsPage(f"{next(serials):016d}", PAYER, day, day,
                                *(cursor or (1, "")), per_page=2)
        page = exchange(request)
        seen += page.statement.entries
        cursor = page.cursor
        if cursor is None:
            break
    assert [e.amount for e in seen] == [-10_00, -20_00, -30_00, -40_00, -50_00]
    assert [e.balance_after for e in seen] == [990_00, 970_00, 940_00, 900_00, 850_00]
    assert seen[-1].balance_after == wlpt.balances[PAYER]
    assert len({e.host_seq_no for e in seen}) == 5
    credits = exchange(c.DetailsPage(f"{next(serials):016d}", PAYEE, day, day))
    assert [e.amount for e in credits.statement.entries] == [10_00, 20_00, 30_00, 40_00, 50_00]
    # A page past the first with a POSTSTR it never gave, or a changed TOTAL_RECORD: refused.
    for bad in (c.DetailsPage(f"{next(serials):016d}", PAYER, day, day, 2, "x", per_page=2),
                c.DetailsPage(f"{next(serials):016d}", PAYER, day, day, 2,
                              f"{day:%Y%m%d}{day:%Y%m%d}+2+", per_page=3)):
        with pytest.raises(AdapterError, match="SIM400"):
            exchange(bad)
