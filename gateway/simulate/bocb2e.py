"""A simulated Bank of China bocb2e front-end: pure answer logic and a loopback HTTP edge.

:class:`BocFrontEnd` is the front-end and the bank behind it, with no I/O and no clock of its
own: :meth:`BocFrontEnd.answer` takes one request document and the current time and returns
the answer document.  It behaves as the public sources show the real one behave (see
docs/protocols/bocb2e.md): a token from b2e0001 that expires, B107 for a request without a
valid token, transfers keyed by ``insid`` answered B059 (processing) and then, on b2e0007,
B054 for a few polls before the final B001 or a refusal, statement pages answered B002 while
more records follow.  It keeps balances in fen and executes each ``insid`` at most once.

Where the sources are silent the choices below are **the simulator's, not the bank's**:
a resent ``insid`` is answered with the original record's current status (nothing executed
again); an unknown ``insid`` on b2e0007 and a refused transfer answer the codes in
:data:`SIM_CODES`; a malformed document is answered ``trn-b2eerror-rs``.

:func:`make_site` serves a front-end over twisted.web at ``/B2EC/E2BServlet``.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.web import resource, server

from adapters.base import AdapterError
from adapters.bocb2e import _values as v
from adapters.bocb2e import codec as c

__all__ = ["SIM_CODES", "BocFrontEnd", "Transfer", "make_site", "PATH"]

PATH = b"/B2EC/E2BServlet"

SIM_CODES = {
    "no_such_transfer": "SIM404",     # b2e0007 for an insid never received
    "insufficient_funds": "SIM051",   # the payer's balance does not cover the transfer
    "bad_request": "SIM400",          # a document the front-end cannot read
    "bad_password": "SIM401",         # b2e0001 with wrong credentials
}
"""The simulator's own codes where no public source gives the bank's (documented as such)."""


@dataclass
class Transfer:
    insid: str
    obssid: str
    payer: str
    payee: str
    payee_name: str
    amount: int
    day: dt.date
    memo: str
    polls_left: int
    code: str = "B059"            # B059 submitted -> B054 processing -> B001 or a refusal
    text: str = "已提交"
    executed: bool = False


@dataclass
class _Row:
    account: str
    transid: str
    amount: int
    day: dt.date
    moment: dt.time
    other: str
    other_name: str
    balance_after: int
    memo: str


@dataclass
class BocFrontEnd:
    """The front-end and its bank (see the module docstring)."""

    custid: str
    cusopr: str
    password: str
    balances: dict[str, int]
    token_ttl: dt.timedelta = dt.timedelta(minutes=10)
    polls_before_final: int = 1
    token_factory: Callable[[], str] = field(default=lambda: secrets.token_hex(16).upper())
    transfers: dict[str, Transfer] = field(default_factory=dict)
    rows: list[_Row] = field(default_factory=list)
    executions: int = 0
    executed_refs: Counter[str] = field(default_factory=Counter)   # insid -> times executed
    duplicates: int = 0            # b2e0009 records for an insid already held
    _tokens: dict[str, dt.datetime] = field(default_factory=dict)
    _obssid: int = 16005610000

    # -- the one entry point -------------------------------------------------------------

    def answer(self, data: bytes, now: dt.datetime) -> bytes:
        """The answer document to one request document at ``now``."""
        try:
            req = c.read_request(data)
        except AdapterError as e:
            head = c.Head("", "", "", "", "", "")
            return c.write_answer(head, c.answer_body("b2eerror", SIM_CODES["bad_request"],
                                                      str(e)[:120]), [("rspmsg", str(e)[:120])])
        h = req.head
        if req.trncod == "b2e0001":
            return self._sign_on(req, now)
        expiry = self._tokens.get(h.token)
        if expiry is None or expiry <= now:
            self._tokens.pop(h.token, None)
            return c.write_answer(h, c.answer_body("b2eerror", "B107", "签到已过期"), [])
        if req.trncod == "b2e0002":
            self._tokens.pop(h.token, None)
            return c.write_answer(h, c.answer_body("b2e0002", c.OK, "OK"), [])
        handler = {"b2e0009": self._transfer, "b2e0007": self._status,
                   "b2e0005": self._balance, "b2e0035": self._statement}.get(req.trncod)
        if handler is None:
            return c.write_answer(h, c.answer_body("b2eerror", SIM_CODES["bad_request"],
                                                   "unsupported trncod"), [])
        try:
            body = handler(req, now)
        except (AdapterError, ValueError) as e:  # a bad begnum is answered, never a crash
            msg = str(e)[:120]
            body = c.answer_body(req.trncod, SIM_CODES["bad_request"], msg)
        return c.write_answer(h, body, [("rspmsg", body)])

    # -- transactions ----------------------------------------------------------------------

    def _sign_on(self, req: c.Request, now: dt.datetime) -> bytes:
        h, rec = req.head, req.records[0]
        if (h.custid, h.cusopr, rec.get("oprpwd", "")) != (self.custid, self.cusopr, self.password):
            return c.write_answer(h, c.answer_body("b2e0001", SIM_CODES["bad_password"], "密码错误",
                                                   (c.Record(SIM_CODES["bad_password"], "密码错误"),)), [])
        token = self.token_factory()
        self._tokens[token] = now + self.token_ttl
        record = c.Record(c.OK, "OK", {"serverdt": now.strftime("%Y%m%d%H%M%S"), "token": token})
        head = c.Head(h.termid, h.trnid, h.custid, h.cusopr, h.trncod, token)
        return c.write_answer(head, c.answer_body("b2e0001", c.OK, "OK", (record,)), [])

    def _transfer(self, req: c.Request, now: dt.datetime) -> str:
        out = []
        for r in req.records:
            insid = v.serial("insid", r.get("insid", ""))
            t = self.transfers.get(insid)
            if t is not None:
                self.duplicates += 1
            if t is None:   # new: keep it; it executes when its status is first asked
                self._obssid += 1
                t = Transfer(insid, str(self._obssid), v.account("fractn/actacn", r.get("fractn/actacn", "")),
                             v.account("toactn/actacn", r.get("toactn/actacn", "")),
                             r.get("toactn/toname", ""),
                             v.parse_yuan("trnamt", r.get("trnamt", ""), positive=True),
                             v.parse_date("trfdate", r.get("trfdate", "")), r.get("furinfo", ""),
                             self.polls_before_final)
                self.transfers[insid] = t
            out.append(c.Record(t.code, t.text, {"insid": t.insid, "obssid": t.obssid}))
        return c.answer_body("b2e0009", c.OK, "OK", tuple(out))

    def _status(self, req: c.Request, now: dt.datetime) -> str:
        out = []
        for r in req.records:
            insid = r.get("insid", "")
            t = self.transfers.get(insid)
            if t is None:
                out.append(c.Record(SIM_CODES["no_such_transfer"], "无此交易", {"insid": insid,
                                                                         "obssid": r.get("obssid", "")}))
                continue
            self._advance(t, now)
            out.append(c.Record(t.code, t.text, {"insid": t.insid, "obssid": t.obssid}))
        return c.answer_body("b2e0007", c.OK, "OK", tuple(out))

    def _advance(self, t: Transfer, now: dt.datetime) -> None:
        """One poll: still processing while polls are left, then executed exactly once."""
        if t.code in (c.OK,) or t.code.startswith("SIM"):
            return
        if t.polls_left > 0:
            t.polls_left -= 1
            t.code, t.text = "B054", "处理中"
            return
        balance = self.balances.get(t.payer)
        if balance is None or balance < t.amount:
            t.code, t.text = SIM_CODES["insufficient_funds"], "余额不足"
            return
        self.balances[t.payer] = balance - t.amount
        self.executions += 1
        self.executed_refs[t.insid] += 1
        t.executed = True
        t.code, t.text = c.OK, "交易成功"
        self.rows.append(_Row(t.payer, t.obssid, -t.amount, now.date(), now.time().replace(microsecond=0),
                              t.payee, t.payee_name, self.balances[t.payer], t.memo))
        if t.payee in self.balances:
            self.balances[t.payee] += t.amount
            self.rows.append(_Row(t.payee, t.obssid, t.amount, now.date(),
                                  now.time().replace(microsecond=0), t.payer, "",
                                  self.balances[t.payee], t.memo))

    def _balance(self, req: c.Request, now: dt.datetime) -> str:
        r = req.records[0]
        acct = r.get("account/actacn", "")
        if acct not in self.balances:
            return c.answer_body("b2e0005", SIM_CODES["bad_request"], "无此账户")
        amount = v.format_yuan("bokbal", self.balances[acct], signed=True)
        record = c.Record(c.OK, "OK", {
            "account/ibknum": r.get("account/ibknum", ""), "account/actacn": acct,
            "account/curcde": "001", "account/actname": "",
            "balance/bokbal": amount, "balance/avabal": amount, "balance/stpamt": "0.00",
            "balance/ovramt": "0.00", "baldat": now.strftime("%Y%m%d")})
        return c.answer_body("b2e0005", c.OK, "OK", (record,))

    def _statement(self, req: c.Request, now: dt.datetime) -> str:
        r = req.records[0]
        acct = r.get("actacn", "")
        first = v.parse_date("datescope/from", r.get("datescope/from", ""))
        last = v.parse_date("datescope/to", r.get("datescope/to", ""))
        begnum = int(r.get("begnum") or "1")
        recnum = int(r.get("recnum") or "10")
        rows = [x for x in self.rows if x.account == acct and first <= x.day <= last]
        page = rows[begnum - 1:begnum - 1 + recnum]
        more = begnum - 1 + len(page) < len(rows)
        records = tuple(c.Record(c.OK, "", {
            "fractn/actacn": x.account if x.amount < 0 else x.other,
            "toactn/actacn": x.other if x.amount < 0 else x.account,
            "toactn/toname": x.other_name if x.amount < 0 else "",
            "transid": x.transid, "txndate": v.format_date(x.day), "txntime": v.format_time(x.moment),
            "txnamt": v.format_yuan("txnamt", x.amount, signed=True),
            "acctbal": v.format_yuan("acctbal", x.balance_after, signed=True),
            "furinfo": x.memo}) for x in page)
        return c.answer_body("b2e0035", c.MORE if more else c.OK, "OK", records,
                             totalnum=len(rows), notenum=len(page))


class _Servlet(resource.Resource):
    isLeaf = True

    def __init__(self, front: BocFrontEnd, now: Callable[[], dt.datetime], max_body: int) -> None:
        super().__init__()
        self._front, self._now, self._max = front, now, max_body

    def render_POST(self, request: server.Request) -> bytes:
        if request.path != PATH:
            request.setResponseCode(404)
            return b""
        body = request.content.read(self._max + 1)
        request.setHeader(b"content-type", b"text/plain; charset=GB18030")
        return self._front.answer(body, self._now())


def make_site(front: BocFrontEnd, now: Callable[[], dt.datetime]) -> server.Site:
    """A twisted.web site answering POSTs at :data:`PATH` with ``front``."""
    return server.Site(_Servlet(front, now, c.MAX_DOCUMENT))
