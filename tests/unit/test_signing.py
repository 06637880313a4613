"""Copy signatures: libsodium's Ed25519 agrees with the standard, and hostile signatures fail.

Ed25519 runs through libsodium (PyNaCl) for speed while keys are read with
``cryptography``; these tests hold the two implementations to each other, so a
signature made by one verifies with the other, and hold the verifier to refusing
every malformed signature without raising.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.signing import Signer, canonical, init_signing_key, load_public_key, verify_bytes


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, object, object]:
    directory: Path = tmp_path_factory.mktemp("keys")
    key_path, pub_path = init_signing_key(directory)
    private = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    return Signer(key_path), load_public_key(pub_path), private


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_a_signed_copy_verifies_and_any_edit_does_not(keys: tuple[Signer, object, object]) -> None:
    signer, public, _ = keys
    copy = signer.sign({"seq": 7, "kind": "instruction.received", "payload": "{\"amount\":\"1.00\"}"})
    assert copy["signature_alg"] == "ed25519"
    assert verify_bytes(public, "ed25519", canonical(copy), copy["signature"])
    edited = dict(copy, seq=8)
    assert not verify_bytes(public, "ed25519", canonical(edited), copy["signature"])


_JSON_VALUES = st.none() | st.integers() | st.text(max_size=20)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.dictionaries(st.text(max_size=10).filter(lambda k: k not in ("signature", "signature_alg")),
                       _JSON_VALUES, max_size=8))
def test_the_sent_text_is_the_signed_copy(keys: tuple[Signer, object, object], fields: dict) -> None:
    """The forwarder sends sign_json's text without serialising the copy again: it must read
    back as exactly the document sign() gives, and that document must verify."""
    signer, public, _ = keys
    sent = json.loads(signer.sign_json(dict(fields)))
    assert sent == signer.sign(dict(fields))
    assert verify_bytes(public, "ed25519", canonical(sent), sent["signature"])


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.binary(max_size=2048))
def test_libsodium_and_openssl_ed25519_agree(keys: tuple[Signer, object, object], data: bytes) -> None:
    signer, public, private = keys
    ours = signer.sign_bytes(data)
    assert ours == private.sign(data)  # type: ignore[attr-defined]  # Ed25519 is deterministic
    public.verify(ours, data)  # type: ignore[attr-defined]  # raises if OpenSSL disagrees
    assert verify_bytes(public, "ed25519", data, _b64(private.sign(data)))  # type: ignore[attr-defined]


def test_signatures_of_the_wrong_length_are_refused_not_re_split(keys: tuple[Signer, object, object]) -> None:
    # libsodium verifies signature || message: a real signature cut to 63 bytes, presented
    # with its last byte moved to the front of the message, joins back into the genuine pair.
    # Without the length check this would "verify" a message that was never signed.
    signer, public, _ = keys
    message = b"the signed message"
    signature = signer.sign_bytes(message)
    assert not verify_bytes(public, "ed25519", signature[63:] + message, _b64(signature[:63]))
    assert not verify_bytes(public, "ed25519", message[1:], _b64(signature + message[:1]))
    assert not verify_bytes(public, "ed25519", message, _b64(b""))
    assert verify_bytes(public, "ed25519", message, _b64(signature))


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.binary(max_size=100), st.text(max_size=100))
def test_hostile_signatures_are_false_never_an_exception(keys: tuple[Signer, object, object],
                                                          data: bytes, signature: str) -> None:
    _, public, _ = keys
    assert verify_bytes(public, "ed25519", data, signature) is False
    assert verify_bytes(public, "ecdsa-p256-sha256", data, signature) is False
    assert verify_bytes(object(), "ed25519", data, signature) is False


# -- batches (RFC 9162 §2.1 Merkle trees) -------------------------------------------------


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH, written from the RFC's definition, over the data (not the hashes)."""
    import hashlib

    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def test_the_tree_is_rfc_9162s_and_every_path_proves_only_its_own_leaf() -> None:
    from gateway.signing import batch_root, leaf_hash, merkle_tree

    for n in range(1, 40):
        data = [f"copy {i}".encode() for i in range(n)]
        leaves = [leaf_hash(d) for d in data]
        root, paths = merkle_tree(leaves)
        assert root == _mth(data), n
        for i in range(n):
            assert batch_root(leaves[i], i, n, paths[i]) == root
            assert all(batch_root(leaves[i], j, n, paths[i]) != root for j in range(n) if j != i)
            # (a path may also fit a tree of another size, for the first leaves: the size is
            # held by the signature over root and count, test_copies' "claims a smaller batch")
            if paths[i]:
                assert batch_root(leaves[i], i, n, paths[i][:-1]) != root
            assert batch_root(leaves[i], i, n, paths[i] + [root]) is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["seq", "kind", "payload", "raw"]),
                                st.one_of(st.integers(0, 2**40), st.text(max_size=40)), min_size=1),
                min_size=1, max_size=20))
def test_a_batch_signs_each_copys_content_and_its_sent_text_is_canonical(keys: tuple[Signer, object, object],
                                                                       copies: list[dict]) -> None:
    from gateway.signing import BatchProof, verify_copy

    signer, public, _ = keys
    texts = signer.sign_batch_json([dict(c) for c in copies])
    seen: dict = {}
    for i, (copy, text) in enumerate(zip(copies, texts)):
        doc = json.loads(text)
        proof = BatchProof.parse(doc["batch"])
        assert (proof.index, proof.count) == (i, len(copies))
        assert proof.text() == json.dumps(doc["batch"], sort_keys=True, separators=(",", ":"))
        assert canonical(doc) == canonical(dict(copy, signature_alg="ed25519"))
        assert verify_copy(public, "ed25519", canonical(doc), doc["signature"], proof, seen=seen)
        assert verify_copy(public, "ed25519", canonical(doc), doc["signature"], proof)
        assert not verify_copy(public, "ed25519", canonical(dict(doc, seq=-1)), doc["signature"], proof)
    assert len(seen) == 1  # one signature checked for the whole batch


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 8 * 64 - 1), st.sampled_from(list("ABCDEFgxz \t\n\u0661\u00e9\x00")))
def test_a_batch_path_holds_lowercase_hex_digits_only(at: int, bad: str) -> None:
    """One character that is not a lowercase hex digit, anywhere in a path, refuses it: the
    reader checks the joined path in C now (gateway.signing._lower_hex), not by a regex."""
    from gateway.signing import BatchProof

    good = {"root": "ab" * 32, "count": 300, "index": 7, "path": ["0123456789abcdef" * 4] * 8}
    assert BatchProof.parse(good).path == tuple(good["path"])
    joined = "".join(good["path"])
    path = joined[:at] + bad + joined[at + 1:]
    with pytest.raises(ValueError, match="batch.path"):
        BatchProof.parse(dict(good, path=[path[i:i + 64] for i in range(0, len(path), 64)]))
