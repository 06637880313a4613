"""The centre role's pure parts (gateway/centre_bdc.py): the instruction id a centre's serial
and date make, and the HTTPS API body a decoded BDC109/BDC101 becomes."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from adapters.base import Instruction
from gateway.centre_bdc import instruction_body, instruction_id_for
from gateway.model import InvalidInput, parse_instruction

DAY = dt.date(2017, 11, 30)
INS = Instruction("52240171130000000007", DAY, "C52240", "522400000000000", "6200001111222233", "示例中心归集户",
                  "6200009999000011", "张三", "", True, True, 250_050, "allocation", "资金划转", "081711300000042")


def test_the_centres_serial_and_date_make_the_instruction_id() -> None:
    assert instruction_id_for("52240171130000000007", DAY) == "20171130-52240171130000000007"
    assert instruction_id_for("5224017113000000000/", DAY) is None      # not an id character
    assert instruction_id_for("5" * 24, DAY) is None                    # 33 characters
    # Another day, the same serial: another instruction (the deployed sequence restarts daily).
    assert instruction_id_for("52240171130000000007", DAY + dt.timedelta(days=1)) != \
        instruction_id_for("52240171130000000007", DAY)


def test_a_decoded_transfer_is_the_api_body_and_a_same_bank_creditor_takes_its_bank_code_from_the_register() -> None:
    config = SimpleNamespace(accounts={}, counterparties={
        "6200009999000011": SimpleNamespace(name="张三", bank_code="105100000017")})
    body = instruction_body(INS, "20171130-52240171130000000007", config)
    assert body == {"instruction_id": "20171130-52240171130000000007", "kind": "transfer",
                    "debit_account": "6200001111222233",
                    "creditor": {"account": "6200009999000011", "name": "张三", "bank_code": "105100000017"},
                    "amount": "2500.50", "purpose": "allocation", "memo": "资金划转"}
    # ... and the API's own parser takes it as it is.
    parsed = parse_instruction("C52240", body, ceiling_fen=10**12, today=DAY)
    assert parsed.amount == 250_050 and parsed.creditor.bank_code == "105100000017"
    # Off the register, nothing is made up: the bank code stays empty and the parser refuses it.
    unknown = instruction_body(INS, "x", SimpleNamespace(accounts={}, counterparties={}))
    assert unknown["creditor"]["bank_code"] == ""


def test_a_decoded_collection_between_the_centres_own_accounts_is_the_api_body() -> None:
    """BDC102: the payer (DeAcctNo) is debited, the collecting account (CrAcctNo) credited,
    its bank code from the register; BusType 18 is the allocation purpose."""
    from adapters.bdc.messages import Collection
    from gateway.centre_bdc import collection_body

    c = Collection("52240171130000000008", DAY, "C52240", "522400000000000", "6222002222333344", "示例中心贷款户",
                   "6200001111222233", "示例中心归集户", False, False, 6_660, "18",
                   debtor_bank_code="105100000017", memo="资金归集")
    config = SimpleNamespace(accounts={"6222002222333344": SimpleNamespace(bank_code="102100000030", centre="C52240"),
                                       "6200001111222233": SimpleNamespace(bank_code="105100000017", centre="C52240")},
                             counterparties={})
    body = collection_body(c, "20171130-52240171130000000008", config)
    assert body["debit_account"] == "6200001111222233" and body["creditor"] == {
        "account": "6222002222333344", "name": "示例中心贷款户", "bank_code": "102100000030"}
    assert (body["amount"], body["purpose"], body["memo"]) == ("66.60", "allocation", "资金归集")
    assert parse_instruction("C52240", body, ceiling_fen=10**12, today=DAY).amount == 6_660
    # A BusType with no neutral purpose is "other".
    other = collection_body(Collection(**{**c.__dict__, "bus_type": "01"}), "x", config)
    assert other["purpose"] == "other" and other["kind"] == "transfer"


def test_a_decoded_collection_from_any_other_payer_is_a_collection_instruction() -> None:
    """BDC102 from a payer who is not the centre (an employer's contribution): the API's
    ``collection`` body, CrAcctNo credited, the payer debited under ConAgrNo."""
    from adapters.bdc.messages import Collection
    from gateway.centre_bdc import collection_body

    config = SimpleNamespace(accounts={"6200001111222233": SimpleNamespace(bank_code="105100000017", centre="C52240")},
                             counterparties={})
    c = Collection("52240171130000000009", DAY, "C52240", "522400000000000", "6200001111222233", "示例中心归集户",
                   "6222000011112222", "示例有限公司", False, False, 120_050, "01",
                   debtor_bank_code="102100000030", agreement_no="AGR-2017-0001", memo="缴存")
    body = collection_body(c, "20171130-52240171130000000009", config)
    assert body == {"instruction_id": "20171130-52240171130000000009", "kind": "collection",
                    "credit_account": "6200001111222233",
                    "debtor": {"account": "6222000011112222", "name": "示例有限公司", "bank_code": "102100000030",
                               "agreement_no": "AGR-2017-0001"},
                    "amount": "1200.50", "purpose": "contribution", "memo": "缴存"}
    ins = parse_instruction("C52240", body, ceiling_fen=10**12, today=DAY)
    assert ins.kind == "collection" and ins.account == "6200001111222233"
    # A same-bank payer with DeChgNo empty: the collecting account's bank; BusType 05 a loan repayment.
    same = collection_body(Collection(**{**c.__dict__, "same_bank": True, "debtor_bank_code": "",
                                         "bus_type": "05"}), "x", config)
    assert same["debtor"]["bank_code"] == "105100000017" and same["purpose"] == "loan_repayment"
    # Without ConAgrNo the intake refuses it: a direct debit needs its agreement.
    bare = collection_body(Collection(**{**c.__dict__, "agreement_no": ""}), "20171130-x", config)
    with pytest.raises(InvalidInput) as e:
        parse_instruction("C52240", bare, ceiling_fen=10**12, today=DAY)
    assert [err.field for err in e.value.errors] == ["debtor.agreement_no"]


def test_refused_messages_are_journalled_at_most_the_cap_per_window() -> None:
    from gateway.refusals import RefusalGate, refused_event

    gate = RefusalGate(cap=3, window=60.0)
    assert [gate.admit(t) for t in (0.0, 1.0, 2.0, 3.0, 59.9)] == [True, True, True, False, False]
    assert gate.admit(60.0) and gate.admit(61.0)  # a new window
    payload, raw = refused_event(b"x" * 10, "DeAcctNo 6200001111222233: no", centre="C52240")
    assert payload["centre"] == "C52240" and payload["size"] == 10 and raw == b"x" * 10
    assert "6200001111222233" not in payload["reason"]
    _, big = refused_event(b"x" * (64 * 1024 + 1), "too long", centre="C52240")
    assert big is None


def test_the_simulated_centre_stores_each_notice_line_once_as_the_deployed_centre_does() -> None:
    from adapters import base
    from adapters.bdc import BdcAdapter
    from gateway.simulate.centre_bdc_only import NoticeDesk

    codec = BdcAdapter(echo=False)
    line = base.Entry("6200001111222233", "H1", -500, DAY, dt.time(10, 15), "6200009999000011", "张三")
    desk = NoticeDesk("C52240")
    for _ in range(2):  # the same notice twice (its acknowledgement was lost)
        frame = codec.encode(base.Movement("N0000000000000000042", (line,)), sender="D00000", receiver="C52240")
        ack = codec.decode_answer(desk.answer(frame), base.Movement("N0000000000000000042", (line,)))
        assert isinstance(ack, base.Ack) and ack.ok
    assert (desk.notices, len(desk.lines), desk.repeated_lines, desk.host_serials()) == (2, 1, 1, {"H1"})
    # The probe is answered; a request the centre does not take is refused in protocol.
    probe = codec.encode(base.Heartbeat("D0000000000000000001", "D00000"), sender="D00000", receiver="C52240")
    assert isinstance(codec.decode(desk.answer(probe)), base.HeartbeatAnswer) and desk.refused == 0
    query = codec.encode(base.BalanceQuery("D0000000000000000002", "6200001111222233"), sender="D00000",
                         receiver="C52240")
    assert b"<field name=\"RtnCode\">10000</field>" in desk.answer(query) and desk.refused == 1
