"""gateway.tls over real loopback sockets with real certificates.

A server made with ``server_options`` + ``tls_server_factory`` listens on
127.0.0.1:0 and echoes; it records, on each completed handshake, the peer's
identity and what the live connection negotiated.  Clients are either
``client_options`` (our own policy) or raw pyOpenSSL contexts that do what a
misconfigured or hostile peer would do.  A refusal is asserted from the
server's side: no handshake completed and the connection ended in an
``SSL.Error``; each refusal test has an acceptance counterpart, so the test
would fail if the server accepted everything or nothing.

Every wait is bounded by ``TIMEOUT`` seconds.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from OpenSSL import SSL, crypto
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import (
    IHandshakeListener,
    IListeningPort,
    IOpenSSLClientConnectionCreator,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from gateway.pki import DevPki, issue, write_crl
from gateway.tls import (
    FixedCreatorPolicy,
    InsecureKeyError,
    PeerIdentity,
    ReloadableOptions,
    client_options,
    peer_identity,
    server_options,
    tls_client_endpoint,
    tls_server_factory,
)

TIMEOUT = 5.0


# -- the echo server ------------------------------------------------------------


@dataclass(frozen=True)
class Handshake:
    """What the server saw on one completed handshake."""

    identity: PeerIdentity | None
    version: str
    cipher: str | None
    options: int


class RecordingFactory(Factory):
    """Makes echo protocols and records handshakes and connection ends."""

    def __init__(self) -> None:
        self.handshakes: list[Handshake] = []
        self.lost: list[Failure] = []
        self._lost_waiters: list[tuple[int, Deferred[None]]] = []

    def buildProtocol(self, addr: Any) -> EchoServer:  # noqa: N802
        protocol = EchoServer()
        protocol.factory = self
        return protocol

    def connection_lost(self, reason: Failure) -> None:
        self.lost.append(reason)
        for count, waiter in list(self._lost_waiters):
            if len(self.lost) >= count:
                self._lost_waiters.remove((count, waiter))
                waiter.callback(None)

    def wait_lost(self, count: int) -> Deferred[None]:
        """Fires once ``count`` server-side connections have ended."""
        waiter: Deferred[None] = Deferred()
        if len(self.lost) >= count:
            waiter.callback(None)
        else:
            self._lost_waiters.append((count, waiter))
        return waiter.addTimeout(TIMEOUT, reactor)


@implementer(IHandshakeListener)
class EchoServer(Protocol):
    """Echoes; on handshake records the peer identity and the live TLS state."""

    factory: RecordingFactory

    def handshakeCompleted(self) -> None:  # noqa: N802
        connection: SSL.Connection = self.transport.getHandle()  # type: ignore[union-attr]
        self.factory.handshakes.append(
            Handshake(
                identity=peer_identity(self.transport),
                version=connection.get_protocol_version_name(),
                cipher=connection.get_cipher_name(),
                # set_options(0) changes nothing and returns the options this
                # very connection runs with.
                options=connection.set_options(0),
            )
        )

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: N802,B008
        self.factory.connection_lost(reason)


@pytest_twisted.async_yield_fixture
async def listen() -> AsyncIterator[Callable[[Any], tuple[int, RecordingFactory]]]:
    """``listen(options)`` starts an echo server on 127.0.0.1:0 -> (port, factory)."""
    ports: list[IListeningPort] = []

    def start(options: Any) -> tuple[int, RecordingFactory]:
        factory = RecordingFactory()
        port = reactor.listenTCP(  # type: ignore[attr-defined]
            0, tls_server_factory(factory, options), interface="127.0.0.1"
        )
        ports.append(port)
        return port.getHost().port, factory

    yield start
    for port in ports:
        await port.stopListening()


# -- clients -------------------------------------------------------------------


@implementer(IHandshakeListener)
class PingClient(Protocol):
    """Sends ``ping`` on demand and waits for the echo."""

    def __init__(self) -> None:
        self.identity: PeerIdentity | None = None
        #: Fires (with None) when the connection ends; ``reason`` says why.
        self.lost: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self._buffer = b""
        self._waiting: Deferred[None] | None = None

    def handshakeCompleted(self) -> None:  # noqa: N802
        self.identity = peer_identity(self.transport)

    def ping(self) -> Deferred[None]:
        self._waiting = Deferred()
        self.transport.write(b"ping")  # type: ignore[union-attr]
        return self._waiting.addTimeout(TIMEOUT, reactor)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self._buffer += data
        if self._buffer == b"ping" and self._waiting is not None:
            self._buffer = b""
            waiting, self._waiting = self._waiting, None
            waiting.callback(None)

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: N802,B008
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.errback(reason)
        self.reason = reason
        self.lost.callback(None)


@dataclass
class Attempt:
    """How one client connection went, from the client's side."""

    echoed: bool
    server_identity: PeerIdentity | None
    failure: Failure | None = None
    client: PingClient = field(default_factory=PingClient)


@implementer(IOpenSSLClientConnectionCreator)
class RawClientTLS:
    """A client connection creator straight from a pyOpenSSL context."""

    def __init__(self, context: SSL.Context) -> None:
        self._context = context

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N802,N803
        return SSL.Connection(self._context, None)


def raw_context(
    cert: Path | None = None,
    key: Path | None = None,
    *,
    min_version: int | None = None,
    max_version: int | None = None,
    ciphers: bytes | None = None,
) -> SSL.Context:
    """A client context that does not verify the server: these clients exist
    to probe what the server refuses."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_verify(SSL.VERIFY_NONE)
    if cert is not None and key is not None:
        context.use_certificate(x509.load_pem_x509_certificate(cert.read_bytes()))
        context.use_privatekey(
            serialization.load_pem_private_key(key.read_bytes(), password=None)  # type: ignore[arg-type]
        )
    if min_version is not None:
        context.set_min_proto_version(min_version)
    if max_version is not None:
        context.set_max_proto_version(max_version)
    if ciphers is not None:
        context.set_cipher_list(ciphers)
    return context


async def attempt(port: int, creator: Any, *, close: bool = True) -> Attempt:
    """Connect over TLS to 127.0.0.1:port and try one echo."""
    client = PingClient()
    endpoint = tls_client_endpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port), creator)
    connecting = endpoint.connect(Factory.forProtocol(lambda: client))
    await connecting.addTimeout(TIMEOUT, reactor)
    try:
        await client.ping()
    except Exception:
        await client.lost.addTimeout(TIMEOUT, reactor)
        return Attempt(False, client.identity, client.reason, client)
    if close:
        client.transport.loseConnection()  # type: ignore[union-attr]
        await client.lost.addTimeout(TIMEOUT, reactor)
    return Attempt(True, client.identity, None, client)


def client_for(pki: DevPki, role: str, name: str, trust: Path | None = None) -> Any:
    return client_options(pki.cert(role, name), pki.key(role, name), [trust or pki.ca_cert])


def gateway_server(pki: DevPki, *trust: Path, crls: tuple[Path, ...] = ()) -> Any:
    return server_options(
        pki.cert("gateway", "main"),
        pki.key("gateway", "main"),
        list(trust) or [pki.ca_cert],
        crls=crls,
    )


async def assert_refused_by_server(
    outcome: Attempt, server: RecordingFactory, reason: str
) -> None:
    """The echo never happened, the server completed no handshake, and its
    side of the connection ended in a TLS error mentioning ``reason``."""
    assert not outcome.echoed
    await server.wait_lost(1)
    assert server.handshakes == []
    assert len(server.lost) == 1
    assert server.lost[0].check(SSL.Error), server.lost[0]
    assert reason in str(server.lost[0].value), server.lost[0].value


def fingerprint(path: Path) -> str:
    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA256()).hex()


# -- accepted ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_dev_centre_is_identified_by_the_server_and_sees_the_gateway(
    dev_pki: DevPki, listen: Any
) -> None:
    port, server = listen(gateway_server(dev_pki))
    outcome = await attempt(port, client_for(dev_pki, "centre", "C52240"))
    assert outcome.echoed, outcome.failure
    assert [h.identity for h in server.handshakes] == [
        PeerIdentity(
            role="centre",
            name="C52240",
            uri="hpf://centre/C52240",
            fingerprint=fingerprint(dev_pki.cert("centre", "C52240")),
        )
    ]
    assert outcome.server_identity == PeerIdentity(
        role="gateway",
        name="main",
        uri="hpf://gateway/main",
        fingerprint=fingerprint(dev_pki.cert("gateway", "main")),
    )
    assert server.handshakes[0].version == "TLSv1.3"


@pytest_twisted.ensureDeferred
async def test_live_connection_has_no_renegotiation_compression_or_old_versions(
    dev_pki: DevPki, listen: Any
) -> None:
    port, server = listen(gateway_server(dev_pki))
    outcome = await attempt(port, client_for(dev_pki, "bank", "B001"))
    assert outcome.echoed, outcome.failure
    options = server.handshakes[0].options
    for flag in ("OP_NO_RENEGOTIATION", "OP_NO_COMPRESSION", "OP_NO_TLSv1", "OP_NO_TLSv1_1"):
        assert options & getattr(SSL, flag), flag


@pytest_twisted.ensureDeferred
async def test_tls_1_2_client_with_an_ecdhe_aead_suite_is_accepted(
    dev_pki: DevPki, listen: Any
) -> None:
    port, server = listen(gateway_server(dev_pki))
    context = raw_context(
        dev_pki.cert("centre", "C11000"),
        dev_pki.key("centre", "C11000"),
        max_version=SSL.TLS1_2_VERSION,
        ciphers=b"ECDHE-ECDSA-CHACHA20-POLY1305",
    )
    outcome = await attempt(port, RawClientTLS(context))
    assert outcome.echoed, outcome.failure
    (handshake,) = server.handshakes
    assert handshake.version == "TLSv1.2"
    assert handshake.cipher == "ECDHE-ECDSA-CHACHA20-POLY1305"
    assert handshake.identity is not None and handshake.identity.name == "C11000"


# -- refused by the server ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_client_without_certificate_is_refused(
    dev_pki: DevPki, listen: Any
) -> None:
    port, server = listen(gateway_server(dev_pki))
    outcome = await attempt(port, RawClientTLS(raw_context()))
    await assert_refused_by_server(outcome, server, "peer did not return a certificate")


@pytest_twisted.ensureDeferred
async def test_client_from_another_ca_claiming_the_same_identity_is_refused(
    dev_pki: DevPki, other_ca_pki: DevPki, listen: Any
) -> None:
    port, server = listen(gateway_server(dev_pki))
    # The impostor trusts our CA, so its own side of the handshake succeeds.
    impostor = client_for(other_ca_pki, "centre", "C52240", trust=dev_pki.ca_cert)
    outcome = await attempt(port, impostor)
    await assert_refused_by_server(outcome, server, "certificate verify failed")


@pytest_twisted.ensureDeferred
async def test_client_limited_to_tls_1_0_and_1_1_is_refused(
    dev_pki: DevPki, listen: Any
) -> None:
    port, server = listen(gateway_server(dev_pki))
    context = raw_context(
        dev_pki.cert("centre", "C52240"),
        dev_pki.key("centre", "C52240"),
        min_version=SSL.TLS1_VERSION,
        max_version=SSL.TLS1_1_VERSION,
        # Let the client try at all: OpenSSL's default security level would
        # stop it before it reaches our server.
        ciphers=b"DEFAULT:@SECLEVEL=0",
    )
    outcome = await attempt(port, RawClientTLS(context))
    await assert_refused_by_server(outcome, server, "unsupported protocol")


@pytest_twisted.ensureDeferred
async def test_client_offering_only_a_cbc_suite_is_refused(
    dev_pki: DevPki, listen: Any
) -> None:
    port, server = listen(gateway_server(dev_pki))
    context = raw_context(
        dev_pki.cert("centre", "C52240"),
        dev_pki.key("centre", "C52240"),
        max_version=SSL.TLS1_2_VERSION,
        ciphers=b"ECDHE-ECDSA-AES128-SHA",
    )
    outcome = await attempt(port, RawClientTLS(context))
    await assert_refused_by_server(outcome, server, "no shared cipher")


@pytest_twisted.ensureDeferred
async def test_cbc_only_client_would_pass_twisted_default_options(
    dev_pki: DevPki, listen: Any
) -> None:
    """Control for the test above: the suite works on these certificates, so
    its refusal comes from our cipher policy, not from the key type."""
    ca = x509.load_pem_x509_certificate(dev_pki.ca_cert.read_bytes())
    permissive = CertificateOptions(
        privateKey=serialization.load_pem_private_key(  # type: ignore[arg-type]
            dev_pki.key("gateway", "main").read_bytes(), password=None
        ),
        certificate=x509.load_pem_x509_certificate(  # type: ignore[arg-type]
            dev_pki.cert("gateway", "main").read_bytes()
        ),
        verify=True,
        caCerts=[crypto.X509.from_cryptography(ca)],
    )
    port, server = listen(permissive)
    context = raw_context(
        dev_pki.cert("centre", "C52240"),
        dev_pki.key("centre", "C52240"),
        max_version=SSL.TLS1_2_VERSION,
        ciphers=b"ECDHE-ECDSA-AES128-SHA",
    )
    outcome = await attempt(port, RawClientTLS(context))
    assert outcome.echoed, outcome.failure
    assert server.handshakes[0].cipher == "ECDHE-ECDSA-AES128-SHA"


@pytest_twisted.ensureDeferred
async def test_expired_client_certificate_is_refused(
    dev_pki: DevPki, listen: Any, tmp_path: Path
) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    cert, key = issue(
        dev_pki.ca_cert,
        dev_pki.ca_key,
        tmp_path,
        "centre",
        "C52240",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    port, server = listen(gateway_server(dev_pki))
    outcome = await attempt(port, client_options(cert, key, [dev_pki.ca_cert]))
    await assert_refused_by_server(outcome, server, "certificate verify failed")


@pytest_twisted.ensureDeferred
async def test_revoked_client_is_refused_and_others_accepted_when_crls_are_given(
    dev_pki: DevPki, listen: Any, tmp_path: Path
) -> None:
    crl = write_crl(
        dev_pki.ca_cert, dev_pki.ca_key, tmp_path / "ca.crl", [dev_pki.cert("centre", "C11000")]
    )
    port, server = listen(gateway_server(dev_pki, crls=(crl,)))
    good = await attempt(port, client_for(dev_pki, "centre", "C52240"))
    assert good.echoed, good.failure
    await server.wait_lost(1)
    revoked = await attempt(port, client_for(dev_pki, "centre", "C11000"))
    assert not revoked.echoed
    await server.wait_lost(2)
    assert [h.identity.name for h in server.handshakes if h.identity] == ["C52240"]
    assert server.lost[1].check(SSL.Error), server.lost[1]
    assert "certificate verify failed" in str(server.lost[1].value)


@pytest_twisted.ensureDeferred
async def test_with_crls_given_a_ca_without_a_current_crl_is_refused(
    dev_pki: DevPki, other_ca_pki: DevPki, listen: Any, tmp_path: Path
) -> None:
    """Revocation checking fails closed: a CRL for one CA says nothing about
    another CA's certificates, so those are refused rather than waved through."""
    crl = write_crl(other_ca_pki.ca_cert, other_ca_pki.ca_key, tmp_path / "other.crl")
    port, server = listen(gateway_server(dev_pki, crls=(crl,)))
    outcome = await attempt(port, client_for(dev_pki, "centre", "C52240"))
    await assert_refused_by_server(outcome, server, "certificate verify failed")


# -- trust bundles --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_trust_bundle_may_hold_several_cas(
    dev_pki: DevPki, other_ca_pki: DevPki, listen: Any, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes(other_ca_pki.ca_cert.read_bytes() + dev_pki.ca_cert.read_bytes())
    port, server = listen(gateway_server(dev_pki, bundle))
    ours = await attempt(port, client_for(dev_pki, "centre", "C52240"))
    theirs = await attempt(
        port, client_for(other_ca_pki, "centre", "C52240", trust=dev_pki.ca_cert)
    )
    assert ours.echoed and theirs.echoed
    assert {h.identity.fingerprint for h in server.handshakes if h.identity} == {
        fingerprint(dev_pki.cert("centre", "C52240")),
        fingerprint(other_ca_pki.cert("centre", "C52240")),
    }


@pytest_twisted.ensureDeferred
async def test_pinned_peer_certificate_admits_that_peer_only(
    dev_pki: DevPki, listen: Any
) -> None:
    port, server = listen(gateway_server(dev_pki, dev_pki.cert("bank", "B001")))
    pinned = await attempt(port, client_for(dev_pki, "bank", "B001"))
    assert pinned.echoed, pinned.failure
    await server.wait_lost(1)
    # Same CA, not pinned.
    other = await attempt(port, client_for(dev_pki, "bank", "B002"))
    assert not other.echoed
    await server.wait_lost(2)
    assert [h.identity.uri for h in server.handshakes if h.identity] == ["hpf://bank/B001"]
    assert server.lost[1].check(SSL.Error), server.lost[1]
    assert "certificate verify failed" in str(server.lost[1].value)


# -- the client side --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_client_options_refuse_a_server_from_another_ca(
    dev_pki: DevPki, other_ca_pki: DevPki, listen: Any
) -> None:
    # The server would accept us (it trusts our CA); we must not accept it.
    impostor = server_options(
        other_ca_pki.cert("gateway", "main"),
        other_ca_pki.key("gateway", "main"),
        [dev_pki.ca_cert],
    )
    port, server = listen(impostor)
    outcome = await attempt(port, client_for(dev_pki, "centre", "C52240"))
    assert not outcome.echoed
    assert outcome.failure is not None and outcome.failure.check(SSL.Error)
    assert "certificate verify failed" in str(outcome.failure.value)
    await server.wait_lost(1)
    assert server.handshakes == []


@pytest_twisted.ensureDeferred
async def test_gateway_dials_a_bank_served_on_loopback_and_each_sees_the_other(
    dev_pki: DevPki, listen: Any
) -> None:
    bank = server_options(
        dev_pki.cert("bank", "B002"), dev_pki.key("bank", "B002"), [dev_pki.ca_cert]
    )
    port, server = listen(bank)
    outcome = await attempt(port, client_for(dev_pki, "gateway", "main"))
    assert outcome.echoed, outcome.failure
    assert outcome.server_identity is not None
    assert outcome.server_identity.uri == "hpf://bank/B002"
    assert server.handshakes[0].identity is not None
    assert server.handshakes[0].identity.uri == "hpf://gateway/main"


class _Collect(Protocol):
    """Collects a response body (readBody warns about this transport)."""

    def __init__(self) -> None:
        self.done: Deferred[bytes] = Deferred()
        self._data = b""

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self._data += data

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: N802,B008
        if reason.check(ResponseDone):
            self.done.callback(self._data)
        else:
            self.done.errback(reason)


class _WhoAmI(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        identity = peer_identity(request.channel.transport)  # type: ignore[union-attr]
        return (identity.uri if identity else "anonymous").encode()


@pytest_twisted.ensureDeferred
async def test_web_request_channel_transport_names_the_client(
    dev_pki: DevPki, listen: Any
) -> None:
    server = gateway_server(dev_pki)
    port = reactor.listenTCP(  # type: ignore[attr-defined]
        0, tls_server_factory(Site(_WhoAmI()), server), interface="127.0.0.1"
    )
    try:
        agent = Agent(
            reactor,
            contextFactory=FixedCreatorPolicy(client_for(dev_pki, "centre", "C11000")),
            pool=HTTPConnectionPool(reactor, persistent=False),
        )
        url = f"https://127.0.0.1:{port.getHost().port}/".encode()
        response = await agent.request(b"GET", url).addTimeout(TIMEOUT, reactor)
        collector = _Collect()
        response.deliverBody(collector)
        body = await collector.done.addTimeout(TIMEOUT, reactor)
    finally:
        await port.stopListening()
    assert body == b"hpf://centre/C11000"


# -- reload --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_replaced_options_apply_to_new_connections_and_spare_open_ones(
    dev_pki: DevPki, other_ca_pki: DevPki, listen: Any
) -> None:
    reloadable = ReloadableOptions(gateway_server(dev_pki))
    port, server = listen(reloadable)
    before = await attempt(port, client_for(dev_pki, "centre", "C52240"), close=False)
    assert before.echoed, before.failure

    # SIGHUP: now only the other CA is trusted.
    reloadable.replace(gateway_server(dev_pki, other_ca_pki.ca_cert))
    await before.client.ping()  # the open connection is untouched

    refused = await attempt(port, client_for(dev_pki, "centre", "C11000"))
    assert not refused.echoed
    admitted = await attempt(
        port, client_for(other_ca_pki, "centre", "C52240", trust=dev_pki.ca_cert)
    )
    assert admitted.echoed, admitted.failure
    before.client.transport.loseConnection()  # type: ignore[union-attr]
    await before.client.lost.addTimeout(TIMEOUT, reactor)
    assert [h.identity.fingerprint for h in server.handshakes if h.identity] == [
        fingerprint(dev_pki.cert("centre", "C52240")),
        fingerprint(other_ca_pki.cert("centre", "C52240")),
    ]


# -- building options (no network) --------------------------------------------


def test_server_options_refuse_a_world_readable_key(dev_pki: DevPki, tmp_path: Path) -> None:
    key = tmp_path / "gateway.key"
    key.write_bytes(dev_pki.key("gateway", "main").read_bytes())
    key.chmod(0o644)
    with pytest.raises(InsecureKeyError, match="0644"):
        server_options(dev_pki.cert("gateway", "main"), key, [dev_pki.ca_cert])


def test_options_refuse_a_key_that_is_not_the_certificates(dev_pki: DevPki) -> None:
    with pytest.raises(ValueError, match="is not the key of"):
        client_options(
            dev_pki.cert("gateway", "main"), dev_pki.key("ledger", "main"), [dev_pki.ca_cert]
        )


def test_options_refuse_an_empty_trust_list(dev_pki: DevPki) -> None:
    with pytest.raises(ValueError, match="no trust bundle"):
        server_options(dev_pki.cert("gateway", "main"), dev_pki.key("gateway", "main"), [])
    with pytest.raises(TypeError):
        server_options(
            dev_pki.cert("gateway", "main"),
            dev_pki.key("gateway", "main"),
            dev_pki.ca_cert,  # type: ignore[arg-type]
        )


def test_options_refuse_a_trust_file_without_certificates(
    dev_pki: DevPki, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.crt"
    empty.write_text("nothing here\n")
    with pytest.raises(ValueError, match="no readable PEM certificate"):
        server_options(dev_pki.cert("gateway", "main"), dev_pki.key("gateway", "main"), [empty])


def test_offered_tls_1_2_suites_are_all_ecdhe_aead(dev_pki: DevPki) -> None:
    options = gateway_server(dev_pki)
    # A throwaway connection lists exactly what a ClientHello/ServerHello
    # may pick from.
    names = SSL.Connection(options.getContext(), None).get_cipher_list()
    tls12 = [n for n in names if not n.startswith("TLS_")]
    assert tls12
    for name in tls12:
        assert name.startswith("ECDHE-"), name
        assert "GCM" in name or "CHACHA20-POLY1305" in name, name


@pytest_twisted.ensureDeferred
async def test_the_centre_api_answers_clients_that_offer_alpn(tmp_path):
    """curl, requests and Java offer ALPN; the handshake must succeed and settle on http/1.1."""
    import socket
    import ssl

    from twisted.internet.threads import deferToThread

    from tests.integration.harness import start_harness

    h = await start_harness(tmp_path, banks={})
    try:
        port = int(h.config.centre_api.split(":")[1])
        keys = h.pki

        def dial(alpn):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(str(keys.ca_cert))
            ctx.load_cert_chain(str(keys.cert("centre", "C52240")), str(keys.key("centre", "C52240")))
            ctx.set_alpn_protocols(alpn)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    s.sendall(b"GET /v1/openapi.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    head = s.recv(64)
                    return s.selected_alpn_protocol(), head

        for offer in (["http/1.1"], ["h2", "http/1.1"]):
            selected, head = await deferToThread(dial, offer)
            assert selected == "http/1.1" and head.startswith(b"HTTP/1.1 200"), (offer, selected, head)
    finally:
        await h.stop()
