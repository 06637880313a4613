"""CCB 外联平台 (the WLPT client on the enterprise's network): ``<TX>`` documents, written and
read, and their neutral meaning.  See :mod:`adapters.ccb` and docs/protocols/ccb.md."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import ClassVar

from lxml import etree

from adapters import _xml, base
from adapters._documents import DocumentFramer, decode_evidence
from adapters.base import AdapterError
from adapters.bocb2e import _values as v

__all__ = ["CcbAdapter", "Customer", "Tx", "read_tx", "write_tx", "request_sn", "MAX_DOCUMENT",
           "OK", "NOT_FOUND", "DUPLICATE", "DEAL_SUCCEEDED", "DEAL_FAILED"]

MAX_DOCUMENT = 1024 * 1024
OK = "000000"
NOT_FOUND = "0130Z110BB22"       # 6W1503: no such request
DUPLICATE = "0130Z110B144"       # 记录重复: a REQUEST_SN seen before
DEAL_SUCCEEDED, DEAL_FAILED = "4", "3"
ENCODING = "GB18030"
_END = b"</TX>"
_SN = re.compile(r"[0-9]{1,16}")
_HEAD = ("REQUEST_SN", "CUST_ID", "USER_ID", "PASSWORD", "TX_CODE", "LANGUAGE")
_ANSWER_HEAD = ("REQUEST_SN", "CUST_ID", "TX_CODE", "RETURN_CODE", "RETURN_MSG", "LANGUAGE")


def request_sn(reference: str) -> str:
    """The REQUEST_SN for a gateway reference: digits only, at most 16 (the WLPT limit).

    A reference that already fits is itself; the gateway's 20-digit bank reference (5 centre
    digits, YYMMDD, a 9-digit row id) loses its 5 centre digits, which leaves the date and
    the row id: unique for the database's life, identical on every resend."""
    if _SN.fullmatch(reference):
        return reference
    if len(reference) == 20 and reference.isascii() and reference.isdigit():
        return reference[5:]
    raise AdapterError(f"REQUEST_SN: {v.show(reference)} is neither 1-16 digits nor a "
                       "20-digit bank reference")


@dataclass(frozen=True)
class Customer:
    """The gateway at the WLPT client: customer id, operator and (from a file) password."""

    cust_id: str
    user_id: str
    password: str = ""

    def __repr__(self) -> str:
        return f"Customer(cust_id={self.cust_id!r}, user_id={self.user_id!r})"


@dataclass(frozen=True)
class Tx:
    """One ``<TX>``: head leaves, ``TX_INFO`` leaves; ``answer`` when it has RETURN_CODE."""

    head: dict[str, str]
    info: dict[str, str]

    @property
    def answer(self) -> bool:
        return "RETURN_CODE" in self.head

    def get(self, name: str) -> str:
        return self.info.get(name, "")


def _leaf(name: str, value: str) -> str:
    return f"<{name}>{_xml.escape_text(value)}</{name}>" if value else f"<{name}></{name}>"


def write_tx(tx: Tx) -> bytes:
    names = _ANSWER_HEAD if tx.answer else _HEAD
    head = "".join(_leaf(n, tx.head.get(n, "")) for n in names)
    info = "".join(_leaf(k, val) for k, val in tx.info.items())
    tail = "" if tx.answer else "<SIGN_INFO></SIGN_INFO><SIGNCERT></SIGNCERT>"
    text = f'<?xml version="1.0" encoding="{ENCODING}"?>\n<TX>{head}<TX_INFO>{info}</TX_INFO>{tail}</TX>'
    for name, value in [*tx.head.items(), *tx.info.items()]:
        if re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", value):
            raise AdapterError(f"{name}: holds a control character")
    data = _xml.encode_text(text, [*tx.head.items(), *tx.info.items()], ENCODING, "CCB TX")
    if len(data) > MAX_DOCUMENT:
        raise AdapterError(f"document of {len(data)} bytes exceeds the frame limit {MAX_DOCUMENT}")
    return data


def read_tx(data: bytes) -> Tx:
    """One ``<TX>`` document; unknown leaves are kept and otherwise ignored."""
    try:
        root = _xml.parse_xml(data, max_bytes=MAX_DOCUMENT, max_depth=4,
                              encodings=("GB18030", "GBK", "GB2312"))
        if root.tag != "TX" or root.attrib:
            raise AdapterError("root element must be TX")
        head: dict[str, str] = {}
        info: dict[str, str] | None = None
        for child in root:
            if isinstance(child, etree._Comment):
                continue
            if not isinstance(child.tag, str) or child.tag.startswith("{"):
                raise AdapterError("unexpected XML node")
            if child.tag == "TX_INFO":
                if info is not None:
                    raise AdapterError("TX_INFO twice")
                info = {}
                for leaf in child:
                    if isinstance(leaf, etree._Comment):
                        continue
                    if not isinstance(leaf.tag, str) or len(leaf) or leaf.tag in info:
                        raise AdapterError("TX_INFO must hold leaves, each once")
                    info[leaf.tag] = leaf.text or ""
            elif len(child):
                raise AdapterError(f"{v.show(child.tag)}: nested where a leaf is expected")
            elif child.tag in head:
                raise AdapterError(f"{v.show(child.tag)}: twice")
            else:
                head[child.tag] = child.text or ""
        for name in ("REQUEST_SN", "TX_CODE"):
            if not head.get(name):
                raise AdapterError(f"{name}: missing")
        return Tx(head, info or {})
    except (ValueError, LookupError, UnicodeError, RecursionError, etree.LxmlError) as e:
        raise AdapterError(f"CCB TX: {type(e).__name__}") from None


class CcbAdapter:
    """CCB WLPT ``<TX>`` documents as a sans-I/O codec (see :mod:`adapters.ccb`)."""

    name: ClassVar[str] = "ccb"
    max_frame: ClassVar[int] = MAX_DOCUMENT
    # What a request/answer link must know: whether it signs on before requests, and that
    # the protocol has no line probe (an idle link is not a dead one).
    needs_sign_on: ClassVar[bool] = False
    has_heartbeat: ClassVar[bool] = False

    def __init__(self, customer: Customer | None = None) -> None:
        self._customer = customer or Customer("", "")

    def framer(self) -> DocumentFramer:
        return DocumentFramer(_END, self.max_frame)

    def for_gateway(self, config: object, bank: object) -> "CcbAdapter":
        """The adapter of configured bank ``bank``: customer id, operator and password from
        ``banks.X.front_end`` (WLPT wants the password in every request, so it is read from
        ``password_file`` here, once; :class:`Customer` never shows it)."""
        front = getattr(bank, "front_end", None)
        if front is None:
            return self
        return CcbAdapter(Customer(front.custid, front.cusopr, front.password()))

    def _head(self, code: str, sn: str) -> dict[str, str]:
        c = self._customer
        return {"REQUEST_SN": sn, "CUST_ID": c.cust_id, "USER_ID": c.user_id,
                "PASSWORD": c.password, "TX_CODE": code, "LANGUAGE": "CN"}

    @staticmethod
    def _answer_head(code: str, sn: str, ret: str = OK, msg: str = "") -> dict[str, str]:
        return {"REQUEST_SN": sn, "CUST_ID": "", "TX_CODE": code, "RETURN_CODE": ret,
                "RETURN_MSG": msg, "LANGUAGE": "CN"}

    # -- encode ------------------------------------------------------------------------------

    def encode(self, message: base.Message, *, sender: str, receiver: str = "") -> bytes:
        m = message
        if isinstance(m, base.Instruction):
            code = m.creditor_bank_code
            if not m.same_bank and not (len(code) == 12 and code.isdigit()):
                raise AdapterError("creditor_bank_code: a 12-digit CNAPS code is needed across banks")
            info = {"PAY_ACCNO": v.account("debit_account", m.debit_account),
                    "RECV_ACCNO": v.account("creditor_account", m.creditor_account),
                    "RECV_ACC_NAME": v.text("creditor_name", m.creditor_name, 60, required=True),
                    "CHK_RECVNAME": "1"}
            if not m.same_bank:
                info["RECV_UBANKNO"] = code
            info |= {"AMOUNT": v.format_yuan("amount", m.amount, positive=True), "CUR_TYPE": "01",
                     "CST_PAY_NO": request_sn(m.seq_no), "USEOF": v.text("memo", m.memo, 140),
                     "REM1": "", "REM2": ""}
            tx_code = "6W8010" if m.same_bank else "6W8060"
            return write_tx(Tx(self._head(tx_code, request_sn(m.seq_no)), info))
        if isinstance(m, base.StatusQuery):
            return write_tx(Tx(self._head("6W1503", request_sn(m.seq_no)),
                               {"REQUEST_SN1": request_sn(m.ref)}))
        if isinstance(m, base.BalanceQuery):
            return write_tx(Tx(self._head("6W0100", request_sn(m.seq_no)),
                               {"ACC_NO": v.account("account", m.account)}))
        if isinstance(m, base.Receipt):
            if m.reply_to == m.ref:
                return write_tx(Tx(self._answer_head("6W8010", request_sn(m.ref)),
                                   {"CREDIT_NO": v.serial("bank_seq_no", m.bank_seq_no, optional=True),
                                    "CST_PAY_NO": request_sn(m.ref)}))
            return write_tx(Tx(self._answer_head("6W1503", request_sn(m.reply_to)),
                               {"REQUEST_SN1": request_sn(m.ref), "DEAL_RESULT": "2",
                                "CREDIT_NO": v.serial("bank_seq_no", m.bank_seq_no, optional=True)}))
        if isinstance(m, base.Result):
            if m.host_seq_no not in ("", m.bank_seq_no) or (m.succeeded and m.code):
                raise AdapterError("Result: CCB reports DEAL_RESULT and one serial (CREDIT_NO)")
            if m.code not in ("", "DEAL_RESULT3" if not m.succeeded else ""):
                raise AdapterError("code: 6W1503 carries DEAL_RESULT, no reason code")
            return write_tx(Tx(self._answer_head("6W1503", request_sn(m.reply_to), OK,
                                                 v.text("text", m.text, 256)), {
                "REQUEST_SN1": request_sn(m.ref),
                "DEAL_RESULT": DEAL_SUCCEEDED if m.succeeded else DEAL_FAILED,
                "CREDIT_NO": v.serial("bank_seq_no", m.bank_seq_no, optional=True)}))
        if isinstance(m, base.NotFound):
            return write_tx(Tx(self._answer_head("6W1503", request_sn(m.reply_to), NOT_FOUND,
                                                 "记录不存在"), {"REQUEST_SN1": request_sn(m.ref)}))
        if isinstance(m, base.Balance):
            if not m.reply_to or m.overdraft or m.account_name or m.status or m.as_of is not None:
                raise AdapterError("Balance: 6W0100 answers with BALANCE and BALANCE1 only")
            return write_tx(Tx(self._answer_head("6W0100", request_sn(m.reply_to)), {
                "ACC_NO": v.account("account", m.account),
                "BALANCE": v.format_yuan("balance", m.balance, signed=True),
                "BALANCE1": v.format_yuan("available", m.available, signed=True)}))
        raise AdapterError(f"ccb cannot carry a {type(m).__name__}")

    # -- decode ------------------------------------------------------------------------------

    def decode(self, frame: bytes) -> base.Message:
        try:
            if not isinstance(frame, bytes) or not frame.endswith(_END):
                raise AdapterError("frame: not one TX document")
            tx = read_tx(frame)
            return self._answer(tx, None) if tx.answer else self._request(tx)
        except (ValueError, LookupError, UnicodeError, RecursionError) as e:
            raise AdapterError(f"ccb: {type(e).__name__}") from None

    def decode_document(self, body: bytes) -> list[base.Message]:
        return [self.decode(body.strip(b" \t\r\n"))]

    def decode_answer(self, frame: bytes, request: base.Message) -> base.Message:
        """The answer in ``frame`` to ``request`` (one connection, one exchange)."""
        try:
            tx = read_tx(frame.strip())
            if not tx.answer:
                raise AdapterError("ccb: a request where an answer was expected")
            return self._answer(tx, request)
        except (ValueError, LookupError, UnicodeError, RecursionError) as e:
            raise AdapterError(f"ccb: {type(e).__name__}") from None

    def decode_all(self, frame: bytes) -> list[base.Message]:
        return decode_evidence(self, frame, _END)

    def _request(self, tx: Tx) -> base.Message:
        sn = v.serial("REQUEST_SN", tx.head["REQUEST_SN"])
        code = tx.head["TX_CODE"]
        if code == "6W1503":
            return base.StatusQuery(sn, v.serial("REQUEST_SN1", tx.get("REQUEST_SN1")), dt.date.min)
        if code == "6W0100":
            return base.BalanceQuery(sn, v.account("ACC_NO", tx.get("ACC_NO")))
        if code in ("6W8010", "6W8060"):
            bank = tx.get("RECV_UBANKNO")
            if (code == "6W8060") != bool(bank) or (bank and not (len(bank) == 12 and bank.isdigit())):
                raise AdapterError("RECV_UBANKNO: a 12-digit CNAPS code exactly for 6W8060")
            if tx.get("CUR_TYPE") != "01":
                raise AdapterError("CUR_TYPE: only 01 (CNY) is read")
            return base.Instruction(
                seq_no=sn, send_date=dt.date.min, centre_node="", unit_no="",
                debit_account=v.account("PAY_ACCNO", tx.get("PAY_ACCNO")), debit_name="-",
                creditor_account=v.account("RECV_ACCNO", tx.get("RECV_ACCNO")),
                creditor_name=v.text("RECV_ACC_NAME", tx.get("RECV_ACC_NAME"), 60, required=True),
                creditor_bank_code=bank, creditor_personal=False, same_bank=code == "6W8010",
                amount=v.parse_yuan("AMOUNT", tx.get("AMOUNT"), positive=True), purpose="other",
                memo=v.text("USEOF", tx.get("USEOF"), 140))
        raise AdapterError(f"{v.show(code)}: not a request the gateway sends")

    def _answer(self, tx: Tx, request: base.Message | None) -> base.Message:
        code, ret = tx.head["TX_CODE"], tx.head.get("RETURN_CODE", "")
        sn = v.serial("REQUEST_SN", tx.head["REQUEST_SN"])
        reply_to = request.seq_no if request is not None else sn
        if code in ("6W8010", "6W8060"):
            ref = request.seq_no if isinstance(request, base.Instruction) else sn
            if request is not None and not isinstance(request, base.Instruction):
                raise AdapterError("ccb: a transfer answer to another request")
            if ret in (OK, DUPLICATE):   # taken (now or before): the outcome comes from 6W1503
                credit = tx.get("CREDIT_NO")
                return base.Receipt(ref, ref, ref,
                                    bank_seq_no=v.serial("CREDIT_NO", credit) if credit else "")
            raise AdapterError(f"ccb: 6W8010 refused {v.show(ret)} {v.show(tx.head.get('RETURN_MSG'), 60)}")
        if code == "6W1503":
            if request is not None and not isinstance(request, base.StatusQuery):
                raise AdapterError("ccb: a status answer to another request")
            ref = request.ref if isinstance(request, base.StatusQuery) else \
                v.serial("REQUEST_SN1", tx.get("REQUEST_SN1"))
            if ret == NOT_FOUND:
                return base.NotFound(sn, reply_to, ref)
            if ret != OK:
                raise AdapterError(f"ccb: 6W1503 refused {v.show(ret)}")
            deal = tx.get("DEAL_RESULT").strip()
            credit = tx.get("CREDIT_NO")
            bank = v.serial("CREDIT_NO", credit) if credit else ""
            text = tx.head.get("RETURN_MSG", "")[:256]
            if deal == DEAL_SUCCEEDED:
                return base.Result(sn, reply_to, ref, succeeded=True, host_seq_no=bank,
                                   bank_seq_no=bank, text=text)
            if deal == DEAL_FAILED:   # the sources give no reason field: the code says which state
                return base.Result(sn, reply_to, ref, succeeded=False, bank_seq_no=bank,
                                   code="DEAL_RESULT3", text=text)
            if not deal or not deal.isascii() or not deal.isdigit():
                raise AdapterError(f"ccb: DEAL_RESULT {v.show(deal)} unreadable")
            return base.Receipt(sn, reply_to, ref, bank_seq_no=bank)
        if code == "6W0100":
            if ret != OK:
                raise AdapterError(f"ccb: 6W0100 refused {v.show(ret)}")
            account = request.account if isinstance(request, base.BalanceQuery) else \
                v.account("ACC_NO", tx.get("ACC_NO"))
            book = v.parse_yuan("BALANCE", tx.get("BALANCE"), signed=True)
            usable = tx.get("BALANCE1")
            return base.Balance(sn, reply_to, account, balance=book,
                                available=v.parse_yuan("BALANCE1", usable, signed=True)
                                if usable.strip() else book)
        raise AdapterError(f"{v.show(code)}: not an answer the gateway reads")

