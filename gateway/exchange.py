"""Request/answer bank links: one connection per request, correlation by connection.

The deployed bdc interface (and the HTTP front ends of some banks) answer each request on
the connection that carried it and then close; no answer names its request.  This module
drives a bank's dispatcher over such a peer through the same small interface a persistent
link uses (the dispatcher's ``link_up``/``link_down``/``handle(message, frame)``, and this
link's ``send(message)``):

* :class:`ExchangeLink` signs on, keeps at most ``window`` requests on the wire at once
  (the bank's window: that many concurrent connections), probes an idle peer, binds each
  answer to the request of its connection (the adapter's ``decode_answer`` when it has
  one), and hands it to the dispatcher.  A transport failure or an unreadable answer costs
  that one request: the dispatcher's own timers resend or ask again.  What a bank's
  front-end needs (docs/protocols/bocb2e.md, icbc.md, ccb.md, "The link") follows from the
  adapter and the bank's config: no sign-on where the adapter has none (``needs_sign_on``;
  a balance query shows the front-end answers), no line probe where it has none
  (``has_heartbeat``), a new sign-on when an answer says the session is gone
  (``session_lost``), no blind resend of a transfer whose answer was lost when the bank's
  policy asks status first (``status_before_resend``), balances timed by the link when the
  bank gives none, and statements polled page by page (:class:`StatementPoll`).
* The wire it drives, :class:`Transport` (:class:`StreamTransport`: a connection per
  request; an HTTP front end plugs into the same link), :class:`ExchangeFailed` and the
  link's :class:`Serials`, are in :mod:`gateway.exchange_wire`; :class:`InboundFactory`,
  which takes the bank's own requests (notices, probes) one per connection and answers each
  once the dispatcher has committed it, is in :mod:`gateway.exchange_inbound`.  Both are
  named here too, where their users have always found them.

(Over 600 lines because sign-on, the window, the probe, status before resend and statement
paging are the rules of one link about one peer, and read best together.)
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from adapters import base as msg
from adapters.base import Adapter, AdapterError
from adapters.bdc.messages import Collection
from gateway.exchange_inbound import InboundFactory
from gateway.exchange_wire import ExchangeFailed, Serials, StreamTransport, Transport
from gateway.http_transport import TransportError
from gateway.refusals import refuse_message

__all__ = [
    "ExchangeFailed",
    "ExchangeLink",
    "IgnoredFieldsCollector",
    "InboundFactory",
    "Serials",
    "StatementPoll",
    "StreamTransport",
    "Transport",
    "bind_answer",
    "check_bank_peer",
    "make_exchange_link",
    "make_exchange_service",
]

log = Logger()


# -- the link ------------------------------------------------------------------------

_CONTROL_REQUESTS = (msg.SignOn, msg.Heartbeat, msg.StatusQuery, msg.BalanceQuery)
_ANSWERS_TO_BANK = (msg.Ack, msg.HeartbeatAnswer)
_MONEY = (msg.Instruction, Collection)  # a request that moves money under its reference (bdc BDC109/101, BDC102)


def bind_answer(adapter: Adapter, frame: bytes, request: msg.Message) -> msg.Message:
    """The answer in ``frame`` to ``request``, bound to it (the connection was the correlation).

    Uses the adapter's ``decode_answer(frame, request)`` when it has one; otherwise the
    decoded answer must echo the request's serial itself.
    """
    bind = getattr(adapter, "decode_answer", None)
    if bind is not None:
        return bind(frame, request)
    answer = msg.decode_all(adapter, frame)[0]
    if getattr(answer, "reply_to", None) != request.seq_no:
        raise AdapterError("the answer does not name the request of its connection")
    return answer


def _never_delivered(failure: Failure) -> bool:
    """Whether a failed request certainly never reached the peer (so nothing of it can have happened)."""
    e = failure.value
    return (isinstance(e, ExchangeFailed) and not e.connected) or \
        (isinstance(e, TransportError) and e.delivered is False)


@dataclasses.dataclass
class StatementPoll:
    """Statements (account details) polled for every registered account of the bank, every
    ``interval`` seconds, page by page until the bank says no more follow.

    The adapter writes one page's request, ``statement_page(seq_no, account, day, cursor)``
    (``cursor`` None: from the day's first record), and its ``decode_answer`` reads the page
    as an object with ``statement`` (a :class:`~adapters.base.Statement`), ``more`` and
    ``cursor`` (where the next page starts, or, after the last page, where the next poll
    starts; None: the whole day again).  The store keeps each movement once, so a page read
    twice books nothing twice.  ``accounts`` says which accounts to ask about.
    """

    interval: float
    accounts: Callable[[], list[str]]


class ExchangeLink:
    """A bank link of request/answer exchanges (see the module docstring)."""

    RESEND_AFTER_LOSS = 2  # at once; past that, the dispatcher's own receipt timer decides

    def __init__(self, bank: Any, adapter: Adapter, dispatcher: Any, clock: IReactorTime, metrics: Any,
                 transport: Transport, *, gateway_node: str, heartbeat_interval: float,
                 dead_after: float, retry_after: float = 1.0,
                 today: Callable[[], _dt.datetime] | None = None,
                 bank_time: Callable[[], _dt.datetime] | None = None,
                 statements: StatementPoll | None = None, transfers_first: bool = False) -> None:
        self.bank, self.adapter, self.dispatcher = bank, adapter, dispatcher
        self.clock, self.metrics, self.transport = clock, metrics, transport
        self.gateway_node = gateway_node
        self.heartbeat_interval, self.dead_after, self.retry_after = heartbeat_interval, dead_after, retry_after
        self.serials = Serials(gateway_node, today or _dt.datetime.now)
        self.window = max(1, int(getattr(bank, "window", 1)))
        # What the protocol has: a sign-on before requests, a line probe (an idle peer that
        # never answers one is dead).  A front-end without them is reached by its requests.
        self.needs_sign_on = bool(getattr(adapter, "needs_sign_on", True))
        self.has_heartbeat = bool(getattr(adapter, "has_heartbeat", True))
        # The bank's policy: a reference that may have arrived is asked about, never resent blindly.
        self.before_resend = bool(getattr(getattr(bank, "status", None), "before_resend", False))
        # The bank's local clock, for balances the bank gives without a time of day.
        self.bank_time = bank_time
        self.statements = statements
        self.signed_on = False
        self.running = False
        self.queue: deque[Any] = deque()
        # Statement pages, and with ``transfers_first`` transfers, go ahead of queries: a page
        # brings the movements a balance is judged against, a transfer's receipt deadline runs
        # from its send (the dispatcher's window bounds transfers: queries never wait for ever).
        self.urgent: deque[Any] = deque()
        self.transfers_first = transfers_first
        self.active = 0
        self.awaiting: dict[str, Any] = {}   # a bank request's serial -> its inbound connection
        self._resent: Counter[str] = Counter()  # instruction -> resends after a lost answer
        self._last_ok = 0.0
        self._retry: Any = None
        self._signing_on = False     # a sign-on (or, without one, a probe) is on the wire
        self._opening: Any = None    # that request
        self._alone: Any = None      # a balance query on the wire by itself (see _pump)
        self._balances: deque[tuple[Any, float]] = deque()   # balance queries waiting for it, since when
        self._pages: dict[str, tuple[str, _dt.date]] = {}   # page serial -> (account, day)
        self._paging: set[str] = set()                      # accounts with a page on the wire
        self._cursors: dict[str, tuple[_dt.date, Any]] = {}  # account -> (day, where the next poll starts)
        self._probe = LoopingCall(self._tick)
        self._probe.clock = clock
        self._statement_loop = LoopingCall(self.poll_statements)
        self._statement_loop.clock = clock

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Sign on, then keep the session: probe when idle, sign on again after a silence."""
        self.running = True
        self._last_ok = self.clock.seconds()
        self._sign_on()
        self._probe.start(max(min(self.heartbeat_interval, self.dead_after) / 3, 0.05), now=False)
        if self.statements is not None:
            self._statement_loop.start(self.statements.interval, now=False)

    def drop_all(self) -> None:
        """Stop the session (another node owns the link now); in-flight exchanges end on their own."""
        self.stop()

    def stop(self) -> None:
        self.running = False
        for loop in (self._probe, self._statement_loop):
            if loop.running:
                loop.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._down()

    def recheck(self) -> None:
        """The trust changed (a reload): probe the bank at once over a fresh connection, so a bank
        whose certificate the new trust refuses is down now rather than at its next exchange.
        A healthy session stays up: a reload drops no healthy link.  A protocol without a line
        probe is met by its next request."""
        if self.running and self.signed_on and self.has_heartbeat:
            log.info("link.recheck", bank=self.bank.id, reason="trust reloaded")
            self.send(msg.Heartbeat(self.serials.next(), self.gateway_node))

    def _down(self) -> None:
        self.queue.clear()  # the dispatcher sends again what matters once a session is up
        self.urgent.clear()
        self._balances.clear()
        self._paging.clear()
        if self.signed_on:
            self.signed_on = False
            self.dispatcher.link_down(self)

    def _up(self) -> None:
        self.signed_on = True
        self._last_ok = self.clock.seconds()
        log.info("link.signed_on", bank=self.bank.id)
        self.dispatcher.link_up(self)

    def _accounts(self) -> list[str]:
        config = getattr(self.dispatcher, "config", None)
        accounts = getattr(config, "accounts", {}) or {}
        return [n for n, a in accounts.items() if a.bank == self.bank.id]

    def _sign_on(self) -> None:
        """Open a session: the protocol's sign-on, or where it has none, a balance query that
        shows the front-end answers (no account registered: up at once)."""
        self._retry = None
        if not self.running or self.signed_on or self._signing_on:
            return
        if self.needs_sign_on:
            opening: Any = msg.SignOn(self.serials.sign_on(), self.gateway_node)
        else:
            accounts = self._accounts()
            if not accounts:
                self._up()
                return
            opening = msg.BalanceQuery(self.serials.next(), accounts[0])
        self._signing_on, self._opening = True, opening
        if not self._exchange(opening):
            self._signing_on, self._opening = False, None
            self._after(opening, ok=False)

    def _session_lost(self, reason: str) -> None:
        """The bank says the session is gone (an expired token): down, and sign on again now.
        What met it is not resent from here: the dispatcher's rules decide (a transfer is asked about)."""
        log.warn("link.session_lost", bank=self.bank.id, reason=reason[:200])
        self._down()
        self._sign_on()

    def _never_received(self, message: Any, evidence: bytes) -> None:
        """A transfer refused for want of a session was never taken by the bank (the whole
        request is refused before it is read): the dispatcher may send it again, same reference."""
        if isinstance(message, _MONEY):
            self.dispatcher.handle(msg.NotFound(message.seq_no, message.seq_no, message.seq_no), evidence)

    def _tick(self) -> None:
        if not self.has_heartbeat:
            return  # an idle front-end is not a dead one; requests find out when it is gone
        now = self.clock.seconds()
        if self.signed_on and now - self._last_ok >= self.dead_after:
            log.warn("link.dead_peer", bank=self.bank.id, silent_s=round(now - self._last_ok, 1))
            self._down()
            self._sign_on()
        elif self.signed_on and self.active == 0 and not self.queue and not self.urgent \
                and now - self._last_ok >= self.heartbeat_interval:
            self.send(msg.Heartbeat(self.serials.next(), self.gateway_node))

    # -- statements ------------------------------------------------------------------

    def poll_statements(self) -> None:
        """Ask for every account's new statement records (see :class:`StatementPoll`)."""
        if self.statements is None or not self.signed_on or self.bank_time is None:
            return
        today = self.bank_time().date()
        for account in self.statements.accounts():
            if account in self._paging:
                continue  # the last poll is still paging
            day, cursor = self._cursors.get(account, (today, None))
            self._page(account, day, cursor)

    def _page(self, account: str, day: _dt.date, cursor: Any) -> None:
        try:
            request = self.adapter.statement_page(self.serials.next(), account, day, cursor)  # type: ignore[attr-defined]
        except AdapterError as e:
            log.error("link.unencodable", bank=self.bank.id, kind="statement", error=str(e))
            return
        self._pages[request.seq_no] = (account, day)
        self._paging.add(account)
        self.urgent.append(request)
        self._pump()

    def _paged(self, account: str, day: _dt.date, page: Any, evidence: bytes) -> None:
        statement = page.statement
        if statement.entries or statement.pending or statement.problems:
            self.dispatcher.handle(statement, evidence)
        if page.more:
            self._page(account, day, page.cursor)
            return
        self._paging.discard(account)
        today = self.bank_time().date() if self.bank_time is not None else day
        # A day past is read to its end once more, then the poll moves to today.
        self._cursors[account] = (day, page.cursor) if day >= today else (today, None)

    # -- the dispatcher's way out ---------------------------------------------------

    def send(self, message: msg.Message) -> None:
        """Send a request on a connection of its own, or an answer on the bank's connection."""
        if isinstance(message, _ANSWERS_TO_BANK):
            self._answer_bank(message)
            return
        if self.bank_time is not None and isinstance(message, msg.BalanceQuery):
            if all(q.account != message.account for q, _ in self._balances):  # one waiting per account
                self._balances.append((message, self.clock.seconds()))
        elif isinstance(message, _MONEY) and self.transfers_first:
            self.urgent.append(message)
        else:
            self.queue.append(message)
        self._pump()

    def ask(self, message: Any) -> Deferred[Any]:
        """Send one request outside the dispatcher's traffic on a connection of its own; the
        Deferred fires with its answer, bound to it, or fails (:class:`ExchangeFailed`, or
        :class:`AdapterError` for an answer that does not decode, which is refused and
        recorded as any bad message is).

        For requests the neutral vocabulary has no place for (bdc's batch, collection,
        sign-off and branch messages, ``adapters/bdc/messages.py``); the caller keeps what
        the answer means.  Not counted in the window.
        """
        frame = self.adapter.encode(message, sender=self.gateway_node, receiver=self.bank.node)
        self.metrics.frames.labels(self.bank.id, "out").inc()

        def answered(answer: bytes) -> Any:
            self.metrics.frames.labels(self.bank.id, "in").inc()
            self._last_ok = self.clock.seconds()
            try:
                return bind_answer(self.adapter, answer, message)
            except AdapterError as e:
                refuse_message(self, answer, e)
                raise

        return self.transport.request(frame).addCallback(answered)

    def _pump(self) -> None:
        """Send what waits while the window has room.  A balance the bank gives without a time
        is timed by the link when its answer arrives, so its query goes alone (nothing this
        link asked for happens between the bank's answer and that time): when the link is
        idle, or, once it has waited ``dead_after`` seconds, after the window has drained."""
        while self._alone is None:
            waiting = self.urgent or self.queue
            if self._balances and (self.active == 0 and (not waiting or self._balance_due())):
                message, _ = self._balances.popleft()
                if self._exchange(message):
                    self._alone = message
                continue
            if self._balance_due() or not waiting or self.active >= self.window:
                return
            self._exchange((self.urgent or self.queue).popleft())
        return

    def _balance_due(self) -> bool:
        return bool(self._balances) and self.clock.seconds() - self._balances[0][1] >= self.dead_after

    def _exchange(self, message: Any) -> bool:
        wire = message
        if isinstance(message, _CONTROL_REQUESTS) and not isinstance(message, msg.SignOn):
            wire = dataclasses.replace(message, seq_no=self.serials.next())
        try:
            frame = self.adapter.encode(wire, sender=self.gateway_node, receiver=self.bank.node)
        except AdapterError as e:
            self._pages.pop(getattr(message, "seq_no", ""), None)
            if getattr(e, "session_lost", False):
                self._never_received(message, b"")
                self._session_lost(str(e))
                return False
            log.error("link.unencodable", bank=self.bank.id, kind=type(message).__name__, error=str(e))
            return False
        self.active += 1
        self.metrics.frames.labels(self.bank.id, "out").inc()
        d = self.transport.request(frame)
        d.addCallbacks(self._answered, self._failed, callbackArgs=(message, wire, frame),
                       errbackArgs=(message,))
        d.addErrback(lambda f: log.failure("link.exchange_error", f, bank=self.bank.id))
        return True

    def _finished(self, message: Any) -> tuple[bool, tuple[str, _dt.date] | None]:
        """One exchange over: the window's slot back; whether it opened the session; its page."""
        self.active -= 1
        if message is self._alone:
            self._alone = None
        opening = message is self._opening
        if opening:
            self._signing_on, self._opening = False, None
        return opening, self._pages.pop(getattr(message, "seq_no", ""), None)

    def _answered(self, frame: bytes, message: Any, wire: Any, request: bytes) -> None:
        opening, page = self._finished(message)
        self._resent.pop(message.seq_no, None)
        self.metrics.frames.labels(self.bank.id, "in").inc()
        self._last_ok = self.clock.seconds()
        if opening and not self.needs_sign_on:
            self._up()  # the front-end answered the probe: it is there (its balance comes again)
            self._pump()
            return
        try:
            answer = bind_answer(self.adapter, frame, wire)
        except AdapterError as e:
            if page is not None:
                self._paging.discard(page[0])
            if getattr(e, "session_lost", False):
                self._never_received(message, request + frame)
                self._session_lost(str(e))
                return
            refuse_message(self, frame, e)
            self._after(message, ok=False)
            self._pump()
            return
        # Evidence is the whole exchange: the answer means what it means only next to the
        # request of its connection (an adapter's decode_all reads both).
        paired = hasattr(self.adapter, "decode_answer")
        evidence = request + frame if paired else frame
        if page is not None:
            self._paged(page[0], page[1], answer, evidence)
            self._pump()
            return
        if wire is not message:
            answer = dataclasses.replace(answer, reply_to=message.seq_no)  # type: ignore[call-arg]
        match answer:
            case msg.SignOnAnswer(ok=True):
                self._up()
            case msg.SignOnAnswer():
                log.warn("link.sign_on_refused", bank=self.bank.id, code=answer.code, text=answer.text)
                self._after(message, ok=False)
            case msg.HeartbeatAnswer():
                pass
            case _:
                if isinstance(answer, msg.Balance) and self.bank_time is not None:
                    answer = self._timed(answer)
                self.dispatcher.handle(answer, evidence)
                if isinstance(answer, msg.Balance):
                    self.poll_statements()  # the movements before it, right behind it
        self._pump()

    def _timed(self, balance: msg.Balance) -> msg.Balance:
        """A balance dated today without a time of day, timed by the bank's clock now (whole
        seconds, as the bank's own records are): the link sent its query alone (see _pump)."""
        now = self.bank_time().replace(microsecond=0)  # type: ignore[misc]
        as_of = balance.as_of
        if as_of is None or (as_of.time() == _dt.time() and as_of.date() == now.date()):
            return dataclasses.replace(balance, as_of=now)
        return balance

    def _failed(self, failure: Failure, message: Any) -> None:
        _, page = self._finished(message)
        if page is not None:
            self._paging.discard(page[0])
        reason = failure.getErrorMessage()[:200]
        self.metrics.refused.labels(f"bank:{self.bank.id}", "no_answer").inc()
        log.warn("link.no_answer", bank=self.bank.id, kind=type(message).__name__, reason=reason)
        if _never_delivered(failure) and self.signed_on:
            # The bank cannot be reached: the session is down until a sign-on gets through
            # (the dispatcher then sends again what has no receipt, same reference).
            self._down()
            if self._retry is None:
                self._retry = self.clock.callLater(self.retry_after, self._sign_on)
        elif isinstance(message, _MONEY) and self.signed_on and not self.before_resend \
                and self._resent[message.seq_no] < self.RESEND_AFTER_LOSS:
            # The answer was lost on its connection, as a dropped persistent link loses it:
            # send it again at once, same reference, for the bank to answer the original.
            # (Not for a bank whose handling of a resent reference is unknown: there the
            # dispatcher asks its status first, at the receipt deadline.)
            self._resent[message.seq_no] += 1
            (self.urgent if self.transfers_first else self.queue).appendleft(message)
        self._after(message, ok=False)
        self._pump()

    def _after(self, message: Any, *, ok: bool) -> None:
        """A request went unanswered: open the session again later if it was to open it."""
        opening = isinstance(message, msg.SignOn) or (not self.needs_sign_on and not self.signed_on
                                                      and isinstance(message, msg.BalanceQuery))
        if opening and not ok and self.running and self._retry is None and not self.signed_on:
            self._retry = self.clock.callLater(self.retry_after, self._sign_on)

    # -- the bank's own requests ----------------------------------------------------

    def _answer_bank(self, message: msg.Message) -> None:
        inbound = self.awaiting.pop(getattr(message, "reply_to", ""), None)
        if inbound is None and isinstance(message, msg.Ack):
            # An answer to this link's own request (a statement page, a status): nobody to answer.
            log.debug("link.ack_of_own_exchange", bank=self.bank.id)
            return
        if inbound is None:
            log.warn("link.answer_without_request", bank=self.bank.id, kind=type(message).__name__)
            return
        inbound.answer(message)

    def inbound(self, message: msg.Message, frame: bytes, connection: Any) -> None:
        """A request the bank sent on a connection of its own: answered on that connection."""
        self.metrics.frames.labels(self.bank.id, "in").inc()
        match message:
            case msg.Heartbeat():
                connection.answer(msg.HeartbeatAnswer(self.serials.next(), message.seq_no, self.gateway_node))
            case msg.Movement() | msg.Balance() | msg.Result():
                self.awaiting[message.seq_no] = connection
                self.dispatcher.handle(message, frame)  # acknowledged through send(), once committed
            case _:
                self.metrics.refused.labels(f"bank:{self.bank.id}", "unexpected_message").inc()
                log.warn("link.unexpected_request", bank=self.bank.id, kind=type(message).__name__)
                connection.close()


# -- wiring ----------------------------------------------------------------------------


def check_bank_peer(bank_id: str) -> Callable[[Any], str | None]:
    """After the handshake: why the peer is not bank ``bank_id`` (hpf://bank/ID), or None."""
    from gateway.tls import peer_check

    return peer_check("bank", bank_id)


def make_exchange_link(reactor: Any, bank: Any, adapter: Adapter, dispatcher: Any, metrics: Any,
                       options: Any, *, gateway_node: str, heartbeat_interval: float,
                       dead_after: float) -> ExchangeLink:
    """Bank ``bank``'s per-request link: requests dialled over TLS with ``options``.

    The gateway dials ``endpoint`` when it connects to the bank, ``peer_endpoint`` when the
    bank's ``endpoint`` is the gateway's listener for the bank's own requests.
    """
    from twisted.internet.endpoints import clientFromString

    from gateway.tls import tls_client_endpoint

    target = bank.endpoint if bank.direction == "connect" else bank.peer_endpoint
    transport = StreamTransport(tls_client_endpoint(clientFromString(reactor, target), options),
                                adapter.framer, reactor, timeout=bank.request_timeout,
                                check_peer=check_bank_peer(bank.id))
    return ExchangeLink(bank, adapter, dispatcher, reactor, metrics, transport,
                        gateway_node=gateway_node, heartbeat_interval=heartbeat_interval,
                        dead_after=dead_after)


def make_exchange_service(reactor: Any, link: ExchangeLink, options: Any,
                          guard: Callable[[Any, str], Any] | None = None) -> Any:
    """The service of a per-request link: the sign-on loop and, when there is one, the
    listener for the bank's own requests (``endpoint`` when the gateway listens, else
    ``peer_endpoint``), wrapped by ``guard(factory, listener)`` in the listeners' shared guards."""
    from twisted.application.service import MultiService, Service
    from twisted.internet.endpoints import serverFromString

    from gateway.listener import listening_service
    from gateway.tls import tls_server_factory

    bank = link.bank

    class Running(Service):
        def startService(self) -> None:
            super().startService()
            link.start()

        def stopService(self) -> None:
            super().stopService()
            link.stop()

    container = MultiService()
    container.setName(f"bank-{bank.id}")
    Running().setServiceParent(container)
    listen = bank.endpoint if bank.direction == "listen" else bank.peer_endpoint
    if listen is not None:
        factory = InboundFactory(link, timeout=bank.request_timeout, check_peer=check_bank_peer(bank.id))
        if guard is not None:
            factory = guard(factory, f"bank:{bank.id}")
        service = listening_service(serverFromString(reactor, listen), tls_server_factory(factory, options))
        service.setName(f"link-{bank.id}")
        service.setServiceParent(container)
    return container


class IgnoredFieldsCollector:
    """Exports, per bank, the unknown fields its adapter read and ignored.

    ``hpf_gateway_bank_ignored_fields_total{bank, field}``, from the adapter's optional
    ``ignored`` counter (field name to count): a bank sending fields we do not know is worth
    seeing, and never worth refusing.
    """

    def __init__(self, adapters: Any) -> None:
        self.adapters = adapters

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily("hpf_gateway_bank_ignored_fields",
                                     "Unknown fields read in bank messages and ignored, by bank and name.",
                                     labels=["bank", "field"])
        for bank_id, adapter in self.adapters.items():
            for name, count in sorted(dict(getattr(adapter, "ignored", {}) or {}).items()):
                family.add_metric([bank_id, name], count)
        yield family
