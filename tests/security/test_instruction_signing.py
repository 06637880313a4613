"""Non-repudiation of instructions: ``[banks.X] signature_alg`` / ``signing_key``.

The gateway signs the money fields of every instruction it sends to such a
bank (gateway.signing.instruction_signing_bytes); every adapter whose protocol
has a place for it (bdc, iso20022; the banks' direct-connect front-ends sign
their own messages) carries the signature to the bank, where
``verify_instruction_signature`` accepts it, and refuses it once any signed
field is changed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from twisted.internet import reactor
from twisted.internet.task import deferLater

from adapters import base as msg
from adapters.base import load_adapter
from gateway.config import ConfigError, load_config, render_toml
from gateway.signing import (InstructionSignatureError, InstructionSigner, init_sm2_key,
                             instruction_signing_bytes, load_public_key, verify_instruction_signature)
from tests.integration.harness import DEBIT_B001, start_harness

INSTRUCTION = msg.Instruction(
    seq_no="52240261127000000001", send_date=dt.date(2026, 11, 27), centre_node="C52240",
    unit_no="522400000000000", debit_account="6200001111222233", debit_name="示例中心归集户",
    creditor_account="6200009999000011", creditor_name="张三", creditor_bank_code="105100000017",
    creditor_personal=True, same_bank=True, amount=123456, purpose="withdrawal", memo="提取",
    reference="W-0001")

TAMPERED = {
    "amount": 123457,
    "creditor_account": "6200009999000012",
    "creditor_name": "李四",
    "creditor_bank_code": "105100000018",
    "debit_account": "6200001111222234",
    "seq_no": "52240261127000000002",
    "reference": "W-0002",
    "send_date": dt.date(2026, 11, 28),
    "centre_node": "C52241",
}


def _write_key(directory: Path, alg: str) -> tuple[Path, Any]:
    if alg == "sm2-sm3":
        path, pub = init_sm2_key(directory, "instructions-sm2")
        return path, load_public_key(pub)
    key = ed25519.Ed25519PrivateKey.generate() if alg == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    path = directory / f"instructions-{alg}.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return path, key.public_key()


@pytest.fixture(params=["ed25519", "ecdsa-p256-sha256", "sm2-sm3"])
def signer(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, InstructionSigner, Any]:
    path, public = _write_key(tmp_path, request.param)
    return request.param, InstructionSigner(path, request.param), public


def test_the_signed_bytes_are_the_documented_canonical_json() -> None:
    assert instruction_signing_bytes(INSTRUCTION) == (
        '{"amount":"1234.56","centre_node":"C52240","creditor_account":"6200009999000011",'
        '"creditor_bank_code":"105100000017","creditor_name":"张三","debit_account":"6200001111222233",'
        '"reference":"W-0001","send_date":"2026-11-27","seq_no":"52240261127000000001",'
        '"v":"hpf-instruction-1"}').encode("utf-8")


def test_a_signed_instruction_verifies(signer: tuple[str, InstructionSigner, Any]) -> None:
    alg, sign, public = signer
    signed = dataclasses.replace(INSTRUCTION, signature=sign.sign(INSTRUCTION))
    assert verify_instruction_signature(signed, public, alg) is None
    # Fields outside the money fields (memo, names shown to people) may be re-encoded freely.
    assert verify_instruction_signature(dataclasses.replace(signed, memo="other"), public, alg) is None


@pytest.mark.parametrize("field", sorted(TAMPERED))
def test_changing_any_signed_field_makes_verification_fail(signer: tuple[str, InstructionSigner, Any],
                                                           field: str) -> None:
    alg, sign, public = signer
    signed = dataclasses.replace(INSTRUCTION, signature=sign.sign(INSTRUCTION))
    with pytest.raises(InstructionSignatureError, match="does not verify"):
        verify_instruction_signature(dataclasses.replace(signed, **{field: TAMPERED[field]}), public, alg)


def test_missing_signature_other_key_and_wrong_algorithm_are_refused(
        signer: tuple[str, InstructionSigner, Any], tmp_path: Path) -> None:
    alg, sign, public = signer
    with pytest.raises(InstructionSignatureError, match="no signature"):
        verify_instruction_signature(INSTRUCTION, public, alg)
    signed = dataclasses.replace(INSTRUCTION, signature=sign.sign(INSTRUCTION))
    other = tmp_path / "other"
    other.mkdir()
    _, stranger = _write_key(other, alg)
    with pytest.raises(InstructionSignatureError, match="does not verify"):
        verify_instruction_signature(signed, stranger, alg)
    wrong = "ecdsa-p256-sha256" if alg == "ed25519" else "ed25519"
    with pytest.raises(InstructionSignatureError, match="does not match"):
        verify_instruction_signature(signed, public, wrong)


@pytest.mark.parametrize("adapter_name", ["bdc", "iso20022"])
def test_every_adapter_carries_the_signature_to_the_bank(signer: tuple[str, InstructionSigner, Any],
                                                         adapter_name: str) -> None:
    alg, sign, public = signer
    adapter = load_adapter(adapter_name)
    signed = dataclasses.replace(INSTRUCTION, signature=sign.sign(INSTRUCTION))
    frame = adapter.encode(signed, sender="D00000", receiver="105000")
    [frame_out] = adapter.framer().feed(frame)
    decoded = [m for m in msg.decode_all(adapter, frame_out) if isinstance(m, msg.Instruction)]
    assert len(decoded) == 1
    received = decoded[0]
    assert received.signature == signed.signature
    verify_instruction_signature(received, public, alg)
    with pytest.raises(InstructionSignatureError):
        verify_instruction_signature(dataclasses.replace(received, amount=received.amount + 1), public, alg)


def test_signer_refuses_an_exposed_key_and_a_key_of_the_other_type(tmp_path: Path) -> None:
    from gateway.tls import InsecureKeyError

    path, _ = _write_key(tmp_path, "ed25519")
    with pytest.raises(ValueError, match="not an ecdsa-p256-sha256 private key"):
        InstructionSigner(path, "ecdsa-p256-sha256")
    path.chmod(0o644)
    with pytest.raises(InsecureKeyError):
        InstructionSigner(path, "ed25519")


# -- configuration ------------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[2] / "conf" / "gateway.example.toml"


def _problems(tmp_path: Path, **bank: Any) -> list[str]:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    data["banks"]["B001"].update(bank)
    path = tmp_path / "gw.toml"
    path.write_text(render_toml(data), encoding="utf-8")
    try:
        load_config(path, check_files=False)
    except ConfigError as e:
        return e.problems
    return []


def test_config_accepts_each_algorithm_with_a_key(tmp_path: Path) -> None:
    assert _problems(tmp_path, signature_alg="ed25519", signing_key="k.key") == []
    assert _problems(tmp_path, signature_alg="ecdsa-p256-sha256", signing_key="k.key") == []
    assert _problems(tmp_path, signature_alg="sm2-sm3", signing_key="k.key") == []
    [missing] = _problems(tmp_path, signature_alg="ed25519")
    assert missing.endswith("banks.B001.signing_key: is required")
    [unused] = _problems(tmp_path, signature_alg="none", signing_key="k.key")
    assert "banks.B001.signing_key: is only used" in unused
    [bad] = _problems(tmp_path, signature_alg="rsa")
    assert "banks.B001.signature_alg: must be one of" in bad


# -- end to end ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_gateway_signs_what_it_sends_and_the_bank_can_verify_it(tmp_path: Path) -> None:
    keys = tmp_path / "signing"
    keys.mkdir()
    key_path, public = _write_key(keys, "ed25519")
    h = await start_harness(tmp_path, banks={})
    try:
        data = tomllib.loads(h.config.path.read_text(encoding="utf-8"))
        data["banks"]["B001"].update(signature_alg="ed25519", signing_key=str(key_path))
        h.config.path.write_text(render_toml(data), encoding="utf-8")
        h.gateway.reload()  # the signer is taken on by a reload, as a rotated key would be
        assert h.gateway.config.banks["B001"].signature_alg == "ed25519"
        bank = h.start_bank("B001")
        await h.link_up("B001")
        status, record = await h.client().submit("SIG-1", amount="321.09", debit=DEBIT_B001)
        assert status == 202, record
        await h.client().wait_state("SIG-1", {"succeeded"})
        [received] = [t.instruction for t in bank.core._transfers.values()
                      if t.instruction.reference == "SIG-1"]
        assert received.amount == 32109 and received.signature
        verify_instruction_signature(received, public, "ed25519")
        with pytest.raises(InstructionSignatureError):
            verify_instruction_signature(dataclasses.replace(received, amount=32110), public, "ed25519")
    finally:
        await h.stop()
        await deferLater(reactor, 0, lambda: None)
