"""Copies as a gateway builds and signs them (exactly as gateway/copies.py says), for the ledger's tests.

Tampering is done behind the store's back with plain SQL (:func:`sql`).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from adapters import base
from adapters.base import load_adapter
from gateway.copies import Copy, read
from gateway.ledger import store
from gateway.signing import Signer
from gateway.store.db import make_engine

GATEWAY_KEY = ed25519.Ed25519PrivateKey.generate()
DEBIT = "6200001111222233"
PAYEE = {"account": "6200009999000011", "name": "张三", "bank_code": "105100000017"}
T0 = 1_795_000_000_000_000  # 2026-11-19, microseconds


def bank_ref(n: int) -> str:
    return f"5224026112700000{n:04d}"


def received_payload(iid: str, n: int, amount: str = "100.00", **extra: Any) -> dict[str, Any]:
    instruction = {"instruction_id": iid, "kind": "transfer", "debit_account": DEBIT, "creditor": PAYEE,
                   "amount": amount, "purpose": "withdrawal", "memo": "", "approval_ref": None,
                   "requested_date": "2026-11-27", **extra}
    return {"instruction": instruction, "bank": "B001", "bank_ref": bank_ref(n)}


def result_payload(n: int, host: str, succeeded: bool = True) -> dict[str, Any]:
    return {"bank_ref": bank_ref(n), "result": {"succeeded": succeeded, "host_seq_no": host,
                                                "bank_seq_no": "", "code": "0000", "text": "ok"}}


def movement_payload(host: str, amount: int, summary: str = "") -> dict[str, Any]:
    return {"bank": "B001", "account": DEBIT, "host_seq_no": host, "amount": amount,
            "value_date": "2026-11-27", "time": "10:30:15", "counterparty_account": PAYEE["account"],
            "counterparty_name": PAYEE["name"], "counterparty_bank_code": PAYEE["bank_code"],
            "balance_after": None, "summary": summary, "remark": "", "reversal": False}


def make_copy(seq: int, *, kind: str = "instruction.state", state: str | None = "received",
              instruction_id: str | None = "I1", payload: dict[str, Any] | None = None,
              raw: bytes | None = None, adapter: str | None = None, event_id: str | None = None,
              gateway: str = "main", created_us: int | None = None, key: Any = GATEWAY_KEY,
              alg: str = "ed25519", centre_id: str | None = "C52240", account: str | None = DEBIT) -> dict[str, Any]:
    """A signed copy; the payload defaults to an instruction received for ``instruction_id``."""
    if payload is None:
        payload = received_payload(instruction_id or "I1", seq)
    doc: dict[str, Any] = {
        "gateway": gateway, "seq": seq, "event_id": event_id or f"{T0 + seq:014x}aaaaaa{seq:04x}",
        "kind": kind, "centre_id": centre_id, "instruction_id": instruction_id, "bank_id": "B001",
        "account": account, "state": state, "created_us": created_us or T0 + seq * 1000,
        "payload": json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True),
        "raw": base64.b64encode(raw).decode() if raw is not None else None, "adapter": adapter,
        "hash": f"{seq:064x}", "signature_alg": alg,
    }
    return sign(doc, key, alg)


def sign(doc: dict[str, Any], key: Any = GATEWAY_KEY, alg: str = "ed25519") -> dict[str, Any]:
    body = {k: v for k, v in doc.items() if k != "signature"}
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    signature = key.sign(data) if alg == "ed25519" else key.sign(data, ec.ECDSA(hashes.SHA256()))
    return dict(body, signature=base64.b64encode(signature).decode())


def gateway_signer(directory: Path, key: Any = GATEWAY_KEY) -> Signer:
    """The gateway's :class:`Signer` over ``key`` (its key file written to ``directory``, mode 0600)."""
    path = directory / "gateway-signing.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return Signer(path)


def sign_batch(signer: Signer, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``docs`` signed together as one batch, as the forwarder signs them, parsed back."""
    bodies = [{k: v for k, v in d.items() if k not in ("signature", "signature_alg", "batch")} for d in docs]
    return [json.loads(text) for text in signer.sign_batch_json(bodies)]


def row_of(doc: dict[str, Any]) -> store.CopyRow:
    copy = read(doc, expected_alg=doc["signature_alg"])
    assert isinstance(copy, Copy), copy
    return store.CopyRow.of(copy)


def public_keys() -> dict[str, tuple[str, Any]]:
    return {"main": ("ed25519", GATEWAY_KEY.public_key())}


def sql(url: str, statement: str, **params: Any) -> None:
    """Tamper behind the store's back."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)
    engine.dispose()


def file(ldb: store.LedgerDatabase, docs: list[dict[str, Any]], gateway: str = "main") -> Any:
    rows = [row_of(d) for d in docs]
    return ldb.write(lambda tx: store.store_copies(tx, gateway, rows))


def result_frame(n: int, host: str, succeeded: bool = True) -> bytes:
    """A bank's BDC109 answer, built with a fixed clock so the same call gives the same bytes."""
    from adapters.bdc import BdcAdapter

    return BdcAdapter(clock=lambda: dt.datetime(2026, 11, 27, 10, 30, 15)).encode(
        base.Result(seq_no="00000000000000000001", reply_to=bank_ref(n), ref=bank_ref(n), succeeded=succeeded,
                    host_seq_no=host, code="0000", text="ok"), sender="105000", receiver="D00000")


def movement_frame(host: str, amount: int) -> bytes:
    entry = base.Entry(account=DEBIT, host_seq_no=host, amount=amount, value_date=dt.date(2026, 11, 27),
                       time=dt.time(10, 30, 15), counterparty_account=PAYEE["account"])
    return load_adapter("bdc").encode(base.Movement(seq_no="00000000000000000002", entries=(entry,)),
                                      sender="105000", receiver="D00000")
