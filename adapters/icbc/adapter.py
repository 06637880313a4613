"""ICBC's ``<CMS>`` documents behind the neutral adapter contract (adapters/base.py).

A frame is one CMS document: what NC's form carries in ``reqData`` (requests) and what its
``reqData=`` answer carries in base64 (answers).  The gateway's link to NC uses
:class:`~adapters.icbc.session.Session`, which writes the form, the signing request and its
own clock's TranDate/TranTime; this class is the face the conformance suite, ``hpf-gateway
adapters decode``, the ledger's checks and a simulator use.

Not carried (docs/protocols/icbc.md, "Neutral messages"): an Instruction's centre node, unit,
personal flag and signature (NC signs the package itself); a StatusQuery's date; an answer's
own serial (it is the request's fSeqno); a Result's separate host serial; a Balance's
overdraft, name, status and time; an Entry's reversal flag and a zero amount; a Statement's
balances.  NC has no sign-on, heartbeat, acknowledgement or push: those kinds are refused.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import ClassVar

from lxml import etree

from adapters import base
from adapters._documents import DocumentFramer, decode_evidence
from adapters.base import AdapterError
from adapters.icbc import codec as c
from adapters.icbc import session as s

__all__ = ["IcbcAdapter"]

_END = b"</CMS>"
_PURPOSE_OF = {text: purpose for purpose, text in s.PURPOSE_TEXT.items()}


def _text(name: str, value: str, limit: int, *, required: bool = False) -> str:
    if len(value) > limit:
        raise AdapterError(f"{name}: longer than {limit} characters")
    if required and not value.strip():
        raise AdapterError(f"{name}: must not be blank")
    return value


class IcbcAdapter:
    """ICBC 银企互联 CMS documents (through NC) as a sans-I/O codec (see :mod:`adapters.icbc`)."""

    name: ClassVar[str] = "icbc"
    max_frame: ClassVar[int] = c.MAX_DOCUMENT
    # What a request/answer link must know: whether it signs on before requests, and that
    # the protocol has no line probe (an idle link is not a dead one).
    needs_sign_on: ClassVar[bool] = False
    has_heartbeat: ClassVar[bool] = False

    def __init__(self, corporate: s.Corporate | None = None,
                 now: Callable[[], dt.datetime] | None = None) -> None:
        # With a clock (the link's, one adapter per configured bank) every request's
        # TranDate/TranTime is the clock's, as NC expects; without one this is the stateless face.
        self._corp = corporate or s.Corporate("", "")
        self._now = now

    def framer(self) -> DocumentFramer:
        return DocumentFramer(_END, self.max_frame)

    def for_gateway(self, config: object, bank: object) -> "IcbcAdapter":
        """The adapter of configured bank ``bank``: its CIS and certificate id from
        ``banks.X.front_end`` and the bank's local time (China Standard Time) in every
        TranDate/TranTime."""
        from adapters.bocb2e.adapter import china_now

        front = getattr(bank, "front_end", None)
        if front is None:
            return self
        return IcbcAdapter(s.Corporate(front.cis, front.cert_id), now=china_now)

    def statement_page(self, seq_no: str, account: str, day: dt.date, cursor: str | None) -> s.HistoryPage:
        """A link's QHISD request for ``account`` on ``day`` from ``cursor`` (NextTag; None: the first page)."""
        return s.HistoryPage(s._serial("fSeqno", seq_no), s._account("account", account), day, day, cursor or "")

    def _pub(self, code: str, fseqno: str, day: dt.date | None = None, *, clock: bool = True) -> c.Pub:
        s._serial("fSeqno", fseqno)
        if self._now is not None:
            # Without the clock (``clock`` False, a check) the stamp is digits as the clock's are.
            stamp_day, stamp_time = c.tran_stamp(self._now()) if clock else ("0" * 8, "0" * 12)
            return c.Pub(code, self._corp.cis, self._corp.cert_id, stamp_day, stamp_time, fseqno)
        stamp = f"{day.year:04d}{day.month:02d}{day.day:02d}" if day else ""
        return c.Pub(code, self._corp.cis, self._corp.cert_id, stamp,
                     "000000000000" if day else "", fseqno)

    # -- encode ------------------------------------------------------------------------------

    def check(self, message: base.Message, *, sender: str, receiver: str = "") -> None:
        """Raise the :class:`AdapterError` that :meth:`encode` would raise for ``message``.

        A payment (an Instruction) is checked without writing its document: its fields are
        checked as :meth:`encode` checks them, then one scan of the document's values says
        whether :func:`~adapters.icbc.codec.write_document` would write them (the size limit
        aside); only when it would not is the document written, to refuse it as encode does.
        Every other kind is encoded and the frame dropped."""
        if isinstance(message, base.Instruction):
            # Without the clock: TranDate and TranTime are digits whatever it says, so they
            # cannot decide whether the document is written (and reading it cost a third).
            doc = self._payment(message, clock=False)
            if not c.carried(doc):
                c.write_document(doc)
            return
        self.encode(message, sender=sender, receiver=receiver)

    def _payment(self, m: base.Instruction, *, clock: bool = True) -> c.Doc:
        """The PAYENT document of instruction ``m``, its fields checked (not yet written)."""
        if not m.same_bank and not (len(m.creditor_bank_code) == 12
                                    and m.creditor_bank_code.isdigit()):
            raise AdapterError("creditor_bank_code: a 12-digit CNAPS code is needed across banks")
        if m.amount <= 0:
            raise AdapterError("amount: must be above zero")
        rd = {"iSeqno": "1", "PayType": self._corp.pay_type,
              "PayAccNo": s._account("debit_account", m.debit_account),
              "PayAccNameCN": _text("debit_name", m.debit_name, 60, required=True),
              "RecAccNo": s._account("creditor_account", m.creditor_account),
              "RecAccNameCN": _text("creditor_name", m.creditor_name, 60, required=True),
              # Within ICBC the payee's bank is ICBC: its CNAPS code is not written.
              "SysIOFlg": "1" if m.same_bank else "2",
              "RecBankNo": "" if m.same_bank else m.creditor_bank_code,
              "CurrType": "001", "PayAmt": c.fen("amount", m.amount),
              "UseCN": s.PURPOSE_TEXT[m.purpose], "Summary": _text("memo", m.memo, 140),
              "ERPSqn": _text("reference", m.reference, 35)}
        leaves = {"OnlBatF": "1", "SettleMode": "0", "TotalNum": "1",
                  "TotalAmt": c.fen("amount", m.amount)}
        return c.Doc(self._pub("PAYENT", m.seq_no, m.send_date, clock=clock), False, leaves, (c.Rd(rd),))

    def encode(self, message: base.Message, *, sender: str, receiver: str = "") -> bytes:
        m = message
        if isinstance(m, base.Instruction):
            return c.write_document(self._payment(m))
        if isinstance(m, s.HistoryPage):
            return c.write_document(c.Doc(self._pub("QHISD", m.seq_no), False, {
                "AccNo": s._account("account", m.account), "BeginDate": m.first.strftime("%Y%m%d"),
                "EndDate": m.last.strftime("%Y%m%d"), "MinAmt": "", "MaxAmt": "", "NextTag": m.next_tag}, ()))
        if isinstance(m, base.StatusQuery):
            return c.write_document(c.Doc(self._pub("QPAYENT", m.seq_no), False, {
                "QryfSeqno": s._serial("ref", m.ref), "QrySerialNo": ""},
                (c.Rd({"iSeqno": "1", "QryiSeqno": "1"}),)))
        if isinstance(m, base.BalanceQuery):
            return c.write_document(c.Doc(self._pub("QACCBAL", m.seq_no), False, {}, (c.Rd({
                "iSeqno": "1", "AccNo": s._account("account", m.account), "CurrType": "001"}),)))
        if isinstance(m, base.Receipt):
            bank = s._serial("bank_seq_no", m.bank_seq_no) if m.bank_seq_no else ""
            if m.reply_to == m.ref:
                return self._answer("PAYENT", m.ref, {"TotalNum": "1"},
                                    (c.Rd({"iSeqno": "1", "iRetCode": "0", "iRetMsg": ""}),),
                                    {"SerialNo": bank})
            return self._answer("QPAYENT", m.reply_to, {
                "QryfSeqno": s._serial("ref", m.ref), "QrySerialNo": bank},
                (c.Rd({"iSeqno": "1", "QryiSeqno": "1", "Result": "9"}),))
        if isinstance(m, base.Result):
            if m.succeeded and m.code:
                raise AdapterError("code: Result 7 carries no code of its own")
            if m.host_seq_no not in ("", m.bank_seq_no) or (not m.succeeded and m.host_seq_no):
                raise AdapterError("host_seq_no: ICBC reports one serial (QrySerialNo)")
            if not m.succeeded and not m.code:
                raise AdapterError("code: a refused transfer carries instrRetCode")
            bank = s._serial("bank_seq_no", m.bank_seq_no) if m.bank_seq_no else ""
            return self._answer("QPAYENT", m.reply_to, {
                "QryfSeqno": s._serial("ref", m.ref), "QrySerialNo": bank}, (c.Rd({
                    "iSeqno": "1", "QryiSeqno": "1", "Result": "7" if m.succeeded else "6",
                    "instrRetCode": _text("code", m.code, 32),
                    "instrRetMsg": _text("text", m.text, 256)}),))
        if isinstance(m, base.Balance):
            if not m.reply_to or m.overdraft or m.account_name or m.status or m.as_of is not None:
                raise AdapterError("Balance: QACCBAL answers a query with Balance and "
                                   "UsableBalance only")
            return self._answer("QACCBAL", m.reply_to, {}, (c.Rd({
                "iSeqno": "1", "AccNo": s._account("account", m.account), "CurrType": "001",
                "Balance": c.fen("balance", m.balance, signed=True),
                "UsableBalance": c.fen("available", m.available, signed=True),
                "iRetCode": "0", "iRetMsg": ""}),))
        if isinstance(m, base.Statement):
            return self._statement(m)
        raise AdapterError(f"icbc cannot carry a {type(m).__name__}")

    def _answer(self, code: str, fseqno: str, leaves: dict[str, str], records: tuple[c.Rd, ...],
                extra: dict[str, str] | None = None) -> bytes:
        pub = self._pub(code, fseqno)
        pub = c.Pub(pub.TransCode, pub.CIS, pub.ID, pub.TranDate, pub.TranTime, pub.fSeqno,
                    pub.BankCode, "0", "", extra or {})
        return c.write_document(c.Doc(pub, True, leaves, records))

    def _statement(self, m: base.Statement) -> bytes:
        if m.opening_balance is not None or m.closing_balance is not None:
            raise AdapterError("opening/closing balance: QHISD carries none")
        rows = []
        for i, e in enumerate(m.entries):
            where = f"entries[{i}]"
            if e.account != m.account:
                raise AdapterError(f"{where}.account: not the statement's account")
            if e.reversal or e.amount == 0:
                raise AdapterError(f"{where}: QHISD has no reversal flag and no zero amount")
            if e.time.microsecond or e.time.tzinfo is not None:
                raise AdapterError(f"{where}.time: whole seconds of local time only")
            code = e.counterparty_bank_code
            if code and not (len(code) == 12 and code.isdigit()):
                raise AdapterError(f"{where}.counterparty_bank_code: must be 12 digits")
            rows.append(c.Rd({
                "Drcrf": "1" if e.amount < 0 else "2",
                "DebitAmount": c.fen(f"{where}.amount", -e.amount) if e.amount < 0 else "",
                "CreditAmount": c.fen(f"{where}.amount", e.amount) if e.amount > 0 else "",
                "Balance": "" if e.balance_after is None else
                c.fen(f"{where}.balance_after", e.balance_after, signed=True),
                "RecipBkNo": code,
                "RecipAccNo": s._account(f"{where}.counterparty_account", e.counterparty_account,
                                         optional=True),
                "RecipName": _text(f"{where}.counterparty_name", e.counterparty_name, 60),
                "Summary": _text(f"{where}.summary", e.summary, 140),
                "PostScript": _text(f"{where}.remark", e.remark, 140),
                "Date": f"{e.value_date.year:04d}{e.value_date.month:02d}{e.value_date.day:02d}",
                "Time": f"{e.time.hour:02d}{e.time.minute:02d}{e.time.second:02d}",
                "OnlySequence": s._serial(f"{where}.host_seq_no", e.host_seq_no)}))
        return self._answer("QHISD", m.reply_to, {
            "AccNo": s._account("account", m.account), "CurrType": "001", "NextTag": "",
            "TotalNum": str(len(rows))}, tuple(rows))

    # -- answers bound to their request (one exchange with NC) ------------------------------

    def decode_answer(self, frame: bytes, request: base.Message) -> base.Message:
        """The answer document in ``frame`` to ``request`` (the request its exchange carried):
        PAYENT a Receipt, QPAYENT a Receipt or Result by the Result code, QACCBAL a Balance;
        a RetCode other than 0 is :class:`~adapters.icbc.session.Refused` (no outcome)."""
        try:
            if not isinstance(frame, bytes) or not frame.strip().endswith(_END):
                raise AdapterError("frame: not one CMS document")
            doc = c.read_document(frame.strip())
            expected = {base.Instruction: "PAYENT", base.StatusQuery: "QPAYENT",
                        base.BalanceQuery: "QACCBAL", s.HistoryPage: "QHISD"}.get(type(request))
            if expected is None:
                raise AdapterError(f"icbc: no answer is read for a {type(request).__name__}")
            if not doc.answer or doc.pub.TransCode != expected:
                raise AdapterError(f"icbc: expected a {expected} answer")
            if doc.pub.RetCode != "0":
                raise s.Refused(doc.pub.RetCode or "", doc.pub.RetMsg)
            if isinstance(request, base.Instruction):
                return s.Session._payent(request.seq_no, doc)
            if isinstance(request, base.StatusQuery):
                return s.Session._qpayent(request, doc)
            if isinstance(request, s.HistoryPage):
                return s.Session._qhisd(request, doc)  # type: ignore[return-value]
            assert isinstance(request, base.BalanceQuery)
            return s.Session._qaccbal(request, doc)
        except (ValueError, LookupError, UnicodeError, RecursionError, etree.LxmlError) as e:
            raise AdapterError(f"icbc: {type(e).__name__}") from None

    def decode_all(self, frame: bytes) -> list[base.Message]:
        """One document, or a request followed by its answer (one exchange's evidence), read
        as the answer bound to that request."""
        page = self._history_request(frame)
        if page is not None:   # a link's QHISD poll: the page's records
            return [self.decode_answer(page[1], page[0]).statement]  # type: ignore[attr-defined]
        return decode_evidence(self, frame, _END)

    def _history_request(self, frame: bytes) -> tuple[s.HistoryPage, bytes] | None:
        """A QHISD request followed by its answer (a statement poll's evidence) as the page it
        asked for and the answer; None for anything else."""
        framer = DocumentFramer(_END, self.max_frame * 2)
        try:
            parts = framer.feed(frame)
            if len(parts) != 2 or framer.pending():
                return None
            doc = c.read_document(parts[0])
        except AdapterError:
            return None
        except (ValueError, LookupError, UnicodeError, RecursionError, etree.LxmlError):
            return None
        if doc.answer or doc.pub.TransCode != "QHISD":
            return None
        try:
            return s.HistoryPage(s._serial("fSeqno", doc.pub.fSeqno), s._account("AccNo", doc.get("AccNo")),
                                 s._date("BeginDate", doc.get("BeginDate")), s._date("EndDate", doc.get("EndDate")),
                                 doc.get("NextTag")), parts[1]
        except (ValueError, LookupError) as e:
            raise AdapterError(f"icbc: QHISD request: {type(e).__name__}") from None

    # -- decode ------------------------------------------------------------------------------

    def decode(self, frame: bytes) -> base.Message:
        try:
            if not isinstance(frame, bytes) or not frame.endswith(_END):
                raise AdapterError("frame: not one CMS document")
            doc = c.read_document(frame)
            return self._answer_of(doc) if doc.answer else self._request_of(doc)
        except (ValueError, LookupError, UnicodeError, RecursionError, etree.LxmlError) as e:
            raise AdapterError(f"icbc: {type(e).__name__}") from None

    def decode_document(self, body: bytes) -> list[base.Message]:
        """One unframed document, or NC's ``reqData=<base64>`` answer as captured (the
        whitespace a file adds around it is no part of it)."""
        body = body.strip(b" \t\r\n")
        if body.startswith(b"reqData="):
            document = c.read_nc_answer(body).document
            if document is None:
                raise AdapterError("NC answer: no document")
            try:
                return [self._answer_of(document)]
            except (ValueError, LookupError, UnicodeError, RecursionError) as e:
                raise AdapterError(f"icbc: {type(e).__name__}") from None
        if body.startswith(b"errorCode="):
            raise AdapterError(f"NC answered {c.show(body[:40])}")
        return [self.decode(body)]

    def _request_of(self, doc: c.Doc) -> base.Message:
        p = doc.pub
        seq = s._serial("fSeqno", p.fSeqno)
        if p.TransCode == "QPAYENT":
            return base.StatusQuery(seq, s._serial("QryfSeqno", doc.get("QryfSeqno")), dt.date.min)
        if len(doc.records) != 1:
            raise AdapterError(f"{c.show(p.TransCode)}: {len(doc.records)} records; one is read")
        rd = doc.records[0]
        if p.TransCode == "QACCBAL":
            return base.BalanceQuery(seq, s._account("AccNo", rd.get("AccNo")))
        if p.TransCode == "PAYENT":
            flag = rd.get("SysIOFlg")
            if flag not in ("1", "2") or rd.get("CurrType") != "001":
                raise AdapterError("PAYENT: SysIOFlg must be 1 or 2 and CurrType 001")
            code = rd.get("RecBankNo")
            if (flag == "1" and code) or (flag == "2" and not (len(code) == 12 and code.isdigit())):
                raise AdapterError(f"RecBankNo: {c.show(code)} does not fit SysIOFlg {flag}")
            purpose = _PURPOSE_OF.get(rd.get("UseCN"))
            if purpose is None:
                raise AdapterError(f"UseCN: {c.show(rd.get('UseCN'))} is no purpose the gateway writes")
            amount = c.parse_fen("PayAmt", rd.get("PayAmt"))
            if amount <= 0 or c.parse_fen("TotalAmt", doc.get("TotalAmt")) != amount:
                raise AdapterError("PayAmt: must be above zero and equal TotalAmt")
            day = s._date("TranDate", p.TranDate)
            return base.Instruction(
                seq_no=seq, send_date=day, centre_node="", unit_no="",
                debit_account=s._account("PayAccNo", rd.get("PayAccNo")),
                debit_name=_text("PayAccNameCN", rd.get("PayAccNameCN"), 60, required=True),
                creditor_account=s._account("RecAccNo", rd.get("RecAccNo")),
                creditor_name=_text("RecAccNameCN", rd.get("RecAccNameCN"), 60, required=True),
                creditor_bank_code=code, creditor_personal=False, same_bank=flag == "1",
                amount=amount, purpose=purpose, memo=_text("Summary", rd.get("Summary"), 140),
                reference=_text("ERPSqn", rd.get("ERPSqn"), 35))
        raise AdapterError(f"{c.show(p.TransCode)}: not a request the gateway sends")

    def _answer_of(self, doc: c.Doc) -> base.Message:
        p = doc.pub
        if p.RetCode != "0":
            raise AdapterError(f"icbc: {c.show(p.TransCode)} refused {c.show(p.RetCode)} "
                               f"{c.show(p.RetMsg, 60)}")
        seq = s._serial("fSeqno", p.fSeqno)
        if p.TransCode == "PAYENT":
            return s.Session._payent(seq, doc)
        if p.TransCode == "QPAYENT":
            query = base.StatusQuery(seq, s._serial("QryfSeqno", doc.get("QryfSeqno")), dt.date.min)
            return s.Session._qpayent(query, doc)
        if p.TransCode == "QACCBAL":
            if len(doc.records) != 1:
                raise AdapterError(f"QACCBAL: {len(doc.records)} records")
            account = s._account("AccNo", doc.records[0].get("AccNo"))
            return s.Session._qaccbal(base.BalanceQuery(seq, account), doc)
        if p.TransCode == "QHISD":
            account = s._account("AccNo", doc.get("AccNo"))
            page = s.HistoryPage(seq, account, dt.date.min, dt.date.min)
            return s.Session._qhisd(page, doc).statement
        raise AdapterError(f"{c.show(p.TransCode)}: not an answer the gateway reads")
