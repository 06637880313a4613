"""CCB 外联平台 (the WLPT client on the enterprise's network): ``<TX>`` documents, written and
read, and their neutral meaning.  See :mod:`adapters.ccb` and docs/protocols/ccb.md."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import ClassVar

from lxml import etree

from adapters import _xml, base
from adapters._documents import DocumentFramer, decode_evidence
from adapters.base import AdapterError
from adapters.bocb2e import _values as v

__all__ = [
    "CREDIT",
    "DEAL_FAILED",
    "DEAL_SUCCEEDED",
    "DEBIT",
    "DUPLICATE",
    "MAX_DOCUMENT",
    "MAX_PER_PAGE",
    "NOT_FOUND",
    "NO_ROWS",
    "OK",
    "CcbAdapter",
    "Customer",
    "DetailsAnswer",
    "DetailsPage",
    "Tx",
    "details_answer",
    "details_request",
    "read_details",
    "read_details_request",
    "read_tx",
    "request_sn",
    "write_tx",
]

MAX_DOCUMENT = 1024 * 1024
OK = "000000"
NOT_FOUND = "0130Z110BB22"       # 6W1503: no such request
DUPLICATE = "0130Z110B144"       # 记录重复: a REQUEST_SN seen before
DEAL_SUCCEEDED, DEAL_FAILED = "4", "3"
NO_ROWS = "8350ZX100000"         # 6WY101: no details in the period
DEBIT, CREDIT = "0", "1"         # 6WY101 FLAG1: 0 借 (out of the account), 1 贷 (into it)
MAX_PER_PAGE = 200               # 6WY101 TOTAL_RECORD: 1-200 rows a page (10 when empty)
ENCODING = "GB18030"
_END = b"</TX>"
_SN = re.compile(r"[0-9]{1,16}")
_HEAD = ("REQUEST_SN", "CUST_ID", "USER_ID", "PASSWORD", "TX_CODE", "LANGUAGE")
_ANSWER_HEAD = ("REQUEST_SN", "CUST_ID", "TX_CODE", "RETURN_CODE", "RETURN_MSG", "LANGUAGE")
_DATE = re.compile(r"([0-9]{4})[/-]?([0-9]{2})[/-]?([0-9]{2})")


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
    """One ``<TX>``: head leaves, ``TX_INFO`` leaves; ``answer`` when it has RETURN_CODE.

    ``rows`` are the ``TX_INFO/DETAILLIST/DETAILINFO`` records of a 6WY101 answer, each a
    dict of its leaves; None when the document has no DETAILLIST.  ``raw_rows`` are the same
    records' bytes as read (kept for a row that cannot be read)."""

    head: dict[str, str]
    info: dict[str, str]
    rows: tuple[dict[str, str], ...] | None = None
    raw_rows: tuple[bytes, ...] = field(default=(), compare=False, repr=False)

    @property
    def answer(self) -> bool:
        return "RETURN_CODE" in self.head

    def get(self, name: str) -> str:
        return self.info.get(name, "")


@dataclass(frozen=True)
class DetailsPage:
    """Ask for one page of an account's details (6WY101, 活期账户明细查询): the neutral
    vocabulary has no statement request, so this is the ccb codec's own.  ``page`` 1 with an
    empty ``poststr`` is the first page; each next page sends the POSTSTR the previous answer
    gave and the same ``per_page`` (TOTAL_RECORD) as the first."""

    seq_no: str
    account: str
    first: dt.date
    last: dt.date
    page: int = 1
    poststr: str = ""
    per_page: int = 100


@dataclass(frozen=True)
class DetailsAnswer:
    """One 6WY101 page read: the neutral Statement, the page and TOTAL_PAGE, and the POSTSTR
    to send for the next page."""

    statement: base.Statement
    page: int
    total_pages: int
    poststr: str

    @property
    def more(self) -> bool:
        return self.page < self.total_pages

    @property
    def cursor(self) -> tuple[int, str] | None:
        """Where the next page starts (its PAGE and POSTSTR); None after the last page."""
        return (self.page + 1, self.poststr) if self.more else None


def _date(field: str, value: str) -> dt.date:
    """A date as ``YYYY/MM/DD`` (6WY101 answers), ``YYYYMMDD`` or ``YYYY-MM-DD``."""
    return v.parse_date(field, value, _DATE)


def _count(field: str, value: str, default: int) -> int:
    text = value.strip()
    if not text:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise AdapterError(f"{field}: not a count: {v.show(value)}")
    return int(text)


def _yyyymmdd(d: dt.date) -> str:
    return f"{d.year:04d}{d.month:02d}{d.day:02d}"


def details_request(page: DetailsPage) -> dict[str, str]:
    """The TX_INFO of a 6WY101 request, every leaf the public clients send, in their order."""
    if page.page < 1 or not 1 <= page.per_page <= MAX_PER_PAGE:
        raise AdapterError(f"6WY101: PAGE must be >= 1 and TOTAL_RECORD 1-{MAX_PER_PAGE}")
    if page.first > page.last:
        raise AdapterError("6WY101: STARTDATE after ENDDATE")
    if page.page > 1 and not page.poststr:
        raise AdapterError("6WY101: a page after the first needs the previous answer's POSTSTR")
    return {"ACCNO1": v.account("account", page.account),
            "STARTDATE": _yyyymmdd(page.first), "ENDDATE": _yyyymmdd(page.last),
            "BARGAIN_FLAG": "", "CHECK_ACC_NO": "", "CHECK_ACC_NAME": "", "REMARK": "",
            "LOW_AMT": "", "HIGH_AMT": "", "PAGE": str(page.page),
            "POSTSTR": v.text("POSTSTR", page.poststr, 100), "TOTAL_RECORD": str(page.per_page),
            "DET_NO": ""}


def read_details_request(tx: Tx) -> DetailsPage:
    """A 6WY101 request as the page it asks for."""
    return DetailsPage(v.serial("REQUEST_SN", tx.head["REQUEST_SN"]), v.account("ACCNO1", tx.get("ACCNO1")),
                       _date("STARTDATE", tx.get("STARTDATE")), _date("ENDDATE", tx.get("ENDDATE")),
                       _count("PAGE", tx.get("PAGE"), 1), tx.get("POSTSTR"),
                       _count("TOTAL_RECORD", tx.get("TOTAL_RECORD"), 10))


def _row(where: str, account: str, e: base.Entry) -> dict[str, str]:
    """One neutral entry as a DETAILINFO record (what the answer has no place for is refused)."""
    if e.account != account:
        raise AdapterError(f"{where}.account: not the statement's account")
    if e.reversal or e.remark or e.counterparty_bank_code:
        raise AdapterError(f"{where}: 6WY101 has no reversal flag, remark or counterparty bank code")
    if e.time.microsecond or e.time.tzinfo is not None:
        raise AdapterError(f"{where}.time: whole seconds of local time only")
    d = e.value_date
    return {"TRANDATE": f"{d.year:04d}/{d.month:02d}/{d.day:02d}",
            "TRANTIME": f"{e.time.hour:02d}:{e.time.minute:02d}:{e.time.second:02d}",
            "MESSAGE": v.text(f"{where}.summary", e.summary, 140),
            "AMT": v.format_yuan(f"{where}.amount", abs(e.amount)),
            "AMT1": "" if e.balance_after is None else
            v.format_yuan(f"{where}.balance_after", e.balance_after, signed=True),
            "FLAG1": DEBIT if e.amount < 0 else CREDIT,
            "ACCNO2": v.account(f"{where}.counterparty_account", e.counterparty_account, optional=True),
            "ACC_NAME1": v.text(f"{where}.counterparty_name", e.counterparty_name, 60),
            "TRAN_FLOW": v.serial(f"{where}.host_seq_no", e.host_seq_no)}


def details_answer(head: dict[str, str], account: str, entries: tuple[base.Entry, ...], *,
                   page: int = 1, total_pages: int = 1, poststr: str = "") -> Tx:
    """A 6WY101 answer: one page of ``account``'s entries, or ``NO_ROWS`` for none at all."""
    if not entries:
        return Tx({**head, "RETURN_CODE": NO_ROWS, "RETURN_MSG": head.get("RETURN_MSG") or "无记录"},
                  {"ACCNO1": v.account("account", account, optional=True)} if account else {})
    rows = tuple(_row(f"entries[{i}]", account, e) for i, e in enumerate(entries))
    return Tx(head, {"ACCNO1": v.account("account", account), "CURR_COD": "01",
                     "TOTAL_PAGE": str(total_pages), "PAGE": str(page),
                     "POSTSTR": v.text("POSTSTR", poststr, 100)}, rows)


def _entry(where: str, account: str, r: dict[str, str]) -> base.Entry:
    """One DETAILINFO record as a neutral entry: FLAG1 gives the sign of AMT (never guessed)."""
    flag = r.get("FLAG1", "").strip()
    if flag not in (DEBIT, CREDIT):
        raise AdapterError(f"{where}.FLAG1 {v.show(flag)}: meaning unknown")
    amount = v.parse_yuan(f"{where}.AMT", r.get("AMT", ""))
    balance = r.get("AMT1", "").strip()
    moment = r.get("TRANTIME", "").strip()
    return base.Entry(
        account=account, host_seq_no=v.serial(f"{where}.TRAN_FLOW", r.get("TRAN_FLOW", "").strip()),
        amount=-amount if flag == DEBIT else amount,
        value_date=_date(f"{where}.TRANDATE", r.get("TRANDATE", "")),
        time=v.parse_time(f"{where}.TRANTIME", moment) if moment else dt.time(),
        counterparty_account=v.account(f"{where}.ACCNO2", r.get("ACCNO2", "").strip(), optional=True),
        counterparty_name=v.text(f"{where}.ACC_NAME1", r.get("ACC_NAME1", "")[:60], 60),
        counterparty_bank_code="",
        balance_after=v.parse_yuan(f"{where}.AMT1", balance, signed=True) if balance else None,
        summary=v.text(f"{where}.MESSAGE", r.get("MESSAGE", "")[:140], 140))


def read_details(tx: Tx, reply_to: str, page: DetailsPage | None) -> DetailsAnswer:
    """A 6WY101 answer as one page of the account's statement (``page``: the request, when
    known; its account wins and a different ACCNO1 is refused)."""
    ret = tx.head.get("RETURN_CODE", "")
    sn = v.serial("REQUEST_SN", tx.head["REQUEST_SN"])
    named = tx.get("ACCNO1").strip()
    if page is not None and named not in ("", page.account):
        raise AdapterError("6WY101: answer for another account")
    account = page.account if page is not None else v.account("ACCNO1", named, optional=True)
    number = page.page if page is not None else 1
    if ret == NO_ROWS:
        return DetailsAnswer(base.Statement(sn, reply_to, account, ()), number, number, "")
    if ret != OK:
        raise AdapterError(f"ccb: 6WY101 refused {v.show(ret)} {v.show(tx.head.get('RETURN_MSG'), 60)}")
    if tx.get("CURR_COD").strip() not in ("", "01"):
        raise AdapterError(f"CURR_COD {v.show(tx.get('CURR_COD'))}: only 01 (CNY) is read")
    rows = tx.rows or ()
    if rows and not account:
        raise AdapterError("ACCNO1: missing")
    number = _count("PAGE", tx.get("PAGE"), number)
    total = _count("TOTAL_PAGE", tx.get("TOTAL_PAGE"), number)
    if number < 1 or (page is not None and number != page.page):
        raise AdapterError(f"PAGE {v.show(tx.get('PAGE'))}: not the page asked for")
    # One unreadable row never costs the page its other rows: it is kept, as read, as a
    # problem of the statement (stored and alerted on), and nothing of it is booked.
    entries, problems = [], []
    for i, r in enumerate(rows):
        where = f"DETAILINFO[{i}]"
        try:
            entries.append(_entry(where, account, r))
        except AdapterError as e:
            raw = tx.raw_rows[i] if i < len(tx.raw_rows) else b""
            problems.append(base.Problem(where, str(e), raw))
    statement = base.Statement(sn, reply_to, account, tuple(entries), problems=tuple(problems))
    return DetailsAnswer(statement, number, total, tx.get("POSTSTR").strip())


def _leaf(name: str, value: str) -> str:
    return f"<{name}>{_xml.escape_text(value)}</{name}>" if value else f"<{name}></{name}>"


def write_tx(tx: Tx) -> bytes:
    names = _ANSWER_HEAD if tx.answer else _HEAD
    head = "".join(_leaf(n, tx.head.get(n, "")) for n in names)
    info = "".join(_leaf(k, val) for k, val in tx.info.items())
    leaves = [*tx.head.items(), *tx.info.items()]
    if tx.rows is not None:
        rows = "".join("<DETAILINFO>" + "".join(_leaf(k, val) for k, val in row.items()) + "</DETAILINFO>"
                       for row in tx.rows)
        info += f"<DETAILLIST>{rows}</DETAILLIST>"
        leaves += [item for row in tx.rows for item in row.items()]
    tail = "" if tx.answer else "<SIGN_INFO></SIGN_INFO><SIGNCERT></SIGNCERT>"
    text = f'<?xml version="1.0" encoding="{ENCODING}"?>\n<TX>{head}<TX_INFO>{info}</TX_INFO>{tail}</TX>'
    for name, value in leaves:
        if re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", value):
            raise AdapterError(f"{name}: holds a control character")
    data = _xml.encode_text(text, leaves, ENCODING, "CCB TX")
    if len(data) > MAX_DOCUMENT:
        raise AdapterError(f"document of {len(data)} bytes exceeds the frame limit {MAX_DOCUMENT}")
    return data


def _leaves(parent: etree._Element, where: str) -> dict[str, str]:
    """The leaves of ``parent`` by tag, each once (comments skipped)."""
    found: dict[str, str] = {}
    for leaf in parent:
        if isinstance(leaf, etree._Comment):
            continue
        if not isinstance(leaf.tag, str) or len(leaf) or leaf.tag in found:
            raise AdapterError(f"{where} must hold leaves, each once")
        found[leaf.tag] = leaf.text or ""
    return found


def _details_list(node: etree._Element) -> tuple[tuple[dict[str, str], ...], tuple[bytes, ...]]:
    rows, raw = [], []
    for row in node:
        if isinstance(row, etree._Comment):
            continue
        if row.tag != "DETAILINFO":
            raise AdapterError("DETAILLIST must hold DETAILINFO records only")
        rows.append(_leaves(row, "DETAILINFO"))
        raw.append(etree.tostring(row, encoding="unicode", with_tail=False).encode(ENCODING))
    return tuple(rows), tuple(raw)


def read_tx(data: bytes) -> Tx:
    """One ``<TX>`` document; unknown leaves are kept and otherwise ignored."""
    try:
        root = _xml.parse_xml(data, max_bytes=MAX_DOCUMENT, max_depth=5,
                              encodings=("GB18030", "GBK", "GB2312"))
        if root.tag != "TX" or root.attrib:
            raise AdapterError("root element must be TX")
        head: dict[str, str] = {}
        info: dict[str, str] | None = None
        rows: tuple[dict[str, str], ...] | None = None
        raw_rows: tuple[bytes, ...] = ()
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
                    if leaf.tag == "DETAILLIST":
                        if rows is not None:
                            raise AdapterError("DETAILLIST twice")
                        rows, raw_rows = _details_list(leaf)
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
        return Tx(head, info or {}, rows, raw_rows)
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

    def __init__(self, customer: Customer | None = None, *, per_page: int = 100) -> None:
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page: 1-{MAX_PER_PAGE} rows (TOTAL_RECORD)")
        self._customer = customer or Customer("", "")
        self.per_page = per_page   # a 6WY101 page's TOTAL_RECORD, the same on every page

    def framer(self) -> DocumentFramer:
        return DocumentFramer(_END, self.max_frame)

    def for_gateway(self, config: object, bank: object) -> CcbAdapter:
        """The adapter of configured bank ``bank``: customer id, operator and password from
        ``banks.X.front_end`` (WLPT wants the password in every request, so it is read from
        ``password_file`` here, once; :class:`Customer` never shows it)."""
        front = getattr(bank, "front_end", None)
        if front is None:
            return self
        return CcbAdapter(Customer(front.custid, front.cusopr, front.password()), per_page=self.per_page)

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
        if isinstance(m, DetailsPage):
            return write_tx(Tx(self._head("6WY101", request_sn(m.seq_no)), details_request(m)))
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
        if isinstance(m, base.Statement):   # one page, the last: the Statement has no paging
            if m.opening_balance is not None or m.closing_balance is not None:
                raise AdapterError("opening/closing balance: 6WY101 carries none")
            return write_tx(details_answer(self._answer_head("6WY101", request_sn(m.reply_to)),
                                           m.account, m.entries))
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
        """One document, or one exchange's evidence (request then answer)."""
        return self.decode_all(body.strip(b" \t\r\n"))

    def decode_answer(self, frame: bytes, request: base.Message | DetailsPage) -> base.Message:
        """The answer in ``frame`` to ``request`` (one connection, one exchange); for a
        :class:`DetailsPage`, the :class:`DetailsAnswer` (the page's Statement and paging)."""
        try:
            tx = read_tx(frame.strip())
            if not tx.answer:
                raise AdapterError("ccb: a request where an answer was expected")
            if isinstance(request, DetailsPage):
                if tx.head["TX_CODE"] != "6WY101":
                    raise AdapterError("ccb: another answer to a 6WY101 request")
                return read_details(tx, request.seq_no, request)  # type: ignore[return-value]
            return self._answer(tx, request)
        except (ValueError, LookupError, UnicodeError, RecursionError) as e:
            raise AdapterError(f"ccb: {type(e).__name__}") from None

    def decode_all(self, frame: bytes) -> list[base.Message]:
        """One document, or one exchange's evidence (request then answer); a 6WY101 exchange
        is read as the page's Statement."""
        parts = _evidence(frame)
        if parts is not None:
            request = read_tx(parts[0])
            if not request.answer and request.head["TX_CODE"] == "6WY101":
                page = self.decode_answer(parts[1], read_details_request(request))
                return [page.statement]  # type: ignore[attr-defined]
        return decode_evidence(self, frame, _END)

    def statement_page(self, seq_no: str, account: str, day: dt.date,
                       cursor: tuple[int, str] | None) -> DetailsPage:
        """A link's 6WY101 request for ``account`` on ``day``: the first page for ``cursor``
        None, else the page and POSTSTR a previous answer's ``cursor`` gave."""
        number, poststr = cursor or (1, "")
        return DetailsPage(request_sn(seq_no), v.account("account", account), day, day, number, poststr,
                           self.per_page)

    def _request(self, tx: Tx) -> base.Message:
        sn = v.serial("REQUEST_SN", tx.head["REQUEST_SN"])
        code = tx.head["TX_CODE"]
        if code == "6W1503":
            return base.StatusQuery(sn, v.serial("REQUEST_SN1", tx.get("REQUEST_SN1")), dt.date.min)
        if code == "6W0100":
            return base.BalanceQuery(sn, v.account("ACC_NO", tx.get("ACC_NO")))
        if code == "6WY101":
            raise AdapterError("6WY101: a details request has no neutral message "
                               "(its exchange's evidence reads as the page's Statement)")
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
        if code == "6WY101":
            if request is not None:
                raise AdapterError("ccb: a details answer to another request")
            return read_details(tx, sn, None).statement
        raise AdapterError(f"{v.show(code)}: not an answer the gateway reads")


def _evidence(frame: bytes) -> tuple[bytes, bytes] | None:
    """The request and answer of one exchange's evidence, or None for anything else."""
    framer = DocumentFramer(_END, MAX_DOCUMENT * 2)
    try:
        parts = framer.feed(frame)
    except AdapterError:
        return None
    return (parts[0], parts[1]) if len(parts) == 2 and framer.pending() == 0 else None

