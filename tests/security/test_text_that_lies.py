"""Text that displays other than it reads never reaches a bank (issue 16, item 8).

Bidirectional controls (U+202A-U+202E, U+2066-U+2069, U+200E/U+200F, U+061C) and zero-width
characters (U+200B-U+200D, U+2060, U+FEFF) are refused in every free-text field a centre sends
(creditor name, memo) with a problem naming each bad field, and nothing is stored.  A transfer to
one of the centre's own registered accounts must name it exactly as the register does.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError, load_config, render_toml
from gateway.model import InvalidInput, parse_instruction
from tests.integration.harness import DEBIT_B001, DEBIT_B002, PAYEE, start_harness

BIDI = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)]
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]
LIARS = BIDI + ZERO_WIDTH
TODAY = _dt.date(2026, 12, 7)

# Plain text a centre may send: letters, digits, CJK, punctuation and spaces, none of the liars.
plain = st.text(st.characters(whitelist_categories=("L", "N", "P", "Zs"),
                              blacklist_characters="".join(LIARS)), min_size=1, max_size=40) \
    .filter(lambda t: t.strip())


def _body(name: str = PAYEE["name"], memo: str = "") -> dict:
    return {"instruction_id": "LIE-1", "debit_account": DEBIT_B001,
            "creditor": {**PAYEE, "name": name}, "amount": "1.00", "purpose": "withdrawal", "memo": memo}


def _fields(body: dict) -> set[str]:
    with pytest.raises(InvalidInput) as e:
        parse_instruction("C52240", body, ceiling_fen=10**12, today=TODAY)
    return {err.field for err in e.value.errors}


@settings(max_examples=300, deadline=None)
@given(name=plain, memo=plain, liar=st.sampled_from(LIARS), where=st.sampled_from(["creditor.name", "memo"]),
       at=st.integers(min_value=0, max_value=40))
def test_a_bidi_or_zero_width_character_anywhere_in_a_text_field_is_refused_naming_that_field(
        name, memo, liar, where, at):
    parse_instruction("C52240", _body(name, memo), ceiling_fen=10**12, today=TODAY)  # plain text passes
    if where == "memo":
        memo = memo[:at] + liar + memo[at:]
    else:
        name = name[:at] + liar + name[at:]
    assert _fields(_body(name, memo)) == {where}


def test_every_liar_in_both_fields_is_named_field_by_field():
    for liar in LIARS:
        assert _fields(_body("张" + liar + "三", "房租" + liar)) == {"creditor.name", "memo"}, hex(ord(liar))


def test_a_registered_name_that_lies_is_a_config_problem(tmp_path: Path):
    from gateway.demo import write_demo_config
    from gateway.pki import init_dev_pki

    init_dev_pki(tmp_path / "keys", banks=["B001", "B002", "B003"], centres=["C52240"])
    path = write_demo_config(tmp_path)
    import tomllib

    data = tomllib.loads(path.read_text(encoding="utf-8"))
    data["counterparties"]["6200009999000011"]["name"] = "张\u202e三"
    path.write_text(render_toml(data), encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert any("counterparties" in p and "U+202E" in p for p in e.value.problems), e.value.problems


@pytest_twisted.ensureDeferred
async def test_the_centre_api_refuses_lying_text_and_a_misnamed_own_account_with_nothing_stored(tmp_path):
    h = await start_harness(tmp_path)
    try:
        centre = h.client()
        status, problem = await centre.submit("LIE-A", creditor={**PAYEE, "name": "张三\u202e10.00"},
                                              memo="\u200b租金")
        assert status == 422, problem
        assert {e["field"] for e in problem["errors"]} == {"creditor.name", "memo"}, problem
        status, _ = await centre.request("GET", "/v1/instructions/LIE-A")
        assert status == 404

        own = h.config.accounts[DEBIT_B002]
        assert own.bank_code  # the demo registers its accounts' bank codes
        right = {"account": DEBIT_B002, "name": own.name, "bank_code": own.bank_code}
        cases = {
            "OWN-NAME": ({**right, "name": "某人"}, {"creditor.name"}),
            "OWN-BANK": ({**right, "bank_code": "999900000001"}, {"creditor.bank_code"}),
            "OWN-BOTH": ({**right, "name": own.name + " ", "bank_code": "999900000001"},
                         {"creditor.name", "creditor.bank_code"}),
        }
        for instruction_id, (creditor, fields) in cases.items():
            status, problem = await centre.submit(instruction_id, creditor=creditor)
            assert status == 422 and {e["field"] for e in problem["errors"]} == fields, problem
            status, _ = await centre.request("GET", f"/v1/instructions/{instruction_id}")
            assert status == 404
        status, record = await centre.submit("OWN-OK", creditor=right)
        assert status == 202 and record["state"] != "rejected", record
    finally:
        await h.stop()


@pytest_twisted.ensureDeferred
async def test_an_own_account_without_a_registered_bank_code_cannot_be_paid(tmp_path):
    h = await start_harness(tmp_path)
    try:
        import tomllib

        data = tomllib.loads(h.config.path.read_text(encoding="utf-8"))
        del data["accounts"][DEBIT_B002]["bank_code"]
        h.config.path.write_text(render_toml(data), encoding="utf-8")
        h.gateway.reload()
        own = load_config(h.config.path).accounts[DEBIT_B002]
        status, problem = await h.client().submit(
            "OWN-NOCODE", creditor={"account": DEBIT_B002, "name": own.name, "bank_code": "102100000030"})
        assert status == 422 and [e["field"] for e in problem["errors"]] == ["creditor.bank_code"], problem
    finally:
        await h.stop()
