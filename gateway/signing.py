"""Signatures on copies to the ledger: one canonical form, signed by the gateway, checked by the ledger.

A copy is a JSON object of strings, integers, booleans and nulls only, so
``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` is
a deterministic byte string on both sides; the signature covers that string
with the ``signature`` field left out.  Ed25519 is the default; ECDSA P-256
with SHA-256 is accepted for parties whose HSMs only do that.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.tls import check_key_file, resolve_credential

__all__ = ["ALGORITHMS", "canonical", "Signer", "load_public_key", "verify_copy", "init_signing_key"]

ALGORITHMS = ("ed25519", "ecdsa-p256-sha256")


def canonical(copy: Mapping[str, Any]) -> bytes:
    """The bytes a copy's signature covers: the copy without ``signature``, canonical JSON."""
    body = {k: v for k, v in copy.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class Signer:
    """Signs copies with the gateway's private signing key (mode 0600, checked on load)."""

    def __init__(self, private_key: Path, algorithm: str = "ed25519") -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"signature algorithm must be one of {', '.join(ALGORITHMS)}, not {algorithm!r}")
        private_key = resolve_credential(private_key)
        check_key_file(private_key)
        key = serialization.load_pem_private_key(private_key.read_bytes(), password=None)
        want = ed25519.Ed25519PrivateKey if algorithm == "ed25519" else ec.EllipticCurvePrivateKey
        if not isinstance(key, want):
            raise ValueError(f"{private_key}: not an {algorithm} private key")
        if isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"{private_key}: ECDSA keys must be on P-256")
        self.algorithm = algorithm
        self._key = key

    def sign(self, copy: dict[str, Any]) -> dict[str, Any]:
        """Add ``signature_alg`` and ``signature`` to ``copy`` (in place) and return it."""
        copy["signature_alg"] = self.algorithm
        data = canonical(copy)
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            sig = self._key.sign(data)
        else:
            sig = self._key.sign(data, ec.ECDSA(hashes.SHA256()))
        copy["signature"] = base64.b64encode(sig).decode("ascii")
        return copy


def load_public_key(path: Path) -> Any:
    """A gateway's public signing key (PEM ``PUBLIC KEY``)."""
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey)):
        raise ValueError(f"{path}: not an Ed25519 or ECDSA public key")
    return key


def verify_copy(copy: Mapping[str, Any], public_key: Any) -> str | None:
    """Why the copy's signature is not valid under ``public_key``, or None when it is."""
    sig_text = copy.get("signature")
    alg = copy.get("signature_alg")
    if not isinstance(sig_text, str) or not sig_text:
        return "unsigned copy"
    try:
        sig = base64.b64decode(sig_text, validate=True)
    except ValueError:
        return "signature is not base64"
    data = canonical(copy)
    try:
        if alg == "ed25519" and isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(sig, data)
        elif alg == "ecdsa-p256-sha256" and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
        else:
            return f"signature algorithm {alg!r} does not match the gateway's key"
    except InvalidSignature:
        return "signature does not verify"
    return None


def init_signing_key(directory: Path, name: str = "gateway-signing") -> tuple[Path, Path]:
    """Create ``NAME.key`` (Ed25519, mode 0600) and ``NAME.pub`` in ``directory`` unless present."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub"
    if not key_path.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    if not pub_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        pub_path.write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_path, pub_path
