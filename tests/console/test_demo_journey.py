"""The console over the live demo with bank offences: each offence's alert found and its evidence opened.

``hpf-gateway demo --serve`` runs the gateway, the simulated banks committing
offences on purpose, a second city's gateway and the ledger with its console;
the province supervisor (the demo's own certificate) finds the alert of every
offence in the inbox and opens its evidence, whose copies all verify; the
overview groups the two cities.  One demo and one browser for the module.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from gateway.demo import FAULT_RULES, SECOND_CITY
from tests.console.support import CHROMIUM, CHROMIUM_ARGS, chromium_missing
from tests.kit.procs import HPF, Proc

OFFENCES = sorted(FAULT_RULES)  # every offence the demo banks can commit, balance-break included


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    missing = chromium_missing()
    if missing:
        pytest.skip(missing)
    directory = tmp_path_factory.mktemp("demo")
    proc = Proc("demo", HPF + ["demo", "--dir", str(directory), "--serve", "--count", "60", "--rate", "60",
                               "--fault-every", "5", "--bank-faults", ",".join(OFFENCES)],
                directory / "demo.out").start()
    try:
        proc.wait_for(r"the supervision console: (https://localhost:\d+)/[\s\S]*\(or the PEM pair:", 150)
        text = proc.text()
        url = re.search(r"the supervision console: (https://localhost:\d+)/", text).group(1)
        # ... and how to import the supervisor's certificate into a browser: its PKCS#12 file and password
        p12 = re.search(r"(\S+supervisor-sup1\.p12)\s+one-time password: (\S+)", text)
        assert p12 is not None and Path(p12.group(1)).exists() and "Manage certificates > Import" in text, text[-3000:]
        assert "every offence raised its alert" in text, text[-3000:]
        yield url, directory / "keys"
    finally:
        proc.stop(30)


@pytest.fixture(scope="module")
def browser(demo: tuple[str, Path]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        yield b
        b.close()


def _as(browser: Any, demo: tuple[str, Path], who: str) -> Any:
    """A page presenting the demo's certificate ``who`` (``supervisor-sup1``, ``staff-staff1``)."""
    url, keys = demo
    context = browser.new_context(ignore_https_errors=True, locale="zh-CN", client_certificates=[
        {"origin": url, "certPath": str(keys / f"{who}.crt"), "keyPath": str(keys / f"{who}.key")}])
    context.set_default_timeout(15_000)
    return context.new_page()


@pytest.fixture(scope="module")
def page(browser: Any, demo: tuple[str, Path]) -> Any:
    return _as(browser, demo, "supervisor-sup1")


def test_the_supervisor_finds_each_offences_alert_and_its_evidence(demo, page):
    url, _ = demo
    page.goto(url + "/")
    table = page.inner_text("#by-centre-bank")
    assert SECOND_CITY["name"] in table and SECOND_CITY["centre"] in table and "C52240" in table
    for offence in OFFENCES:
        rule = FAULT_RULES[offence]
        page.goto(url + f"/alerts?rule={rule}")
        first = page.locator("#alerts tbody a").first
        first.click()
        assert rule in page.inner_text("h1"), offence
        assert page.locator("#copies article").count() >= 1, offence
        assert page.locator("#copies .sig.bad").count() == 0, offence  # every copy's signature verifies


def test_the_rest_of_the_journey_over_the_demo(demo, browser, page):
    """From an offence's alert: an inquiry answered by the centre's staff, a rectification opened,
    planned, approved and closed; a threshold changed and the demo centre's next instruction alerting
    under it; a monthly report with its charts."""
    url, keys = demo
    staff = _as(browser, demo, "staff-staff1")
    page.goto(url + "/alerts?centre=C52240&state=open")
    alert_path = page.locator("#alerts tbody a").first.get_attribute("href")
    alert_id = alert_path.rsplit("/", 1)[1]
    page.goto(url + alert_path)
    page.fill("#ask textarea[name=question]", "请说明该笔业务的情况")
    page.fill("#ask input[name=days]", "2")
    page.click("#ask button")
    inquiry_path = page.url[len(url):]
    assert inquiry_path.startswith("/inquiries/"), page.inner_text("main")
    staff.goto(url + "/inquiries")
    staff.click(f"a[href='{inquiry_path}']")
    staff.fill("#answer-form textarea[name=answer]", "已与银行核对，见流水 DEMO-1")
    staff.click("#answer-form button")
    assert staff.inner_text("#inquiry-state") == "已答复"
    page.goto(url + inquiry_path)
    assert "DEMO-1" in page.inner_text("#answer")

    page.goto(url + "/alerts?centre=C52240&state=open")
    page.check(f"input[name=id][value='{alert_id}']")
    page.fill("#open-rectification input[name=title]", "银行差错整改")
    page.click("#open-rectification button")
    rect_path = page.url[len(url):]
    assert rect_path.startswith("/rectifications/"), page.inner_text("main")

    def step(p: Any, action: str, text: str) -> None:
        p.goto(url + rect_path)
        p.fill(f"#step-{action} textarea", text)
        p.click(f"#step-{action} button")

    step(staff, "submit-plan", "与银行逐笔对账")
    step(page, "approve", "同意")
    step(staff, "progress", "对账完成")
    step(page, "close", "对账单 DZ-0001")
    assert page.inner_text("#rect-state") == "已关闭"

    # A threshold so low that any instruction is large, then one more instruction from the demo centre
    page.goto(url + "/conditions")
    page.select_option("#set-conditions select[name=centre]", "C52240")
    page.fill("#set-conditions input[name=large_amount]", "0.01")
    page.fill("#set-conditions input[name=reason]", "演示：下调大额阈值")
    page.click("#set-conditions button")
    assert "演示：下调大额阈值" in page.inner_text("#history")
    prefix = f"TH{int(time.time()) % 10**6:06d}-"
    sent = subprocess.run([sys.executable, "-m", "gateway.cli", "simulate", "centre", "-c",
                           str(keys.parent / "gateway.toml"), "--centre", "C52240", "--count", "1", "--rate", "1",
                           "--id-prefix", prefix, "--final-timeout", "30"], capture_output=True, text=True,
                          timeout=90)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    deadline = time.monotonic() + 30
    found = ""
    while time.monotonic() < deadline and prefix not in found:
        page.goto(url + "/alerts?rule=large-amount&centre=C52240")
        found = page.inner_text("main")
        time.sleep(0.5)
    assert prefix in found and "0.01" in found, found[-2000:]

    page.goto(url + "/reports?period=month")
    for chart in ("#volume-chart", "#amount-chart", "#rules-chart", "#banks-chart", "#ack-chart"):
        assert page.locator(f"{chart} svg").count() == 1
    assert "C52240" in page.inner_text("#assessment")
