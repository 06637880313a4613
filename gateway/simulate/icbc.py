"""A simulated ICBC NC (NetSafe Client) and the bank behind it: pure answer logic and a
loopback HTTP edge with its trading servlet and its signing port.

:class:`NcFrontEnd` answers one posted form at a time (:meth:`NcFrontEnd.trade`) and signs
packages (:meth:`NcFrontEnd.sign`), with no I/O and no clock of its own.  As the public
sources show the real one: forms of TransCode/BankCode/GroupCIS/ID/PackageID/reqData, answers
``reqData=<base64>`` or ``errorCode=NNNNN``, PAYENT taken then reported by QPAYENT with
Result 4 (awaiting the bank) for a few polls before 7 (success) or 6 (refused), QHISD paged
by NextTag, amounts in fen.  It keeps balances and executes each package id at most once.

**The simulator's own choices, not the bank's** (the sources say nothing): the signed
package is the plain document in base64 between ``<sign>`` tags; a resent PAYENT package id
is answered as the first was, executing nothing; an unknown QPAYENT package is RetCode
:data:`SIM_CODES` ``no_such_package``; a form NC cannot read is ``errorCode`` :data:`SIM_CODES`
``bad_form``; a refused transfer's instrRetCode is ``insufficient_funds``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.web import resource, server

from adapters.base import AdapterError
from adapters.icbc import codec as c

__all__ = ["SIM_CODES", "NcFrontEnd", "make_sites", "TRADE_PATH"]

TRADE_PATH = b"/servlet/ICBCCMPAPIReqServlet"

SIM_CODES = {"bad_form": "99001", "no_such_package": "SIM404", "insufficient_funds": "SIM051",
             "bad_signature": "99002"}


@dataclass
class _Payment:
    fseqno: str
    serial: str
    payer: str
    payee: str
    payee_name: str
    amount: int
    polls_left: int
    result: str = "0"
    code: str = ""
    text: str = "提交成功"


@dataclass
class _Row:
    account: str
    seq: str
    amount: int
    moment: dt.datetime
    other: str
    other_name: str
    balance_after: int
    summary: str


@dataclass
class NcFrontEnd:
    """NC and its bank (see the module docstring)."""

    cis: str
    cert_id: str
    balances: dict[str, int]
    polls_before_final: int = 1
    page_size: int = 2
    payments: dict[str, _Payment] = field(default_factory=dict)
    rows: list[_Row] = field(default_factory=list)
    executions: int = 0
    executed_refs: Counter[str] = field(default_factory=Counter)   # fSeqno -> times executed
    duplicates: int = 0            # PAYENT packages for an fSeqno already held
    _serial: int = 700429979

    # -- the signing port ------------------------------------------------------------------

    def sign(self, body: bytes) -> bytes:
        try:
            c.read_document(body)
        except AdapterError:
            return b"<result><error>" + SIM_CODES["bad_signature"].encode() + b"</error></result>"
        return b"<result><sign>" + base64.b64encode(body) + b"</sign></result>"

    # -- the trading servlet -----------------------------------------------------------------

    def trade(self, body: bytes, now: dt.datetime) -> bytes:
        try:
            form = c.read_form(body)
            if form.get("BankCode") != c.BANK_CODE or form.get("GroupCIS") != self.cis \
                    or form.get("ID") != self.cert_id:
                raise AdapterError("not our customer")
            data = form.get("reqData", "")
            if form.get("TransCode") == "PAYENT":
                try:
                    xml = base64.b64decode(data.encode("ascii"), validate=True)
                except (binascii.Error, ValueError, UnicodeError):
                    raise AdapterError("PAYENT not signed") from None
            else:
                xml = data.encode(c.ENCODING)
            doc = c.read_document(xml)
            if doc.answer or doc.pub.TransCode != form.get("TransCode") \
                    or doc.pub.fSeqno != form.get("PackageID"):
                raise AdapterError("form and package disagree")
        except (AdapterError, UnicodeError):
            return c.write_nc_answer(c.NcAnswer(None, SIM_CODES["bad_form"]))
        handler = {"PAYENT": self._payent, "QPAYENT": self._qpayent, "QACCBAL": self._qaccbal,
                   "QHISD": self._qhisd}.get(doc.pub.TransCode)
        if handler is None:
            return c.write_nc_answer(c.NcAnswer(None, SIM_CODES["bad_form"]))
        try:
            out = handler(doc, now)
        except (AdapterError, ValueError) as e:  # a bad date or NextTag is answered, never a crash
            out = self._answer(doc, SIM_CODES["bad_form"], str(e)[:100], {}, ())
        return c.write_nc_answer(c.NcAnswer(out))

    @staticmethod
    def _answer(doc: c.Doc, code: str, text: str, leaves: dict[str, str],
                records: tuple[c.Rd, ...], extra: dict[str, str] | None = None) -> c.Doc:
        p = doc.pub
        pub = c.Pub(p.TransCode, p.CIS, p.ID, p.TranDate, p.TranTime, p.fSeqno, p.BankCode,
                    code, text, extra or {})
        return c.Doc(pub, True, leaves, records)

    def _payent(self, doc: c.Doc, now: dt.datetime) -> c.Doc:
        pay = self.payments.get(doc.pub.fSeqno)
        if pay is not None:
            self.duplicates += 1
        if pay is None:
            [rd] = doc.records
            self._serial += 1
            pay = _Payment(doc.pub.fSeqno, f"CMM{self._serial}", rd.get("PayAccNo"),
                           rd.get("RecAccNo"), rd.get("RecAccNameCN"),
                           c.parse_fen("PayAmt", rd.get("PayAmt")), self.polls_before_final)
            self.payments[pay.fseqno] = pay
        return self._answer(doc, "0", "", {"OnlBatF": "1", "SettleMode": "0", "TotalNum": "1"},
                            (c.Rd({"iSeqno": "1", "iRetCode": "0", "iRetMsg": ""}),),
                            {"SerialNo": pay.serial})

    def _qpayent(self, doc: c.Doc, now: dt.datetime) -> c.Doc:
        pay = self.payments.get(doc.get("QryfSeqno"))
        if pay is None:
            return self._answer(doc, SIM_CODES["no_such_package"], "无此指令", {}, ())
        self._advance(pay, now)
        rd = c.Rd({"iSeqno": "1", "QryiSeqno": "1", "Result": pay.result,
                   "instrRetCode": pay.code, "instrRetMsg": pay.text,
                   "PayAmt": str(pay.amount), "RecAccNo": pay.payee})
        return self._answer(doc, "0", "", {"QryfSeqno": pay.fseqno, "QrySerialNo": pay.serial},
                            (rd,))

    def _advance(self, pay: _Payment, now: dt.datetime) -> None:
        if pay.result in ("6", "7"):
            return
        if pay.polls_left > 0:
            pay.polls_left -= 1
            pay.result, pay.text = "4", "等待银行答复"
            return
        balance = self.balances.get(pay.payer)
        if balance is None or balance < pay.amount:
            pay.result, pay.code, pay.text = "6", SIM_CODES["insufficient_funds"], "余额不足"
            return
        self.balances[pay.payer] = balance - pay.amount
        self.executions += 1
        self.executed_refs[pay.fseqno] += 1
        pay.result, pay.text = "7", "处理成功"
        self.rows.append(_Row(pay.payer, pay.serial, -pay.amount, now, pay.payee,
                              pay.payee_name, self.balances[pay.payer], "转账"))
        if pay.payee in self.balances:
            self.balances[pay.payee] += pay.amount
            self.rows.append(_Row(pay.payee, pay.serial, pay.amount, now, pay.payer, "",
                                  self.balances[pay.payee], "转账"))

    def _qaccbal(self, doc: c.Doc, now: dt.datetime) -> c.Doc:
        [rd] = doc.records
        acct = rd.get("AccNo")
        if acct not in self.balances:
            out = c.Rd({"iSeqno": "1", "AccNo": acct, "iRetCode": SIM_CODES["bad_form"],
                        "iRetMsg": "无此账户"})
        else:
            amount = str(self.balances[acct])
            out = c.Rd({"iSeqno": "1", "AccNo": acct, "CurrType": "001", "Balance": amount,
                        "UsableBalance": amount, "FrzAmt": "0", "iRetCode": "0", "iRetMsg": ""})
        return self._answer(doc, "0", "", {}, (out,))

    def _qhisd(self, doc: c.Doc, now: dt.datetime) -> c.Doc:
        acct = doc.get("AccNo")
        first = dt.datetime.strptime(doc.get("BeginDate"), "%Y%m%d").date()
        last = dt.datetime.strptime(doc.get("EndDate"), "%Y%m%d").date()
        rows = [r for r in self.rows if r.account == acct and first <= r.moment.date() <= last]
        start = int(doc.get("NextTag") or "0")
        page = rows[start:start + self.page_size]
        next_tag = str(start + len(page)) if start + len(page) < len(rows) else ""
        records = tuple(c.Rd({
            "Drcrf": "1" if r.amount < 0 else "2",
            "DebitAmount": str(-r.amount) if r.amount < 0 else "",
            "CreditAmount": str(r.amount) if r.amount > 0 else "",
            "Balance": str(r.balance_after), "RecipAccNo": r.other, "RecipName": r.other_name,
            "Summary": r.summary, "Date": r.moment.strftime("%Y%m%d"),
            "Time": r.moment.strftime("%H%M%S"), "OnlySequence": r.seq})
            for r in page)
        return self._answer(doc, "0", "", {"AccNo": acct, "CurrType": "001",
                                           "NextTag": next_tag, "TotalNum": str(len(rows))},
                            records)


class _Trade(resource.Resource):
    isLeaf = True

    def __init__(self, front: NcFrontEnd, now: Callable[[], dt.datetime]) -> None:
        super().__init__()
        self._front, self._now = front, now

    def render_POST(self, request: server.Request) -> bytes:
        if request.path != TRADE_PATH:
            request.setResponseCode(404)
            return b""
        return self._front.trade(request.content.read(c.MAX_DOCUMENT * 2), self._now())


class _Sign(resource.Resource):
    isLeaf = True

    def __init__(self, front: NcFrontEnd) -> None:
        super().__init__()
        self._front = front

    def render_POST(self, request: server.Request) -> bytes:
        if request.getHeader(b"content-type") != b"INFOSEC_SIGN/1.0":
            request.setResponseCode(415)
            return b""
        return self._front.sign(request.content.read(c.MAX_DOCUMENT + 1))


def make_sites(front: NcFrontEnd, now: Callable[[], dt.datetime]) -> tuple[server.Site, server.Site]:
    """(the trading servlet's site, the signing port's site) for ``front``."""
    return (server.Site(_Trade(front, now), parsePOSTFormSubmission=False),
            server.Site(_Sign(front), parsePOSTFormSubmission=False))
