"""The HTTP layer every listener of both daemons shares: problems, strict JSON, one resource base, guarded sites.

- :class:`Problem` (RFC 9457 answers), :func:`strict_json` and :func:`json_body`
  (strict request bodies), :func:`send` (one way to write an answer).
- :class:`JsonApi`: a leaf resource that runs an async ``handle`` per
  request and turns every failure into a problem answer.
- :func:`guarded_site`: a :class:`Site` with bounded bodies and an idle
  timeout, inside a :class:`ConnectionGuard` that bounds the TLS handshake
  and each request in time and caps connections per source address (before
  any TLS work) and per certificate identity.  Every listener of the gateway
  and of the ledger is built with it, so all get the same guards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from gateway.model import FieldError, compact_json
from gateway.store.db import StoreUnavailable
from gateway.tls import PeerIdentity, is_tls_error, peer_identity

__all__ = ["MAX_BODY", "IDLE_TIMEOUT", "Problem", "strict_json", "json_body", "json_text", "JsonText", "Csv",
           "send", "JsonApi", "TextCheck", "ConnectionLimits", "ConnectionGuard", "GuardedConnection", "LimitedRequest",
           "make_site", "guarded_site", "peer_ip"]

log = Logger()

MAX_BODY = 4 * 1024 * 1024
IDLE_TIMEOUT = 75.0
_PROBLEM_TYPE = "urn:hpf-gateway:problem:"


# -- answers ----------------------------------------------------------------------------------


@dataclass(eq=False)
class Problem(Exception):
    """An RFC 9457 problem answer: status, a slug for ``type``, and the bad fields."""

    status: int
    slug: str
    title: str
    detail: str = ""
    errors: tuple[FieldError, ...] = ()
    retry_after: int | None = None  # seconds, sent as Retry-After (429, 503)
    allow: tuple[str, ...] = ()  # the methods the resource does allow, sent as Allow (405)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": _PROBLEM_TYPE + self.slug, "title": self.title,
                               "status": self.status}
        if self.detail:
            out["detail"] = self.detail
        if self.errors:
            out["errors"] = [{"field": e.field, "reason": e.reason} for e in self.errors]
        return out


class JsonText(str):
    """An answer already rendered as JSON text: sent as it is, never serialised again."""


@dataclass(frozen=True)
class Csv:
    """A CSV answer body."""

    text: str


def json_text(value: Any) -> str:
    """``value`` as the compact JSON text every answer uses."""
    return compact_json(value)


def send(request: Any, status: int, body: Any) -> None:
    """Write the whole answer: a problem, JSON (a value, :class:`JsonText` or bytes) or :class:`Csv`; never cached."""
    request.setResponseCode(status)
    if isinstance(body, Problem):
        request.setHeader(b"content-type", b"application/problem+json")
        if body.retry_after is not None:
            request.setHeader(b"retry-after", str(body.retry_after).encode("ascii"))
        elif status == 503:
            request.setHeader(b"retry-after", b"1")
        if body.allow:
            request.setHeader(b"allow", ", ".join(body.allow).encode("ascii"))
        payload = json.dumps(body.to_json(), ensure_ascii=False).encode("utf-8")
    elif isinstance(body, JsonText):
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        payload = body.encode("utf-8")
    elif isinstance(body, bytes):
        request.setHeader(b"content-type", b"application/json")
        payload = body
    elif isinstance(body, Csv):
        request.setHeader(b"content-type", b"text/csv; charset=utf-8")
        payload = body.text.encode("utf-8")
    else:
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        payload = json_text(body).encode("utf-8")
    request.setHeader(b"cache-control", b"no-store")
    request.write(payload)
    request.finish()


# -- strict request bodies ---------------------------------------------------------------------


def _unique_pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(items)  # built in C; a key given twice leaves it shorter than the pairs
    if len(out) != len(items):
        seen: set[str] = set()
        for k, _ in items:
            if k in seen:
                raise ValueError(f"duplicate key {k!r}")
            seen.add(k)
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# One decoder for every call: json.loads with hooks builds a new one each time, which cost
# more than parsing a small document (the ledger parses every copy's payload with it).
_STRICT = json.JSONDecoder(object_pairs_hook=_unique_pairs, parse_constant=_no_constant, parse_float=Decimal)


def strict_json(data: bytes) -> Any:
    """Parse a request body, refusing what lenient parsers let through.

    Duplicate keys, NaN/Infinity, invalid UTF-8 and absurd nesting are errors;
    numbers with a fraction are kept exact (Decimal), never floats.
    """
    try:
        return _STRICT.decode(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise Problem(400, "invalid-json", "The body is not UTF-8") from None
    except RecursionError:
        raise Problem(400, "invalid-json", "The body nests too deeply") from None
    except ValueError as e:
        raise Problem(400, "invalid-json", "The body is not valid JSON", str(e)[:200]) from None


def json_body(request: Any) -> Any:
    """The request's JSON body, strictly parsed; 413 past MAX_BODY, 415 unless application/json."""
    if request.too_large:
        raise Problem(413, "too-large", f"The body is larger than {MAX_BODY} bytes")
    ctype = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if ctype != b"application/json":
        raise Problem(415, "unsupported-media-type", "Send application/json")
    request.content.seek(0)
    return strict_json(request.content.read())


def peer_ip(request: Any) -> str:
    """The source address of a request ("?" when it has none)."""
    try:
        peer = request.getClientAddress()
    except Exception:  # a test double without an address
        return "?"
    return str(getattr(peer, "host", peer))


# -- the resource base ----------------------------------------------------------------------------


class JsonApi(Resource):
    """One leaf resource per listener: ``handle`` answers, every failure becomes a problem.

    Subclasses set ``listener`` (for logs) and implement ``handle(request,
    identity, method, path) -> (route, status, body)``, setting
    ``request.hpf_route`` once the route is known so a failure is counted
    under it; ``counted(route, status)`` sees every answer;
    ``unavailable(exc)`` may map a domain exception to a problem (else it is
    a 500, logged).
    """

    isLeaf = True
    listener = ""
    log_prefix = "api"
    failure_title = "The server failed to answer; retry later"

    def render(self, request: Request) -> Any:
        d = Deferred.fromCoroutine(self._dispatch(request))
        d.addErrback(lambda f: log.failure("{prefix}.unhandled", f, prefix=self.log_prefix))
        return NOT_DONE_YET

    async def _dispatch(self, request: Any) -> None:
        route = "unknown"
        body: Any
        request.hpf_route = route
        try:
            identity = request.hpf_identity = self.identity(request)
            path = request.path.decode("ascii", "replace")
            method = request.method.decode("ascii", "replace")
            route, status, body = await self.handle(request, identity, method, path)
        except Problem as p:
            route, status, body = request.hpf_route, p.status, p
        except StoreUnavailable as e:
            route = request.hpf_route
            log.warn(f"{self.log_prefix}.store_unavailable", listener=self.listener, error=str(e))
            status, body = 503, Problem(503, "unavailable", "The store cannot take writes now; retry",
                                        str(e)[:200])
        except Exception as e:
            route = request.hpf_route
            mapped = self.unavailable(e)
            if mapped is None:
                # A bug must still answer (and free the connection), never leave the client hanging.
                log.failure(f"{self.log_prefix}.failed", listener=self.listener, route=route)
                mapped = Problem(500, "internal-error", self.failure_title)
            status, body = mapped.status, mapped
        if request.finished or getattr(request, "_disconnected", False) or request.channel is None:
            return
        self.counted(route, status)
        send(request, status, body)

    def identity(self, request: Any) -> PeerIdentity | None:
        """The peer's bound identity; ``None`` without one (no certificate, or none naming a party)."""
        try:
            return peer_identity(request.transport)
        except ValueError:  # a certificate from a trusted CA that names no hpf:// identity
            return None

    async def handle(self, request: Any, identity: PeerIdentity | None, method: str,
                     path: str) -> tuple[str, int, Any]:
        raise NotImplementedError

    def counted(self, route: str, status: int) -> None:
        """Count one answer (metrics); nothing by default."""

    def unavailable(self, error: Exception) -> Problem | None:
        """The problem for a domain exception other than a store outage, or None for a 500."""
        return None


class TextCheck(Resource):
    """A plain-text health or readiness answer: 200 when the check passes, 503 when not."""

    isLeaf = True

    def __init__(self, check: Callable[[], tuple[bool, str]]) -> None:
        super().__init__()
        self._check = check

    def render_GET(self, request: Any) -> bytes:  # noqa: N802
        ok, text = self._check()
        request.setResponseCode(200 if ok else 503)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return text.encode() + b"\n"


# -- sites and connection guards ------------------------------------------------------------------


class LimitedRequest(Request):
    """A request whose body is bounded: past MAX_BODY the rest is discarded and 413 answered."""

    too_large = False
    _received = 0

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802
        # Tell a ConnectionGuard (the channel's transport, when there is one) that
        # the whole request is in, so its deadline no longer applies.
        hook = getattr(getattr(self.channel, "transport", None), "hpf_request_received", None)
        if hook is not None:
            hook(self)
        super().requestReceived(command, path, version)

    def gotLength(self, length: int | None) -> None:  # noqa: N802
        if length is not None and length > MAX_BODY:
            self.too_large = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802
        self._received += len(data)
        if self._received > MAX_BODY:
            self.too_large = True
            return
        if not self.too_large:
            super().handleContentChunk(data)


class _LoggedSite(Site):
    """A Site whose access log is one structured event per request, on the wall clock.

    Twisted's own access line is Combined Log Format text dated by ``reactor.seconds()``,
    which the daemons run on the monotonic clock (``gateway.daemon.monotonic_timers``): every
    line was dated in January 1970.  ``http.request`` carries the same facts as fields
    (its time is the event's own ``timestamp``), so a log shipper reads them without a
    parser, and the renderer masks the URI's account numbers as in every other event.
    """

    def log(self, request: Request) -> None:
        identity = getattr(request, "hpf_identity", None)
        log.info("http.request", method=request.method.decode("ascii", "replace"),
                 uri=request.uri.decode("ascii", "replace")[:300], status=request.code,
                 bytes=request.sentLength, ip=peer_ip(request),
                 peer=identity.uri if identity is not None else None,
                 route=getattr(request, "hpf_route", None),
                 agent=(request.getHeader(b"user-agent") or b"").decode("ascii", "replace")[:120] or None)


def make_site(resource: IResource, *, idle_timeout: float = IDLE_TIMEOUT) -> Site:
    """An HTTP site with bounded request bodies and an idle timeout.

    A connection with no request in progress and nothing received for
    ``idle_timeout`` seconds (including one that never finishes its TLS
    handshake) is closed, and aborted 15 s later if it does not go; a request
    being answered (a long poll) does not count as idle.
    """
    # parsePOSTFormSubmission=False: the APIs speak JSON only, so Twisted need not parse every
    # POST's Content-Type through the email package (a tenth of a millisecond per request)
    # or take multipart bodies apart.
    site = _LoggedSite(resource, requestFactory=LimitedRequest, timeout=idle_timeout,
                       parsePOSTFormSubmission=False)
    site.displayTracebacks = False
    site.noisy = False
    return site


@dataclass(frozen=True)
class ConnectionLimits:
    """What a :class:`ConnectionGuard` enforces on each new connection (all > 0)."""

    connections_per_ip: int = 1024
    connections_per_peer: int = 256
    handshake_timeout: float = 10.0
    request_timeout: float = 60.0
    idle_timeout: float = IDLE_TIMEOUT


def _short(failure: Failure) -> str:
    return str(failure.value)[:300]


@implementer(IHandshakeListener)
class GuardedConnection(ProtocolWrapper):
    """One connection between TLS (outside) and HTTP (inside); see :class:`ConnectionGuard`."""

    factory: "ConnectionGuard"

    def __init__(self, factory: "ConnectionGuard", wrapped: Any) -> None:
        super().__init__(factory, wrapped)
        self.ip = "?"
        self.identity: PeerIdentity | None = None
        self.handshake_done = False
        self.refused = False
        self._counted_ip = False
        self._counted_peer: str | None = None
        self._handshake_timer: IDelayedCall | None = None
        self._request_timer: IDelayedCall | None = None
        self._busy = 0

    # -- connection ------------------------------------------------------------------

    def makeConnection(self, transport: Any) -> None:  # noqa: N802
        super().makeConnection(transport)
        guard, limits = self.factory, self.factory.limits()
        peer = transport.getPeer()
        self.ip = str(getattr(peer, "host", peer))
        if guard.per_ip.get(self.ip, 0) >= limits.connections_per_ip:
            self._refuse("connection_limit", "connection_limit", ip=self.ip,
                         limit=limits.connections_per_ip, per="source address")
            return
        guard.per_ip[self.ip] = guard.per_ip.get(self.ip, 0) + 1
        self._counted_ip = True
        if guard.tls:
            self._handshake_timer = guard.clock.callLater(limits.handshake_timeout, self._handshake_late)
        else:
            self.handshake_done = True
        if guard.requests:
            self._start_request_timer()

    def handshakeCompleted(self) -> None:  # noqa: N802 (Twisted interface)
        self.handshake_done = True
        self._cancel("_handshake_timer")
        try:
            self.identity = peer_identity(self.transport)
        except ValueError:  # a trusted certificate without an hpf:// identity: refused per request
            self.identity = None
        if self.identity is not None:
            guard, limit = self.factory, self.factory.limits().connections_per_peer
            key = self.identity.uri
            if guard.per_peer.get(key, 0) >= limit:
                self._refuse("connection_limit", "connection_limit", ip=self.ip, peer=key,
                             limit=limit, per="certificate identity")
                return
            guard.per_peer[key] = guard.per_peer.get(key, 0) + 1
            self._counted_peer = key
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._request_timer is None and self._busy == 0 and self.factory.requests:
            self._start_request_timer()
        super().dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]  # noqa: N802
        self._cancel("_handshake_timer")
        self._cancel("_request_timer")
        guard = self.factory
        if self._counted_ip:
            left = guard.per_ip.get(self.ip, 1) - 1
            if left > 0:
                guard.per_ip[self.ip] = left
            else:
                guard.per_ip.pop(self.ip, None)
        if self._counted_peer is not None:
            left = guard.per_peer.get(self._counted_peer, 1) - 1
            if left > 0:
                guard.per_peer[self._counted_peer] = left
            else:
                guard.per_peer.pop(self._counted_peer, None)
        if not self.handshake_done and not self.refused and is_tls_error(reason):
            guard.report("tls_refused", "tls.handshake_refused", listener=guard.listener,
                         ip=self.ip, reason=_short(reason))
        super().connectionLost(reason)

    # -- the HTTP side's hooks ---------------------------------------------------------

    def hpf_request_received(self, request: Request) -> None:
        """A whole request arrived (called by :class:`LimitedRequest`): its deadline is met."""
        self._cancel("_request_timer")
        self._busy += 1
        request.notifyFinish().addBoth(self._request_done)

    def _request_done(self, _: Any) -> None:
        self._busy -= 1

    # -- timers ---------------------------------------------------------------------------

    def _start_request_timer(self) -> None:
        self._request_timer = self.factory.clock.callLater(
            self.factory.limits().request_timeout, self._request_late)

    def _handshake_late(self) -> None:
        self._handshake_timer = None
        if not self.handshake_done:
            self._refuse("handshake_timeout", "handshake_timeout", ip=self.ip,
                         after_s=self.factory.limits().handshake_timeout)

    def _request_late(self) -> None:
        self._request_timer = None
        if self._busy == 0:
            self._refuse("request_timeout", "request_timeout", ip=self.ip,
                         peer=self.identity.uri if self.identity else None,
                         after_s=self.factory.limits().request_timeout)

    def _cancel(self, name: str) -> None:
        timer = getattr(self, name)
        if timer is not None and timer.active():
            timer.cancel()
        setattr(self, name, None)

    def _refuse(self, kind: str, event: str, **fields: Any) -> None:
        self.refused = True
        guard = self.factory
        guard.report(kind, f"{guard.listener}.{event}", listener=guard.listener, **fields)
        self.transport.abortConnection()


class ConnectionGuard(WrappingFactory):
    """Wraps a listener's HTTP site (inside TLS when ``tls``): timeouts, connection caps, handshake reports.

    - A connection must complete its TLS handshake within
      ``handshake_timeout`` seconds and deliver each whole request within
      ``request_timeout`` (from connecting, or from the first byte after the
      previous request): a client that sends nothing, or dribbles a
      ClientHello or headers, is dropped.
    - At most ``connections_per_ip`` connections per source address
      (checked before any TLS work) and ``connections_per_peer`` per
      certificate identity (after the handshake) are open at once.
    - A handshake that fails on a TLS error (bad, revoked or expired
      certificate, no certificate, old protocol, garbage) is reported as
      ``tls.handshake_refused`` with the source address.

    Every refusal goes to ``report(kind, event, **fields)`` (count and log).
    ``limits`` is called for every new connection, so a reload applies to new
    connections at once.
    """

    protocol = GuardedConnection  # type: ignore[assignment]
    noisy = False

    def __init__(self, site: Any, limits: Callable[[], ConnectionLimits], clock: IReactorTime,
                 report: Callable[..., None], *, listener: str, tls: bool = True,
                 requests: bool = True) -> None:
        super().__init__(site)
        self.limits = limits
        self.clock = clock
        self.report = report
        self.listener = listener
        self.tls = tls
        # False for a listener that is not HTTP (a bank link): its own protocol watches the
        # line once it is up, so only the address cap and the handshake deadline apply.
        self.requests = requests
        self.per_ip: dict[str, int] = {}
        self.per_peer: dict[str, int] = {}


def guarded_site(resource: IResource, limits: Callable[[], ConnectionLimits], clock: IReactorTime,
                 report: Callable[..., None], *, listener: str, tls: bool = True) -> ConnectionGuard:
    """A listener's whole HTTP stack: :func:`make_site` inside a :class:`ConnectionGuard`.

    Wrap the result in :func:`gateway.tls.tls_server_factory` for a TLS
    listener; ``tls=False`` for a plain one (ops on loopback), which has no
    handshake to wait for.  The site is ``guard.wrappedFactory``.
    """
    site = make_site(resource, idle_timeout=limits().idle_timeout)
    return ConnectionGuard(site, limits, clock, report, listener=listener, tls=tls)
