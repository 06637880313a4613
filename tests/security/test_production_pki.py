"""``keys init --production`` issues short-lived leaves that say where revocation is published,
and ``check-config`` warns about a config that trusts a development CA (issue 16, item 10).
"""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from gateway.demo import BANKS, CENTRE, write_demo_config
from gateway.pki import MAX_PRODUCTION_DAYS, init_dev_pki, is_development_ca

pytestmark = pytest.mark.slow

CRL_URL = "http://pki.example.cn/hpf/ca.crl"


def hpf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _init_production(keys: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    parties = [a for b in BANKS for a in ("--bank", b)] + ["--centre", CENTRE]
    return hpf("keys", "init", str(keys), "--production", "--crl-url", CRL_URL, *parties, *extra)


def test_production_leaves_live_at_most_397_days_and_name_the_crl(tmp_path):
    out = _init_production(tmp_path / "keys")
    assert out.returncode == 0, out.stderr
    ca = _cert(tmp_path / "keys" / "ca.crt")
    assert not is_development_ca(ca)
    leaves = [_cert(p) for p in sorted((tmp_path / "keys").glob("*.crt")) if p.name != "ca.crt"]
    assert len(leaves) == len(BANKS) + 4  # banks, the centre, gateway, ledger, supervisor
    for leaf in leaves:
        assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= datetime.timedelta(days=MAX_PRODUCTION_DAYS)
        points = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert [n.value for p in points for n in p.full_name] == [CRL_URL]
        leaf.verify_directly_issued_by(ca)
    crl = x509.load_pem_x509_crl((tmp_path / "keys" / "ca.crl").read_bytes())
    assert crl.is_signature_valid(ca.public_key()) and len(crl) == 0  # a first CRL to publish at the URL


@pytest.mark.parametrize("extra,why", [
    (("--days", "398"), "at most 397"),
    (("--crl-url", "ftp://nowhere"), "CRL distribution point"),
])
def test_production_refuses_a_longer_life_or_no_usable_crl_url(tmp_path, extra, why):
    out = _init_production(tmp_path / "keys", *extra)
    assert out.returncode == 2 and why in out.stderr, out.stderr
    assert not (tmp_path / "keys" / "ca.key").exists()  # refused before anything was written


def test_production_refuses_to_issue_from_a_development_ca(tmp_path):
    init_dev_pki(tmp_path / "keys", banks=[], centres=[])
    out = _init_production(tmp_path / "keys")
    assert out.returncode == 2 and "development CA" in out.stderr


def test_a_production_ca_issues_nothing_without_production_rules(tmp_path):
    assert _init_production(tmp_path / "keys").returncode == 0
    out = hpf("keys", "init", str(tmp_path / "keys"), "--bank", "B009")
    assert out.returncode == 2 and "production CA" in out.stderr
    assert not (tmp_path / "keys" / "bank-B009.crt").exists()


def test_development_leaves_carry_no_crl_point_and_their_ca_is_marked(tmp_path):
    pki = init_dev_pki(tmp_path / "keys", banks=["B001"], centres=[CENTRE])
    assert is_development_ca(_cert(pki.ca_cert))
    with pytest.raises(x509.ExtensionNotFound):
        _cert(pki.cert("bank", "B001")).extensions.get_extension_for_class(x509.CRLDistributionPoints)


def test_check_config_warns_when_a_config_trusts_a_development_ca(tmp_path):
    dev, prod = tmp_path / "dev", tmp_path / "prod"
    init_dev_pki(dev / "keys", banks=list(BANKS), centres=[CENTRE])
    write_demo_config(dev)
    out = hpf("check-config", "-c", str(dev / "gateway.toml"))
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if "warning" in line]
    assert warnings and all("tls.ca" in w and "development CA" in w for w in warnings), out.stderr

    assert _init_production(prod / "keys").returncode == 0
    write_demo_config(prod)
    out = hpf("check-config", "-c", str(prod / "gateway.toml"))
    assert out.returncode == 0 and "warning" not in out.stderr, out.stderr
