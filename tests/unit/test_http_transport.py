"""The front-end HTTP transport over real loopback HTTP: answers, the size bound, the timeout,
refusal vs uncertainty, and the guard on where it may dial."""

from __future__ import annotations

import datetime as dt

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.web import resource, server

from adapters import base
from adapters.bocb2e import Session, Terminal
from gateway.http_transport import HttpTransport, TransportError, check_front_end_url
from gateway.simulate.bocb2e import BocFrontEnd, make_site

T0 = dt.datetime(2026, 3, 4, 9, 30)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/B2EC/E2BServlet", "http://[::1]:80/x",
                                 "https://localhost/x", "http://127.9.9.9/x",
                                 "http://192.168.1.20:8080/B2EC/E2BServlet"])
def test_loopback_and_named_local_addresses_are_accepted(url: str) -> None:
    assert check_front_end_url(url, ["192.168.1.20"]) == url


@pytest.mark.parametrize("url", ["http://192.168.1.21/x", "http://bank.example.com/x",
                                 "http://1.192.105.29:8080/B2EC/E2BServlet", "ftp://127.0.0.1/x",
                                 "http://u:p@127.0.0.1/x", "http://127.0.0.1:99999/x",
                                 "http://127.0.0.1/x#f", "127.0.0.1:8080"])
def test_anything_else_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_front_end_url(url, ["192.168.1.20"])


def listen(site: server.Site):  # type: ignore[no-untyped-def]
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    return port, f"http://127.0.0.1:{port.getHost().port}"


@pytest_twisted.ensureDeferred
async def test_a_session_signs_on_and_queries_the_simulated_front_end_over_http() -> None:
    front = BocFrontEnd("12345678", "BOC", "pw", {"254608672703": 123_45})
    port, base_url = listen(make_site(front, lambda: T0))
    try:
        t = HttpTransport(reactor, base_url + "/B2EC/E2BServlet", timeout=10)
        s = Session(Terminal("E1", "12345678", "BOC"), "pw", lambda: T0)
        assert s.signed_on(await t.request(s.sign_on("s1"))).ok
        q = base.BalanceQuery("q1", "254608672703")
        [b] = s.read(q, await t.request(s.request(q)))
        assert b.balance == 123_45
    finally:
        await port.stopListening()


class _Big(resource.Resource):
    isLeaf = True

    def render_POST(self, request: server.Request) -> bytes:
        return b"x" * 5000


class _Chunked(resource.Resource):
    isLeaf = True

    def render_POST(self, request: server.Request) -> int:
        for _ in range(10):
            request.write(b"y" * 1000)  # no length declared: chunked
        request.finish()
        return server.NOT_DONE_YET


class _Silent(resource.Resource):
    isLeaf = True

    def render_POST(self, request: server.Request) -> int:
        return server.NOT_DONE_YET


class _Status(resource.Resource):
    isLeaf = True

    def render_POST(self, request: server.Request) -> bytes:
        request.setResponseCode(500)
        return b"oops"


@pytest.mark.parametrize("res", [_Big, _Chunked])
@pytest_twisted.ensureDeferred
async def test_an_answer_over_the_bound_is_refused(res: type) -> None:
    port, url = listen(server.Site(res()))
    try:
        with pytest.raises(TransportError, match="exceeds") as e:
            await HttpTransport(reactor, url, timeout=10, max_answer=4096).request(b"<a/>")
        assert e.value.delivered is None
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_no_answer_within_the_timeout_is_uncertain() -> None:
    port, url = listen(server.Site(_Silent()))
    try:
        with pytest.raises(TransportError, match="within") as e:
            await HttpTransport(reactor, url, timeout=0.3).request(b"<a/>")
        assert e.value.delivered is None
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_an_http_error_status_is_uncertain() -> None:
    port, url = listen(server.Site(_Status()))
    try:
        with pytest.raises(TransportError, match="HTTP 500") as e:
            await HttpTransport(reactor, url, timeout=10).request(b"<a/>")
        assert e.value.delivered is None
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_refused_connection_is_certainly_not_delivered() -> None:
    port, url = listen(server.Site(_Status()))
    await port.stopListening()
    with pytest.raises(TransportError) as e:
        await HttpTransport(reactor, url, timeout=5).request(b"<a/>")
    assert e.value.delivered is False


def test_a_url_outside_the_guard_is_refused_at_construction() -> None:
    with pytest.raises(ValueError):
        HttpTransport(reactor, "http://10.0.0.8/x")
    assert isinstance(Deferred(), Deferred)


def _self_signed() -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for 127.0.0.1, a CA of its own."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "front-end")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@pytest_twisted.ensureDeferred
async def test_https_where_the_front_end_offers_it_and_only_with_its_certificate() -> None:
    from twisted.internet import ssl
    from twisted.web.client import BrowserLikePolicyForHTTPS

    cert_pem, key_pem = _self_signed()
    server_cert = ssl.PrivateCertificate.loadPEM(cert_pem + key_pem)
    front = BocFrontEnd("12345678", "BOC", "pw", {"254608672703": 1_00})
    port = reactor.listenSSL(0, make_site(front, lambda: T0), server_cert.options(),
                             interface="127.0.0.1")
    try:
        url = f"https://127.0.0.1:{port.getHost().port}/B2EC/E2BServlet"
        trusted = HttpTransport(reactor, url, timeout=10, tls_policy=BrowserLikePolicyForHTTPS(
            trustRoot=ssl.Certificate.loadPEM(cert_pem)))
        s = Session(Terminal("E1", "12345678", "BOC"), "pw", lambda: T0)
        assert s.signed_on(await trusted.request(s.sign_on("s1"))).ok
        other, _ = _self_signed()
        untrusted = HttpTransport(reactor, url, timeout=10, tls_policy=BrowserLikePolicyForHTTPS(
            trustRoot=ssl.Certificate.loadPEM(other)))
        with pytest.raises(TransportError):
            await untrusted.request(s.sign_on("s2"))
    finally:
        await port.stopListening()
