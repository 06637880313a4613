"""bdc framing (PROTOCOL.md §1.2): a 16-byte header, a 4-byte big-endian length, the body.

Header bytes 0-5 are the sender's node (``[A-Z0-9]{6}``), byte 6 is ``'1'`` for
sign-in-class messages and ``'0'`` otherwise, bytes 7-15 are padding (written as NUL,
anything accepted).  The length counts the body only.
"""

from __future__ import annotations

import re

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


class BdcFramer:
    """Cuts a byte stream into bdc frames (header included), fed arbitrary chunks.

    A bad node, flag or length is refused as soon as its bytes arrive, before any body is
    buffered; at most one frame (``20 + max_body`` bytes) is ever held.  After a refusal
    the framer stays broken: every later ``feed`` raises again.  Complete frames that
    preceded the violation in the same chunk are dropped with it (the link closes and the
    peer resends what we never acknowledged).
    """

    def __init__(self, max_body: int = MAX_BODY) -> None:
        self._max_body = max_body
        self._buf = bytearray()
        self._need = 0                  # total size of the frame being collected; 0 = unknown
        self._error: str | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Complete frames now available; raises :class:`AdapterError` on a framing violation."""
        if self._error is not None:
            raise AdapterError(self._error)
        try:
            return self._feed(memoryview(data))
        except AdapterError as e:
            self._error = f"{e} (framer already failed)"
            self._buf = bytearray()
            raise

    def _feed(self, view: memoryview) -> list[bytes]:
        frames: list[bytes] = []
        buf = self._buf
        pos, end = 0, len(view)
        while pos < end:
            if not self._need:
                take = min(HEADER_LEN - len(buf), end - pos)
                buf += view[pos:pos + take]
                pos += take
                length = check_header(buf, self._max_body)
                if length is None:
                    break
                self._need = HEADER_LEN + length
            take = min(self._need - len(buf), end - pos)
            buf += view[pos:pos + take]
            pos += take
            if len(buf) == self._need:
                frames.append(bytes(buf))
                buf.clear()
                self._need = 0
        return frames
