"""What a front-end bank's config gives its link: status asked before any resend unless the
bank says otherwise, and CCB's WLPT client as tcp://HOST:PORT under the same address guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import check_config, load_config

from .test_bocb2e_config import BOC, config_with

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
