"""What a front-end bank's config gives its link: status asked before any resend unless the
bank says otherwise, and CCB's WLPT client as tcp://HOST:PORT under the same address guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import check_config, load_config

from .test_bocb2e_config import BOC, ICBC, config_with

CCB = """
[banks.B005]
name = "建设银行示例分行"
adapter = "ccb"
node = "105001"
direction = "connect"
endpoint = "tcp:127.0.0.1:12345"
window = 16
[banks.B005.front_end]
url = "{url}"
custid = "JS32000000001"
cusopr = "GW001"
password_file = "boc.pwd"
"""


def test_a_front_end_bank_asks_status_before_any_resend_by_default(tmp_path: Path) -> None:
    config = load_config(config_with(tmp_path, BOC.format(url="http://127.0.0.1:8080/B2EC/E2BServlet")),
                         check_files=False)
    assert config.banks["B003"].status is not None and config.banks["B003"].status.before_resend
    assert config.banks["B001"].status is None or not config.banks["B001"].status.before_resend


def test_a_front_end_bank_may_say_its_bank_dedupes(tmp_path: Path) -> None:
    extra = BOC.format(url="http://127.0.0.1:8080/B2EC/E2BServlet").replace(
        "window = 16\n", "window = 16\nstatus_before_resend = false\n", 1)
    assert not load_config(config_with(tmp_path, extra), check_files=False).banks["B003"].status.before_resend


def test_a_ccb_bank_reaches_its_client_over_tcp_on_a_guarded_address(tmp_path: Path) -> None:
    bank = load_config(config_with(tmp_path, CCB.format(url="tcp://127.0.0.1:12345")), check_files=False).banks["B005"]
    assert bank.front_end is not None and bank.front_end.url == "tcp://127.0.0.1:12345"
    assert bank.front_end.password() == "s3cret" and bank.status.before_resend


@pytest.mark.parametrize("url, problem", [
    ("http://127.0.0.1:12345", "must be tcp://"),
    ("tcp://10.1.2.3:12345", "neither loopback nor a named local address"),
    ("tcp://127.0.0.1", "takes a port"),
])
def test_a_ccb_url_that_is_not_a_local_tcp_address_is_refused(tmp_path: Path, url: str, problem: str) -> None:
    problems = check_config(config_with(tmp_path, CCB.format(url=url)))
    assert any("banks.B005.front_end.url" in p and problem in p for p in problems), problems


def _with(text: str, header: str, extra: str) -> str:
    """``text`` with ``extra`` lines added to the bank table opened by ``header``."""
    assert header in text
    return text.replace(header + "\n", header + "\n" + extra, 1)


@pytest.mark.parametrize("bank_id, text", [
    ("B003", BOC.format(url="http://127.0.0.1:8080/B2EC/E2BServlet")),
    ("B004", ICBC.format(sign="http://127.0.0.1:449")),
    ("B005", CCB.format(url="tcp://127.0.0.1:12345")),
])
def test_a_front_end_bank_refuses_a_signature_it_could_not_carry(tmp_path: Path, bank_id: str, text: str) -> None:
    # bocb2e, ICBC's NC and CCB's WLPT have no place for the gateway's instruction signature
    # (the front-end signs with the bank's certificate): a signature_alg would be dropped.
    signed = _with(text, f"[banks.{bank_id}]", 'signature_alg = "ed25519"\nsigning_key = "k.key"\n')
    problems = check_config(config_with(tmp_path, signed))
    alg = [p for p in problems if f"banks.{bank_id}.signature_alg" in p]
    assert len(alg) == 1 and f"bank {bank_id}" in alg[0] and "means nothing" in alg[0], problems
    assert any(f"banks.{bank_id}.signing_key" in p for p in problems), problems
    # "none" says nothing new and passes.
    plain = _with(text, f"[banks.{bank_id}]", 'signature_alg = "none"\n')
    assert bank_id in load_config(config_with(tmp_path, plain), check_files=False).banks


@pytest.mark.parametrize("extra, key", [
    ('connection = "per_request"\n', "connection"),
    ("request_timeout = 30\n", "request_timeout"),
    ('peer_endpoint = "tcp:8081"\n', "peer_endpoint"),
])
def test_a_front_end_bank_refuses_link_keys_it_has_no_use_for(tmp_path: Path, extra: str, key: str) -> None:
    text = _with(BOC.format(url="http://127.0.0.1:8080/B2EC/E2BServlet"), "[banks.B003]", extra)
    problems = check_config(config_with(tmp_path, text))
    assert any(f"banks.B003.{key}: means nothing for bank B003" in p for p in problems), problems


def test_a_front_end_bank_is_dialled_never_listened_for(tmp_path: Path) -> None:
    text = BOC.format(url="http://127.0.0.1:8080/B2EC/E2BServlet").replace(
        'direction = "connect"\nendpoint = "tcp:127.0.0.1:8080"',
        'direction = "listen"\nendpoint = "tcp:8080:interface=127.0.0.1"')
    problems = check_config(config_with(tmp_path, text))
    assert any("banks.B003.direction" in p and "connect" in p for p in problems), problems
