"""The development PKI (gateway.pki) and the pure identity/key-file checks of gateway.tls."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.pki import DevPki, init_dev_pki, issue, leaf_stem, make_ca, write_crl
from gateway.tls import (
    InsecureKeyError,
    PeerIdentity,
    certificate_not_after,
    check_key_file,
    identity_from_certificate,
    resolve_credential,
)

PARTIES = [
    ("gateway", "main", "gateway"),
    ("ledger", "main", "ledger"),
    ("bank", "B001", "bank-B001"),
    ("bank", "B002", "bank-B002"),
    ("centre", "C52240", "centre-C52240"),
    ("supervisor", "sup1", "supervisor-sup1"),
]


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    return init_dev_pki(tmp_path / "pki", banks=["B001", "B002"], centres=["C52240"])


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 0: a file written without an explicit mode would come out 0666."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# -- files and modes -----------------------------------------------------------


def test_init_writes_ca_and_one_pair_per_party(pki: DevPki) -> None:
    names = {p.name for p in pki.directory.iterdir()}
    expected = {"ca.crt", "ca.key"}
    for _, _, stem in PARTIES:
        expected |= {f"{stem}.crt", f"{stem}.key"}
    assert names == expected
    assert pki.ca_cert == pki.directory / "ca.crt"
    assert pki.cert("bank", "B001") == pki.directory / "bank-B001.crt"
    assert pki.key("centre", "C52240") == pki.directory / "centre-C52240.key"
    assert pki.cert("gateway", "main") == pki.directory / "gateway.crt"


def test_private_keys_are_0600_certificates_0644_directory_0700(
    tmp_path: Path, permissive_umask: None
) -> None:
    pki = init_dev_pki(tmp_path / "new" / "pki", banks=["B001"], centres=["C52240"])
    assert _mode(pki.directory) == 0o700
    for path in pki.directory.iterdir():
        if path.suffix == ".key":
            assert _mode(path) == 0o600, path
        else:
            assert _mode(path) == 0o644, path


def test_existing_directory_mode_is_left_alone(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    init_dev_pki(directory, banks=[], centres=[])
    assert _mode(directory) == 0o755


# -- certificate contents -----------------------------------------------------


def test_ca_is_a_critical_ca_that_signs_certificates_and_crls(pki: DevPki) -> None:
    ca = _cert(pki.ca_cert)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"
    ca.verify_directly_issued_by(ca)


@pytest.mark.parametrize(("role", "name", "stem"), PARTIES)
def test_each_leaf_names_its_party_and_loopback(
    pki: DevPki, role: str, name: str, stem: str
) -> None:
    cert = _cert(pki.directory / f"{stem}.crt")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"hpf://{role}/{name}"
    ]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.IPv4Address("127.0.0.1")
    ]
    identity = identity_from_certificate(cert)
    assert (identity.role, identity.name) == (role, name)


def test_leaf_extensions_allow_both_tls_roles_and_no_signing(pki: DevPki) -> None:
    ca = _cert(pki.ca_cert)
    leaf = _cert(pki.cert("bank", "B001"))
    leaf.verify_directly_issued_by(ca)
    ext = leaf.extensions
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = ext.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(leaf.public_key())
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest


def test_leaf_key_matches_its_certificate(pki: DevPki) -> None:
    key = serialization.load_pem_private_key(
        pki.key("centre", "C52240").read_bytes(), password=None
    )
    cert = _cert(pki.cert("centre", "C52240"))
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(
        der, spki
    )


def test_leaf_validity_follows_days(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path / "pki", banks=[], centres=[], supervisors=[], days=30)
    not_after = certificate_not_after(pki.cert("gateway", "main"))
    remaining = not_after - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(days=29) < remaining <= datetime.timedelta(days=30)
    assert not_after == _cert(pki.cert("gateway", "main")).not_valid_after_utc


def test_gateway_and_ledger_names_go_into_their_uris(tmp_path: Path) -> None:
    pki = init_dev_pki(
        tmp_path / "pki", banks=[], centres=[], gateway="gw2", ledger="prov", supervisors=[]
    )
    assert identity_from_certificate(_cert(pki.cert("gateway", "gw2"))).uri == (
        "hpf://gateway/gw2"
    )
    assert identity_from_certificate(_cert(pki.cert("ledger", "prov"))).uri == (
        "hpf://ledger/prov"
    )


# -- idempotence --------------------------------------------------------------


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_second_init_changes_nothing(pki: DevPki) -> None:
    before = _snapshot(pki.directory)
    again = init_dev_pki(pki.directory, banks=["B001", "B002"], centres=["C52240"])
    assert again == pki
    assert _snapshot(pki.directory) == before


def test_init_with_more_parties_keeps_existing_and_issues_missing(pki: DevPki) -> None:
    before = _snapshot(pki.directory)
    init_dev_pki(pki.directory, banks=["B001", "B003"], centres=["C11000"])
    after = _snapshot(pki.directory)
    for name, data in before.items():
        assert after[name] == data, name
    assert set(after) - set(before) == {
        "bank-B003.crt",
        "bank-B003.key",
        "centre-C11000.crt",
        "centre-C11000.key",
    }
    _cert(pki.cert("bank", "B003")).verify_directly_issued_by(_cert(pki.ca_cert))


def test_missing_certificate_is_reissued_for_the_existing_key(pki: DevPki) -> None:
    key_before = pki.key("bank", "B001").read_bytes()
    old = _cert(pki.cert("bank", "B001"))
    pki.cert("bank", "B001").unlink()
    init_dev_pki(pki.directory, banks=["B001"], centres=[])
    new = _cert(pki.cert("bank", "B001"))
    assert pki.key("bank", "B001").read_bytes() == key_before
    assert new.serial_number != old.serial_number
    assert new.public_key() == old.public_key()


def test_certificate_without_key_is_refused_not_overwritten(pki: DevPki) -> None:
    pki.key("bank", "B001").unlink()
    with pytest.raises(ValueError, match="without its key"):
        init_dev_pki(pki.directory, banks=["B001"], centres=[])


def test_half_a_ca_is_refused(pki: DevPki) -> None:
    pki.ca_key.unlink()
    with pytest.raises(ValueError, match="ca.crt / ca.key"):
        init_dev_pki(pki.directory, banks=[], centres=[])


def test_leaf_from_another_ca_is_refused(pki: DevPki, tmp_path: Path) -> None:
    other = tmp_path / "other"
    ca_cert, ca_key = make_ca(other, "another CA")
    pki.cert("bank", "B002").unlink()
    pki.key("bank", "B002").unlink()
    issue(ca_cert, ca_key, pki.directory, "bank", "B002")
    with pytest.raises(ValueError, match="not issued by"):
        init_dev_pki(pki.directory, banks=["B002"], centres=[])


def test_renamed_gateway_is_refused_not_kept_under_the_old_identity(pki: DevPki) -> None:
    with pytest.raises(ValueError, match="names hpf://gateway/main, not hpf://gateway/gw2"):
        init_dev_pki(pki.directory, banks=[], centres=[], gateway="gw2")


def test_validity_of_less_than_a_day_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="days"):
        init_dev_pki(tmp_path / "pki", banks=[], centres=[], days=0)


def test_issue_never_overwrites_a_certificate(pki: DevPki) -> None:
    with pytest.raises(FileExistsError):
        issue(pki.ca_cert, pki.ca_key, pki.directory, "bank", "B001")


def test_make_ca_never_overwrites(pki: DevPki) -> None:
    with pytest.raises(FileExistsError):
        make_ca(pki.directory, "again")


@pytest.mark.parametrize(
    ("role", "name"),
    [("bank", "../etc"), ("bank", ""), ("bank", "x" * 33), ("admin", "x"), ("bank", "a/b")],
)
def test_bad_role_or_name_has_no_file_name(role: str, name: str) -> None:
    with pytest.raises(ValueError):
        leaf_stem(role, name)


@pytest.mark.parametrize("name", ["../etc", "", "x" * 33, "a/b", "B 1"])
def test_init_refuses_bad_party_names_before_writing_leaves(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(ValueError, match="bad bank name"):
        init_dev_pki(tmp_path / "pki", banks=[name], centres=[])
    assert not (tmp_path / "pki").exists()


def test_issue_with_explicit_validity(pki: DevPki, tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    cert_path, key_path = issue(
        pki.ca_cert,
        pki.ca_key,
        tmp_path / "expired",
        "centre",
        "C52240",
        not_before=now - datetime.timedelta(days=10),
        not_after=now - datetime.timedelta(days=1),
    )
    assert _mode(key_path) == 0o600
    assert _cert(cert_path).not_valid_after_utc == now - datetime.timedelta(days=1)
    with pytest.raises(ValueError):
        issue(
            pki.ca_cert,
            pki.ca_key,
            tmp_path / "backwards",
            "centre",
            "C52240",
            not_before=now,
            not_after=now,
        )


def test_crl_lists_revoked_serials(pki: DevPki, tmp_path: Path) -> None:
    revoked = pki.cert("centre", "C52240")
    crl_path = write_crl(pki.ca_cert, pki.ca_key, tmp_path / "ca.crl", [revoked])
    crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    assert crl.is_signature_valid(_cert(pki.ca_cert).public_key())
    serial = _cert(revoked).serial_number
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    other = _cert(pki.cert("bank", "B001")).serial_number
    assert crl.get_revoked_certificate_by_serial_number(other) is None
    # Re-issuing replaces the file.
    write_crl(pki.ca_cert, pki.ca_key, crl_path, [])
    crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is None


# -- identity_from_certificate -----------------------------------------------


def _self_signed(sans: Sequence[x509.GeneralName] | None) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256())


def _uri(value: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(value)


def test_identity_is_role_name_uri_and_sha256_fingerprint() -> None:
    cert = _self_signed([_uri("hpf://bank/B001"), x509.DNSName("localhost")])
    assert identity_from_certificate(cert) == PeerIdentity(
        role="bank",
        name="B001",
        uri="hpf://bank/B001",
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
    )
    assert len(identity_from_certificate(cert).fingerprint) == 64


def test_identity_ignores_uris_of_other_schemes() -> None:
    cert = _self_signed([_uri("https://example.org/x"), _uri("hpf://ops/monitor")])
    assert identity_from_certificate(cert).uri == "hpf://ops/monitor"


def test_identity_refuses_certificate_without_san() -> None:
    with pytest.raises(ValueError, match="no subjectAltName"):
        identity_from_certificate(_self_signed(None))


def test_identity_refuses_zero_hpf_uris() -> None:
    cert = _self_signed([x509.DNSName("localhost"), _uri("https://example.org/")])
    with pytest.raises(ValueError, match="no hpf:// identity"):
        identity_from_certificate(cert)


def test_identity_refuses_two_hpf_uris() -> None:
    cert = _self_signed([_uri("hpf://centre/C52240"), _uri("hpf://bank/B001")])
    with pytest.raises(ValueError, match="2 hpf:// identities"):
        identity_from_certificate(cert)


@pytest.mark.parametrize(
    "uri",
    [
        "hpf://centre/",
        "hpf://centre",
        "hpf://centre/C52240/extra",
        "hpf://centre/C52240?x=1",
        "hpf://centre/C5 2240",
        "hpf://centre/" + "C" * 33,
        "hpf:centre/C52240",
        "HPF://centre/C52240",
        "hpf://Centre/C52240",
        "hpf://centre/C52240%00",
        "hpf://centre/C52240\n",
    ],
)
def test_identity_refuses_malformed_uri(uri: str) -> None:
    with pytest.raises(ValueError, match="malformed"):
        identity_from_certificate(_self_signed([_uri(uri)]))


def test_identity_refuses_unknown_role() -> None:
    with pytest.raises(ValueError, match="unknown role 'admin'"):
        identity_from_certificate(_self_signed([_uri("hpf://admin/root")]))


# -- key files and credentials ------------------------------------------------


def _key_file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "k.key"
    path.write_bytes(b"not really a key")
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_check_key_file_accepts_owner_only(tmp_path: Path, mode: int) -> None:
    check_key_file(_key_file(tmp_path, mode))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_check_key_file_refuses_group_or_world_access(tmp_path: Path, mode: int) -> None:
    path = _key_file(tmp_path, mode)
    with pytest.raises(InsecureKeyError) as info:
        check_key_file(path)
    assert str(path) in str(info.value)
    assert f"{mode:04o}" in str(info.value)


def test_check_key_file_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InsecureKeyError, match="missing"):
        check_key_file(tmp_path / "nope.key")


def test_check_key_file_refuses_a_directory(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir(mode=0o700)
    with pytest.raises(InsecureKeyError, match="not a regular file"):
        check_key_file(directory)


def test_dev_pki_keys_pass_check_key_file(pki: DevPki) -> None:
    for path in pki.directory.glob("*.key"):
        check_key_file(path)


def test_resolve_credential_prefers_systemd_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "gateway.key").write_bytes(b"x")
    configured = tmp_path / "keys" / "gateway.key"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert resolve_credential(configured) == creds / "gateway.key"
    # A credential of another name does not shadow this file.
    other = tmp_path / "keys" / "ledger.key"
    assert resolve_credential(other) == other


def test_resolve_credential_without_systemd_is_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = tmp_path / "gateway.key"
    assert resolve_credential(path) == path
