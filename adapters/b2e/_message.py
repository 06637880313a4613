"""The b2e XML body: field schemas per transaction code, reading a parsed tree, rendering one.

Grammar: ``<B2E><head>leaf*</head><body>leaf* [<Entries><Entry>leaf*</Entry>*</Entries>]
</body></B2E>``, where a leaf is an element holding only text and is named by its tag.
Reading refuses attributes, stray text, unknown or repeated elements and leaves with
children; which names a message may carry is decided by its :class:`Shape`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from lxml import etree

from adapters._xml import check_text, encode_text, escape_text, needs_escape
from adapters.base import AdapterError

from . import _values as v

__all__ = [
    "ANSWERS",
    "ANSWER_HEAD",
    "ENTRY",
    "NOT_FOUND_BODY",
    "REQUESTS",
    "REQUEST_HEAD",
    "Doc",
    "Fields",
    "Shape",
    "check",
    "check_entries",
    "check_shape",
    "read_doc",
    "render",
]

_PROLOGUE = '<?xml version="1.0" encoding="GBK"?>\n<B2E><head>'

# Attributes anywhere, or non-blank text in an element that has child elements (mixed
# content), in one C-level evaluation instead of a Python walk over every element.
# Depth 4 holds only the <Entry> elements of body/Entries (and depth 5 their leaves; parse_xml
# refuses depth 6).  An element anywhere else below a leaf, or any attribute, is misplaced:
# one C-level evaluation decides, and only a misplaced document pays for finding which.
_MISPLACED = etree.XPath("boolean(//@* | /*/*/*/*[not(../self::Entries) or not(../../self::body)])")
_ATTRIBUTE_OWNERS = etree.XPath("//*[@*]")
_NESTED = etree.XPath("/*/*/*/*[not(../self::Entries) or not(../../self::body)]")
# Non-blank text outside the leaves: directly in B2E, head, body, Entries or an Entry.
_STRAY_TEXT = etree.XPath("boolean((/*/text() | /*/*/text() | /*/body/Entries/text() "
                          "| /*/body/Entries/*/text())[normalize-space()])")


@dataclass(frozen=True)
class Shape:
    """The leaves one element may hold: ``required`` must be present (possibly empty).

    ``entries`` says whether the body holds an ``<Entries>`` list (always present when so).
    """

    required: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()
    entries: bool = False
    allowed: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", self.required | self.optional)


def _shape(required: str = "", optional: str = "", *, entries: bool = False) -> Shape:
    return Shape(frozenset(required.split()), frozenset(optional.split()), entries)


REQUEST_HEAD = _shape("TransCode SerialNo TransDate TransTime SendNo RecvNo")
ANSWER_HEAD = _shape("TransCode SerialNo ReplyTo TransDate TransTime SendNo RecvNo RetCode RetMsg")

_BALANCE = _shape("AcctNo AcctName Currency Balance AvailBal Overdraft AcctStatus",
                  "AsOfDate AsOfTime")
_OUTCOME = "TxStatus HostSerialNo BankSerialNo ResultCode ResultMsg"

REQUESTS: dict[str, Shape] = {
    "SIGNON": _shape("NodeNo"),
    "LINETEST": _shape("NodeNo"),
    "PAYENT": _shape("TxDate CentreNo UnitNo PayAcctNo PayAcctName RecAcctNo RecAcctName "
                     "RecBankCode RecAcctType SameBank Currency Amount Purpose Memo CentreRef",
                     "Signature"),
    "QPAYENT": _shape("OrigSerialNo OrigTxDate"),
    "QACCBAL": _shape("AcctNo Currency"),
    "QPD": _shape("AcctNo Currency QueryDate"),
    "ACCTNTF": _shape(entries=True),
    "BALNTF": _BALANCE,
}
"""Request bodies by TransCode."""

ANSWERS: dict[str, Shape] = {
    "SIGNON": _shape("NodeNo"),
    "LINETEST": _shape("NodeNo"),
    "PAYENT": _shape(_OUTCOME),
    "QPAYENT": _shape("OrigSerialNo " + _OUTCOME),
    "QACCBAL": _BALANCE,
    "QPD": _shape("AcctNo Currency", "OpenBal CloseBal", entries=True),
    "ACK": _shape(),
}
"""Answer bodies by TransCode (RetCode 0000 and the already-done code 2001)."""

NOT_FOUND_BODY = _shape("OrigSerialNo")
"""The QPAYENT answer body under RetCode 2002 (no such transaction)."""

ENTRY = _shape("AcctNo HostSerialNo Amount ValueDate TxTime PeerAcctNo PeerAcctName PeerBankCode "
               "Summary Remark Reversal", "AfterBal")
"""One ``<Entry>`` of an ``<Entries>`` list."""


# -- the XML tree --------------------------------------------------------------------


class Doc(NamedTuple):
    """The leaves of one parsed message; ``entries`` is None when the body has no list."""

    code: str
    answer: bool
    head: dict[str, str]
    body: dict[str, str]
    entries: list[dict[str, str]] | None


def _duplicate(parent: etree._Element, where: str) -> AdapterError:
    seen: set[str] = set()
    for el in parent:
        if el.tag in seen:
            return AdapterError(f"{where}: {v.show(str(el.tag))} appears twice")
        seen.add(el.tag)
    return AdapterError(f"{where}: a leaf appears twice")  # unreachable: len() said so


def _leaves(parent: etree._Element, where: str) -> dict[str, str]:
    """Leaf name to text under ``parent`` (nesting was refused before)."""
    leaves = {el.tag: el.text or "" for el in parent}
    if len(leaves) != len(parent):
        raise _duplicate(parent, where)
    return leaves


def read_doc(root: etree._Element) -> Doc:
    """The leaves of a parsed b2e message; refuses anything outside the grammar."""
    if root.tag != "B2E":
        raise AdapterError(f"body: the root element must be <B2E>, not {v.show(str(root.tag))}")
    if len(root) != 2:
        raise AdapterError("B2E: needs exactly one <head> then one <body>")
    head_el, body_el = root[0], root[1]
    if head_el.tag != "head" or body_el.tag != "body":
        raise AdapterError("B2E: needs exactly one <head> then one <body>")
    if _MISPLACED(root):
        for el in _ATTRIBUTE_OWNERS(root):
            raise AdapterError(f"{v.show(str(el.tag))}: attributes are not part of b2e")
        for el in _NESTED(root):
            raise AdapterError(f"{v.show(str(el.getparent().tag))}: a leaf must hold text only, "
                               f"not {v.show(str(el.tag))}")
    head = _leaves(head_el, "head")
    code = head.get("TransCode")
    if code is None:
        raise AdapterError("head: TransCode missing")
    if v.TRANS_CODE.fullmatch(code) is None:
        raise AdapterError(f"TransCode: must be a transaction code, not {v.show(code)}")
    body = _leaves(body_el, "body")
    # Stray text is rare; counting characters spots any (pretty-printing whitespace
    # included) with one C call, and only then does the exact check run.
    chars = sum(map(len, head.values())) + sum(map(len, body.values()))
    entries: list[dict[str, str]] | None = None
    if "Entries" in body:
        chars -= len(body.pop("Entries"))
        entries = []
        for i, el in enumerate(body_el.find("Entries")):
            if el.tag != "Entry":
                raise AdapterError(f"Entries: unexpected element {v.show(str(el.tag))}")
            leaves = _leaves(el, f"Entries[{i}]")
            chars += sum(map(len, leaves.values()))
            entries.append(leaves)
    if chars != len(etree.tostring(root, method="text", encoding=str)) and _STRAY_TEXT(root):
        raise AdapterError("B2E: stray text outside the leaves")
    return Doc(code, "RetCode" in head, head, body, entries)


def check_shape(values: dict[str, str], shape: Shape, *where: object) -> None:
    """Refuse a leaf ``shape`` does not define, and a missing required one.

    ``where`` names the element in the refusal (joined with spaces only when refusing, so
    the common case formats nothing).
    """
    names = values.keys()
    if names == shape.required:  # the common case: one C-level comparison
        return
    unknown = names - shape.allowed
    if unknown:
        raise AdapterError(f"{' '.join(map(str, where))}: field {v.show(min(unknown))} "
                           f"is not defined here")
    missing = shape.required - names
    if missing:
        raise AdapterError(f"{' '.join(map(str, where))}: required field {min(missing)} missing")


def check_entries(doc: Doc, shape: Shape, *where: object) -> None:
    """Refuse an ``<Entries>`` list where ``shape`` has none, or its absence where it has one."""
    if shape.entries and doc.entries is None:
        raise AdapterError(f"{' '.join(map(str, where))}: required list Entries missing")
    if not shape.entries and doc.entries is not None:
        raise AdapterError(f"{' '.join(map(str, where))}: list Entries is not defined here")


# -- rendering -----------------------------------------------------------------------


Fields = list[tuple[str, str]]


def _xml(fields: Fields, escape: bool) -> str:
    # Comprehensions and one join: the cheapest way CPython has to build this text.
    if escape:
        return "".join([f"<{name}>{escape_text(value)}</{name}>" for name, value in fields])
    return "".join([f"<{name}>{value}</{name}>" for name, value in fields])


def _every(head: Fields, body: Fields, entries: list[Fields] | None) -> Fields:
    every = head + body
    if entries:
        for e in entries:
            every += e
    return every


def check(head: Fields, body: Fields, entries: list[Fields] | None) -> None:
    """Refuse what :func:`render` would refuse for these fields, without rendering them."""
    check_text(_every(head, body, entries), "gbk", "GBK")


def render(head: Fields, body: Fields, entries: list[Fields] | None) -> bytes:
    """The GBK body of one message; a character GBK lacks is refused naming its field."""
    every = _every(head, body, entries)
    # One scan of all values decides whether any needs escaping (rarely): far cheaper than
    # escaping each value on its own.
    escape = needs_escape("".join([value for _, value in every]))
    out = [_PROLOGUE, _xml(head, escape), "</head><body>", _xml(body, escape)]
    if entries is not None:
        out.append("<Entries>")
        out += ["<Entry>" + _xml(e, escape) + "</Entry>" for e in entries]
        out.append("</Entries>")
    out.append("</body></B2E>")
    return encode_text("".join(out), every, "gbk", "GBK")
