"""The bank's own requests on a request/answer link (:mod:`gateway.exchange`): one request
per connection, answered on it once the dispatcher has committed it, then closed.

Split from gateway/exchange.py by concern (the link's rules stay there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from adapters import base as msg
from adapters.base import AdapterError
from gateway.links import refuse_message

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["InboundFactory"]

log = Logger()


@implementer(IHandshakeListener)
class _Inbound(Protocol):
    """One request from the bank on its own connection, answered on it, then closed."""

    def __init__(self, factory: InboundFactory) -> None:
        self.factory = factory
        self.link = factory.link
        self.framer = self.link.adapter.framer()
        self.verified = factory.check_peer is None
        self.seq_no = ""
        self.timer: Any = None

    def connectionMade(self) -> None:
        self.timer = self.link.clock.callLater(self.factory.timeout, self.close)

    def handshakeCompleted(self) -> None:
        problem = self.factory.check_peer(self.transport) if self.factory.check_peer else None
        if problem is not None:
            self.link.metrics.security_events.labels("bank_link_wrong_peer").inc()
            log.warn("link.wrong_peer", kind="bank_link_wrong_peer", bank=self.link.bank.id, peer=problem)
            self.transport.abortConnection()
            return
        self.verified = True

    def dataReceived(self, data: bytes) -> None:
        if not self.verified or self.seq_no:
            self.transport.abortConnection()  # data before verification, or a second request
            return
        try:
            frames = self.framer.feed(data)
        except AdapterError as e:
            self.link.metrics.refused.labels(f"bank:{self.link.bank.id}", "bad_frame").inc()
            log.warn("link.bad_frame", bank=self.link.bank.id, reason=str(e))
            self.transport.abortConnection()
            return
        if not frames:
            return
        frame = frames[0]
        try:
            message = msg.decode_all(self.link.adapter, frame)[0]
        except AdapterError as e:
            refusal = refuse_message(self.link, frame, e)
            if refusal is not None:
                self.transport.write(refusal)
            self.close()
            return
        self.seq_no = message.seq_no or "-"
        self.link.inbound(message, frame, self)

    def answer(self, message: msg.Message) -> None:
        if self.transport is None or self.transport.disconnecting:
            return
        frame = self.link.adapter.encode(message, sender=self.link.gateway_node, receiver=self.link.bank.node)
        self.transport.write(frame)
        self.link.metrics.frames.labels(self.link.bank.id, "out").inc()
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.disconnecting:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = ConnectionDone()) -> None:  # type: ignore[assignment]
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        if self.seq_no and self.link.awaiting.get(self.seq_no) is self:
            del self.link.awaiting[self.seq_no]


class InboundFactory(Factory):
    """Accepts the bank's own requests for ``link`` (a :class:`gateway.exchange.ExchangeLink`,
    not imported here: that module imports this one), one per connection, each bounded by
    ``timeout``."""

    noisy = False

    def __init__(self, link: Any, *, timeout: float,
                 check_peer: Callable[[Any], str | None] | None = None) -> None:
        self.link, self.timeout, self.check_peer = link, timeout, check_peer

    def buildProtocol(self, addr: Any) -> _Inbound:
        return _Inbound(self)
