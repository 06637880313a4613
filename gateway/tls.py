"""Mutually authenticated TLS for every link: the one module that touches pyOpenSSL.

Policy, the same for servers and clients (DESIGN §8):

- TLS 1.2 at least (1.3 preferred, OpenSSL picks the highest both sides
  speak); forward-secret AEAD suites only; no compression, no renegotiation,
  no session resumption.
- Both sides present a certificate and verify the other's against the trust
  bundles given for that peer, and only those: the system store is never
  loaded.  Every certificate in a bundle is a trust anchor, so a bundle may
  hold CAs or a pinned peer certificate.
- Who the peer *is* comes from its certificate's ``hpf://ROLE/NAME`` URI
  (``identity_from_certificate``); the caller checks it after the handshake.

pyOpenSSL's own X509/PKey API is being deprecated; everything outside this
module works with ``cryptography`` objects and paths, so that change stays here.
"""

from __future__ import annotations

import datetime
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from OpenSSL import SSL, crypto
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

HTTP_ALPN = (b"http/1.1",)
"""What the HTTP listeners (centre API, ledger ingest and supervisor API) answer to ALPN."""

__all__ = [
    "FixedCreatorPolicy",
    "HTTP_ALPN",
    "AEAD_CIPHERS",
    "IDENTITY_NAME",
    "ROLES",
    "InsecureKeyError",
    "PeerIdentity",
    "ReloadableOptions",
    "TLSOptions",
    "certificate_not_after",
    "certificate_inventory",
    "crl_next_updates",
    "check_key_file",
    "client_options",
    "identity_from_certificate",
    "load_certificates",
    "peer_identity",
    "resolve_credential",
    "server_options",
    "tls_client_endpoint",
    "tls_server_factory",
]

#: Roles a certificate may name in its ``hpf://ROLE/NAME`` URI.
ROLES: frozenset[str] = frozenset(
    {"gateway", "bank", "centre", "ledger", "supervisor", "ops", "staff"}
)
#: What a NAME in ``hpf://ROLE/NAME`` may be (the same alphabet as our ids).
IDENTITY_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
_HPF_URI = re.compile(r"hpf://([a-z]+)/([A-Za-z0-9_-]{1,32})")

#: TLS 1.2 suites we accept: ECDHE key exchange (forward secrecy) with an
#: AEAD cipher.  TLS 1.3 suites are all forward-secret AEAD and OpenSSL keeps
#: them regardless of this string.  The exclusions guard against a future
#: OpenSSL adding e.g. ECDHE-PSK-CHACHA20 to these aliases.
AEAD_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!PSK:!SRP:!DSS"
_ACCEPTABLE_CIPHERS = AcceptableCiphers.fromOpenSSLCipherString(AEAD_CIPHERS)

# Present in pyOpenSSL >= 22 with OpenSSL >= 1.1.0h; 0 (no-op) otherwise.
# Twisted already sets OP_NO_COMPRESSION, OP_NO_TICKET and turns the session
# cache off.
_OP_NO_RENEGOTIATION: int = getattr(SSL, "OP_NO_RENEGOTIATION", 0)


# -- identity -----------------------------------------------------------------


@dataclass(frozen=True)
class PeerIdentity:
    """Who is at the other end of a link, as its certificate says.

    ``uri`` is ``hpf://ROLE/NAME``; ``fingerprint`` is the lowercase hex
    SHA-256 of the certificate's DER encoding (for logs and pinning).
    """

    role: str
    name: str
    uri: str
    fingerprint: str


def identity_from_certificate(cert: x509.Certificate) -> PeerIdentity:
    """Read the party a certificate names.

    The certificate must carry exactly one ``hpf:`` URI in its
    subjectAltName, of the exact form ``hpf://ROLE/NAME`` with ROLE one of
    ``ROLES`` and NAME 1-32 of ``[A-Za-z0-9_-]``.  URIs of other schemes are
    ignored.  Anything else raises ``ValueError`` saying why.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        raise ValueError("certificate has no subjectAltName") from None
    uris = [
        u
        for u in san.value.get_values_for_type(x509.UniformResourceIdentifier)
        if u.lower().startswith("hpf:")
    ]
    if not uris:
        raise ValueError("certificate names no hpf:// identity URI")
    if len(uris) > 1:
        raise ValueError(f"certificate names {len(uris)} hpf:// identities: {uris!r}")
    (uri,) = uris
    match = _HPF_URI.fullmatch(uri)
    if match is None:
        raise ValueError(f"malformed identity URI {uri!r}: want hpf://ROLE/NAME")
    role, name = match.groups()
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} in identity URI {uri!r}")
    return PeerIdentity(
        role=role,
        name=name,
        uri=uri,
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
    )


def peer_identity(transport: Any) -> PeerIdentity | None:
    """The identity of the peer on a TLS transport, once the handshake is done.

    Works on a ``TLSMemoryBIOProtocol`` (what a protocol behind
    ``tls_server_factory`` / ``tls_client_endpoint`` has as ``transport``)
    and on a twisted.web request's ``channel.transport``.  Returns ``None``
    when there is no peer certificate (not TLS, or handshake not finished);
    raises ``ValueError`` when there is one that names no valid identity.
    """
    cached = getattr(transport, "_hpf_peer_identity", None)
    if cached is not None:
        # Read once per connection: the peer cannot change its certificate, since
        # renegotiation is refused (OP_NO_RENEGOTIATION) and TLS 1.3 has none.
        return cached
    get_certificate = getattr(transport, "getPeerCertificate", None)
    if get_certificate is None:
        return None
    cert = get_certificate()
    if cert is None:
        return None
    if isinstance(cert, crypto.X509):
        cert = cert.to_cryptography()
    identity = identity_from_certificate(cert)
    if _OP_NO_RENEGOTIATION:
        try:
            transport._hpf_peer_identity = identity
        except AttributeError:  # a transport that takes no attributes is asked every time
            pass
    return identity


# -- key files ----------------------------------------------------------------


class InsecureKeyError(Exception):
    """A private key file is missing or readable by others than its owner."""


def check_key_file(path: Path) -> None:
    """Refuse a private key file that is missing or group/world accessible.

    Raises ``InsecureKeyError`` naming the file and its mode; the daemon
    refuses to start on it (DESIGN §8).  Symlinks are followed: what matters
    is the file the key is read from.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InsecureKeyError(f"private key {path} is missing") from None
    except OSError as e:
        raise InsecureKeyError(f"private key {path} cannot be checked: {e}") from e
    if not stat.S_ISREG(st.st_mode):
        raise InsecureKeyError(f"private key {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise InsecureKeyError(
            f"private key {path} has mode {mode:04o}: it must not be accessible "
            f"by group or others (chmod 600 {path}, or pass it as a systemd "
            "credential)"
        )


def resolve_credential(path: Path) -> Path:
    """Where to read ``path`` from, honouring systemd credentials.

    When ``$CREDENTIALS_DIRECTORY`` is set (``LoadCredential=`` in the unit)
    and holds a file named like ``path.name``, that file is used; otherwise
    ``path`` itself.
    """
    path = Path(path)
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory:
        candidate = Path(directory) / path.name
        if candidate.is_file():
            return candidate
    return path


# -- loading ------------------------------------------------------------------


def load_certificates(path: Path) -> list[x509.Certificate]:
    """All PEM certificates in a file, in order; ``ValueError`` if there are none."""
    path = Path(path)
    data = path.read_bytes()
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise ValueError(f"{path}: no readable PEM certificate ({e})") from e
    return certs


def _require_sequence(paths: Sequence[Path], what: str) -> None:
    if isinstance(paths, (str, bytes, os.PathLike)):
        # A lone path would otherwise be iterated character by character.
        raise TypeError(f"{what} must be a sequence of paths, not a single path")


def _load_trust(paths: Sequence[Path]) -> list[x509.Certificate]:
    _require_sequence(paths, "trust")
    if not paths:
        raise ValueError("no trust bundle given: refusing to trust no one or everyone")
    anchors: dict[bytes, x509.Certificate] = {}
    for path in paths:
        for cert in load_certificates(path):
            anchors.setdefault(cert.fingerprint(hashes.SHA256()), cert)
    return list(anchors.values())


_CRL_BLOCK = re.compile(
    rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL
)


def _load_crls(paths: Sequence[Path]) -> list[x509.CertificateRevocationList]:
    _require_sequence(paths, "crls")
    crls: list[x509.CertificateRevocationList] = []
    for path in paths:
        blocks = _CRL_BLOCK.findall(Path(path).read_bytes())
        if not blocks:
            raise ValueError(f"{path}: no PEM CRL found")
        for block in blocks:
            try:
                crls.append(x509.load_pem_x509_crl(block))
            except ValueError as e:
                raise ValueError(f"{path}: unreadable CRL ({e})") from e
    return crls


def _load_identity(
    certificate: Path, private_key: Path
) -> tuple[x509.Certificate, list[x509.Certificate], PrivateKeyTypes]:
    certificate, private_key = resolve_credential(certificate), resolve_credential(private_key)
    check_key_file(private_key)
    chain = load_certificates(certificate)
    try:
        key = serialization.load_pem_private_key(
            Path(private_key).read_bytes(), password=None
        )
    except (ValueError, TypeError) as e:
        # Never echo the key material; the message names the file only.
        raise ValueError(
            f"{private_key}: not an unencrypted PEM private key ({type(e).__name__})"
        ) from None
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(
        der, spki
    ):
        raise ValueError(f"{private_key} is not the key of {certificate}")
    return leaf, chain[1:], key


def _options(
    certificate: Path,
    private_key: Path,
    trust: Sequence[Path],
    crls: Sequence[Path],
    alpn: Sequence[bytes] = (),
) -> CertificateOptions:
    leaf, extra_chain, key = _load_identity(certificate, private_key)
    anchors = _load_trust(trust)
    revocations = _load_crls(crls)
    # CertificateOptions' annotations still say pyOpenSSL PKey/X509, but these
    # values only reach Context.use_certificate/use_privatekey/
    # add_extra_chain_cert, which take cryptography objects (and warn on the
    # deprecated pyOpenSSL ones).  The trust store still wants pyOpenSSL X509.
    options = CertificateOptions(
        privateKey=key,  # type: ignore[arg-type]
        certificate=leaf,  # type: ignore[arg-type]
        extraCertChain=extra_chain or None,  # type: ignore[arg-type]
        # The peer must present a certificate that chains to these anchors
        # and only these: the context's store starts empty and the system
        # store is never loaded (that would take set_default_verify_paths).
        verify=True,
        requireCertificate=True,
        caCerts=[crypto.X509.from_cryptography(c) for c in anchors],
        raiseMinimumTo=TLSVersion.TLSv1_2,
        acceptableCiphers=_ACCEPTABLE_CIPHERS,
        enableSessions=False,
        enableSessionTickets=False,
        # An HTTP listener must be able to answer a client's ALPN offer (curl,
        # requests and Java all make one): Twisted then installs the server's
        # selection callback.  Without it the handshake failed with an
        # internal error whenever the client offered ALPN.
        acceptableProtocols=list(alpn) or None,
    )
    # Build the context now, so a bad key/certificate pair fails at start or
    # reload, not at the first connection.  CertificateOptions caches it and
    # makes every connection from it, so what is set here applies to all of
    # them (tests/security/test_tls.py checks that on live connections).
    context = options.getContext()
    if _OP_NO_RENEGOTIATION:
        context.set_options(_OP_NO_RENEGOTIATION)
    store = context.get_cert_store()
    if store is None:  # pragma: no cover - pyOpenSSL always has one
        raise RuntimeError("OpenSSL context has no certificate store")
    # PARTIAL_CHAIN: every certificate in a bundle is an anchor, not only
    # self-signed roots, so a bundle may pin a peer's own certificate or an
    # intermediate.
    flags = crypto.X509StoreFlags.PARTIAL_CHAIN
    if revocations:
        for crl in revocations:
            store.add_crl(crl)
        # Leaf certificates are checked; this fails closed: a peer whose
        # issuer has no current CRL in the list is refused.
        flags |= crypto.X509StoreFlags.CRL_CHECK
    store.set_flags(flags)
    return options


def server_options(
    certificate: Path,
    private_key: Path,
    trust: Sequence[Path],
    *,
    crls: Sequence[Path] = (),
    alpn: Sequence[bytes] = (),
) -> CertificateOptions:
    """TLS options for a listener that requires a client certificate.

    ``certificate`` may hold the leaf followed by intermediates.  A client is
    accepted only with a certificate chaining to one of the certificates in
    the ``trust`` bundles (each file may hold several PEM certificates); with
    ``crls`` it must also not be revoked, and every issuing CA must then have
    a current CRL in the list.  Raises ``InsecureKeyError`` for an exposed or
    missing key and ``ValueError`` for unreadable or mismatched files.  ``alpn``
    lists the application protocols an HTTP listener speaks (``b"http/1.1"``).
    """
    return _options(certificate, private_key, trust, crls, alpn)


def client_options(
    certificate: Path,
    private_key: Path,
    trust: Sequence[Path],
    *,
    crls: Sequence[Path] = (),
) -> CertificateOptions:
    """TLS options for dialling a peer, presenting our own certificate.

    The server's certificate must chain to ``trust`` (same policy as
    ``server_options``).  There is deliberately no hostname check: peers are
    not named by DNS names but by their ``hpf://`` identity, and the caller
    compares ``peer_identity(transport)`` with the party it meant to reach
    right after the handshake; that comparison is our hostname verification.
    A link must never send data before doing it.
    """
    return _options(certificate, private_key, trust, crls)


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLClientConnectionCreator)
class ReloadableOptions:
    """TLS options that can be swapped while listeners and links keep running.

    Pass this to ``tls_server_factory`` / ``tls_client_endpoint``; on SIGHUP
    build new options (which validates the files) and ``replace`` them.
    Connections already up keep the context they started with; new ones use
    the new certificate, key, trust and CRLs.
    """

    def __init__(self, options: CertificateOptions) -> None:
        self._current = options

    @property
    def current(self) -> CertificateOptions:
        """The options new connections are made with."""
        return self._current

    def replace(self, options: CertificateOptions) -> None:
        """Use ``options`` for every connection from now on."""
        self._current = options

    def serverConnectionForTLS(  # noqa: N802 (Twisted interface)
        self, tlsProtocol: TLSMemoryBIOProtocol  # noqa: N803
    ) -> SSL.Connection:
        return self._current.serverConnectionForTLS(tlsProtocol)

    def clientConnectionForTLS(  # noqa: N802 (Twisted interface)
        self, tlsProtocol: TLSMemoryBIOProtocol  # noqa: N803
    ) -> SSL.Connection:
        return self._current.clientConnectionForTLS(tlsProtocol)


TLSOptions = CertificateOptions | ReloadableOptions


def tls_server_factory(
    factory: IProtocolFactory, options: TLSOptions
) -> TLSMemoryBIOFactory:
    """Wrap a protocol factory so that its connections speak TLS as the server.

    Listen on any plain endpoint (``tcp:``, ``systemd:``) with the result;
    the ``ssl:`` endpoint string cannot require client certificates.
    """
    return TLSMemoryBIOFactory(options, False, factory)


def tls_client_endpoint(
    endpoint: IStreamClientEndpoint, options: TLSOptions
) -> IStreamClientEndpoint:
    """An endpoint that connects through ``endpoint`` and then starts TLS."""
    return wrapClientTLS(options, endpoint)


def certificate_not_after(path: Path) -> datetime.datetime:
    """When the (first) certificate in ``path`` expires, as an aware UTC datetime."""
    return load_certificates(path)[0].not_valid_after_utc


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    text = str(values[0].value) if values else name.rfc4514_string()
    return text[:64]


def certificate_inventory(
    certificate: Path, trust: Mapping[str, Sequence[Path]]
) -> list[tuple[str, datetime.datetime]]:
    """Every certificate we present or trust, labelled, with when it expires.

    ``certificate`` is our own file (the leaf, then intermediates we send);
    ``trust`` maps a scope (``"default"``, ``"centre/C52240"``, ``"bank/B001"``,
    ``"ledger"``) to its bundle files.  Labels: ``gateway`` for our leaf,
    ``gateway-chain:CN`` for each intermediate, ``trust:SCOPE:CN:FP12`` for
    each anchor (FP12: the first 12 hex digits of its SHA-256 fingerprint),
    each once, in that order.  Raises ``ValueError``/``OSError`` for an
    unreadable file.
    """
    chain = load_certificates(resolve_credential(Path(certificate)))
    out: list[tuple[str, datetime.datetime]] = [("gateway", chain[0].not_valid_after_utc)]
    out += [(f"gateway-chain:{_common_name(c.subject)}", c.not_valid_after_utc) for c in chain[1:]]
    seen: set[str] = {label for label, _ in out}
    for scope, paths in trust.items():
        _require_sequence(paths, "trust")
        for path in paths:
            for cert in load_certificates(path):
                label = (f"trust:{scope}:{_common_name(cert.subject)}:"
                         f"{cert.fingerprint(hashes.SHA256()).hex()[:12]}")
                if label not in seen:
                    seen.add(label)
                    out.append((label, cert.not_valid_after_utc))
    return out


def crl_next_updates(crls: Sequence[Path]) -> list[tuple[str, datetime.datetime | None]]:
    """Each CRL's issuer (common name) and nextUpdate; after it, that issuer's peers are refused."""
    return [(_common_name(crl.issuer), crl.next_update_utc) for crl in _load_crls(crls)]


@implementer(IOpenSSLClientConnectionCreator)
class ExpectPeer:
    """Client TLS that also refuses, during the handshake, a server that is not ``role/name``.

    For clients that cannot look at the peer after the handshake (twisted.web's
    Agent): the chain is verified as ``options`` says, and the leaf must carry
    the ``hpf://ROLE/NAME`` identity — our hostname verification.
    """

    def __init__(self, options: TLSOptions, role: str, name: str) -> None:
        self._options = options
        self.role = role
        self.name = name

    def clientConnectionForTLS(  # noqa: N802 (Twisted interface)
        self, tlsProtocol: TLSMemoryBIOProtocol  # noqa: N803
    ) -> SSL.Connection:
        conn = self._options.clientConnectionForTLS(tlsProtocol)
        conn.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._verify)
        return conn

    def _verify(self, conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        if not ok:
            return False
        if depth != 0:
            return True
        try:
            identity = identity_from_certificate(cert.to_cryptography())
        except ValueError:
            return False
        return identity.role == self.role and identity.name == self.name


def certificate_identity(path: Path) -> PeerIdentity:
    """The hpf:// identity in our own certificate file (the first certificate in it)."""
    return identity_from_certificate(load_certificates(path)[0])


@implementer(IPolicyForHTTPS)
class FixedCreatorPolicy:
    """An ``Agent`` TLS policy that uses one connection creator whatever the URL's host.

    Peers here are known by their certificate's ``hpf://`` identity (checked
    by the creator, e.g. :class:`ExpectPeer`), not by host name.
    """

    def __init__(self, creator: IOpenSSLClientConnectionCreator) -> None:
        self.creator = creator

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:  # noqa: N802
        return self.creator
