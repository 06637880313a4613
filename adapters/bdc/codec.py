"""The bdc codec: neutral messages to bdc frames and back (docs/protocols/bdc.md).

Frame: 16-byte header (sender node ``[A-Z0-9]{6}``, flag ``'1'`` for sign-in-class
messages BDC001/SYS600 and ``'0'`` otherwise, 9 padding bytes written as NUL), a 4-byte
big-endian body length, then the GBK XML body in clear: TLS replaces the vendor's body
encryption, so BDC001's ``HandKey`` travels empty.

Two dialects, one reader (docs/protocols/bdc.md says why):

* **canonical** (``BdcAdapter(echo=False)``, what a per-request link uses): answers are
  written exactly as the deployed interface writes them, with the twelve-field answer
  head and no correlation field; the connection tells which request an answer belongs
  to, and :meth:`BdcAdapter.decode_answer` binds an answer to its request.
* **echo** (the registered default, for the opt-in persistent multi-frame link between
  our own parts): every answer head also carries ``SendSeqNo`` echoing the request, and
  BDC110 answers body ``TxSeqNo``; a failed BDC109 answer with HostStatus ``1`` is a
  failure and a failed BDC110 answer with ``TxSeqNo`` and no OldTxStatus is
  :class:`NotFound`.  A peer that ignores unknown fields (the deployed centre does) still
  reads every echo frame.

Reading is tolerant in both dialects: no field the deployed heads lack is required,
unknown fields are ignored and counted (:attr:`BdcAdapter.ignored`), amounts are any
decimal exact in fen, notice files may have more columns, several rows, empty DATA.

Outcomes as deployed: a BDC109 answer with TxStatus ``0`` (HostStatus ``0`` or absent) is
a successful :class:`Result`; any other answer is a :class:`Receipt` (the outcome is asked
with BDC110).  A BDC110 answer with TxStatus ``0`` gives OldTxStatus ``0``/``1``/``2`` as
success / failure / Receipt (still unknown); a failed BDC110 (and a failed BDC123/BDC113)
raises :class:`AnswerRefused`, so the query stays unanswered, is asked again, and ends in
``in_doubt``.

Mapping choices (so that every message survives ``decode(encode(m)) == m`` in the echo
dialect):

* Request vs response is told by the presence of head ``TxStatus``.
* The generic codes and texts (``00000`` / 成功 on success, ``10000`` / 失败 on failure)
  are written when a message has no code or text of its own, and read back as empty.
* A Receipt or Result answers the instruction itself (BDC109) when ``reply_to == ref``,
  otherwise a StatusQuery (BDC110).  ``bank_seq_no`` travels in the head's ``BDCSeqNo``.
* SYS600 requests use the Centre's head (§3.1) when the sending node is a centre (``C…``)
  and the pushed head (§3.3) otherwise; both are accepted.
* Requests are filled as the deployed centre fills them: TxUnitNo, CustNo and OperNo from
  the centre's profile (:class:`CentreProfile`), CrBankName from the creditor's bank code,
  the centre's reference in both Summary and RefSeqNo so that it returns in notices.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as _dt
import re
import zlib
from dataclasses import dataclass
from collections import Counter
from typing import Callable, ClassVar, Mapping

from lxml import etree

from adapters import base
from adapters._xml import parse_xml
from adapters.base import AdapterError

from . import _batch, _files
from . import _values as v
from . import messages as bm
from ._frame import HEADER_LEN, MAX_BODY, BdcFramer, check_header
from .cipher import BodyCipher
from ._message import (CENTRE, PUSHED, REQUEST_BODIES, REQUEST_HEADS, RESPONSE, RESPONSE_BODIES,
                       Doc, Fields, Groups, check, check_shape, read_doc, read_files, read_rows, render)

__all__ = ["BdcAdapter", "BdcFramer", "MAX_BODY", "HEADER_LEN", "OPER_NO", "CentreProfile",
           "AnswerRefused"]

OPER_NO = "hpf-gateway"
"""OperNo written for a centre with no profile (the deployed centre takes it from its config)."""

# CrBankName by the creditor's 3-digit bank code, as the public centre-side code names them.
BANK_NAMES = {"102": "中国工商银行股份有限公司", "103": "中国农业银行股份有限公司",
              "104": "中国银行股份有限公司", "105": "中国建设银行股份有限公司", "301": "交通银行"}


@dataclass(frozen=True)
class CentreProfile:
    """How one centre fills the heads of its requests (config ``[centres.X]``)."""

    unit_no: str = ""      # TxUnitNo: the 15-digit institution code
    cust_no: str = ""      # CustNo: the customer number the bank gave the centre
    oper_no: str = OPER_NO  # OperNo: the operator


class AnswerRefused(AdapterError):
    """A well-formed answer whose TxStatus says the call itself failed (no neutral message).

    ``code`` and ``text`` are the bank's RtnCode and RtnMessage.
    """

    def __init__(self, tx_code: str, code: str, text: str) -> None:
        super().__init__(f"{tx_code} answered TxStatus failed: RtnCode {v.show(code)} {v.show(text)}")
        self.tx_code, self.code, self.text = tx_code, code, text

_SIGN_IN_CODES = frozenset({"BDC001", "SYS600"})
_SIGN_IN_REQUESTS = (base.SignOn, base.Heartbeat)
_SIGN_IN_ANSWERS = (base.SignOnAnswer, base.HeartbeatAnswer)

OK_CODE, OK_TEXT = "00000", "成功"
FAIL_CODE, FAIL_TEXT = "10000", "失败"
PROCESSING_TEXT = "受理成功"
NOT_FOUND_TEXT = "原交易不存在"
_MAX_IGNORED_NAMES = 64  # distinct unknown field names counted; the rest count as "…"

_BUS_TYPES = {
    "withdrawal": "02", "loan_disbursement": "04", "allocation": "18", "deposit_placement": "09",
    "fee": "13", "refund": "2713", "other": "20",
}
_PURPOSES = {code: purpose for purpose, code in _BUS_TYPES.items()}
_MAX_SIGNATURE = 16 * 1024
_AREA = re.compile(r"[0-9]{4}")
_BANK_NO3 = re.compile(r"[0-9]{3}")


def _ok_code(ok: bool, code: str, text: str) -> tuple[str, str, str]:
    v.text("code", code, v.CODE_LEN)
    v.text("text", text, v.MESSAGE_LEN)
    if ok:
        return "0", code or OK_CODE, text or OK_TEXT
    return "1", code or FAIL_CODE, text or FAIL_TEXT


def _read_code(ok: bool, head: dict[str, str]) -> tuple[str, str]:
    """(code, text) of a head, with the generic ones read back as empty."""
    code, text = head.get("RtnCode", ""), head.get("RtnMessage", "")
    default_code, default_text = (OK_CODE, OK_TEXT) if ok else (FAIL_CODE, FAIL_TEXT)
    return ("" if code == default_code else code), ("" if text == default_text else text)


# -- the adapter ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Out:
    """What one message encodes to, before rendering."""

    head: Fields
    body: Fields
    file: tuple[str, str] | None = None
    groups: Groups = ()


class BdcAdapter:
    """The bdc protocol as a sans-I/O codec (see the module docstring for the mapping).

    ``clock`` only fills the date and time heads (SendDate/SendTime of requests other than
    BDC109, ReceiveDate/ReceiveTime of answers, BDCDate/BDCTime) and FILE_LIST names; it
    defaults to local :func:`datetime.datetime.now`.  ``echo`` chooses the dialect (module
    docstring); ``centres`` maps a centre's node to how it fills request heads.  One
    instance serves any number of links.
    """

    name: ClassVar[str] = "bdc"
    max_frame: ClassVar[int] = MAX_BODY

    def __init__(self, clock: Callable[[], _dt.datetime] | None = None, *, echo: bool = True,
                 centres: Mapping[str, CentreProfile] | None = None,
                 cipher: BodyCipher | None = None) -> None:
        self._clock = clock or _dt.datetime.now
        self.echo = echo
        self.cipher = cipher
        # The session key of the bank's link (set by a sign-on), shared with variants.
        self._session: dict[str, bytes] = {}
        self.centres: dict[str, CentreProfile] = dict(centres or {})
        self.ignored: Counter[str] = Counter()
        """Unknown field names read and ignored, with how often (for a metric)."""
        self._encoders: dict[type, Callable[..., _Out]] = {
            base.SignOn: self._enc_sign_on, base.SignOnAnswer: self._enc_sign_on_answer,
            base.Heartbeat: self._enc_heartbeat, base.HeartbeatAnswer: self._enc_heartbeat_answer,
            base.Instruction: self._enc_instruction, base.StatusQuery: self._enc_status_query,
            base.BalanceQuery: self._enc_balance_query, base.Ack: self._enc_ack,
            base.Receipt: self._enc_receipt, base.Result: self._enc_result,
            base.NotFound: self._enc_not_found, base.Movement: self._enc_movement,
            base.Balance: self._enc_balance, base.Statement: self._enc_statement,
            bm.SignOff: self._enc_sign_off, bm.SignOffAnswer: self._enc_sign_off_answer,
            bm.Collection: self._enc_collection, bm.Batch: self._enc_batch,
            bm.BatchAccepted: self._enc_batch_accepted, bm.BatchQuery: self._enc_batch_query,
            bm.BatchStatus: self._enc_batch_status, bm.BatchResultQuery: self._enc_batch_result_query,
            bm.BatchResults: self._enc_batch_results, bm.BranchQuery: self._enc_branch_query,
            bm.Branches: self._enc_branches, bm.StatementQuery: self._enc_statement_query,
        }

    def framer(self) -> BdcFramer:
        """A fresh framer for one connection."""
        return BdcFramer(self.max_frame)

    def variant(self, *, echo: bool | None = None,
                centres: Mapping[str, CentreProfile] | None = None) -> "BdcAdapter":
        """A copy with another dialect or centre profiles (sharing the clock and counter)."""
        other = BdcAdapter(self._clock, echo=self.echo if echo is None else echo,
                           centres=self.centres if centres is None else centres, cipher=self.cipher)
        other.ignored = self.ignored
        other._session = self._session
        return other

    def _seal(self, body: bytes, clear: bool) -> bytes:
        """``body`` as it travels: encrypted with the session key unless ``clear`` or no cipher."""
        if self.cipher is None or clear:
            return body
        key = self._session.get("key")
        if key is None:
            raise AdapterError("no session key: a business message needs a sign-on first")
        return self.cipher.encrypt(body, key)

    def _open(self, frame: bytes) -> tuple[bytes, bool]:
        """(the clear body of ``frame``, whether it travelled in clear).

        Flag '1' is clear; with a cipher, '0' is encrypted, except a clear XML body, which
        the caller then accepts only for sign-in-class codes (the deployed replies to those
        carry '0' in clear)."""
        body = bytes(frame[HEADER_LEN:])
        if self.cipher is None or frame[6] == 0x31 or body.startswith(b"<?xml"):
            return body, True
        key = self._session.get("key")
        if key is None:
            raise AdapterError("body: encrypted, and no session key (no sign-on yet)")
        return self.cipher.decrypt(body, key), False

    def for_gateway(self, config: object, bank: object) -> "BdcAdapter":
        """The instance one bank's link uses: every centre's head profile from ``config``
        (its ``centres``: ``id``, ``unit_no``, ``cust_no``, ``oper_no``) and the dialect of
        the bank's connection model (``bank.connection``: the echo dialect only for
        ``"persistent"``)."""
        centres = {c.id: CentreProfile(c.unit_no, c.cust_no, c.oper_no or OPER_NO)  # type: ignore[attr-defined]
                   for c in getattr(config, "centres", {}).values()}
        return self.variant(echo=getattr(bank, "connection", "persistent") == "persistent",
                            centres=centres)

    # -- encode ----------------------------------------------------------------------

    def encode(self, message: base.Message, *, sender: str, receiver: str = "") -> bytes:
        """One complete frame carrying ``message`` from node ``sender`` to node ``receiver``.

        ``sender`` goes in the frame header (and is the answering node of answers);
        ``receiver`` is the peer's node: ReceiveNode of requests, SendNode of answers.
        Raises :class:`AdapterError` naming the field when a value cannot be carried.
        """
        return self._frame(self._out(message, sender, receiver), message, sender)

    def encode_answer(self, message: base.Message, request: base.Message, *, sender: str,
                      receiver: str = "") -> bytes:
        """``message`` written as the answer to ``request`` on its connection.

        The same as :meth:`encode`, except that the direct answer to a single payment
        (BDC101, a partial withdrawal) is a BDC101 answer, with the principal's host serial
        in ``CapHostSeqNo``, an answer to a collection is a BDC102 answer, and the answer
        to a batch carries the batch's own code (BDC103 or BDC104).
        """
        out = self._out(message, sender, receiver)
        code = ""
        if isinstance(request, bm.Collection) and isinstance(message, (base.Receipt, base.Result)):
            code = "BDC102"
        elif isinstance(request, bm.Batch) and isinstance(message, bm.BatchAccepted):
            code = "BDC103" if request.kind == "payment" else "BDC104"
        if code:
            out = _Out([(n, code if n == "TxCode" else value) for n, value in out.head], out.body,
                       out.file, out.groups)
        if isinstance(request, base.StatusQuery) and isinstance(message, bm.BatchAccepted):
            # BDC110 about a batch request's serial: the batch's number in OldBatchNo (batch only).
            head = [(n, "BDC110" if n == "TxCode" else value) for n, value in out.head]
            out = _Out(head, [("OldTxStatus", "2"), ("HostSeqNo", ""),
                              ("OldBatchNo", v.serial("batch_no", message.batch_no))], out.file)
        if (isinstance(request, base.Instruction) and request.purpose == "withdrawal"
                and isinstance(message, (base.Receipt, base.Result))
                and message.reply_to == message.ref == request.seq_no):
            head = [(n, "BDC101" if n == "TxCode" else value) for n, value in out.head]
            body = [("CapHostSeqNo" if n == "HostSeqNo" else n, value) for n, value in out.body]
            out = _Out(head, body + [("IntHostSeqNo", "")], out.file)
        return self._frame(out, message, sender)

    def _frame(self, out: _Out, message: base.Message, sender: str) -> bytes:
        body = self._seal(render(out.head, out.body, out.file, out.groups),
                          clear=isinstance(message, _SIGN_IN_REQUESTS + _SIGN_IN_ANSWERS))
        if len(body) > self.max_frame:
            raise AdapterError(f"message of {len(body)} bytes exceeds the bdc frame limit "
                               f"{self.max_frame}")
        # Sign-in-class requests travel in clear ('1'); every answer carries '0', as the
        # deployed centre writes its replies (even the clear SYS600 one).
        flag = b"1" if isinstance(message, _SIGN_IN_REQUESTS) else b"0"
        return sender.encode("ascii") + flag + bytes(9) + len(body).to_bytes(4, "big") + body

    def check(self, message: base.Message, *, sender: str, receiver: str = "") -> None:
        """Raise the :class:`AdapterError` that :meth:`encode` would raise for ``message``,
        without writing the frame (the frame-size limit aside)."""
        out = self._out(message, sender, receiver)
        check(out.head, out.body, out.file, out.groups)

    def _out(self, message: base.Message, sender: str, receiver: str) -> _Out:
        encoder = self._encoders.get(type(message))
        if encoder is None:
            raise AdapterError(f"bdc cannot carry a {type(message).__name__}")
        v.node("sender", sender)
        if not receiver:
            raise AdapterError("receiver: bdc needs the peer's node number")
        v.node("receiver", receiver)
        now = self._clock()
        if not isinstance(now, _dt.datetime):
            raise AdapterError("clock: must return a datetime")
        return encoder(message, sender, receiver, now)

    @staticmethod
    def _stamp(now: _dt.datetime) -> tuple[str, str]:
        return (f"{now.year:04d}{now.month:02d}{now.day:02d}",
                f"{now.hour:02d}{now.minute:02d}{now.second:02d}")

    def _centre_head(self, now: _dt.datetime, tx_code: str, seq_no: str, send_node: str,
                     receive_node: str, *, unit_no: str = "", send_date: str | None = None) -> Fields:
        date, time = self._stamp(now)
        profile = self.centres.get(send_node) or CentreProfile()
        return [("SendDate", send_date or date), ("SendTime", time),
                ("SendSeqNo", v.serial("seq_no", seq_no)), ("TxUnitNo", unit_no or profile.unit_no),
                ("SendNode", v.node("node", send_node)), ("TxCode", tx_code),
                ("ReceiveNode", receive_node), ("CustNo", v.text("CustNo", profile.cust_no, v.CODE_LEN)),
                ("OperNo", v.text("OperNo", profile.oper_no, v.CODE_LEN))]

    def _pushed_head(self, now: _dt.datetime, tx_code: str, seq_no: str, send_node: str,
                     receive_node: str) -> Fields:
        date, time = self._stamp(now)
        v.serial("seq_no", seq_no)
        return [("SendDate", date), ("SendTime", time), ("SendSeqNo", seq_no),
                ("SendNode", v.node("node", send_node)), ("TxCode", tx_code),
                ("ReceiveNode", receive_node), ("BDCDate", date), ("BDCTime", time),
                ("BDCSeqNo", seq_no)]

    def _response_head(self, now: _dt.datetime, tx_code: str, status: tuple[str, str, str], *,
                       seq_no: str, reply_to: str, answering_node: str, requesting_node: str,
                       bdc_seq_no: str = "", bdc_stamp: bool = True,
                       received: _dt.datetime | None = None) -> Fields:
        date, time = self._stamp(now)
        if received is not None:
            r_date = v.format_date("as_of", received.date())
            r_time = v.format_time("as_of", received.time())
        else:
            r_date, r_time = date, time
        head = [("TxStatus", status[0]), ("RtnCode", status[1]), ("RtnMessage", status[2]),
                ("ReceiveDate", r_date), ("ReceiveTime", r_time),
                ("ReceiveSeqNo", v.serial("seq_no", seq_no)),
                ("ReceiveNode", v.node("node", answering_node)), ("TxCode", tx_code),
                ("BDCDate", date if bdc_stamp else ""), ("BDCTime", time if bdc_stamp else ""),
                ("BDCSeqNo", v.serial("bank_seq_no", bdc_seq_no, optional=True)),
                ("SendNode", requesting_node)]
        if self.echo:  # the persistent link's correlation extension
            if not reply_to:
                raise AdapterError("reply_to: echo-dialect answers must echo the request serial")
            head.append(("SendSeqNo", v.serial("reply_to", reply_to)))
        return head

    def _enc_sign_on(self, m: base.SignOn, sender: str, receiver: str, now: _dt.datetime) -> _Out:
        return _Out(self._centre_head(now, "BDC001", m.seq_no, m.node, receiver), [])

    def _enc_sign_on_answer(self, m: base.SignOnAnswer, sender: str, receiver: str,
                            now: _dt.datetime) -> _Out:
        head = self._response_head(now, "BDC001", _ok_code(m.ok, m.code, m.text), seq_no=m.seq_no,
                                   reply_to=m.reply_to, answering_node=m.node,
                                   requesting_node=receiver)
        hand_key = ""
        if self.cipher is not None and m.ok:  # the answering side makes the session key
            hand_key, self._session["key"] = self.cipher.new_hand_key()
        return _Out(head, [("HandKey", hand_key)])

    def _enc_heartbeat(self, m: base.Heartbeat, sender: str, receiver: str,
                       now: _dt.datetime) -> _Out:
        if isinstance(m.node, str) and m.node.startswith("C"):
            return _Out(self._centre_head(now, "SYS600", m.seq_no, m.node, receiver), [])
        return _Out(self._pushed_head(now, "SYS600", m.seq_no, m.node, receiver), [])

    def _enc_heartbeat_answer(self, m: base.HeartbeatAnswer, sender: str, receiver: str,
                              now: _dt.datetime) -> _Out:
        # A centre's reply leaves BDCDate/BDCTime/BDCSeqNo empty (docs/protocols/bdc.md).
        head = self._response_head(now, "SYS600", ("0", OK_CODE, OK_TEXT), seq_no=m.seq_no,
                                   reply_to=m.reply_to, answering_node=m.node,
                                   requesting_node=receiver,
                                   bdc_stamp=not str(m.node).startswith("C"))
        return _Out(head, [])

    def _enc_instruction(self, m: base.Instruction, sender: str, receiver: str,
                         now: _dt.datetime) -> _Out:
        bus_type = _BUS_TYPES.get(m.purpose)  # type: ignore[arg-type]
        if bus_type is None:
            raise AdapterError(f"purpose: bdc has no BusType for {v.show(str(m.purpose))}")
        if not isinstance(m.same_bank, bool) or not isinstance(m.creditor_personal, bool):
            raise AdapterError("same_bank, creditor_personal: must be booleans")
        # A partial withdrawal goes out as BDC101 (single payment), as the deployed centre
        # sends it; every other purpose as BDC109 (single transfer).
        payment = m.purpose == "withdrawal"
        head = self._centre_head(now, "BDC101" if payment else "BDC109", m.seq_no, m.centre_node,
                                 receiver,
                                 unit_no=v.match("unit_no", m.unit_no, v.UNIT_NO, "must be 15 digits"),
                                 send_date=v.format_date("send_date", m.send_date))
        amount = v.format_amount("amount", m.amount, positive=True)
        body = [
            ("SettleType", "1" if m.same_bank else "2"), ("BusType", bus_type),
            ("DeAcctNo", v.match("debit_account", m.debit_account, v.ACCOUNT,
                                 "must be 1-32 letters or digits")),
            ("DeAcctName", v.text("debit_name", m.debit_name, v.NAME_LEN, required=True)),
            ("DeAcctClass", "2"),
            ("CrAcctNo", v.match("creditor_account", m.creditor_account, v.ACCOUNT,
                                 "must be 1-32 letters or digits")),
            ("CrAcctName", v.text("creditor_name", m.creditor_name, v.NAME_LEN, required=True)),
            ("CrAcctClass", "1" if m.creditor_personal else "2"),
            ("CrBankClass", "0" if m.same_bank else "1"),
            ("CrBankName", BANK_NAMES.get(str(m.creditor_bank_code)[:3], "")),
            # A same-bank transfer needs no branch code (the interface leaves it empty).
            ("CrChgNo", v.match("creditor_bank_code", m.creditor_bank_code, v.BANK_CODE,
                                "must be a 12-digit branch code", optional=m.same_bank)),
            ("Amt", amount),
            # The centre's reference goes where the deployed centre puts its business
            # serial, so that it comes back in the bank's notices.
            ("RefAcctNo", ""), ("RefSeqNo", v.text("reference", m.reference, v.REFERENCE_LEN)),
            ("Summary", m.reference),
            ("Remark", v.text("memo", m.memo, v.MEMO_LEN)),
        ]
        if payment:  # PROTOCOL order of BDC101: principal, interest legs, then the payee
            body = (body[:5] + [("CapAmt", amount), ("DeIntAcctNo", ""), ("DeIntAcctName", ""),
                                ("DeIntAcctClass", ""), ("DeIntCrAcct", ""), ("IntAmt", "")]
                    + body[5:12] + [("RefAcctNo", ""), ("RefSeqNo1", m.reference), ("RefSeqNo2", "")]
                    + body[14:])
        if not isinstance(m.signature, bytes):
            raise AdapterError("signature: must be bytes")
        if m.signature:
            if len(m.signature) > _MAX_SIGNATURE:
                raise AdapterError(f"signature: longer than {_MAX_SIGNATURE} bytes")
            body.append(("Signature", base64.b64encode(m.signature).decode("ascii")))
        return _Out(head, body)

    def _enc_status_query(self, m: base.StatusQuery, sender: str, receiver: str,
                          now: _dt.datetime) -> _Out:
        head = self._centre_head(now, "BDC110", m.seq_no, sender, receiver)
        return _Out(head, [("TxDate", v.format_date("ref_date", m.ref_date)),
                           ("TxSeqNo", v.serial("ref", m.ref))])

    def _enc_balance_query(self, m: base.BalanceQuery, sender: str, receiver: str,
                           now: _dt.datetime) -> _Out:
        head = self._centre_head(now, "BDC123", m.seq_no, sender, receiver)
        account = v.match("account", m.account, v.ACCOUNT, "must be 1-32 letters or digits")
        return _Out(head, [("CurrNo", "156"), ("CurrIden", "1"), ("AcctNo", account),
                           ("AcctType", "1")])

    def _enc_ack(self, m: base.Ack, sender: str, receiver: str, now: _dt.datetime) -> _Out:
        # §3.3: the Centre's reply to a pushed message leaves BDCDate/BDCTime/BDCSeqNo empty.
        head = self._response_head(now, "SBDC100", _ok_code(m.ok, m.code, m.text), seq_no=m.seq_no,
                                   reply_to=m.reply_to, answering_node=sender,
                                   requesting_node=receiver, bdc_stamp=False)
        return _Out(head, [])

    def _enc_receipt(self, m: base.Receipt, sender: str, receiver: str, now: _dt.datetime) -> _Out:
        ref = v.serial("ref", m.ref)
        if m.reply_to == ref:
            head = self._response_head(now, "BDC109", ("2", OK_CODE, PROCESSING_TEXT),
                                       seq_no=m.seq_no, reply_to=m.reply_to, answering_node=sender,
                                       requesting_node=receiver, bdc_seq_no=m.bank_seq_no)
            return _Out(head, [("HostStatus", ""), ("HostSeqNo", "")])
        head = self._response_head(now, "BDC110", ("0", OK_CODE, OK_TEXT), seq_no=m.seq_no,
                                   reply_to=m.reply_to, answering_node=sender,
                                   requesting_node=receiver, bdc_seq_no=m.bank_seq_no)
        return _Out(head, [("OldTxStatus", "2"), ("HostSeqNo", "")] + self._tx_seq_no(ref))

    def _enc_result(self, m: base.Result, sender: str, receiver: str, now: _dt.datetime) -> _Out:
        ref = v.serial("ref", m.ref)
        if not isinstance(m.succeeded, bool):
            raise AdapterError("succeeded: must be a boolean")
        status = _ok_code(m.succeeded, m.code, m.text)
        host_seq_no = v.serial("host_seq_no", m.host_seq_no, optional=True)
        if m.reply_to == ref:
            head = self._response_head(now, "BDC109", status, seq_no=m.seq_no, reply_to=m.reply_to,
                                       answering_node=sender, requesting_node=receiver,
                                       bdc_seq_no=m.bank_seq_no)
            return _Out(head, [("HostStatus", "0" if m.succeeded else "1"),
                               ("HostSeqNo", host_seq_no)])
        # The query itself succeeded (TxStatus 0); the outcome is OldTxStatus.
        head = self._response_head(now, "BDC110", ("0",) + status[1:], seq_no=m.seq_no,
                                   reply_to=m.reply_to, answering_node=sender,
                                   requesting_node=receiver, bdc_seq_no=m.bank_seq_no)
        return _Out(head, [("OldTxStatus", "0" if m.succeeded else "1"),
                           ("HostSeqNo", host_seq_no)] + self._tx_seq_no(ref))

    def _enc_not_found(self, m: base.NotFound, sender: str, receiver: str,
                       now: _dt.datetime) -> _Out:
        # The protocol has no "not found" code: a failed query, which the deployed centre
        # (and a canonical reader) takes as "still unknown".  Only the echo dialect says more.
        head = self._response_head(now, "BDC110", ("1", FAIL_CODE, NOT_FOUND_TEXT),
                                   seq_no=m.seq_no, reply_to=m.reply_to, answering_node=sender,
                                   requesting_node=receiver)
        return _Out(head, [("OldTxStatus", "")] + self._tx_seq_no(v.serial("ref", m.ref)))

    def _tx_seq_no(self, ref: str) -> Fields:
        return [("TxSeqNo", ref)] if self.echo else []

    @staticmethod
    def _file_name(prefix: str, now: _dt.datetime) -> str:
        return (f"{prefix}_{now.year:04d}{now.month:02d}{now.day:02d}_{now.hour:02d}"
                f"{now.minute:02d}{now.second:02d}{now.microsecond // 1000:03d}.act")

    def _entries(self, entries: object) -> str:
        if not isinstance(entries, tuple):
            raise AdapterError("entries: must be a tuple of Entry")
        return _files.pack_data(_files.format_entries(entries))

    def _enc_movement(self, m: base.Movement, sender: str, receiver: str,
                      now: _dt.datetime) -> _Out:
        head = self._pushed_head(now, "SBDC100", m.seq_no, sender, receiver)
        return _Out(head, [], (self._file_name("BDC_BAL_NTF", now), self._entries(m.entries)))

    def _enc_balance(self, m: base.Balance, sender: str, receiver: str, now: _dt.datetime) -> _Out:
        if m.as_of is not None and (not isinstance(m.as_of, _dt.datetime) or m.as_of.tzinfo):
            raise AdapterError("as_of: must be a local datetime without time zone")
        head = self._response_head(now, "BDC123", ("0", OK_CODE, OK_TEXT), seq_no=m.seq_no,
                                   reply_to=m.reply_to, answering_node=sender,
                                   requesting_node=receiver,
                                   received=m.as_of)
        body = [
            ("AcctNo", v.match("account", m.account, v.ACCOUNT, "must be 1-32 letters or digits")),
            ("AcctName", v.text("account_name", m.account_name, v.NAME_LEN)),
            ("AcctBal", v.format_amount("balance", m.balance)),
            ("AcctRestBal", v.format_amount("available", m.available)),
            ("AcctOverBal", v.format_amount("overdraft", m.overdraft)),
            ("AcctStatus", v.text("status", m.status, v.STATUS_LEN)),
        ]
        return _Out(head, body)

    def _enc_statement(self, m: base.Statement, sender: str, receiver: str,
                       now: _dt.datetime) -> _Out:
        if m.opening_balance is not None or m.closing_balance is not None:
            raise AdapterError("bdc statements carry no opening/closing balance")
        account = v.match("account", m.account, v.ACCOUNT, "must be 1-32 letters or digits")
        for i, e in enumerate(m.entries):
            if isinstance(e, base.Entry) and e.account != account:
                raise AdapterError(f"entries[{i}].account: differs from the statement's account")
        head = self._response_head(now, "BDC113", ("0", OK_CODE, OK_TEXT), seq_no=m.seq_no,
                                   reply_to=m.reply_to, answering_node=sender,
                                   requesting_node=receiver)
        return _Out(head, [("AcctNo", account)],
                    (self._file_name("BDC_DTL", now), self._entries(m.entries)))

    # bdc-only messages (adapters/bdc/messages.py)

    def _enc_sign_off(self, m: bm.SignOff, sender: str, receiver: str, now: _dt.datetime) -> _Out:
        return _Out(self._centre_head(now, "BDC002", m.seq_no, m.node, receiver), [])

    def _enc_sign_off_answer(self, m: bm.SignOffAnswer, sender: str, receiver: str,
                             now: _dt.datetime) -> _Out:
        return _Out(self._response_head(now, "BDC002", _ok_code(m.ok, m.code, m.text), seq_no=m.seq_no,
                                        reply_to=m.reply_to, answering_node=m.node,
                                        requesting_node=receiver), [])

    @staticmethod
    def _bus_type(code: object) -> str:
        if code not in bm.BUS_TYPES:
            raise AdapterError(f"BusType: {v.show(str(code))} is not a code of the interface")
        return str(code)

    def _enc_collection(self, m: bm.Collection, sender: str, receiver: str, now: _dt.datetime) -> _Out:
        if not isinstance(m.same_bank, bool) or not isinstance(m.debtor_personal, bool):
            raise AdapterError("same_bank, debtor_personal: must be booleans")
        head = self._centre_head(now, "BDC102", m.seq_no, m.centre_node, receiver,
                                 unit_no=v.match("unit_no", m.unit_no, v.UNIT_NO, "must be 15 digits"),
                                 send_date=v.format_date("send_date", m.send_date))
        reference = v.text("reference", m.reference, v.REFERENCE_LEN)
        return _Out(head, [
            ("SettleType", "1" if m.same_bank else "2"), ("BusType", self._bus_type(m.bus_type)),
            ("CrAcctNo", v.match("credit_account", m.credit_account, v.ACCOUNT, "must be 1-32 letters or digits")),
            ("CrAcctName", v.text("credit_name", m.credit_name, v.NAME_LEN, required=True)),
            ("CrAcctClass", "2"),
            ("DeAcctNo", v.match("debtor_account", m.debtor_account, v.ACCOUNT, "must be 1-32 letters or digits")),
            ("DeAcctName", v.text("debtor_name", m.debtor_name, v.NAME_LEN, required=True)),
            ("DeAcctClass", "1" if m.debtor_personal else "2"),
            ("DeBankName", v.text("debtor_bank_name", m.debtor_bank_name, v.NAME_LEN)),
            ("DeChgNo", v.match("debtor_bank_code", m.debtor_bank_code, v.BANK_CODE,
                                "must be a 12-digit branch code", optional=m.same_bank)),
            ("DeBankClass", "0" if m.same_bank else "1"),
            ("ConAgrNo", v.text("agreement_no", m.agreement_no, v.OTHER_LEN)),
            ("Amt", v.format_amount("amount", m.amount, positive=True)),
            ("RefAcctNo", ""), ("RefSeqNo", reference), ("Summary", reference),
            ("Remark", v.text("memo", m.memo, v.MEMO_LEN)),
        ])

    def _enc_batch(self, m: bm.Batch, sender: str, receiver: str, now: _dt.datetime) -> _Out:
        unit_no = v.match("unit_no", m.unit_no, v.UNIT_NO, "must be 15 digits")
        payment = m.kind == "payment"
        head = self._centre_head(now, "BDC103" if payment else "BDC104", m.seq_no, m.centre_node,
                                 receiver, unit_no=unit_no, send_date=v.format_date("send_date", m.send_date))
        data = _files.pack_data(_batch.format_batch(m.kind, m.file_type, m.items))
        total = v.format_amount("total", m.total, positive=True)
        account = v.match("account", m.account, v.ACCOUNT, "must be 1-32 letters or digits")
        name = v.text("account_name", m.account_name, v.NAME_LEN, required=True)
        common = [("FileType", m.file_type), ("BusType", self._bus_type(m.bus_type)),
                  ("BatchPrjNo", v.text("project_no", m.project_no, v.OTHER_LEN))]
        if payment:
            body = common + [("DeAcctNo", account), ("DeAcctName", name), ("DeAcctClass", "2"),
                             ("BatchCapAmt", total), ("DeIntAcctNo", ""), ("DeIntAcctName", ""),
                             ("DeIntAcctClass", ""), ("DeIntCrAcct", ""), ("BatchIntAmt", "")]
        else:
            body = common + [("CrAcctNo", account), ("CrAcctName", name), ("CrAcctClass", "2")]
        body += [("BatchTotalNum", str(len(m.items))), ("BatchTotalAmt", total),
                 ("Remark", v.text("memo", m.memo, v.MEMO_LEN))]
        return _Out(head, body, (f"BDC_BAT_{unit_no}{v.serial('seq_no', m.seq_no)}.DAT", data))

    def _enc_batch_accepted(self, m: bm.BatchAccepted, sender: str, receiver: str,
                            now: _dt.datetime) -> _Out:
        head = self._response_head(now, "BDC103", _ok_code(m.ok, m.code, m.text), seq_no=m.seq_no,
                                   reply_to=m.reply_to, answering_node=sender, requesting_node=receiver)
        return _Out(head, [("BatchNo", v.serial("batch_no", m.batch_no, optional=not m.ok))])

    def _enc_batch_query(self, m: bm.BatchQuery, sender: str, receiver: str, now: _dt.datetime) -> _Out:
        return _Out(self._centre_head(now, "BDC107", m.seq_no, sender, receiver),
                    [("BatchNo", v.serial("batch_no", m.batch_no))])

    def _enc_batch_status(self, m: bm.BatchStatus, sender: str, receiver: str, now: _dt.datetime) -> _Out:
        states = {meaning: code for code, meaning in bm.BATCH_STATES.items()}
        if m.state not in states:
            raise AdapterError(f"state: must be one of {', '.join(states)}")
        head = self._response_head(now, "BDC107", ("0", OK_CODE, OK_TEXT), seq_no=m.seq_no,
                                   reply_to=m.reply_to, answering_node=sender, requesting_node=receiver)

        def count(name: str, value: object) -> str:
            if type(value) is not int or not 0 <= value < 10**9:
                raise AdapterError(f"{name}: must be a count")
            return str(value)

        return _Out(head, [
            ("BatchDate", v.format_date("batch_date", m.batch_date)),
            ("BatchPrjNo", v.text("project_no", m.project_no, v.OTHER_LEN)),
            ("BatchNo", v.serial("batch_no", m.batch_no)), ("BusType", self._bus_type(m.bus_type)),
            ("CurrNo", "156"), ("CurrIden", "1"),
            ("BatchSendBranchNo", v.text("branch_no", m.branch_no, v.OTHER_LEN)),
            ("BkOperNo", v.text("bank_operator", m.bank_operator, v.CODE_LEN)),
            ("SendSeqNo", v.serial("send_seq_no", m.send_seq_no, optional=True)),
            ("BatchTotalNum", count("total_num", m.total_num)),
            ("BatchTotalAmt", v.format_amount("total_amount", m.total_amount)),
            ("BatchTotalSuccNum", count("succeeded_num", m.succeeded_num)),
            ("BatchTotalSuccAmt", v.format_amount("succeeded_amount", m.succeeded_amount)),
            ("Remark", v.text("remark", m.remark, v.MEMO_LEN)),
            ("Summary", v.text("summary", m.summary, v.MEMO_LEN)),
            ("BatchTxStatus", states[m.state]),
        ])

    def _enc_batch_result_query(self, m: bm.BatchResultQuery, sender: str, receiver: str,
                                now: _dt.datetime) -> _Out:
        return _Out(self._centre_head(now, "BDC108", m.seq_no, sender, receiver),
                    [("TxCodeSub", v.text("sub_code", m.sub_code, v.STATUS_LEN, required=True)),
                     ("BatchNo", v.serial("batch_no", m.batch_no))])

    def _enc_batch_results(self, m: bm.BatchResults, sender: str, receiver: str,
                           now: _dt.datetime) -> _Out:
        if not isinstance(m.lines, tuple):
            raise AdapterError("lines: must be a tuple of BatchLine")
        head = self._response_head(now, "BDC108", ("0", OK_CODE, OK_TEXT), seq_no=m.seq_no,
                                   reply_to=m.reply_to, answering_node=sender, requesting_node=receiver)
        text = _batch.format_results(m.date, m.unit_no, m.batch_no, m.lines, m.summary)
        return _Out(head, [], (f"BDC_BAT_RST_{m.batch_no}.DAT", _files.pack_data(text)))

    def _enc_branch_query(self, m: bm.BranchQuery, sender: str, receiver: str, now: _dt.datetime) -> _Out:
        if not isinstance(m.areas, tuple) or not m.areas:
            raise AdapterError("areas: must be a non-empty tuple of 4-digit area codes")
        areas = [v.match(f"areas[{i}]", a, _AREA, "must be a 4-digit area code") for i, a in enumerate(m.areas)]
        return _Out(self._centre_head(now, "BDC112", m.seq_no, sender, receiver),
                    [("BankNo", v.match("bank_code", m.bank_code, _BANK_NO3, "must be a 3-digit bank code")),
                     ("AreaNo", ",".join(areas))])

    def _enc_statement_query(self, m: bm.StatementQuery, sender: str, receiver: str,
                             now: _dt.datetime) -> _Out:
        if m.bank_node and m.bank_node != receiver:
            raise AdapterError("bank_node: the query goes to the bank it names (receiver)")
        return _Out(self._centre_head(now, "BDC113", m.seq_no, sender, receiver),
                    [("TxDateBegin", v.format_date("date_from", m.date_from)),
                     ("TxDateEnd", v.format_date("date_to", m.date_to))])

    def _enc_branches(self, m: bm.Branches, sender: str, receiver: str, now: _dt.datetime) -> _Out:
        if not isinstance(m.branches, tuple):
            raise AdapterError("branches: must be a tuple of Branch")
        head = self._response_head(now, "BDC112", ("0", OK_CODE, OK_TEXT), seq_no=m.seq_no,
                                   reply_to=m.reply_to, answering_node=sender, requesting_node=receiver)
        rows = tuple([("ChgNo", v.match(f"branches[{i}].code", b.code, v.BANK_CODE, "must be 12 digits")),
                      ("ChgName", v.text(f"branches[{i}].name", b.name, v.NAME_LEN, required=True))]
                     for i, b in enumerate(m.branches))
        return _Out(head, [], None, (("ChgNoList", rows),))

    # -- decode ----------------------------------------------------------------------

    def decode(self, frame: bytes) -> base.Message:
        """The neutral message in one whole frame (header included).

        Raises :class:`AdapterError` with a one-line reason, naming the field, for anything
        that is not a complete, consistent bdc message this codec maps.
        """
        try:
            return self._decode(frame)
        except AdapterError:
            raise
        except (ValueError, TypeError, LookupError, UnicodeError, zlib.error, etree.LxmlError) as e:
            # Defensive: every check above should have caught bad input first.
            raise AdapterError(f"bdc: undecodable frame ({type(e).__name__})") from e

    def _decode(self, frame: bytes) -> base.Message:
        if not isinstance(frame, (bytes, bytearray)):
            raise AdapterError("frame: must be bytes")
        if len(frame) < HEADER_LEN:
            raise AdapterError(f"frame: {len(frame)} bytes, shorter than the {HEADER_LEN}-byte header")
        length = check_header(frame[:HEADER_LEN], self.max_frame)
        if length != len(frame) - HEADER_LEN:
            raise AdapterError(f"frame: header says {length} body bytes, frame has "
                               f"{len(frame) - HEADER_LEN}")
        body, clear = self._open(frame)
        root = parse_xml(body, max_bytes=self.max_frame, max_depth=6, encodings=("gbk",))
        doc = read_doc(root)
        if self.cipher is not None and clear and doc.tx_code not in _SIGN_IN_CODES:
            raise AdapterError(f"frame: a {doc.tx_code} message in clear while bodies are encrypted")
        if frame[6] == 0x31 and doc.tx_code not in _SIGN_IN_CODES:
            # A clear-text ('1') flag on a business message; '0' on sign-in replies is a
            # documented quirk and tolerated.
            raise AdapterError(f"frame: sign-in flag '1' on a {doc.tx_code} message")
        try:
            if "TxStatus" in doc.head:
                return self._decode_response(doc)
            return self._decode_request(doc)
        finally:
            self._count_ignored(doc.ignored)

    def _count_ignored(self, names: set[str]) -> None:
        for name in names:
            if name not in self.ignored and len(self.ignored) >= _MAX_IGNORED_NAMES:
                name = "…"
            self.ignored[name] += 1

    # requests

    def _decode_request(self, doc: Doc) -> base.Message:
        code = doc.tx_code
        shapes = REQUEST_HEADS.get(code)
        if shapes is None:
            raise AdapterError(f"TxCode: {code} requests are not supported")
        where = f"{code} request head"
        if len(shapes) > 1:  # SYS600: the Centre's head has TxUnitNo/OperNo, BDC's has not
            shape = CENTRE if ("TxUnitNo" in doc.head or "OperNo" in doc.head) else PUSHED
        else:
            shape = shapes[0]
        check_shape(doc.head, {}, shape, where, ignored=doc.ignored)
        h = doc.head
        v.parse_date("SendDate", h["SendDate"])
        v.parse_time("SendTime", h["SendTime"])
        v.serial("SendSeqNo", h["SendSeqNo"])
        v.node("SendNode", h["SendNode"])
        v.node("ReceiveNode", h["ReceiveNode"])
        if shape is CENTRE:
            v.match("TxUnitNo", h.get("TxUnitNo", ""), v.UNIT_NO, "must be 15 digits", optional=True)
            v.text("CustNo", h.get("CustNo", ""), v.CODE_LEN)
            v.text("OperNo", h.get("OperNo", ""), v.CODE_LEN)
        else:
            self._check_bdc_stamp(h)
        check_shape(doc.body, doc.groups, REQUEST_BODIES[code], f"{code} request body",
                    ignored=doc.ignored)
        seq_no = h["SendSeqNo"]
        if code == "BDC001":
            return base.SignOn(seq_no=seq_no, node=h["SendNode"])
        if code == "SYS600":
            return base.Heartbeat(seq_no=seq_no, node=h["SendNode"])
        if code in ("BDC101", "BDC109"):
            return self._dec_instruction(doc)
        b = doc.body
        if code in _OWN_REQUESTS:
            return _OWN_REQUESTS[code](self, doc)
        if code == "BDC110":
            return base.StatusQuery(seq_no=seq_no, ref=v.serial("TxSeqNo", b["TxSeqNo"]),
                                    ref_date=v.parse_date("TxDate", b["TxDate"]))
        if code == "BDC123":
            # The deployed centre's balance caller swaps CurrNo and CurrIden: either order is CNY.
            if (b["CurrNo"], b["CurrIden"]) not in (("156", "1"), ("1", "156")):
                raise AdapterError(f"CurrNo/CurrIden: only CNY (156, 1) is carried, not "
                                   f"{v.show(b['CurrNo'])}/{v.show(b['CurrIden'])}")
            if b["AcctType"] != "1":
                raise AdapterError(f"AcctType: must be 1, not {v.show(b['AcctType'])}")
            return base.BalanceQuery(seq_no=seq_no, account=v.match(
                "AcctNo", b["AcctNo"], v.ACCOUNT, "must be 1-32 letters or digits"))
        # SBDC100, the only other supported request: every row's file, in order
        entries = tuple(e for _, text in read_files(doc, "SBDC100 request")
                        for e in _files.parse_entries(text))
        return base.Movement(seq_no=seq_no, entries=entries)

    @staticmethod
    def _check_bdc_stamp(h: dict[str, str]) -> None:
        # Left empty in the Centre's replies (a documented quirk); checked when present.
        if h.get("BDCDate"):
            v.parse_date("BDCDate", h["BDCDate"])
        if h.get("BDCTime"):
            v.parse_time("BDCTime", h["BDCTime"])
        v.serial("BDCSeqNo", h.get("BDCSeqNo", ""), optional=True)

    def _dec_instruction(self, doc: Doc) -> base.Instruction:
        h, b = doc.head, doc.body
        settle = b["SettleType"]
        if settle not in ("1", "2"):
            raise AdapterError(f"SettleType: must be 1 or 2, not {v.show(settle)}")
        same_bank = settle == "1"
        if b["CrBankClass"] != ("0" if same_bank else "1"):
            raise AdapterError(f"CrBankClass: {v.show(b['CrBankClass'])} disagrees with "
                               f"SettleType {settle}")
        purpose = _PURPOSES.get(b["BusType"])
        if purpose is None:
            raise AdapterError(f"BusType: {v.show(b['BusType'])} has no neutral purpose")
        if b["DeAcctClass"] != "2":
            raise AdapterError(f"DeAcctClass: the centre's account is corporate (2), "
                               f"not {v.show(b['DeAcctClass'])}")
        if b["CrAcctClass"] not in ("1", "2"):
            raise AdapterError(f"CrAcctClass: must be 1 or 2, not {v.show(b['CrAcctClass'])}")
        if b.get("RefAcctNo"):
            raise AdapterError("RefAcctNo: not supported, must be empty")  # a sub-ledger we cannot keep
        # The centre's business serial: in Summary (as deployed) or RefSeqNo(1).
        reference = b.get("Summary") or b.get("RefSeqNo", "") or b.get("RefSeqNo1", "")
        if doc.tx_code == "BDC101":
            if purpose != "withdrawal":
                raise AdapterError(f"BusType: {v.show(b['BusType'])} is not carried as a single payment")
            if b.get("IntAmt") not in (None, "") and v.parse_amount("IntAmt", b["IntAmt"]) != 0:
                raise AdapterError("IntAmt: an interest leg is not supported")
            if v.parse_amount("CapAmt", b["CapAmt"]) != v.parse_amount("Amt", b["Amt"]):
                raise AdapterError("CapAmt: differs from Amt (only a principal leg is carried)")

        v.text("CrBankName", b.get("CrBankName", ""), v.NAME_LEN)  # informational, not kept
        if "CrChgNo" not in b and not same_bank:
            raise AdapterError("CrChgNo: missing (a cross-bank transfer needs the branch code)")
        signature = b""
        if "Signature" in b:
            raw = b["Signature"]
            if len(raw) > (_MAX_SIGNATURE * 4) // 3 + 4:
                raise AdapterError("Signature: too long")
            try:
                signature = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise AdapterError("Signature: not base64") from None
        return base.Instruction(
            seq_no=h["SendSeqNo"],
            send_date=v.parse_date("SendDate", h["SendDate"]),
            centre_node=h["SendNode"],
            unit_no=v.match("TxUnitNo", h["TxUnitNo"], v.UNIT_NO, "must be 15 digits"),
            debit_account=v.match("DeAcctNo", b["DeAcctNo"], v.ACCOUNT,
                                  "must be 1-32 letters or digits"),
            debit_name=v.text("DeAcctName", b["DeAcctName"], v.NAME_LEN, required=True),
            creditor_account=v.match("CrAcctNo", b["CrAcctNo"], v.ACCOUNT,
                                     "must be 1-32 letters or digits"),
            creditor_name=v.text("CrAcctName", b["CrAcctName"], v.NAME_LEN, required=True),
            creditor_bank_code=v.match("CrChgNo", b.get("CrChgNo", ""), v.BANK_CODE,
                                       "must be a 12-digit branch code", optional=same_bank),
            creditor_personal=b["CrAcctClass"] == "1",
            same_bank=same_bank,
            amount=v.parse_amount("Amt", b["Amt"], positive=True),
            purpose=purpose,
            memo=v.text("Remark", b.get("Remark", ""), v.MEMO_LEN),
            reference=v.text("Summary", reference, v.REFERENCE_LEN),
            signature=signature,
        )

    # responses

    def _decode_response(self, doc: Doc) -> base.Message:
        code = doc.tx_code
        body_shape = RESPONSE_BODIES.get(code)
        if body_shape is None:
            raise AdapterError(f"TxCode: {code} responses are not supported")
        h = doc.head
        check_shape(h, {}, RESPONSE, f"{code} response head", ignored=doc.ignored)
        status = h["TxStatus"]
        if status not in ("0", "1", "2"):
            raise AdapterError(f"TxStatus: must be 0, 1 or 2, not {v.show(status)}")
        v.text("RtnCode", h.get("RtnCode", ""), v.CODE_LEN)
        v.text("RtnMessage", h.get("RtnMessage", ""), v.MESSAGE_LEN)
        received = None
        if h.get("ReceiveDate") and h.get("ReceiveTime"):
            received = _dt.datetime.combine(v.parse_date("ReceiveDate", h["ReceiveDate"]),
                                            v.parse_time("ReceiveTime", h["ReceiveTime"]))
        seq_no = v.serial("ReceiveSeqNo", h.get("ReceiveSeqNo", ""), optional=True)
        node = h.get("ReceiveNode", "")
        if node:
            v.node("ReceiveNode", node)
        if h.get("SendNode"):
            v.node("SendNode", h["SendNode"])
        # The answer's own correlation is the connection; the echo extension when present.
        reply_to = v.serial("SendSeqNo", h.get("SendSeqNo", ""), optional=True)
        self._check_bdc_stamp(h)
        check_shape(doc.body, doc.groups, body_shape, f"{code} response body",
                    enforce_required=status == "0", ignored=doc.ignored)
        b = doc.body
        ok = status == "0"
        bank_seq_no = v.serial("BDCSeqNo", h.get("BDCSeqNo", ""), optional=True)
        if code == "BDC001":
            v.text("HandKey", b.get("HandKey", ""), 4096)  # bounded; a cipher takes it
            if self.cipher is not None and ok:
                self._session["key"] = self.cipher.session_key(b.get("HandKey", ""))
            c, t = _read_code(ok, h)
            return base.SignOnAnswer(seq_no=seq_no, reply_to=reply_to, node=node, ok=ok, code=c, text=t)
        if code == "SYS600":
            return base.HeartbeatAnswer(seq_no=seq_no, reply_to=reply_to, node=node)
        if code == "SBDC100":
            c, t = _read_code(ok, h)
            return base.Ack(seq_no=seq_no, reply_to=reply_to, ok=ok, code=c, text=t)
        if code == "BDC002":
            c, t = _read_code(ok, h)
            return bm.SignOffAnswer(seq_no=seq_no, reply_to=reply_to, node=node, ok=ok, code=c, text=t)
        if code in ("BDC103", "BDC104"):
            # A failed batch answer is not a final failure (the deployed centre asks BDC110).
            c, t = _read_code(ok, h)
            return bm.BatchAccepted(seq_no=seq_no, reply_to=reply_to, ok=ok, code=c, text=t,
                                    batch_no=v.serial("BatchNo", b.get("BatchNo", ""), optional=not ok))
        if code in ("BDC101", "BDC102", "BDC109"):
            host_seq_no = v.serial("HostSeqNo", b.get("HostSeqNo", "") or b.get("CapHostSeqNo", ""),
                                   optional=True)
            v.serial("IntHostSeqNo", b.get("IntHostSeqNo", ""), optional=True)  # no interest leg
            host_status = b.get("HostStatus", "")
            v.text("HostStatus", host_status, v.STATUS_LEN)
            if status == "0" and host_status in ("0", ""):
                c, t = _read_code(True, h)
                return base.Result(seq_no=seq_no, reply_to=reply_to, ref=reply_to, succeeded=True,
                                   host_seq_no=host_seq_no, bank_seq_no=bank_seq_no, code=c, text=t)
            if self.echo and status == "1" and host_status == "1":
                c, t = _read_code(False, h)
                return base.Result(seq_no=seq_no, reply_to=reply_to, ref=reply_to, succeeded=False,
                                   host_seq_no=host_seq_no, bank_seq_no=bank_seq_no, code=c, text=t)
            # As deployed: any other answer leaves the outcome unconfirmed, to ask with BDC110.
            return base.Receipt(seq_no=seq_no, reply_to=reply_to, ref=reply_to, bank_seq_no=bank_seq_no)
        if code == "BDC110":
            return self._dec_status_answer(h, b, seq_no, reply_to, status, bank_seq_no)
        if status != "0":
            raise AnswerRefused(code, h.get("RtnCode", ""), h.get("RtnMessage", ""))
        if code in _OWN_ANSWERS:
            return _OWN_ANSWERS[code](self, doc, seq_no, reply_to)
        if code == "BDC123":
            return base.Balance(
                seq_no=seq_no, reply_to=reply_to,
                account=v.match("AcctNo", b["AcctNo"], v.ACCOUNT, "must be 1-32 letters or digits"),
                balance=v.parse_amount("AcctBal", b["AcctBal"]),
                available=v.parse_amount("AcctRestBal", b["AcctRestBal"]),
                overdraft=v.parse_amount("AcctOverBal", b["AcctOverBal"] or "0"),
                account_name=v.text("AcctName", b["AcctName"], v.NAME_LEN),
                status=v.text("AcctStatus", b["AcctStatus"], v.STATUS_LEN),
                as_of=received,
            )
        # BDC113, the only other supported response: every row's file, in order
        entries = tuple(e for _, text in read_files(doc, "BDC113 response")
                        for e in _files.parse_entries(text))
        account = b.get("AcctNo", "")
        if account:
            v.match("AcctNo", account, v.ACCOUNT, "must be 1-32 letters or digits")
        elif entries:
            account = entries[0].account
        else:
            raise AdapterError("AcctNo: missing, and no lines to take the account from")
        for i, e in enumerate(entries):
            if e.account != account:
                raise AdapterError(f"file line {i + 1}: account differs from the statement's")
        return base.Statement(seq_no=seq_no, reply_to=reply_to, account=account, entries=entries)

    def _dec_status_answer(self, h: dict[str, str], b: dict[str, str], seq_no: str, reply_to: str,
                           status: str, bank_seq_no: str) -> base.Message:
        ref = v.serial("TxSeqNo", b.get("TxSeqNo", ""), optional=True)  # echo extension only
        if status != "0":
            if self.echo and ref and b.get("OldTxStatus", "") == "":
                return base.NotFound(seq_no=seq_no, reply_to=reply_to, ref=ref)
            # As deployed: the query itself failed; the outcome stays unknown.
            raise AnswerRefused("BDC110", h.get("RtnCode", ""), h.get("RtnMessage", ""))
        for name in ("IntHostSeqN", "IntHostSeqNo", "PenHostSeqNo", "FineHostSeqNo"):
            v.serial(name, b.get(name, ""), optional=True)  # not kept; still bounded
        old_batch = v.serial("OldBatchNo", b.get("OldBatchNo", ""), optional=True)
        if old_batch:
            # About a batch request (BDC103/104): the bank has it, under this number; how far it
            # is, BDC107 says (docs/protocols/bdc.md, "Batches").
            return bm.BatchAccepted(seq_no=seq_no, reply_to=reply_to, batch_no=old_batch)
        old = b["OldTxStatus"]
        host_seq_no = v.serial("HostSeqNo", b.get("HostSeqNo", ""), optional=True)
        if old == "2":
            return base.Receipt(seq_no=seq_no, reply_to=reply_to, ref=ref, bank_seq_no=bank_seq_no)
        if old not in ("0", "1"):
            raise AdapterError(f"OldTxStatus: must be 0, 1 or 2, not {v.show(old)}")
        succeeded = old == "0"
        c, t = _read_code(succeeded, h)
        return base.Result(seq_no=seq_no, reply_to=reply_to, ref=ref, succeeded=succeeded,
                           host_seq_no=host_seq_no, bank_seq_no=bank_seq_no, code=c, text=t)

    # -- a connection per request ----------------------------------------------------

    _ANSWERS: ClassVar[dict[type, tuple[type, ...]]] = {
        base.SignOn: (base.SignOnAnswer,), base.Heartbeat: (base.HeartbeatAnswer,),
        base.Instruction: (base.Receipt, base.Result),
        base.StatusQuery: (base.Receipt, base.Result, base.NotFound, bm.BatchAccepted),
        base.BalanceQuery: (base.Balance,), base.Movement: (base.Ack,),
        bm.SignOff: (bm.SignOffAnswer,), bm.Collection: (base.Receipt, base.Result),
        bm.Batch: (bm.BatchAccepted,), bm.BatchQuery: (bm.BatchStatus,),
        bm.BatchResultQuery: (bm.BatchResults,), bm.BranchQuery: (bm.Branches,),
        bm.StatementQuery: (base.Statement,),
    }

    def decode_answer(self, frame: bytes, request: base.Message) -> base.Message:
        """The answer in ``frame`` to ``request``, sent on the same connection.

        The deployed answer names no request: the connection does.  This binds it:
        ``reply_to`` becomes the request's serial and a Receipt/Result/NotFound's ``ref``
        the instruction it is about.  An answer of the wrong kind, or one whose echo names
        another request, is refused.
        """
        message = self.decode(frame)
        kinds = self._ANSWERS.get(type(request), ())
        if not isinstance(message, kinds):
            raise AdapterError(f"a {type(message).__name__} cannot answer a {type(request).__name__}")
        reply_to = getattr(message, "reply_to")
        if reply_to and reply_to != request.seq_no:
            raise AdapterError(f"answer echoes {v.show(reply_to)}, not the request's serial")
        bound: dict[str, str] = {"reply_to": request.seq_no}
        if isinstance(request, (base.Instruction, bm.Collection)):
            bound["ref"] = request.seq_no
        elif isinstance(request, base.StatusQuery) and not isinstance(message, bm.BatchAccepted):
            ref = getattr(message, "ref")
            if ref and ref != request.ref:
                raise AdapterError(f"BDC110 answer is about {v.show(ref)}, not {v.show(request.ref)}")
            bound["ref"] = request.ref
        return dataclasses.replace(message, **bound)

    def decode_all(self, frame: bytes) -> list[base.Message]:
        """The message in one frame, or the answer in an exchange kept as evidence.

        A per-request link keeps as evidence the bytes of both directions of a connection:
        the request frame, then the answer frame.  The answer names no request, so it is
        read bound to the request before it (:meth:`decode_answer`); that is what the
        connection meant.
        """
        if len(frame) < HEADER_LEN:
            return [self.decode(frame)]
        first = check_header(frame[:HEADER_LEN], self.max_frame)
        if first is None or HEADER_LEN + first >= len(frame):
            return [self.decode(frame)]
        cut = HEADER_LEN + first
        request = self.decode(frame[:cut])
        return [self.decode_answer(frame[cut:], request)]

    def refusal(self, frame: bytes, *, sender: str, seq_no: str, text: str = FAIL_TEXT) -> bytes | None:
        """The protocol's own refusal of a request frame we cannot take, or None.

        As the deployed centre answers a request it cannot parse or whose TxCode it does
        not know (docs/protocols/bdc.md): TxStatus ``1``, RtnCode ``10000``, 失败 (or
        ``text``), the request's TxCode and SendNode echoed.  None when the frame is not a
        readable request (an answer, or no head to answer), which then goes unanswered.
        """
        try:
            if len(frame) <= HEADER_LEN:
                return None
            root = parse_xml(self._open(frame)[0], max_bytes=self.max_frame, max_depth=6,
                             encodings=("gbk",))
            doc = read_doc(root)
            h = doc.head
            if "TxStatus" in h:
                return None
            requester = v.node("SendNode", h.get("SendNode", ""))
            reply_to = h.get("SendSeqNo", "")
            head = self._response_head(self._clock(), doc.tx_code,
                                       ("1", FAIL_CODE, v.text("text", text, v.MESSAGE_LEN) or FAIL_TEXT),
                                       seq_no=seq_no, reply_to=reply_to, answering_node=sender,
                                       requesting_node=requester, bdc_stamp=False)
        except (AdapterError, ValueError, TypeError, LookupError, etree.LxmlError):
            return None
        try:
            body = self._seal(render(head, [], None), clear=doc.tx_code in _SIGN_IN_CODES)
        except AdapterError:
            return None  # no session key to answer with
        return sender.encode("ascii") + b"0" + bytes(9) + len(body).to_bytes(4, "big") + body


# -- decoding the bdc-only messages (adapters/bdc/messages.py) ----------------------------


def _dec_collection(adapter: BdcAdapter, doc: Doc) -> bm.Collection:
    h, b = doc.head, doc.body
    settle = b["SettleType"]
    if settle not in ("1", "2", "3"):
        raise AdapterError(f"SettleType: must be 1, 2 or 3, not {v.show(settle)}")
    same_bank = settle == "1"
    if b["DeBankClass"] != ("0" if same_bank else "1"):
        raise AdapterError(f"DeBankClass: {v.show(b['DeBankClass'])} disagrees with SettleType {settle}")
    if b["CrAcctClass"] != "2":
        raise AdapterError(f"CrAcctClass: the centre's account is corporate (2), not {v.show(b['CrAcctClass'])}")
    if b["DeAcctClass"] not in ("1", "2"):
        raise AdapterError(f"DeAcctClass: must be 1 or 2, not {v.show(b['DeAcctClass'])}")
    if b.get("RefAcctNo"):
        raise AdapterError("RefAcctNo: not supported, must be empty")
    return bm.Collection(
        seq_no=h["SendSeqNo"], send_date=v.parse_date("SendDate", h["SendDate"]), centre_node=h["SendNode"],
        unit_no=v.match("TxUnitNo", h["TxUnitNo"], v.UNIT_NO, "must be 15 digits"),
        credit_account=v.match("CrAcctNo", b["CrAcctNo"], v.ACCOUNT, "must be 1-32 letters or digits"),
        credit_name=v.text("CrAcctName", b["CrAcctName"], v.NAME_LEN, required=True),
        debtor_account=v.match("DeAcctNo", b["DeAcctNo"], v.ACCOUNT, "must be 1-32 letters or digits"),
        debtor_name=v.text("DeAcctName", b["DeAcctName"], v.NAME_LEN, required=True),
        debtor_personal=b["DeAcctClass"] == "1", same_bank=same_bank,
        amount=v.parse_amount("Amt", b["Amt"], positive=True),
        bus_type=adapter._bus_type(b["BusType"]),
        debtor_bank_code=v.match("DeChgNo", b.get("DeChgNo", ""), v.BANK_CODE, "must be a 12-digit branch code",
                                 optional=same_bank),
        debtor_bank_name=v.text("DeBankName", b.get("DeBankName", ""), v.NAME_LEN),
        agreement_no=v.text("ConAgrNo", b.get("ConAgrNo", ""), v.OTHER_LEN),
        memo=v.text("Remark", b.get("Remark", ""), v.MEMO_LEN),
        reference=v.text("Summary", b.get("Summary") or b.get("RefSeqNo", ""), v.REFERENCE_LEN))


def _dec_batch(adapter: BdcAdapter, doc: Doc) -> bm.Batch:
    h, b = doc.head, doc.body
    payment = doc.tx_code == "BDC103"
    kind = "payment" if payment else "collection"
    files = [text for _, text in read_files(doc, f"{doc.tx_code} request")]
    if len(files) != 1:
        raise AdapterError(f"FILE_LIST: a batch carries one file, not {len(files)}")
    items = _batch.parse_batch(kind, b["FileType"], files[0])
    prefix = "De" if payment else "Cr"
    if b.get(prefix + "AcctClass", "2") not in ("", "2"):
        raise AdapterError(f"{prefix}AcctClass: the centre's account is corporate (2)")
    if payment:
        if b.get("BatchIntAmt") and v.parse_amount("BatchIntAmt", b["BatchIntAmt"]) != 0:
            raise AdapterError("BatchIntAmt: an interest leg is not supported")
        for name in ("DeIntAcctNo", "DeIntAcctName", "DeIntAcctClass", "DeIntCrAcct"):
            v.text(name, b.get(name, ""), v.OTHER_LEN)
    total = sum(i.amount for i in items)
    checks = [("BatchTotalAmt", b["BatchTotalAmt"])] + ([("BatchCapAmt", b["BatchCapAmt"])] if payment else [])
    for name, value in checks:
        if v.parse_amount(name, value) != total:
            raise AdapterError(f"{name}: differs from the sum of the file's lines")
    if b["BatchTotalNum"].strip() != str(len(items)):
        raise AdapterError(f"BatchTotalNum: {v.show(b['BatchTotalNum'])}, the file has {len(items)} lines")
    return bm.Batch(
        seq_no=h["SendSeqNo"], send_date=v.parse_date("SendDate", h["SendDate"]), centre_node=h["SendNode"],
        unit_no=v.match("TxUnitNo", h["TxUnitNo"], v.UNIT_NO, "must be 15 digits"), kind=kind,
        bus_type=adapter._bus_type(b["BusType"]), file_type=b["FileType"],
        account=v.match(prefix + "AcctNo", b.get(prefix + "AcctNo", ""), v.ACCOUNT,
                        "must be 1-32 letters or digits"),
        account_name=v.text(prefix + "AcctName", b.get(prefix + "AcctName", ""), v.NAME_LEN, required=True),
        items=items, memo=v.text("Remark", b.get("Remark", ""), v.MEMO_LEN),
        project_no=v.text("BatchPrjNo", b.get("BatchPrjNo", ""), v.OTHER_LEN))


def _dec_branch_query(adapter: BdcAdapter, doc: Doc) -> bm.BranchQuery:
    b = doc.body
    areas = tuple(v.match("AreaNo", a.strip(), _AREA, "must be 4-digit area codes, comma-separated")
                  for a in b["AreaNo"].split(",") if a.strip())
    if not areas:
        raise AdapterError("AreaNo: no area code")
    return bm.BranchQuery(seq_no=doc.head["SendSeqNo"], areas=areas,
                          bank_code=v.match("BankNo", b["BankNo"], _BANK_NO3, "must be a 3-digit bank code"))


_OWN_REQUESTS: dict[str, Callable[[BdcAdapter, Doc], base.Message]] = {
    "BDC002": lambda a, d: bm.SignOff(seq_no=d.head["SendSeqNo"], node=d.head["SendNode"]),
    "BDC102": _dec_collection,
    "BDC103": _dec_batch,
    "BDC104": _dec_batch,
    "BDC107": lambda a, d: bm.BatchQuery(seq_no=d.head["SendSeqNo"],
                                         batch_no=v.serial("BatchNo", d.body["BatchNo"])),
    "BDC108": lambda a, d: bm.BatchResultQuery(
        seq_no=d.head["SendSeqNo"], batch_no=v.serial("BatchNo", d.body["BatchNo"]),
        sub_code=v.text("TxCodeSub", d.body["TxCodeSub"], v.STATUS_LEN, required=True)),
    "BDC112": _dec_branch_query,
    "BDC113": lambda a, d: bm.StatementQuery(
        seq_no=d.head["SendSeqNo"], date_from=v.parse_date("TxDateBegin", d.body["TxDateBegin"]),
        date_to=v.parse_date("TxDateEnd", d.body["TxDateEnd"]), bank_node=d.head["ReceiveNode"]),
}


def _count(name: str, value: str) -> int:
    value = value.strip()
    if not value.isdigit() or len(value) > 9:
        raise AdapterError(f"{name}: must be a count, not {v.show(value)}")
    return int(value)


def _dec_batch_status(adapter: BdcAdapter, doc: Doc, seq_no: str, reply_to: str) -> bm.BatchStatus:
    b = doc.body
    state = bm.BATCH_STATES.get(b["BatchTxStatus"])
    if state is None:
        raise AdapterError(f"BatchTxStatus: must be 0, 1, 2 or 3, not {v.show(b['BatchTxStatus'])}")
    if {b["CurrNo"], b["CurrIden"]} - {"156", "1"} or b["CurrNo"] == b["CurrIden"]:
        raise AdapterError("CurrNo/CurrIden: only CNY (156, 1) is carried")
    return bm.BatchStatus(
        seq_no=seq_no, reply_to=reply_to, batch_no=v.serial("BatchNo", b["BatchNo"]), state=state,
        batch_date=v.parse_date("BatchDate", b["BatchDate"]), bus_type=adapter._bus_type(b["BusType"]),
        total_num=_count("BatchTotalNum", b["BatchTotalNum"]),
        total_amount=v.parse_amount("BatchTotalAmt", b["BatchTotalAmt"]),
        succeeded_num=_count("BatchTotalSuccNum", b["BatchTotalSuccNum"]),
        succeeded_amount=v.parse_amount("BatchTotalSuccAmt", b["BatchTotalSuccAmt"]),
        send_seq_no=v.serial("SendSeqNo", b.get("SendSeqNo", ""), optional=True),
        branch_no=v.text("BatchSendBranchNo", b["BatchSendBranchNo"], v.OTHER_LEN),
        bank_operator=v.text("BkOperNo", b["BkOperNo"], v.CODE_LEN),
        project_no=v.text("BatchPrjNo", b.get("BatchPrjNo", ""), v.OTHER_LEN),
        summary=v.text("Summary", b.get("Summary", ""), v.MEMO_LEN),
        remark=v.text("Remark", b.get("Remark", ""), v.MEMO_LEN))


def _dec_batch_results(adapter: BdcAdapter, doc: Doc, seq_no: str, reply_to: str) -> bm.BatchResults:
    files = [text for _, text in read_files(doc, "BDC108 response") if text.strip()]
    if len(files) != 1:
        raise AdapterError(f"FILE_LIST: a result answer carries one result file, not {len(files)}")
    summary, lines = _batch.parse_results(files[0])
    return bm.BatchResults(seq_no=seq_no, reply_to=reply_to, lines=lines, **summary)  # type: ignore[arg-type]


def _dec_branches(adapter: BdcAdapter, doc: Doc, seq_no: str, reply_to: str) -> bm.Branches:
    rows = read_rows(doc, "ChgNoList", "BDC112 response")
    branches = []
    for i, row in enumerate(rows):
        doc.ignored.update(f"ChgNoList.{n}" for n in row.keys() - {"ChgNo", "ChgName"})
        branches.append(bm.Branch(
            code=v.match(f"ChgNoList[{i}].ChgNo", row.get("ChgNo", ""), v.BANK_CODE, "must be 12 digits"),
            name=v.text(f"ChgNoList[{i}].ChgName", row.get("ChgName", ""), v.NAME_LEN, required=True)))
    return bm.Branches(seq_no=seq_no, reply_to=reply_to, branches=tuple(branches))


_OWN_ANSWERS: dict[str, Callable[[BdcAdapter, Doc, str, str], base.Message]] = {
    "BDC107": _dec_batch_status, "BDC108": _dec_batch_results, "BDC112": _dec_branches,
}
