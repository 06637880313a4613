"""The parts of a bank batch outside the outbox, without a reactor: the simulated desk's
durable batch index, BDC110 about a batch request (OldBatchNo), and a centre batch written
as one BDC103 and its result file read back line by line (adapters/bdc/bank_batch.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from adapters.base import AdapterError, Instruction, StatusQuery
from adapters.bdc import BdcAdapter, bank_batch
from adapters.bdc import messages as bm
from gateway.simulate.durable import DurableBankCore

CENTRE_ACCT, PAYEE, PAYEE2 = "6200001111222233", "6200004444555566", "6200004444555577"
# A two-line batch payment as the deployed centre writes one (docs/protocols/bdc.md, "Batches").
PAYMENT = bm.Batch("52240171130000000007", dt.date(2017, 11, 30), "C52240", "522400000000000", "payment", "02",
                   "3", CENTRE_ACCT, "示例中心归集户",
                   (bm.BatchItem(1, 250000, PAYEE, "张三", branch_code="105100000017", summary="011711300000001",
                                 reference="011711300000001"),
                    bm.BatchItem(2, 100, PAYEE2, "李四", branch_code="104100000017", summary="011711300000002")),
                   memo="批量提取")

OPTIONS = dict(node="B001", accounts={CENTRE_ACCT: 1_000_000, PAYEE: 10_000, PAYEE2: 0}, gateway_node="D00000",
               delay=5.0)
NOW = dt.datetime(2017, 11, 30, 10, 30, 16)
CANONICAL = BdcAdapter(clock=lambda: NOW, echo=False)


def test_a_killed_simulator_still_knows_the_batches_it_took(tmp_path) -> None:
    path = tmp_path / "bank.journal"
    live = DurableBankCore(path, first_serial=1000, **OPTIONS)
    accepted = live.desk.receive(PAYMENT, 1000.0)[0]
    assert isinstance(accepted, bm.BatchAccepted)
    live.tick(1006.0)   # the lines execute
    executed = dict(live.executions)
    assert len(executed) == 2
    live.close()        # (a kill: nothing but the journal survives)

    again = DurableBankCore(path, first_serial=1, **OPTIONS)
    assert dict(again.executions) == executed and again.replayed > 0
    # The same batch request again: the same BatchNo, nothing executed twice.
    repeat = again.desk.receive(PAYMENT, 1010.0)
    assert repeat[0].batch_no == accepted.batch_no and len(repeat) == 1
    assert dict(again.executions) == executed
    # Asked by its number, and by its request's serial (BDC110), it is known.
    assert again.desk.receive(bm.BatchQuery("Q1", accepted.batch_no), 1011.0)[0].state == "complete"
    assert again.desk.knows(StatusQuery("Q2", PAYMENT.seq_no, PAYMENT.send_date))
    [named] = again.desk.receive(StatusQuery("Q2", PAYMENT.seq_no, PAYMENT.send_date), 1012.0)
    assert named == bm.BatchAccepted(named.seq_no, "Q2", accepted.batch_no)
    results = again.desk.receive(bm.BatchResultQuery("Q3", accepted.batch_no), 1013.0)[0]
    assert [ln.no for ln in results.lines] == [1, 2]


def test_a_status_answer_about_a_batch_request_names_its_batch_number() -> None:
    query = StatusQuery("Q7", PAYMENT.seq_no, PAYMENT.send_date)
    frame = CANONICAL.encode_answer(bm.BatchAccepted("B1", "Q7", "BN20171130000042"), query,
                                    sender="105000", receiver="C52240")
    text = frame[20:].decode("gbk")
    assert '<field name="TxCode">BDC110</field>' in text and '<field name="OldBatchNo">BN20171130000042</field>' in text
    assert CANONICAL.decode_answer(frame, query) == bm.BatchAccepted(
        CANONICAL.decode_answer(frame, query).seq_no, "Q7", "BN20171130000042")


def _line(n: int, amount: int, *, same_bank: bool = True, purpose: str = "withdrawal",
          debit: str = CENTRE_ACCT) -> Instruction:
    return Instruction(seq_no=f"5224017113000000000{n}", send_date=dt.date(2017, 11, 30), centre_node="C52240",
                       unit_no="522400000000000", debit_account=debit, debit_name="中心归集户",
                       creditor_account=PAYEE, creditor_name="张三",
                       creditor_bank_code="105100000017" if same_bank else "102100000030", creditor_personal=True,
                       same_bank=same_bank, amount=amount, purpose=purpose, memo="批量提取", reference=f"WD-{n}")


def test_a_centre_batch_is_one_bdc103_and_its_result_file_one_result_per_line() -> None:
    lines = [_line(1, 12_300), _line(2, 4_500, same_bank=False)]
    batch = bank_batch.payment_batch("52240171130000000001", lines)
    assert (batch.kind, batch.bus_type, batch.file_type, batch.account, batch.total) == \
        ("payment", "02", "3", CENTRE_ACCT, 16_800)
    assert [(i.no, i.amount, i.branch_code, i.reference) for i in batch.items] == [
        (1, 12_300, "105100000017", "WD-1"), (2, 4_500, "102100000030", "WD-2")]
    assert bank_batch.payment_batch("X1", [_line(1, 1)]).file_type == "1"
    # It is what the codec writes and reads back as the same batch.
    frame = CANONICAL.encode(batch, sender="C52240", receiver="105000")
    assert CANONICAL.decode(frame) == dataclasses.replace(batch)
    for bad in ([_line(1, 1), _line(2, 1, purpose="refund")], [_line(1, 1), _line(2, 1, debit="6200000000000009")], []):
        with pytest.raises(AdapterError):
            bank_batch.payment_batch("X1", bad)

    ok = bm.BatchLine(2, 4_500, CENTRE_ACCT, "中心", PAYEE, "张三", "00000", host_seq_no="H2")
    bad = bm.BatchLine(1, 12_300, CENTRE_ACCT, "中心", PAYEE, "张三", "E0001", "户名不符")
    file = bm.BatchResults("S1", "Q9", "BN1", dt.date(2017, 11, 30), "522400000000000", 2, 16_800, 1, 4_500, 1,
                           12_300, (ok, bad))
    results = bank_batch.line_results(file, ["R1", "R2"], [12_300, 4_500])
    assert [(r.ref, r.succeeded, r.host_seq_no, r.bank_seq_no, r.code, r.text) for r in results] == [
        ("R2", True, "H2", "BN1", "00000", ""), ("R1", False, "", "BN1", "E0001", "户名不符")]
    with pytest.raises(AdapterError):   # a line number the batch does not have
        bank_batch.line_results(file, ["R1"], [12_300])
    with pytest.raises(AdapterError):   # an amount other than its line's
        bank_batch.line_results(file, ["R1", "R2"], [12_300, 4_501])


def _collection(n: int, payer: str, *, same: bool, code: str = "102100000030", credit: str = CENTRE_ACCT,
                bus: str = "01") -> bm.Collection:
    return bm.Collection(f"5224017113000000010{n}", dt.date(2017, 11, 30), "C52240", "522400000000000", credit,
                         "示例中心归集户", payer, f"单位{n}", False, same, 1000 * n, bus, debtor_bank_code=code,
                         agreement_no=f"AGR-{n}", memo=f"缴存{n}", reference=f"CB-{n}")


def test_collections_are_written_as_one_bdc104_crediting_the_centre() -> None:
    mixed = bank_batch.collection_batch("52240171130000000201", [
        _collection(1, PAYEE, same=True, code="105100000017"), _collection(2, PAYEE2, same=False)])
    assert (mixed.kind, mixed.file_type, mixed.account, mixed.bus_type) == ("collection", "3", CENTRE_ACCT, "01")
    assert [(i.no, i.account, i.amount, i.branch_code, i.agreement_no, i.reference) for i in mixed.items] == [
        (1, PAYEE, 1000, "105100000017", "AGR-1", "CB-1"), (2, PAYEE2, 2000, "102100000030", "AGR-2", "CB-2")]
    frame = CANONICAL.encode(mixed, sender="C52240", receiver="105000")
    assert b"BDC104" in frame and b"BDC103" not in frame
    # All at the collecting bank: FileType 1, whose layout has no branch and no ConAgrNo.
    same = bank_batch.collection_batch("52240171130000000202", [_collection(1, PAYEE, same=True),
                                                               _collection(2, PAYEE2, same=True)])
    assert same.file_type == "1" and {(i.branch_code, i.agreement_no) for i in same.items} == {("", "")}
    CANONICAL.encode(same, sender="C52240", receiver="105000")
    # One credited account and one BusType a batch; collections only.
    with pytest.raises(AdapterError, match="credits the same account"):
        bank_batch.collection_batch("x", [_collection(1, PAYEE, same=True), _collection(2, PAYEE2, same=True,
                                                                                         credit=PAYEE)])
    with pytest.raises(AdapterError, match="BusType"):
        bank_batch.collection_batch("x", [_collection(1, PAYEE, same=True), _collection(2, PAYEE2, same=True,
                                                                                         bus="05")])
    with pytest.raises(AdapterError, match="collections only"):
        bank_batch.collection_batch("x", [_collection(1, PAYEE, same=True), PAYMENT])
    with pytest.raises(AdapterError, match="at least one"):
        bank_batch.collection_batch("x", [])
