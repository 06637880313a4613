"""The wire under a request/answer bank link (:mod:`gateway.exchange`): one connection per
request, and the link's own request serials.

* :class:`Transport` is what the link needs of the wire: ``request(payload) ->
  Deferred[bytes]``, one answer frame per request.  :class:`StreamTransport` opens one
  connection per request (TLS or plain, through any client endpoint), frames the answer
  with the adapter's framer and gives up after a timeout; :class:`ExchangeFailed` says why
  a request got no answer and whether it certainly never left.
* :class:`Serials`: the link's request serials in the deployed centre's form (bdc §6.2).

Split from gateway/exchange.py by concern (the link's rules stay there).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHandshakeListener,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from adapters.base import AdapterError

__all__ = ["ExchangeFailed", "Serials", "StreamTransport", "Transport"]


class ExchangeFailed(Exception):
    """A request got no answer frame: no connection, a timeout, a close, a bad frame header.

    ``connected`` is False when no connection could be made (the request never left).
    """

    def __init__(self, reason: str, *, connected: bool = True) -> None:
        super().__init__(reason)
        self.connected = connected


class Transport(TypingProtocol):
    """One request, one answer: ``payload`` is a whole frame, the result the answer frame."""

    def request(self, payload: bytes) -> Deferred[bytes]: ...


# -- one connection per request ------------------------------------------------------


@implementer(IHandshakeListener)
class _OneExchange(Protocol):
    """Writes one request frame, returns the first answer frame, then closes."""

    def __init__(self, payload: bytes, framer: Any, answer: Deferred[bytes],
                 check_peer: Callable[[Any], str | None] | None) -> None:
        self.payload, self.framer, self.answer = payload, framer, answer
        self.check_peer = check_peer
        self.verified = check_peer is None

    def connectionMade(self) -> None:
        if self.verified:
            self.transport.write(self.payload)

    def handshakeCompleted(self) -> None:
        if self.check_peer is None:
            return
        problem = self.check_peer(self.transport)
        if problem is not None:
            self._fail(ExchangeFailed(problem, connected=False))  # nothing was written to it
            self.transport.abortConnection()
            return
        self.verified = True
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        if self.answer.called:
            return
        try:
            frames = self.framer.feed(data)
        except AdapterError as e:
            self._fail(ExchangeFailed(f"answer frame: {e}"))
            self.transport.abortConnection()
            return
        if frames:
            self.answer.callback(frames[0])
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = ConnectionDone()) -> None:  # type: ignore[assignment]
        # Lost before the peer was verified (a refused handshake: a revoked or foreign
        # certificate): the request was never written, so the bank could not be reached.
        self._fail(ExchangeFailed(f"closed before an answer: {reason.getErrorMessage()[:200]}",
                                  connected=self.verified))

    def _fail(self, error: Exception) -> None:
        if not self.answer.called:
            self.answer.errback(error)


class _OneExchangeFactory(Factory):
    noisy = False

    def __init__(self, protocol: _OneExchange) -> None:
        self.protocol_instance = protocol

    def buildProtocol(self, addr: Any) -> _OneExchange:
        return self.protocol_instance


class StreamTransport:
    """A connection per request through ``endpoint`` (wrap it for TLS), bounded by ``timeout``.

    ``framer`` makes a fresh framer per connection (the adapter's); ``check_peer``, when
    given, is asked after the TLS handshake and returns why the peer is wrong, or None.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, framer: Callable[[], Any], clock: IReactorTime,
                 *, timeout: float, check_peer: Callable[[Any], str | None] | None = None) -> None:
        self.endpoint, self.framer, self.clock = endpoint, framer, clock
        self.timeout, self.check_peer = timeout, check_peer

    def request(self, payload: bytes) -> Deferred[bytes]:
        answer: Deferred[bytes] = Deferred()
        proto = _OneExchange(payload, self.framer(), answer, self.check_peer)
        connecting = self.endpoint.connect(_OneExchangeFactory(proto))

        def not_connected(f: Failure) -> None:
            if not answer.called:
                answer.errback(ExchangeFailed(f"no connection: {f.getErrorMessage()[:200]}",
                                              connected=False))

        connecting.addErrback(not_connected)

        def expire() -> None:
            if answer.called:
                return
            answer.errback(ExchangeFailed(f"no answer within {self.timeout:g} s"))
            connecting.cancel()
            if proto.transport is not None:
                proto.transport.abortConnection()

        timer = self.clock.callLater(self.timeout, expire)
        answer.addBoth(lambda r: (timer.cancel() if timer.active() else None, r)[1])
        return answer


# -- serials -------------------------------------------------------------------------


class Serials:
    """The link's own request serials in the deployed centre's form (bdc §6.2).

    5 node digits, YYMMDD, 9 digits.  Sign-on ends in ``999999999``; other requests count
    up from ``9`` followed by the hundredths of a second of the day when the process began
    or the day turned, so a restart later that day does not reuse a serial (instruction
    references use the low 9-digit range: their store row ids).
    """

    SIGN_ON = 999_999_999

    def __init__(self, node: str, today: Callable[[], _dt.datetime]) -> None:
        self.prefix = node[-5:]
        self.today = today
        self._day: _dt.date | None = None
        self._next = 0

    def _start(self, now: _dt.datetime) -> None:
        self._day = now.date()
        self._next = 900_000_000 + (now.hour * 3600 + now.minute * 60 + now.second) * 100 \
            + now.microsecond // 10_000

    def sign_on(self) -> str:
        return f"{self.prefix}{self.today():%y%m%d}{self.SIGN_ON}"

    def next(self) -> str:
        now = self.today()
        if now.date() != self._day:
            self._start(now)
        value, self._next = self._next, self._next + 1
        if value >= self.SIGN_ON:
            raise OverflowError("no serial left for today")
        return f"{self.prefix}{now:%y%m%d}{value:09d}"
