"""The b2e codec: neutral messages to b2e frames and back.

The protocol itself (frame, XML grammar, field tables, return codes) is documented in the
package docstring, :mod:`adapters.b2e`; this module is its implementation.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import functools
import re
from collections.abc import Callable
from typing import ClassVar, NamedTuple

from lxml import etree

from adapters import base
from adapters._xml import parse_xml
from adapters.base import AdapterError

from . import _values as v
from ._frame import HEADER_LEN, MAX_BODY, B2eFramer, check_header
from ._message import (
    ANSWER_HEAD,
    ANSWERS,
    ENTRY,
    NOT_FOUND_BODY,
    REQUEST_HEAD,
    REQUESTS,
    Doc,
    Fields,
    check,
    check_entries,
    check_shape,
    read_doc,
    render,
)

__all__ = [
    "HEADER_LEN",
    "MAX_BODY",
    "PURPOSE_CODES",
    "RET_ALREADY_DONE",
    "RET_NOT_FOUND",
    "RET_OK",
    "RET_REFUSED",
    "B2eAdapter",
    "B2eFramer",
]

RET_OK, RET_OK_MSG = "0000", "交易成功"
"""The request was processed; the body says the rest."""
RET_ALREADY_DONE, RET_ALREADY_DONE_MSG = "2001", "重复交易，返回原交易结果"
"""PAYENT answer to a resent SerialNo: nothing was executed again; the body is the original outcome."""
RET_NOT_FOUND, RET_NOT_FOUND_MSG = "2002", "原交易不存在"
"""QPAYENT answer: the bank has no transfer with that OrigSerialNo."""
RET_REFUSED, RET_REFUSED_MSG = "9999", "交易失败"
"""A refused SIGNON or ACK whose neutral answer gave no code of its own."""

_RESERVED_REFUSAL_CODES = frozenset({RET_OK, RET_REFUSED})

PURPOSE_CODES: dict[str, str] = {
    "withdrawal": "01", "loan_disbursement": "02", "allocation": "03", "deposit_placement": "04",
    "refund": "05", "fee": "06", "other": "99",
}
"""PAYENT ``Purpose`` code per neutral purpose (gateway.model.PURPOSES)."""
_PURPOSES = {code: purpose for purpose, code in PURPOSE_CODES.items()}

CURRENCY = "CNY"
_MAX_SIGNATURE = 16 * 1024
_MAX_SIGNATURE_B64 = (_MAX_SIGNATURE + 2) // 3 * 4
_DEPTH = 5  # B2E / body / Entries / Entry / leaf

_PROCESSING = "P"
_REFUSABLE = frozenset({"SIGNON", "ACK"})  # answers whose neutral message says ok or not
# TxStatus, HostSerialNo, BankSerialNo, ResultCode, ResultMsg joined by NUL, as the
# validators accept them: one match in the common case.
_OUTCOME_BODY = re.compile(rf"[SFP]\0(?:{v.SERIAL.pattern})?\0(?:{v.SERIAL.pattern})?"
                           rf"\0{v.TEXT_CHAR}{{0,{v.CODE_LEN}}}\0{v.TEXT_CHAR}{{0,{v.MESSAGE_LEN}}}")


class _Out(NamedTuple):
    """What one message encodes to, before the head's clock stamp and parties are added.

    ``reply_to`` is None for a request; ``ret`` is the answer's (RetCode, RetMsg).  A
    NamedTuple rather than a frozen dataclass: it is built once per encode, and this is
    several times cheaper.
    """

    code: str
    seq_no: str
    body: Fields
    reply_to: str | None = None
    ret: tuple[str, str] = (RET_OK, RET_OK_MSG)
    entries: list[Fields] | None = None


def _bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise AdapterError(f"{field}: must be a boolean")
    return value


def _reply_to(value: object) -> str:
    if value == "":
        raise AdapterError("reply_to: b2e answers must echo the request serial")
    return v.serial("reply_to", value)


def _refusal(ok: object, code: object, text: object) -> tuple[str, str]:
    """(RetCode, RetMsg) of a SIGNON or ACK answer; see the package docstring."""
    _bool("ok", ok)
    code = v.text("code", code, v.CODE_LEN)
    text = v.text("text", text, v.MESSAGE_LEN)
    if ok:
        if code:
            raise AdapterError("code: an accepting b2e answer carries RetCode 0000 and no code of its own")
        return RET_OK, text
    if code in _RESERVED_REFUSAL_CODES:
        raise AdapterError(f"code: {code} is reserved in b2e and cannot be a refusal's code")
    return code or RET_REFUSED, text


def _read_refusal(head: dict[str, str]) -> tuple[bool, str, str]:
    """(ok, code, text) of a SIGNON or ACK answer head."""
    ret = head["RetCode"]
    if ret == RET_OK:
        return True, "", head["RetMsg"]
    return False, ("" if ret == RET_REFUSED else ret), head["RetMsg"]


class B2eAdapter:
    """The b2e protocol as a sans-I/O codec (see :mod:`adapters.b2e` for the protocol).

    ``clock`` only fills the head's TransDate and TransTime (the moment a message is
    written); it defaults to local :func:`datetime.datetime.now`.  One instance serves any
    number of links: it keeps no per-connection state.
    """

    name: ClassVar[str] = "b2e"
    max_frame: ClassVar[int] = MAX_BODY

    def __init__(self, clock: Callable[[], _dt.datetime] | None = None) -> None:
        self._clock = clock or _dt.datetime.now
        self._encoders: dict[type, Callable[..., _Out]] = {
            base.SignOn: self._enc_sign_on, base.SignOnAnswer: self._enc_sign_on_answer,
            base.Heartbeat: self._enc_heartbeat, base.HeartbeatAnswer: self._enc_heartbeat_answer,
            base.Instruction: self._enc_instruction, base.StatusQuery: self._enc_status_query,
            base.BalanceQuery: self._enc_balance_query, base.Ack: self._enc_ack,
            base.Receipt: self._enc_receipt, base.Result: self._enc_result,
            base.NotFound: self._enc_not_found, base.Movement: self._enc_movement,
            base.Balance: self._enc_balance, base.Statement: self._enc_statement,
        }

    def framer(self) -> B2eFramer:
        """A fresh framer for one connection."""
        return B2eFramer(self.max_frame)

    # -- encode ----------------------------------------------------------------------

    def encode(self, message: base.Message, *, sender: str, receiver: str = "") -> bytes:
        """One complete frame (length header included) carrying ``message``.

        ``sender`` and ``receiver`` are the two parties' numbers, written to the head's
        SendNo and RecvNo (``receiver`` may be empty).  Raises :class:`AdapterError` naming
        the field when a value cannot be carried.
        """
        out = self._out(message)
        return self._write(out, self._head(out, sender, receiver))

    def check(self, message: base.Message, *, sender: str, receiver: str = "") -> None:
        """Raise the :class:`AdapterError` that :meth:`encode` would raise for ``message``,
        without writing the frame (the frame-size limit aside)."""
        out = self._out(message)
        check(self._head(out, sender, receiver), out.body, out.entries)

    def _out(self, message: base.Message) -> _Out:
        encoder = self._encoders.get(type(message))
        if encoder is None:
            raise AdapterError(f"b2e cannot carry a {type(message).__name__}")
        return encoder(message)

    def encode_already_done(self, message: base.Receipt | base.Result, *, sender: str,
                            receiver: str = "") -> bytes:
        """The answer to a resent PAYENT whose SerialNo the bank already has: RetCode 2001
        with the original outcome ``message`` in the body (for a bank-side peer).

        It decodes to ``message``, exactly as the first answer did.  ``message`` must answer
        the transfer itself (``reply_to == ref``).
        """
        if not isinstance(message, (base.Receipt, base.Result)):
            raise AdapterError(f"an already-done answer carries a Receipt or Result, not a "
                               f"{type(message).__name__}")
        out = self._encoders[type(message)](message)
        if out.code != "PAYENT":
            raise AdapterError("reply_to: an already-done answer answers the resent transfer "
                               "itself (reply_to == ref)")
        out = out._replace(ret=(RET_ALREADY_DONE, RET_ALREADY_DONE_MSG))
        return self._write(out, self._head(out, sender, receiver))

    def _head(self, out: _Out, sender: str, receiver: str) -> Fields:
        """The head of ``out``: the parties and the clock's stamp."""
        v.node("sender", sender)
        v.node("receiver", receiver, optional=True)
        now = self._clock()
        if not isinstance(now, _dt.datetime):
            raise AdapterError("clock: must return a datetime")
        head: Fields = [("TransCode", out.code), ("SerialNo", v.serial("seq_no", out.seq_no))]
        if out.reply_to is not None:
            head.append(("ReplyTo", out.reply_to))
        # %-formatting: about twice as fast as f-strings with format specs.
        head += [("TransDate", "%04d%02d%02d" % (now.year, now.month, now.day)),  # noqa: UP031
                 ("TransTime", "%02d%02d%02d" % (now.hour, now.minute, now.second)),  # noqa: UP031
                 ("SendNo", sender), ("RecvNo", receiver)]
        if out.reply_to is not None:
            head += [("RetCode", out.ret[0]), ("RetMsg", out.ret[1])]
        return head

    def _write(self, out: _Out, head: Fields) -> bytes:
        """The frame for ``out`` under ``head``."""
        body = render(head, out.body, out.entries)
        if len(body) > self.max_frame:
            raise AdapterError(f"message of {len(body)} bytes exceeds the b2e frame limit {self.max_frame}")
        return b"%06d" % len(body) + body

    # link control

    def _enc_sign_on(self, m: base.SignOn) -> _Out:
        return _Out("SIGNON", m.seq_no, [("NodeNo", v.node("node", m.node))])

    def _enc_sign_on_answer(self, m: base.SignOnAnswer) -> _Out:
        return _Out("SIGNON", m.seq_no, [("NodeNo", v.node("node", m.node))],
                    _reply_to(m.reply_to), _refusal(m.ok, m.code, m.text))

    def _enc_heartbeat(self, m: base.Heartbeat) -> _Out:
        return _Out("LINETEST", m.seq_no, [("NodeNo", v.node("node", m.node))])

    def _enc_heartbeat_answer(self, m: base.HeartbeatAnswer) -> _Out:
        return _Out("LINETEST", m.seq_no, [("NodeNo", v.node("node", m.node))],
                    _reply_to(m.reply_to))

    def _enc_ack(self, m: base.Ack) -> _Out:
        return _Out("ACK", m.seq_no, [], _reply_to(m.reply_to), _refusal(m.ok, m.code, m.text))

    # gateway to bank

    def _enc_instruction(self, m: base.Instruction) -> _Out:
        purpose = PURPOSE_CODES.get(m.purpose) if isinstance(m.purpose, str) else None
        if purpose is None:
            raise AdapterError(f"purpose: b2e has no Purpose code for {v.show(str(m.purpose))}")
        same_bank = _bool("same_bank", m.same_bank)
        personal = _bool("creditor_personal", m.creditor_personal)
        body: Fields = [
            ("TxDate", v.format_date("send_date", m.send_date)),
            ("CentreNo", v.match("centre_node", m.centre_node, v.CENTRE_NODE,
                                 "must be 6 of A-Z 0-9")),
            ("UnitNo", v.match("unit_no", m.unit_no, v.UNIT_NO, "must be 15 digits")),
            ("PayAcctNo", v.account("debit_account", m.debit_account)),
            ("PayAcctName", v.text("debit_name", m.debit_name, v.NAME_LEN, required=True)),
            ("RecAcctNo", v.account("creditor_account", m.creditor_account)),
            ("RecAcctName", v.text("creditor_name", m.creditor_name, v.NAME_LEN, required=True)),
            # A same-bank transfer needs no branch code; a cross-bank one does.
            ("RecBankCode", v.match("creditor_bank_code", m.creditor_bank_code, v.BANK_CODE,
                                    "must be a 12-digit CNAPS code", optional=same_bank)),
            ("RecAcctType", "1" if personal else "0"),
            ("SameBank", "1" if same_bank else "0"),
            ("Currency", CURRENCY),
            ("Amount", v.format_amount("amount", m.amount, positive=True)),
            ("Purpose", purpose),
            ("Memo", v.text("memo", m.memo, v.MEMO_LEN)),
            ("CentreRef", v.text("reference", m.reference, v.REFERENCE_LEN)),
        ]
        if not isinstance(m.signature, bytes):
            raise AdapterError("signature: must be bytes")
        if m.signature:
            if len(m.signature) > _MAX_SIGNATURE:
                raise AdapterError(f"signature: longer than {_MAX_SIGNATURE} bytes")
            body.append(("Signature", base64.b64encode(m.signature).decode("ascii")))
        return _Out("PAYENT", m.seq_no, body)

    def _enc_status_query(self, m: base.StatusQuery) -> _Out:
        return _Out("QPAYENT", m.seq_no, [("OrigSerialNo", v.serial("ref", m.ref)),
                                          ("OrigTxDate", v.format_date("ref_date", m.ref_date))])

    def _enc_balance_query(self, m: base.BalanceQuery) -> _Out:
        return _Out("QACCBAL", m.seq_no, [("AcctNo", v.account("account", m.account)),
                                          ("Currency", CURRENCY)])

    # bank to gateway

    def _enc_receipt(self, m: base.Receipt) -> _Out:
        ref = v.serial("ref", m.ref)
        body: Fields = [("TxStatus", _PROCESSING), ("HostSerialNo", ""),
                        ("BankSerialNo", v.serial("bank_seq_no", m.bank_seq_no, optional=True)),
                        ("ResultCode", ""), ("ResultMsg", "")]
        return self._outcome(m.seq_no, _reply_to(m.reply_to), ref, body)

    def _enc_result(self, m: base.Result) -> _Out:
        ref = v.serial("ref", m.ref)
        body: Fields = [("TxStatus", "S" if _bool("succeeded", m.succeeded) else "F"),
                        ("HostSerialNo", v.serial("host_seq_no", m.host_seq_no, optional=True)),
                        ("BankSerialNo", v.serial("bank_seq_no", m.bank_seq_no, optional=True)),
                        ("ResultCode", v.text("code", m.code, v.CODE_LEN)),
                        ("ResultMsg", v.text("text", m.text, v.MESSAGE_LEN))]
        return self._outcome(m.seq_no, _reply_to(m.reply_to), ref, body)

    @staticmethod
    def _outcome(seq_no: str, reply_to: str, ref: str, body: Fields) -> _Out:
        # The answer to the transfer itself (also when pushed late) is a PAYENT answer;
        # the answer to a status query names the transfer in OrigSerialNo.
        if reply_to == ref:
            return _Out("PAYENT", seq_no, body, reply_to)
        return _Out("QPAYENT", seq_no, [("OrigSerialNo", ref)] + body, reply_to)

    def _enc_not_found(self, m: base.NotFound) -> _Out:
        return _Out("QPAYENT", m.seq_no, [("OrigSerialNo", v.serial("ref", m.ref))],
                    _reply_to(m.reply_to), (RET_NOT_FOUND, RET_NOT_FOUND_MSG))

    def _enc_movement(self, m: base.Movement) -> _Out:
        entries = self._entries(m.entries)
        if not entries:
            raise AdapterError("entries: an account-change notice needs at least one entry")
        return _Out("ACCTNTF", m.seq_no, [], entries=entries)

    def _enc_balance(self, m: base.Balance) -> _Out:
        body: Fields = [
            ("AcctNo", v.account("account", m.account)),
            ("AcctName", v.text("account_name", m.account_name, v.NAME_LEN)),
            ("Currency", CURRENCY),
            ("Balance", v.format_amount("balance", m.balance)),
            ("AvailBal", v.format_amount("available", m.available)),
            ("Overdraft", v.format_amount("overdraft", m.overdraft)),
            ("AcctStatus", v.text("status", m.status, v.STATUS_LEN)),
        ]
        if m.as_of is not None:
            if not isinstance(m.as_of, _dt.datetime) or m.as_of.tzinfo is not None:
                raise AdapterError("as_of: must be a local datetime without time zone")
            body += [("AsOfDate", v.format_date("as_of", m.as_of.date())),
                     ("AsOfTime", v.format_time("as_of", m.as_of.time()))]
        if m.reply_to == "":  # pushed unasked: a notice of its own
            return _Out("BALNTF", m.seq_no, body)
        return _Out("QACCBAL", m.seq_no, body, _reply_to(m.reply_to))

    def _enc_statement(self, m: base.Statement) -> _Out:
        account = v.account("account", m.account)
        entries = self._entries(m.entries)
        for i, e in enumerate(m.entries):
            if e.account != account:
                raise AdapterError(f"entries[{i}].account: differs from the statement's account")
        body: Fields = [("AcctNo", account), ("Currency", CURRENCY)]
        if m.opening_balance is not None:
            body.append(("OpenBal", v.format_amount("opening_balance", m.opening_balance)))
        if m.closing_balance is not None:
            body.append(("CloseBal", v.format_amount("closing_balance", m.closing_balance)))
        return _Out("QPD", m.seq_no, body, _reply_to(m.reply_to), entries=entries)

    @staticmethod
    def _entries(entries: object) -> list[Fields]:
        if not isinstance(entries, tuple):
            raise AdapterError("entries: must be a tuple of Entry")
        out: list[Fields] = []
        for i, e in enumerate(entries):
            f = f"entries[{i}]."
            if not isinstance(e, base.Entry):
                raise AdapterError(f"entries[{i}]: must be an Entry")
            fields: Fields = [
                ("AcctNo", v.account(f + "account", e.account)),
                ("HostSerialNo", v.serial(f + "host_seq_no", e.host_seq_no)),
                ("Amount", v.format_amount(f + "amount", e.amount)),
                ("ValueDate", v.format_date(f + "value_date", e.value_date)),
                ("TxTime", v.format_time(f + "time", e.time)),
                ("PeerAcctNo", v.account(f + "counterparty_account", e.counterparty_account,
                                         optional=True)),
                ("PeerAcctName", v.text(f + "counterparty_name", e.counterparty_name, v.NAME_LEN)),
                ("PeerBankCode", v.match(f + "counterparty_bank_code", e.counterparty_bank_code,
                                         v.BANK_CODE, "must be a 12-digit CNAPS code", optional=True)),
            ]
            if e.balance_after is not None:
                fields.append(("AfterBal", v.format_amount(f + "balance_after", e.balance_after)))
            fields += [("Summary", v.text(f + "summary", e.summary, v.SUMMARY_LEN)),
                       ("Remark", v.text(f + "remark", e.remark, v.SUMMARY_LEN)),
                       ("Reversal", "1" if _bool(f + "reversal", e.reversal) else "0")]
            out.append(fields)
        return out

    # -- decode ----------------------------------------------------------------------

    def decode(self, frame: bytes) -> base.Message:
        """The neutral message in one whole frame (length header included).

        Raises :class:`AdapterError` with a one-line reason, naming the field, for anything
        that is not a complete, consistent b2e message this codec maps.
        """
        try:
            return self._decode(frame)
        except AdapterError:
            raise
        except (ValueError, TypeError, LookupError, UnicodeError, etree.LxmlError) as e:
            # Defensive: every check should have caught bad input first.
            raise AdapterError(f"b2e: undecodable frame ({type(e).__name__})") from e

    def _decode(self, frame: bytes) -> base.Message:
        if not isinstance(frame, (bytes, bytearray)):
            raise AdapterError("frame: must be bytes")
        if len(frame) <= HEADER_LEN:
            raise AdapterError(f"frame: {len(frame)} bytes, no body after the {HEADER_LEN}-digit length")
        length = check_header(frame[:HEADER_LEN], self.max_frame)
        if length != len(frame) - HEADER_LEN:
            raise AdapterError(f"frame: header says {length} body bytes, frame has "
                               f"{len(frame) - HEADER_LEN}")
        root = parse_xml(frame[HEADER_LEN:], max_bytes=self.max_frame, max_depth=_DEPTH,
                         encodings=("gbk",))
        doc = read_doc(root)
        h = doc.head
        check_shape(h, ANSWER_HEAD if doc.answer else REQUEST_HEAD, doc.code,
                    "answer head" if doc.answer else "request head")
        # Consecutive frames mostly share the stamp: remembering good ones skips re-parsing.
        _stamp("TransDate", h["TransDate"], "TransTime", h["TransTime"])
        if doc.answer:
            # One match checks the whole head in the common case; the validators name the
            # culprit otherwise.
            if _ANSWER_HEAD.fullmatch(f"{h['SerialNo']}\0{h['SendNo']}\0{h['RecvNo']}\0"
                                      f"{h['ReplyTo']}\0{h['RetCode']}\0{h['RetMsg']}") is None:
                _name_head_fault(h)
                v.serial("ReplyTo", h["ReplyTo"])
                if not h["RetCode"]:
                    raise AdapterError("RetCode: must not be empty")
                v.text("RetCode", h["RetCode"], v.CODE_LEN)
                v.text("RetMsg", h["RetMsg"], v.MESSAGE_LEN)
                raise AdapterError("head: malformed")  # unreachable: a validator refused
            return self._decode_answer(doc)
        if _REQUEST_HEAD.fullmatch(f"{h['SerialNo']}\0{h['SendNo']}\0{h['RecvNo']}") is None:
            _name_head_fault(h)
            raise AdapterError("head: malformed")  # unreachable: a validator refused
        return self._decode_request(doc)

    # requests

    def _decode_request(self, doc: Doc) -> base.Message:
        code = doc.code
        shape = REQUESTS.get(code)
        if shape is None:
            raise AdapterError(f"TransCode: {code} requests are not part of b2e")
        check_shape(doc.body, shape, code, "request body")
        check_entries(doc, shape, code, "request body")
        h, b = doc.head, doc.body
        seq_no = h["SerialNo"]
        if code == "SIGNON":
            return base.SignOn(seq_no=seq_no, node=v.node("NodeNo", b["NodeNo"]))
        if code == "LINETEST":
            return base.Heartbeat(seq_no=seq_no, node=v.node("NodeNo", b["NodeNo"]))
        if code == "PAYENT":
            return self._dec_instruction(seq_no, b)
        if code == "QPAYENT":
            return base.StatusQuery(seq_no=seq_no, ref=v.serial("OrigSerialNo", b["OrigSerialNo"]),
                                    ref_date=v.parse_date("OrigTxDate", b["OrigTxDate"]))
        if code == "QACCBAL":
            _currency(b)
            return base.BalanceQuery(seq_no=seq_no, account=v.account("AcctNo", b["AcctNo"]))
        if code == "ACCTNTF":
            assert doc.entries is not None
            if not doc.entries:
                raise AdapterError("ACCTNTF: an account-change notice needs at least one Entry")
            return base.Movement(seq_no=seq_no, entries=_read_entries(doc.entries))
        if code == "BALNTF":
            return _read_balance(seq_no, "", b)
        # QPD: well-formed, but the neutral vocabulary has no statement request to map it to.
        raise AdapterError("TransCode: QPD requests have no neutral message (statements are answers only)")

    @staticmethod
    def _dec_instruction(seq_no: str, b: dict[str, str]) -> base.Instruction:
        purpose = _PURPOSES.get(b["Purpose"])
        if purpose is None:
            raise AdapterError(f"Purpose: {v.show(b['Purpose'])} is not a b2e purpose code")
        same_bank = _flag("SameBank", b["SameBank"])
        _currency(b)
        signature = b""
        if "Signature" in b:
            raw = b["Signature"]
            if not raw:
                raise AdapterError("Signature: empty (leave the field out instead)")
            if len(raw) > _MAX_SIGNATURE_B64:
                raise AdapterError(f"Signature: longer than {_MAX_SIGNATURE} bytes")
            try:
                signature = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise AdapterError("Signature: not base64") from None
            if base64.b64encode(signature).decode("ascii") != raw:
                raise AdapterError("Signature: not canonical base64")
        return base.Instruction(
            seq_no=seq_no,
            send_date=v.parse_date("TxDate", b["TxDate"]),
            centre_node=v.match("CentreNo", b["CentreNo"], v.CENTRE_NODE, "must be 6 of A-Z 0-9"),
            unit_no=v.match("UnitNo", b["UnitNo"], v.UNIT_NO, "must be 15 digits"),
            debit_account=v.account("PayAcctNo", b["PayAcctNo"]),
            debit_name=v.text("PayAcctName", b["PayAcctName"], v.NAME_LEN, required=True),
            creditor_account=v.account("RecAcctNo", b["RecAcctNo"]),
            creditor_name=v.text("RecAcctName", b["RecAcctName"], v.NAME_LEN, required=True),
            creditor_bank_code=v.match("RecBankCode", b["RecBankCode"], v.BANK_CODE,
                                       "must be a 12-digit CNAPS code", optional=same_bank),
            creditor_personal=_flag("RecAcctType", b["RecAcctType"]),
            same_bank=same_bank,
            amount=v.parse_amount("Amount", b["Amount"], positive=True),
            purpose=purpose,
            memo=v.text("Memo", b["Memo"], v.MEMO_LEN),
            reference=v.text("CentreRef", b["CentreRef"], v.REFERENCE_LEN),
            signature=signature,
        )

    # answers

    def _decode_answer(self, doc: Doc) -> base.Message:
        code, h = doc.code, doc.head
        ret = h["RetCode"]
        shape = ANSWERS.get(code)
        if shape is None:
            raise AdapterError(f"TransCode: {code} answers are not part of b2e")
        if code == "QPAYENT" and ret == RET_NOT_FOUND:
            shape = NOT_FOUND_BODY
        elif code not in _REFUSABLE and ret != RET_OK and not (
                ret == RET_ALREADY_DONE and code == "PAYENT"):
            # The bank refused the request itself: the neutral vocabulary has no message
            # for that, so the refusal is reported rather than guessed at.
            raise AdapterError(f"{code} refused by the bank: RetCode {v.show(ret)} "
                               f"{v.show(h['RetMsg'])}")
        check_shape(doc.body, shape, code, "answer body")
        check_entries(doc, shape, code, "answer body")
        b = doc.body
        seq_no, reply_to = h["SerialNo"], h["ReplyTo"]
        if code == "SIGNON":
            ok, c, t = _read_refusal(h)
            return base.SignOnAnswer(seq_no=seq_no, reply_to=reply_to,
                                     node=v.node("NodeNo", b["NodeNo"]), ok=ok, code=c, text=t)
        if code == "ACK":
            ok, c, t = _read_refusal(h)
            return base.Ack(seq_no=seq_no, reply_to=reply_to, ok=ok, code=c, text=t)
        if code == "LINETEST":
            return base.HeartbeatAnswer(seq_no=seq_no, reply_to=reply_to,
                                        node=v.node("NodeNo", b["NodeNo"]))
        if code == "PAYENT":
            # RET_ALREADY_DONE carries the original outcome in the same body: same message.
            return _read_outcome(seq_no, reply_to, reply_to, b)
        if code == "QPAYENT":
            ref = v.serial("OrigSerialNo", b["OrigSerialNo"])
            if ret == RET_NOT_FOUND:
                return base.NotFound(seq_no=seq_no, reply_to=reply_to, ref=ref)
            return _read_outcome(seq_no, reply_to, ref, b)
        if code == "QACCBAL":
            return _read_balance(seq_no, reply_to, b)
        # QPD
        _currency(b)
        account = v.account("AcctNo", b["AcctNo"])
        assert doc.entries is not None
        entries = _read_entries(doc.entries)
        for i, e in enumerate(entries):
            if e.account != account:
                raise AdapterError(f"Entries[{i}].AcctNo: differs from the statement's AcctNo")
        return base.Statement(
            seq_no=seq_no, reply_to=reply_to, account=account, entries=entries,
            opening_balance=v.parse_amount("OpenBal", b["OpenBal"]) if "OpenBal" in b else None,
            closing_balance=v.parse_amount("CloseBal", b["CloseBal"]) if "CloseBal" in b else None,
        )


# -- reading bodies -------------------------------------------------------------------


# The head's serials, parties, RetCode and RetMsg joined by NUL (which no XML text holds), as
# the validators in _values would accept them.
_REQUEST_HEAD = re.compile(r"[!-~]{1,32}\0[0-9A-Za-z]{1,20}\0[0-9A-Za-z]{0,20}")
_ANSWER_HEAD = re.compile(_REQUEST_HEAD.pattern + r"\0[!-~]{1,32}"
                          rf"\0{v.TEXT_CHAR}{{1,{v.CODE_LEN}}}\0{v.TEXT_CHAR}{{0,{v.MESSAGE_LEN}}}")


def _name_head_fault(h: dict[str, str]) -> None:
    v.serial("SerialNo", h["SerialNo"])
    v.node("SendNo", h["SendNo"])
    v.node("RecvNo", h["RecvNo"], optional=True)


@functools.lru_cache(maxsize=64)
def _stamp(date_field: str, date: str, time_field: str, time: str) -> None:
    """Refuse an impossible head date or time (a cache of the good ones; refusals raise)."""
    v.parse_date(date_field, date)
    v.parse_time(time_field, time)


def _flag(field: str, value: str) -> bool:
    if value == "1":
        return True
    if value == "0":
        return False
    raise AdapterError(f"{field}: must be 0 or 1, not {v.show(value)}")


def _currency(b: dict[str, str]) -> None:
    if b["Currency"] != CURRENCY:
        raise AdapterError(f"Currency: only {CURRENCY} is carried, not {v.show(b['Currency'])}")


def _read_outcome(seq_no: str, reply_to: str, ref: str, b: dict[str, str]
                  ) -> base.Receipt | base.Result:
    status = b["TxStatus"]
    host_seq_no, bank_seq_no = b["HostSerialNo"], b["BankSerialNo"]
    code, text = b["ResultCode"], b["ResultMsg"]
    if _OUTCOME_BODY.fullmatch(f"{status}\0{host_seq_no}\0{bank_seq_no}\0{code}\0{text}") is None:
        # Name the culprit (one of these raises).
        v.serial("HostSerialNo", host_seq_no, optional=True)
        v.serial("BankSerialNo", bank_seq_no, optional=True)
        v.text("ResultCode", code, v.CODE_LEN)
        v.text("ResultMsg", text, v.MESSAGE_LEN)
        raise AdapterError(f"TxStatus: must be S, F or P, not {v.show(status)}")
    if status == _PROCESSING:
        # A host serial or message while processing is informational; the outcome is not known.
        return base.Receipt(seq_no=seq_no, reply_to=reply_to, ref=ref, bank_seq_no=bank_seq_no)
    return base.Result(seq_no=seq_no, reply_to=reply_to, ref=ref, succeeded=status == "S",
                       host_seq_no=host_seq_no, bank_seq_no=bank_seq_no, code=code, text=text)


def _read_balance(seq_no: str, reply_to: str, b: dict[str, str]) -> base.Balance:
    _currency(b)
    as_of = None
    if "AsOfDate" in b or "AsOfTime" in b:
        if "AsOfDate" not in b or "AsOfTime" not in b:
            raise AdapterError("AsOfDate, AsOfTime: give both or neither")
        as_of = _dt.datetime.combine(v.parse_date("AsOfDate", b["AsOfDate"]),
                                     v.parse_time("AsOfTime", b["AsOfTime"]))
    return base.Balance(
        seq_no=seq_no, reply_to=reply_to,
        account=v.account("AcctNo", b["AcctNo"]),
        balance=v.parse_amount("Balance", b["Balance"]),
        available=v.parse_amount("AvailBal", b["AvailBal"]),
        overdraft=v.parse_amount("Overdraft", b["Overdraft"]),
        account_name=v.text("AcctName", b["AcctName"], v.NAME_LEN),
        status=v.text("AcctStatus", b["AcctStatus"], v.STATUS_LEN),
        as_of=as_of,
    )


def _read_entries(rows: list[dict[str, str]]) -> tuple[base.Entry, ...]:
    entries = []
    for i, r in enumerate(rows):
        f = f"Entries[{i}]."
        check_shape(r, ENTRY, f"Entries[{i}]")
        entries.append(base.Entry(
            account=v.account(f + "AcctNo", r["AcctNo"]),
            host_seq_no=v.serial(f + "HostSerialNo", r["HostSerialNo"]),
            amount=v.parse_amount(f + "Amount", r["Amount"]),
            value_date=v.parse_date(f + "ValueDate", r["ValueDate"]),
            time=v.parse_time(f + "TxTime", r["TxTime"]),
            counterparty_account=v.account(f + "PeerAcctNo", r["PeerAcctNo"], optional=True),
            counterparty_name=v.text(f + "PeerAcctName", r["PeerAcctName"], v.NAME_LEN),
            counterparty_bank_code=v.match(f + "PeerBankCode", r["PeerBankCode"], v.BANK_CODE,
                                           "must be a 12-digit CNAPS code", optional=True),
            balance_after=v.parse_amount(f + "AfterBal", r["AfterBal"]) if "AfterBal" in r else None,
            summary=v.text(f + "Summary", r["Summary"], v.SUMMARY_LEN),
            remark=v.text(f + "Remark", r["Remark"], v.SUMMARY_LEN),
            reversal=_flag(f + "Reversal", r["Reversal"]),
        ))
    return tuple(entries)
