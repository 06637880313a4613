"""Link framing: a 4-byte big-endian body length, then the body (UTF-8 XML)."""

from __future__ import annotations

from adapters._framing import LengthPrefixedFramer
from adapters.base import AdapterError

__all__ = ["HEADER_LEN", "MAX_FRAME", "Iso20022Framer", "body_of"]

HEADER_LEN = 4
MAX_FRAME = 4 * 1024 * 1024
"""The largest body accepted or produced, in bytes (the length prefix excluded)."""


def _length(header: bytes | bytearray, max_body: int) -> int:
    length = int.from_bytes(header[:HEADER_LEN], "big")
    if length == 0:
        raise AdapterError("frame header: body length 0")
    if length > max_body:
        raise AdapterError(f"frame header: body length {length} exceeds {max_body}")
    return length


def body_of(frame: bytes | bytearray, max_body: int = MAX_FRAME) -> bytes:
    """The body of one whole frame, after checking its length prefix against its size."""
    if not isinstance(frame, (bytes, bytearray)):
        raise AdapterError("frame: must be bytes")
    if len(frame) < HEADER_LEN:
        raise AdapterError(f"frame: {len(frame)} bytes, shorter than the {HEADER_LEN}-byte header")
    length = _length(frame, max_body)
    if length != len(frame) - HEADER_LEN:
        raise AdapterError(f"frame: header says {length} body bytes, frame has "
                           f"{len(frame) - HEADER_LEN}")
    return bytes(frame[HEADER_LEN:])


class Iso20022Framer(LengthPrefixedFramer):
    """Cuts a byte stream into frames (length prefix included), fed arbitrary chunks.

    A zero or oversized length is refused as soon as its four bytes arrive, before any body
    is buffered, so at most one frame (``4 + max_body`` bytes) is ever held; after a refusal
    the framer stays broken (:class:`adapters._framing.LengthPrefixedFramer`).
    """

    header_len = HEADER_LEN

    def __init__(self, max_body: int = MAX_FRAME) -> None:
        super().__init__(max_body)

    def check_header(self, header: bytearray) -> int | None:
        return _length(header, self._max_body) if len(header) >= HEADER_LEN else None
