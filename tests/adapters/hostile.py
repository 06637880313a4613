"""Hostile input for the conformance suite: XML attacks built from an adapter's own valid
bodies, bytes invalid in its wire encoding, and the checked way to feed and decode anything.

Every attack body is derived from a body the adapter itself encoded (its XML declaration,
root element and framing kept), so the attack reaches the adapter's XML parser rather than
being stopped by a framing or root-element check.  For an adapter whose body is not XML the
same bytes are simply garbage, which it must refuse just the same.
"""

from __future__ import annotations

import re
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import pytest
from lxml import etree

from adapters import base
from adapters.base import AdapterError

__all__ = [
    "MEMORY_LIMIT",
    "TIME_LIMIT",
    "TRICKY_VALUES",
    "Bounded",
    "XmlParts",
    "checked_decode",
    "checked_feed",
    "invalid_sequences",
    "mutate_xml",
    "split_xml",
    "xml_attacks",
]

TIME_LIMIT = 2.0
"""Seconds any one feed or decode of hostile input may take (generous: the machine is shared)."""
MEMORY_LIMIT = 256 * 1024 * 1024
"""Bytes by which one hostile decode may raise the process's peak resident size."""

MESSAGE_KINDS = tuple(dict.fromkeys(base.OUTBOUND + base.INBOUND))

_DECLARATION = re.compile(rb"\A(\xef\xbb\xbf)?(<\?xml[^>]*\?>)?[ \t\r\n]*")
_ROOT_START = re.compile(rb"<([A-Za-z_][-A-Za-z0-9_.:]*)[^>]*>")
_ENCODING = re.compile(rb"""encoding[ \t\r\n]*=[ \t\r\n]*["']([A-Za-z][A-Za-z0-9._-]*)["']""")


@dataclass(frozen=True)
class XmlParts:
    """A body cut where attacks are inserted: ``prolog`` (BOM and XML declaration),
    ``start`` (the root's start tag, whose name is ``root``) and ``rest``."""

    prolog: bytes
    start: bytes
    root: bytes
    rest: bytes

    @property
    def declared_encoding(self) -> str | None:
        m = _ENCODING.search(self.prolog)
        return m.group(1).decode("ascii") if m else None


def split_xml(body: bytes) -> XmlParts | None:
    """``body`` cut into :class:`XmlParts`, or None if it does not start like XML."""
    head = _DECLARATION.match(body)
    assert head is not None  # the pattern matches the empty prefix
    start = _ROOT_START.match(body, head.end())
    if start is None:
        return None
    return XmlParts(body[:head.end()], start.group(0), start.group(1), body[start.end():])


def xml_attacks(parts: XmlParts, *, secret_path: str, port: int) -> dict[str, bytes]:
    """Attack bodies by name, each a variation of the valid body ``parts``.

    ``secret_path`` is a local file and ``port`` a listening loopback port that no attack may
    cause to be read or contacted.
    """
    r = parts.root.decode("ascii")
    p, s, rest = parts.prolog, parts.start, parts.rest

    def dtd(subset: str, inside: str = "") -> bytes:
        return p + f"<!DOCTYPE {r} {subset}>".encode() + s + inside.encode() + rest

    laughs = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    deep = 10_000
    return {
        "internal_dtd": dtd(f"[<!ELEMENT {r} ANY>]"),
        "external_dtd": dtd(f'SYSTEM "http://127.0.0.1:{port}/evil.dtd"'),
        "external_file_entity": dtd(f'[<!ENTITY xxe SYSTEM "file://{secret_path}">]', "&xxe;"),
        "external_network_entity": dtd(f'[<!ENTITY xxe SYSTEM "http://127.0.0.1:{port}/x">]', "&xxe;"),
        "parameter_entity": dtd(f'[<!ENTITY % pe SYSTEM "http://127.0.0.1:{port}/pe"> %pe;]'),
        "billion_laughs": dtd(f"[{laughs}]", "&lol9;"),
        "quadratic_blowup": dtd(f'[<!ENTITY a "{"A" * 50_000}">]', "&a;" * 20_000),
        "undeclared_entity": p + s + b"&undeclared;" + rest,
        "xinclude": p + s + (f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" '
                             f'href="file://{secret_path}" parse="text"/>').encode() + rest,
        "processing_instruction": p + b'<?xml-stylesheet href="http://127.0.0.1/x.xsl"?>' + s + rest,
        "deep_nesting_inside_root": p + s + b"<a>" * deep + b"</a>" * deep + rest,
        "deep_nesting_alone": p + f"<{r}>".encode() + b"<a>" * deep + b"</a>" * deep
        + f"</{r}>".encode(),
        "utf7_declaration": (b'<?xml version="1.0" encoding="UTF-7"?>'
                             + f"+ADw-!DOCTYPE {r} +AFs-+ADw-!ENTITY x SYSTEM +ACI-file://{secret_path}"
                               f"+ACI-+AD4-+AF0-+AD4-".encode() + s + rest),
        "utf16_body": (p.decode("latin-1") + s.decode("latin-1")).encode("utf-16") + rest,
    }


def invalid_sequences(encoding: str) -> list[bytes]:
    """Byte sequences that are not text in ``encoding`` (Python's strict codec), even between
    ASCII letters."""
    candidates = [b"\x80", b"\xff", b"\xfe\xff", b"\x81\x7f", b"\xc3\x28", b"\xc0\xaf",
                  b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82"]
    out = []
    for c in candidates:
        try:
            (b"QA" + c + b"AQ").decode(encoding)
        except UnicodeDecodeError:
            out.append(c)
    return out


class Bounded:
    """A context that fails the test if its body ran longer than :data:`TIME_LIMIT` seconds or
    raised the process's peak resident size by more than :data:`MEMORY_LIMIT` bytes."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> Self:
        self._rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self._t0
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self._rss
        if exc[0] is None:
            assert elapsed < TIME_LIMIT, f"{self.what}: took {elapsed:.2f} s"
            assert grown < MEMORY_LIMIT, f"{self.what}: peak memory grew by {grown >> 20} MiB"


def _unexpected(adapter: Any, what: str, data: bytes, e: BaseException) -> None:
    pytest.fail(f"adapter {adapter.name}: {what} raised {type(e).__name__}: {e} "
                f"(not AdapterError) for input {data[:120]!r}{'...' if len(data) > 120 else ''} "
                f"({len(data)} bytes)", pytrace=False)


def checked_decode(adapter: Any, frame: bytes) -> base.Message | None:
    """``adapter.decode(frame)`` within bounds: the message, or None when refused with
    :class:`AdapterError`.  Any other exception fails the test, naming the adapter and input.
    ``decode_all`` is exercised too when the adapter has one; it must agree."""
    message: base.Message | None = None
    with Bounded(f"{adapter.name} decode of {len(frame)} bytes"):
        try:
            message = adapter.decode(frame)
        except AdapterError:
            pass
        except Exception as e:  # noqa: BLE001 - the point is to catch what must not escape
            _unexpected(adapter, "decode", frame, e)
        many: Callable[[bytes], Any] | None = getattr(adapter, "decode_all", None)
        if many is not None:
            messages: list[base.Message] | None = None
            try:
                messages = list(many(frame))
            except AdapterError:
                pass
            except Exception as e:  # noqa: BLE001
                _unexpected(adapter, "decode_all", frame, e)
            if message is not None:
                assert messages == [message], f"{adapter.name}: decode_all disagrees with decode"
    if message is not None:
        assert isinstance(message, MESSAGE_KINDS), f"{adapter.name}: decode returned {message!r}"
    return message


def checked_feed(framer: Any, adapter: Any, chunks: list[bytes]) -> tuple[list[bytes], bool]:
    """Feed ``chunks`` to ``framer`` within bounds: (frames, refused).  Stops at the first
    :class:`AdapterError`; any other exception fails the test."""
    frames: list[bytes] = []
    with Bounded(f"{adapter.name} framer fed {sum(map(len, chunks))} bytes"):
        for chunk in chunks:
            try:
                got = framer.feed(chunk)
            except AdapterError:
                return frames, True
            except Exception as e:  # noqa: BLE001
                _unexpected(adapter, "framer.feed", chunk, e)
            assert isinstance(got, list) and all(isinstance(f, bytes) for f in got), \
                f"{adapter.name}: feed must return a list of bytes, got {got!r}"
            frames += got
    return frames, False


TRICKY_VALUES: tuple[str, ...] = (
    "", " ", "0", "-0", "-0.00", "+1.00", "1e3", "NaN", "Infinity", "0x10", "1_000", "0.001",
    "٣", "１２３", "9" * 40, "-" + "9" * 40, "99999999999999999999.99", "-99999999999999.99",
    "00000000", "20250230", "99999999", "000000", "240000", "235960", "2025-02-30", "2025-13-01",
    "0000-01-01", "24:00:00", "2025-03-04T24:00:00", "2025-03-04T10:00:00+25:00", "true",
    "false", "TRUE", "1", "2", "3", "9", "S", "F", "P", "Y", "N", "ACSC", "RJCT", "NOTFOUND",
    "CNY", "USD", "JPY", "null", "None", "A" * 5000, "张" * 5000, "&", "<", "]]>", "\t", "\n",
)
"""Values that break naive parsers of numbers, dates, flags and codes."""


def mutate_xml(body: bytes, encoding: str, ops: list[tuple[str, float, str]]) -> bytes | None:
    """``body`` (one of the adapter's own valid XML bodies) with its tree edited by ``ops`` and
    serialised again under its own prolog and encoding; None when an edit's value cannot be
    written in that encoding.  An op is (``text`` | ``drop`` | ``dup`` | ``rename`` | ``attr``,
    which element as a fraction of the document order, a value)."""
    parts = split_xml(body)
    if parts is None:
        return None
    root = etree.fromstring(body[len(parts.prolog):].decode(encoding))
    try:
        for op, where, value in ops:
            elements = list(root.iter())
            el = elements[int(where * len(elements))]
            parent = el.getparent()
            if op == "text" and len(el) == 0:
                el.text = value
            elif op == "drop" and parent is not None:
                parent.remove(el)
            elif op == "dup" and parent is not None:
                parent.insert(parent.index(el), etree.fromstring(etree.tostring(el)))
            elif op == "rename":
                name = "".join(c for c in value if c.isascii() and c.isalnum()) or "X"
                prefix = el.tag[:el.tag.index("}") + 1] if el.tag.startswith("{") else ""
                el.tag = prefix + ("X" + name if name[0].isdigit() else name)
            elif op == "attr":
                el.set("a", value)
        return parts.prolog + etree.tostring(root, encoding=str).encode(encoding)
    except (UnicodeEncodeError, ValueError):  # lxml refuses what XML cannot hold; so do we
        return None
