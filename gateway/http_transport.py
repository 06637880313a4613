"""One HTTP POST per request to a bank's front-end: the hop the enterprise's side owns.

Banks' direct-connect front-ends (Bank of China's bocb2e servlet, ICBC's NC) run on the
enterprise's own network; the front-end holds the bank's certificate and talks to the bank
itself.  The gateway's hop to it is plain HTTP on the same host or a named local address, or
TLS where the front-end offers it.  :func:`check_front_end_url` is the guard: a URL whose host
is neither loopback nor one of the addresses named in config is refused at config time, so a
front-end URL can never point the gateway's plain-HTTP traffic across a wider network.

:class:`HttpTransport` has exactly the interface a request/answer link drives:
``request(payload) -> Deferred[bytes]``, the answer body, with a timeout and a bound on the
answer's size.  A failure is a :class:`TransportError` that says whether the request was
certainly not delivered (``delivered is False``: nothing reached the front-end, safe to send
again) or may have been (``None``: the caller asks the bank before any resend).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import error as terror
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS, IResponse
from zope.interface import implementer

__all__ = ["TransportError", "check_front_end_url", "check_local_host", "HttpTransport", "NcTransport"]

_NOT_DELIVERED = (terror.ConnectionRefusedError, terror.DNSLookupError, terror.NoRouteError,
                  terror.ConnectError)


class TransportError(Exception):
    """A request that got no usable answer.  ``delivered``: False when it certainly never
    reached the front-end, None when it may have."""

    def __init__(self, reason: str, delivered: bool | None) -> None:
        super().__init__(reason)
        self.delivered = delivered


def check_front_end_url(url: str, local_addresses: Iterable[str] = (),
                        schemes: tuple[str, ...] = ("http", "https")) -> str:
    """``url`` if it may be dialled, else ``ValueError`` saying why (see the module docstring).

    Accepted: one of ``schemes`` (``http://`` or ``https://``; ``tcp://HOST:PORT`` for a
    front-end spoken to over plain TCP, CCB's), a host that is a loopback address
    (127.0.0.0/8, ::1, ``localhost``) or exactly one of ``local_addresses``, no user info,
    no fragment.
    """
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise ValueError(f"front-end URL must be {' or '.join(s + '://' for s in schemes)}, "
                         f"not {parts.scheme!r}")
    if parts.scheme == "tcp" and (parts.port is None or parts.path not in ("", "/") or parts.query):
        raise ValueError("front-end URL tcp://HOST:PORT takes a port and nothing after it")
    if parts.username is not None or parts.password is not None:
        raise ValueError("front-end URL must not carry user info")
    if parts.fragment:
        raise ValueError("front-end URL must not carry a fragment")
    host = parts.hostname or ""
    try:
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        raise ValueError("front-end URL has a bad port") from None
    check_local_host(host, local_addresses, "front-end")
    return url


def check_local_host(host: str, local_addresses: Iterable[str] = (), what: str = "front-end") -> str:
    """``host`` if it is loopback (127.0.0.0/8, ::1, ``localhost``) or exactly one of
    ``local_addresses``, else ``ValueError`` naming ``what`` runs there."""
    if host == "localhost" or host in set(local_addresses):
        return host
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise ValueError(f"{what} host {host!r} is neither loopback nor a named local address "
                     f"(the {what} runs on the gateway's own network: name its address in "
                     "local_addresses)")


class _Collect(Protocol):
    """Collects an answer body up to ``limit`` bytes; more aborts the connection."""

    def __init__(self, done: Deferred[bytes], limit: int) -> None:
        self._done, self._limit = done, limit
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self._done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._done.errback(TransportError(f"answer exceeds {self._limit} bytes", None))
            self.transport.abortConnection()
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._done.called:
            return
        if reason.check(ResponseDone):
            self._done.callback(b"".join(self._parts))
        else:
            self._done.errback(TransportError(f"answer cut short: {reason.getErrorMessage()}", None))


def _discard() -> _Collect:
    """A body reader that drops the connection at its first byte, its error observed."""
    ignored: Deferred[bytes] = Deferred()
    ignored.addErrback(lambda _: None)
    return _Collect(ignored, 0)


class HttpTransport:
    """POSTs each payload to one front-end URL (see the module docstring)."""

    def __init__(self, reactor: Any, url: str, *, local_addresses: Iterable[str] = (),
                 content_type: bytes = b"text/plain; charset=GB18030", timeout: float = 25.0,
                 max_answer: int = 4 * 1024 * 1024,
                 tls_policy: IPolicyForHTTPS | None = None,
                 query: Callable[[bytes], str] | None = None, keep_alive: int = 0) -> None:
        if query is not None and "?" in url:
            raise ValueError("front-end URL: a query is added per request; give the URL without one")
        self._url = check_front_end_url(url, local_addresses).encode("ascii")
        self._query = query
        self._reactor: IReactorTime = reactor
        self._timeout = timeout
        self._max = max_answer
        self._headers = Headers({b"content-type": [content_type]})
        agent_args: dict[str, Any] = {"connectTimeout": timeout}
        if tls_policy is not None:
            agent_args["contextFactory"] = tls_policy
        if keep_alive > 0:  # up to that many idle connections kept for the next requests
            pool = HTTPConnectionPool(reactor, persistent=True)
            pool.maxPersistentPerHost = keep_alive
            agent_args["pool"] = pool
        self._agent = Agent(reactor, **agent_args)

    def request(self, payload: bytes) -> Deferred[bytes]:
        """The front-end's answer body to ``payload``; :class:`TransportError` on failure."""
        result: Deferred[bytes] = Deferred()
        url = self._url
        if self._query is not None:  # a front-end that wants the package named in the URL (ICBC NC)
            url += b"?" + self._query(payload).encode("ascii")
        d = self._agent.request(b"POST", url, self._headers, _Payload(payload))
        reading: list[_Collect] = []
        timer = self._reactor.callLater(self._timeout, self._expire, d, result, reading)

        def answered(response: IResponse) -> None:
            if result.called:
                return
            if response.code != 200:
                result.errback(TransportError(f"front-end answered HTTP {response.code}", None))
                response.deliverBody(_discard())
                return
            declared = response.length
            if isinstance(declared, int) and declared > self._max:
                result.errback(TransportError(f"answer of {declared} bytes exceeds {self._max}", None))
                response.deliverBody(_discard())
                return
            reading.append(_Collect(result, self._max))
            response.deliverBody(reading[0])

        def failed(f: Failure) -> None:
            if result.called:
                return
            inner = f.value.reasons[0] if isinstance(f.value, ResponseNeverReceived) and \
                f.value.reasons else f
            if inner.check(*_NOT_DELIVERED):
                result.errback(TransportError(f"not delivered: {inner.getErrorMessage()}", False))
            else:
                result.errback(TransportError(f"no answer: {inner.getErrorMessage()}", None))

        d.addCallbacks(answered, failed)

        def stop_timer(value: Any) -> Any:
            if timer.active():
                timer.cancel()
            return value

        result.addBoth(stop_timer)
        return result

    def _expire(self, pending: Deferred[Any], result: Deferred[bytes], reading: list[_Collect]) -> None:
        if not result.called:
            result.errback(TransportError(f"no answer within {self._timeout} s", None))
        pending.cancel()
        for collector in reading:  # a body still trickling in is cut off too
            if collector.transport is not None:
                collector.transport.abortConnection()


@implementer(IBodyProducer)
class _Payload:
    """The request body, already in memory, written in one go."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class NcTransport:
    """ICBC's NC behind the same ``request(document) -> Deferred[document]`` interface.

    The payload is a CMS request document (what the icbc adapter encodes); NC wants it in a
    form, PAYENT packages signed first by its signing port.  So: a PAYENT document goes to
    ``signing`` and what NC returns between ``<sign>`` tags becomes ``reqData``; a query goes
    as it is; the form is posted through ``trading`` (whose ``query`` names the package in
    the URL).  NC's ``reqData=<base64>`` answer gives back the document as NC sent it; an
    ``errorCode=NNNNN`` answer is a :class:`TransportError` that may have been delivered, so
    a transfer that meets one stays in doubt.  A signing failure was never delivered.
    """

    def __init__(self, trading: HttpTransport, signing: HttpTransport) -> None:
        self.trading, self.signing = trading, signing

    def request(self, payload: bytes) -> Deferred[bytes]:
        from adapters.base import AdapterError
        from adapters.icbc import codec as nc

        try:
            doc = nc.read_document(payload)
        except AdapterError as e:
            return fail(TransportError(f"not a CMS request: {e}", False))

        def post(req_data: str) -> Deferred[bytes]:
            return self.trading.request(nc.form_body(doc.pub, req_data))

        def signed(answer: bytes) -> str:
            try:
                return nc.read_signature(answer)
            except AdapterError as e:
                raise TransportError(f"NC signing port: {e}", False) from None

        def never_sent(f: Failure) -> Failure:
            if f.check(TransportError) and f.value.delivered is not False:
                # The signing port has the package, but the bank has nothing yet.
                return Failure(TransportError(f"NC signing port: {f.getErrorMessage()}", False))
            return f

        def unwrap(body: bytes) -> bytes:
            try:
                inner = nc.nc_answer_document(body)
            except AdapterError as e:
                raise TransportError(f"NC answer: {e}", None) from None
            if isinstance(inner, str):
                raise TransportError(f"NC answered errorCode={inner}", None)
            return inner

        if doc.pub.TransCode == "PAYENT":
            d = self.signing.request(nc.sign_request(payload))
            d.addCallback(signed)
            d.addErrback(never_sent)
            d.addCallback(post)
        else:
            try:
                d = post(payload.decode(nc.ENCODING))
            except (UnicodeDecodeError, AdapterError) as e:
                return fail(TransportError(f"not a GBK CMS request: {e}", False))
        d.addCallback(unwrap)
        return d
