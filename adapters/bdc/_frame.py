"""bdc framing (docs/protocols/bdc.md): a 16-byte header, a 4-byte big-endian length, the body.

Header bytes 0-5 are the sender's node (``[A-Z0-9]{6}``), byte 6 is ``'1'`` for
sign-in-class messages and ``'0'`` otherwise, bytes 7-15 are padding (written as NUL,
anything accepted).  The length counts the body only.
"""

from __future__ import annotations

import re

from adapters._framing import LengthPrefixedFramer
from adapters.base import AdapterError

__all__ = ["HEADER_LEN", "MAX_BODY", "check_header", "BdcFramer"]

MAX_BODY = 1024 * 1024
"""The largest body accepted or produced, in bytes (header excluded)."""

HEADER_LEN = 20

_NODE_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_HEADER_START = re.compile(rb"[A-Z0-9]{6}[01]")


def check_header(header: bytes | bytearray, max_body: int) -> int | None:
    """Validate as much of a frame header as is present; the body length once it is known."""
    if len(header) >= HEADER_LEN and _HEADER_START.match(header) is not None:
        length = int.from_bytes(header[16:20], "big")
        if 0 < length <= max_body:
            return length  # the common case; anything else takes the slow path to be named
    for i in range(min(len(header), 6)):
        if header[i] not in _NODE_BYTES:
            raise AdapterError("frame header: sender node is not 6 of A-Z 0-9")
    if len(header) > 6 and header[6] not in (0x30, 0x31):
        raise AdapterError(f"frame header: flag byte {header[6]:#04x}, expected '0' or '1'")
    if len(header) < HEADER_LEN:
        return None
    length = int.from_bytes(header[16:20], "big")
    if length == 0:
        raise AdapterError("frame header: body length 0")
    if length > max_body:
        raise AdapterError(f"frame header: body length {length} exceeds {max_body}")
    return length


class BdcFramer(LengthPrefixedFramer):
    """Cuts a byte stream into bdc frames (header included), fed arbitrary chunks.

    A bad node, flag or length is refused as soon as its bytes arrive, before any body is
    buffered; at most one frame (``20 + max_body`` bytes) is ever held; after a refusal the
    framer stays broken (:class:`adapters._framing.LengthPrefixedFramer`).
    """

    header_len = HEADER_LEN

    def __init__(self, max_body: int = MAX_BODY) -> None:
        super().__init__(max_body)

    def check_header(self, header: bytearray) -> int | None:
        return check_header(header, self._max_body)
