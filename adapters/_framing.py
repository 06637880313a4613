"""The framer every length-prefixed protocol shares: a header that states the body length.

A subclass says how long its header is and how to read it (:meth:`check_header`,
called with as much of the header as has arrived, so a bad byte is refused at
once); this class does the rest: fed arbitrary chunks, it returns complete
frames (header included), never holds more than one frame, and after a
violation stays broken.  Complete frames that preceded the violation in the
same chunk are dropped with it: the link closes and the peer resends what was
never acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, ClassVar

from adapters.base import Adapter, AdapterError

__all__ = ["LengthPrefixedFramer", "read_frames", "CHUNK"]

CHUNK = 64 * 1024
"""How much of a stream :func:`read_frames` reads at a time."""


class LengthPrefixedFramer:
    """Cuts a byte stream into ``header + body`` frames (see the module docstring)."""

    header_len: ClassVar[int]

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self._buf = bytearray()
        self._need = 0                  # total size of the frame being collected; 0 = unknown
        self._error: str | None = None

    def check_header(self, header: bytearray) -> int | None:
        """Validate the header bytes present so far; the body length once the header is whole.

        Raises :class:`AdapterError` for a violation (a bad byte, a zero or
        oversized length) as soon as the offending bytes are there.
        """
        raise NotImplementedError

    def check_body_start(self, first: int) -> None:
        """Refuse a body whose first byte cannot start one (default: any byte will do)."""

    def feed(self, data: bytes) -> list[bytes]:
        """Complete frames now available; raises :class:`AdapterError` on a framing violation."""
        if self._error is not None:
            raise AdapterError(self._error)
        try:
            return self._feed(memoryview(data))
        except AdapterError as e:
            self._fail(str(e))
            raise
        except TypeError:
            self._fail("frame: data must be bytes")
            raise AdapterError("frame: data must be bytes") from None

    def pending(self) -> int:
        """Bytes held of a frame not yet complete (0 between frames): a stream or a file that
        ends with this non-zero ends inside a frame."""
        return len(self._buf)

    def _fail(self, reason: str) -> None:
        self._error = f"{reason} (framer already failed)"
        self._buf = bytearray()
        self._need = 0

    def _feed(self, view: memoryview) -> list[bytes]:
        frames: list[bytes] = []
        buf = self._buf
        header_len = self.header_len
        pos, end = 0, len(view)
        while pos < end:
            if not self._need:
                take = min(header_len - len(buf), end - pos)
                buf += view[pos:pos + take]
                pos += take
                length = self.check_header(buf)
                if length is None:
                    break
                self._need = header_len + length
                if pos == end:
                    break
            if len(buf) == header_len:
                self.check_body_start(view[pos])
            take = min(self._need - len(buf), end - pos)
            buf += view[pos:pos + take]
            pos += take
            if len(buf) == self._need:
                frames.append(bytes(buf))
                buf.clear()
                self._need = 0
        return frames


def read_frames(adapter: Adapter, stream: BinaryIO, *, chunk: int = CHUNK) -> Iterator[bytes]:
    """The frames of a recorded stream (a file of frames as sent on a link), one at a time.

    Reads ``chunk`` bytes at a time through a fresh framer of ``adapter``, so no more than one
    frame (bounded by the adapter's ``max_frame``) and one chunk are ever held, whatever the
    stream's length; a framing violation or a stream that ends inside a frame raises
    :class:`AdapterError` as soon as it is seen.
    """
    framer = adapter.framer()
    while True:
        data = stream.read(chunk)
        if not data:
            break
        yield from framer.feed(data)
    if getattr(framer, "pending", lambda: 0)():
        raise AdapterError("the stream ends inside a frame")
