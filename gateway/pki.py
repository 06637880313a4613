"""A development PKI: one CA and a certificate per party, made with ``cryptography``.

This is for development, demos and tests.  Production parties bring their own
certificates (see ``keys/README.md``); nothing here is needed at run time.
With ``production=True`` the same code makes a small CA of our own fit for
production (:func:`init_pki`): leaves of at most :data:`MAX_PRODUCTION_DAYS`
days that name where the CA's CRL is published, and a CA not marked as a
development one.  A development CA is marked in its subject
(:data:`DEVELOPMENT_MARK`), so :func:`development_cas` can tell a config that
trusts one.

Every leaf certificate names its party in the subjectAltName as a URI
``hpf://ROLE/NAME`` (``hpf://bank/B001``), which is what ``gateway.tls`` reads
after a handshake.  Every leaf also carries DNS ``localhost`` and IP
``127.0.0.1`` and both serverAuth and clientAuth, so any party can be a TLS
server or client on loopback.

Files written in the PKI directory::

    ca.crt  ca.key                       the CA
    gateway.crt  gateway.key             hpf://gateway/<gateway>
    ledger.crt  ledger.key               hpf://ledger/<ledger>
    bank-B001.crt  bank-B001.key         hpf://bank/B001
    centre-C52240.crt  centre-C52240.key hpf://centre/C52240
    supervisor-sup1.crt  ...             hpf://supervisor/sup1

Private keys are created with mode 0600 from the start (``os.open`` with the
mode, so there is no window in which they are readable by others); the
directory is created 0700.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.tls import IDENTITY_NAME, ROLES, identity_from_certificate

__all__ = [
    "ROLES",
    "DevPki",
    "DEVELOPMENT_MARK",
    "MAX_PRODUCTION_DAYS",
    "config_development_trust",
    "development_cas",
    "init_dev_pki",
    "init_pki",
    "is_development_ca",
    "issue",
    "leaf_stem",
    "make_ca",
    "write_crl",
]

# Roles with one instance per deployment: their files carry no name.
_SINGLETON_ROLES = frozenset({"gateway", "ledger"})

_CA_DAYS = 3650
# Certificates start a little in the past so that a peer whose clock is
# slightly behind does not see them as "not yet valid".
_BACKDATE = datetime.timedelta(minutes=5)
_KEY_MODE = 0o600
_CERT_MODE = 0o644

DEVELOPMENT_MARK = "DEVELOPMENT ONLY - not for production"
"""The organizationalUnitName of every CA ``keys init`` makes without ``--production``."""
_DEV_CA_NAME = "hpf-gateway development CA"   # also the CN of dev CAs made before the mark
MAX_PRODUCTION_DAYS = 397
"""The longest validity of a production leaf (the CA/Browser Forum's ceiling for TLS certificates)."""


@dataclass(frozen=True)
class DevPki:
    """Where a development PKI lives; paths only, nothing is read.

    ``cert(role, name)`` and ``key(role, name)`` give the file of one party,
    e.g. ``pki.cert("bank", "B001")``.  For the gateway and the ledger the
    file is named after the role alone (``gateway.crt``), whatever the name.
    """

    directory: Path
    ca_cert: Path
    ca_key: Path

    def cert(self, role: str, name: str = "main") -> Path:
        """The certificate file of party ``role``/``name``."""
        return self.directory / f"{leaf_stem(role, name)}.crt"

    def key(self, role: str, name: str = "main") -> Path:
        """The private key file of party ``role``/``name``."""
        return self.directory / f"{leaf_stem(role, name)}.key"


def leaf_stem(role: str, name: str) -> str:
    """The file name stem for a party: ``gateway``, ``ledger`` or ``ROLE-NAME``.

    Raises ``ValueError`` for an unknown role or a name outside
    ``[A-Za-z0-9_-]{1,32}`` (which also keeps path separators out).
    """
    _check_identity(role, name)
    return role if role in _SINGLETON_ROLES else f"{role}-{name}"


def init_dev_pki(
    directory: Path,
    *,
    banks: Iterable[str],
    centres: Iterable[str],
    gateway: str = "main",
    ledger: str = "main",
    supervisors: Iterable[str] = ("sup1",),
    days: int = 825,
) -> DevPki:
    """Create (or complete) a development PKI in ``directory``: :func:`init_pki` for development."""
    return init_pki(directory, banks=banks, centres=centres, gateway=gateway, ledger=ledger,
                    supervisors=supervisors, days=days)


def init_pki(
    directory: Path,
    *,
    banks: Iterable[str],
    centres: Iterable[str],
    gateway: str = "main",
    ledger: str = "main",
    supervisors: Iterable[str] = ("sup1",),
    days: int | None = None,
    production: bool = False,
    crl_url: str | None = None,
) -> DevPki:
    """Create (or complete) a PKI in ``directory``: development by default, else production.

    Development: a CA marked :data:`DEVELOPMENT_MARK`, leaves of ``days`` (825)
    days.  Production: a CA without the mark, leaves of ``days`` (at most and by
    default :data:`MAX_PRODUCTION_DAYS`) carrying a CRL distribution point
    ``crl_url`` (required, http or https), and a first, empty CRL ``ca.crl`` to
    publish there.  Neither kind issues from the other's CA.

    Idempotent: an existing CA is reused, existing leaf certificates are kept,
    and only missing ones are issued, each valid for ``days`` days.  A leaf
    whose key exists but whose certificate is missing gets a new certificate
    for that key.  Refuses (``ValueError``) rather than overwrite anything:
    half a CA (certificate without key or the reverse), a certificate without
    its key, or an existing leaf that this CA did not issue.
    """
    parties: list[tuple[str, str]] = [("gateway", gateway), ("ledger", ledger)]
    parties += [("bank", b) for b in banks]
    parties += [("centre", c) for c in centres]
    parties += [("supervisor", s) for s in supervisors]
    for role, name in parties:
        _check_identity(role, name)  # before anything is written
    if days is None:
        days = MAX_PRODUCTION_DAYS if production else 825
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    if production:
        if days > MAX_PRODUCTION_DAYS:
            raise ValueError(f"production leaves are valid for at most {MAX_PRODUCTION_DAYS} days, not {days}")
        if not crl_url or not re.fullmatch(r"https?://[^\s/]+/\S*", crl_url):
            raise ValueError("production leaves need a CRL distribution point: give an http(s) URL where "
                             "the CA's CRL is published")
    elif crl_url is not None:
        raise ValueError("a CRL distribution point is for production PKIs only")

    directory = Path(directory)
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
    ca_cert_path = directory / "ca.crt"
    ca_key_path = directory / "ca.key"
    if ca_cert_path.exists() != ca_key_path.exists():
        raise ValueError(
            f"{directory}: found one of ca.crt / ca.key without the other; "
            "refusing to guess (restore the missing file or remove both)"
        )
    if not ca_cert_path.exists():
        make_ca(directory, "hpf-gateway CA" if production else _DEV_CA_NAME, development=not production)
        if production:
            write_crl(ca_cert_path, ca_key_path, directory / "ca.crl")

    ca_cert = _load_cert(ca_cert_path)
    if production and is_development_ca(ca_cert):
        raise ValueError(f"{ca_cert_path} is a development CA: a production PKI needs its own directory")
    if not production and not is_development_ca(ca_cert):
        raise ValueError(f"{ca_cert_path} is a production CA: issue from it with --production (and its CRL URL)")
    pki = DevPki(directory=directory, ca_cert=ca_cert_path, ca_key=ca_key_path)
    for role, name in parties:
        cert_path, key_path = pki.cert(role, name), pki.key(role, name)
        if cert_path.exists():
            if not key_path.exists():
                raise ValueError(
                    f"{cert_path} exists without its key {key_path.name}; "
                    "remove the certificate to have both issued again"
                )
            existing = _load_cert(cert_path)
            try:
                existing.verify_directly_issued_by(ca_cert)
            except (ValueError, TypeError, InvalidSignature) as e:
                raise ValueError(
                    f"{cert_path} was not issued by {ca_cert_path}: {e}"
                ) from e
            # gateway.crt / ledger.crt carry no name in the file name, so a
            # changed gateway or ledger name must not keep the old identity.
            uri = identity_from_certificate(existing).uri
            if uri != f"hpf://{role}/{name}":
                raise ValueError(
                    f"{cert_path} names {uri}, not hpf://{role}/{name}; "
                    "remove it (and its key) to have it issued again"
                )
            continue
        now = _now()
        issue(
            ca_cert_path,
            ca_key_path,
            directory,
            role,
            name,
            not_before=now - _BACKDATE,
            not_after=now - _BACKDATE + datetime.timedelta(days=days),  # the whole period, backdate included
            crl_url=crl_url,
        )
    return pki


def is_development_ca(cert: x509.Certificate) -> bool:
    """True for a CA ``keys init`` made without ``--production`` (marked, or named as dev CAs were)."""
    units = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return DEVELOPMENT_MARK in units or _DEV_CA_NAME in names


def config_development_trust(config: Any) -> list[str]:
    """One line per trust bundle of a gateway config that holds a development CA.

    A production config must never trust one: its key sits beside the certificates it signed.
    """
    bundles = {"tls.ca": config.tls.ca}
    if config.ledger is not None:
        bundles["ledger.ca"] = config.ledger.ca
    bundles.update({f"banks.{b}.ca": bank.ca for b, bank in config.banks.items()})
    bundles.update({f"centres.{c}.ca": centre.ca for c, centre in config.centres.items()})
    lines = []
    for where, bundle in bundles.items():
        for subject in development_cas(bundle) if bundle is not None else ():
            lines.append(f"{where}: {bundle} holds the development CA {subject!r} (made by `hpf-gateway keys "
                         f"init` without --production): fine for a trial, never for production")
    return lines


def development_cas(bundle: Path) -> list[str]:
    """The subjects of the development CAs in the PEM bundle ``bundle`` (empty if none or unreadable)."""
    try:
        certs = x509.load_pem_x509_certificates(Path(bundle).read_bytes())
    except (OSError, ValueError):
        return []
    return [c.subject.rfc4514_string() for c in certs if is_development_ca(c)]


def make_ca(directory: Path, name: str, *, days: int = _CA_DAYS, development: bool = True) -> tuple[Path, Path]:
    """Create a new CA as ``directory/ca.crt`` and ``directory/ca.key``.

    The CA has an ECDSA P-256 key, BasicConstraints CA=True (critical,
    path length 0: it signs leaves only) and KeyUsage keyCertSign + cRLSign.
    A ``development`` CA carries :data:`DEVELOPMENT_MARK` as its subject's OU.
    Returns ``(ca_cert_path, ca_key_path)``.  Refuses to overwrite existing
    files (``FileExistsError``).
    """
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hpf-gateway"),
            *([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, DEVELOPMENT_MARK)] if development else []),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    _write_key(key_path, key)
    _write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), _CERT_MODE)
    return cert_path, key_path


def issue(
    ca_cert_path: Path,
    ca_key_path: Path,
    out_dir: Path,
    role: str,
    name: str,
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    crl_url: str | None = None,
) -> tuple[Path, Path]:
    """Issue a leaf certificate for ``hpf://ROLE/NAME`` signed by the given CA.

    With ``crl_url`` the leaf names it as its CRL distribution point.

    Writes ``out_dir/<stem>.crt`` and ``out_dir/<stem>.key`` (stem from
    ``leaf_stem``); if the key file already exists (and the certificate does
    not) the certificate is issued for that key.  Validity defaults to
    825 days from now; pass ``not_before``/``not_after`` (timezone-aware) for
    e.g. an expired certificate in a test.  Returns ``(cert_path, key_path)``.
    Refuses to overwrite an existing certificate (``FileExistsError``).
    """
    _check_identity(role, name)
    out_dir = Path(out_dir)
    if not out_dir.exists():
        out_dir.mkdir(mode=0o700, parents=True)
    stem = leaf_stem(role, name)
    cert_path, key_path = out_dir / f"{stem}.crt", out_dir / f"{stem}.key"
    if cert_path.exists():
        raise FileExistsError(f"{cert_path} already exists")

    ca_cert = _load_cert(ca_cert_path)
    ca_key = _load_ec_key(ca_key_path)
    if key_path.exists():
        key = _load_ec_key(key_path)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        _write_key(key_path, key)

    now = _now()
    if not_before is None:
        not_before = now - _BACKDATE
    if not_after is None:
        not_after = now + datetime.timedelta(days=825)
    if not_after <= not_before:
        raise ValueError("not_after must be later than not_before")

    uri = f"hpf://{role}/{name}"
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hpf-gateway"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(uri),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if crl_url is not None:
        builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(crl_url)], relative_name=None, reasons=None,
            crl_issuer=None)]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), _CERT_MODE)
    return cert_path, key_path


def write_crl(
    ca_cert_path: Path,
    ca_key_path: Path,
    out_path: Path,
    revoked: Iterable[Path] = (),
    *,
    days: int = 7,
) -> Path:
    """Write a PEM CRL signed by the CA, revoking the given certificate files.

    The CRL is valid for ``days`` days (its nextUpdate); a peer checking CRLs
    refuses every certificate of this CA once the CRL is stale, so it must be
    re-issued before then.  Replaces ``out_path`` atomically.
    """
    ca_cert = _load_cert(ca_cert_path)
    ca_key = _load_ec_key(ca_key_path)
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - _BACKDATE)
        .next_update(now + datetime.timedelta(days=days))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
    )
    for path in revoked:
        cert = _load_cert(path)
        if cert.issuer != ca_cert.subject:
            raise ValueError(f"{path} was not issued by {ca_cert_path}")
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(now - _BACKDATE)
            .build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    _write_file(tmp, crl.public_bytes(serialization.Encoding.PEM), _CERT_MODE)
    os.replace(tmp, out_path)
    return out_path


# -- helpers ------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _check_identity(role: str, name: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {sorted(ROLES)}")
    if not IDENTITY_NAME.fullmatch(name):
        raise ValueError(f"bad {role} name {name!r}: want 1-32 of [A-Za-z0-9_-]")


def _load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def _load_ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: the development PKI uses ECDSA keys only")
    return key


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_file(path, data, _KEY_MODE)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never replace an existing file (least of all a key); the mode is
    # given at creation so the file is never readable by others, not even
    # briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        f = os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
