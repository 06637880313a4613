"""banks.X.front_end: the front-end of a bocb2e or ICBC bank, its guard and its credentials."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config import FrontEndConfig, check_config, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "conf" / "gateway.example.toml"

BOC = """
[banks.B003]
name = "中国银行示例分行"
adapter = "bocb2e"
node = "104000"
direction = "connect"
endpoint = "tcp:127.0.0.1:8080"
window = 16
[banks.B003.front_end]
url = "{url}"
local_addresses = ["192.168.1.20"]
termid = "E127000000001"
custid = "12345678"
cusopr = "BOC"
password_file = "boc.pwd"
"""

ICBC = """
[banks.B004]
name = "工商银行示例分行"
adapter = "icbc"
node = "102001"
direction = "connect"
endpoint = "tcp:127.0.0.1:448"
window = 16
[banks.B004.front_end]
url = "http://127.0.0.1:448/servlet/ICBCCMPAPIReqServlet"
cis = "400090001604411"
cert_id = "ncrp.y.4000"
sign_url = "{sign}"
"""


def config_with(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8") + extra, encoding="utf-8")
    pwd = tmp_path / "boc.pwd"
    pwd.write_text("s3cret\n", encoding="utf-8")
    os.chmod(pwd, 0o600)
    return path


def test_a_bocb2e_bank_reads_its_front_end_and_the_password_only_when_asked(tmp_path: Path) -> None:
    path = config_with(tmp_path, BOC.format(url="http://192.168.1.20:8080/B2EC/E2BServlet"))
    bank = load_config(path, check_files=False).banks["B003"]
    fe = bank.front_end
    assert isinstance(fe, FrontEndConfig)
    assert (fe.url, fe.termid, fe.custid, fe.cusopr, fe.timeout) == (
        "http://192.168.1.20:8080/B2EC/E2BServlet", "E127000000001", "12345678", "BOC", 25.0)
    assert fe.password() == "s3cret" and "s3cret" not in repr(fe)


@pytest.mark.parametrize("url", ["http://1.192.105.29:8080/B2EC/E2BServlet",
                                 "http://bank.example.com/x", "ftp://127.0.0.1/x"])
def test_a_front_end_off_the_local_network_is_refused(tmp_path: Path, url: str) -> None:
    problems = check_config(config_with(tmp_path, BOC.format(url=url)), check_files=False)
    assert any("banks.B003.front_end.url" in p for p in problems), problems


def test_icbc_needs_its_own_credentials_and_a_guarded_signing_port(tmp_path: Path) -> None:
    good = config_with(tmp_path, ICBC.format(sign="http://127.0.0.1:449"))
    fe = load_config(good, check_files=False).banks["B004"].front_end
    assert fe is not None and (fe.cis, fe.cert_id, fe.sign_url) == (
        "400090001604411", "ncrp.y.4000", "http://127.0.0.1:449")
    bad = config_with(tmp_path, ICBC.format(sign="http://10.9.9.9:449"))
    assert any("front_end.sign_url" in p for p in check_config(bad, check_files=False))


def test_front_end_is_required_for_and_only_for_front_end_adapters(tmp_path: Path) -> None:
    missing = BOC.format(url="http://127.0.0.1/x").split("[banks.B003.front_end]")[0]
    problems = check_config(config_with(tmp_path, missing), check_files=False)
    assert any("banks.B003.front_end: is required" in p for p in problems), problems
    stray = "\n[banks.B001.front_end]\nurl = \"http://127.0.0.1/x\"\n"
    text = EXAMPLE.read_text(encoding="utf-8").replace(
        '[banks.B002]', stray.strip() + "\n\n[banks.B002]", 1)
    path = tmp_path / "stray.toml"
    path.write_text(text, encoding="utf-8")
    assert any("banks.B001.front_end" in p for p in check_config(path, check_files=False))


def test_unknown_and_other_adapters_keys_are_refused(tmp_path: Path) -> None:
    extra = BOC.format(url="http://127.0.0.1/x") + 'cis = "1"\npasword_file = "x"\n'
    problems = check_config(config_with(tmp_path, extra), check_files=False)
    assert any("front_end.cis: unknown key" in p for p in problems), problems
    assert any("front_end.pasword_file: unknown key" in p for p in problems), problems
