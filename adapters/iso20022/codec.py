"""The iso20022 adapter: neutral messages to framed ISO 20022 documents and back.

The package docstring (:mod:`adapters.iso20022`) documents the frame, the link-control
elements and the mapping of every neutral message; this module ties the pieces together.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import replace
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from lxml import etree

from adapters import base
from adapters._xml import escape_text as esc
from adapters._xml import parse_xml
from adapters.base import AdapterError

from . import _cash
from . import _payments as pay
from . import _values as v
from ._frame import HEADER_LEN, MAX_FRAME, Iso20022Framer, body_of
from ._read import Reader, tags, text_at
from ._order import reordered, set_apart
from ._schema import (
    HEAD_NS,
    ISO_PREFIX,
    LINK_KINDS,
    LINK_NS,
    READABLE,
    ROOTS,
    definition_of,
    document_schema,
    first_error,
    schema_file,
    validate,
)

__all__ = ["FRAME_TAG", "LINK_NS", "MAX_DEPTH", "MAX_FRAME", "Iso20022Adapter", "Iso20022Framer"]

MAX_DEPTH = 40
"""Deepest element nesting accepted (the deepest ISO paths we know of are about 20)."""

FRAME_TAG = f"{{{LINK_NS}}}Frame"
_BIZ_MSG_IDR = f"{{{HEAD_NS}}}BizMsgIdr"
_MSG_DEF_IDR = f"{{{HEAD_NS}}}MsgDefIdr"
_RLTD = f"{{{HEAD_NS}}}Rltd"
_DOCUMENT = "}Document"
_UNKNOWN = "unknown"          # Rltd/MsgDefIdr when the answered message's kind is not implied
_CODE_LEN, _TEXT_LEN = 35, 500

_ANSWERS: dict[type, str] = {base.SignOnAnswer: "hpf.SignOn", base.HeartbeatAnswer: "hpf.Heartbeat"}


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _party(node: str) -> str:
    return f"<OrgId><Id><OrgId><Othr><Id>{node}</Id></Othr></OrgId></Id></OrgId>"


def _flag(ok: object) -> str:
    if not isinstance(ok, bool):
        raise AdapterError("ok: must be a boolean")
    return "true" if ok else "false"


def _code_text(code: str, text: str) -> str:
    out = ""
    if v.text("code", code, _CODE_LEN):
        out += f"<hpf:Cd>{esc(code)}</hpf:Cd>"
    if v.text("text", text, _TEXT_LEN):
        out += f"<hpf:Txt>{esc(text)}</hpf:Txt>"
    return out


_BIC_NAMES = ("BIC", "BICFI")


def _bic_of_the_other_version(doc: etree._Element, checker: etree.XMLSchema) -> tuple[str, str] | None:
    """Rename, in place, a financial institution's ``BIC`` to ``BICFI`` (or back) where the schema
    says the element is not expected and the other name is: the 2009 versions call it BIC and
    the later ones BICFI, and banks' files mix them (one real .04 statement writes BIC).  Returns
    (written, read) when it renamed anything."""
    for wrote, wants in (_BIC_NAMES, _BIC_NAMES[::-1]):
        if not any(f"}}{wrote}': This element is not expected" in e.message and f"}}{wants}" in e.message
                   for e in checker.error_log):
            continue
        hits = [el for el in doc.iter() if isinstance(el.tag, str) and etree.QName(el).localname == wrote
                and el.getparent() is not None and etree.QName(el.getparent()).localname == "FinInstnId"]
        for el in hits:
            el.tag = f"{{{etree.QName(el).namespace}}}{wants}"
        return (wrote, wants) if hits else None
    return None


_BIC_ELEMENTS = frozenset({"BIC", "BICFI", "AnyBIC", "BICOrBEI"})
_ODD_BIC = re.compile(r"[A-Za-z0-9]{1,11}")
_PATTERN_ERROR = re.compile(r"\}(\w+)': \[facet 'pattern'\] The value '([^']*)' is not accepted")


def _odd_bics(doc: etree._Element, checker: etree.XMLSchema
              ) -> list[tuple[etree._Element, etree._Element, int, str]]:
    """The BIC elements the schema refused only for their pattern whose value is still an
    identifier's text (1-11 letters and digits: a test value, a wrong length, lower case), each
    with its parent and place.  A bank identifier carries no amount, date, sign or status, so a
    tolerant reader keeps such a value as text and flags it (docs/protocols/iso20022.md, "Odd
    BICs"); a value that is not even that (spaces, punctuation, over 11 characters) is plainly
    invalid and the document is refused as before."""
    values: dict[str, set[str]] = {}
    for e in checker.error_log:
        m = _PATTERN_ERROR.search(e.message)
        if m and _is_odd_bic_error(e.message):
            values.setdefault(m.group(1), set()).add(m.group(2))
    found = []
    for el in doc.iter():
        if not isinstance(el.tag, str):
            continue
        name = etree.QName(el).localname
        parent = el.getparent()
        if name in values and (el.text or "") in values[name] and parent is not None:
            found.append((el, parent, parent.index(el), el.text or ""))
    return found


def _is_odd_bic_error(message: str) -> bool:
    m = _PATTERN_ERROR.search(message)
    return bool(m and m.group(1) in _BIC_ELEMENTS and _ODD_BIC.fullmatch(m.group(2)))


def _put_back(doc: etree._Element, odd: list[tuple[etree._Element, etree._Element, int, str]]
              ) -> etree._Element:
    """``doc`` with the odd BICs set aside by :func:`_odd_bics` back in their places (where
    their part was not itself set apart), so the reader reads them as text."""
    for el, parent, at, _ in reversed(odd):
        parent.insert(at, el)
    return doc


class Iso20022Adapter:
    """ISO 20022 over a length-prefixed link, as a sans-I/O codec (see the package docstring).

    ``currencies`` is the set of currency codes accepted in inbound amounts: the default
    ``{"CNY"}`` is what a gateway link must use; ``None`` accepts any ISO 4217 currency with two
    minor units and reports amounts in its minor units (for an operator reading bank files;
    the neutral Entry carries no currency).  Encoded amounts are always CNY.

    ``pain001`` is the version instructions are written in: ``pain.001.001.09`` (default) or
    ``pain.001.001.03`` for a bank that still takes the 2009 version (config
    ``banks.X.iso20022_pain001``); every version is read.

    ``clock`` only fills creation times (AppHdr/CreDt, GrpHdr/CreDtTm) and the dates of a
    statement without entries; it defaults to UTC now.  ``validate_outbound`` re-parses and
    validates every encoded frame against the schemas (about five times the cost of an
    encode; tests use it, links need not: the encoders are built to produce valid documents).
    One instance serves any number of links.
    """

    name: ClassVar[str] = "iso20022"
    max_frame: ClassVar[int] = MAX_FRAME

    @classmethod
    def for_operator_files(cls) -> "Iso20022Adapter":
        """The adapter ``hpf-gateway adapters decode`` uses: any two-decimal currency, for bank files."""
        return cls(currencies=None)

    def for_gateway(self, config: object, bank: Any) -> "Iso20022Adapter":
        """This adapter as ``bank`` of the gateway's ``config`` needs it: writing the pain.001
        version the bank's config names (``banks.X.pain001_version``)."""
        return type(self)(pain001=bank.pain001_version) if bank.pain001_version else self

    def __init__(self, currencies: Iterable[str] | None = frozenset({"CNY"}), *,
                 clock: Callable[[], _dt.datetime] | None = None,
                 validate_outbound: bool = False, pain001: str = pay.PAIN001) -> None:
        if pain001 not in pay.PAIN001_VERSIONS:
            raise ValueError(f"pain001: one of {', '.join(pay.PAIN001_VERSIONS)}, not {pain001!r}")
        self.pain001 = pain001
        if currencies is not None:
            currencies = frozenset(currencies)
            if not currencies:
                raise ValueError("currencies: give at least one, or None for any")
            for code in currencies:
                try:
                    v.minor_units("currencies", code, None)
                except AdapterError as e:
                    raise ValueError(str(e)) from None
        self.currencies: frozenset[str] | None = currencies
        self._clock = clock or _utc_now
        self._validate_outbound = validate_outbound
        self._readers: dict[str, Reader] = {}   # per namespace; Readers hold no per-call state

    def framer(self) -> Iso20022Framer:
        """A fresh framer for one connection."""
        return Iso20022Framer(self.max_frame)

    # -- encode ------------------------------------------------------------------------------

    def encode(self, message: base.Message, *, sender: str, receiver: str = "") -> bytes:
        """One complete frame carrying ``message`` from node ``sender`` to node ``receiver``.

        Raises :class:`AdapterError` naming the field when a value cannot be carried (too long
        for its ISO element, a control character, a currency amount out of range, ...).
        """
        definition, head, payload = self._parts(message, sender, receiver)
        return self._frame(definition, head, payload)

    def check(self, message: base.Message, *, sender: str, receiver: str = "") -> None:
        """Raise the :class:`AdapterError` that :meth:`encode` would raise for ``message``,
        without framing it (the frame-size limit and the optional outbound schema check
        aside).  An instruction that :func:`~adapters.iso20022._payments.carried` says its
        pain.001 takes is not written: what else could refuse it is its nodes and the clock,
        asked as :meth:`_parts` asks them (its AppHdr holds its serial and the nodes, checked)."""
        if isinstance(message, base.Instruction) and pay.carried(message, self.pain001):
            self._nodes(sender, receiver)
            self._stamp()
            return
        self._parts(message, sender, receiver)

    def _parts(self, message: base.Message, sender: str, receiver: str) -> tuple[str, str, str]:
        """(MsgDefIdr, AppHdr, payload) of ``message``."""
        self._nodes(sender, receiver)
        created, now = self._stamp()
        definition, seq_no, reply_to, payload = self._payload(message, created, now, sender, receiver)
        head = self._app_header(definition, seq_no, reply_to, self._answered(message), created,
                                sender, receiver)
        return definition, head, payload

    def encode_document(self, message: base.Message, *, sender: str, receiver: str) -> bytes:
        """``message`` as a bare ISO 20022 ``Document`` (UTF-8, with an XML declaration): the
        file a bank exchanges host to host (a pain.001 the gateway uploads; the pain.002 and
        camt a bank writes back), read again by :meth:`decode_document`.  Link control
        (sign-on, heartbeat, ack, queries) has no document: :class:`AdapterError`."""
        definition, _, payload = self._parts(message, sender, receiver)
        if definition.startswith("hpf."):
            raise AdapterError(f"a {type(message).__name__} has no ISO 20022 document")
        return ('<?xml version="1.0" encoding="UTF-8"?>\n' + payload).encode()

    def encode_batch(self, instructions: Sequence[base.Instruction], *, sender: str,
                     receiver: str) -> bytes:
        """One frame with one pain.001 holding every instruction (one CdtTrfTxInf each).

        Its MsgId (and AppHdr/BizMsgIdr) is a hash of the references (see
        :func:`adapters.iso20022._payments.batch_id`); :meth:`decode_all` returns the
        instructions in order.
        """
        if not isinstance(instructions, Sequence) or not instructions:
            raise AdapterError("instructions: a batch needs at least one instruction")
        self._nodes(sender, receiver)
        created, _ = self._stamp()
        payload = pay.encode_pain001(instructions, None, created, sender, receiver, self.pain001)
        head = self._app_header(self.pain001, pay.batch_id(instructions), "", "", created, sender,
                                receiver)
        return self._frame(self.pain001, head, payload)

    @staticmethod
    def _nodes(sender: str, receiver: str) -> None:
        v.node("sender", sender)
        if not receiver:
            raise AdapterError("receiver: the AppHdr needs the peer's node")
        v.node("receiver", receiver)

    def _stamp(self) -> tuple[str, _dt.datetime]:
        """(creation time as written, the clock's reading): milliseconds, UTC as ``Z``."""
        now = self._clock()
        if not isinstance(now, _dt.datetime):
            raise AdapterError("clock: must return a datetime")
        if now.tzinfo is not None:
            utc = now.astimezone(_dt.UTC).replace(tzinfo=None)
            return utc.isoformat(timespec="milliseconds") + "Z", now
        return now.isoformat(timespec="milliseconds"), now

    def _answered(self, message: base.Message) -> str:
        return _ANSWERS.get(type(message), _UNKNOWN)

    @staticmethod
    def _app_header(definition: str, seq_no: str, reply_to: str, answered: str, created: str,
                    sender: str, receiver: str) -> str:
        """The AppHdr.  ``reply_to`` goes in AppHdr/Rltd for link control only; documents
        carry it themselves."""
        seq = esc(v.serial("seq_no", seq_no))
        related = ""
        if reply_to and definition.startswith("hpf."):
            related = (f"<Rltd><Fr>{_party(receiver)}</Fr><To>{_party(sender)}</To>"
                       f"<BizMsgIdr>{esc(v.serial('reply_to', reply_to))}</BizMsgIdr>"
                       f"<MsgDefIdr>{answered}</MsgDefIdr><CreDt>{created}</CreDt></Rltd>")
        return (f'<AppHdr xmlns="{HEAD_NS}"><Fr>{_party(sender)}</Fr><To>{_party(receiver)}</To>'
                f"<BizMsgIdr>{seq}</BizMsgIdr><MsgDefIdr>{definition}</MsgDefIdr>"
                f"<CreDt>{created}</CreDt>{related}</AppHdr>")

    def _frame(self, definition: str, head: str, payload: str) -> bytes:
        """The length-prefixed frame: AppHdr, then the payload."""
        body = f'<hpf:Frame xmlns:hpf="{LINK_NS}">{head}{payload}</hpf:Frame>'.encode()
        if len(body) > self.max_frame:
            raise AdapterError(f"message of {len(body)} bytes exceeds the frame limit {self.max_frame}")
        if self._validate_outbound:
            root = parse_xml(body, max_bytes=self.max_frame, max_depth=MAX_DEPTH)
            validate(root, f"encoded {definition} frame")
        return len(body).to_bytes(HEADER_LEN, "big") + body

    def _payload(self, m: base.Message, created: str, now: _dt.datetime, sender: str,
                 receiver: str) -> tuple[str, str, str, str]:
        """(MsgDefIdr, BizMsgIdr, reply_to, payload XML) of one message."""
        if isinstance(m, base.Instruction):
            return self.pain001, m.seq_no, "", pay.encode_pain001([m], m.seq_no, created, sender,
                                                                   receiver, self.pain001)
        if isinstance(m, (base.Receipt, base.Result, base.NotFound)):
            return pay.PAIN002, m.seq_no, m.reply_to, pay.encode_pain002(m, created)
        if isinstance(m, base.Balance):
            return _cash.CAMT052, m.seq_no, m.reply_to, _cash.encode_balance(m, created)
        if isinstance(m, base.Statement):
            today = now.date()
            definition, doc = _cash.encode_statement(m, created, today)
            return definition, m.seq_no, m.reply_to, doc
        if isinstance(m, base.Movement):
            return _cash.CAMT054, m.seq_no, "", _cash.encode_movement(m, created)
        return self._link(m)

    @staticmethod
    def _link(m: base.Message) -> tuple[str, str, str, str]:
        kind = type(m).__name__
        if kind not in LINK_KINDS or not isinstance(m, (base.SignOn, base.SignOnAnswer, base.Heartbeat,
                                                        base.HeartbeatAnswer, base.Ack,
                                                        base.StatusQuery, base.BalanceQuery)):
            raise AdapterError(f"iso20022 cannot carry a {kind}")
        reply_to = ""
        if isinstance(m, (base.SignOn, base.Heartbeat)):
            inner = f"<hpf:Node>{v.node('node', m.node)}</hpf:Node>"
        elif isinstance(m, base.HeartbeatAnswer):
            inner = f"<hpf:Node>{v.node('node', m.node)}</hpf:Node>"
            reply_to = v.serial("reply_to", m.reply_to)
        elif isinstance(m, base.SignOnAnswer):
            inner = (f"<hpf:Node>{v.node('node', m.node)}</hpf:Node><hpf:Ok>{_flag(m.ok)}</hpf:Ok>"
                     f"{_code_text(m.code, m.text)}")
            reply_to = v.serial("reply_to", m.reply_to)
        elif isinstance(m, base.Ack):
            inner = f"<hpf:Ok>{_flag(m.ok)}</hpf:Ok>{_code_text(m.code, m.text)}"
            reply_to = v.serial("reply_to", m.reply_to)
        elif isinstance(m, base.StatusQuery):
            inner = (f"<hpf:Ref>{esc(v.serial('ref', m.ref))}</hpf:Ref>"
                     f"<hpf:RefDt>{v.format_date('ref_date', m.ref_date)}</hpf:RefDt>")
        else:
            inner = f"<hpf:Acct>{v.account('account', m.account)}</hpf:Acct>"
        return f"hpf.{kind}", m.seq_no, reply_to, f"<hpf:{kind}>{inner}</hpf:{kind}>"

    # -- decode ------------------------------------------------------------------------------

    def decode(self, frame: bytes) -> base.Message:
        """The one neutral message in a frame; :class:`AdapterError` if it holds more (a
        camt document with several accounts, a status report on several transfers, a batch)."""
        messages = self.decode_all(frame)
        if len(messages) != 1:
            raise AdapterError(f"frame holds {len(messages)} messages; use decode_all")
        return messages[0]

    def decode_all(self, frame: bytes) -> list[base.Message]:
        """Every neutral message in one frame (length prefix included), in document order.

        Raises :class:`AdapterError` with a one-line reason for anything that is not a
        complete, schema-valid, consistent frame this codec maps.
        """
        return self._guard(self._decode_frame, frame)

    def decode_document(self, body: bytes, *, max_bytes: int = MAX_FRAME) -> list[base.Message]:
        """Every neutral message in a bare ISO 20022 document (no length prefix, no AppHdr),
        such as a statement file a bank hands over: validated against its own schema first.

        ``reply_to`` then comes from the document alone (pain.002 OrgnlMsgId, camt .08
        OrgnlBizQry/MsgId), else is empty.
        """
        return self._guard(self._decode_bare, body, max_bytes)

    @staticmethod
    def _guard(fn: Callable[..., list[base.Message]], *args: object) -> list[base.Message]:
        try:
            return fn(*args)
        except AdapterError:
            raise
        except (ValueError, TypeError, LookupError, UnicodeError, OverflowError,
                etree.LxmlError) as e:
            # Defensive: every check should have caught bad input first.
            raise AdapterError(f"iso20022: undecodable input ({type(e).__name__})") from e

    def _decode_bare(self, body: bytes, max_bytes: int) -> list[base.Message]:
        root = parse_xml(body, max_bytes=max_bytes, max_depth=MAX_DEPTH)
        tag = root.tag if isinstance(root.tag, str) else ""
        ns, _, local = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
        if local != "Document":
            raise AdapterError(f"not an ISO 20022 Document: root element {v.show(tag)}")
        problems: list[base.Problem] = []
        if not ns:
            # Some banks' files carry no namespace at all: the message element still says
            # which message it is, though not which version.
            message = root[0].tag if len(root) and isinstance(root[0].tag, str) else ""
            definition = ROOTS.get(message, "")
            if not definition:
                raise AdapterError(f"Document without a namespace holds no message we read: "
                                   f"{v.show(message)}")
            problems.append(base.Problem("Document", f"no namespace: read as {definition} by the "
                                         "elements its versions share, not schema-validated"))
        else:
            definition = ns.removeprefix(ISO_PREFIX)
            if not ns.startswith(ISO_PREFIX) or definition not in READABLE:
                raise AdapterError(f"not a supported ISO 20022 Document: {v.show(definition)}; "
                                   f"supported: {', '.join(READABLE)}")
            checker = document_schema(definition)
            if checker is None:
                problems.append(base.Problem("Document", f"no official {definition} schema in the "
                                             "package: read by the elements its versions share, "
                                             "not schema-validated"))
            elif not checker.validate(root):
                root = self._tolerate(root, definition, checker, problems)
        return self._decode_document(root, definition, None, tuple(problems))

    @staticmethod
    def _tolerate(root: etree._Element, definition: str, checker: etree.XMLSchema,
                  problems: list[base.Problem]) -> etree._Element:
        """The part of an invalid bank document that can be read, the rest as ``problems``:
        elements out of schema order are read in schema order (flagged); an entry or a
        balance that breaks its schema otherwise is set apart with its bytes.  Anything
        else invalid refuses the document, naming the first violation."""
        error = first_error(checker)
        fixed, moved = reordered(root, schema_file(definition))  # type: ignore[arg-type]
        if moved:
            problems.append(base.Problem("Document", "elements out of schema order (read in "
                                         f"schema order): {error}"))
        if checker.validate(fixed):
            return fixed
        renamed = _bic_of_the_other_version(fixed, checker)
        if renamed:
            problems.append(base.Problem("Document", f"a bank identifier written as {renamed[0]} where "
                                         f"this version has {renamed[1]} (read as {renamed[1]})"))
            if checker.validate(fixed):
                return fixed
        odd = _odd_bics(fixed, checker)
        errors = [(e.line, e.message[:200]) for e in checker.error_log
                  if not (odd and _is_odd_bic_error(e.message))]
        for el, _, _, value in odd:
            problems.append(base.Problem("Document", f"{etree.QName(el).localname} {v.show(value)} does not "
                                         "match the ISO 9362 pattern of its schema: read as text, "
                                         "not a valid BIC"))
        # An entry or balance with another fault is set apart as the bank wrote it (its odd
        # BICs in it); the odd BICs left are taken out while the rest is checked, then put back.
        apart = set_apart(fixed, errors) if errors else []
        kept = [o for o in odd if any(a is fixed for a in o[0].iterancestors())]
        for el, parent, _, _ in kept:
            parent.remove(el)
        if apart is None or not checker.validate(fixed):
            raise AdapterError(f"{definition} is not valid against its schema: "
                               f"{first_error(checker) if apart is not None else error}")
        problems.extend(base.Problem(path, reason, raw) for path, reason, raw in apart)
        return _put_back(fixed, kept)

    def _decode_frame(self, frame: bytes) -> list[base.Message]:
        body = body_of(frame, self.max_frame)
        root = parse_xml(body, max_bytes=self.max_frame, max_depth=MAX_DEPTH)
        if root.tag != FRAME_TAG:
            raise AdapterError(f"frame: root element must be {{{LINK_NS}}}Frame, "
                               f"not {v.show(str(root.tag))}")
        validate(root, "frame")
        header, payload = root[0], root[1]
        seq_no = declared = ""
        related: list[etree._Element] = []
        for c in header:                      # one pass: cheaper than a lookup per field
            tag = c.tag
            if tag == _BIZ_MSG_IDR:
                seq_no = c.text or ""
            elif tag == _MSG_DEF_IDR:
                declared = c.text or ""
            elif tag == _RLTD:
                related.append(c)
        seq_no = v.serial("AppHdr/BizMsgIdr", seq_no)
        if len(related) > 1:
            raise AdapterError("AppHdr: more than one Rltd (an answer answers one message)")
        reply_to = v.serial("AppHdr/Rltd/BizMsgIdr", text_at(related[0], _BIZ_MSG_IDR)) if related else ""
        tag = payload.tag
        ns, local = tag[1:].split("}", 1)
        definition = f"hpf.{local}" if ns == LINK_NS else definition_of(ns)
        if declared != definition:
            raise AdapterError(f"AppHdr/MsgDefIdr {v.show(declared)} does not name the payload "
                               f"{definition}")
        if ns == LINK_NS:
            return [self._decode_link(local, payload, seq_no, reply_to)]
        return self._decode_document(payload, definition, (seq_no, reply_to))

    def _decode_document(self, doc: etree._Element, definition: str,
                         header: tuple[str, str] | None,
                         problems: tuple[base.Problem, ...] = ()) -> list[base.Message]:
        ns = doc.tag[1:doc.tag.index("}")] if doc.tag.startswith("{") else ""
        r = self._readers.get(ns)
        if r is None:
            r = self._readers[ns] = Reader(ns, self.currencies)
        wanted = header[1] if header else ""
        answers = True
        if definition.startswith("pain.001"):
            msg_id, instructions = pay.decode_pain001(doc, r)
            messages: list[base.Message] = list(instructions)
            reply_to, answers = "", False
        elif definition.startswith("pain.002"):
            msg_id, reply_to, messages = pay.decode_pain002(doc, r)
            if problems and isinstance(messages[0], (base.Receipt, base.Result)):
                messages[0] = replace(messages[0], problems=problems)   # once per document
        elif definition.startswith("camt.054"):
            msg_id, movement = _cash.decode_notification(doc, r, problems)
            messages, reply_to, answers = [movement], "", False
        else:
            msg_id, reply_to, messages = _cash.decode_reports(doc, r, definition, wanted, problems)
        if header is not None:
            if msg_id != header[0]:
                raise AdapterError(f"AppHdr/BizMsgIdr {v.show(header[0])} differs from "
                                   f"GrpHdr/MsgId {v.show(msg_id)}")
            if wanted and not answers:
                raise AdapterError(f"AppHdr/Rltd: a {definition} answers no message")
            if wanted and wanted != reply_to:
                raise AdapterError(f"AppHdr/Rltd/BizMsgIdr {v.show(wanted)} differs from the "
                                   f"document's original message id {v.show(reply_to)}")
        return messages

    @staticmethod
    def _decode_link(kind: str, el: etree._Element, seq_no: str, reply_to: str) -> base.Message:
        t = tags(LINK_NS)
        answer = kind in ("SignOnAnswer", "HeartbeatAnswer", "Ack")
        if answer and not reply_to:
            raise AdapterError(f"hpf:{kind}: an answer needs AppHdr/Rltd/BizMsgIdr")
        if not answer and reply_to:
            raise AdapterError(f"hpf:{kind}: answers nothing, yet has AppHdr/Rltd")
        ok = text_at(el, t["Ok"]) == "true"
        code, text = text_at(el, t["Cd"]), text_at(el, t["Txt"])
        if kind == "SignOn":
            return base.SignOn(seq_no=seq_no, node=v.node("Node", text_at(el, t["Node"])))
        if kind == "Heartbeat":
            return base.Heartbeat(seq_no=seq_no, node=v.node("Node", text_at(el, t["Node"])))
        if kind == "HeartbeatAnswer":
            return base.HeartbeatAnswer(seq_no=seq_no, reply_to=reply_to,
                                        node=v.node("Node", text_at(el, t["Node"])))
        if kind == "SignOnAnswer":
            return base.SignOnAnswer(seq_no=seq_no, reply_to=reply_to,
                                     node=v.node("Node", text_at(el, t["Node"])), ok=ok,
                                     code=code, text=text)
        if kind == "Ack":
            return base.Ack(seq_no=seq_no, reply_to=reply_to, ok=ok, code=code, text=text)
        if kind == "StatusQuery":
            return base.StatusQuery(seq_no=seq_no, ref=v.serial("Ref", text_at(el, t["Ref"])),
                                    ref_date=v.parse_date("RefDt", text_at(el, t["RefDt"])))
        return base.BalanceQuery(seq_no=seq_no, account=v.account("Acct", text_at(el, t["Acct"])))
