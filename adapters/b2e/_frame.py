"""b2e framing: six ASCII digits, zero-padded, giving the body length; then the body.

The length excludes the six header bytes.  Six digits cap a body at 999,999 bytes, which is
therefore :data:`MAX_BODY`.  A body is an XML document, so its first byte must be ``<``: the
framer checks that byte as soon as it arrives, which stops a lying length followed by
anything else before the frame is buffered.
"""

from __future__ import annotations

from adapters._framing import LengthPrefixedFramer
from adapters.base import AdapterError

__all__ = ["HEADER_LEN", "MAX_BODY", "B2eFramer", "check_header"]

HEADER_LEN = 6
MAX_BODY = 999_999
"""The largest body six digits can announce, and the largest accepted or produced."""

_DIGITS = frozenset(b"0123456789")
_BODY_START = 0x3C  # '<'


def check_header(header: bytes | bytearray, max_body: int) -> int | None:
    """Validate as much of a header as is present; the body length once all six digits are.

    Raises :class:`AdapterError` on a non-digit, a zero length or a length above
    ``max_body``.
    """
    if len(header) >= HEADER_LEN and header[:HEADER_LEN].isdigit():
        length = int(header[:HEADER_LEN])
        if 0 < length <= max_body:
            return length  # the common case; anything else takes the slow path to be named
    for i in range(min(len(header), HEADER_LEN)):
        if header[i] not in _DIGITS:
            raise AdapterError(f"frame header: byte {i} is {header[i]:#04x}, not an ASCII digit")
    if len(header) < HEADER_LEN:
        return None
    length = int(header[:HEADER_LEN])
    if length == 0:
        raise AdapterError("frame header: body length 0")
    raise AdapterError(f"frame header: body length {length} exceeds {max_body}")


class B2eFramer(LengthPrefixedFramer):
    """Cuts a byte stream into b2e frames (header included), fed arbitrary chunks.

    A non-digit header byte, a zero or oversized length, or a body that does not start with
    ``<`` is refused as soon as its bytes arrive; at most one frame (``6 + max_body`` bytes)
    is ever held; after a refusal the framer stays broken
    (:class:`adapters._framing.LengthPrefixedFramer`).
    """

    header_len = HEADER_LEN

    def __init__(self, max_body: int = MAX_BODY) -> None:
        if not 0 < max_body <= MAX_BODY:
            raise ValueError(f"max_body must be 1..{MAX_BODY}")
        super().__init__(max_body)

    def check_header(self, header: bytearray) -> int | None:
        return check_header(header, self._max_body)

    def check_body_start(self, first: int) -> None:
        if first != _BODY_START:
            raise AdapterError(f"frame body: starts with {first:#04x}, not '<'")
