"""Logs never carry key material or full account numbers (SECURITY.md), over a demo-like flow.

The in-process gateway runs with both simulated banks, an instruction-signing
key, a centre submitting good, rejected and malformed instructions, another
centre and a bank trying what they may not, a refused handshake, a reload and
a bank link going down — with every log event captured (debug included,
failures with their tracebacks).  The captured text must hold no PEM block,
no private key's bytes in any common encoding, and no registered account
number of 8 or more digits in full.
"""

from __future__ import annotations

import base64
import os
import re
import tomllib
from pathlib import Path

import pytest_twisted
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.config import render_toml
from gateway.simulate.run import api_url
from tests.integration.harness import DEBIT_B001, DEBIT_B002, OTHER_ACCOUNT, OTHER_CENTRE, PAYEE, start_harness
from tests.security.support import Https, capture_logs, connect_tcp, settle


def _key_fragments(path: Path) -> set[str]:
    """Substrings that would betray the private key in ``path``: its PEM/DER body and raw secret."""
    pem = path.read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        secret = key.private_numbers().private_value.to_bytes(32, "big")
    else:
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        secret = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                   serialization.NoEncryption())
    der_b64 = base64.b64encode(der).decode()
    fragments = {der_b64[i:i + 24] for i in range(0, len(der_b64) - 24, 24)}
    fragments |= {secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode(), der.hex()[:48],
                  repr(secret)[2:-1]}
    return fragments


@pytest_twisted.ensureDeferred
async def test_a_demo_like_flow_logs_no_key_material_and_no_full_account_number(tmp_path: Path) -> None:
    signing_key = tmp_path / "instructions.key"
    fd = os.open(signing_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    with capture_logs() as logs:
        h = await start_harness(tmp_path)
        try:
            data = tomllib.loads(h.config.path.read_text(encoding="utf-8"))
            data["banks"]["B001"].update(signature_alg="ed25519", signing_key=str(signing_key))
            h.config.path.write_text(render_toml(data), encoding="utf-8")
            h.gateway.reload()
            await h.link_up("B001")
            await h.link_up("B002")
            centre = h.client()
            for i, debit in enumerate((DEBIT_B001, DEBIT_B002, DEBIT_B001)):
                status, record = await centre.submit(f"LOG-{i}", debit=debit)
                assert status == 202, record
            stranger = {"account": "6299990000111122", "name": "无名", "bank_code": "105100000017"}
            status, record = await centre.submit("LOG-REJ", creditor=stranger)
            assert status == 202 and record["state"] == "rejected"
            status, _ = await centre.submit("LOG-BAD", amount="1.001")
            assert status == 422
            status, _ = await centre.submit("LOG-FOREIGN", debit=OTHER_ACCOUNT)
            assert status == 403
            status, _ = await h.client(OTHER_CENTRE).submit("LOG-OTHER", debit=DEBIT_B001)
            assert status == 403
            bank = Https(h.pki.cert("bank", "B001"), h.pki.key("bank", "B001"), h.pki.ca_cert)
            assert (await bank.call("GET", api_url(h.config) + "/v1/results")).status == 403
            booking = {"booking_id": "BK-1", "host_seq_no": "H1", "account": OTHER_ACCOUNT, "amount": "-1.00",
                       "voucher_no": "V1", "booked_on": "2030-01-01"}
            status, _ = await centre.request("POST", "/v1/bookings", booking)
            assert status == 403
            for i in range(3):
                await centre.wait_state(f"LOG-{i}", {"succeeded"})
            status, feed = await centre.request("GET", "/v1/results?after=0")
            assert status == 200 and feed["results"]
            garbage = await connect_tcp(int(api_url(h.config).rsplit(":", 1)[1]))
            garbage.transport.write(b"\x16\x03\x01\x00\x05hello" + b"\x00" * 64)  # type: ignore[union-attr]
            await settle(garbage, 5)
            h.gateway.reload()
            await h.stop_bank("B002")
            await settle(garbage, 0.5)
        finally:
            await h.stop()

    text = logs.text()
    assert len(logs.events) > 20, "the flow should have logged plenty"
    assert logs.named("centre.foreign_account") and logs.named("centre_api.unauthorised_peer")
    assert logs.named("tls.handshake_refused")
    assert "-----BEGIN" not in text and "PRIVATE KEY" not in text
    keys = [p for p in (tmp_path / "keys").glob("*.key")] + [signing_key]
    assert len(keys) >= 6
    for key in keys:
        for fragment in _key_fragments(key):
            assert fragment not in text, f"material of {key.name} is in the logs"
    registered = set(h.config.accounts) | set(h.config.counterparties) | {PAYEE["account"], stranger["account"]}
    numbers = {n for n in registered if len(re.sub(r"\D", "", n)) >= 8}
    assert DEBIT_B001 in numbers and OTHER_ACCOUNT in numbers
    for number in numbers:
        assert number not in text, f"account {number} appears unmasked in the logs"
    # Not vacuous: account numbers were logged, masked to their last four digits, and peers by name.
    from gateway.model import mask_account

    assert mask_account(OTHER_ACCOUNT) in text and mask_account(DEBIT_B001) in text
    assert "hpf://bank/B001" in text


def test_the_demo_run_logs_no_key_material_and_no_full_account_number(tmp_path: Path) -> None:
    """``hpf-gateway demo`` itself, as the README runs it, with the bank offences turned on.

    (All but balance-break: that one needs two balance snapshots around the
    offence, which a run this short may not see; tests/integration covers it.)

    Its gateway, ledger and simulator logs (``DIR/gateway.log``) are scanned for
    the private keys it generated and the registered account numbers in full.
    """
    import subprocess
    import sys

    from gateway.config import load_config
    from gateway.demo import FAULT_RULES
    from gateway.model import mask_account

    directory = tmp_path / "demo"
    run = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--dir", str(directory), "--count", "60", "--rate", "60",
         "--fault-every", "5", "--bank-faults", ",".join(sorted(set(FAULT_RULES) - {"balance-break"}))],
        capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    text = (directory / "gateway.log").read_text(encoding="utf-8")
    assert len(text.splitlines()) > 100, "the demo should have logged plenty"
    assert "-----BEGIN" not in text and "PRIVATE KEY" not in text
    keys = sorted((directory / "keys").glob("*.key"))
    assert len(keys) >= 6
    for key in keys:
        for fragment in _key_fragments(key):
            assert fragment not in text, f"material of {key.name} is in the demo's logs"
    config = load_config(directory / "gateway.toml")
    numbers = {n for n in (*config.accounts, *config.counterparties) if len(re.sub(r"\D", "", n)) >= 8}
    assert len(numbers) >= 4
    for number in numbers:
        assert number not in text, f"account {number} appears unmasked in the demo's logs"
    assert any(mask_account(n) in text for n in numbers)  # not vacuous: accounts were logged, masked
