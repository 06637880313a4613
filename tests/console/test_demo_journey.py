"""The console over the live demo with bank offences: each offence's alert found and its evidence opened.

``hpf-gateway demo --serve`` runs the gateway, the simulated banks committing
offences on purpose, a second city's gateway and the ledger with its console;
the province supervisor (the demo's own certificate) finds the alert of every
offence in the inbox and opens its evidence, whose copies all verify; the
overview groups the two cities.  One demo and one browser for the module.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from gateway.demo import FAULT_RULES, SECOND_CITY
from tests.console.support import CHROMIUM, CHROMIUM_ARGS, chromium_missing

OFFENCES = sorted(FAULT_RULES)  # every offence the demo banks can commit, balance-break included


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    missing = chromium_missing()
    if missing:
        pytest.skip(missing)
    directory = tmp_path_factory.mktemp("demo")
    out = directory / "demo.out"
    with open(out, "w", encoding="utf-8") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "demo", "--dir", str(directory), "--serve",
                                 "--count", "60", "--rate", "60", "--fault-every", "5",
                                 "--bank-faults", ",".join(OFFENCES)], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        deadline = time.monotonic() + 150
        url = None
        while time.monotonic() < deadline and proc.poll() is None and url is None:
            found = re.search(r"the supervision console: (https://localhost:\d+)/", out.read_text(encoding="utf-8"))
            url = found.group(1) if found else None
            time.sleep(0.5)
        text = out.read_text(encoding="utf-8")
        assert url is not None, text[-3000:]
        assert "every offence raised its alert" in text, text[-3000:]
        yield url, directory / "keys"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


@pytest.fixture(scope="module")
def page(demo: tuple[str, Path]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    url, keys = demo
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        context = browser.new_context(ignore_https_errors=True, locale="zh-CN", client_certificates=[
            {"origin": url, "certPath": str(keys / "supervisor-sup1.crt"), "keyPath": str(keys / "supervisor-sup1.key")}])
        context.set_default_timeout(15_000)
        yield context.new_page()
        browser.close()


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
