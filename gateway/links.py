"""Bank link sessions: the thin Twisted edge between a TLS connection and a dispatcher.

After the handshake the peer's certificate must name this bank
(``hpf://bank/ID``); then the gateway signs on, answers and sends heartbeats,
drops a silent peer, and hands every other decoded message, with its
original bytes, to the bank's :class:`~gateway.relay.BankDispatcher`.  A
framing error closes the connection: on a byte stream nothing after a bad
frame header can be trusted.  A well-framed message that does not decode is
refused on its own (:func:`gateway.refusals.refuse_message`) and the connection goes on.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import IHandshakeListener, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from adapters import base as msg
from adapters.base import Adapter, AdapterError
from gateway.config import BankConfig
from gateway.listener import listening_service
from gateway.metrics import GatewayMetrics
from gateway.refusals import refuse_message
from gateway.relay import BankDispatcher
from gateway.tls import TLSOptions, is_tls_error, peer_identity, tls_client_endpoint, tls_server_factory

__all__ = ["BankLinkProtocol", "BankLink", "make_link_service"]

log = Logger()


@implementer(IHandshakeListener)
class BankLinkProtocol(Protocol):
    """One connection to one bank."""

    def __init__(self, link: "BankLink") -> None:
        self.link = link
        self.bank = link.bank.id
        self.verified = False
        self.handshake_done = False
        self.signed_on = False
        self._sign_on_seq = ""
        self._framer = link.adapter.framer()
        self._last_rx = 0.0
        self._last_probe = 0.0
        self._timer: LoopingCall | None = None

    # -- connection ------------------------------------------------------------

    def connectionMade(self) -> None:
        self.link.connections.add(self)
        now = self.link.clock.seconds()
        self._last_rx = self._last_probe = now
        self._timer = LoopingCall(self._check_liveness)
        self._timer.clock = self.link.clock
        self._timer.start(max(min(self.link.heartbeat_interval, self.link.dead_after) / 3, 0.05), now=False)

    def handshakeCompleted(self) -> None:
        self.handshake_done = True
        try:
            identity = peer_identity(self.transport)
        except ValueError:  # a certificate from a trusted CA that names no hpf:// identity
            identity = None
        if identity is None or identity.role != "bank" or identity.name != self.bank:
            who = identity.uri if identity else "no certificate"
            self.link.metrics.security_events.labels("bank_link_wrong_peer").inc()
            log.warn("link.wrong_peer", kind="bank_link_wrong_peer", bank=self.bank, peer=who,
                     ip=_peer_ip(self.transport))
            self.transport.abortConnection()
            return
        self.verified = True
        self._sign_on_seq = self.link.dispatcher.next_seq()
        self.send(msg.SignOn(self._sign_on_seq, self.link.gateway_node))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.link.connections.discard(self)
        if not self.handshake_done and reason is not None and is_tls_error(reason):
            # The TLS layer refused the peer (or the peer refused us, when we dial):
            # a bad, revoked or expired certificate, no certificate, an old protocol.
            self.link.metrics.security_event(
                "tls_refused", "link.tls_refused", listener=f"bank:{self.bank}",
                direction=self.link.bank.direction, ip=_peer_ip(self.transport),
                reason=str(reason.value)[:300])
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        if self.signed_on:
            self.link.session_down(self)

    def _refuse(self, reason: str) -> None:
        self.link.metrics.refused.labels(f"bank:{self.bank}", "bad_frame").inc()
        log.warn("link.bad_frame", bank=self.bank, reason=reason)
        self.transport.abortConnection()

    # -- frames ----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if not self.verified:
            return self._refuse("data before the peer was verified")
        try:
            frames = self._framer.feed(data)
        except AdapterError as e:
            return self._refuse(str(e))
        for frame in frames:
            self._last_rx = self.link.clock.seconds()
            try:
                messages = msg.decode_all(self.link.adapter, frame)
            except AdapterError as e:
                answer = refuse_message(self.link, frame, e)
                if answer is not None:
                    self.transport.write(answer)
                continue
            self._last_rx = self.link.clock.seconds()
            self.link.metrics.frames.labels(self.bank, "in").inc()
            for message in messages:
                self._receive(message, frame)
                if self.transport is None or getattr(self.transport, "disconnecting", False):
                    return

    def _receive(self, message: msg.Message, frame: bytes) -> None:
        match message:
            case msg.SignOnAnswer(reply_to=reply_to, ok=ok):
                if reply_to != self._sign_on_seq or not ok:
                    log.warn("link.sign_on_refused", bank=self.bank, code=message.code, text=message.text)
                    self.transport.loseConnection()
                    return
                self.signed_on = True
                self.link.session_up(self)
            case msg.Heartbeat():
                self.send(msg.HeartbeatAnswer(self.link.dispatcher.next_seq(), message.seq_no,
                                              self.link.gateway_node))
            case msg.HeartbeatAnswer():
                pass
            case _ if not self.signed_on:
                self._refuse(f"{type(message).__name__} before sign-on")
            case _:
                self.link.dispatcher.handle(message, frame)

    def send(self, message: msg.Message) -> None:
        """Encode and write one message (the dispatcher's way out)."""
        frame = self.link.adapter.encode(message, sender=self.link.gateway_node, receiver=self.link.bank.node)
        self.transport.write(frame)
        self.link.metrics.frames.labels(self.bank, "out").inc()

    def _check_liveness(self) -> None:
        now = self.link.clock.seconds()
        silent = now - self._last_rx
        if silent >= self.link.dead_after:
            log.warn("link.dead_peer", bank=self.bank, silent_s=round(silent, 1))
            self.transport.abortConnection()
        elif self.verified and silent >= self.link.heartbeat_interval \
                and now - self._last_probe >= self.link.heartbeat_interval:
            self._last_probe = now
            self.send(msg.Heartbeat(self.link.dispatcher.next_seq(), self.link.gateway_node))


def _peer_ip(transport: Any) -> str:
    try:
        peer = transport.getPeer()
    except Exception:  # no transport any more
        return "?"
    return str(getattr(peer, "host", peer))


class BankLink(Factory):
    """The link to one bank: builds sessions and tells the dispatcher which one is current."""

    def __init__(self, bank: BankConfig, adapter: Adapter, dispatcher: BankDispatcher, clock: IReactorTime,
                 metrics: GatewayMetrics, *, gateway_node: str, heartbeat_interval: float,
                 dead_after: float) -> None:
        self.bank = bank
        self.adapter = adapter
        self.dispatcher = dispatcher
        self.clock = clock
        self.metrics = metrics
        self.gateway_node = gateway_node
        self.heartbeat_interval = heartbeat_interval
        self.dead_after = dead_after
        self.current: BankLinkProtocol | None = None
        self.connections: set[BankLinkProtocol] = set()
        self.noisy = False

    def buildProtocol(self, addr: Any) -> BankLinkProtocol:
        return BankLinkProtocol(self)

    def drop_all(self) -> None:
        """Close every connection of this link at once (the node no longer owns it)."""
        for proto in list(self.connections):
            if proto.transport is not None:
                proto.transport.abortConnection()

    def session_up(self, session: BankLinkProtocol) -> None:
        old, self.current = self.current, session
        if old is not None and old is not session:
            # The bank dialled again: the old connection is half-open or stale.
            log.info("link.replaced", bank=self.bank.id)
            self.dispatcher.link_down(old)
            old.transport.abortConnection()
        self.dispatcher.link_up(session)

    def session_down(self, session: BankLinkProtocol) -> None:
        if session is self.current:
            self.current = None
        self.dispatcher.link_down(session)


def make_link_service(reactor: Any, link: BankLink, options: TLSOptions,
                      guard: Callable[[Any, str], Any] | None = None) -> Any:
    """A service that keeps the bank's link: listening for it, or dialling it with backoff.

    ``guard(factory, listener)`` wraps a listening link in the listeners' shared guards
    (per-address cap, handshake deadline: :class:`gateway.web.ConnectionGuard`).
    """
    bank = link.bank
    if bank.direction == "listen":
        endpoint = serverFromString(reactor, bank.endpoint)
        factory = guard(link, f"bank:{bank.id}") if guard is not None else link
        service = listening_service(endpoint, tls_server_factory(factory, options))
    else:
        endpoint = tls_client_endpoint(clientFromString(reactor, bank.endpoint), options)
        service = ClientService(
            endpoint, link, retryPolicy=backoffPolicy(initialDelay=0.5, maxDelay=30.0, factor=2.0,
                                                      jitter=random.random),
            clock=reactor)
    service.setName(f"link-{bank.id}")
    container = MultiService()
    container.setName(f"bank-{bank.id}")
    service.setServiceParent(container)
    return container
