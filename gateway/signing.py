"""Signatures: on copies to the ledger, and on instructions to banks (non-repudiation).

**Copies.**  A copy is a JSON object of strings, integers, booleans and nulls
only, so ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
is a deterministic byte string on both sides: the copy's *content*, that
string with the ``signature`` and ``batch`` fields left out
(:func:`canonical`).  Ed25519 is the default; ECDSA P-256 with SHA-256 is
accepted for parties whose HSMs only do that.  A copy is signed in one of two
ways, and a reader accepts both:

- *alone* (no ``batch`` field; what the gateway wrote before batches): the
  signature covers the content;
- *in a batch* (:meth:`Signer.sign_batch_json`, what the forwarder writes):
  the contents of the copies the forwarder sends together are the leaves of
  a Merkle tree as RFC 9162 (Certificate Transparency 2.0) §2.1.1 defines it
  with SHA-256 -- a leaf's hash is ``SHA-256(0x00 || content)``, an inner
  node's ``SHA-256(0x01 || left || right)``, a tree of n > 1 leaves split
  at the largest power of two below n -- and one signature covers
  :func:`batch_statement` of the tree's root and size.  Every copy carries
  ``batch = {"root", "count", "index", "path"}``: the root and size the
  signature covers, its place in the batch (0-based) and its inclusion
  path (RFC 9162 §2.1.3.1, hex, from the leaf up), so a copy alone is
  checked as before -- content to leaf hash, the path to the root
  (:func:`batch_root`, RFC 9162 §2.1.3.2), the signature over the root --
  and a change to any byte of its content, its place or the batch's size
  fails it.  One signature per batch instead of one per copy: the gateway
  signs once and the ledger verifies once per batch.

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
import hashlib
import json
import os
import re
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from nacl import bindings as _sodium
from nacl.exceptions import BadSignatureError as _SodiumBadSignature

from adapters.base import Instruction
from adapters._frozen import quick_init
from gateway.model import canonical_json, format_amount
from gateway.tls import check_key_file, resolve_credential

__all__ = ["ALGORITHMS", "canonical", "canonical_text", "Signer", "load_public_key", "verify_bytes", "init_signing_key",
           "BATCH_STATEMENT_VERSION", "MAX_BATCH", "BatchProof", "leaf_hash", "merkle_tree", "batch_root",
           "batch_statement", "verify_copy",
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


_PROOF_FIELDS = ("signature", "batch")


def canonical_text(copy: Mapping[str, Any]) -> str:
    """The copy without ``signature`` and ``batch``, as canonical JSON text (see :func:`canonical`):
    :func:`gateway.model.canonical_json`, sorted keys, no spaces, non-ASCII kept."""
    return canonical_json({k: v for k, v in copy.items() if k not in _PROOF_FIELDS})


def canonical(copy: Mapping[str, Any]) -> bytes:
    """A copy's content: the copy without ``signature`` and ``batch``, canonical JSON.  What a
    copy signed alone is signed over, and a batch-signed copy's Merkle leaf."""
    return canonical_text(copy).encode("utf-8")


# -- batches: one signature over a Merkle tree of copies (RFC 9162 §2.1) ------------

BATCH_STATEMENT_VERSION = "hpf-copy-batch-1"
MAX_BATCH = 1 << 16
"""The most copies one batch signature may cover (the ledger takes at most 1,000 a request)."""
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _lower_hex(text: str) -> bool:
    """Whether ``text`` is pairs of lowercase hex digits and nothing else: what a2b_hex reads
    (digits only, in pairs, no spaces) and lowercase.  A regex [0-9a-f]* over a path's 576
    characters cost 4 us a copy; these two passes in C, a tenth of it."""
    try:
        binascii.a2b_hex(text)
    except ValueError:  # binascii.Error is one; so is a character past ASCII
        return False
    return text == text.lower()


_PROOF_KEYS = frozenset({"root", "count", "index", "path"})


def leaf_hash(content: bytes) -> bytes:
    """RFC 9162 §2.1.1: the hash of a leaf, ``SHA-256(0x00 || content)``."""
    return hashlib.sha256(b"\x00" + content).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_tree(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root of the tree over ``leaves`` (leaf hashes, at least one) and every leaf's
    inclusion path, from the leaf up (RFC 9162 §2.1.1 and §2.1.3.1)."""
    n = len(leaves)
    if n == 1:
        return leaves[0], [[]]
    k = 1 << ((n - 1).bit_length() - 1)  # the largest power of two below n
    left, left_paths = merkle_tree(leaves[:k])
    right, right_paths = merkle_tree(leaves[k:])
    for path in left_paths:
        path.append(right)
    for path in right_paths:
        path.append(left)
    return _node(left, right), left_paths + right_paths


def batch_root(leaf: bytes, index: int, count: int, path: Sequence[bytes]) -> bytes | None:
    """The root that ``path`` proves leaf hash ``leaf`` at ``index`` of a tree of ``count``
    leaves under, or None when the path cannot be one of that tree (RFC 9162 §2.1.3.2)."""
    if not 0 <= index < count:
        return None
    fn, sn, r = index, count - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def batch_statement(root: str, count: int) -> bytes:
    """The bytes a batch signature covers: ``{"count":N,"root":"<hex>","v":"hpf-copy-batch-1"}``
    (canonical JSON as for copies; ``v`` keeps it from ever reading as a copy's content)."""
    return json.dumps({"count": count, "root": root, "v": BATCH_STATEMENT_VERSION},
                      sort_keys=True, separators=(",", ":")).encode("ascii")


@quick_init
@dataclass(frozen=True)
class BatchProof:
    """A batch-signed copy's ``batch`` field: the signed root and size, its index and path (hex)."""

    root: str
    count: int
    index: int
    path: tuple[str, ...]

    @classmethod
    def parse(cls, value: Any) -> "BatchProof":
        """Read a ``batch`` field strictly; ``ValueError`` says what is wrong."""
        if not isinstance(value, Mapping) or value.keys() != _PROOF_KEYS:
            raise ValueError("batch must be an object of root, count, index and path")
        root, count, index, path = value["root"], value["count"], value["index"], value["path"]
        if not isinstance(root, str) or not _HEX64.fullmatch(root):
            raise ValueError("batch.root must be 64 lowercase hex digits")
        for name, n in (("count", count), ("index", index)):
            if isinstance(n, bool) or not isinstance(n, int):
                raise ValueError(f"batch.{name} must be an integer")
        if not 1 <= count <= MAX_BATCH or not 0 <= index < count:
            raise ValueError("batch.index must lie in 0..count-1, and count in 1..65536")
        # One pass over the joined hashes: the ledger reads a path per copy.
        if (not isinstance(path, list) or len(path) > 17
                or not all(type(p) is str and len(p) == 64 for p in path) or not _lower_hex("".join(path))):
            raise ValueError("batch.path must be a list of at most 17 hashes (64 lowercase hex digits)")
        return cls(root, count, index, tuple(path))

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "index": self.index, "path": list(self.path), "root": self.root}

    def text(self) -> str:
        """Canonical JSON text of the field (what the ledger stores and chains): sorted keys, no
        whitespace, as ``json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))``
        writes it (every value is an integer or lowercase hex)."""
        path = ",".join('"%s"' % p for p in self.path)
        return f'{{"count":{self.count},"index":{self.index},"path":[{path}],"root":"{self.root}"}}'


def verify_copy(key: Any, alg: str, content: bytes, signature_b64: str, batch: BatchProof | None, *,
                seen: MutableMapping[tuple[str, int, str], bool] | None = None) -> bool:
    """Whether a copy is signed by ``key``: alone, the signature over ``content``
    (:func:`canonical`); in a batch, ``content``'s path to the batch's root and the signature
    over :func:`batch_statement`.  ``seen`` remembers batch statements already checked (for
    one key only), so a batch costs one signature check however many of its copies are read.
    Never raises for bad input: the answer is then False."""
    if batch is None:
        return verify_bytes(key, alg, content, signature_b64)
    try:
        path = [bytes.fromhex(p) for p in batch.path]
    except (ValueError, TypeError):
        return False
    root = batch_root(leaf_hash(content), batch.index, batch.count, path)
    if root is None or root.hex() != batch.root:
        return False
    if seen is None:
        return verify_bytes(key, alg, batch_statement(batch.root, batch.count), signature_b64)
    # By root and count, which are all the statement says: it is written once per batch, not per copy.
    known = seen.get((batch.root, batch.count, signature_b64))
    if known is None:
        if len(seen) >= 4096:
            seen.clear()
        known = seen[(batch.root, batch.count, signature_b64)] = verify_bytes(
            key, alg, batch_statement(batch.root, batch.count), signature_b64)
    return known


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

    def sign_batch_json(self, copies: Sequence[dict[str, Any]]) -> list[str]:
        """Each of ``copies`` (at least one) as JSON text, signed together in one batch (see the
        module docstring): ``signature_alg`` is set on each, its content is serialised once, and
        ``batch`` and the one ``signature`` are added to the text."""
        if not 1 <= len(copies) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} copies")
        texts = []
        for copy in copies:
            copy["signature_alg"] = self.algorithm
            texts.append(canonical_text(copy))
        root, paths = merkle_tree([leaf_hash(t.encode("utf-8")) for t in texts])
        root_hex, count = root.hex(), len(texts)
        signature = base64.b64encode(self.sign_bytes(batch_statement(root_hex, count))).decode("ascii")
        out = []
        for i, (text, path) in enumerate(zip(texts, paths)):
            hashes_json = ",".join('"%s"' % p.hex() for p in path)
            out.append(f'{text[:-1]},"batch":{{"count":{count},"index":{i},"path":[{hashes_json}],'
                       f'"root":"{root_hex}"}},"signature":"{signature}"}}')
        return out

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
    return canonical_json(fields).encode("utf-8")


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
