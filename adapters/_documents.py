"""The framer of protocols that carry one XML document per HTTP body (bocb2e, ICBC's CMS).

HTTP delimits the bodies on the link; this framer cuts a stream of such documents (captured
bodies one after another, as ``hpf-gateway adapters decode --framed`` reads them, and as the
adapter contract asks) at each root end tag.
"""

from __future__ import annotations

from typing import Any

from adapters.base import AdapterError, Message

__all__ = ["DocumentFramer", "decode_evidence"]

_BOM = b"\xef\xbb\xbf"


class DocumentFramer:
    """Cuts a stream at each ``end`` (the root's end tag, e.g. ``b"</CMS>"``).

    Whitespace between documents is skipped.  A document that does not start with ``<`` (after an optional UTF-8 BOM), a NUL byte (no
    document in GBK, GB18030 or UTF-8 holds one) and a stream that runs past ``max_frame``
    without an end tag are refused, so no more than one document is ever held.  After a
    refusal the framer stays refused."""

    def __init__(self, end: bytes, max_frame: int) -> None:
        self._end = end
        self._max = max_frame
        self._buf = bytearray()
        self._scanned = 0
        self._error: str | None = None

    def pending(self) -> int:
        """Bytes held of a document not yet ended."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        if self._error is not None:
            raise AdapterError(self._error)
        if not isinstance(data, (bytes, bytearray)):
            self._fail("frame: data must be bytes")
        if 0 in data:
            self._fail("frame: a NUL byte is no part of a document")
        self._buf += data
        frames = []
        while self._buf:
            blank = len(self._buf) - len(self._buf.lstrip(b" \t\r\n"))
            if blank:  # line breaks between captured documents belong to none of them
                del self._buf[:blank]
                self._scanned = max(0, self._scanned - blank)
                continue
            head = bytes(self._buf[:4])
            if head.startswith(_BOM[:len(head)]) and len(head) < 4 and len(head) <= 3:
                break  # a BOM may still be arriving
            first = head.removeprefix(_BOM)[:1]
            if first and first != b"<":
                self._fail("frame: a document must start with '<'")
            at = self._buf.find(self._end, max(0, self._scanned - len(self._end) + 1))
            if at < 0:
                self._scanned = len(self._buf)
                if len(self._buf) > self._max:
                    self._fail(f"frame: no document end within {self._max} bytes")
                break
            end = at + len(self._end)
            if end > self._max:
                self._fail(f"frame: document of {end} bytes exceeds {self._max}")
            frames.append(bytes(self._buf[:end]))
            del self._buf[:end]
            self._scanned = 0
        return frames

    def _fail(self, reason: str) -> None:
        self._error = reason
        self._buf.clear()
        raise AdapterError(reason)


def decode_evidence(adapter: Any, frame: bytes, end: bytes) -> list[Message]:
    """One document, or a request followed by its answer (one exchange's evidence, as the link
    stores it), read as the answer bound to that request (``adapter.decode_answer``)."""
    framer = DocumentFramer(end, adapter.max_frame * 2)
    try:
        parts = framer.feed(frame)
    except AdapterError:
        parts = []
    if len(parts) == 2 and framer.pending() == 0:
        return [adapter.decode_answer(parts[1], adapter.decode(parts[0]))]
    return [adapter.decode(frame)]
