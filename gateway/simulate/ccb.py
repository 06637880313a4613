"""A simulated CCB WLPT client and the bank behind it: pure answer logic and a loopback TCP
edge (one ``<TX>`` per connection, answered, then closed).

As the sources show the real one: customer id, operator and password checked on every
request; 6W8010/6W8060 transfers keyed by REQUEST_SN, a repeated REQUEST_SN answered
``0130Z110B144`` (记录重复: seen in a public simulator, presumably the bank's own); 6W1503
by REQUEST_SN1 with DEAL_RESULT 4 success, 3 failure, and ``0130Z110BB22`` for no such
request; 6W0100 balances; amounts in yuan.  Each transfer executes at most once.  6WY101
answers an account's details for STARTDATE..ENDDATE a page at a time: TOTAL_RECORD rows a
page (10 when empty, at most 200), TOTAL_PAGE and a POSTSTR that the next page must send back
with the same TOTAL_RECORD; ``8350ZX100000`` when there are no rows.  Each executed transfer
is a row: a debit (FLAG1 0) for its payer, a credit (FLAG1 1) for its payee when that account
is one of the simulator's, with the balance after it (AMT1).

**The simulator's own choices:** DEAL_RESULT ``2`` while in progress (the sources say only
"anything but 3 and 4"); a wrong password is RETURN_CODE ``SIM401``; a failure's
RETURN_MSG is 余额不足; a bad 6WY101 request (an unknown account, a POSTSTR it did not give,
a changed TOTAL_RECORD, a page past the last) is ``SIM400``; its POSTSTR is its own text and
each row's TRAN_FLOW its own serial (the sources give neither's form nor whether TRAN_FLOW
relates to CREDIT_NO).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.protocol import Factory, Protocol

from adapters import base
from adapters._documents import DocumentFramer
from adapters.base import AdapterError
from adapters.bocb2e import _values as v
from adapters.ccb import codec as c

__all__ = ["WlptClient", "WlptFactory", "SIM_CODES"]

SIM_CODES = {"bad_login": "SIM401", "bad_request": "SIM400"}


@dataclass
class _Transfer:
    sn: str
    credit_no: str
    payer: str
    payee: str
    amount: int
    polls_left: int
    deal: str = "2"
    memo: str = ""
    executed_at: dt.datetime | None = None


@dataclass
class WlptClient:
    """The WLPT client and its bank (see the module docstring)."""

    cust_id: str
    user_id: str
    password: str
    balances: dict[str, int]
    polls_before_final: int = 1
    transfers: dict[str, _Transfer] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    executions: int = 0
    executed_refs: Counter[str] = field(default_factory=Counter)   # REQUEST_SN -> times executed
    duplicates: int = 0            # transfers with a REQUEST_SN seen before
    _credit: int = 100761892436

    def answer(self, data: bytes, now: dt.datetime) -> bytes:
        try:
            tx = c.read_tx(data)
        except AdapterError as e:
            return self._reply("", "", SIM_CODES["bad_request"], str(e)[:80], {})
        sn, code = tx.head["REQUEST_SN"], tx.head["TX_CODE"]
        h = tx.head
        if (h.get("CUST_ID"), h.get("USER_ID"), h.get("PASSWORD")) != \
                (self.cust_id, self.user_id, self.password):
            return self._reply(sn, code, SIM_CODES["bad_login"], "密码错误", {})
        if sn in self.seen:
            if code in ("6W8010", "6W8060"):
                self.duplicates += 1
            return self._reply(sn, code, c.DUPLICATE, "记录重复", {})
        self.seen.add(sn)
        try:
            if code in ("6W8010", "6W8060"):
                self._credit += 1
                t = _Transfer(sn, str(self._credit), tx.get("PAY_ACCNO"), tx.get("RECV_ACCNO"),
                              v.parse_yuan("AMOUNT", tx.get("AMOUNT"), positive=True),
                              self.polls_before_final, memo=tx.get("USEOF"))
                self.transfers[sn] = t
                return self._reply(sn, code, c.OK, "", {"CREDIT_NO": t.credit_no,
                                                         "CST_PAY_NO": tx.get("CST_PAY_NO")})
            if code == "6W1503":
                t = self.transfers.get(tx.get("REQUEST_SN1"))
                if t is None:
                    return self._reply(sn, code, c.NOT_FOUND, "记录不存在",
                                       {"REQUEST_SN1": tx.get("REQUEST_SN1")})
                msg = self._advance(t)
                if t.deal == c.DEAL_SUCCEEDED and t.executed_at is None:
                    t.executed_at = now
                return self._reply(sn, code, c.OK, msg, {"REQUEST_SN1": t.sn, "DEAL_RESULT": t.deal,
                                                         "CREDIT_NO": t.credit_no})
            if code == "6W0100":
                acct = tx.get("ACC_NO")
                if acct not in self.balances:
                    return self._reply(sn, code, SIM_CODES["bad_request"], "无此账户", {})
                amount = v.format_yuan("BALANCE", self.balances[acct], signed=True)
                return self._reply(sn, code, c.OK, "", {"ACC_NO": acct, "BALANCE": amount,
                                                        "BALANCE1": amount})
            if code == "6WY101":
                return self._details(c.read_details_request(tx))
        except AdapterError as e:
            return self._reply(sn, code, SIM_CODES["bad_request"], str(e)[:80], {})
        return self._reply(sn, code, SIM_CODES["bad_request"], "unsupported TX_CODE", {})

    def entries(self, account: str, first: dt.date, last: dt.date) -> list[base.Entry]:
        """The account's movements from executed transfers dated ``first``..``last``, in the
        order they executed, each with the balance after it."""
        done = sorted((t for t in self.transfers.values() if t.executed_at is not None),
                      key=lambda t: (t.executed_at, t.credit_no))
        moves = [(t, -t.amount if t.payer == account else t.amount) for t in done
                 if account in (t.payer, t.payee)]
        balance = self.balances[account]
        after = []
        for _, amount in reversed(moves):     # back from today's balance
            after.append(balance)
            balance -= amount
        out = []
        for (t, amount), balance_after in zip(moves, reversed(after)):
            assert t.executed_at is not None
            if not first <= t.executed_at.date() <= last:
                continue
            other, flow = (t.payee, "1") if amount < 0 else (t.payer, "2")
            out.append(base.Entry(
                account=account, host_seq_no=f"SIM{t.credit_no}{flow}", amount=amount,
                value_date=t.executed_at.date(), time=t.executed_at.time().replace(microsecond=0),
                counterparty_account=other, counterparty_name="", counterparty_bank_code="",
                balance_after=balance_after, summary=t.memo[:140]))
        return out

    def _details(self, q: c.DetailsPage) -> bytes:
        if q.account not in self.balances:
            return self._reply(q.seq_no, "6WY101", SIM_CODES["bad_request"], "无此账户", {})
        per_page = q.per_page
        if not 1 <= per_page <= c.MAX_PER_PAGE or q.page < 1:
            return self._reply(q.seq_no, "6WY101", SIM_CODES["bad_request"], "页码或每页记录数错误", {})
        rows = self.entries(q.account, q.first, q.last)
        total = -(-len(rows) // per_page)
        poststr = f"{q.first:%Y%m%d}{q.last:%Y%m%d}+{per_page}+"
        if (q.page > 1 and q.poststr != poststr) or (rows and q.page > total):
            return self._reply(q.seq_no, "6WY101", SIM_CODES["bad_request"], "定位串错误", {})
        answer_head = {"REQUEST_SN": q.seq_no, "CUST_ID": self.cust_id, "TX_CODE": "6WY101",
                       "RETURN_CODE": c.OK, "RETURN_MSG": "", "LANGUAGE": "CN"}
        page = tuple(rows[(q.page - 1) * per_page:q.page * per_page])
        return c.write_tx(c.details_answer(answer_head, q.account, page, page=q.page,
                                           total_pages=total, poststr=poststr))

    def _advance(self, t: _Transfer) -> str:
        if t.deal in (c.DEAL_SUCCEEDED, c.DEAL_FAILED):
            return "余额不足" if t.deal == c.DEAL_FAILED else ""
        if t.polls_left > 0:
            t.polls_left -= 1
            return ""
        if self.balances.get(t.payer, -1) < t.amount:
            t.deal = c.DEAL_FAILED
            return "余额不足"
        self.balances[t.payer] -= t.amount
        if t.payee in self.balances:
            self.balances[t.payee] += t.amount
        self.executions += 1
        self.executed_refs[t.sn] += 1
        t.deal = c.DEAL_SUCCEEDED
        return ""

    def _reply(self, sn: str, code: str, ret: str, msg: str, info: dict[str, str]) -> bytes:
        head = {"REQUEST_SN": sn, "CUST_ID": self.cust_id, "TX_CODE": code, "RETURN_CODE": ret,
                "RETURN_MSG": msg, "LANGUAGE": "CN"}
        return c.write_tx(c.Tx(head, info))


class _OneTx(Protocol):
    def __init__(self, client: WlptClient, now: Callable[[], dt.datetime]) -> None:
        self.client, self.now = client, now
        self.framer = DocumentFramer(b"</TX>", c.MAX_DOCUMENT)

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self.framer.feed(data)
        except AdapterError:
            self.transport.loseConnection()
            return
        if frames:
            self.transport.write(self.client.answer(frames[0], self.now()))
            self.transport.loseConnection()


class WlptFactory(Factory):
    """Serves ``client`` on a TCP port: one request per connection."""

    noisy = False

    def __init__(self, client: WlptClient, now: Callable[[], dt.datetime]) -> None:
        self.client, self.now = client, now

    def buildProtocol(self, addr: object) -> _OneTx:
        return _OneTx(self.client, self.now)
