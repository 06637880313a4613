"""pain.001.001.09 (credit transfer initiation) and pain.002.001.10 (payment status report).

See the package docstring for the field mapping; the functions here build documents by string
concatenation (every value escaped) and read validated ones back.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import re
from collections.abc import Callable, Sequence

from adapters import base
from adapters._xml import escape_text as esc
from adapters.base import AdapterError

from . import _values as v
from ._read import Element, Reader, at, children, first, text_at
from ._schema import ISO_PREFIX, LINK_NS

__all__ = [
    "NOT_FOUND",
    "PAIN001",
    "PAIN001_03",
    "PAIN001_VERSIONS",
    "PAIN002",
    "PURPOSES",
    "STATUS_QUERY_DEF",
    "batch_id",
    "carried",
    "decode_pain001",
    "decode_pain002",
    "encode_pain001",
    "encode_pain002",
]

PAIN001 = "pain.001.001.09"
PAIN001_03 = "pain.001.001.03"
PAIN001_VERSIONS = (PAIN001, PAIN001_03)
"""The pain.001 versions written, as a bank's config chooses (the 2019 one by default)."""
PAIN002 = "pain.002.001.10"
STATUS_QUERY_DEF = "hpf.StatusQuery"

PURPOSES = frozenset({"withdrawal", "loan_disbursement", "allocation", "deposit_placement",
                      "refund", "fee", "other"})
"""The neutral purposes (gateway.model.PURPOSES), carried as ``Purp/Prtry``."""

UNIT_SCHEME = "HPFUNIT"      # Dbtr/Id/OrgId/Othr scheme of the centre's institution code
NODE_SCHEME = "HPFNODE"      # ... and of the centre's node number
SAME_BANK = "BOOK"           # PmtTpInf/LclInstrm/Prtry: book transfer inside the debtor's bank
CROSS_BANK = "CNAPS"         # ... cleared through CNAPS (also ClrSysMmbId/ClrSysId/Cd)
PERSONAL, CORPORATE = "PERSONAL", "CORPORATE"   # CdtrAcct/Tp/Prtry
NOT_FOUND = "NOTFOUND"       # StsRsnInf/Rsn/Prtry of a RJCT meaning "no such instruction"
MAX_SIGNATURE = 16 * 1024
ADDTL_INF_LEN = 105          # Max105Text
TEXT_LEN = 500               # longest code text we carry (five AddtlInf)
CODE_LEN = 35                # Rsn/Prtry is Max35Text

_RECEIPT = frozenset({"RCVD", "ACTC", "ACCP", "ACSP", "ACWC", "ACWP", "ACFC", "PATC", "PDNG"})
_SUCCESS = frozenset({"ACSC", "ACCC"})
_FAILURE = frozenset({"RJCT", "CANC"})


# -- pain.001 -----------------------------------------------------------------------------


def batch_id(instructions: Sequence[base.Instruction]) -> str:
    """The MsgId of a batch: ``B`` and 34 hex digits of a hash of its references, so a batch
    sent again keeps its id (and a bank dedupes it) while never colliding with an
    instruction's own reference used as the MsgId of a single-instruction message."""
    digest = hashlib.sha256("\n".join(i.seq_no for i in instructions).encode("utf-8"))
    return "B" + digest.hexdigest()[:34]


# Anything a text field may not hold, or that would need escaping: when none of the fields has
# one, the document is built without escaping a single value.
_NOT_PLAIN = re.compile("[&<>\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _plain(m: object) -> bool:
    """True when every field of ``m`` is valid and needs no escaping: one expression, so the
    common case costs a few C calls; anything else goes to :func:`_check_instruction`."""
    try:
        return (type(m) is base.Instruction
                and type(m.send_date) is _dt.date
                and type(m.same_bank) is bool and type(m.creditor_personal) is bool
                and type(m.amount) is int and 0 < m.amount <= v.MAX_FEN
                and type(m.signature) is bytes and len(m.signature) <= MAX_SIGNATURE
                and m.purpose in PURPOSES
                and v.SERIAL.fullmatch(m.seq_no) is not None
                and v.NODE.fullmatch(m.centre_node) is not None
                and v.UNIT_NO.fullmatch(m.unit_no) is not None
                and v.ACCOUNT.fullmatch(m.debit_account) is not None
                and v.ACCOUNT.fullmatch(m.creditor_account) is not None
                and (v.BANK_CODE.fullmatch(m.creditor_bank_code) is not None
                     or (m.same_bank and m.creditor_bank_code == ""))
                and len(m.debit_name) <= 140 and len(m.creditor_name) <= 140
                and len(m.memo) <= 140 and len(m.reference) <= 35
                and _NOT_PLAIN.search(m.seq_no + m.debit_name + m.creditor_name + m.memo
                                      + m.reference) is None)
    except TypeError:
        return False


def carried(m: object, definition: str = PAIN001) -> bool:
    """True when :func:`encode_pain001` writes instruction ``m`` alone (as the link sends it)
    without refusing it: every field valid and plain (:func:`_plain`), and a place for its
    signature in ``definition``.  False says only that writing it decides."""
    return _plain(m) and not (m.signature and definition == PAIN001_03)  # type: ignore[attr-defined]


def _check_instruction(i: int, m: base.Instruction) -> None:
    """Every rule of the mapping, naming the field that breaks one, so a message either
    encodes to a valid document or is refused."""
    p = f"instructions[{i}]." if i >= 0 else ""
    if not isinstance(m, base.Instruction):
        raise AdapterError(f"{p[:-1] or 'message'}: must be an Instruction")
    v.serial(p + "seq_no", m.seq_no)
    v.format_date(p + "send_date", m.send_date)
    v.node(p + "centre_node", m.centre_node)
    v.match(p + "unit_no", m.unit_no, v.UNIT_NO, "must be 15 digits")
    v.account(p + "debit_account", m.debit_account)
    v.text(p + "debit_name", m.debit_name, 140)
    v.account(p + "creditor_account", m.creditor_account)
    v.text(p + "creditor_name", m.creditor_name, 140)
    if not isinstance(m.same_bank, bool) or not isinstance(m.creditor_personal, bool):
        raise AdapterError(f"{p}same_bank, {p}creditor_personal: must be booleans")
    v.match(p + "creditor_bank_code", m.creditor_bank_code, v.BANK_CODE,
            "must be a 12-digit CNAPS code", optional=m.same_bank)
    v.format_amount(p + "amount", m.amount, positive=True)
    if m.purpose not in PURPOSES:
        raise AdapterError(f"{p}purpose: not one of {', '.join(sorted(PURPOSES))}")
    v.text(p + "memo", m.memo, 140)
    v.text(p + "reference", m.reference, 35)
    if not isinstance(m.signature, bytes):
        raise AdapterError(f"{p}signature: must be bytes")
    if len(m.signature) > MAX_SIGNATURE:
        raise AdapterError(f"{p}signature: longer than {MAX_SIGNATURE} bytes")


def _same(value: str) -> str:
    return value


def _transfer(m: base.Instruction, e: Callable[[str], str], definition: str = PAIN001) -> str:
    """One CdtTrfTxInf; ``e`` escapes text (or passes it through when it is known plain)."""
    if m.signature and definition == PAIN001_03:
        raise AdapterError("signature: pain.001.001.03 has no place for one (SplmtryData came "
                           "with .04); a bank written .03 takes no signature_alg")
    reference = f"<InstrId>{e(m.reference)}</InstrId>" if m.reference else ""
    agent = (f"<CdtrAgt><FinInstnId><ClrSysMmbId><ClrSysId><Cd>{CROSS_BANK}</Cd></ClrSysId>"
             f"<MmbId>{m.creditor_bank_code}</MmbId></ClrSysMmbId></FinInstnId></CdtrAgt>"
             if m.creditor_bank_code else "")
    creditor = f"<Cdtr><Nm>{e(m.creditor_name)}</Nm></Cdtr>" if m.creditor_name else ""
    memo = f"<RmtInf><Ustrd>{e(m.memo)}</Ustrd></RmtInf>" if m.memo else ""
    signature = (f'<SplmtryData><PlcAndNm>Sgntr</PlcAndNm><Envlp><hpf:Sgntr xmlns:hpf="{LINK_NS}">'
                 f'{base64.b64encode(m.signature).decode("ascii")}</hpf:Sgntr></Envlp></SplmtryData>'
                 if m.signature else "")
    fen = m.amount
    return (f"<CdtTrfTxInf><PmtId>{reference}<EndToEndId>{e(m.seq_no)}</EndToEndId></PmtId>"
            f"<PmtTpInf><LclInstrm><Prtry>{SAME_BANK if m.same_bank else CROSS_BANK}</Prtry>"
            f"</LclInstrm></PmtTpInf>"
            f'<Amt><InstdAmt Ccy="CNY">{fen // 100}.{fen % 100:02d}</InstdAmt></Amt>'
            f"{agent}{creditor}"
            f"<CdtrAcct><Id><Othr><Id>{m.creditor_account}</Id></Othr></Id>"
            f"<Tp><Prtry>{PERSONAL if m.creditor_personal else CORPORATE}</Prtry></Tp></CdtrAcct>"
            f"<Purp><Prtry>{m.purpose}</Prtry></Purp>{memo}{signature}</CdtTrfTxInf>")


def _total(fen: int) -> str:
    # CtrlSum is a DecimalNumber: at most 18 digits in all.  Amounts are already checked
    # positive integers, so only a batch's sum can overflow.
    if fen > v.MAX_FEN:
        raise AdapterError("amount: the batch total has more than 18 digits")
    return f"{fen // 100}.{fen % 100:02d}"


def _payment(group: Sequence[base.Instruction], receiver: str, e: Callable[[str], str],
             total: str, definition: str = PAIN001) -> str:
    head = group[0]
    name = f"<Nm>{e(head.debit_name)}</Nm>" if head.debit_name else ""
    transfers = "".join(_transfer(m, e, definition) for m in group)
    # ISODate in .03; a Dt/DtTm choice from .04 on.
    day = head.send_date.isoformat()
    when = day if definition == PAIN001_03 else f"<Dt>{day}</Dt>"
    return (f"<PmtInf><PmtInfId>{e(head.seq_no)}</PmtInfId><PmtMtd>TRF</PmtMtd>"
            f"<NbOfTxs>{len(group)}</NbOfTxs><CtrlSum>{total}</CtrlSum>"
            f"<ReqdExctnDt>{when}</ReqdExctnDt>"
            f"<Dbtr>{name}<Id><OrgId>"
            f"<Othr><Id>{head.unit_no}</Id><SchmeNm><Prtry>{UNIT_SCHEME}</Prtry></SchmeNm></Othr>"
            f"<Othr><Id>{head.centre_node}</Id><SchmeNm><Prtry>{NODE_SCHEME}</Prtry></SchmeNm></Othr>"
            f"</OrgId></Id></Dbtr>"
            f"<DbtrAcct><Id><Othr><Id>{head.debit_account}</Id></Othr></Id><Ccy>CNY</Ccy></DbtrAcct>"
            f"<DbtrAgt><FinInstnId><Othr><Id>{receiver}</Id></Othr></FinInstnId></DbtrAgt>"
            f"{transfers}</PmtInf>")


def _document(msg_id: str, created: str, count: int, total: str, sender: str, payments: str,
              definition: str = PAIN001) -> str:
    return (f'<Document xmlns="{ISO_PREFIX}{definition}"><CstmrCdtTrfInitn><GrpHdr>'
            f"<MsgId>{esc(msg_id)}</MsgId><CreDtTm>{created}</CreDtTm>"
            f"<NbOfTxs>{count}</NbOfTxs><CtrlSum>{total}</CtrlSum>"
            f"<InitgPty><Id><OrgId><Othr><Id>{sender}</Id></Othr></OrgId></Id></InitgPty></GrpHdr>"
            f"{payments}</CstmrCdtTrfInitn></Document>")


def encode_pain001(instructions: Sequence[base.Instruction], msg_id: str | None, created: str,
                   sender: str, receiver: str, definition: str = PAIN001) -> str:
    """One pain.001 document in version ``definition`` (one of :data:`PAIN001_VERSIONS`):
    consecutive instructions from the same debtor, account and date share a PmtInf; each is
    one CdtTrfTxInf.  ``msg_id`` None is a batch's (:func:`batch_id`); ``sender`` and
    ``receiver`` are checked nodes."""
    if len(instructions) == 1 and msg_id is not None:
        # The link's case, kept short: one instruction, its reference as the MsgId.
        m = instructions[0]
        e = _same if _plain(m) else esc
        if e is esc:
            _check_instruction(-1, m)
        total = _total(m.amount)
        return _document(msg_id, created, 1, total, sender,
                         _payment(instructions, receiver, e, total, definition), definition)
    plain = True
    seen: set[str] = set()
    for i, m in enumerate(instructions):
        if not _plain(m):
            _check_instruction(i, m)
            plain = False
        if m.seq_no in seen:
            raise AdapterError(f"instructions[{i}].seq_no: appears twice in the batch")
        seen.add(m.seq_no)
    e = _same if plain else esc
    if msg_id is None:
        msg_id = batch_id(instructions)
    groups: list[list[base.Instruction]] = []
    key = None
    for m in instructions:
        k = (m.debit_account, m.debit_name, m.centre_node, m.unit_no, m.send_date)
        if k != key:
            groups.append([])
            key = k
        groups[-1].append(m)
    payments = "".join(_payment(g, receiver, e, _total(sum(m.amount for m in g)), definition)
                       for g in groups)
    return _document(msg_id, created, len(instructions),
                     _total(sum(m.amount for m in instructions)), sender, payments, definition)


def _signature(tx: Element, r: Reader) -> bytes:
    for data in children(tx, r.t["SplmtryData"]):
        for sig in children(first(data, r.t["Envlp"]), f"{{{LINK_NS}}}Sgntr"):
            raw = "".join((sig.text or "").split())
            try:
                return base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise AdapterError("Sgntr: not base64") from None
    return b""


def decode_pain001(doc: Element, r: Reader) -> tuple[str, list[base.Instruction]]:
    """(MsgId, every instruction) of a validated pain.001.001.09 or .03 document."""
    t = r.t
    root = first(doc, t["CstmrCdtTrfInitn"])
    hdr = first(root, t["GrpHdr"])
    msg_id = v.serial("GrpHdr/MsgId", text_at(hdr, t["MsgId"]))
    out: list[base.Instruction] = []
    for pmt in children(root, t["PmtInf"]):
        if text_at(pmt, t["PmtMtd"]) != "TRF":
            raise AdapterError("PmtMtd: only TRF (credit transfer) is supported")
        requested = first(pmt, t["ReqdExctnDt"])
        if requested is not None and len(requested) == 0:   # .03: a plain ISODate
            when: _dt.date | None = v.parse_date("ReqdExctnDt", requested.text)
        else:
            when = r.date_choice("ReqdExctnDt", requested)
        send_date = when.date() if isinstance(when, _dt.datetime) else when
        if send_date is None:
            raise AdapterError("ReqdExctnDt: missing")
        dbtr = first(pmt, t["Dbtr"])
        ids = {text_at(o, t["SchmeNm"], t["Prtry"]): text_at(o, t["Id"])
               for o in children(at(dbtr, t["Id"], t["OrgId"]), t["Othr"])}
        unit_no = v.match("Dbtr/Id (HPFUNIT)", ids.get(UNIT_SCHEME, ""), v.UNIT_NO, "must be 15 digits")
        centre = v.node("Dbtr/Id (HPFNODE)", ids.get(NODE_SCHEME, ""))
        debit_name = text_at(dbtr, t["Nm"])
        debit_account = v.account("DbtrAcct", r.account_id("DbtrAcct", first(pmt, t["DbtrAcct"])))
        r.currency("DbtrAcct/Ccy", at(pmt, t["DbtrAcct"], t["Ccy"]))
        group: list[base.Instruction] = []
        for tx in children(pmt, t["CdtTrfTxInf"]):
            group.append(_instruction(tx, r, send_date, centre, unit_no, debit_account, debit_name))
        _check_counts(f"PmtInf {text_at(pmt, t['PmtInfId'])!r}", pmt, r, group)
        out.extend(group)
    _check_counts("GrpHdr", hdr, r, out)
    return msg_id, out


def _check_counts(where: str, el: Element | None, r: Reader, group: list[base.Instruction]) -> None:
    t = r.t
    count = text_at(el, t["NbOfTxs"])
    if count and int(count) != len(group):
        raise AdapterError(f"{where}: NbOfTxs {count} but {len(group)} transfers")
    ctrl = text_at(el, t["CtrlSum"])
    if ctrl and v.parse_amount(f"{where}/CtrlSum", ctrl) != sum(m.amount for m in group):
        raise AdapterError(f"{where}: CtrlSum {v.show(ctrl.strip())} is not the sum of the transfers")


def _instruction(tx: Element, r: Reader, send_date: _dt.date, centre: str, unit_no: str,
                 debit_account: str, debit_name: str) -> base.Instruction:
    t = r.t
    seq_no = v.serial("EndToEndId", text_at(tx, t["PmtId"], t["EndToEndId"]))
    instrument = text_at(tx, t["PmtTpInf"], t["LclInstrm"], t["Prtry"])
    if instrument not in (SAME_BANK, CROSS_BANK):
        raise AdapterError(f"PmtTpInf/LclInstrm/Prtry: must be {SAME_BANK} or {CROSS_BANK}, "
                           f"not {v.show(instrument)}")
    same_bank = instrument == SAME_BANK
    amount = first(at(tx, t["Amt"]), t["InstdAmt"])
    if amount is None:
        raise AdapterError("Amt: only InstdAmt is supported")
    fen = r.amount("InstdAmt", amount)
    if fen <= 0:
        raise AdapterError("InstdAmt: amount must be greater than zero")
    code = text_at(tx, t["CdtrAgt"], t["FinInstnId"], t["ClrSysMmbId"], t["MmbId"])
    if not same_bank and not code:
        raise AdapterError("CdtrAgt: a CNAPS transfer needs the creditor's bank code")
    v.match("CdtrAgt/ClrSysMmbId/MmbId", code, v.BANK_CODE, "must be a 12-digit CNAPS code",
            optional=True)
    acct = first(tx, t["CdtrAcct"])
    if acct is None:
        raise AdapterError("CdtrAcct: missing")
    r.currency("CdtrAcct/Ccy", first(acct, t["Ccy"]))
    kind = text_at(acct, t["Tp"], t["Prtry"])
    if kind not in (PERSONAL, CORPORATE):
        raise AdapterError(f"CdtrAcct/Tp/Prtry: must be {PERSONAL} or {CORPORATE}, not {v.show(kind)}")
    purpose = text_at(tx, t["Purp"], t["Prtry"])
    if purpose not in PURPOSES:
        raise AdapterError(f"Purp/Prtry: {v.show(purpose)} is not a known purpose")
    memo = [u.text or "" for u in children(first(tx, t["RmtInf"]), t["Ustrd"])]
    if len(memo) > 1:
        raise AdapterError("RmtInf: at most one Ustrd is supported")
    return base.Instruction(
        seq_no=seq_no, send_date=send_date,
        centre_node=centre, unit_no=unit_no, debit_account=debit_account, debit_name=debit_name,
        creditor_account=v.account("CdtrAcct", r.account_id("CdtrAcct", acct)),
        creditor_name=text_at(tx, t["Cdtr"], t["Nm"]), creditor_bank_code=code,
        creditor_personal=kind == PERSONAL, same_bank=same_bank, amount=fen, purpose=purpose,
        memo=memo[0] if memo else "", reference=text_at(tx, t["PmtId"], t["InstrId"]),
        signature=_signature(tx, r),
    )


# -- pain.002 -----------------------------------------------------------------------------


def _reason(code: str, text: str) -> str:
    if not code and not text:
        return ""
    out = ["<StsRsnInf>"]
    if code:
        out.append(f"<Rsn><Prtry>{esc(code)}</Prtry></Rsn>")
    out.extend(f"<AddtlInf>{esc(piece)}</AddtlInf>" for piece in v.chunks(text, ADDTL_INF_LEN))
    out.append("</StsRsnInf>")
    return "".join(out)


def encode_pain002(m: base.Receipt | base.Result | base.NotFound, created: str) -> str:
    """A status report on one instruction (see the package docstring for the status codes)."""
    v.serial("seq_no", m.seq_no)
    v.serial("reply_to", m.reply_to)
    v.serial("ref", m.ref)
    host = bank = reason = ""
    if isinstance(m, base.Receipt):
        status = "ACSP"
        bank = v.text("bank_seq_no", m.bank_seq_no, 35)
    elif isinstance(m, base.Result):
        if not isinstance(m.succeeded, bool):
            raise AdapterError("succeeded: must be a boolean")
        status = "ACSC" if m.succeeded else "RJCT"
        v.text("code", m.code, CODE_LEN)
        if m.code == NOT_FOUND:
            raise AdapterError(f"code: {NOT_FOUND} is reserved for NotFound")
        reason = _reason(m.code, v.text("text", m.text, TEXT_LEN))
        host = v.text("host_seq_no", m.host_seq_no, 35)
        bank = v.text("bank_seq_no", m.bank_seq_no, 35)
    else:
        status = "RJCT"
        reason = _reason(NOT_FOUND, "")
    original = PAIN001 if m.reply_to == m.ref else STATUS_QUERY_DEF
    ref = esc(m.ref)
    host_ref = f"<AcctSvcrRef>{esc(host)}</AcctSvcrRef>" if host else ""
    bank_ref = f"<ClrSysRef>{esc(bank)}</ClrSysRef>" if bank else ""
    return (f'<Document xmlns="{ISO_PREFIX}{PAIN002}"><CstmrPmtStsRpt><GrpHdr>'
            f"<MsgId>{esc(m.seq_no)}</MsgId><CreDtTm>{created}</CreDtTm></GrpHdr>"
            f"<OrgnlGrpInfAndSts><OrgnlMsgId>{esc(m.reply_to)}</OrgnlMsgId>"
            f"<OrgnlMsgNmId>{original}</OrgnlMsgNmId></OrgnlGrpInfAndSts>"
            f"<OrgnlPmtInfAndSts><OrgnlPmtInfId>{ref}</OrgnlPmtInfId><TxInfAndSts>"
            f"<OrgnlEndToEndId>{ref}</OrgnlEndToEndId><TxSts>{status}</TxSts>{reason}"
            f"{host_ref}{bank_ref}</TxInfAndSts></OrgnlPmtInfAndSts></CstmrPmtStsRpt></Document>")


def _read_reasons(infos: list[Element], r: Reader) -> tuple[str, str]:
    """(code, text) of the status reasons: the first reason's code and texts, then any further
    reasons appended to the text as ``; CODE text``."""
    t = r.t
    rsn_tag, info_tag = t["Rsn"], t["AddtlInf"]
    code, texts = "", []
    for i, info in enumerate(infos):
        this, words = "", []
        for c in info:
            if c.tag == rsn_tag:
                for choice in c:          # Cd or Prtry, exactly one (schema)
                    this = choice.text or ""
            elif c.tag == info_tag:
                words.append(c.text or "")
        if i == 0:
            code = this
            texts.extend(words)
        else:
            texts.append("; " + " ".join(p for p in (this, "".join(words)) if p))
    return code, "".join(texts)


def _fields(el: Element, r: Reader) -> tuple[dict[str, str], list[Element]]:
    """The texts of ``el``'s single-valued children by tag, and its StsRsnInf children: one
    pass over the children, much cheaper than a lookup per field."""
    reason_tag = r.t["StsRsnInf"]
    texts: dict[str, str] = {}
    reasons: list[Element] = []
    for c in el:
        if c.tag == reason_tag:
            reasons.append(c)
        else:
            texts[c.tag] = c.text or ""
    return texts, reasons


def _status_message(status: str, where: str, seq_no: str, reply_to: str, ref: str,
                    texts: dict[str, str], reasons: list[Element], r: Reader) -> base.Message:
    t = r.t
    bank = texts.get(t["ClrSysRef"], "")
    if status in _RECEIPT:
        return base.Receipt(seq_no=seq_no, reply_to=reply_to, ref=ref, bank_seq_no=bank)
    code, text = _read_reasons(reasons, r)
    if status in _SUCCESS or status in _FAILURE:
        if status == "RJCT" and code == NOT_FOUND:
            return base.NotFound(seq_no=seq_no, reply_to=reply_to, ref=ref)
        return base.Result(seq_no=seq_no, reply_to=reply_to, ref=ref, succeeded=status in _SUCCESS,
                           host_seq_no=texts.get(t["AcctSvcrRef"], ""), bank_seq_no=bank,
                           code=code, text=text)
    raise AdapterError(f"{where}: status {v.show(status)} has no neutral meaning")


def decode_pain002(doc: Element, r: Reader) -> tuple[str, str, list[base.Message]]:
    """(MsgId, OrgnlMsgId, one message per transaction status) of a validated pain.002.

    A transaction without its own status takes its payment's, then the group's; a report with
    no transaction detail is about the original message (our MsgId of a single instruction is
    its reference), and a payment without transaction detail about its OrgnlPmtInfId.
    """
    t = r.t
    # The schema fixes the order: GrpHdr (MsgId first), OrgnlGrpInfAndSts (OrgnlMsgId first),
    # then OrgnlPmtInfAndSts*, SplmtryData*; positional access saves a lookup per field.
    report = doc[0]
    seq_no = v.serial("GrpHdr/MsgId", report[0][0].text)
    grp_texts, grp_reasons = _fields(report[1], r)
    reply_to = v.serial("OrgnlMsgId", grp_texts.get(t["OrgnlMsgId"], ""))
    pmt_tag = t["OrgnlPmtInfAndSts"]
    payments = [part for part in report.iterchildren(pmt_tag)]
    grp_status = grp_texts.get(t["GrpSts"], "")
    out: list[base.Message] = []
    tx_tag = t["TxInfAndSts"]
    for pmt in payments:
        pmt_texts: dict[str, str] = {}
        pmt_reasons: list[Element] = []
        txs: list[Element] = []
        for c in pmt:
            if c.tag == tx_tag:
                txs.append(c)
            elif c.tag == t["StsRsnInf"]:
                pmt_reasons.append(c)
            else:
                pmt_texts[c.tag] = c.text or ""
        pmt_status = pmt_texts.get(t["PmtInfSts"], "") or grp_status
        if not txs:
            if not pmt_status:
                raise AdapterError("OrgnlPmtInfAndSts: no status at any level")
            ref = v.serial("OrgnlPmtInfId", pmt_texts.get(t["OrgnlPmtInfId"], ""))
            out.append(_status_message(pmt_status, "PmtInfSts", seq_no, reply_to, ref, pmt_texts,
                                       pmt_reasons, r))
        for tx in txs:
            texts, reasons = _fields(tx, r)
            status = texts.get(t["TxSts"], "") or pmt_status
            if not status:
                raise AdapterError("TxInfAndSts: no status at any level")
            ref = v.serial("OrgnlEndToEndId", texts.get(t["OrgnlEndToEndId"], ""))
            out.append(_status_message(status, "TxSts", seq_no, reply_to, ref, texts, reasons, r))
    if not out:
        if not grp_status:
            raise AdapterError("pain.002: no status at any level")
        out.append(_status_message(grp_status, "GrpSts", seq_no, reply_to, reply_to, grp_texts,
                                   grp_reasons, r))
    return seq_no, reply_to, out
