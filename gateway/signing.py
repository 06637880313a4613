"""Signatures: on copies to the ledger, and on instructions to banks (non-repudiation).

**Copies.**  A copy is a JSON object of strings, integers, booleans and nulls
only, so ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
is a deterministic byte string on both sides; the signature covers that
string with the ``signature`` field left out.  Ed25519 is the default; ECDSA
P-256 with SHA-256 is accepted for parties whose HSMs only do that.

**Instructions.**  With ``[banks.X] signature_alg`` other than ``"none"``,
every instruction the gateway sends to that bank carries a detached
signature (``adapters.base.Instruction.signature``: bdc body field
``Signature``, ISO 20022 ``SplmtryData/Envlp/hpf:Sgntr``, each base64; the
banks' direct-connect protocols bocb2e, icbc and ccb have no place for one:
their front-end signs).  It
covers :func:`instruction_signing_bytes`: the UTF-8 bytes of the JSON object

    {"amount": "1234.56", "centre_node": "C52240", "creditor_account": "...",
     "creditor_bank_code": "105100000017", "creditor_name": "张三",
     "debit_account": "...", "reference": "<centre's instruction id>",
     "send_date": "YYYY-MM-DD", "seq_no": "<bank reference>", "v": "hpf-instruction-1"}

written with sorted keys, no whitespace (``","`` and ``":"`` separators),
non-ASCII characters as themselves, and JSON string escapes for ``"``, ``\\``
and control characters (Python's ``json.dumps(..., sort_keys=True,
separators=(",", ":"), ensure_ascii=False)``).  ``amount`` is the decimal
CNY amount with exactly two decimals.  ``v`` separates this use of the key
from any other.  Ed25519 signs those bytes directly (64-byte signature);
ECDSA P-256 signs their SHA-256 (DER signature).  A bank rebuilds the same
bytes from the fields it decoded and calls :func:`verify_instruction_signature`
(or its own implementation of the above), so a changed amount, account,
payee, reference or date is detected.

SM2 with SM3 (国密, "sm2-sm3") goes through GmSSL, the reference
implementation, by its binding ``gmssl-pyx`` (the optional ``sm`` extra):
GB/T 32918 signatures with the SM3 digest of Z_A (default signer id
``1234567812345678``) and the message, DER-encoded.  The pure-Python ``gmssl``
package is not used: it draws signing nonces from ``random`` (not a CSPRNG: a
few signatures give away the key), mangles some public keys
(``str.lstrip("04")``) and does not range-check ``r`` and ``s``.  SM2 keys
are PEM blocks of the raw key material (``SM2 PRIVATE KEY``: the 32-byte
scalar then the 64-byte public point x||y; ``SM2 PUBLIC KEY``: the point),
since ``cryptography`` cannot read SM2 keys; :func:`init_sm2_key` makes a pair.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Any, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from nacl import bindings as _sodium
from nacl.exceptions import BadSignatureError as _SodiumBadSignature

from adapters.base import Instruction
from gateway.model import format_amount
from gateway.tls import check_key_file, resolve_credential

__all__ = ["ALGORITHMS", "canonical", "canonical_text", "Signer", "load_public_key", "verify_bytes", "init_signing_key",
           "INSTRUCTION_SIGNATURE_VERSION", "instruction_signing_bytes", "InstructionSigner",
           "InstructionSignatureError", "verify_instruction_signature", "Sm2PublicKey", "Sm2PrivateKey",
           "init_sm2_key"]

ALGORITHMS = ("ed25519", "ecdsa-p256-sha256")
INSTRUCTION_SIGNATURE_VERSION = "hpf-instruction-1"
_ED25519_SIGNATURE_LEN = 64


# Ed25519 itself runs in libsodium (PyNaCl): keys are still read and checked with
# ``cryptography``, but signing and verifying go through libsodium, which is about twice as
# fast here and releases the GIL (cffi), so the ledger's verifier threads and the gateway's
# signing run beside the reactor instead of taking turns with it (bench/README.md, item 12).

def _ed25519_sign(secret: bytes, data: bytes) -> bytes:
    return _sodium.crypto_sign(data, secret)[:_ED25519_SIGNATURE_LEN]


def _ed25519_verify(key: ed25519.Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    # crypto_sign_open takes signature || message, so a signature of another length would
    # shift the split: refuse it first.
    if len(signature) != _ED25519_SIGNATURE_LEN:
        return False
    try:
        _sodium.crypto_sign_open(signature + data, key.public_bytes_raw())
    except (_SodiumBadSignature, ValueError, TypeError):
        return False
    return True


def canonical_text(copy: Mapping[str, Any]) -> str:
    """The copy without ``signature``, as canonical JSON text (see :func:`canonical`)."""
    body = {k: v for k, v in copy.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(copy: Mapping[str, Any]) -> bytes:
    """The bytes a copy's signature covers: the copy without ``signature``, canonical JSON."""
    return canonical_text(copy).encode("utf-8")


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
        self._ed25519: bytes | None = None
        if isinstance(key, ed25519.Ed25519PrivateKey):  # libsodium's secret key: seed || public key
            self._ed25519 = key.private_bytes_raw() + key.public_key().public_bytes_raw()

    def sign_bytes(self, data: bytes) -> bytes:
        """The raw signature over ``data``: 64 bytes for Ed25519, DER for ECDSA (over SHA-256)."""
        if self._ed25519 is not None:
            return _ed25519_sign(self._ed25519, data)
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    def _seal(self, copy: dict[str, Any]) -> tuple[str, str]:
        # Sets signature_alg (signed with the rest); the canonical text and the base64 signature.
        copy["signature_alg"] = self.algorithm
        text = canonical_text(copy)
        return text, base64.b64encode(self.sign_bytes(text.encode("utf-8"))).decode("ascii")

    def sign(self, copy: dict[str, Any]) -> dict[str, Any]:
        """Add ``signature_alg`` and ``signature`` to ``copy`` (in place) and return it."""
        _, copy["signature"] = self._seal(copy)
        return copy

    def sign_json(self, copy: dict[str, Any]) -> str:
        """The document :meth:`sign` gives, as JSON text: the canonical text the signature
        covers with ``signature`` added.  The copy is serialised once, not once to sign and
        again to send."""
        text, signature = self._seal(copy)
        return f'{text[:-1]},"signature":"{signature}"}}'


class Sm2PublicKey:
    """An SM2 public key: the 64-byte point x||y."""

    def __init__(self, point: bytes) -> None:
        if len(point) != 64:
            raise ValueError("an SM2 public key is 64 bytes (x||y)")
        self.point = point


class Sm2PrivateKey:
    """An SM2 key pair: the 32-byte scalar and its public key."""

    def __init__(self, scalar: bytes, point: bytes) -> None:
        if len(scalar) != 32:
            raise ValueError("an SM2 private key is 32 bytes")
        self.scalar = scalar
        self.public = Sm2PublicKey(point)


def _gmssl() -> Any:
    try:
        import gmssl_pyx
    except ImportError:
        raise ValueError("sm2-sm3 needs GmSSL's binding: pip install 'hpf-gateway[sm]'") from None
    return gmssl_pyx


def _pem_block(data: bytes, label: str) -> bytes:
    text = data.decode("ascii", "replace")
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    if begin not in text or end not in text:
        raise ValueError(f"not a PEM {label}")
    body = text.split(begin, 1)[1].split(end, 1)[0]
    return base64.b64decode("".join(body.split()), validate=True)


def _pem(data: bytes, label: str) -> bytes:
    lines = base64.b64encode(data).decode("ascii")
    wrapped = "\n".join(lines[i:i + 64] for i in range(0, len(lines), 64))
    return f"-----BEGIN {label}-----\n{wrapped}\n-----END {label}-----\n".encode("ascii")


def init_sm2_key(directory: Path, name: str) -> tuple[Path, Path]:
    """Create ``NAME.key`` (SM2, mode 0600) and ``NAME.pub`` in ``directory`` unless present."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub"
    if not key_path.exists():
        point, scalar = _gmssl().sm2_key_generate()
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(_pem(scalar + point, "SM2 PRIVATE KEY"))
        pub_path.write_bytes(_pem(point, "SM2 PUBLIC KEY"))
    return key_path, pub_path


def load_public_key(path: Path) -> Any:
    """A gateway's public signing key (PEM ``PUBLIC KEY``, or ``SM2 PUBLIC KEY``)."""
    data = path.read_bytes()
    if b"BEGIN SM2 PUBLIC KEY" in data:
        return Sm2PublicKey(_pem_block(data, "SM2 PUBLIC KEY"))
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey)):
        raise ValueError(f"{path}: not an Ed25519 or ECDSA public key")
    return key


def verify_bytes(key: Any, alg: str, data: bytes, signature_b64: str) -> bool:
    """Whether ``signature_b64`` (base64; DER for ECDSA) is ``key``'s ``alg`` signature over ``data``.

    The ledger checks copies with this (over :func:`canonical` of the copy).
    Never raises for a bad signature, bad base64 or a key of the wrong type:
    the answer is then False.
    """
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return False
    if alg == "ed25519":
        return isinstance(key, ed25519.Ed25519PublicKey) and _ed25519_verify(key, signature, data)
    try:
        if alg == "ecdsa-p256-sha256" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


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


# -- instructions ----------------------------------------------------------------


def instruction_signing_bytes(ins: Instruction) -> bytes:
    """The bytes an instruction's signature covers (the module docstring defines them)."""
    fields = {
        "v": INSTRUCTION_SIGNATURE_VERSION,
        "seq_no": ins.seq_no,
        "send_date": ins.send_date.isoformat(),
        "centre_node": ins.centre_node,
        "reference": ins.reference,
        "debit_account": ins.debit_account,
        "creditor_account": ins.creditor_account,
        "creditor_name": ins.creditor_name,
        "creditor_bank_code": ins.creditor_bank_code,
        "amount": format_amount(ins.amount),
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class InstructionSignatureError(Exception):
    """An instruction's signature is missing, malformed or does not verify; the message says which."""


class InstructionSigner:
    """Signs instructions for one bank with the gateway's key for that bank (mode 0600, checked on load).

    Raises ``InsecureKeyError`` / ``ValueError`` at construction for an exposed,
    unreadable or wrong-type key, so a bad key stops the daemon at start or
    a reload, never at the first send.
    """

    def __init__(self, private_key: Path, algorithm: str) -> None:
        self.algorithm = algorithm
        self._sm2: Sm2PrivateKey | None = None
        if algorithm == "sm2-sm3":
            private_key = resolve_credential(private_key)
            check_key_file(private_key)
            raw = _pem_block(private_key.read_bytes(), "SM2 PRIVATE KEY")
            if len(raw) != 96:
                raise ValueError(f"{private_key}: an SM2 private key file holds 32 + 64 bytes")
            _gmssl()
            self._sm2 = Sm2PrivateKey(raw[:32], raw[32:])
        else:
            self._signer = Signer(private_key, algorithm)

    def sign(self, ins: Instruction) -> bytes:
        """The detached signature of ``ins`` (its own ``signature`` field is not covered)."""
        data = instruction_signing_bytes(ins)
        if self._sm2 is not None:
            return bytes(_gmssl().sm2_sign(self._sm2.scalar, self._sm2.public.point, data))
        return self._signer.sign_bytes(data)


def verify_instruction_signature(ins: Instruction, public_key: Any, algorithm: str) -> None:
    """Check ``ins.signature`` against the gateway's ``public_key`` for ``algorithm``.

    Returns None when the signature is valid; raises
    :class:`InstructionSignatureError` saying why otherwise (no signature,
    wrong key type for the algorithm, or a signature that does not cover
    these fields, e.g. after the amount was changed).  ``public_key`` is a
    ``cryptography`` public key (see :func:`load_public_key`).
    """
    if not ins.signature:
        raise InstructionSignatureError("the instruction carries no signature")
    data = instruction_signing_bytes(ins)
    try:
        if algorithm == "ed25519" and isinstance(public_key, ed25519.Ed25519PublicKey):
            if not _ed25519_verify(public_key, ins.signature, data):
                raise InvalidSignature()
        elif (algorithm == "ecdsa-p256-sha256" and isinstance(public_key, ec.EllipticCurvePublicKey)
              and isinstance(public_key.curve, ec.SECP256R1)):
            public_key.verify(ins.signature, data, ec.ECDSA(hashes.SHA256()))
        elif algorithm == "sm2-sm3" and isinstance(public_key, Sm2PublicKey):
            if not _gmssl().sm2_verify(public_key.point, data, ins.signature):
                raise InvalidSignature()
        else:
            raise InstructionSignatureError(
                f"signature algorithm {algorithm!r} does not match the {type(public_key).__name__} given")
    except InvalidSignature:
        raise InstructionSignatureError("the signature does not verify: the instruction was altered "
                                        "or signed with another key") from None
