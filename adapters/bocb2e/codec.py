"""The bocb2e documents: requests written, answers read (see :mod:`adapters.bocb2e`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from lxml import etree

from adapters import _xml
from adapters.base import AdapterError
from adapters.bocb2e import _values as v

__all__ = [
    "MAX_DOCUMENT", "OK", "MORE", "PROCESSING", "NOT_SIGNED_ON", "Terminal", "Head", "Record",
    "Answer", "write_request", "sign_on_body", "sign_off_body", "transfer_body", "transfer_values",
    "transfer_xml", "carried", "status_body",
    "balance_body", "statement_body", "read_answer", "write_answer", "record_xml", "read_request",
    "read_document", "answer_body", "Request",
]

MAX_DOCUMENT = 4 * 1024 * 1024
"""The largest document written or read, in bytes (a statement page of a few hundred rows is
far below it)."""

OK = "B001"                 # processed
MORE = "B002"               # processed, more records to come (a statement page that is not the last)
PROCESSING = frozenset({"B054", "B059", "B266"})   # accepted, outcome not yet known
NOT_SIGNED_ON = frozenset({"B107", "1033"})        # the token is missing or expired: sign on again

WRITE_ENCODING = "GB18030"
READ_ENCODINGS = ("GB18030", "GBK", "GB2312", "UTF-8")
_ROOT_ATTRS = (("version", "120"), ("security", "true"), ("lang", "zh_CN"))
_HEAD = ("termid", "trnid", "custid", "cusopr", "trncod", "token")


@dataclass(frozen=True)
class Terminal:
    """Who the gateway is at the bank's front-end: its terminal id, the customer number and
    the operator (all issued by the bank; the operator's password is not kept here)."""

    termid: str
    custid: str
    cusopr: str


@dataclass(frozen=True)
class Head:
    termid: str
    trnid: str
    custid: str
    cusopr: str
    trncod: str
    token: str = ""


@dataclass(frozen=True)
class Record:
    """One record of an answer: its own status and its leaves by path (``fractn/actacn``)."""

    code: str
    text: str
    leaves: dict[str, str] = field(default_factory=dict)

    def get(self, path: str) -> str:
        return self.leaves.get(path, "")


@dataclass(frozen=True)
class Answer:
    """One answer document.  ``trncod`` is read from the ``trn-<code>-rs`` element
    (``b2eerror`` for an envelope refusal)."""

    head: Head
    trncod: str
    code: str
    text: str
    records: tuple[Record, ...] = ()
    totalnum: int | None = None
    notenum: int | None = None


# -- writing ---------------------------------------------------------------------------------


def _leaf(name: str, value: str) -> str:
    return f"<{name}>{_xml.escape_text(value)}</{name}>" if value else f"<{name}/>"


def _group(name: str, *parts: str) -> str:
    return f"<{name}>{''.join(parts)}</{name}>"


def write_request(head: Head, body: str, values: list[tuple[str, str]]) -> bytes:
    """A whole request document: declaration, root, ``head``, then ``trans`` holding ``body``.

    ``values`` names the free-text values in ``body`` so that a character the wire
    encoding lacks is refused naming its field."""
    return _document(head, body, values, with_token=head.trncod != "b2e0001")


def write_answer(head: Head, body: str, values: list[tuple[str, str]]) -> bytes:
    """An answer document (the front-end's side: the simulator writes these)."""
    return _document(head, body, values, with_token=True)


def _document(head: Head, body: str, values: list[tuple[str, str]], *, with_token: bool) -> bytes:
    names = _HEAD if with_token else _HEAD[:-1]
    head_xml = "".join(_leaf(n, getattr(head, n)) for n in names)
    attrs = " ".join(f'{k}="{val}"' for k, val in _ROOT_ATTRS)
    doc = (f'<?xml version="1.0" encoding="{WRITE_ENCODING}"?>\n<bocb2e {attrs}>'
           f"<head>{head_xml}</head><trans>{body}</trans></bocb2e>")
    data = _xml.encode_text(doc, values + [(f"head/{n}", getattr(head, n)) for n in names],
                            WRITE_ENCODING, "bocb2e")
    if len(data) > MAX_DOCUMENT:
        raise AdapterError(f"document of {len(data)} bytes exceeds the frame limit {MAX_DOCUMENT}")
    return data


def sign_on_body(moment: dt.datetime, password: str) -> str:
    """b2e0001: the client's clock (``custdt``) and the operator's password."""
    return _group("trn-b2e0001-rq", _group(
        "b2e0001-rq", _leaf("custdt", moment.strftime("%Y%m%d%H%M%S")), _leaf("oprpwd", password)))


def sign_off_body(moment: dt.datetime) -> str:
    """b2e0002: ends the session of the head's token."""
    return _group("trn-b2e0002-rq", _group("b2e0002-rq",
                                           _leaf("custdt", moment.strftime("%Y%m%d%H%M%S"))))


def transfer_values(*, insid: str, payer_account: str, payer_name: str, payee_account: str,
                    payee_name: str, payee_bank: str, payee_bank_name: str, amount: int,
                    memo: str, day: dt.date) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    """A b2e0009 record's values, checked as writing it checks them and in the same order: the
    text of each of its non-empty leaves in document order (insid, payer account and name,
    payee bank, account, name and bank name, amount in yuan, memo, date), and its free-text
    values by field.  :func:`transfer_body` writes them; a check can stop here."""
    v.serial("insid", insid)
    v.account("fractn/actacn", payer_account)
    v.account("toactn/actacn", payee_account)
    texts = [("fractn/actnam", v.text("fractn/actnam", payer_name, 60)),
             ("toactn/toname", v.text("toactn/toname", payee_name, 60, required=True)),
             ("toactn/tobknm", v.text("toactn/tobknm", payee_bank_name, 60)),
             ("furinfo", v.text("furinfo", memo, 140))]
    _xml.escape_text(payee_bank)  # the one value not checked above: refused where its leaf would be
    return (insid, payer_account, payer_name, payee_bank, payee_account, payee_name, payee_bank_name,
            v.format_yuan("trnamt", amount, positive=True), memo, v.format_date(day)), texts


def transfer_body(*, insid: str, payer_account: str, payer_name: str, payee_account: str,
                  payee_name: str, payee_bank: str, payee_bank_name: str, amount: int,
                  memo: str, day: dt.date) -> tuple[str, list[tuple[str, str]]]:
    """b2e0009 with one record keyed by ``insid`` (the gateway's durable serial); amount in fen."""
    values, texts = transfer_values(
        insid=insid, payer_account=payer_account, payer_name=payer_name, payee_account=payee_account,
        payee_name=payee_name, payee_bank=payee_bank, payee_bank_name=payee_bank_name, amount=amount,
        memo=memo, day=day)
    return transfer_xml(values), texts


def transfer_xml(values: tuple[str, ...]) -> str:
    """The ``trn-b2e0009-rq`` element holding the record of :func:`transfer_values`' values."""
    insid, payer_account, payer_name, payee_bank, payee_account, payee_name, payee_bank_name, trnamt, \
        memo, trfdate = values
    record = _group(
        "b2e0009-rq", _leaf("insid", insid), _leaf("obssid", ""),
        _group("fractn", _leaf("fribkn", ""), _leaf("actacn", payer_account),
               _leaf("actnam", payer_name)),
        _group("toactn", _leaf("toibkn", payee_bank), _leaf("actacn", payee_account),
               _leaf("toname", payee_name), _leaf("toaddr", ""), _leaf("tobknm", payee_bank_name)),
        _leaf("trnamt", trnamt), _leaf("trncur", "001"),
        _leaf("priolv", "0"), _leaf("furinfo", memo), _leaf("trfdate", trfdate),
        _leaf("trftime", ""), _leaf("comacn", ""))
    return _group("trn-b2e0009-rq", _leaf("transtype", ""), record)


def carried(head: Head, values: tuple[str, ...]) -> bool:
    """True when :func:`write_request` writes a request with ``head`` whose body holds the
    leaf texts ``values`` and nothing else that is not ASCII markup (its size limit aside),
    found without writing it: one scan of them all joined for a character XML cannot carry
    and one encoding.  False says only that writing it refuses it, naming the field."""
    names = _HEAD if head.trncod != "b2e0001" else _HEAD[:-1]
    return _xml.carries("".join([*(getattr(head, n) for n in names), *values]), WRITE_ENCODING)


def status_body(insid: str, obssid: str = "") -> str:
    """b2e0007 for one transfer, by the client's insid and (when known) the bank's obssid."""
    v.serial("insid", insid)
    v.serial("obssid", obssid, optional=True)
    return _group("trn-b2e0007-rq", _group("b2e0007-rq", _leaf("insid", insid), _leaf("obssid", obssid)))


def balance_body(account: str, ibknum: str = "") -> str:
    """b2e0005 for one account."""
    v.account("actacn", account)
    return _group("trn-b2e0005-rq", _group("b2e0005-rq", _group(
        "account", _leaf("ibknum", ibknum), _leaf("actacn", account))))


def statement_body(account: str, first: dt.date, last: dt.date, begnum: int, recnum: int,
                   ibknum: str = "") -> str:
    """b2e0035: one page of an account's transactions, records ``begnum`` .. ``begnum+recnum-1``."""
    v.account("actacn", account)
    if begnum < 1 or not 1 <= recnum <= 1000:
        raise AdapterError("b2e0035: begnum must be >= 1 and recnum 1-1000")
    return _group("trn-b2e0035-rq", _group(
        "b2e0035-rq", _leaf("ibknum", ibknum), _leaf("actacn", account), _leaf("type", ""),
        _group("datescope", _leaf("from", v.format_date(first)), _leaf("to", v.format_date(last))),
        _group("amountscope", _leaf("from", ""), _leaf("to", "")),
        _leaf("begnum", str(begnum)), _leaf("recnum", str(recnum)), _leaf("direction", "")))


def record_xml(trncod: str, record: Record) -> str:
    """One answer record (``<b2eNNNN-rs>``) with its status and leaves (paths become groups)."""
    groups: dict[str, list[str]] = {}
    plain: list[str] = []
    for path, value in record.leaves.items():
        if "/" in path:
            outer, inner = path.split("/", 1)
            groups.setdefault(outer, []).append(_leaf(inner, value))
        else:
            plain.append(_leaf(path, value))
    status = _group("status", _leaf("rspcod", record.code), _leaf("rspmsg", record.text))
    return _group(f"{trncod}-rs", status, *plain, *(_group(k, *parts) for k, parts in groups.items()))


def answer_body(trncod: str, code: str, text: str, records: tuple[Record, ...] = (),
                totalnum: int | None = None, notenum: int | None = None) -> str:
    """The ``trn-<code>-rs`` element of an answer (the simulator's side)."""
    counts = ""
    if totalnum is not None:
        counts += _leaf("totalnum", str(totalnum))
    if notenum is not None:
        counts += _leaf("notenum", str(notenum))
    status = _group("status", _leaf("rspcod", code), _leaf("rspmsg", text))
    return _group(f"trn-{trncod}-rs", status, counts, *(record_xml(trncod, r) for r in records))


# -- reading ---------------------------------------------------------------------------------


def _parse(data: bytes) -> etree._Element:
    root = _xml.parse_xml(data, max_bytes=MAX_DOCUMENT, max_depth=8, encodings=READ_ENCODINGS)
    if root.tag != "bocb2e":
        raise AdapterError(f"root element is {v.show(root.tag)}, not bocb2e")
    return root


def _children(el: etree._Element) -> list[etree._Element]:
    return _xml.element_children(el, "bocb2e")


def _text(el: etree._Element | None) -> str:
    if el is None:
        return ""
    if _children(el):
        raise AdapterError(f"{v.show(el.tag)}: expected text, found elements")
    return el.text or ""


def _one(el: etree._Element, name: str) -> etree._Element | None:
    found = [c for c in _children(el) if c.tag == name]
    if len(found) > 1:
        raise AdapterError(f"{name}: appears {len(found)} times")
    return found[0] if found else None


def _root_parts(root: etree._Element) -> None:
    if set(root.attrib.keys()) - {"version", "security", "lang"}:
        raise AdapterError("bocb2e: unknown attribute on the root")
    names = [c.tag for c in _children(root)]
    if names != ["head", "trans"]:
        raise AdapterError(f"bocb2e: the root must hold head then trans, not {v.show(names, 60)}")


def _head(root: etree._Element) -> Head:
    head = _one(root, "head")
    if head is None:
        raise AdapterError("no head")
    values = {n: _text(_one(head, n)) for n in _HEAD}
    return Head(**values)


def _trans(root: etree._Element) -> etree._Element:
    trans = _one(root, "trans")
    if trans is None:
        raise AdapterError("no trans")
    kids = _children(trans)
    if len(kids) != 1:
        raise AdapterError(f"trans holds {len(kids)} transactions, not one")
    return kids[0]


def _status(el: etree._Element, where: str) -> tuple[str, str]:
    status = _one(el, "status")
    if status is None:
        raise AdapterError(f"{where}: no status")
    code = _text(_one(status, "rspcod"))
    if not code:
        raise AdapterError(f"{where}: empty rspcod")
    return code, _text(_one(status, "rspmsg"))


def _leaves(el: etree._Element, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for child in _children(el):
        if child.tag == "status" and not prefix:
            continue
        kids = _children(child)
        path = prefix + child.tag
        if kids:
            if prefix:
                raise AdapterError(f"{v.show(path)}: nested too deep")
            out.update(_leaves(child, path + "/"))
        else:
            if path in out:
                raise AdapterError(f"{v.show(path)}: appears twice")
            out[path] = child.text or ""
    return out


def _count(el: etree._Element, name: str) -> int | None:
    text = _text(_one(el, name)).strip()
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise AdapterError(f"{name}: not a count: {v.show(text)}")
    return int(text)


def read_answer(data: bytes) -> Answer:
    """One answer document.  Refuses (AdapterError) anything that is not one; unknown leaves
    of a record are kept in ``leaves`` and otherwise ignored."""
    doc = read_document(data)
    if not isinstance(doc, Answer):
        raise AdapterError(f"{doc.trncod} request where an answer was expected")
    return doc


def _answer_of(head: Head, trn: etree._Element) -> Answer:
    tag = trn.tag
    trncod = tag[4:-3]
    code, text = _status(trn, tag)
    records = []
    for child in _children(trn):
        if child.tag != f"{trncod}-rs":
            continue  # tolerant reader: status, counts and leaves we do not know (ceitinfo, ...)
        rcode, rtext = _status(child, child.tag) if _one(child, "status") is not None else ("", "")
        records.append(Record(rcode, rtext, _leaves(child)))
    return Answer(head, trncod, code, text, tuple(records), _count(trn, "totalnum"),
                  _count(trn, "notenum"))


@dataclass(frozen=True)
class Request:
    """One request document as the front-end reads it (the simulator's side)."""

    head: Head
    trncod: str
    fields: dict[str, str]
    records: tuple[dict[str, str], ...]


def read_request(data: bytes) -> Request:
    """A request document: head, trncod, the transaction's own leaves (``transtype``) and
    its ``b2eNNNN-rq`` records (leaves by path)."""
    doc = read_document(data)
    if not isinstance(doc, Request):
        raise AdapterError(f"{doc.trncod} answer where a request was expected")
    return doc


def _request_of(head: Head, trn: etree._Element) -> Request:
    tag = trn.tag
    trncod = tag[4:-3]
    if head.trncod and head.trncod != trncod:
        raise AdapterError(f"head trncod {v.show(head.trncod)} disagrees with {v.show(tag)}")
    fields: dict[str, str] = {}
    records = []
    for child in _children(trn):
        if child.tag == f"{trncod}-rq":
            records.append(_leaves(child))
        elif not _children(child):
            fields[child.tag] = child.text or ""
    if not records:
        raise AdapterError(f"{tag}: no {trncod}-rq record")
    return Request(head, trncod, fields, tuple(records))


def read_document(data: bytes) -> Request | Answer:
    """Any bocb2e document: a request (``trn-b2eNNNN-rq``) or an answer (``-rs``)."""
    try:
        root = _parse(data)
        _root_parts(root)
        head = _head(root)
        trn = _trans(root)
        tag = trn.tag
        if tag.startswith("trn-b2e") and tag.endswith("-rs") and len(tag) > 10:
            return _answer_of(head, trn)
        if tag.startswith("trn-b2e") and tag.endswith("-rq") and len(tag) > 10:
            return _request_of(head, trn)
        raise AdapterError(f"{v.show(tag)} is not a bocb2e transaction")
    except (ValueError, LookupError, UnicodeError, RecursionError, etree.LxmlError) as e:
        raise AdapterError(f"bocb2e: {type(e).__name__}") from None
