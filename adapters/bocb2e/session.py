"""The gateway's side of a bocb2e front-end, sans I/O: neutral messages in, documents out,
answers in, neutral messages out, with the sign-on token kept between them.

One :class:`Session` per configured bank.  It writes nothing to a socket and reads no clock
it was not given; the link that owns it posts each document to the front-end and hands the
answer back to :meth:`Session.read`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from adapters import base
from adapters.base import AdapterError
from adapters.bocb2e import _values as v
from adapters.bocb2e import codec as c

__all__ = ["NotSignedOn", "Refused", "StatementPage", "StatementAnswer", "Session"]


class NotSignedOn(AdapterError):
    """The front-end answered that the session's token is missing or expired (B107/1033).

    The request was refused as a whole before it was processed (an envelope answer without
    records); the token is dropped and the link must sign on again.  A transfer that met this
    was not taken, so the link sends it again, same ``insid``, once signed on.
    """

    session_lost = True  # what a link reads: sign on again (gateway/exchange.py)


class Refused(AdapterError):
    """The front-end refused the request as a whole (its transaction status was not B001/B002);
    ``code``/``text`` are the bank's.  For a transfer this says nothing certain about the
    record, so the caller treats the transfer as in doubt and asks b2e0007."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"bocb2e: refused {v.show(code)} {v.show(text, 80)}")
        self.code = code
        self.text = text


@dataclass(frozen=True)
class StatementPage:
    """Ask for one page of an account's transactions (b2e0035): the neutral vocabulary has no
    statement request, so this is the bocb2e codec's own."""

    seq_no: str
    account: str
    first: dt.date
    last: dt.date
    begnum: int = 1
    recnum: int = 100


@dataclass(frozen=True)
class StatementAnswer:
    """One page read: the neutral :class:`~adapters.base.Statement` and whether more follow
    (B002), with the ``begnum`` of the next page."""

    statement: base.Statement
    more: bool
    next_begnum: int
    total: int | None

    @property
    def cursor(self) -> int:
        """Where the next page, or the next poll of the same day, starts (its ``begnum``)."""
        return self.next_begnum


Outbound = base.Instruction | base.StatusQuery | base.BalanceQuery | StatementPage


class Session:
    """Sign-on state and the neutral <-> bocb2e mapping for one front-end."""

    def __init__(self, terminal: c.Terminal, password: str | Callable[[], str],
                 now: Callable[[], dt.datetime]) -> None:
        # ``password`` may be a callable (reading the password file): asked at each sign-on only.
        self.terminal = terminal
        self._password = password
        self._now = now
        self.token: str | None = None

    def __repr__(self) -> str:  # never the password or the token
        return f"Session(termid={self.terminal.termid!r}, signed_on={self.token is not None})"

    # -- sign-on -------------------------------------------------------------------------

    def _head(self, trnid: str, trncod: str) -> c.Head:
        t = self.terminal
        return c.Head(t.termid, trnid, t.custid, t.cusopr, trncod, self.token or "")

    def sign_on(self, trnid: str) -> bytes:
        """The b2e0001 document."""
        password = self._password() if callable(self._password) else self._password
        return c.write_request(self._head(trnid, "b2e0001"), c.sign_on_body(self._now(), password), [])

    def signed_on(self, data: bytes) -> base.SignOnAnswer:
        """Read the b2e0001 answer; on B001 keep its token."""
        a = c.read_answer(data)
        if a.trncod not in ("b2e0001", "b2eerror"):
            raise AdapterError(f"bocb2e: expected a b2e0001 answer, got {v.show(a.trncod)}")
        record = a.records[0] if a.records else c.Record("", "")
        code, text = (record.code, record.text) if record.code else (a.code, a.text)
        token = record.get("token") or a.head.token
        if a.code != c.OK or code != c.OK or not token:
            self.token = None
            return base.SignOnAnswer(a.head.trnid, a.head.trnid, "", ok=False,
                                     code=code or a.code, text=text)
        self.token = token
        return base.SignOnAnswer(a.head.trnid, a.head.trnid, "", ok=True, text=text)

    def sign_off(self, trnid: str) -> bytes:
        """The b2e0002 document; the token is dropped at once (an answer changes nothing)."""
        data = c.write_request(self._head(trnid, "b2e0002"), c.sign_off_body(self._now()), [])
        self.token = None
        return data

    # -- requests --------------------------------------------------------------------------

    def request(self, message: Outbound) -> bytes:
        """The document for ``message``; :class:`NotSignedOn` without a token."""
        if self.token is None:
            raise NotSignedOn("bocb2e: not signed on")
        if isinstance(message, base.Instruction):
            body, texts = c.transfer_body(
                insid=message.seq_no, payer_account=message.debit_account,
                payer_name=message.debit_name, payee_account=message.creditor_account,
                payee_name=message.creditor_name,
                payee_bank="" if message.same_bank else message.creditor_bank_code,
                payee_bank_name="", amount=message.amount, memo=message.memo,
                day=message.send_date)
            return c.write_request(self._head(message.seq_no, "b2e0009"), body, texts)
        if isinstance(message, base.StatusQuery):
            return c.write_request(self._head(message.seq_no, "b2e0007"),
                                   c.status_body(message.ref), [])
        if isinstance(message, base.BalanceQuery):
            return c.write_request(self._head(message.seq_no, "b2e0005"),
                                   c.balance_body(message.account), [])
        if isinstance(message, StatementPage):
            return c.write_request(self._head(message.seq_no, "b2e0035"), c.statement_body(
                message.account, message.first, message.last, message.begnum, message.recnum), [])
        raise AdapterError(f"bocb2e cannot carry a {type(message).__name__}")

    # -- answers ---------------------------------------------------------------------------

    def _answer(self, data: bytes, trncod: str) -> c.Answer:
        a = c.read_answer(data)
        codes = {a.code, *(r.code for r in a.records)}
        if codes & c.NOT_SIGNED_ON:
            self.token = None
            raise NotSignedOn(f"bocb2e: not signed on ({a.code} {v.show(a.text, 60)})")
        if a.trncod != trncod or a.code not in (c.OK, c.MORE):
            raise Refused(a.code, a.text)
        return a

    def read(self, message: Outbound, data: bytes) -> list[base.Message] | StatementAnswer:
        """The neutral messages in the answer to ``message`` (a page for a StatementPage)."""
        if isinstance(message, base.Instruction):
            return [self._transfer(message, self._answer(data, "b2e0009"))]
        if isinstance(message, base.StatusQuery):
            return [self._status(message, self._answer(data, "b2e0007"))]
        if isinstance(message, base.BalanceQuery):
            return [self._balance(message, self._answer(data, "b2e0005"))]
        if isinstance(message, StatementPage):
            return self._statement(message, self._answer(data, "b2e0035"))
        raise AdapterError(f"bocb2e: no answer is read for a {type(message).__name__}")

    @staticmethod
    def _record_for(a: c.Answer, insid: str) -> c.Record:
        mine = [r for r in a.records if r.get("insid") == insid]
        if len(mine) != 1:
            raise AdapterError(f"bocb2e: answer holds {len(mine)} records for insid {v.show(insid)}")
        if not mine[0].code:
            raise AdapterError("bocb2e: a transfer record without a status")
        return mine[0]

    def _transfer(self, m: base.Instruction, a: c.Answer) -> base.Message:
        r = self._record_for(a, m.seq_no)
        obssid = v.serial("obssid", r.get("obssid"), optional=True)
        seq = a.head.trnid or m.seq_no
        if r.code == c.OK or r.code in c.PROCESSING:
            # The b2e0009 answer says the bank has the transfer; its outcome comes from b2e0007.
            return base.Receipt(seq, m.seq_no, m.seq_no, bank_seq_no=obssid)
        # Any other code (a refusal, or a resent insid answered in a way no source shows) is
        # no final outcome: the transfer is in doubt until b2e0007 says what the bank holds.
        raise Refused(r.code, r.text)

    def _status(self, q: base.StatusQuery, a: c.Answer) -> base.Message:
        r = self._record_for(a, q.ref)
        obssid = v.serial("obssid", r.get("obssid"), optional=True)
        seq = a.head.trnid or q.seq_no
        if r.code in c.PROCESSING:
            return base.Receipt(seq, q.seq_no, q.ref, bank_seq_no=obssid)
        ok = r.code == c.OK
        return base.Result(seq, q.seq_no, q.ref, succeeded=ok, host_seq_no=obssid if ok else "",
                           bank_seq_no=obssid, code="" if ok else r.code, text=r.text[:256])

    def _balance(self, q: base.BalanceQuery, a: c.Answer) -> base.Balance:
        if len(a.records) != 1:
            raise AdapterError(f"bocb2e: balance answer holds {len(a.records)} records")
        r = a.records[0]
        if r.code and r.code != c.OK:
            raise Refused(r.code, r.text)
        account = r.get("account/actacn") or q.account
        if account != q.account:
            raise AdapterError("bocb2e: balance answer for another account")
        book = v.parse_yuan("bokbal", r.get("balance/bokbal"), signed=True)
        avail_text = r.get("balance/avabal")
        available = v.parse_yuan("avabal", avail_text, signed=True) if avail_text else book
        over_text = r.get("balance/ovramt")
        overdraft = v.parse_yuan("ovramt", over_text) if over_text else 0
        as_of = None
        if r.get("baldat"):
            as_of = dt.datetime.combine(v.parse_date("baldat", r.get("baldat")), dt.time())
        return base.Balance(a.head.trnid or q.seq_no, q.seq_no, q.account, balance=book,
                            available=available, overdraft=overdraft,
                            account_name=v.text("actname", r.get("account/actname"), 60),
                            as_of=as_of)

    def _statement(self, q: StatementPage, a: c.Answer) -> StatementAnswer:
        entries = tuple(_entry(q.account, r) for r in a.records)
        more = a.code == c.MORE
        statement = base.Statement(a.head.trnid or q.seq_no, q.seq_no, q.account, entries)
        return StatementAnswer(statement, more, q.begnum + len(entries), a.totalnum)


def _entry(account: str, r: c.Record) -> base.Entry:
    """One b2e0035 row as a neutral entry.

    The sources give no values for ``direction``; a row is read only when ``txnamt`` carries
    its own sign (negative = a debit) and ``direction`` is empty, so no movement is ever booked
    on a guessed sign: any other row is refused, naming the field.
    """
    if r.code and r.code != c.OK:
        raise Refused(r.code, r.text)
    if r.get("direction"):
        raise AdapterError(f"b2e0035 direction {v.show(r.get('direction'))}: meaning unknown")
    amount = v.parse_yuan("txnamt", r.get("txnamt"), signed=True)
    ours_is_payer = r.get("fractn/actacn") == account
    side = "toactn" if ours_is_payer else "fractn"
    name_leaf = "toname" if ours_is_payer else "acntname"
    bank_leaf = "toibkn" if ours_is_payer else "ibknum"
    bank = r.get(f"{side}/{bank_leaf}")
    balance = r.get("acctbal")
    host = r.get("transid") or r.get("vchnum")
    return base.Entry(
        account=account, host_seq_no=v.serial("transid", host), amount=amount,
        value_date=v.parse_date("txndate", r.get("txndate")),
        time=v.parse_time("txntime", r.get("txntime")) if r.get("txntime") else dt.time(),
        counterparty_account=v.account(f"{side}/actacn", r.get(f"{side}/actacn"), optional=True),
        counterparty_name=v.text(f"{side}/{name_leaf}", r.get(f"{side}/{name_leaf}"), 60),
        counterparty_bank_code=bank if len(bank) == 12 and bank.isdigit() else "",
        balance_after=v.parse_yuan("acctbal", balance, signed=True) if balance else None,
        summary=v.text("useinfo", r.get("useinfo"), 140),
        remark=v.text("furinfo", r.get("furinfo"), 140))
