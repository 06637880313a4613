"""The bocb2e documents behind the neutral adapter contract (adapters/base.py).

The contract's face of the protocol: what the conformance suite, ``hpf-gateway adapters
decode``, the ledger's evidence checks and a simulator read and write.  The gateway's link
to a front-end uses :class:`~adapters.bocb2e.session.Session`, which adds what the neutral
messages do not hold (the terminal, the operator's password, the token) and the rules for
answers (b2e0009 never final, B107 re-sign-on); this class writes the same documents with
the head it was given (empty by default) and reads every document of the protocol.

What the protocol has no place for is not carried (docs/protocols/bocb2e.md, "Neutral
messages"): an Instruction's centre node, unit, purpose, reference, signature, personal and
same-bank flags; a StatusQuery's date; a SignOn's node; an answer's own serial (it is the
request's ``trnid``); a Result's separate host serial (``obssid`` is both); a Balance's
status and time of day; an Entry's reversal flag; a Statement's balances.  Heartbeats, Acks,
pushed messages and NotFound do not exist in bocb2e and are refused at encode.
"""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from lxml import etree

from adapters import base
from adapters._documents import DocumentFramer
from adapters.base import AdapterError
from adapters.bocb2e import _values as v
from adapters.bocb2e import codec as c
from adapters.bocb2e.session import Session, StatementAnswer, StatementPage

__all__ = ["BocB2eAdapter", "NOT_CARRIED", "china_now"]

NOT_CARRIED = (base.Heartbeat, base.HeartbeatAnswer, base.Ack, base.NotFound, base.Movement)
"""Neutral kinds with no place in bocb2e."""
_REQUESTS = (base.SignOn, base.Instruction, base.StatusQuery, base.BalanceQuery)
_CHINA = dt.timezone(dt.timedelta(hours=8))


def china_now() -> dt.datetime:
    """The bank's local time: China Standard Time (UTC+8, no daylight saving), naive."""
    return dt.datetime.now(_CHINA).replace(tzinfo=None)


def _stateless(terminal: c.Terminal) -> Session:
    """A session that reads answers without keeping anything (its token is a placeholder)."""
    session = Session(terminal, "", lambda: dt.datetime(2000, 1, 1))
    session.token = "-"
    return session


def _bind(session: Session, frame: bytes, request: base.Message) -> base.Message:
    if not isinstance(frame, bytes) or not frame.strip().endswith(_END):
        raise AdapterError("frame: not one bocb2e document")
    if isinstance(request, base.SignOn):
        answer = session.signed_on(frame.strip())
        return base.SignOnAnswer(answer.seq_no, request.seq_no, answer.node, answer.ok,
                                 answer.code, answer.text)
    if isinstance(request, StatementPage):
        page = session.read(request, frame.strip())
        assert isinstance(page, StatementAnswer)
        return page  # type: ignore[return-value]
    if not isinstance(request, (base.Instruction, base.StatusQuery, base.BalanceQuery)):
        raise AdapterError(f"bocb2e: no answer is read for a {type(request).__name__}")
    [message] = session.read(request, frame.strip())
    return message

_END = b"</bocb2e>"


class BocB2eAdapter:
    """Bank of China bocb2e (银企直连) documents as a sans-I/O codec (see :mod:`adapters.bocb2e`)."""

    name: ClassVar[str] = "bocb2e"
    max_frame: ClassVar[int] = c.MAX_DOCUMENT
    # What a request/answer link must know: whether it signs on before requests, and that
    # the protocol has no line probe (an idle link is not a dead one).
    needs_sign_on: ClassVar[bool] = True
    has_heartbeat: ClassVar[bool] = False

    def __init__(self, terminal: c.Terminal | None = None, session: Session | None = None) -> None:
        # With a session (one per configured bank) requests carry its terminal and token and
        # answers go through its rules; without one this is the stateless face.
        self._session = session
        self._terminal = session.terminal if session is not None else (terminal or c.Terminal("", "", ""))

    def framer(self) -> DocumentFramer:
        return DocumentFramer(_END, self.max_frame)

    def for_gateway(self, config: object, bank: object) -> "BocB2eAdapter":
        """The adapter of configured bank ``bank``: a session with its terminal from
        ``banks.X.front_end``, the password read from ``password_file`` at each sign-on only,
        and the bank's local time (China Standard Time) in ``custdt``."""
        front = getattr(bank, "front_end", None)
        if front is None:
            return self
        terminal = c.Terminal(front.termid, front.custid, front.cusopr)
        return BocB2eAdapter(session=Session(terminal, front.password, china_now))

    def check(self, message: base.Message, *, sender: str, receiver: str = "") -> None:
        """Whether ``message`` can be written, asked of the stateless face (no token needed).

        A transfer (an Instruction) is checked without writing it: its values are checked as
        :meth:`encode` checks them, in the same order, then one scan of them and the head says
        whether the document would be written (its size limit aside); only when not is it
        written, to refuse it as encode does.  Every other kind is encoded and dropped."""
        if isinstance(message, base.Instruction):
            values, _ = self._transfer(message)
            if c.carried(self._head(message.seq_no, "b2e0009"), values):
                return
        BocB2eAdapter(self._terminal).encode(message, sender=sender, receiver=receiver)

    def statement_page(self, seq_no: str, account: str, day: dt.date, cursor: int | None) -> StatementPage:
        """A link's b2e0035 request for ``account`` on ``day`` from record ``cursor`` (1: the first)."""
        return StatementPage(v.serial("trnid", seq_no), v.account("account", account), day, day,
                             begnum=cursor or 1)

    # -- encode ------------------------------------------------------------------------------

    def _transfer(self, m: base.Instruction) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
        """The checked values of instruction ``m``'s b2e0009 record (codec.transfer_values)."""
        if not m.same_bank and not (len(m.creditor_bank_code) == 12
                                    and m.creditor_bank_code.isdigit()):
            raise AdapterError("creditor_bank_code: a 12-digit CNAPS code is needed across banks")
        return c.transfer_values(
            insid=m.seq_no, payer_account=m.debit_account,
            payer_name=v.text("debit_name", m.debit_name, 60, required=True),
            payee_account=m.creditor_account, payee_name=m.creditor_name,
            payee_bank="" if m.same_bank else m.creditor_bank_code, payee_bank_name="",
            amount=m.amount,
            memo=m.memo, day=m.send_date)

    def _head(self, trnid: str, trncod: str) -> c.Head:
        t = self._terminal
        return c.Head(t.termid, v.serial("trnid", trnid), t.custid, t.cusopr, trncod)

    def encode(self, message: base.Message, *, sender: str, receiver: str = "") -> bytes:
        m = message
        if self._session is not None and isinstance(m, (*_REQUESTS, StatementPage)):
            if isinstance(m, base.SignOn):
                return self._session.sign_on(v.serial("trnid", m.seq_no))
            return self._session.request(m)
        if isinstance(m, base.SignOn):
            return c.write_request(self._head(m.seq_no, "b2e0001"),
                                   c.sign_on_body(dt.datetime(2000, 1, 1), ""), [])
        if isinstance(m, base.Instruction):
            values, texts = self._transfer(m)
            return c.write_request(self._head(m.seq_no, "b2e0009"), c.transfer_xml(values), texts)
        if isinstance(m, base.StatusQuery):
            return c.write_request(self._head(m.seq_no, "b2e0007"), c.status_body(m.ref), [])
        if isinstance(m, base.BalanceQuery):
            return c.write_request(self._head(m.seq_no, "b2e0005"), c.balance_body(m.account), [])
        if isinstance(m, base.SignOnAnswer):
            return self._answer(m.reply_to, "b2e0001", c.Record(*self._outcome(m.ok, m.code, m.text)))
        if isinstance(m, base.Receipt):
            trncod = "b2e0009" if m.reply_to == m.ref else "b2e0007"
            code = "B059" if trncod == "b2e0009" else "B054"
            return self._answer(m.reply_to, trncod, c.Record(code, "", {
                "insid": v.serial("ref", m.ref), "obssid": v.serial("bank_seq_no", m.bank_seq_no,
                                                                    optional=True)}))
        if isinstance(m, base.Result):
            if m.succeeded and m.code:
                raise AdapterError("code: a successful bocb2e record carries B001, no code of its own")
            if m.host_seq_no not in ("", m.bank_seq_no):
                raise AdapterError("host_seq_no: bocb2e has one bank serial (obssid) per transfer")
            code, text = self._outcome(m.succeeded, m.code, m.text)
            return self._answer(m.reply_to, "b2e0007", c.Record(code, text, {
                "insid": v.serial("ref", m.ref),
                "obssid": v.serial("bank_seq_no", m.bank_seq_no, optional=True)}))
        if isinstance(m, base.Balance):
            return self._balance(m)
        if isinstance(m, base.Statement):
            return self._statement(m)
        raise AdapterError(f"bocb2e cannot carry a {type(m).__name__}")

    @staticmethod
    def _outcome(ok: bool, code: str, text: str) -> tuple[str, str]:
        v.text("text", text, 256)
        if ok:
            if code:
                raise AdapterError("code: an accepting answer carries B001, no code of its own")
            return c.OK, text
        v.text("code", code, 32)
        if code in (c.OK, c.MORE, "") or code in c.PROCESSING or code in c.NOT_SIGNED_ON:
            raise AdapterError(f"code: {v.show(code)} cannot be a refusal's own code in bocb2e")
        return code, text

    def _answer(self, trnid: str, trncod: str, record: c.Record, *, code: str = c.OK,
                more: tuple[c.Record, ...] = (), counts: tuple[int, int] | None = None) -> bytes:
        records = (record, *more) if record.code or record.leaves else more
        body = c.answer_body(trncod, code, "", records, *(counts or (None, None)))
        texts = [("code", r.code) for r in records] + [("text", r.text) for r in records]
        texts += [(k, val) for r in records for k, val in r.leaves.items()]
        return c.write_answer(self._head(trnid, trncod), body, texts)

    def _balance(self, m: base.Balance) -> bytes:
        if not m.reply_to:
            raise AdapterError("reply_to: bocb2e pushes no balance; a Balance answers b2e0005")
        if m.status:
            raise AdapterError("status: bocb2e has no account status in b2e0005")
        if m.as_of is not None and m.as_of.time() != dt.time():
            raise AdapterError("as_of: b2e0005 carries a date (baldat), no time of day")
        leaves = {"account/actacn": v.account("account", m.account),
                  "account/curcde": "001",
                  "account/actname": v.text("account_name", m.account_name, 60),
                  "balance/bokbal": v.format_yuan("balance", m.balance, signed=True),
                  "balance/avabal": v.format_yuan("available", m.available, signed=True),
                  "balance/ovramt": v.format_yuan("overdraft", m.overdraft)}
        if m.as_of is not None:
            leaves["baldat"] = v.format_date(m.as_of.date())
        return self._answer(m.reply_to, "b2e0005", c.Record(c.OK, "", leaves))

    def _statement(self, m: base.Statement) -> bytes:
        if m.opening_balance is not None or m.closing_balance is not None:
            raise AdapterError("opening/closing balance: b2e0035 carries none")
        rows = []
        for i, e in enumerate(m.entries):
            where = f"entries[{i}]"
            if e.account != m.account:
                raise AdapterError(f"{where}.account: not the statement's account")
            if e.reversal:
                raise AdapterError(f"{where}.reversal: b2e0035 has no reversal flag")
            ours, theirs = ("fractn", "toactn") if e.amount < 0 else ("toactn", "fractn")
            name_leaf = "toname" if theirs == "toactn" else "acntname"
            bank_leaf = "toibkn" if theirs == "toactn" else "ibknum"
            if e.counterparty_bank_code and not (len(e.counterparty_bank_code) == 12
                                                 and e.counterparty_bank_code.isdigit()):
                raise AdapterError(f"{where}.counterparty_bank_code: must be 12 digits")
            leaves = {
                f"{ours}/actacn": v.account(f"{where}.account", e.account),
                f"{theirs}/actacn": v.account(f"{where}.counterparty_account",
                                               e.counterparty_account, optional=True),
                f"{theirs}/{name_leaf}": v.text(f"{where}.counterparty_name", e.counterparty_name, 60),
                f"{theirs}/{bank_leaf}": e.counterparty_bank_code,
                "transid": v.serial(f"{where}.host_seq_no", e.host_seq_no),
                "txndate": v.format_date(e.value_date),
                "txntime": v.format_time(e.time),
                "txnamt": v.format_yuan(f"{where}.amount", e.amount, signed=True),
                "acctbal": "" if e.balance_after is None else
                v.format_yuan(f"{where}.balance_after", e.balance_after, signed=True),
                "useinfo": v.text(f"{where}.summary", e.summary, 140),
                "furinfo": v.text(f"{where}.remark", e.remark, 140),
            }
            if e.time.microsecond or e.time.tzinfo is not None:
                raise AdapterError(f"{where}.time: whole seconds of local time only")
            rows.append(c.Record(c.OK, "", leaves))
        if not rows and m.account:
            raise AdapterError("account: an empty b2e0035 page names no account")
        return self._answer(m.reply_to, "b2e0035", c.Record("", ""), more=tuple(rows),
                            counts=(len(rows), len(rows)))

    # -- answers bound to their request (one HTTP exchange) ---------------------------------

    def decode_answer(self, frame: bytes, request: base.Message) -> base.Message:
        """The answer in ``frame`` to ``request``, the request its HTTP exchange carried.

        With a session, a sign-on answer keeps its token and B107/1033 drop it
        (:class:`~adapters.bocb2e.session.NotSignedOn`); without one nothing is kept.  A
        b2e0009 answer is a Receipt or :class:`~adapters.bocb2e.session.Refused`, never final.
        """
        session = self._session or _stateless(self._terminal)
        return _bind(session, frame, request)

    def decode_all(self, frame: bytes) -> list[base.Message]:
        """Every message in ``frame``: one document, or a request followed by its answer (the
        evidence of one exchange), read as the answer bound to that request."""
        framer = DocumentFramer(_END, self.max_frame * 2)
        try:
            parts = framer.feed(frame)
        except AdapterError:
            parts = []
        if len(parts) == 2 and framer.pending() == 0 and b"".join(parts).strip() == frame.strip():
            page = self._statement_request(parts[0])
            if page is not None:  # a link's statement poll: the page's records
                answer = _bind(_stateless(self._terminal), parts[1], page)
                return [answer.statement]  # type: ignore[attr-defined]
            request = self.decode(parts[0])
            return [_bind(_stateless(self._terminal), parts[1], request)]
        return [self.decode(frame)]

    def _statement_request(self, frame: bytes) -> StatementPage | None:
        """The b2e0035 request in ``frame`` as the page it asks for; None for any other document."""
        try:
            doc = c.read_document(frame.strip())
            if not isinstance(doc, c.Request) or doc.trncod != "b2e0035" or len(doc.records) != 1:
                return None
            f = doc.records[0]
            return StatementPage(v.serial("trnid", doc.head.trnid), v.account("actacn", f.get("actacn", "")),
                                 v.parse_date("datescope/from", f.get("datescope/from", "")),
                                 v.parse_date("datescope/to", f.get("datescope/to", "")),
                                 int(f.get("begnum", "") or "1"), int(f.get("recnum", "") or "100"))
        except (ValueError, LookupError, UnicodeError, etree.LxmlError, RecursionError) as e:
            raise AdapterError(f"bocb2e: b2e0035 request: {type(e).__name__}") from None

    # -- decode ------------------------------------------------------------------------------

    def decode(self, frame: bytes) -> base.Message:
        try:
            return self._decode(frame)
        except (ValueError, LookupError, UnicodeError, etree.LxmlError, RecursionError) as e:
            raise AdapterError(f"bocb2e: {type(e).__name__}") from None

    def decode_document(self, body: bytes) -> list[base.Message]:
        """One unframed document (``hpf-gateway adapters decode bocb2e file.xml``); the
        whitespace a file adds around it is no part of it."""
        return [self.decode(body.strip(b" \t\r\n"))]

    def _decode(self, frame: bytes) -> base.Message:
        if not isinstance(frame, bytes) or not frame.endswith(_END):
            raise AdapterError("frame: not one bocb2e document")
        doc = c.read_document(frame)
        if isinstance(doc, c.Request):
            return self._request(doc)
        return self._response(doc)

    def _request(self, r: c.Request) -> base.Message:
        h = r.head
        if len(r.records) != 1:
            raise AdapterError(f"{r.trncod}: {len(r.records)} records; one is read")
        f = r.records[0]
        trnid = v.serial("trnid", h.trnid)
        if r.trncod == "b2e0001":
            return base.SignOn(trnid, "")
        if r.trncod == "b2e0007":
            return base.StatusQuery(trnid, v.serial("insid", f.get("insid", "")), dt.date.min)
        if r.trncod == "b2e0005":
            return base.BalanceQuery(trnid, v.account("actacn", f.get("account/actacn", "")))
        if r.trncod == "b2e0009":
            insid = v.serial("insid", f.get("insid", ""))
            if insid != trnid:
                raise AdapterError("b2e0009: insid and trnid differ; one transfer per document is read")
            code = f.get("toactn/toibkn", "")
            if code and not (len(code) == 12 and code.isascii() and code.isdigit()):
                raise AdapterError(f"toibkn: not a 12-digit CNAPS code: {v.show(code)}")
            if f.get("trncur", "") not in ("001", "CNY"):
                raise AdapterError("trncur: only CNY (001) is read")
            return base.Instruction(
                seq_no=insid, send_date=v.parse_date("trfdate", f.get("trfdate", "")),
                centre_node="", unit_no="",
                debit_account=v.account("fractn/actacn", f.get("fractn/actacn", "")),
                debit_name=v.text("fractn/actnam", f.get("fractn/actnam", ""), 60, required=True),
                creditor_account=v.account("toactn/actacn", f.get("toactn/actacn", "")),
                creditor_name=v.text("toactn/toname", f.get("toactn/toname", ""), 60, required=True),
                creditor_bank_code=code, creditor_personal=False, same_bank=not code,
                amount=v.parse_yuan("trnamt", f.get("trnamt", ""), positive=True),
                purpose="other", memo=v.text("furinfo", f.get("furinfo", ""), 140))
        raise AdapterError(f"{v.show(r.trncod)}: not a request the gateway sends")

    def _response(self, a: c.Answer) -> base.Message:
        trnid = v.serial("trnid", a.head.trnid)
        if a.trncod == "b2eerror" or a.code not in (c.OK, c.MORE):
            raise AdapterError(f"bocb2e: {a.trncod} refused {v.show(a.code)} {v.show(a.text, 60)}")
        if a.trncod == "b2e0035":
            return self._statement_answer(trnid, a)
        if len(a.records) != 1:
            raise AdapterError(f"{a.trncod}: {len(a.records)} records; one is read")
        r = a.records[0]
        if not r.code:
            raise AdapterError(f"{a.trncod}: a record without a status")
        text = v.text("rspmsg", r.text, 256)
        if a.trncod == "b2e0001":
            if r.code == c.OK:
                return base.SignOnAnswer(trnid, trnid, "", ok=True, text=text)
            return base.SignOnAnswer(trnid, trnid, "", ok=False, code=v.text("rspcod", r.code, 32),
                                     text=text)
        if a.trncod in ("b2e0009", "b2e0007"):
            ref = v.serial("insid", r.get("insid"))
            obssid = v.serial("obssid", r.get("obssid"), optional=True)
            if r.code in c.PROCESSING or (a.trncod == "b2e0009" and r.code == c.OK):
                return base.Receipt(trnid, trnid, ref, bank_seq_no=obssid)
            if a.trncod == "b2e0009":
                raise AdapterError(f"b2e0009: record {v.show(r.code)} is no outcome (ask b2e0007)")
            ok = r.code == c.OK
            return base.Result(trnid, trnid, ref, succeeded=ok, host_seq_no=obssid if ok else "",
                               bank_seq_no=obssid, code="" if ok else v.text("rspcod", r.code, 32),
                               text=text)
        if a.trncod == "b2e0005":
            if r.code != c.OK:
                raise AdapterError(f"b2e0005: record {v.show(r.code)}")
            book = v.parse_yuan("bokbal", r.get("balance/bokbal"), signed=True)
            avail = r.get("balance/avabal")
            over = r.get("balance/ovramt")
            day = r.get("baldat")
            return base.Balance(
                trnid, trnid, v.account("actacn", r.get("account/actacn")), balance=book,
                available=v.parse_yuan("avabal", avail, signed=True) if avail.strip() else book,
                overdraft=v.parse_yuan("ovramt", over) if over.strip() else 0,
                account_name=v.text("actname", r.get("account/actname"), 60),
                as_of=dt.datetime.combine(v.parse_date("baldat", day), dt.time()) if day.strip()
                else None)
        raise AdapterError(f"{v.show(a.trncod)}: not an answer the gateway reads")

    def _statement_answer(self, trnid: str, a: c.Answer) -> base.Statement:
        entries = []
        for r in a.records:
            if r.code and r.code != c.OK:
                raise AdapterError(f"b2e0035: record {v.show(r.code)}")
            if r.get("direction").strip():
                raise AdapterError(f"b2e0035 direction {v.show(r.get('direction'))}: meaning unknown")
            amount = v.parse_yuan("txnamt", r.get("txnamt"), signed=True)
            ours, theirs = ("fractn", "toactn") if amount < 0 else ("toactn", "fractn")
            name_leaf = "toname" if theirs == "toactn" else "acntname"
            bank_leaf = "toibkn" if theirs == "toactn" else "ibknum"
            bank = r.get(f"{theirs}/{bank_leaf}").strip()
            balance = r.get("acctbal")
            moment = r.get("txntime")
            entries.append(base.Entry(
                account=v.account(f"{ours}/actacn", r.get(f"{ours}/actacn")),
                host_seq_no=v.serial("transid", r.get("transid") or r.get("vchnum")),
                amount=amount, value_date=v.parse_date("txndate", r.get("txndate")),
                time=v.parse_time("txntime", moment) if moment.strip() else dt.time(),
                counterparty_account=v.account(f"{theirs}/actacn", r.get(f"{theirs}/actacn"),
                                               optional=True),
                counterparty_name=v.text(f"{theirs}/{name_leaf}", r.get(f"{theirs}/{name_leaf}"), 60),
                counterparty_bank_code=bank if len(bank) == 12 and bank.isdigit() else "",
                balance_after=v.parse_yuan("acctbal", balance, signed=True) if balance.strip() else None,
                summary=v.text("useinfo", r.get("useinfo"), 140),
                remark=v.text("furinfo", r.get("furinfo"), 140)))
        account = entries[0].account if entries else ""
        if any(e.account != account for e in entries):
            raise AdapterError("b2e0035: rows of more than one account")
        return base.Statement(trnid, trnid, account, tuple(entries))
