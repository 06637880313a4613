"""Finding an adapter's frame length field from its own frames, so the suite can wrap any body.

The hostile-input tests need to put arbitrary bytes (a DTD, a truncated body, a lying
length) inside an adapter's own framing.  Rather than asking every adapter for a helper,
:func:`infer_length_field` learns the framing from frames the adapter itself encoded: it
tries every plausible length field (offset, width, big- or little-endian binary or ASCII
decimal digits) in the first :data:`MAX_HEADER` bytes and keeps those whose value is the
number of bytes after a fixed header in every sample.  The widest such field wins: for a
binary field padded with zero bytes the extra bytes are zero in every frame anyway, and the
wider choice can declare larger lengths.  The result must then rebuild every sample
byte for byte (:meth:`LengthField.wrap` of its body), or inference fails.

A protocol whose length field this cannot find (a length that counts the header too, a
checksum in the header, delimiter framing) names its :class:`LengthField` in its profile
(tests/adapters/profiles.py, ``framing=``), or extends this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MAX_HEADER", "Delimited", "FramingUnknown", "LengthField", "infer_length_field"]

MAX_HEADER = 64
"""The longest frame header the inference considers, in bytes."""

_FORMATS = ("be", "le", "dec")
_BINARY_WIDTHS = (1, 2, 3, 4, 8)
_DECIMAL_WIDTHS = tuple(range(1, 13))


class FramingUnknown(Exception):
    """No length field explains the sample frames."""


@dataclass(frozen=True)
class LengthField:
    """A frame is ``header`` (``header_len`` bytes, the length field inside it) then the body.

    ``template`` is a real header: its bytes outside the length field are reused as they are
    (a sender node, a flag).  ``fmt`` is ``"be"``/``"le"`` (unsigned binary) or ``"dec"``
    (zero-padded ASCII digits).
    """

    template: bytes
    offset: int
    width: int
    fmt: str

    def __post_init__(self) -> None:
        if self.fmt not in _FORMATS:
            raise ValueError(f"fmt must be one of {_FORMATS}")
        if self.offset < 0 or self.width < 1 or self.offset + self.width > len(self.template):
            raise ValueError("the length field must lie inside the template header")

    @property
    def header_len(self) -> int:
        return len(self.template)

    @property
    def max_declarable(self) -> int:
        """The largest length the field can state."""
        if self.fmt == "dec":
            return 10 ** self.width - 1
        return 256 ** self.width - 1

    def encode_length(self, n: int) -> bytes:
        if not 0 <= n <= self.max_declarable:
            raise ValueError(f"{n} does not fit the {self.width}-byte {self.fmt} length field")
        if self.fmt == "dec":
            return str(n).zfill(self.width).encode("ascii")
        return n.to_bytes(self.width, "big" if self.fmt == "be" else "little")

    def declared(self, frame: bytes) -> int | None:
        """The length ``frame``'s header states, or None if the field is not well formed."""
        field = frame[self.offset:self.offset + self.width]
        if len(field) != self.width:
            return None
        if self.fmt == "dec":
            return int(field) if field.isdigit() else None
        return int.from_bytes(field, "big" if self.fmt == "be" else "little")

    def wrap(self, body: bytes, declared: int | None = None) -> bytes:
        """``body`` behind the template header, stating ``declared`` (default: the truth)."""
        n = len(body) if declared is None else declared
        t = self.template
        return t[:self.offset] + self.encode_length(n) + t[self.offset + self.width:] + body

    def body(self, frame: bytes) -> bytes:
        """The bytes after the header."""
        return frame[self.header_len:]


@dataclass(frozen=True)
class Delimited:
    """No length header: each frame is one whole document, ended by its own closing markup
    (a protocol carried one document per HTTP body, whose framer cuts captures at the root's
    end tag).  A header cannot lie, so the suite's length-lie tests do not apply; an
    unterminated stream must still be refused once it passes ``max_frame``."""

    template: bytes = b""
    offset: int = 0
    width: int = 0
    fmt: str = "none"

    header_len = 0
    delimited = True

    @property
    def max_declarable(self) -> int:
        return 0

    def declared(self, frame: bytes) -> int | None:
        return len(frame)

    def wrap(self, body: bytes, declared: int | None = None) -> bytes:
        if declared not in (None, len(body)):
            raise ValueError("a delimited frame has no length to state")
        return body

    def body(self, frame: bytes) -> bytes:
        return frame


def _candidates(frame: bytes) -> list[tuple[int, int, str, int]]:
    """(offset, width, fmt, header_len) of every field in ``frame`` that could be its length."""
    out = []
    limit = min(MAX_HEADER, len(frame))
    for fmt in _FORMATS:
        for width in (_DECIMAL_WIDTHS if fmt == "dec" else _BINARY_WIDTHS):
            for offset in range(limit - width + 1):
                probe = LengthField(frame[:offset + width], offset, width, fmt)
                value = probe.declared(frame)
                if value is None:
                    continue
                header_len = len(frame) - value
                if offset + width <= header_len <= MAX_HEADER:
                    out.append((offset, width, fmt, header_len))
    return out


def infer_length_field(samples: Sequence[bytes]) -> LengthField:
    """The length field that explains every sample (frames of different body lengths)."""
    if len({len(s) for s in samples}) < 2:
        raise FramingUnknown("need sample frames of at least two different lengths")
    common = set(_candidates(samples[0]))
    for frame in samples[1:]:
        common &= set(_candidates(frame))
    # Widest field first, then the earliest: see the module docstring.
    for offset, width, fmt, header_len in sorted(common, key=lambda c: (-c[1], c[0], c[2])):
        field = LengthField(samples[0][:header_len], offset, width, fmt)
        if all(field.wrap(field.body(s)) == s for s in samples):
            return field
    raise FramingUnknown(f"no length field in the first {MAX_HEADER} bytes explains the sample "
                         "frames; give the adapter's profile a framing=LengthField(...)")
