"""The bdc XML body: field schemas per transaction, reading a parsed tree, rendering one.

Grammar (docs/protocols/bdc.md): ``<message><head>field*</head><body>field* field-list*</body>
</message>``, every element named by a ``name`` attribute (``pin`` may accompany it).
Reading refuses stray text, unknown elements and attributes, and duplicate names.  Field
names a message's :class:`Shape` does not define are ignored (the deployed centre ignores
them too) and reported in :attr:`Doc.ignored` so that the link can count them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from adapters._xml import check_text, encode_text, escape_text, needs_escape
from adapters.base import AdapterError

from . import _files
from . import _values as v

__all__ = ["Shape", "Doc", "Fields", "CENTRE", "PUSHED", "RESPONSE", "REQUEST_HEADS",
           "REQUEST_BODIES", "RESPONSE_BODIES", "read_doc", "check_shape", "read_rows", "read_files", "check",
           "render", "Groups"]

_PROLOGUE = '<?xml version="1.0" encoding="GBK"?>\n<message><head>'


# -- schemas ------------------------------------------------------------------------

_CENTRE_HEAD = ("SendDate", "SendTime", "SendSeqNo", "TxUnitNo", "SendNode", "TxCode",
                "ReceiveNode", "CustNo", "OperNo")
_CENTRE_REQUIRED = frozenset(_CENTRE_HEAD) - {"CustNo"}
_PUSHED_HEAD = ("SendDate", "SendTime", "SendSeqNo", "SendNode", "TxCode", "ReceiveNode",
                "BDCDate", "BDCTime", "BDCSeqNo")
# The twelve fields of the deployed answer head (docs/protocols/bdc.md); only TxStatus and
# TxCode are needed to read one.  SendSeqNo is our echo extension for persistent links.
_RESPONSE_HEAD = ("TxStatus", "RtnCode", "RtnMessage", "ReceiveDate", "ReceiveTime",
                  "ReceiveSeqNo", "ReceiveNode", "TxCode", "BDCDate", "BDCTime", "BDCSeqNo",
                  "SendNode")


@dataclass(frozen=True)
class Shape:
    """The fields one message may carry: ``required`` must be present (possibly empty)."""

    required: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    allowed: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", self.required | self.optional)


def _shape(required: str = "", optional: str = "", groups: str = "") -> Shape:
    return Shape(frozenset(required.split()), frozenset(optional.split()), frozenset(groups.split()))


CENTRE = Shape(_CENTRE_REQUIRED, frozenset({"CustNo"}))
PUSHED = Shape(frozenset(_PUSHED_HEAD))
RESPONSE = Shape(frozenset({"TxStatus", "TxCode"}),
                 frozenset(_RESPONSE_HEAD) | {"SendSeqNo"})

REQUEST_HEADS: dict[str, tuple[Shape, ...]] = {
    "BDC001": (CENTRE,), "SYS600": (CENTRE, PUSHED), "BDC101": (CENTRE,), "BDC109": (CENTRE,),
    "BDC110": (CENTRE,), "BDC123": (CENTRE,), "SBDC100": (PUSHED,),
    "BDC002": (CENTRE,), "BDC102": (CENTRE,), "BDC103": (CENTRE,), "BDC104": (CENTRE,),
    "BDC107": (CENTRE,), "BDC108": (CENTRE,), "BDC112": (CENTRE,), "BDC113": (CENTRE,),
}
REQUEST_BODIES: dict[str, Shape] = {
    "BDC001": _shape(),
    "SYS600": _shape(),
    # Single payment: principal (CapAmt) and interest (IntAmt, here always empty) legs.
    "BDC101": _shape("SettleType BusType DeAcctNo DeAcctName DeAcctClass CapAmt CrAcctNo "
                     "CrAcctName CrAcctClass CrBankClass Amt",
                     "DeIntAcctNo DeIntAcctName DeIntAcctClass DeIntCrAcct IntAmt CrBankName "
                     "CrChgNo RefAcctNo RefSeqNo1 RefSeqNo2 Summary Remark Signature"),
    "BDC109": _shape("SettleType BusType DeAcctNo DeAcctName DeAcctClass CrAcctNo CrAcctName "
                     "CrAcctClass CrBankClass Amt",
                     "CrBankName CrChgNo RefAcctNo RefSeqNo Summary Remark Signature"),
    "BDC110": _shape("TxDate TxSeqNo"),
    "BDC123": _shape("CurrNo CurrIden AcctNo AcctType"),
    "SBDC100": _shape(groups="FILE_LIST"),
    "BDC002": _shape(),
    "BDC102": _shape("SettleType BusType CrAcctNo CrAcctName CrAcctClass DeAcctNo DeAcctName "
                     "DeAcctClass DeBankClass Amt",
                     "DeBankName DeChgNo ConAgrNo RefAcctNo RefSeqNo Summary Remark"),
    "BDC103": _shape("FileType BusType BatchCapAmt BatchTotalNum BatchTotalAmt",
                     "BatchPrjNo DeAcctNo DeAcctName DeAcctClass DeIntAcctNo DeIntAcctName "
                     "DeIntAcctClass DeIntCrAcct BatchIntAmt Remark", "FILE_LIST"),
    "BDC104": _shape("FileType BusType BatchTotalNum BatchTotalAmt",
                     "BatchPrjNo CrAcctNo CrAcctName CrAcctClass Remark", "FILE_LIST"),
    "BDC107": _shape("BatchNo"),
    "BDC108": _shape("TxCodeSub BatchNo"),
    "BDC112": _shape("BankNo AreaNo"),
    "BDC113": _shape("TxDateBegin TxDateEnd"),
}
RESPONSE_BODIES: dict[str, Shape] = {
    "BDC001": _shape(optional="HandKey"),
    "SYS600": _shape(),
    "BDC101": _shape(optional="HostStatus CapHostSeqNo IntHostSeqNo"),
    "BDC109": _shape(optional="HostStatus HostSeqNo"),
    # IntHostSeqN is the protocol's own misspelling; the correct spelling is tolerated too.
    # TxSeqNo is our echo extension; the deployed answer never carries it.
    "BDC110": _shape(optional="OldTxStatus HostSeqNo IntHostSeqN IntHostSeqNo PenHostSeqNo "
                     "FineHostSeqNo OldBatchNo TxSeqNo"),
    "BDC123": _shape("AcctNo AcctName AcctBal AcctRestBal AcctOverBal AcctStatus"),
    "BDC113": _shape(optional="AcctNo", groups="FILE_LIST"),
    "SBDC100": _shape(),
    "BDC002": _shape(),
    "BDC102": _shape(optional="HostStatus HostSeqNo"),
    "BDC103": _shape("BatchNo"),
    "BDC104": _shape("BatchNo"),
    "BDC107": _shape("BatchDate BatchNo BusType CurrNo CurrIden BatchSendBranchNo BkOperNo "
                     "BatchTotalNum BatchTotalAmt BatchTotalSuccNum BatchTotalSuccAmt BatchTxStatus",
                     "BatchPrjNo SendSeqNo Remark Summary"),
    "BDC108": _shape(groups="FILE_LIST"),
    "BDC112": _shape(groups="ChgNoList"),
}


# -- the XML tree --------------------------------------------------------------------


@dataclass
class Doc:
    tx_code: str
    head: dict[str, str]
    body: dict[str, str]
    groups: dict[str, etree._Element] = field(default_factory=dict)
    ignored: set[str] = field(default_factory=set)   # field names read and not defined


def _blank(s: str | None) -> bool:
    return not s or s.isspace()


def _name(el: etree._Element, where: str) -> str:
    """The ``name`` attribute of a field or field-list; only ``pin`` may accompany it."""
    name = None
    for key, value in el.items():
        if key == "name":
            name = value
        elif key == "pin":
            if value not in ("true", "false"):
                raise AdapterError(f"{where}: pin must be true or false")
        else:
            raise AdapterError(f"{where}: unexpected attribute {v.show(str(key))}")
    if name is None:
        raise AdapterError(f"{where}: <{el.tag}> without a name")
    return name


def _fields(parent: etree._Element, where: str, *, groups_allowed: bool
            ) -> tuple[dict[str, str], dict[str, etree._Element]]:
    """The plain fields (name to text) and field-lists (name to element) under ``parent``.

    Field names are not checked here: the message's shape refuses any it does not define.
    """
    text = parent.text
    if text and not text.isspace():
        raise AdapterError(f"{where}: stray text")
    fields: dict[str, str] = {}
    groups: dict[str, etree._Element] = {}
    for el in parent:
        tail = el.tail
        if tail and not tail.isspace():
            raise AdapterError(f"{where}: stray text")
        tag = el.tag
        items = el.items()
        if len(items) == 1 and items[0][0] == "name":  # the common case, inline for speed
            name = items[0][1]
        else:
            name = _name(el, where)
        if name in fields or name in groups:
            raise AdapterError(f"{where}: field {v.show(name)} appears twice")
        if tag == "field":
            if len(el):
                raise AdapterError(f"{where}: field {v.show(name)} has child elements")
            fields[name] = el.text or ""
        elif tag == "field-list" and groups_allowed:
            groups[name] = el
        else:
            raise AdapterError(f"{where}: unexpected element {v.show(str(tag))}")
    return fields, groups


def read_doc(root: etree._Element) -> Doc:
    """The fields of a parsed bdc message; refuses anything outside the grammar."""
    if root.tag != "message" or len(root.attrib):
        raise AdapterError("body: the root element must be a plain <message>")
    if not _blank(root.text):
        raise AdapterError("message: stray text")
    parts: dict[str, etree._Element] = {}
    for el in root:
        if el.tag not in ("head", "body") or el.tag in parts or len(el.attrib):
            raise AdapterError(f"message: unexpected element {v.show(str(el.tag))}")
        if not _blank(el.tail):
            raise AdapterError("message: stray text")
        parts[el.tag] = el
    if len(parts) != 2:
        raise AdapterError("message: needs one <head> and one <body>")
    head, _ = _fields(parts["head"], "head", groups_allowed=False)
    body, groups = _fields(parts["body"], "body", groups_allowed=True)
    tx_code = head.get("TxCode")
    if tx_code is None:
        raise AdapterError("head: TxCode missing")
    v.match("TxCode", tx_code, v.TX_CODE, "must be a transaction code")
    return Doc(tx_code, head, body, groups)


def check_shape(values: dict[str, str], groups: dict[str, etree._Element], shape: Shape,
                where: str, *, enforce_required: bool = True, ignored: set[str] | None = None) -> None:
    """Refuse a missing required field; names the shape does not define go into ``ignored``."""
    if ignored is not None:
        ignored.update(values.keys() - shape.allowed)
        ignored.update(groups.keys() - shape.groups)
    if enforce_required:
        missing = shape.required - values.keys()
        if missing:
            raise AdapterError(f"{where}: required field {min(missing)} missing")
        missing = shape.groups - groups.keys()
        if missing:
            raise AdapterError(f"{where}: required field-list {min(missing)} missing")


def read_rows(doc: Doc, group_name: str, where: str) -> list[dict[str, str]]:
    """The plain fields of every row of field-list ``group_name`` (rows are nested
    field-lists or field-xxxx, whatever their names), in order; [] when it is absent."""
    group = doc.groups.get(group_name)
    if group is None:
        return []
    if len(group.attrib) > 1 or not _blank(group.text):
        raise AdapterError(f"{where}: malformed {group_name}")
    rows = []
    for row in group:
        if row.tag not in ("field-list", "field-xxxx") or not _blank(row.tail):
            raise AdapterError(f"{where}: malformed {group_name} row")
        _name(row, where)
        rows.append(_fields(row, f"{where} {group_name}", groups_allowed=False)[0])
    return rows


def read_files(doc: Doc, where: str) -> list[tuple[str, str]]:
    """(NAME, file text) of every FILE_LIST row, in order.

    As the deployed centre reads them: a row's own name (``0``, ``Name``, ...) does not
    matter, fields other than NAME and DATA are ignored, and an empty or missing DATA is
    an empty file.
    """
    files = []
    for fields in read_rows(doc, "FILE_LIST", where):
        doc.ignored.update(f"FILE_LIST.{n}" for n in fields.keys() - {"NAME", "DATA"})
        name = v.text("FILE_LIST NAME", fields.get("NAME", ""), 128)
        data = fields.get("DATA", "")
        files.append((name, _files.unpack_data(data) if data.strip() else ""))
    return files


# -- rendering -----------------------------------------------------------------------


Fields = list[tuple[str, str]]


def _append_fields(out: list[str], fields: Fields, escape: bool) -> None:
    for name, value in fields:
        if not value:
            out.append(f'<field name="{name}"/>')
        elif escape:
            out.append(f'<field name="{name}">{escape_text(value)}</field>')
        else:
            out.append(f'<field name="{name}">{value}</field>')


Groups = tuple[tuple[str, tuple[Fields, ...]], ...]
"""Repeating groups other than FILE_LIST: (group name, its rows), rows named 0, 1, ..."""


def _every(head: Fields, body: Fields, file: tuple[str, str] | None,
           groups: Groups = ()) -> tuple[Fields, Fields]:
    file_fields: Fields = [("NAME", file[0]), ("DATA", file[1])] if file is not None else []
    row_fields = [f for _, rows in groups for row in rows for f in row]
    return head + body + file_fields + row_fields, file_fields


def check(head: Fields, body: Fields, file: tuple[str, str] | None, groups: Groups = ()) -> None:
    """Refuse what :func:`render` would refuse for these fields, without rendering them."""
    check_text(_every(head, body, file, groups)[0], "gbk", "GBK")


def render(head: Fields, body: Fields, file: tuple[str, str] | None, groups: Groups = ()) -> bytes:
    """The GBK body of a message; a character GBK lacks is refused naming its field."""
    fields, file_fields = _every(head, body, file, groups)
    # One scan of all values decides whether any needs escaping (rarely): far cheaper than
    # escaping each value on its own.
    escape = needs_escape("".join([value for _, value in fields]))
    out = [_PROLOGUE]
    _append_fields(out, head, escape)
    if not body and not file_fields and not groups:
        out.append("</head><body/></message>")  # an empty body as JAXB writes it
        return encode_text("".join(out), fields, "gbk", "GBK")
    out.append("</head><body>")
    _append_fields(out, body, escape)
    if file_fields:
        out.append('<field-list name="FILE_LIST"><field-list name="0">')
        _append_fields(out, file_fields, escape)
        out.append("</field-list></field-list>")
    for group_name, rows in groups:
        out.append(f'<field-list name="{group_name}">')
        for n, row in enumerate(rows):
            out.append(f'<field-list name="{n}">')
            _append_fields(out, row, escape)
            out.append("</field-list>")
        out.append("</field-list>")
    out.append("</body></message>")
    return encode_text("".join(out), fields, "gbk", "GBK")
