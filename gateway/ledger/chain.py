"""The ledger's hash chain over its stored copies, and the signed document each row stands for.

Every stored row chains to the one before it over the bytes the gateway signed, the signature
(and, for a copy signed in a batch, its batch proof), the ledger seq and the arrival time
(:func:`ledger_chain_hash`); the writer (:func:`gateway.ledger.store.store_copies`), the
``verify`` walk and the trail API all compute and check it here.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, MutableMapping
from typing import Any

from gateway import copies as spec
from gateway.signing import BatchProof, verify_copy

__all__ = [
    "batch_proof",
    "canonical_bytes",
    "chain_hash",
    "copy_document",
    "ledger_chain_hash",
    "row_chain_hash",
    "signed_bytes",
    "verify_row",
]

canonical_bytes = spec.signing_input
"""The bytes a copy's signature covers: the one definition the gateway signs with."""


_COLUMN_OF = {"seq": "gateway_seq", "hash": "gateway_hash"}  # the copy's field -> the ledger's column


def copy_document(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored copy as the JSON document the gateway sent (``raw`` base64, ``signature``
    and, when it was signed in a batch, ``batch`` included)."""
    if row.get("document") is not None:
        doc = dict(json.loads(row["document"]), signature=row["signature"])
    else:
        doc = {f: row[_COLUMN_OF.get(f, f)] for f in spec.SIGNED_FIELDS}
        if doc["raw"] is not None:
            doc["raw"] = base64.b64encode(doc["raw"]).decode("ascii")
        doc["signature"] = row["signature"]
    if row.get("batch") is not None:
        doc["batch"] = json.loads(row["batch"])
    return doc


def batch_proof(row: Mapping[str, Any]) -> BatchProof | None:
    """A stored copy's batch proof, or None for a copy signed alone (``ValueError`` if altered
    out of shape)."""
    text = row.get("batch")
    return None if text is None else BatchProof.parse(json.loads(text))


def verify_row(key: Any, alg: str, row: Mapping[str, Any], *,
               seen: MutableMapping[tuple[str, int, str], bool] | None = None) -> bool:
    """Whether a stored copy's signature still verifies with the gateway's key, alone or by
    its batch (:func:`gateway.signing.verify_copy`); the ledger's ``verify`` walk, its trail API
    and the console's evidence all check a stored copy through this."""
    try:
        proof = batch_proof(row)
    except ValueError:
        return False
    return verify_copy(key, alg, signed_bytes(row), row["signature"], proof, seen=seen)


def signed_bytes(row: Mapping[str, Any]) -> bytes:
    """The bytes the gateway signed for a stored copy (a refused one's are kept as they came)."""
    if row.get("document") is not None:
        return str(row["document"]).encode("utf-8")
    return canonical_bytes(copy_document(row))


def ledger_chain_hash(prev: str, seq: int, received_us: int, document: Mapping[str, Any]) -> str:
    """The ledger hash of one copy: the previous hash, its seq and arrival, the signed bytes and
    signature, and its batch proof when it has one."""
    batch = document.get("batch")
    return chain_hash(prev, seq, received_us, canonical_bytes(document), document["signature"],
                       BatchProof.parse(batch).text() if batch is not None else None)


def row_chain_hash(prev: str, row: Mapping[str, Any]) -> str:
    """:func:`ledger_chain_hash` of a stored row (refused or not)."""
    return chain_hash(prev, row["seq"], row["received_us"], signed_bytes(row), row["signature"],
                       row.get("batch"))


def chain_hash(prev: str, seq: int, received_us: int, signed: bytes, signature: Any,
                batch: str | None = None) -> str:
    """SHA-256 of the parts joined by ``0x1f``: ``prev``, ``seq``, ``received_us``, the signed
    bytes, the signature, and the batch proof's text when there is one (a copy signed alone
    chains as it did before batches)."""
    parts = [prev.encode("ascii"), str(seq).encode("ascii"), str(received_us).encode("ascii"), signed,
             str(signature).encode("ascii", "replace")]
    if batch is not None:
        parts.append(str(batch).encode("utf-8"))
    return hashlib.sha256(b"\x1f".join(parts)).hexdigest()
