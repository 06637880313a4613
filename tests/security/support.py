"""Shared tools for the security tests: log capture, raw TCP/TLS probes and HTTPS calls with headers.

Every wait is bounded by ``TIMEOUT`` seconds unless a test gives its own.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from zope.interface import implementer

from gateway.logs import StructlogObserver
from gateway.tls import FixedCreatorPolicy, tls_client_endpoint

TIMEOUT = 10.0


# -- logs ------------------------------------------------------------------------


@dataclass
class Captured:
    """Log events seen while capturing: the raw event dicts and the rendered JSON lines."""

    events: list[dict[str, Any]] = field(default_factory=list)
    rendered: io.StringIO = field(default_factory=io.StringIO)

    def named(self, name: str) -> list[dict[str, Any]]:
        """Events whose name (the first word of the format) is ``name``."""
        return [e for e in self.events if (e.get("log_format") or "").split(" ", 1)[0] == name]

    def text(self) -> str:
        """Everything, as the daemon would write it (JSON lines) plus Twisted's own text of each event."""
        lines = [self.rendered.getvalue()]
        for event in self.events:
            try:
                lines.append(formatEvent(event))
            except Exception:  # a malformed format string: its fields are still in the JSON lines
                pass
            failure = event.get("log_failure")
            if failure is not None:
                lines.append(failure.getTraceback())
        return "\n".join(lines)


@contextmanager
def capture_logs() -> Iterator[Captured]:
    """Capture every twisted.logger event (debug included) while the block runs."""
    captured = Captured()
    renderer = StructlogObserver(captured.rendered, console=False, min_level=_lowest())

    def observe(event: dict[str, Any]) -> None:
        captured.events.append(event)
        renderer(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield captured
    finally:
        globalLogPublisher.removeObserver(observe)


def _lowest() -> Any:
    from twisted.logger import LogLevel

    return LogLevel.debug


# -- raw connections -----------------------------------------------------------------


@implementer(IHandshakeListener)
class Probe(Protocol):
    """Records what happens on one client connection: handshake, bytes received, the end and when."""

    def __init__(self) -> None:
        self.connected_at = 0.0
        self.handshake = False
        self.received = b""
        self.lost_at: float | None = None
        self.reason: Failure | None = None
        self.lost: Deferred[None] = Deferred()
        self.got_data: Deferred[None] = Deferred()

    def connectionMade(self) -> None:  # noqa: N802
        self.connected_at = reactor.seconds()

    def handshakeCompleted(self) -> None:  # noqa: N802
        self.handshake = True

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.received += data
        if not self.got_data.called:
            self.got_data.callback(None)

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: N802,B008
        self.lost_at = reactor.seconds()
        self.reason = reason
        self.lost.callback(None)

    @property
    def open(self) -> bool:
        return self.lost_at is None

    def close(self) -> None:
        if self.open and self.transport is not None:
            self.transport.abortConnection()  # type: ignore[union-attr]


async def connect_tcp(port: int) -> Probe:
    """A plain TCP connection to 127.0.0.1:port (no TLS: it will never say a word)."""
    probe = Probe()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    await endpoint.connect(Factory.forProtocol(lambda: probe)).addTimeout(TIMEOUT, reactor)
    return probe


async def connect_tls(port: int, creator: Any) -> Probe:
    """A TLS connection to 127.0.0.1:port with ``creator`` (e.g. ``client_options``)."""
    probe = Probe()
    endpoint = tls_client_endpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port), creator)
    await endpoint.connect(Factory.forProtocol(lambda: probe)).addTimeout(TIMEOUT, reactor)
    return probe


async def settle(probe: Probe, seconds: float) -> None:
    """Wait until the probe's connection ends or ``seconds`` pass, whichever is first."""
    waiter: Deferred[None] = Deferred()
    timer = reactor.callLater(seconds, lambda: waiter.callback(None) if not waiter.called else None)
    probe.lost.addBoth(lambda _: waiter.callback(None) if not waiter.called else None)
    await waiter
    if timer.active():
        timer.cancel()


def client_hello() -> bytes:
    """The bytes of a real TLS ClientHello (from an in-memory OpenSSL client)."""
    conn = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
    conn.set_connect_state()
    try:
        conn.do_handshake()
    except SSL.WantReadError:
        pass
    return conn.bio_read(65536)


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


# -- HTTPS -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, headers (lowercase names, first value) and the parsed body."""

    status: int
    headers: dict[str, str]
    body: Any


class Https:
    """An HTTPS client presenting ``cert``/``key`` (or nothing) and trusting ``ca``; one connection per call."""

    def __init__(self, cert: Path | None, key: Path | None, ca: Path) -> None:
        client_cert = None
        if cert is not None and key is not None:
            client_cert = PrivateCertificate.loadPEM(cert.read_bytes() + key.read_bytes())
        creator = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(ca.read_bytes()),
                                      clientCertificate=client_cert)
        self.agent = Agent(reactor, contextFactory=FixedCreatorPolicy(creator),
                           pool=HTTPConnectionPool(reactor, persistent=False), connectTimeout=5)

    async def call(self, method: str, url: str, body: Any = None, *, raw: bytes | None = None,
                   ctype: str = "application/json") -> Answer:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = Headers({b"content-type": [ctype.encode()]})
        producer = FileBodyProducer(io.BytesIO(data)) if data is not None else None
        d = self.agent.request(method.encode(), url.encode(), headers, producer)
        d.addTimeout(TIMEOUT, reactor)
        response = await d
        content = await readBody(response)
        try:
            parsed: Any = json.loads(content) if content else None
        except ValueError:
            parsed = content
        flat = {k.decode().lower(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
        return Answer(response.code, flat, parsed)


def counter(metrics: Any, kind: str) -> float:
    """The gateway's ``hpf_gateway_security_events_total{kind=...}`` now."""
    return float(metrics.security_events.labels(kind)._value.get())


def ledger_config(tmp: Path, pki: Any, *, limits: dict[str, Any] | None = None) -> Path:
    """A ledger config on loopback ports of its own, trusting the test gateway's signing key
    (``[limits]`` as given); the register is the integration harness's."""
    from cryptography.hazmat.primitives import serialization

    from gateway.config import render_toml
    from gateway.demo import CENTRE
    from tests.integration.harness import DEBIT_B001, PAYEE
    from tests.kit.config import ledger_data
    from tests.kit.ledger import GATEWAY_KEY

    pub = tmp / "gateway-signing.pub"
    pub.write_bytes(GATEWAY_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    data = ledger_data(tmp, pki, pub, account=DEBIT_B001, payee=PAYEE, centre=CENTRE,
                       **({"limits": limits} if limits else {}))
    path = tmp / "ledger.toml"
    path.write_text(render_toml(data), encoding="utf-8")
    return path
