"""A collection (kind ``collection``): validated strictly, stored canonically, kept apart from transfers."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import pytest

from gateway.model import (
    COLLECTION_PURPOSES,
    Instruction,
    InvalidInput,
    parse_instruction,
)

TODAY = _dt.date(2026, 12, 7)
CENTRE_ACCOUNT = "6200001111222233"


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "instruction_id": "CT-1", "kind": "collection", "credit_account": CENTRE_ACCOUNT,
        "debtor": {"account": "6222000011112222", "name": "示例有限公司", "bank_code": "105100000017",
                   "agreement_no": "AGR-2026-0001"},
        "amount": "1200.50", "purpose": "contribution", "memo": "12月缴存",
    }
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def _errors(body: Any) -> dict[str, str]:
    with pytest.raises(InvalidInput) as e:
        parse_instruction("C52240", body, ceiling_fen=10**12, today=TODAY)
    return {err.field: err.reason for err in e.value.errors}


def test_a_valid_collection_names_the_centre_account_and_the_payer() -> None:
    ins = parse_instruction("C52240", _body(), ceiling_fen=10**12, today=TODAY)
    assert ins.kind == "collection"
    assert ins.account == CENTRE_ACCOUNT  # the centre's own account: it decides the bank
    assert ins.debit_account == "6222000011112222"  # the payer is debited
    assert ins.debtor is not None and ins.debtor.agreement_no == "AGR-2026-0001"
    assert ins.amount == 120050
    doc = ins.to_json()
    assert set(doc) == {"instruction_id", "kind", "credit_account", "debtor", "amount", "purpose", "memo",
                        "approval_ref", "requested_date"}
    assert doc["credit_account"] == CENTRE_ACCOUNT and "creditor" not in doc and "debit_account" not in doc
    again = Instruction.from_json("C52240", doc)
    assert again == ins and again.canonical() == ins.canonical()


def test_a_transfer_still_has_its_debit_account_as_the_centre_account() -> None:
    ins = parse_instruction("C52240", {"instruction_id": "T-1", "debit_account": CENTRE_ACCOUNT,
                                       "creditor": {"account": "1", "name": "x", "bank_code": "105100000017"},
                                       "amount": "1.00", "purpose": "withdrawal"}, ceiling_fen=10**12, today=TODAY)
    assert ins.kind == "transfer" and ins.account == CENTRE_ACCOUNT and ins.debtor is None


@pytest.mark.parametrize(("changes", "field"), [
    ({"credit_account": None}, "credit_account"),
    ({"credit_account": "62 00"}, "credit_account"),
    ({"debtor": None}, "debtor"),
    ({"debtor": "6222000011112222"}, "debtor"),
    ({"debtor": {"account": "6222000011112222", "name": "x", "bank_code": "105100000017"}}, "debtor.agreement_no"),
    ({"debtor": {"account": "6222000011112222", "name": "x", "bank_code": "105100000017",
                 "agreement_no": "协议一"}}, "debtor.agreement_no"),
    ({"debtor": {"account": "6222000011112222", "name": " ", "bank_code": "105100000017",
                 "agreement_no": "A1"}}, "debtor.name"),
    ({"debtor": {"account": "6222000011112222", "name": "x\u202e", "bank_code": "105100000017",
                 "agreement_no": "A1"}}, "debtor.name"),
    ({"debtor": {"account": "6222000011112222", "name": "x", "bank_code": "10510000001",
                 "agreement_no": "A1"}}, "debtor.bank_code"),
    ({"debtor": {"account": "6222000011112222", "name": "x", "bank_code": "105100000017",
                 "agreement_no": "A1", "iban": "x"}}, "debtor.iban"),
    ({"debtor": {"account": CENTRE_ACCOUNT, "name": "x", "bank_code": "105100000017",
                 "agreement_no": "A1"}}, "debtor.account"),
    ({"purpose": "withdrawal"}, "purpose"),  # a transfer's purpose is not a collection's
    ({"amount": "0.00"}, "amount"),
    ({"amount": 12.5}, "amount"),
    ({"debit_account": CENTRE_ACCOUNT}, "debit_account"),  # a transfer's field is unknown here
    ({"creditor": {"account": "1", "name": "x", "bank_code": "105100000017"}}, "creditor"),
    ({"requested_date": "2026-12-06"}, "requested_date"),
])
def test_a_bad_collection_is_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    assert field in _errors(_body(**changes))


def test_every_collection_purpose_is_accepted_and_the_kind_must_be_known() -> None:
    for purpose in sorted(COLLECTION_PURPOSES):
        assert parse_instruction("C52240", _body(purpose=purpose), ceiling_fen=10**12, today=TODAY).purpose == purpose
    assert "kind" in _errors(_body(kind="direct_debit"))
    assert "kind" in _errors(_body(kind=["collection"]))


def test_a_collection_and_a_transfer_with_the_same_id_differ_in_fingerprint() -> None:
    col = parse_instruction("C52240", _body(), ceiling_fen=10**12, today=TODAY)
    tr = parse_instruction("C52240", {"instruction_id": "CT-1", "debit_account": CENTRE_ACCOUNT,
                                      "creditor": {"account": "6222000011112222", "name": "示例有限公司",
                                                   "bank_code": "105100000017"},
                                      "amount": "1200.50", "purpose": "other", "memo": "12月缴存"},
                           ceiling_fen=10**12, today=TODAY)
    assert col.fingerprint() != tr.fingerprint()  # the same id resent as the other kind is a conflict (409)


def test_the_openapi_collection_schema_says_what_the_model_requires() -> None:
    import json
    from pathlib import Path

    import gateway

    doc = json.loads((Path(gateway.__file__).parent / "openapi.json").read_text(encoding="utf-8"))
    schemas = doc["components"]["schemas"]
    col, debtor = schemas["Collection"], schemas["Debtor"]
    required = set()
    for field in col["properties"]:
        body = _body()
        body.pop(field, None)
        try:
            parse_instruction("C52240", body, ceiling_fen=10**12, today=TODAY)
        except InvalidInput as e:
            if field in {err.field for err in e.errors} or field == "kind":
                required.add(field)
    assert required == set(col["required"])
    assert set(debtor["required"]) == set(debtor["properties"]) == set(_body()["debtor"])
    example = col["examples"][0]
    assert parse_instruction("C52240", example, ceiling_fen=10**12, today=TODAY).kind == "collection"
