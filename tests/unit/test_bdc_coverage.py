"""bdc coverage beyond the neutral vocabulary (issue 18 item 6): BDC002, BDC102, BDC103/104
with BDC107/108, BDC112, and "not supported" answered in protocol for every other code.

Field orders are restated from the interface reference (docs/protocols/bdc.md, "Coverage");
the simulated bank's desk (gateway/simulate/bdc_desk.py) is driven without a reactor.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from adapters.base import AdapterError, Instruction, Movement, Result
from adapters.bdc import BdcAdapter, _batch
from adapters.bdc import messages as bm
from adapters.bdc.codec import AnswerRefused
from gateway.simulate.bank import BankCore
from gateway.simulate.bdc_desk import BdcDesk

NOW = dt.datetime(2017, 11, 30, 10, 30, 16)
CENTRE, BANK = "C52240", "105000"
UNIT = "522400000000000"
CENTRE_ACCT, PAYEE, PAYEE2 = "6200001111222233", "6200004444555566", "6200004444555577"
ECHO = BdcAdapter(clock=lambda: NOW, echo=True)
CANONICAL = BdcAdapter(clock=lambda: NOW, echo=False)

ITEMS = (bm.BatchItem(1, 250000, PAYEE, "张三", branch_code="105100000017", summary="011711300000001",
                      reference="011711300000001"),
         bm.BatchItem(2, 100, PAYEE2, "李四", branch_code="104100000017", summary="011711300000002"))
PAYMENT = bm.Batch("52240171130000000007", dt.date(2017, 11, 30), CENTRE, UNIT, "payment", "02", "3",
                   CENTRE_ACCT, "示例中心归集户", ITEMS, memo="批量提取")
COLLECTION = bm.Batch("52240171130000000008", dt.date(2017, 11, 30), CENTRE, UNIT, "collection", "01", "1",
                      CENTRE_ACCT, "示例中心归集户",
                      (bm.BatchItem(1, 5000, PAYEE, "张三", summary="021711300000009",
                                    reference="021711300000009"),))
SINGLE = bm.Collection("52240171130000000009", dt.date(2017, 11, 30), CENTRE, UNIT, CENTRE_ACCT,
                       "示例中心归集户", PAYEE, "张三", True, False, 12345, "01",
                       debtor_bank_code="104100000017", reference="021711300000042")
LINES = (bm.BatchLine(1, 250000, CENTRE_ACCT, "中心", PAYEE, "张三", "00000", "成功", dt.date(2017, 11, 30), "H1"),
         bm.BatchLine(2, 100, CENTRE_ACCT, "中心", PAYEE2, "李四", "E001", "户名不符"))
ANSWERS = [
    bm.SignOffAnswer("B1", "52240171130000000001", BANK),
    bm.SignOffAnswer("B1", "52240171130000000001", BANK, ok=False, code="E9", text="no session"),
    bm.BatchAccepted("B2", PAYMENT.seq_no, "2394880768"),
    bm.BatchStatus("B3", "52240171130000000010", "2394880768", "partial", dt.date(2017, 11, 30), "02", 2,
                   250100, 1, 250000, send_seq_no=PAYMENT.seq_no),
    bm.BatchResults("B4", "52240171130000000011", "2394880768", dt.date(2017, 11, 30), UNIT, 2, 250100, 1,
                    250000, 1, 100, LINES, summary="*"),
    bm.Branches("B5", "52240171130000000012", (bm.Branch("104522400017", "中国银行贵州分行"),)),
]
REQUESTS = [
    bm.SignOff("52240171130000000001", CENTRE), SINGLE, PAYMENT, COLLECTION,
    bm.BatchQuery("52240171130000000010", "2394880768"),
    bm.BatchResultQuery("52240171130000000011", "2394880768"),
    bm.BranchQuery("52240171130000000012", "104", ("5224", "5201")),
    bm.StatementQuery("52240171130000000013", dt.date(2017, 11, 1), dt.date(2017, 11, 30), BANK),
]


def names(frame: bytes, part: str) -> list[str]:
    text = frame[20:].decode("gbk")
    inner = text.split(f"<{part}>")[1].split(f"</{part}>")[0] if f"<{part}>" in text else ""
    return [chunk.split('"')[0] for chunk in inner.split('<field name="')[1:]]


@pytest.mark.parametrize("message", REQUESTS + ANSWERS, ids=lambda m: type(m).__name__)
def test_every_bdc_only_message_survives_a_round_trip(message) -> None:
    answer = message in ANSWERS
    frame = ECHO.encode(message, sender=BANK if answer else CENTRE, receiver=CENTRE if answer else BANK)
    assert frame[6:7] == b"0"  # business messages, BDC002 included
    assert ECHO.decode(frame) == message


@pytest.mark.parametrize("request_, answer", list(zip(
    [REQUESTS[0], PAYMENT, REQUESTS[4], REQUESTS[5], REQUESTS[6]],
    [ANSWERS[0], ANSWERS[2], ANSWERS[3], ANSWERS[4], ANSWERS[5]])), ids=lambda m: type(m).__name__)
def test_canonical_answers_name_no_request_and_are_bound_by_their_connection(request_, answer) -> None:
    frame = CANONICAL.encode_answer(answer, request_, sender=BANK, receiver=CENTRE)
    assert "SendSeqNo" not in names(frame, "head")
    assert CANONICAL.decode_answer(frame, request_) == answer


def test_requests_carry_their_fields_in_the_interface_order() -> None:
    order = {
        "BDC002": [],
        "BDC102": ["SettleType", "BusType", "CrAcctNo", "CrAcctName", "CrAcctClass", "DeAcctNo", "DeAcctName",
                   "DeAcctClass", "DeBankName", "DeChgNo", "DeBankClass", "ConAgrNo", "Amt", "RefAcctNo",
                   "RefSeqNo", "Summary", "Remark"],
        "BDC103": ["FileType", "BusType", "BatchPrjNo", "DeAcctNo", "DeAcctName", "DeAcctClass", "BatchCapAmt",
                   "DeIntAcctNo", "DeIntAcctName", "DeIntAcctClass", "DeIntCrAcct", "BatchIntAmt",
                   "BatchTotalNum", "BatchTotalAmt", "Remark", "NAME", "DATA"],
        "BDC104": ["FileType", "BusType", "BatchPrjNo", "CrAcctNo", "CrAcctName", "CrAcctClass",
                   "BatchTotalNum", "BatchTotalAmt", "Remark", "NAME", "DATA"],
        "BDC107": ["BatchNo"], "BDC108": ["TxCodeSub", "BatchNo"], "BDC112": ["BankNo", "AreaNo"],
        "BDC113": ["TxDateBegin", "TxDateEnd"],
    }
    for message in REQUESTS:
        frame = CANONICAL.encode(message, sender=CENTRE, receiver=BANK)
        head = names(frame, "head")
        assert head == ["SendDate", "SendTime", "SendSeqNo", "TxUnitNo", "SendNode", "TxCode", "ReceiveNode",
                        "CustNo", "OperNo"]
        code = frame[20:].decode("gbk").split('"TxCode">')[1][:6]
        assert names(frame, "body") == order[code], code
    batch = CANONICAL.encode(PAYMENT, sender=CENTRE, receiver=BANK)[20:].decode("gbk")
    assert f"<field name=\"NAME\">BDC_BAT_{UNIT}{PAYMENT.seq_no}.DAT</field>" in batch
    assert '<field name="BatchTotalNum">2</field><field name="BatchTotalAmt">2501.00</field>' in batch
    assert '<field name="AreaNo">5224,5201</field>' in \
        CANONICAL.encode(REQUESTS[6], sender=CENTRE, receiver=BANK)[20:].decode("gbk")


def test_batch_files_have_the_four_layouts_of_the_interface() -> None:
    sep = "@|$"
    pay_other = _batch.format_batch("payment", "3", ITEMS).split("\n")[0]
    assert pay_other.split(sep) == ["1", "2500.00", PAYEE, "张三", "105100000017", "", "", "011711300000001", "",
                                    "011711300000001", "", "2500.00", "", ""]
    pay_same = _batch.format_batch("payment", "1", (dataclasses.replace(ITEMS[0], branch_code=""),))
    assert pay_same == f"1@|$2500.00@|${PAYEE}@|$张三@|$011711300000001@|$@|$011711300000001@|$@|$2500.00@|$@|$"
    col_same = _batch.format_batch("collection", "1", COLLECTION.items)
    assert col_same == f"1@|$50.00@|${PAYEE}@|$张三@|$021711300000009@|$@|$021711300000009@|$"
    col_other = _batch.format_batch("collection", "2", (dataclasses.replace(
        COLLECTION.items[0], branch_code="104100000017", agreement_no="XY01", address="贵阳"),))
    assert col_other.split(sep)[:9] == ["1", "50.00", PAYEE, "张三", "104100000017", "", "贵阳", "XY01",
                                        "021711300000009"]
    for kind, ft, text, items in (("payment", "3", _batch.format_batch("payment", "3", ITEMS), ITEMS),
                                  ("collection", "1", col_same, COLLECTION.items)):
        assert _batch.parse_batch(kind, ft, text) == items


def test_batch_files_are_read_tolerantly_and_refused_where_they_say_more_than_we_carry() -> None:
    text = _batch.format_batch("payment", "3", ITEMS)
    # A '#END' trailer, CRLF, null for empty and whole-yuan amounts (as Java writes them) read the same.
    loose = text.replace("@|$@|$@|$011711300000001", "@|$null@|$@|$011711300000001", 1).replace(
        "2500.00", "2500").replace("\n", "\r\n") + "\n#END"
    assert _batch.parse_batch("payment", "3", loose) == ITEMS
    with pytest.raises(AdapterError, match="IntAmt"):
        _batch.parse_batch("payment", "3", text.replace("@|$2500.00@|$@|$", "@|$2500.00@|$1.00@|$", 1))
    with pytest.raises(AdapterError, match="CrChgNo"):
        _batch.parse_batch("payment", "3", text.replace("105100000017", "", 1))
    with pytest.raises(AdapterError, match="not a fresh line number"):
        _batch.parse_batch("payment", "3", text.replace("2@|$1.00", "1@|$1.00"))
    with pytest.raises(AdapterError, match="FileType"):
        _batch.format_batch("payment", "4", ITEMS)


def test_a_batch_request_whose_totals_disagree_with_its_file_is_refused() -> None:
    frame = ECHO.encode(PAYMENT, sender=CENTRE, receiver=BANK)
    body = frame[20:].replace(b'"BatchTotalAmt">2501.00', b'"BatchTotalAmt">2500.00')
    with pytest.raises(AdapterError, match="BatchTotalAmt"):
        ECHO.decode(frame[:16] + len(body).to_bytes(4, "big") + body)


def test_the_result_file_is_read_as_the_interface_samples_write_it() -> None:
    # The summary sample of the interface reference, whole-yuan numbers, then two item lines and #END.
    text = (f"$20170930|{UNIT}|2394880768|f|3|156|1|2|10|1|5|1|5|*|\n"
            f"1|156|1|5|{CENTRE_ACCT}|中心||{PAYEE}|张三||00000|成功|20170930|H000123|R1||\n"
            f"2|156|1|5.00|{CENTRE_ACCT}|中心|null|{PAYEE2}|李四||E001|户名不符||||bank-own|\n#END")
    summary, lines = _batch.parse_results(text)
    assert summary["batch_no"] == "2394880768" and summary["total_amount"] == 1000
    assert summary["succeeded_num"] == 1 and summary["summary"] == "*"
    assert [(ln.no, ln.amount, ln.succeeded, ln.host_seq_no) for ln in lines] == [
        (1, 500, True, "H000123"), (2, 500, False, "")]
    with pytest.raises(AdapterError, match="summary line"):
        _batch.parse_results(text.split("\n", 1)[1])


def test_branch_rows_are_read_whatever_their_row_element_and_name() -> None:
    frame = ECHO.encode(ANSWERS[5], sender=BANK, receiver=CENTRE)
    body = frame[20:].decode("gbk").replace(
        "</field-list></field-list>",
        '</field-list><field-xxxx name="x"><field name="ChgNo">104520100012</field>'
        '<field name="ChgName">中国银行贵阳分行</field><field name="Extra">1</field></field-xxxx></field-list>')
    raw = body.encode("gbk")
    answer = ECHO.decode(frame[:16] + len(raw).to_bytes(4, "big") + raw)
    assert [b.code for b in answer.branches] == ["104522400017", "104520100012"]


def test_a_failed_batch_answer_is_unconfirmed_and_a_failed_query_is_no_answer() -> None:
    frame = ECHO.encode(bm.BatchAccepted("B2", PAYMENT.seq_no, "", ok=False, code="E77", text="文件格式错"),
                        sender=BANK, receiver=CENTRE)
    assert ECHO.decode(frame) == bm.BatchAccepted("B2", PAYMENT.seq_no, "", ok=False, code="E77", text="文件格式错")
    status = ECHO.encode(ANSWERS[3], sender=BANK, receiver=CENTRE)
    failed = status.replace(b'"TxStatus">0<', b'"TxStatus">1<')
    with pytest.raises(AnswerRefused):
        ECHO.decode(failed)


UNSUPPORTED = ["BDC105", "BDC106"] + [f"BDC{n}" for n in range(114, 123)] + \
    ["BDC901", "BDC902", "BDC903", "BDC904", "BDC905", "BDC906", "BDC909"]


@pytest.mark.parametrize("code", UNSUPPORTED)
def test_every_other_code_is_answered_not_supported_in_protocol(code) -> None:
    frame = CANONICAL.encode(bm.BatchQuery("52240171130000000010", "2394880768"), sender=CENTRE, receiver=BANK)
    body = frame[20:].replace(b">BDC107<", f">{code}<".encode())
    request = frame[:16] + len(body).to_bytes(4, "big") + body
    with pytest.raises(AdapterError, match="not supported"):
        CANONICAL.decode(request)
    answer = CANONICAL.refusal(request, sender=BANK, seq_no="B9")
    assert answer is not None
    head = answer[20:].decode("gbk")
    for name, value in (("TxStatus", "1"), ("RtnCode", "10000"), ("TxCode", code), ("SendNode", CENTRE)):
        assert f'<field name="{name}">{value}</field>' in head


# -- the simulated bank's desk -------------------------------------------------------------


def desk(**core: object) -> tuple[BankCore, BdcDesk]:
    bank = BankCore(node=BANK, accounts={CENTRE_ACCT: 1_000_000, PAYEE: 10_000}, **core)  # type: ignore[arg-type]
    return bank, BdcDesk(bank, branches={"104522400017": "中国银行贵州分行", "104520100012": "中国银行贵阳分行",
                                         "105522400011": "建设银行贵州分行"})


def test_the_desk_executes_a_batch_once_line_by_line_and_reports_every_line() -> None:
    core, d = desk()
    out = d.receive(PAYMENT, 1000.0)
    accepted = out[0]
    assert isinstance(accepted, bm.BatchAccepted) and accepted.reply_to == PAYMENT.seq_no
    notices = [m for m in out[1:] if isinstance(m, Movement)]
    assert len(notices) == 2 and all(isinstance(m, Movement) for m in out[1:])
    assert core.balance(CENTRE_ACCT) == 1_000_000 - 250_100 and core.balance(PAYEE) == 10_000 + 250_000
    again = d.receive(PAYMENT, 1001.0)  # the same request again: the same batch, nothing executed twice
    assert again[0].batch_no == accepted.batch_no and len(again) == 1
    assert set(core.executions.values()) == {1} and len(core.executions) == 2
    status = d.receive(bm.BatchQuery("Q1", accepted.batch_no), 1002.0)[0]
    assert (status.state, status.total_num, status.succeeded_num, status.succeeded_amount) == \
        ("complete", 2, 2, 250_100)
    results = d.receive(bm.BatchResultQuery("Q2", accepted.batch_no), 1003.0)[0]
    assert [(ln.no, ln.succeeded, ln.credit_account) for ln in results.lines] == [(1, True, PAYEE), (2, True, PAYEE2)]
    assert all(ln.host_seq_no for ln in results.lines)
    # What the desk never accepted it does not make up.
    assert d.receive(bm.BatchQuery("Q3", "NOSUCHBATCH"), 1004.0) == []


def test_a_batch_still_executing_is_processing_and_has_no_result_file_yet() -> None:
    core, d = desk(delay=5.0)
    accepted = d.receive(PAYMENT, 1000.0)[0]
    assert d.receive(bm.BatchQuery("Q1", accepted.batch_no), 1001.0)[0].state == "processing"
    assert d.receive(bm.BatchResultQuery("Q2", accepted.batch_no), 1001.0) == []
    core.tick(1006.0)
    assert d.receive(bm.BatchQuery("Q3", accepted.batch_no), 1007.0)[0].state == "complete"


def test_a_failing_line_fails_alone() -> None:
    core, d = desk()
    poor = dataclasses.replace(COLLECTION, items=(
        COLLECTION.items[0], bm.BatchItem(2, 50_000, PAYEE2, "李四", summary="x")))  # PAYEE2 is not a customer
    accepted = d.receive(poor, 1000.0)[0]
    results = d.receive(bm.BatchResultQuery("Q", accepted.batch_no), 1001.0)[0]
    assert [(ln.no, ln.succeeded, ln.debit_account) for ln in results.lines] == [(1, True, PAYEE), (2, False, PAYEE2)]
    assert (results.succeeded_num, results.failed_num, results.failed_amount) == (1, 1, 50_000)
    assert core.balance(CENTRE_ACCT) == 1_000_000 + 5_000


def test_the_desk_collects_signs_off_and_answers_branch_codes() -> None:
    core, d = desk()
    out = d.receive(dataclasses.replace(SINGLE, same_bank=True, debtor_bank_code="", amount=1_234), 1000.0)
    assert isinstance(out[0], Result) and out[0].succeeded and out[0].reply_to == SINGLE.seq_no
    assert core.balance(PAYEE) == 10_000 - 1_234 and core.balance(CENTRE_ACCT) == 1_000_000 + 1_234
    assert isinstance(out[1], Movement)  # notified like any transfer
    poor = d.receive(dataclasses.replace(SINGLE, seq_no="52240171130000000019", amount=10_000_000), 1000.5)
    assert isinstance(poor[0], Result) and not poor[0].succeeded and poor[0].code == "E1001"
    assert isinstance(d.receive(bm.SignOff("S1", CENTRE), 1001.0)[0], bm.SignOffAnswer)
    branches = d.receive(bm.BranchQuery("S2", "104", ("5224",)), 1002.0)[0]
    assert [b.code for b in branches.branches] == ["104522400017"]
    with pytest.raises(TypeError):
        d.receive(Instruction("x", dt.date(2017, 11, 30), CENTRE, UNIT, CENTRE_ACCT, "a", PAYEE, "b", "",
                              True, True, 1, "other"), 1003.0)


def test_the_desk_answers_survive_the_canonical_codec() -> None:
    """What the desk writes, the canonical dialect carries (the per-request simulator's)."""
    _, d = desk()
    accepted = d.receive(PAYMENT, 1000.0)[0]
    for request, answer in ((PAYMENT, accepted),
                            (bm.BatchQuery("Q1", accepted.batch_no), None),
                            (bm.BatchResultQuery("Q2", accepted.batch_no), None)):
        answer = answer or d.receive(request, 1001.0)[0]
        frame = CANONICAL.encode_answer(answer, request, sender=BANK, receiver=CENTRE)
        assert CANONICAL.decode_answer(frame, request) == dataclasses.replace(answer, reply_to=request.seq_no)
