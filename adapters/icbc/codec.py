"""ICBC 银企互联 through NC: the form posted to NC, the ``<CMS>`` documents, NC's answers.

See :mod:`adapters.icbc` and docs/protocols/icbc.md for the protocol, its sources and what is
unknown.  Everything here is pure: bytes in, values out.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote_from_bytes

from lxml import etree

from adapters import _xml
from adapters.base import AdapterError

__all__ = [
    "MAX_DOCUMENT", "BANK_CODE", "Pub", "Rd", "Doc", "NcAnswer", "write_document", "read_document",
    "form_body", "read_form", "read_nc_answer", "write_nc_answer", "sign_request", "read_signature",
    "fen", "parse_fen", "show", "nc_query", "tran_stamp", "nc_answer_document", "carried",
]

MAX_DOCUMENT = 4 * 1024 * 1024
BANK_CODE = "102"
ENCODING = "GBK"
_FEN = re.compile(r"(-?)([0-9]{1,15})")
_ERROR = re.compile(rb"errorCode=([0-9A-Za-z]{1,16})\s*")
_NOT_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_PUB = ("TransCode", "CIS", "BankCode", "ID", "TranDate", "TranTime", "fSeqno")


def show(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def fen(field_name: str, value: object, *, signed: bool = False) -> str:
    """Integer fen as ICBC writes amounts: plain digits in fen."""
    if type(value) is not int or (value < 0 and not signed) or abs(value) > 99_999_999_999_99:
        raise AdapterError(f"{field_name}: amount out of range")
    return str(value)


def parse_fen(field_name: str, text: str, *, signed: bool = False) -> int:
    m = _FEN.fullmatch(text.strip())
    if m is None or (m.group(1) and not signed):
        raise AdapterError(f"{field_name}: not an amount in fen: {show(text)}")
    value = int(m.group(2))
    if value > 99_999_999_999_99:
        raise AdapterError(f"{field_name}: amount {show(text)} too large")
    return -value if m.group(1) else value


@dataclass(frozen=True)
class Pub:
    """The ``<pub>`` head: TransCode, CIS (group customer number), BankCode 102, ID (the
    certificate id at NC), TranDate/TranTime (the client's clock), fSeqno (the package id);
    answers add RetCode/RetMsg (and SerialNo for PAYENT)."""

    TransCode: str
    CIS: str
    ID: str
    TranDate: str
    TranTime: str
    fSeqno: str
    BankCode: str = BANK_CODE
    RetCode: str | None = None
    RetMsg: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rd:
    """One ``<rd>`` record: its leaves by name."""

    leaves: dict[str, str]

    def get(self, name: str) -> str:
        return self.leaves.get(name, "")


@dataclass(frozen=True)
class Doc:
    """One ``<CMS><eb>`` document: ``pub``, the body's own leaves (``in`` or ``out``) and its
    records."""

    pub: Pub
    answer: bool
    leaves: dict[str, str]
    records: tuple[Rd, ...] = ()

    def get(self, name: str) -> str:
        return self.leaves.get(name, "")


def _leaf(name: str, value: str) -> str:
    if _NOT_TEXT.search(value):
        raise AdapterError(f"{name}: holds a control character")
    return f"<{name}>{_xml.escape_text(value)}</{name}>" if value else f"<{name}></{name}>"


def write_document(doc: Doc) -> bytes:
    """The GBK document (requests: ``<in>``; answers, the simulator's side: ``<out>``)."""
    p = doc.pub
    pub = "".join(_leaf(n, getattr(p, n)) for n in _PUB)
    if doc.answer:
        pub += "".join(_leaf(k, v) for k, v in p.extra.items())
        pub += _leaf("RetCode", p.RetCode or "") + _leaf("RetMsg", p.RetMsg)
    body = "".join(_leaf(k, v) for k, v in doc.leaves.items())
    body += "".join("<rd>" + "".join(_leaf(k, v) for k, v in r.leaves.items()) + "</rd>"
                    for r in doc.records)
    part = "out" if doc.answer else "in"
    text = (f'<?xml version="1.0" encoding="{ENCODING}"?>\n<CMS><eb><pub>{pub}</pub>'
            f"<{part}>{body}</{part}></eb></CMS>")
    values = [(n, getattr(p, n)) for n in _PUB] + list(doc.leaves.items()) + \
        [(k, v) for r in doc.records for k, v in r.leaves.items()]
    data = _xml.encode_text(text, values, ENCODING, "ICBC CMS")
    if len(data) > MAX_DOCUMENT:
        raise AdapterError(f"document of {len(data)} bytes exceeds the frame limit {MAX_DOCUMENT}")
    return data


def carried(doc: Doc) -> bool:
    """True when :func:`write_document` writes ``doc`` (its size limit aside), found without
    writing it: markup and escapes are ASCII, so its text values alone decide, and one scan
    of them all joined finds what a leaf refuses (a control character, which covers every
    character XML cannot carry) and what GBK lacks.  False says only that writing it refuses
    it: :func:`write_document` then names the field."""
    p = doc.pub
    values = [getattr(p, n) for n in _PUB]
    if doc.answer:
        values += [*p.extra.values(), p.RetCode or "", p.RetMsg]
    values += doc.leaves.values()
    for r in doc.records:
        values += r.leaves.values()
    joined = "".join(values)
    return _NOT_TEXT.search(joined) is None and _xml.carries(joined, ENCODING)


def _kids(el: etree._Element) -> list[etree._Element]:
    return _xml.element_children(el, "CMS")


def _flat(el: etree._Element, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for child in _kids(el):
        if _kids(child):
            raise AdapterError(f"{where}/{show(child.tag)}: nested where a leaf is expected")
        if child.tag in out:
            raise AdapterError(f"{where}/{show(child.tag)}: appears twice")
        out[child.tag] = child.text or ""
    return out


def read_document(data: bytes) -> Doc:
    """One ``<CMS>`` document, request or answer; unknown leaves are kept and ignored."""
    try:
        root = _xml.parse_xml(data, max_bytes=MAX_DOCUMENT, max_depth=6,
                              encodings=("GBK", "GB18030", "GB2312"))
        if root.tag != "CMS" or root.attrib:
            raise AdapterError("root element must be CMS")
        [eb] = _kids(root) if len(_kids(root)) == 1 else [None]
        if eb is None or eb.tag != "eb":
            raise AdapterError("CMS must hold one eb")
        parts = _kids(eb)
        if len(parts) != 2 or parts[0].tag != "pub" or parts[1].tag not in ("in", "out"):
            raise AdapterError("eb must hold pub then in or out")
        pub_leaves = _flat(parts[0], "pub")
        for name in ("TransCode", "fSeqno"):
            if not pub_leaves.get(name):
                raise AdapterError(f"pub/{name}: missing")
        answer = parts[1].tag == "out"
        if answer and "RetCode" not in pub_leaves:
            raise AdapterError("pub/RetCode: missing in an answer")
        known = {n: pub_leaves.pop(n, "") for n in _PUB}
        ret = pub_leaves.pop("RetCode", None)
        msg = pub_leaves.pop("RetMsg", "")
        pub = Pub(known["TransCode"], known["CIS"], known["ID"], known["TranDate"],
                  known["TranTime"], known["fSeqno"], known["BankCode"], ret, msg, pub_leaves)
        leaves: dict[str, str] = {}
        records = []
        for child in _kids(parts[1]):
            if child.tag == "rd":
                records.append(Rd(_flat(child, "rd")))
            elif _kids(child):
                raise AdapterError(f"{show(child.tag)}: nested where a leaf is expected")
            elif child.tag in leaves:
                raise AdapterError(f"{show(child.tag)}: appears twice")
            else:
                leaves[child.tag] = child.text or ""
        return Doc(pub, answer, leaves, tuple(records))
    except (ValueError, LookupError, UnicodeError, RecursionError, etree.LxmlError) as e:
        raise AdapterError(f"ICBC CMS: {type(e).__name__}") from None


# -- the form NC takes and what it answers ---------------------------------------------------


def form_body(pub: Pub, req_data: str) -> bytes:
    """The form NC's trading servlet takes, url-encoded in GBK: TransCode, BankCode, GroupCIS,
    ID, PackageID and reqData (the signed package for PAYENT, the plain document otherwise)."""
    pairs = (("TransCode", pub.TransCode), ("BankCode", pub.BankCode), ("GroupCIS", pub.CIS),
             ("ID", pub.ID), ("PackageID", pub.fSeqno), ("reqData", req_data))
    try:
        return "&".join(f"{k}={quote_from_bytes(v.encode(ENCODING), safe='')}"
                        for k, v in pairs).encode("ascii")
    except UnicodeEncodeError:
        raise AdapterError("form: a value GBK cannot carry") from None


def read_form(body: bytes) -> dict[str, str]:
    """The fields of a posted form (the simulator's side); each once."""
    try:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True,
                          encoding=ENCODING, errors="strict", max_num_fields=16)
    except (ValueError, UnicodeError) as e:
        raise AdapterError(f"form: {type(e).__name__}") from None
    out: dict[str, str] = {}
    for k, v in pairs:
        if k in out:
            raise AdapterError(f"form: {show(k)} twice")
        out[k] = v
    return out


@dataclass(frozen=True)
class NcAnswer:
    """What NC's trading servlet answered: a document, or ``errorCode=NNNNN``."""

    document: Doc | None
    error_code: str = ""


def read_nc_answer(body: bytes) -> NcAnswer:
    """``reqData=<base64 of a GBK document>`` or ``errorCode=NNNNN``."""
    m = _ERROR.fullmatch(body)
    if m is not None:
        return NcAnswer(None, m.group(1).decode("ascii"))
    if not body.startswith(b"reqData="):
        raise AdapterError("NC answer: neither reqData= nor errorCode=")
    raw = body[len(b"reqData="):].replace(b"\r", b"").replace(b"\n", b"")
    try:
        xml = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise AdapterError("NC answer: reqData is not base64") from None
    return NcAnswer(read_document(xml))


def nc_answer_document(body: bytes) -> bytes | str:
    """The document bytes NC's answer carries (base64-decoded, as sent), or its error code."""
    m = _ERROR.fullmatch(body)
    if m is not None:
        return m.group(1).decode("ascii")
    if not body.startswith(b"reqData="):
        raise AdapterError("NC answer: neither reqData= nor errorCode=")
    raw = body[len(b"reqData="):].replace(b"\r", b"").replace(b"\n", b"")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise AdapterError("NC answer: reqData is not base64") from None


def write_nc_answer(answer: NcAnswer) -> bytes:
    """The simulator's side of :func:`read_nc_answer`."""
    if answer.document is None:
        return b"errorCode=" + answer.error_code.encode("ascii")
    return b"reqData=" + base64.b64encode(write_document(answer.document))


def sign_request(document: bytes) -> bytes:
    """What is posted to NC's signing port (``Content-Type: INFOSEC_SIGN/1.0``): the plain GBK
    document itself."""
    return document


def read_signature(body: bytes) -> str:
    """The signed package from NC's signing port answer: the text between ``<sign>`` and
    ``</sign>`` (line breaks removed), which becomes PAYENT's reqData."""
    try:
        text = body.decode(ENCODING).replace("\r", "").replace("\n", "")
    except UnicodeDecodeError:
        raise AdapterError("NC signing answer: not GBK") from None
    start, end = text.find("<sign>"), text.find("</sign>")
    if start < 0 or end <= start + len("<sign>"):
        raise AdapterError("NC signing answer: no <sign>...</sign>")
    return text[start + len("<sign>"):end]


def tran_stamp(moment: dt.datetime) -> tuple[str, str]:
    """TranDate ``yyyyMMdd`` and TranTime ``HHmmssSSS000`` of ``moment``."""
    return (moment.strftime("%Y%m%d"),
            moment.strftime("%H%M%S") + f"{moment.microsecond // 1000:03d}000")


def nc_query(form: bytes, now: dt.datetime) -> str:
    """The query NC's trading servlet takes beside the form: ``userID`` (the certificate id),
    ``PackageID`` (the package's fSeqno) and ``SendTime`` (``yyyyMMddHHmmss``)."""
    fields = read_form(form)
    return "&".join(f"{k}={quote_from_bytes(v.encode(ENCODING), safe='')}" for k, v in (
        ("userID", fields.get("ID", "")), ("PackageID", fields.get("PackageID", "")),
        ("SendTime", now.strftime("%Y%m%d%H%M%S"))))
