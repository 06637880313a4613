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

The default is no cipher: bodies travel in clear inside mutual TLS.  The tests drive the
encrypted paths with a stand-in of their own (``tests/unit/test_bdc_exchange.py``), which
protects nothing and is not the vendor's.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["BodyCipher"]


class BodyCipher(Protocol):
    def new_hand_key(self) -> tuple[str, bytes]: ...

    def session_key(self, hand_key: str) -> bytes: ...

    def encrypt(self, body: bytes, key: bytes) -> bytes: ...

    def decrypt(self, data: bytes, key: bytes) -> bytes: ...
