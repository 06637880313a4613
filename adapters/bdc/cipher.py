"""Body encryption for bdc: the plug-in point.

The deployed front end encrypts every business body (frame flag ``'0'``) with a session key
that BDC001's answer carries wrapped in ``HandKey``; sign-in-class messages (BDC001, SYS600)
travel in clear.  Cipher, mode, padding and the key wrapping live in a closed vendor library
and are not known (docs/protocols/bdc.md).  A :class:`BodyCipher` supplies them:

* ``new_hand_key()`` (the answering side): a fresh ``HandKey`` text and the session key it
  carries;
* ``session_key(hand_key)`` (the signing-on side): the session key in a ``HandKey``;
* ``encrypt(body, key)`` / ``decrypt(data, key)``: one body either way; ``decrypt`` raises
  :class:`adapters.base.AdapterError` for anything that does not decrypt.

The default is no cipher: bodies travel in clear inside mutual TLS.  :class:`TestCipher` is
a stand-in (AES-GCM, the key in clear in HandKey) that drives the encrypted paths in tests;
it protects nothing and is not the vendor's.
"""

from __future__ import annotations

import os
from typing import Protocol

from adapters.base import AdapterError

__all__ = ["BodyCipher", "TestCipher"]


class BodyCipher(Protocol):
    def new_hand_key(self) -> tuple[str, bytes]: ...

    def session_key(self, hand_key: str) -> bytes: ...

    def encrypt(self, body: bytes, key: bytes) -> bytes: ...

    def decrypt(self, data: bytes, key: bytes) -> bytes: ...


class TestCipher:
    """A stand-in for tests only: AES-128-GCM, 12-byte nonce first; HandKey is the key in hex."""

    __test__ = False  # not a pytest class

    def new_hand_key(self) -> tuple[str, bytes]:
        key = os.urandom(16)
        return key.hex().upper(), key

    def session_key(self, hand_key: str) -> bytes:
        try:
            key = bytes.fromhex(hand_key)
        except ValueError:
            raise AdapterError("HandKey: not a key this cipher knows") from None
        if len(key) != 16:
            raise AdapterError("HandKey: not a key this cipher knows")
        return key

    def encrypt(self, body: bytes, key: bytes) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        return nonce + AESGCM(key).encrypt(nonce, body, None)

    def decrypt(self, data: bytes, key: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(data) < 28:
            raise AdapterError("body: too short to be encrypted")
        try:
            return AESGCM(key).decrypt(data[:12], data[12:], None)
        except InvalidTag:
            raise AdapterError("body: does not decrypt with the session key") from None
