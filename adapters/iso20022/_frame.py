"""Link framing: a 4-byte big-endian body length, then the body (UTF-8 XML)."""

from __future__ import annotations

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


class Iso20022Framer:
    """Cuts a byte stream into frames (length prefix included), fed arbitrary chunks.

    A zero or oversized length is refused as soon as its four bytes arrive, before any body
    is buffered, so at most one frame (``4 + max_body`` bytes) is ever held.  After a
    refusal the framer stays broken: every later ``feed`` raises again, and complete frames
    that preceded the violation in the same chunk are dropped with it (the link closes and
    the peer resends what was never acknowledged).
    """

    def __init__(self, max_body: int = MAX_FRAME) -> None:
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

    def pending(self) -> int:
        """Bytes held of a frame not yet complete (0 between frames): a stream or file that
        ends with this non-zero ends inside a frame."""
        return len(self._buf)

    def _feed(self, view: memoryview) -> list[bytes]:
        frames: list[bytes] = []
        buf = self._buf
        pos, end = 0, len(view)
        while pos < end:
            if not self._need:
                take = min(HEADER_LEN - len(buf), end - pos)
                buf += view[pos:pos + take]
                pos += take
                if len(buf) < HEADER_LEN:
                    break
                self._need = HEADER_LEN + _length(buf, self._max_body)
            take = min(self._need - len(buf), end - pos)
            buf += view[pos:pos + take]
            pos += take
            if len(buf) == self._need:
                frames.append(bytes(buf))
                buf.clear()
                self._need = 0
        return frames
