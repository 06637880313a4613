"""The gateway's side of ICBC's NC, sans I/O: neutral messages to forms, NC answers to
neutral messages.  NC authenticates with its own certificate: there is no sign-on."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

from adapters import base
from adapters.base import AdapterError
from adapters.icbc import codec as c

__all__ = ["Corporate", "Refused", "NcError", "HistoryPage", "HistoryAnswer", "Session",
           "RESULT_SUCCEEDED", "RESULT_FAILED", "RESULT_PENDING", "PURPOSE_TEXT"]

RESULT_SUCCEEDED = frozenset({"7"})                 # 处理成功
RESULT_FAILED = frozenset({"6", "8", "11"})         # 被银行拒绝, 指令被拒绝授权, 预约取消
RESULT_PENDING = frozenset({"0", "1", "2", "3", "4", "5", "9", "10"})

PURPOSE_TEXT = {"withdrawal": "公积金提取", "loan_disbursement": "公积金贷款发放",
                "allocation": "资金划拨", "deposit_placement": "资金存放", "refund": "退款",
                "fee": "手续费", "other": "其他"}
"""UseCN (用途) written for each purpose: our words; the field is free text."""

_SERIAL = re.compile(r"[!-~]{1,32}")
_ACCOUNT = re.compile(r"[0-9A-Za-z-]{1,32}")
_DATE = re.compile(r"([0-9]{4})-?([0-9]{2})-?([0-9]{2})")
_TIME = re.compile(r"([0-9]{2})[:.]?([0-9]{2})[:.]?([0-9]{2})(?:[.0-9]*)")


class Refused(AdapterError):
    """NC or the bank refused the request as a whole (RetCode not 0, or a record's iRetCode);
    for a transfer this is no outcome: it is in doubt until QPAYENT says."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"ICBC: refused {c.show(code)} {c.show(text, 80)}")
        self.code, self.text = code, text


class NcError(AdapterError):
    """NC answered ``errorCode=NNNNN`` instead of a document."""

    def __init__(self, code: str) -> None:
        super().__init__(f"ICBC NC: errorCode={code}")
        self.code = code


@dataclass(frozen=True)
class Corporate:
    """Who the gateway is at NC: the group customer number (CIS) and the certificate id (ID)."""

    cis: str
    cert_id: str
    pay_type: str = "2"          # PayType as the public client configures it by default


@dataclass(frozen=True)
class HistoryPage:
    """One page of QHISD (history details); ``next_tag`` empty for the first page."""

    seq_no: str
    account: str
    first: dt.date
    last: dt.date
    next_tag: str = ""


@dataclass(frozen=True)
class HistoryAnswer:
    statement: base.Statement
    next_tag: str               # empty: the last page

    @property
    def more(self) -> bool:
        return bool(self.next_tag)

    @property
    def cursor(self) -> str | None:
        """Where the next page starts; after the last page None: NextTag says nothing of a
        later poll, so the next poll reads the day again (the store keeps each movement once)."""
        return self.next_tag or None


def _serial(name: str, value: str) -> str:
    if not _SERIAL.fullmatch(value):
        raise AdapterError(f"{name}: must be 1-32 printable ASCII characters: {c.show(value)}")
    return value


def _account(name: str, value: str, *, optional: bool = False) -> str:
    if not (_ACCOUNT.fullmatch(value) or (optional and value == "")):
        raise AdapterError(f"{name}: must be 1-32 letters, digits or '-': {c.show(value)}")
    return value


def _date(name: str, text: str) -> dt.date:
    m = _DATE.fullmatch(text.strip())
    try:
        if m is None:
            raise ValueError
        return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise AdapterError(f"{name}: not a date: {c.show(text)}") from None


def _time(name: str, text: str) -> dt.time:
    m = _TIME.fullmatch(text.strip())
    try:
        if m is None:
            raise ValueError
        return dt.time(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise AdapterError(f"{name}: not a time: {c.show(text)}") from None


class Session:
    """The neutral <-> ICBC mapping for one NC (see the module docstring)."""

    def __init__(self, corporate: Corporate, now: Callable[[], dt.datetime]) -> None:
        self.corporate = corporate
        self._now = now

    def _pub(self, trans_code: str, fseqno: str) -> c.Pub:
        day, moment = c.tran_stamp(self._now())
        return c.Pub(trans_code, self.corporate.cis, self.corporate.cert_id, day, moment,
                     _serial("fSeqno", fseqno))

    # -- PAYENT: signed by NC first --------------------------------------------------------

    def payent_document(self, m: base.Instruction) -> bytes:
        """The plain PAYENT package for NC's signing port; its fSeqno is the durable serial."""
        now = self._now()
        rd = {
            "iSeqno": "1", "PayType": self.corporate.pay_type,
            "PayAccNo": _account("debit_account", m.debit_account), "PayAccNameCN": m.debit_name,
            "RecAccNo": _account("creditor_account", m.creditor_account),
            "RecAccNameCN": m.creditor_name, "SysIOFlg": "1" if m.same_bank else "2",
            "RecBankNo": "" if m.same_bank else m.creditor_bank_code, "CurrType": "001",
            "PayAmt": c.fen("amount", m.amount), "UseCN": PURPOSE_TEXT.get(m.purpose, "其他"),
            "Summary": m.memo, "ERPSqn": m.reference}
        if m.amount <= 0:
            raise AdapterError("amount: must be above zero")
        leaves = {"OnlBatF": "1", "SettleMode": "0", "TotalNum": "1",
                  "TotalAmt": c.fen("amount", m.amount),
                  "SignTime": now.strftime("%Y%m%d%H%M%S") + f"{now.microsecond // 1000:03d}"}
        return c.write_document(c.Doc(self._pub("PAYENT", m.seq_no), False, leaves, (c.Rd(rd),)))

    def payent_form(self, m: base.Instruction, signed: str) -> bytes:
        """The trading form carrying the package NC signed."""
        return c.form_body(self._pub("PAYENT", m.seq_no), signed)

    # -- queries ---------------------------------------------------------------------------

    def request(self, m: base.StatusQuery | base.BalanceQuery | HistoryPage) -> bytes:
        """The trading form for a query (plain document in reqData)."""
        if isinstance(m, base.StatusQuery):
            doc = c.Doc(self._pub("QPAYENT", m.seq_no), False,
                        {"QryfSeqno": _serial("ref", m.ref), "QrySerialNo": ""},
                        (c.Rd({"iSeqno": "1", "QryiSeqno": "1"}),))
        elif isinstance(m, base.BalanceQuery):
            doc = c.Doc(self._pub("QACCBAL", m.seq_no), False, {},
                        (c.Rd({"iSeqno": "1", "AccNo": _account("account", m.account),
                               "CurrType": "001"}),))
        elif isinstance(m, HistoryPage):
            doc = c.Doc(self._pub("QHISD", m.seq_no), False, {
                "AccNo": _account("account", m.account), "BeginDate": m.first.strftime("%Y%m%d"),
                "EndDate": m.last.strftime("%Y%m%d"), "MinAmt": "", "MaxAmt": "",
                "NextTag": m.next_tag})
        else:
            raise AdapterError(f"ICBC cannot carry a {type(m).__name__}")
        data = c.write_document(doc)
        return c.form_body(doc.pub, data.decode(c.ENCODING))

    # -- answers ---------------------------------------------------------------------------

    @staticmethod
    def _doc(body: bytes, trans_code: str) -> c.Doc:
        answer = c.read_nc_answer(body)
        if answer.document is None:
            raise NcError(answer.error_code)
        doc = answer.document
        if doc.pub.TransCode != trans_code or not doc.answer:
            raise AdapterError(f"ICBC: expected a {trans_code} answer, got {c.show(doc.pub.TransCode)}")
        if doc.pub.RetCode != "0":
            raise Refused(doc.pub.RetCode or "", doc.pub.RetMsg)
        return doc

    def read(self, m: base.Instruction | base.StatusQuery | base.BalanceQuery | HistoryPage,
             body: bytes) -> list[base.Message] | HistoryAnswer:
        if isinstance(m, base.Instruction):
            return [self._payent(m.seq_no, self._doc(body, "PAYENT"))]
        if isinstance(m, base.StatusQuery):
            return [self._qpayent(m, self._doc(body, "QPAYENT"))]
        if isinstance(m, base.BalanceQuery):
            return [self._qaccbal(m, self._doc(body, "QACCBAL"))]
        if isinstance(m, HistoryPage):
            return self._qhisd(m, self._doc(body, "QHISD"))
        raise AdapterError(f"ICBC: no answer is read for a {type(m).__name__}")

    @staticmethod
    def _payent(seq_no: str, doc: c.Doc) -> base.Message:
        if doc.pub.fSeqno != seq_no:
            raise AdapterError("PAYENT answer for another package")
        for rd in doc.records:
            code = rd.get("iRetCode")
            if code not in ("", "0"):
                raise Refused(code, rd.get("iRetMsg"))
        serial = doc.pub.extra.get("SerialNo", "") or doc.get("SerialNo")
        # NC took the package; the outcome comes from QPAYENT only.
        return base.Receipt(seq_no, seq_no, seq_no,
                            bank_seq_no=_serial("SerialNo", serial) if serial else "")

    @staticmethod
    def _qpayent(q: base.StatusQuery, doc: c.Doc) -> base.Message:
        if doc.get("QryfSeqno") not in ("", q.ref):
            raise AdapterError("QPAYENT answer about another package")
        mine = [r for r in doc.records if r.get("QryiSeqno") in ("1", "")]
        if len(mine) != 1:
            raise AdapterError(f"QPAYENT answer holds {len(mine)} records for the transfer")
        rd = mine[0]
        result = rd.get("Result").strip()
        serial = doc.get("QrySerialNo")
        bank_seq = _serial("QrySerialNo", serial) if serial else ""
        if result in RESULT_PENDING:
            return base.Receipt(doc.pub.fSeqno, q.seq_no, q.ref, bank_seq_no=bank_seq)
        if result in RESULT_SUCCEEDED:
            return base.Result(doc.pub.fSeqno, q.seq_no, q.ref, succeeded=True,
                               host_seq_no=bank_seq, bank_seq_no=bank_seq,
                               text=rd.get("instrRetMsg")[:256])
        if result in RESULT_FAILED:
            return base.Result(doc.pub.fSeqno, q.seq_no, q.ref, succeeded=False,
                               bank_seq_no=bank_seq,
                               code=(rd.get("instrRetCode") or f"Result{result}")[:32],
                               text=rd.get("instrRetMsg")[:256])
        raise AdapterError(f"QPAYENT Result {c.show(result)}: not one of 0-11")

    @staticmethod
    def _qaccbal(q: base.BalanceQuery, doc: c.Doc) -> base.Balance:
        if len(doc.records) != 1:
            raise AdapterError(f"QACCBAL answer holds {len(doc.records)} records")
        rd = doc.records[0]
        if rd.get("iRetCode") not in ("", "0"):
            raise Refused(rd.get("iRetCode"), rd.get("iRetMsg"))
        if rd.get("AccNo") not in ("", q.account):
            raise AdapterError("QACCBAL answer for another account")
        book = c.parse_fen("Balance", rd.get("Balance"), signed=True)
        usable = rd.get("UsableBalance")
        return base.Balance(doc.pub.fSeqno, q.seq_no, q.account, balance=book,
                            available=c.parse_fen("UsableBalance", usable, signed=True)
                            if usable.strip() else book)

    @staticmethod
    def _qhisd(page: HistoryPage, doc: c.Doc) -> HistoryAnswer:
        if doc.get("AccNo") not in ("", page.account):
            raise AdapterError("QHISD answer for another account")
        entries = []
        for rd in doc.records:
            debit = rd.get("DebitAmount").strip()
            credit = rd.get("CreditAmount").strip()
            out_ = c.parse_fen("DebitAmount", debit) if debit else 0
            in_ = c.parse_fen("CreditAmount", credit) if credit else 0
            if bool(out_) == bool(in_):
                raise AdapterError("QHISD row: exactly one of DebitAmount and CreditAmount")
            balance = rd.get("Balance").strip()
            host = rd.get("OnlySequence") or rd.get("VouhNo")
            bank = rd.get("RecipBkNo").strip()
            moment = rd.get("Time").strip()
            entries.append(base.Entry(
                account=page.account, host_seq_no=_serial("OnlySequence", host),
                amount=in_ - out_, value_date=_date("Date", rd.get("Date")),
                time=_time("Time", moment) if moment else dt.time(),
                counterparty_account=_account("RecipAccNo", rd.get("RecipAccNo"), optional=True),
                counterparty_name=rd.get("RecipName")[:60],
                counterparty_bank_code=bank if len(bank) == 12 and bank.isdigit() else "",
                balance_after=c.parse_fen("Balance", balance, signed=True) if balance else None,
                summary=rd.get("Summary")[:140], remark=rd.get("PostScript")[:140]))
        statement = base.Statement(doc.pub.fSeqno, page.seq_no, page.account, tuple(entries))
        return HistoryAnswer(statement, doc.get("NextTag").strip())
