"""pain.001 written in the version each bank's config asks for: .09 by default, .03 for a bank
still on the 2009 version; both validated against their official schemas, both read back."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from lxml import etree

from adapters import base
from adapters.base import AdapterError
from adapters.iso20022 import Iso20022Adapter
from adapters.iso20022._schema import document_schema
from tests.kit.bank_peer import make_instruction

GATEWAY, BANK = "D00000", "105000"
NOW = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
OLD = Iso20022Adapter(clock=lambda: NOW, validate_outbound=True, pain001="pain.001.001.03")
NEW = Iso20022Adapter(clock=lambda: NOW, validate_outbound=True)


def _document(frame: bytes) -> etree._Element:
    root = etree.fromstring(frame[4:])
    return root[1]


def test_a_bank_on_the_2009_version_gets_a_schema_valid_pain001_001_03() -> None:
    ins = make_instruction()
    frame = OLD.encode(ins, sender=GATEWAY, receiver=BANK)
    assert b"<MsgDefIdr>pain.001.001.03</MsgDefIdr>" in frame
    doc = _document(frame)
    assert doc.tag == "{urn:iso:std:iso:20022:tech:xsd:pain.001.001.03}Document"
    assert document_schema("pain.001.001.03").validate(etree.ElementTree(doc))
    # The requested date is a plain ISODate in .03, a Dt choice in .09.
    assert f"<ReqdExctnDt>{ins.send_date.isoformat()}</ReqdExctnDt>".encode() in frame
    assert f"<ReqdExctnDt><Dt>{ins.send_date.isoformat()}</Dt>".encode() in NEW.encode(
        ins, sender=GATEWAY, receiver=BANK)
    # Any adapter reads either version back to the same instruction.
    assert NEW.decode(frame) == ins == OLD.decode(NEW.encode(ins, sender=GATEWAY, receiver=BANK))


def test_a_batch_in_the_2009_version_is_valid_and_reads_back_in_order() -> None:
    batch = [make_instruction(f"5224025010100000000{i}") for i in range(3)]
    frame = OLD.encode_batch(batch, sender=GATEWAY, receiver=BANK)
    assert document_schema("pain.001.001.03").validate(etree.ElementTree(_document(frame)))
    assert NEW.decode_all(frame) == batch


def test_the_2009_version_has_no_place_for_a_signature_and_says_so() -> None:
    signed = dataclasses.replace(make_instruction(), signature=b"\x01" * 64)
    with pytest.raises(AdapterError, match="pain.001.001.03 has no place"):
        OLD.encode(signed, sender=GATEWAY, receiver=BANK)
    with pytest.raises(AdapterError, match="pain.001.001.03 has no place"):
        OLD.check(signed, sender=GATEWAY, receiver=BANK)
    assert NEW.decode(NEW.encode(signed, sender=GATEWAY, receiver=BANK)) == signed


def test_an_unknown_pain001_version_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="pain.001.001.08"):
        Iso20022Adapter(pain001="pain.001.001.08")


def test_a_bare_pain001_001_03_document_is_read() -> None:
    ins = make_instruction()
    frame = OLD.encode(ins, sender=GATEWAY, receiver=BANK)
    body = etree.tostring(_document(frame))
    (read,) = Iso20022Adapter().decode_document(body)
    assert isinstance(read, base.Instruction) and read == ins


# -- the bank's config key ------------------------------------------------------------------

def _iso_bank(**extra):
    from tests.kit.config import set_key

    def change(data):
        set_key("banks", "B001", "adapter", "iso20022")(data)
        data["banks"]["B001"].pop("peer_endpoint", None)  # bdc's per-request key: ISO 20022 is persistent
        for key, value in extra.items():
            set_key("banks", "B001", key, value)(data)
    return change


def test_config_chooses_the_2009_version_for_an_iso20022_bank(tmp_path) -> None:
    from gateway.config import load_config
    from gateway.service import _adapter_for
    from tests.kit.config import problems_after, write, example_data

    assert problems_after(tmp_path, _iso_bank(pain001_version="pain.001.001.03"))[1] == []
    data = example_data()
    _iso_bank(pain001_version="pain.001.001.03")(data)
    config = load_config(write(tmp_path, data), check_files=False)
    adapter = _adapter_for(config, config.banks["B001"])
    assert isinstance(adapter, Iso20022Adapter) and adapter.pain001 == "pain.001.001.03"
    data = example_data()
    _iso_bank()(data)
    default = load_config(write(tmp_path, data, "default.toml"), check_files=False)
    assert _adapter_for(default, default.banks["B001"]).pain001 == "pain.001.001.09"


@pytest.mark.parametrize("change, reason", [
    (_iso_bank(pain001_version="pain.001.001.08"), "must be one of"),
    (_iso_bank(pain001_version="pain.001.001.03", signature_alg="ed25519",
               signing_key="k.key"), "carries no signature"),
], ids=["unknown-version", "with-signature"])
def test_config_refuses_a_pain001_version_the_bank_cannot_take(tmp_path, change, reason) -> None:
    from tests.kit.config import problems_after

    _, problems = problems_after(tmp_path, change)
    assert any("banks.B001.pain001_version" in p and reason in p for p in problems), problems


def test_config_refuses_a_pain001_version_on_another_adapter(tmp_path) -> None:
    from tests.kit.config import set_key, problems_after

    _, problems = problems_after(tmp_path, set_key("banks", "B001", "pain001_version", "pain.001.001.03"))
    assert problems and "only used with adapter" in problems[0]


# -- the link writes only what it reads back ---------------------------------------------------

ENTRY = base.Entry("6200001111222233", "H1", -100, dt.date(2025, 1, 2), dt.time(9, 30))


def test_pending_entries_cross_the_link_as_pdng_and_come_back_pending() -> None:
    later = dataclasses.replace(ENTRY, host_seq_no="H2", amount=250)
    for m in (base.Statement("S1", "Q1", ENTRY.account, (ENTRY,), 1000, 900, pending=(later,)),
              base.Movement("M1", (ENTRY,), pending=(later,)),
              base.Movement("M2", (), pending=(later,))):
        frame = NEW.encode(m, sender=BANK, receiver=GATEWAY)
        assert b"<Sts><Cd>PDNG</Cd></Sts>" in frame
        assert NEW.decode(frame) == m


@pytest.mark.parametrize("message, field", [
    (base.Movement("M1", (dataclasses.replace(ENTRY, currency="JPY"),)), "currency"),
    (base.Movement("M1", (dataclasses.replace(ENTRY, details=(base.TxDetail("R"),)),)), "details"),
    (base.Movement("M1", (ENTRY,), problems=(base.Problem("Document", "x"),)), "problems"),
    (base.Statement("S1", "", ENTRY.account, (), 5, currency="EUR"), "currency"),
    (base.Balance("B1", "", ENTRY.account, 5, 5, status="ITBD", as_of=dt.datetime(2025, 1, 2),
                  currency="USD"), "currency"),
], ids=["entry-currency", "details", "problems", "statement-currency", "balance-currency"])
def test_what_the_link_cannot_carry_back_is_refused_at_encode(message, field) -> None:
    with pytest.raises(AdapterError, match=field):
        NEW.encode(message, sender=BANK, receiver=GATEWAY)
    with pytest.raises(AdapterError, match=field):
        NEW.check(message, sender=BANK, receiver=GATEWAY)


def test_a_plain_instruction_is_checked_without_writing_its_pain001(monkeypatch: pytest.MonkeyPatch) -> None:
    """The intake asks of every instruction whether its link could send it: a plain one is
    answered from its fields, its nodes and the clock; anything else is written to decide."""
    from adapters.iso20022 import _payments

    written: list[object] = []
    write = _payments.encode_pain001
    monkeypatch.setattr(_payments, "encode_pain001", lambda *args: written.append(args) or write(*args))
    NEW.check(make_instruction(), sender=GATEWAY, receiver=BANK)
    assert written == []
    for adapter, sender, refusal in ((NEW, "no node!", "sender"),
                                     (Iso20022Adapter(clock=lambda: "noon"), GATEWAY, "clock")):
        with pytest.raises(AdapterError, match=refusal):
            adapter.check(make_instruction(), sender=sender, receiver=BANK)
    with pytest.raises(AdapterError, match="memo"):
        NEW.check(dataclasses.replace(make_instruction(), memo="a\x00b"), sender=GATEWAY, receiver=BANK)
    assert len(written) == 1
