"""Mutually authenticated TLS for every link: the one module that touches pyOpenSSL.

(Over 600 lines on purpose: every use of pyOpenSSL, from contexts to verify callbacks to reloads,
is kept here so that its deprecations are one module's change; tests/unit/test_import_graph.py holds it.)

Policy, the same for servers and clients (DESIGN §8):

- TLS 1.2 at least (1.3 preferred, OpenSSL picks the highest both sides
  speak); forward-secret AEAD suites only; no compression, no renegotiation,
  no session resumption.
- Both sides present a certificate and verify the other's against the trust
  bundles given for that peer, and only those: the system store is never
  loaded.  Every certificate in a bundle is a trust anchor, so a bundle may
  hold CAs or a pinned peer certificate.
- Who the peer *is* comes from its certificate's ``hpf://ROLE/NAME`` URI
  (``identity_from_certificate``), and it counts only when the verified chain
  ends at the anchor configured for that very party (:class:`PartyAnchors`,
  :func:`chain_refusal`), checked during the handshake; the caller then checks
  that the party is one this listener or link serves.

pyOpenSSL's own X509/PKey API is being deprecated; everything outside this
module works with ``cryptography`` objects and paths, so that change stays here.
"""

from __future__ import annotations

import datetime
import functools
import os
import re
import stat
import weakref
from collections.abc import Callable, Mapping, Sequence
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
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

HTTP_ALPN = (b"http/1.1",)
"""What the HTTP listeners (centre API, ledger ingest and supervisor API) answer to ALPN."""

__all__ = [
    "peer_check",
    "FixedCreatorPolicy",
    "HTTP_ALPN",
    "AEAD_CIPHERS",
    "IDENTITY_NAME",
    "ROLES",
    "InsecureKeyError",
    "PartyAnchors",
    "PeerIdentity",
    "ReloadableOptions",
    "TLSOptions",
    "certificate_not_after",
    "chain_refusal",
    "certificate_inventory",
    "crl_next_updates",
    "export_crl_next_updates",
    "check_key_file",
    "client_options",
    "identity_from_certificate",
    "is_tls_error",
    "load_certificates",
    "peer_identity",
    "resolve_credential",
    "server_options",
    "tls_client_endpoint",
    "tls_server_factory",
]

log = Logger()

#: Roles a certificate may name in its ``hpf://ROLE/NAME`` URI.
ROLES: frozenset[str] = frozenset(
    {"gateway", "bank", "centre", "ledger", "supervisor", "ops", "operator", "staff"}
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

    What a certificate names depends on its bytes alone, so the answer is kept for the last
    few hundred certificates, keyed by their DER encoding: a peer that connects for every
    exchange (bdc) shows the same certificate each time, and each handshake read it three
    times (the verify callback, :func:`chain_refusal`, :func:`peer_identity`).  Nothing
    about trust is kept: every handshake still verifies the chain and binds it to the
    party's anchor.
    """
    identity = _identity_of_der(cert.public_bytes(serialization.Encoding.DER))
    if isinstance(identity, str):
        raise ValueError(identity)
    return identity


@functools.lru_cache(maxsize=256)
def _identity_of_der(der: bytes) -> PeerIdentity | str:
    """The identity a certificate's DER names, or why it names none."""
    try:
        return _read_identity(x509.load_der_x509_certificate(der))
    except ValueError as e:
        return str(e)


def _read_identity(cert: x509.Certificate) -> PeerIdentity:
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


# -- identity bound to its own anchor -----------------------------------------


def peer_check(role: str, name: str) -> Callable[[Any], str | None]:
    """After a client handshake: why the peer is not ``hpf://ROLE/NAME`` (the identity it showed,
    or "no certificate"), or None when it is."""

    def check(transport: Any) -> str | None:
        try:
            identity = peer_identity(transport)
        except ValueError:
            identity = None
        if identity is None or identity.role != role or identity.name != name:
            return identity.uri if identity is not None else "no certificate"
        return None

    return check


def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


class PartyAnchors:
    """Which trust anchors vouch for which party: every party's trust is its own.

    Built from ``{(role, name): bundle files}``: the anchors of a party are the
    certificates in its own bundles (a CA, an intermediate, or its pinned
    certificate).  ``bundles`` is the union (``default`` when there is no
    party), which the TLS handshake loads; :func:`chain_refusal` then requires
    the chain to end at the party's own.
    Reads the files (``ValueError``/``OSError`` when one is unreadable).
    """

    def __init__(self, parties: Mapping[tuple[str, str], Sequence[Path]], *,
                 default: Sequence[Path] = ()) -> None:
        self._anchors: dict[tuple[str, str], frozenset[bytes]] = {}
        paths: set[Path] = set()
        for party, bundle in parties.items():
            _require_sequence(bundle, "trust")
            self._anchors[party] = frozenset(
                _fingerprint(c) for path in bundle for c in load_certificates(path))
            paths.update(Path(p) for p in bundle)
        # With no party configured the handshake still needs an anchor (OpenSSL and
        # Twisted refuse an empty store); ``default`` then vouches for no party.
        self.bundles: list[Path] = sorted(paths) or [Path(p) for p in default]

    def __contains__(self, party: object) -> bool:
        return party in self._anchors

    def anchors(self, role: str, name: str) -> frozenset[bytes] | None:
        """SHA-256 fingerprints of the party's anchors; ``None`` for a party not configured here."""
        return self._anchors.get((role, name))


def chain_refusal(
    chain: Sequence[x509.Certificate], role: str, name: str, parties: PartyAnchors
) -> str | None:
    """Why a verified peer chain does not count as party ``role``/``name``; ``None`` when it does.

    ``chain`` is the chain TLS verified, leaf first, ending at the trust
    anchor the handshake found.  It counts only when the leaf names exactly
    ``hpf://ROLE/NAME``, that party is configured, and one certificate of the
    chain (the leaf itself, for a pinned certificate) is one of that party's
    own anchors: another party's CA, or the default CA for a party configured
    with its own, mints nothing.  The one place this is decided, for every
    listener and link.
    """
    if not chain:
        return "no certificate"
    try:
        identity = identity_from_certificate(chain[0])
    except ValueError as e:
        return str(e)
    if (identity.role, identity.name) != (role, name):
        return f"certificate names {identity.uri}, not hpf://{role}/{name}"
    anchors = parties.anchors(role, name)
    if anchors is None:
        return f"hpf://{role}/{name} is not a configured party here"
    if not any(_fingerprint(c) in anchors for c in chain):
        return f"chain of {identity.uri} does not end at that party's own trust anchor"
    return None


def is_tls_error(failure: Any) -> bool:
    """Whether a connection was lost to a TLS error (bad, revoked or expired certificate, garbage)."""
    return failure.check(SSL.Error) is not None


def _revoked(leaf: x509.Certificate, crls: Sequence[x509.CertificateRevocationList]) -> bool:
    return any(crl.issuer == leaf.issuer
               and crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
               for crl in crls)


def _uri_of(cert: crypto.X509) -> str | None:
    try:
        return identity_from_certificate(cert.to_cryptography()).uri
    except ValueError:
        return None


def _verify_error(errno: int) -> str:
    """OpenSSL's text for an X509 verify error number (e.g. "unable to get local issuer certificate")."""
    from OpenSSL._util import ffi, lib  # pyOpenSSL's own binding; it exposes no public call for this

    try:
        return str(ffi.string(lib.X509_verify_cert_error_string(errno)).decode("ascii", "replace"))
    except Exception:  # pragma: no cover - a binding without the function
        return f"verify error {errno}"


class _Binder:
    """The handshake's verify callback: collects the verified chain and binds the leaf's identity to it.

    A leaf naming a party configured in ``parties`` is refused unless
    :func:`chain_refusal` accepts it; with ``expect`` (a dialler that knows
    whom it calls) the leaf must be that party.  A leaf naming no configured
    party passes, for the caller to refuse as not one of its parties.
    What was decided stays on the connection for :func:`peer_identity` and
    for re-checking on reload.
    """

    def __init__(self, parties: PartyAnchors | None) -> None:
        self.parties = parties

    def __call__(self, conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int,
                 expect: tuple[str, str | None] | None = None) -> bool:
        if not ok:
            if not conn.__dict__.get("_hpf_said"):  # one line per connection, at its first error
                conn._hpf_said = True  # type: ignore[attr-defined]
                log.warn("tls.chain_refused", kind="chain_refused", peer=_uri_of(cert), depth=depth,
                         subject=_common_name(cert.to_cryptography().subject), reason=_verify_error(errno))
            return False
        seen = conn.__dict__.setdefault("_hpf_seen", {})
        seen[depth] = cert
        if depth != 0:
            return True
        chain = [seen[d].to_cryptography() for d in sorted(seen)]
        conn._hpf_chain = chain  # type: ignore[attr-defined]
        try:
            identity: PeerIdentity | None = identity_from_certificate(chain[0])
        except ValueError:
            identity = None
        if expect is not None and expect[1] is None:  # any party of the role (ExpectPeer with no name)
            if identity is None or identity.role != expect[0]:
                log.warn("tls.identity_refused", kind="identity_refused",
                         peer=identity.uri if identity else None,
                         reason=f"certificate does not name an hpf://{expect[0]}/ party",
                         anchor=chain[-1].fingerprint(hashes.SHA256()).hex()[:12])
                return False
            expect = (identity.role, identity.name)
        party = expect or ((identity.role, identity.name) if identity is not None else None)
        if self.parties is None:
            reason = None if expect is None or (identity and (identity.role, identity.name) == expect) \
                else f"certificate does not name hpf://{expect[0]}/{expect[1]}"
        elif party is not None and (expect is not None or party in self.parties):
            reason = chain_refusal(chain, party[0], party[1], self.parties)
        else:
            reason = None
        if reason is not None:
            log.warn("tls.identity_refused", kind="identity_refused",
                     peer=identity.uri if identity else None, reason=reason,
                     anchor=chain[-1].fingerprint(hashes.SHA256()).hex()[:12])
            return False
        conn._hpf_bound = party if self.parties is not None and party in self.parties else None  # type: ignore[attr-defined]
        return True


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


class _BoundOptions(CertificateOptions):
    """CertificateOptions that remember whom they trust for what, to bind and re-check identities."""

    parties: PartyAnchors | None = None
    revocations: list[x509.CertificateRevocationList] = []
    binder: _Binder

    def refusal(self, conn: SSL.Connection) -> str | None:
        """Why an open connection made under older options is not acceptable under these, or None."""
        chain = getattr(conn, "_hpf_chain", None)
        party = getattr(conn, "_hpf_bound", None)
        if not chain or party is None:
            return None  # nothing was bound on it: no party of ours to lose
        if self.parties is None:
            return None
        reason = chain_refusal(chain, party[0], party[1], self.parties)
        if reason is None and _revoked(chain[0], self.revocations):
            reason = "certificate revoked"
        return reason


def _options(
    certificate: Path,
    private_key: Path,
    trust: Sequence[Path] | PartyAnchors,
    crls: Sequence[Path],
    alpn: Sequence[bytes] = (),
) -> CertificateOptions:
    leaf, extra_chain, key = _load_identity(certificate, private_key)
    parties = trust if isinstance(trust, PartyAnchors) else None
    anchors = _load_trust(parties.bundles if parties is not None else trust)  # type: ignore[arg-type]
    revocations = _load_crls(crls)
    # CertificateOptions' annotations still say pyOpenSSL PKey/X509, but these
    # values only reach Context.use_certificate/use_privatekey/
    # add_extra_chain_cert, which take cryptography objects (and warn on the
    # deprecated pyOpenSSL ones).  The trust store still wants pyOpenSSL X509.
    options = _BoundOptions(
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
    options.parties, options.revocations = parties, revocations
    options.binder = _Binder(parties)
    # The same verification OpenSSL does (VERIFY_CLIENT_ONCE as Twisted sets it),
    # plus binding each configured party's identity to its own anchor.
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT | SSL.VERIFY_CLIENT_ONCE,
                       options.binder)
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
    trust: Sequence[Path] | PartyAnchors,
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
    With ``trust`` a :class:`PartyAnchors`, its bundles are trusted and a
    client naming one of its parties is accepted only as :func:`chain_refusal`
    allows (refused in the handshake, logged as ``tls.identity_refused``).
    """
    return _options(certificate, private_key, trust, crls, alpn)


def client_options(
    certificate: Path,
    private_key: Path,
    trust: Sequence[Path] | PartyAnchors,
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
    New connections use the new certificate, key, trust and CRLs; open ones
    keep their context, except those whose peer the new options refuse
    (revoked, party removed, anchor changed), which are closed.
    """

    def __init__(self, options: CertificateOptions, name: str = "") -> None:
        self._current = options
        self.name = name
        # Open connections, to re-check on replace (weak: a closed one just goes).
        self._live: weakref.WeakKeyDictionary[TLSMemoryBIOProtocol, SSL.Connection] = (
            weakref.WeakKeyDictionary())

    @property
    def current(self) -> CertificateOptions:
        """The options new connections are made with."""
        return self._current

    def replace(self, options: CertificateOptions) -> int:
        """Use ``options`` for every connection from now on, and close open ones they refuse.

        An open connection whose peer was bound to a configured party is
        aborted at once when, under ``options``, its certificate is revoked,
        its party is no longer configured, or its chain no longer ends at that
        party's anchor (logged as ``tls.connection_closed``).  Returns how
        many were closed.
        """
        self._current = options
        check = getattr(options, "refusal", None)
        closed = 0
        if check is None:
            return closed
        for protocol, conn in list(self._live.items()):
            reason = check(conn)
            if reason is None or getattr(protocol, "disconnected", False):
                continue
            party = getattr(conn, "_hpf_bound", None)
            log.warn("tls.connection_closed", kind="closed_on_reload", listener=self.name,
                     peer=f"hpf://{party[0]}/{party[1]}" if party else None, reason=reason)
            protocol.abortConnection()
            closed += 1
        return closed

    def serverConnectionForTLS(  # noqa: N802 (Twisted interface)
        self, tlsProtocol: TLSMemoryBIOProtocol  # noqa: N803
    ) -> SSL.Connection:
        conn = self._current.serverConnectionForTLS(tlsProtocol)
        self._live[tlsProtocol] = conn
        return conn

    def clientConnectionForTLS(  # noqa: N802 (Twisted interface)
        self, tlsProtocol: TLSMemoryBIOProtocol  # noqa: N803
    ) -> SSL.Connection:
        conn = self._current.clientConnectionForTLS(tlsProtocol)
        self._live[tlsProtocol] = conn
        return conn


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


def export_crl_next_updates(gauge: Any, crls: Sequence[Path]) -> list[tuple[str, datetime.datetime | None]]:
    """Set ``gauge{issuer}`` to each CRL's nextUpdate (Unix time), dropping issuers no longer listed.

    The alert rule compares it with the time, so a stale CRL is seen even
    when nothing reloads.  Unreadable files leave the gauge as it was.
    """
    updates = crl_next_updates(crls)
    current = {issuer: when.timestamp() for issuer, when in updates if when is not None}
    for issuer, value in current.items():
        gauge.labels(issuer).set(value)
    listed = {s.labels["issuer"] for m in gauge.collect() for s in m.samples}
    for issuer in listed - set(current):
        gauge.remove(issuer)
    return updates


@implementer(IOpenSSLClientConnectionCreator)
class ExpectPeer:
    """Client TLS that also refuses, during the handshake, a server that is not ``role/name``.

    For clients that cannot look at the peer after the handshake (twisted.web's
    Agent): the chain is verified as ``options`` says, and the leaf must carry
    the ``hpf://ROLE/NAME`` identity, bound to that party's own anchor when
    ``options`` trust a :class:`PartyAnchors` — our hostname verification.
    ``name`` None accepts any party of ``role``.
    """

    def __init__(self, options: TLSOptions, role: str, name: str | None) -> None:
        self._options = options
        self.role = role
        self.name = name

    def clientConnectionForTLS(  # noqa: N802 (Twisted interface)
        self, tlsProtocol: TLSMemoryBIOProtocol  # noqa: N803
    ) -> SSL.Connection:
        conn = self._options.clientConnectionForTLS(tlsProtocol)
        options = self._options.current if isinstance(self._options, ReloadableOptions) else self._options
        binder = getattr(options, "binder", None) or _Binder(None)
        expect = (self.role, self.name)
        conn.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
                        lambda c, cert, errno, depth, ok: binder(c, cert, errno, depth, ok, expect))
        return conn


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
