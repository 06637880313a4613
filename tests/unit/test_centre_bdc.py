"""The centre role's pure parts (gateway/centre_bdc.py): the instruction id a centre's serial
and date make, and the HTTPS API body a decoded BDC109/BDC101 becomes."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from adapters.base import Instruction
from gateway.centre_bdc import instruction_body, instruction_id_for
from gateway.model import parse_instruction

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
