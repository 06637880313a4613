"""Deadlines passing, seen in Chromium: an inquiry not answered in time and a rectification's late
plan and closure each raise their alert, which the supervisor and the centre find in the inbox.

The ledger runs with ``[console] deadline_day = 1.0``: a "day" of the console's deadlines lasts one
second, so a deadline of one day passes in one second (the product's own setting for drills, see
docs/console.md), and ``overdue_check = 0.2``.  Nothing sleeps for a deadline: the pages are
reloaded, bounded, until the alert is there.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest

from tests.console.support import LedgerProcess, browser_context, start_ledger
from tests.kit.ledger import make_copy, received_payload

TIMEOUT = 15_000


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory, dev_pki: Any) -> Iterator[LedgerProcess]:
    running = start_ledger(tmp_path_factory.mktemp("console-overdue"), dev_pki, deadline_day=1.0, overdue_check=0.2)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def as_party(browser: Any, ledger: LedgerProcess) -> Any:
    opened: list[Any] = []

    def open_as(party: str) -> Any:
        context = browser_context(browser, ledger, party)
        context.set_default_timeout(TIMEOUT)
        opened.append(context)
        return context.new_page()

    yield open_as
    for c in opened:
        c.close()


def inbox_rows(page: Any, url: str, rule: str, expect: int, timeout: float = 15.0) -> list[str]:
    """The inbox's rows of ``rule`` once there are ``expect`` of them (reloaded, bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        page.goto(f"{url}/alerts?rule={rule}")
        rows = page.locator("#alerts tbody tr").all_inner_texts() if page.locator("#alerts").count() else []
        if len(rows) >= expect or time.monotonic() > deadline:
            return rows
        page.wait_for_timeout(200)


def test_an_inquiry_past_its_deadline_raises_an_alert_found_in_the_inbox(ledger, as_party):
    t = int(time.time() * 1_000_000)
    ledger.file([make_copy(1, instruction_id="OD1", payload=received_payload("OD1", 1, amount="3000000.00"),
                           created_us=t)])
    big = ledger.wait_alert(lambda a: a["subject"] == "C52240/OD1" and a["rule"] == "large-amount", "large amount")
    sup = as_party("supervisor/sup1")
    assert inbox_rows(sup, ledger.url, "inquiry-overdue", 0, timeout=0) == []  # none before
    sup.goto(f"{ledger.url}/alerts/{big['id']}")
    sup.fill("#ask textarea[name=question]", "请说明大额支付的审批依据")
    sup.fill("#ask input[name=days]", "1")  # one "day": a second here
    sup.click("#ask button")
    inquiry = sup.url.rsplit("/", 1)[1]
    rows = inbox_rows(sup, ledger.url, "inquiry-overdue", 1)
    assert len(rows) == 1 and f"C52240/inquiry-{inquiry}" in rows[0], rows
    sup.goto(f"{ledger.url}/inquiries/{inquiry}")
    assert sup.locator("h1 .bad").count() == 1  # the inquiry says it is overdue
    # the overview counts it, and the centre's staff find it in their own inbox
    sup.goto(ledger.url + "/")
    assert int(sup.inner_text("#tile-inquiries b")) == 1
    sup.click("#tile-inquiries")
    assert f"C52240/inquiry-{inquiry}" in sup.inner_text("#alerts")
    staff = as_party("staff/alice")
    assert f"C52240/inquiry-{inquiry}" in inbox_rows(staff, ledger.url, "inquiry-overdue", 1)[0]
    # once only: it stays one alert however often the watch looks
    sup.wait_for_timeout(600)
    assert len(inbox_rows(sup, ledger.url, "inquiry-overdue", 1)) == 1


def test_a_rectifications_late_plan_and_late_closure_each_raise_an_alert(ledger, as_party):
    t = int(time.time() * 1_000_000)
    ledger.file([make_copy(2, instruction_id="OD2", payload=received_payload("OD2", 2, amount="4000000.00"),
                           created_us=t)])
    big = ledger.wait_alert(lambda a: a["subject"] == "C52240/OD2" and a["rule"] == "large-amount", "large amount")
    sup = as_party("supervisor/sup1")
    sup.goto(ledger.url + "/alerts?rule=large-amount&centre=C52240")
    sup.check(f"input[name=id][value='{big['id']}']")
    sup.fill("#open-rectification input[name=title]", "大额支付审批补正")
    sup.fill("#open-rectification input[name=plan_days]", "1")
    sup.fill("#open-rectification input[name=due_days]", "3")
    sup.click("#open-rectification button")
    rid = sup.url.rsplit("/", 1)[1]
    subject = f"C52240/rectification-{rid}"
    rows = inbox_rows(sup, ledger.url, "rectification-overdue", 1)
    assert len(rows) == 1 and subject in rows[0] and "plan" in rows[0], rows
    # the centre plans late, the supervisor approves; the closure's deadline passes too: a second alert
    staff = as_party("staff/alice")
    staff.goto(f"{ledger.url}/rectifications/{rid}")
    staff.fill("#step-submit-plan textarea", "补齐审批单")
    staff.click("#step-submit-plan button")
    sup.goto(f"{ledger.url}/rectifications/{rid}")
    sup.fill("#step-approve textarea", "同意")
    sup.click("#step-approve button")
    rows = inbox_rows(sup, ledger.url, "rectification-overdue", 2)
    assert len(rows) == 2 and all(subject in r for r in rows), rows
    assert any("closure" in r for r in rows) and any("plan" in r for r in rows)
    assert len(inbox_rows(staff, ledger.url, "rectification-overdue", 2)) == 2  # the centre's own inbox
