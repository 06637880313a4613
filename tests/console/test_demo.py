"""What ``hpf-gateway demo --serve`` gives a person for the console: its config and a browser identity."""

from __future__ import annotations

import stat

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from gateway.demo import BDC_CENTRE, CENTRE, write_browser_identity, write_ledger_config
from gateway.ledger.config import load_ledger_config
from gateway.pki import init_dev_pki, issue


def test_the_demo_ledger_serves_the_console_to_its_supervisor_and_centre_staff(tmp_path):
    path = write_ledger_config(tmp_path, {"ingest": 1, "supervisor": 2, "ledger_ops": 3, "console": 4})
    console = load_ledger_config(path, check_files=False).console
    assert console is not None and console.listen == "tcp:4:interface=127.0.0.1"
    assert console.staff["staff1"].centre == CENTRE and console.cities["demo"].centres == (CENTRE, BDC_CENTRE["id"])
    assert load_ledger_config(write_ledger_config(tmp_path, {"ingest": 1, "supervisor": 2, "ledger_ops": 3}),
                              check_files=False).console is None


def test_a_browser_identity_is_a_pkcs12_file_for_its_owner_only_with_a_fresh_password(tmp_path):
    pki = init_dev_pki(tmp_path / "keys", banks=(), centres=())
    issue(pki.ca_cert, pki.ca_key, pki.directory, "staff", "staff1")
    path, password = write_browser_identity(pki.directory, "supervisor", "sup1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key, cert, extra = pkcs12.load_key_and_certificates(path.read_bytes(), password.encode())
    assert key is not None and cert is not None and len(extra) == 1
    assert "hpf://supervisor/sup1" in str(cert.extensions)
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(path.read_bytes(), b"wrong")
    _, again = write_browser_identity(pki.directory, "supervisor", "sup1")
    assert again != password


def test_with_a_second_city_the_ledger_trusts_its_gateway_under_that_citys_own_ca(tmp_path):
    from gateway.config import load_config
    from gateway.demo import SECOND_CITY, write_second_city_config

    init_dev_pki(tmp_path / "keys", banks=(), centres=())  # the province's CA, which issued the ledger's
    city = load_config(write_second_city_config(tmp_path, "https://127.0.0.1:1"))
    assert list(city.centres) == [SECOND_CITY["centre"]] and list(city.accounts) == [SECOND_CITY["account"]]
    assert city.ledger is not None and city.ledger.ca.resolve() == (tmp_path / "keys" / "ca.crt").resolve()
    config = load_ledger_config(write_ledger_config(
        tmp_path, {"ingest": 1, "supervisor": 2, "ledger_ops": 3, "console": 4}, second_city=True), check_files=False)
    north = config.gateways[SECOND_CITY["gateway"]]
    assert north.ca == tmp_path / "north" / "keys" / "ca.crt"
    assert config.accounts[SECOND_CITY["account"]].centre == SECOND_CITY["centre"]
    assert config.console.cities["north"].centres == (SECOND_CITY["centre"],)
