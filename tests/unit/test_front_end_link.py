"""The request/answer link (gateway/exchange.py) driving a bank's front-end, without a reactor:
the link's rules against the pure front-end simulators (gateway/simulate/bocb2e.py, ccb.py)
answering through a transport the test holds, on a fake clock.

The rules (docs/protocols/bocb2e.md, "The link"): sign on first where the protocol signs on
and again when the token is gone; no heartbeat; a transfer whose answer was lost is never
resent by the link when the bank's policy asks status first; a balance query goes alone and
its answer is timed by the bank's clock; statements are read page by page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from adapters.base import (
    Balance,
    BalanceQuery,
    Heartbeat,
    Instruction,
    NotFound,
    Receipt,
    Result,
    Statement,
    StatusQuery,
)
from adapters.bocb2e import BocB2eAdapter, Session, Terminal
from adapters.bocb2e import codec as boc
from adapters.ccb import CcbAdapter, Customer
from adapters.ccb import codec as wlpt
from gateway.exchange import ExchangeFailed, ExchangeLink, StatementPoll
from gateway.http_transport import TransportError
from gateway.metrics import GatewayMetrics
from gateway.simulate.bocb2e import BocFrontEnd, _Row
from gateway.simulate.ccb import WlptClient

NOW = dt.datetime(2026, 12, 7, 10, 15, 2, 500000)
PAYER, PAYEE = "6222002222333344", "6222008888000022"
GATEWAY = "D00000"


@dataclass(frozen=True)
class Policy:
    before_resend: bool = True


@dataclass(frozen=True)
class BankConf:
    id: str = "B002"
    node: str = "102000"
    window: int = 4
    status: Policy = Policy()


@dataclass(frozen=True)
class Account:
    bank: str = "B002"


@dataclass
class Dispatcher:
    """The dispatcher side of the link's interface, recording what it is given."""

    ups: list[Any] = field(default_factory=list)
    downs: list[Any] = field(default_factory=list)
    handled: list[tuple[Any, bytes]] = field(default_factory=list)
    config: Any = None

    def __post_init__(self) -> None:
        @dataclass
        class Config:
            accounts: dict[str, Account]

        self.config = Config({PAYER: Account()})

    def link_up(self, session: Any) -> None:
        self.ups.append(session)

    def link_down(self, session: Any) -> None:
        self.downs.append(session)

    def handle(self, message: Any, raw: bytes) -> None:
        self.handled.append((message, raw))


@dataclass
class FrontEnd:
    """A transport whose requests wait until the test answers them with ``answer_with``."""

    answer_with: Callable[[bytes], bytes]
    pending: list[tuple[bytes, Deferred[bytes]]] = field(default_factory=list)

    def request(self, payload: bytes) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self.pending.append((payload, d))
        return d

    def answer(self, index: int = 0) -> bytes:
        payload, d = self.pending.pop(index)
        d.callback(self.answer_with(payload))
        return payload

    def lose(self, index: int = 0, error: Exception | None = None) -> bytes:
        payload, d = self.pending.pop(index)
        error = error or TransportError("no answer within 25 s", None)
        if not (isinstance(error, ExchangeFailed) and not error.connected) \
                and getattr(error, "delivered", None) is not False:
            self.answer_with(payload)   # the front-end did it; its answer never came back
        d.errback(error)
        return payload

    def codes(self) -> list[str]:
        return [boc.read_request(p).trncod for p, _ in self.pending]


def boc_link(before_resend: bool = True, statements: bool = False
             ) -> tuple[ExchangeLink, FrontEnd, BocFrontEnd, Dispatcher, Clock]:
    front = BocFrontEnd("C1", "OP", "pw", {PAYER: 1_000_000}, polls_before_final=1)
    transport = FrontEnd(lambda payload: front.answer(payload, NOW))
    adapter = BocB2eAdapter(session=Session(Terminal("T1", "C1", "OP"), lambda: "pw", lambda: NOW))
    clock, dispatcher = Clock(), Dispatcher()
    poll = StatementPoll(5.0, lambda: [PAYER]) if statements else None
    link = ExchangeLink(BankConf(status=Policy(before_resend)), adapter, dispatcher, clock, GatewayMetrics(),
                        transport, gateway_node=GATEWAY, heartbeat_interval=5.0, dead_after=15.0,
                        today=lambda: NOW, bank_time=lambda: NOW, statements=poll)
    return link, transport, front, dispatcher, clock


def signed_on(**options: Any) -> tuple[ExchangeLink, FrontEnd, BocFrontEnd, Dispatcher, Clock]:
    link, transport, front, dispatcher, clock = boc_link(**options)
    link.start()
    assert transport.codes() == ["b2e0001"] and dispatcher.ups == []
    transport.answer()
    assert dispatcher.ups == [link]
    return link, transport, front, dispatcher, clock


def transfer(n: int = 1, amount: int = 10_000) -> Instruction:
    return Instruction(f"5224026120700000000{n}", NOW.date(), "C52240", "522400000000000", PAYER, "甲",
                       PAYEE, "乙", "", True, True, amount, "allocation")


def test_a_bocb2e_link_signs_on_first_and_never_sends_a_heartbeat() -> None:
    link, transport, _, dispatcher, clock = signed_on()
    for _ in range(40):
        clock.advance(5.0)   # idle far past heartbeat_interval and dead_after
    assert transport.pending == [] and dispatcher.downs == [] and link.signed_on
    link.send(Heartbeat("H1", GATEWAY))   # even asked, bocb2e has no heartbeat to write
    assert transport.pending == []


def test_a_lost_transfer_answer_is_not_resent_by_the_link_when_status_comes_first() -> None:
    link, transport, front, dispatcher, _ = signed_on()
    link.send(transfer())
    transport.lose()
    assert transport.pending == [] and front.transfers   # the front-end has it; nothing went again
    # The dispatcher's inquiry finds it (processing), then final: executed once.
    link.send(StatusQuery("G1", transfer().seq_no, NOW.date()))
    transport.answer()
    link.send(StatusQuery("G2", transfer().seq_no, NOW.date()))
    transport.answer()
    kinds = [type(m) for m, _ in dispatcher.handled]
    assert kinds == [Receipt, Result] and dispatcher.handled[1][0].succeeded
    assert [m.reply_to for m, _ in dispatcher.handled] == ["G1", "G2"]
    assert front.executions == 1 and front.executed_refs[transfer().seq_no] == 1


def test_without_the_policy_a_lost_answer_goes_again_at_once() -> None:
    link, transport, front, _, _ = signed_on(before_resend=False)
    link.send(transfer())
    sent = transport.lose()
    assert [p for p, _ in transport.pending] == [sent]   # same insid: the bank must dedupe
    transport.answer()
    assert front.duplicates == 1


def test_an_expired_token_signs_on_again_and_the_refused_transfer_may_go_again() -> None:
    link, transport, front, dispatcher, _ = signed_on()
    front._tokens.clear()          # the token expires
    link.send(transfer())
    transport.answer()              # B107: refused before it was read
    assert dispatcher.downs == [link] and transport.codes() == ["b2e0001"]
    never = [m for m, _ in dispatcher.handled if isinstance(m, NotFound)]
    assert [m.ref for m in never] == [transfer().seq_no] and not front.transfers
    transport.answer()
    assert dispatcher.ups == [link, link] and link.signed_on
    link.send(transfer())           # the dispatcher sends it again, same insid: taken now
    transport.answer()
    assert isinstance(dispatcher.handled[-1][0], Receipt) and list(front.transfers) == [transfer().seq_no]


def test_a_failed_sign_on_is_tried_again_later() -> None:
    link, transport, _, dispatcher, clock = boc_link()
    link.start()
    transport.lose(error=TransportError("not delivered: connection refused", False))
    assert transport.pending == [] and dispatcher.ups == []
    clock.advance(1.0)
    assert transport.codes() == ["b2e0001"]


def test_a_balance_query_goes_alone_and_is_timed_by_the_banks_clock() -> None:
    link, transport, _, dispatcher, clock = signed_on()
    link.send(transfer())
    link.send(BalanceQuery("G1", PAYER))
    link.send(BalanceQuery("G1b", PAYER))           # one per account waits: this one is dropped
    link.send(StatusQuery("G2", transfer().seq_no, NOW.date()))
    assert transport.codes() == ["b2e0009", "b2e0007"]  # the balance waits for the link to be idle
    transport.answer()
    transport.answer()
    assert transport.codes() == ["b2e0005"]            # idle: the balance goes, alone
    link.send(StatusQuery("G3", transfer().seq_no, NOW.date()))
    assert transport.codes() == ["b2e0005"]            # and nothing goes beside it
    transport.answer()
    assert transport.codes() == ["b2e0007"]
    [balance] = [m for m, _ in dispatcher.handled if isinstance(m, Balance)]
    assert balance.as_of == NOW.replace(microsecond=0) and balance.balance == 1_000_000
    assert balance.reply_to == "G1"
    # A busy link: the balance waits dead_after seconds, then the window drains for it.
    link.send(BalanceQuery("G4", PAYER))
    clock.advance(15.0)
    link.send(StatusQuery("G5", transfer().seq_no, NOW.date()))
    assert transport.codes() == ["b2e0007"]            # G5 waits behind the overdue balance
    transport.answer()
    assert transport.codes() == ["b2e0005"]
    transport.answer()
    assert transport.codes() == ["b2e0007"]


def test_statements_are_read_page_by_page_and_the_next_poll_starts_after_the_last_record() -> None:
    link, transport, front, dispatcher, _ = signed_on(statements=True)
    for n in range(125):
        front.rows.append(_Row(PAYER, f"{9000 + n}", -100, NOW.date(), dt.time(10, 0), PAYEE, "乙",
                               1_000_000 - 100 * (n + 1), ""))
    link.poll_statements()
    transport.answer()          # records 1-100, B002: more to come
    assert transport.codes() == ["b2e0035"]
    transport.answer()          # records 101-125
    assert transport.pending == []
    pages = [(m, raw) for m, raw in dispatcher.handled if isinstance(m, Statement)]
    assert [len(m.entries) for m, _ in pages] == [100, 25]
    assert {e.host_seq_no for m, _ in pages for e in m.entries} == {f"{9000 + n}" for n in range(125)}
    # The evidence of each page is its request and answer, which the adapter reads back.
    assert BocB2eAdapter().decode_all(pages[1][1]) == [pages[1][0]]
    link.poll_statements()
    assert b"<begnum>126</begnum>" in transport.pending[0][0]
    transport.answer()          # nothing new: nothing handed over
    assert len([m for m, _ in dispatcher.handled if isinstance(m, Statement)]) == 2


def test_a_front_end_without_sign_on_is_opened_by_a_balance_query() -> None:
    client = WlptClient("C1", "OP", "pw", {PAYER: 1_000_000}, polls_before_final=0)
    transport = FrontEnd(lambda payload: client.answer(payload, NOW))
    clock, dispatcher = Clock(), Dispatcher()
    link = ExchangeLink(BankConf(), CcbAdapter(Customer("C1", "OP", "pw")), dispatcher, clock, GatewayMetrics(),
                        transport, gateway_node=GATEWAY, heartbeat_interval=5.0, dead_after=15.0,
                        today=lambda: NOW, bank_time=lambda: NOW)
    link.start()
    [(payload, _)] = transport.pending
    assert wlpt.read_tx(payload).head["TX_CODE"] == "6W0100" and dispatcher.ups == []
    transport.answer()
    assert dispatcher.ups == [link]
    # Unreachable: down, and opened again by the next balance query once it answers.
    link.send(transfer())
    transport.lose(error=ExchangeFailed("no connection: refused", connected=False))
    assert dispatcher.downs == [link]
    clock.advance(1.0)
    assert wlpt.read_tx(transport.pending[0][0]).head["TX_CODE"] == "6W0100"
    transport.answer()
    assert dispatcher.ups == [link, link]


def test_transfers_and_statement_pages_go_ahead_of_queries() -> None:
    link, transport, _, _, _ = signed_on(statements=True)
    link.transfers_first = True
    for n in range(4):                  # the window (4) is full of queries
        link.send(StatusQuery(f"Q{n}", transfer().seq_no, NOW.date()))
    link.send(StatusQuery("Q4", transfer().seq_no, NOW.date()))
    link.send(transfer())
    link.poll_statements()
    transport.answer()
    transport.answer()
    assert transport.codes() == ["b2e0007", "b2e0007", "b2e0009", "b2e0035"]
    assert [q.seq_no for q in link.queue] == ["Q4"]              # the query waits behind them


def test_icbc_history_is_read_page_by_page_and_its_evidence_reads_back() -> None:
    from adapters.icbc import Corporate, IcbcAdapter
    from adapters.icbc import codec as nc
    from gateway.simulate.icbc import NcFrontEnd
    from gateway.simulate.icbc import _Row as NcRow

    front = NcFrontEnd("120290000000001", "gw.y.1202", {PAYER: 1_000_000}, page_size=2)
    for n in range(3):
        front.rows.append(NcRow(PAYER, f"CMM{n}", -100 * (n + 1), NOW, PAYEE, "乙", 1_000_000 - 100 * (n + 1), ""))

    def through_nc(document: bytes) -> bytes:   # what NcTransport does for a query
        doc = nc.read_document(document)
        answer = nc.nc_answer_document(front.trade(nc.form_body(doc.pub, document.decode(nc.ENCODING)), NOW))
        assert isinstance(answer, bytes)
        return answer

    transport = FrontEnd(through_nc)
    clock, dispatcher = Clock(), Dispatcher()
    adapter = IcbcAdapter(Corporate("120290000000001", "gw.y.1202"), now=lambda: NOW)
    link = ExchangeLink(BankConf(), adapter, dispatcher, clock, GatewayMetrics(), transport, gateway_node=GATEWAY,
                        heartbeat_interval=5.0, dead_after=15.0, today=lambda: NOW, bank_time=lambda: NOW,
                        statements=StatementPoll(5.0, lambda: [PAYER]))
    link.start()
    transport.answer()                      # the opening QACCBAL
    assert dispatcher.ups == [link]
    link.poll_statements()
    transport.answer()                      # rows 1-2, NextTag 2
    transport.answer()                      # row 3, last page
    assert transport.pending == []
    pages = [(m, raw) for m, raw in dispatcher.handled if isinstance(m, Statement)]
    assert [[e.amount for e in m.entries] for m, _ in pages] == [[-100, -200], [-300]]
    assert IcbcAdapter().decode_all(pages[1][1]) == [pages[1][0]]


def test_ccb_details_are_read_page_by_page_and_each_page_reads_back() -> None:
    """6WY101 through the WLPT simulator's answer logic: TOTAL_RECORD 2, five rows, so three
    pages; pages 2 and 3 send the POSTSTR the first answer gave, and the next poll reads the
    day again from page 1 (the store keeps each movement once)."""
    from gateway.simulate.ccb import _Transfer

    client = WlptClient("C1", "OP", "pw", {PAYER: 1_000_000, PAYEE: 0}, polls_before_final=0)
    for n in range(5):
        client.transfers[f"{n:016d}"] = _Transfer(
            f"{n:016d}", f"10076189{n:04d}", PAYER, PAYEE, 100 * (n + 1), 0, deal=wlpt.DEAL_SUCCEEDED,
            executed_at=NOW.replace(minute=n, microsecond=0))
    client.balances[PAYER] -= 1500
    transport = FrontEnd(lambda payload: client.answer(payload, NOW))
    clock, dispatcher = Clock(), Dispatcher()
    adapter = CcbAdapter(Customer("C1", "OP", "pw"), per_page=2)
    link = ExchangeLink(BankConf(), adapter, dispatcher, clock, GatewayMetrics(), transport,
                        gateway_node=GATEWAY, heartbeat_interval=5.0, dead_after=15.0, today=lambda: NOW,
                        bank_time=lambda: NOW, statements=StatementPoll(5.0, lambda: [PAYER]))
    link.start()
    transport.answer()                      # the opening 6W0100
    assert dispatcher.ups == [link]
    link.poll_statements()
    asked = []
    while transport.pending:
        asked.append(wlpt.read_tx(transport.pending[0][0]))
        transport.answer()
    assert [(tx.get("PAGE"), tx.get("TOTAL_RECORD")) for tx in asked] == [("1", "2"), ("2", "2"), ("3", "2")]
    assert asked[0].get("POSTSTR") == "" and asked[1].get("POSTSTR") == asked[2].get("POSTSTR") != ""
    assert {tx.get("STARTDATE") for tx in asked} == {tx.get("ENDDATE") for tx in asked} == {"20261207"}
    pages = [(m, raw) for m, raw in dispatcher.handled if isinstance(m, Statement)]
    assert [[e.amount for e in m.entries] for m, _ in pages] == [[-100, -200], [-300, -400], [-500]]
    assert [e.balance_after for m, _ in pages for e in m.entries] == [999_900, 999_700, 999_400, 999_000, 998_500]
    assert CcbAdapter().decode_all(pages[1][1]) == [pages[1][0]]
    # The next poll starts the day again at page 1.
    link.poll_statements()
    assert wlpt.read_tx(transport.pending[0][0]).get("PAGE") == "1"
