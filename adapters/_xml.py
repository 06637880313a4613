"""Hardened XML for the bank adapters: a refusing parser and fast escaping.

Bank bodies are hostile until proven otherwise (promise G7 in docs/architecture.md; SECURITY.md).  :func:`parse_xml`
promises that a document it returns

* was at most ``max_bytes`` long (checked before any decoding or parsing);
* was valid text in its declared encoding, and that encoding is one the caller accepts
  (decoded by Python's strict codec, so what the adapter sees is exactly what the bytes say;
  libxml2 only ever parses the re-encoded UTF-8);
* had no DOCTYPE, DTD, entity or other markup declaration, no processing instruction other
  than the XML declaration, no entity references other than the five predefined ones and
  numeric character references, and caused no file or network access;
* nests at most ``max_depth`` elements deep.  libxml2 (without ``huge_tree``) stops at 256
  levels by itself, so 10,000-deep input fails fast and without Python recursion.

Anything else raises :class:`~adapters.base.AdapterError` with a one-line reason.  The
textual pre-scan is deliberately conservative: a ``<!DOCTYPE`` or ``<?`` inside a CDATA
section or comment is refused too, which no bank protocol we speak needs.

Encoders build XML by string concatenation for speed; :func:`escape_text` and
:func:`escape_attr` make any value safe for element text and attribute values, and refuse
characters XML 1.0 cannot carry at all.
"""

from __future__ import annotations

import codecs
import functools
import re
import threading
from typing import Iterable, Sequence

from lxml import etree

from adapters.base import AdapterError

__all__ = ["parse_xml", "element_children", "escape_text", "escape_attr", "needs_escape", "check_text",
           "encode_text", "carries", "DEFAULT_MAX_DEPTH"]

DEFAULT_MAX_DEPTH = 32

_WS = rb"[ \t\r\n]"
_DECLARATION = re.compile(
    rb"<\?xml" + _WS + rb"+version" + _WS + rb"*=" + _WS + rb"*([\"'])1\.0\1"
    rb"(?:" + _WS + rb"+encoding" + _WS + rb"*=" + _WS + rb"*([\"'])([A-Za-z][A-Za-z0-9._-]{0,39})\2)?"
    rb"(?:" + _WS + rb"+standalone" + _WS + rb"*=" + _WS + rb"*([\"'])(?:yes|no)\4)?"
    + _WS + rb"*\?>"
)
# After the XML declaration, "<?" opens a processing instruction, and "<!" anything but a
# comment or a CDATA section is a markup declaration (DOCTYPE, ENTITY, ELEMENT, ATTLIST,
# NOTATION) or a conditional section.  One scan finds either.
_FORBIDDEN_MARKUP = re.compile(r"<(?:\?|!(?!--|\[CDATA\[))")
# Characters XML 1.0 cannot carry, even as character references.
_NOT_XML_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Anything escape_text would change or refuse.
_NEEDS_ESCAPE = re.compile("[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_UTF8_BOM = b"\xef\xbb\xbf"
_OTHER_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")

_local = threading.local()
_depth_checks: dict[int, etree.XPath] = {}


def _parser() -> etree.XMLParser:
    # lxml parsers must not be shared between threads; one per thread, reused for speed.
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            encoding="utf-8",          # we always hand libxml2 UTF-8 (see module docstring)
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            attribute_defaults=False,
            huge_tree=False,           # keeps libxml2's own depth and size limits
            remove_comments=True,
            remove_pis=False,          # keep them so the post-parse check can see any that slipped by
            collect_ids=False,
        )
        _local.parser = parser
    return parser


def _depth_check(max_depth: int) -> etree.XPath:
    # "/*/*/.../*" with max_depth+1 steps exists iff some element is nested too deep; one
    # C-level XPath evaluation is much cheaper than walking the tree in Python.
    check = _depth_checks.get(max_depth)
    if check is None:
        check = _depth_checks[max_depth] = etree.XPath("boolean(" + "/*" * (max_depth + 1) + ")")
    return check


@functools.lru_cache(maxsize=64)
def _canonical(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise AdapterError(f"unknown XML encoding {encoding[:40]!r}") from None


@functools.lru_cache(maxsize=16)
def _accepted(encodings: tuple[str, ...]) -> frozenset[str]:
    return frozenset(_canonical(e) for e in encodings)


def parse_xml(data: bytes, *, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH,
              encodings: Iterable[str] = ("utf-8",)) -> etree._Element:
    """Parse one untrusted XML document and return its root element.

    ``encodings`` lists the declared encodings the caller accepts (any spelling Python's
    codec registry knows, e.g. ``("GBK",)``); a document without a declaration is UTF-8, as
    XML says.  Raises :class:`AdapterError` for anything outside the promises in the module
    docstring; never another exception for bad input.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AdapterError("XML input must be bytes")
    size = len(data)
    if size > max_bytes:
        raise AdapterError(f"XML document of {size} bytes exceeds the limit of {max_bytes}")
    raw = bytes(data)
    bom_utf8 = raw.startswith(_UTF8_BOM)
    if bom_utf8:
        raw = raw[len(_UTF8_BOM):]
    elif raw.startswith(_OTHER_BOMS):
        raise AdapterError("UTF-16/32 XML is not accepted")
    encoding = "utf-8"
    if raw.startswith(b"<?xml") and raw[5:6] in (b" ", b"\t", b"\r", b"\n"):
        m = _DECLARATION.match(raw)
        if m is None:
            raise AdapterError("malformed XML declaration (only version 1.0 is accepted)")
        if m.group(3) is not None:
            encoding = m.group(3).decode("ascii")
        raw = raw[m.end():]
    canonical = _canonical(encoding)
    if canonical not in _accepted(tuple(encodings)):
        raise AdapterError(f"XML encoding {encoding!r} is not accepted here")
    if bom_utf8 and canonical != "utf-8":
        raise AdapterError(f"UTF-8 byte order mark on a document declared {encoding!r}")
    try:
        text = raw.decode(canonical)
    except UnicodeDecodeError as e:
        raise AdapterError(f"bytes invalid in the declared encoding {encoding} "
                           f"at offset {e.start + size - len(raw)}") from None
    forbidden = _FORBIDDEN_MARKUP.search(text)
    if forbidden is not None:
        if forbidden.group() == "<?":
            raise AdapterError("XML processing instructions are not accepted")
        raise AdapterError("XML with a DOCTYPE, DTD or entity declaration is not accepted")
    try:
        root = etree.fromstring(text.encode("utf-8"), _parser())
    except etree.XMLSyntaxError as e:
        reason = (str(e).splitlines() or ["syntax error"])[0][:160]
        raise AdapterError(f"malformed XML: {reason}") from None
    except (etree.LxmlError, ValueError) as e:  # defensive: any other parser refusal
        raise AdapterError(f"malformed XML: {type(e).__name__}") from None
    if root is None:
        raise AdapterError("malformed XML: no root element")
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise AdapterError("XML with a DOCTYPE, DTD or entity declaration is not accepted")
    for node in root.iter(etree.Entity, etree.ProcessingInstruction):
        raise AdapterError("XML entity references and processing instructions are not accepted")
    sibling = root.getprevious()
    while sibling is not None:  # top-level PIs live beside the root, not under it
        if not isinstance(sibling, etree._Comment):
            raise AdapterError("XML processing instructions are not accepted")
        sibling = sibling.getprevious()
    if _depth_check(max_depth)(root):
        raise AdapterError(f"XML nested deeper than {max_depth} elements")
    return root


def element_children(el: etree._Element, label: str) -> list[etree._Element]:
    """``el``'s child elements, comments skipped; any other node, or a namespaced element, is refused
    (``label`` names the protocol, which uses no namespaces)."""
    out = []
    for child in el:
        if isinstance(child, etree._Comment):
            continue
        if not isinstance(child.tag, str) or child.tag.startswith("{"):
            raise AdapterError(f"unexpected XML node ({label} uses no namespaces)")
        out.append(child)
    return out


def needs_escape(value: str) -> bool:
    """False when ``value`` can stand verbatim as element text (:func:`escape_text` would
    return it unchanged).  One scan of many values joined lets an encoder skip escaping
    them one by one in the common case."""
    return _NEEDS_ESCAPE.search(value) is not None


def escape_text(value: str) -> str:
    """``value`` made safe as element text; a carriage return survives as ``&#13;``.

    Raises :class:`AdapterError` for characters XML 1.0 cannot carry (most C0 controls,
    lone surrogates, U+FFFE, U+FFFF).
    """
    if _NOT_XML_CHAR.search(value) is not None:
        raise AdapterError("a value contains a character XML cannot carry")
    # Checking before replacing keeps the common case (nothing to escape) to a few C scans.
    if "&" in value:
        value = value.replace("&", "&amp;")
    if "<" in value:
        value = value.replace("<", "&lt;")
    if ">" in value:
        value = value.replace(">", "&gt;")
    if "\r" in value:
        value = value.replace("\r", "&#13;")
    return value


def escape_attr(value: str) -> str:
    """``value`` made safe inside a double-quoted attribute; whitespace survives normalisation."""
    value = escape_text(value)
    if '"' in value:
        value = value.replace('"', "&quot;")
    if "\n" in value:
        value = value.replace("\n", "&#10;")
    if "\t" in value:
        value = value.replace("\t", "&#9;")
    return value


def encode_text(document: str, fields: Sequence[tuple[str, str]], encoding: str, label: str) -> bytes:
    """``document`` in ``encoding``; a character it lacks is refused naming the field of
    ``fields`` (the values the document was built from) that holds it."""
    try:
        return document.encode(encoding)
    except UnicodeEncodeError:
        raise _uncarried(fields, encoding, label) from None


def check_text(fields: Sequence[tuple[str, str]], encoding: str, label: str) -> None:
    """Refuse what writing ``fields`` as element text in ``encoding`` would refuse, without
    writing them: a character XML 1.0 cannot carry (as :func:`escape_text` does) or one the
    encoding lacks (as :func:`encode_text` does, naming the field).  Markup is ASCII, so the
    values alone decide."""
    joined = "".join([value for _, value in fields])
    if needs_escape(joined):
        escape_text(joined)
    encode_text(joined, fields, encoding, label)


def carries(text: str, encoding: str) -> bool:
    """True when ``text`` (the values of a document, joined) can be written as element text in
    ``encoding``: no character XML 1.0 cannot carry, none the encoding lacks.  Markup and
    escapes are ASCII, so an encoder's check can ask this of its values alone, in one scan
    and one encoding, and write the document (to refuse it naming the field) only when not."""
    if _NOT_XML_CHAR.search(text) is not None:
        return False
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def _uncarried(fields: Sequence[tuple[str, str]], encoding: str, label: str) -> AdapterError:
    for name, value in fields:  # find the field to name; the slow path only
        try:
            value.encode(encoding)
        except UnicodeEncodeError as e:
            return AdapterError(f"{name}: character {value[e.start]!r} cannot be carried in {label}")
    return AdapterError(f"a character cannot be carried in {label}")
