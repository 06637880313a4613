"""The console in Chromium over a real ledger: evidence, inquiries, scope, hostile content, CSRF.

One ledger and one browser for the module; each identity gets its own browser
context presenting its certificate (Playwright's ``client_certificates``).
"""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from tests.console.support import OTHER_ACCOUNT, LedgerProcess, browser_context
from tests.kit.ledger import DEBIT, make_copy, received_payload, result_frame, result_payload

XSS = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
TIMEOUT = 15_000


def now_us() -> int:
    return int(time.time() * 1_000_000)


@pytest.fixture(scope="module")
def seeded(ledger: LedgerProcess) -> dict[str, Any]:
    """Two offences: a large amount in Guiyang (C52240), an unregistered payee with a hostile name in Beijing."""
    t = now_us()
    large = make_copy(1, instruction_id="BIG1", payload=received_payload("BIG1", 1, amount="2000000.00"),
                      created_us=t)
    hostile = make_copy(2, instruction_id="XSS1", centre_id="C11000", account=OTHER_ACCOUNT, created_us=t + 1,
                        payload=received_payload("XSS1", 2, debit_account=OTHER_ACCOUNT,
                                                 creditor={"account": "6200001234000099", "name": XSS,
                                                           "bank_code": "105100000017"}))
    # the bank's result for BIG1, with the bank's own BDC frame (decoded and shown raw on the evidence page)
    result = make_copy(3, instruction_id="BIG1", state="succeeded", payload=result_payload(1, "H0001"),
                       raw=result_frame(1, "H0001"), adapter="bdc", created_us=t + 2)
    ledger.file([large, hostile, result])
    big = ledger.wait_alert(lambda a: a["rule"] == "large-amount" and a["subject"] == "C52240/BIG1", "large amount")
    xss = ledger.wait_alert(lambda a: a["rule"] == "unregistered-counterparty" and a["centre_id"] == "C11000",
                            "unregistered counterparty")
    return {"big": big, "xss": xss, "large_event": large["event_id"]}


@pytest.fixture
def as_party(browser: Any, ledger: LedgerProcess) -> Any:
    opened: list[Any] = []

    def open_as(party: str, **kw: Any) -> Any:
        context = browser_context(browser, ledger, party, **kw)
        context.set_default_timeout(TIMEOUT)
        opened.append(context)
        return context.new_page()

    yield open_as
    for c in opened:
        c.close()


def test_a_province_supervisor_sees_the_overview_and_an_alerts_evidence(ledger, seeded, as_party):
    page = as_party("supervisor/sup1")
    response = page.goto(ledger.url + "/")
    assert response.status == 200
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp
    assert "省级监管" in page.inner_text("#who")  # zh-CN by default
    table = page.inner_text("#by-centre-bank")
    assert "C52240" in table and "C11000" in table and "2000000.00" in table and "贵阳市" in table
    page.click("#open-major")
    assert "severity=major" in page.url
    page.goto(ledger.url + "/alerts?rule=large-amount")
    page.click(f"a[href='/alerts/{seeded['big']['id']}']")
    assert page.inner_text("#summary") == seeded["big"]["summary"]
    assert "2000000.00" in page.inner_text("#instruction")
    assert page.locator("#copies .sig.ok").count() >= 2 and page.locator("#copies .sig.bad").count() == 0
    decoded, raw = page.inner_text("#copies pre.decoded"), page.inner_text("#copies pre.raw")
    assert "Result(" in decoded and "H0001" in decoded and "H0001" in raw
    # A manual alert on one of the facts shown, raised from the evidence itself
    page.locator("#copies details summary").first.click()
    form = page.locator("#copies form.manual").first
    form.locator("select[name=severity]").select_option("critical")
    form.locator("textarea[name=summary]").fill("人工核查：大额支付需复核")
    form.locator("button").click()
    assert page.inner_text("#summary") == "人工核查：大额支付需复核" and "manual" in page.inner_text("h1")
    # English on request, kept for the next page
    page.goto(ledger.url + "/?lang=en")
    assert "Province supervisor" in page.inner_text("#who")
    page.goto(ledger.url + "/alerts")
    assert "Acknowledge selected" in page.content()


def test_each_overview_count_opens_the_instructions_behind_it_within_scope(ledger, seeded, as_party):
    page = as_party("supervisor/sup1")
    page.goto(ledger.url + "/")
    row = page.locator("#by-centre-bank tr", has_text="C52240")
    shown = int(row.locator("a.count[data-state=received]").inner_text())
    row.locator("a.count[data-state=received]").click()
    assert "/instructions?" in page.url and "state=received" in page.url and "centre=C52240" in page.url
    assert page.locator("#instructions tbody tr").count() == shown >= 1  # the count and its list agree
    listed = page.inner_text("#instructions")
    assert "BIG1" in listed and "2000000.00" in listed and "XSS1" not in listed
    page.goto(ledger.url + "/")
    row = page.locator("#by-centre-bank tr", has_text="C52240")
    succeeded = int(row.locator("a.count[data-state=succeeded]").inner_text())
    row.locator("a.count[data-state=succeeded]").click()
    assert page.locator("#instructions tbody tr").count() == succeeded >= 1
    assert "BIG1" in page.inner_text("#instructions")
    page.goto(ledger.url + "/")
    overdue = int(page.inner_text("#tile-overdue b"))
    page.click("#tile-overdue")
    assert page.locator("#instructions tbody tr").count() == overdue
    # the match lag: the copies filed but not yet matched, the list as long as the tile says (the matcher
    # here keeps up, so it is empty and says so; tests/console/test_units.py fills it)
    page.goto(ledger.url + "/")
    lag = int(page.inner_text("#tile-lag b"))
    page.click("#tile-lag")
    assert "/instructions?unmatched=1" in page.url and page.locator("h1").inner_text().startswith("待比对副本")
    assert page.locator("#unmatched tbody tr").count() == lag
    assert page.locator("#unmatched-none").count() == (1 if lag == 0 else 0)
    # English on request; a city supervisor and centre staff see their own centres only, whatever the URL says
    page.goto(ledger.url + "/instructions?lang=en&centre=C52240")
    assert "State reached" in page.inner_text("#instructions")
    city = as_party("supervisor/city1")
    city.goto(ledger.url + "/instructions?centre=C11000")
    assert city.locator("#instructions").count() == 0
    city.goto(ledger.url + "/instructions")
    assert "XSS1" not in city.inner_text("main") and "BIG1" in city.inner_text("#instructions")
    staff = as_party("staff/bob")
    assert staff.goto(ledger.url + "/instructions").status == 200
    assert "BIG1" not in staff.inner_text("main") and "XSS1" in staff.inner_text("#instructions")
    assert staff.goto(ledger.url + "/instructions?state=nonsense").status == 400


def test_hostile_names_render_as_text(ledger, seeded, as_party):
    page = as_party("supervisor/sup1")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(ledger.url + f"/alerts/{seeded['xss']['id']}")
    assert XSS in page.inner_text("#instruction")  # shown literally, as text
    assert json.dumps(XSS, ensure_ascii=False) in page.inner_text("#copies")
    assert page.locator("img[src=x]").count() == 0 and page.locator("#copies script").count() == 0
    assert page.evaluate("window.__pwned") is None and dialogs == []
    page.goto(ledger.url + "/instructions?centre=C11000")  # the instruction list shows the creditor too
    assert XSS in page.inner_text("#instructions .creditor")
    assert page.locator("img[src=x]").count() == 0 and page.locator("main script").count() == 0
    assert page.evaluate("window.__pwned") is None and dialogs == []


def test_a_cross_site_post_is_refused(ledger, seeded, as_party, tmp_path):
    page = as_party("supervisor/sup1")
    alert_id = seeded["xss"]["id"]
    page.goto(ledger.url + f"/alerts/{alert_id}")  # the browser now holds the CSRF cookie
    token = page.locator("#acknowledge").locator("xpath=..").locator("input[name=csrf]").get_attribute("value")
    # Another site's page posting to the console, even with a stolen token: refused by the browser's headers.
    evil = tmp_path / "evil.html"
    evil.write_text(f'<form id="f" method="post" action="{ledger.url}/alerts/ack">'
                    f'<input name="csrf" value="{token}"><input name="id" value="{alert_id}">'
                    '<input name="reason" value="pwned"></form>', encoding="utf-8")
    page.goto(evil.as_uri())
    with page.expect_navigation():
        page.evaluate("document.getElementById('f').submit()")
    assert "403" in page.inner_text("h1")
    # Without the browser: no cookie, or a token of another identity, is refused too.
    body = f"csrf={token}&id={alert_id}&reason=x".encode()
    status, _ = ledger.https("supervisor/city1", "POST", ledger.url + "/alerts/ack", body,
                             {"content-type": "application/x-www-form-urlencoded",
                              "cookie": "__Host-hpf-csrf=abc"})
    assert status == 403
    page.goto(ledger.url + f"/alerts/{alert_id}")
    assert page.inner_text("#alert-state") == "待处理"  # still open


def test_inquiry_from_a_supervisor_answered_by_the_centre(ledger, seeded, as_party, tmp_path):
    sup = as_party("supervisor/sup1")
    alert_id = seeded["big"]["id"]
    sup.goto(ledger.url + f"/alerts/{alert_id}")
    sup.fill("#ask textarea[name=question]", "请说明这笔大额支付的审批依据")
    sup.fill("#ask input[name=days]", "3")
    sup.click("#ask button")
    assert "/inquiries/" in sup.url, sup.inner_text("main")
    inquiry_url = sup.url
    assert sup.inner_text("#inquiry-state") == "待处理"

    staff = as_party("staff/alice")
    staff.goto(ledger.url + "/inquiries")
    staff.click(f"a[href='{inquiry_url[len(ledger.url):]}']")
    staff.fill("#answer-form textarea[name=answer]", "审批单号 SP-2026-001，附件为审批记录。")
    note = tmp_path / "审批记录.txt"
    note.write_text("审批记录：同意。\n", encoding="utf-8")
    scan = tmp_path / "scan.png"  # a second file, as the PNG it says it is
    scan.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    staff.set_input_files("#answer-form input[name=attachment]", [str(note), str(scan)])
    staff.click("#answer-form button")
    assert staff.inner_text("#inquiry-state") == "已答复"

    sup.reload()
    assert "SP-2026-001" in sup.inner_text("#answer")
    assert sup.locator("#attachments a.attachment").all_inner_texts() == ["审批记录.txt", "scan.png"]
    for link, expected in zip(sup.locator("#attachments a.attachment").all(), (note, scan)):
        with sup.expect_download() as got:
            link.click()
        assert got.value.suggested_filename == expected.name
        assert Path(got.value.path()).read_bytes() == expected.read_bytes()  # the bytes the centre sent
    # Out of scope, the same file is not there: another centre's staff, by direct URL
    href = sup.locator("#attachments a.attachment").first.get_attribute("href")
    assert as_party("staff/bob").goto(ledger.url + href).status == 404
    # The supervisor acknowledges from the inbox (bulk form), with a reason.
    sup.goto(ledger.url + "/alerts?rule=large-amount&state=open")
    sup.check(f"input[name=id][value='{alert_id}']")
    sup.fill("input[name=reason]", "已核实审批")
    sup.click("#ack")
    sup.goto(ledger.url + f"/alerts/{alert_id}")
    assert sup.inner_text("#alert-state") == "已确认"
    assert "已核实审批" in sup.inner_text("#notes")
    sup.locator("form[action$='/resolve'] input[name=reason]").fill("审批齐全，办结")
    sup.click("#resolve")
    assert sup.inner_text("#alert-state") == "已办结"


def test_scope_by_page_and_by_direct_url(ledger, seeded, as_party):
    big, xss = seeded["big"]["id"], seeded["xss"]["id"]
    city = as_party("supervisor/city1")  # Guiyang: C52240 only
    city.goto(ledger.url + "/alerts")
    ids = city.locator("#alerts tbody a").all_inner_texts()
    assert str(big) in ids and str(xss) not in ids
    assert city.goto(ledger.url + f"/alerts/{xss}").status == 404
    assert "C11000" not in city.goto(ledger.url + "/").text()

    staff = as_party("staff/bob")  # Beijing centre staff
    assert staff.goto(ledger.url + f"/alerts/{big}").status == 404
    assert staff.goto(ledger.url + f"/alerts/{xss}").status == 200
    assert staff.locator("#acknowledge").count() == 0  # staff only answer
    assert staff.goto(ledger.url + "/conditions").status == 403
    # A write by staff is refused on the server, whatever the page shows.
    token = staff.locator("input[name=csrf]").first.get_attribute("value") if staff.locator(
        "input[name=csrf]").count() else "0" * 64
    result = staff.evaluate("""async ([url, token, id]) => {
        const r = await fetch(url + '/alerts/ack', {method: 'POST', headers: {'content-type':
            'application/x-www-form-urlencoded'}, body: 'csrf=' + token + '&id=' + id + '&reason=x'});
        return r.status; }""", [ledger.url, token, xss])
    assert result == 403

    # A centre's business-system certificate is no console user.
    status, _ = ledger.https("centre/C52240", "GET", ledger.url + "/")
    assert status == 403


def test_a_province_supervisor_changes_a_threshold_and_the_next_instruction_alerts_under_it(
        ledger, seeded, as_party):
    page = as_party("supervisor/sup1")
    page.goto(ledger.url + "/conditions")
    page.select_option("#set-conditions select[name=centre]", "C52240")
    page.fill("#set-conditions input[name=large_amount]", "500.00")
    page.fill("#set-conditions input[name=reason]", "专项检查期间下调大额阈值")
    page.click("#set-conditions button")
    assert "500.00" in page.inner_text("#conditions")
    assert "专项检查期间下调大额阈值" in page.inner_text("#history")
    # No restart: the very next instruction of 600.00 is large for C52240 ...
    ledger.file([make_copy(4, instruction_id="MID1", payload=received_payload("MID1", 4, amount="600.00"),
                           created_us=now_us())])
    alert = ledger.wait_alert(lambda a: a["subject"] == "C52240/MID1" and a["rule"] == "large-amount",
                              "large amount under the new threshold")
    assert "500.00" in alert["summary"]
    # ... and a city supervisor may look but not change them.
    city = as_party("supervisor/city1")
    city.goto(ledger.url + "/conditions")
    assert city.locator("#set-conditions").count() == 0
    token = city.locator("input[name=csrf]").count()
    assert token == 0
    status, _ = ledger.https("supervisor/city1", "POST", ledger.url + "/conditions",
                             b"centre=C52240&large_amount=1.00&reason=x",
                             {"content-type": "application/x-www-form-urlencoded"})
    assert status == 403


def test_a_rectification_is_opened_planned_returned_approved_and_closed(ledger, seeded, as_party):
    sup = as_party("supervisor/sup1")
    alert_id = seeded["xss"]["id"]
    sup.goto(ledger.url + "/alerts?centre=C11000")
    sup.check(f"input[name=id][value='{alert_id}']")
    sup.fill("#open-rectification input[name=title]", "未备案收款方付款")
    sup.fill("#open-rectification input[name=plan_days]", "5")
    sup.click("#open-rectification button")
    assert "/rectifications/" in sup.url, sup.inner_text("main")
    rect_url = sup.url
    assert sup.inner_text("#rect-state") == "待提交方案"
    assert sup.locator("#step-submit-plan").count() == 0  # the plan is the centre's to write

    assert as_party("staff/alice").goto(rect_url).status == 404  # another centre's
    staff = as_party("staff/bob")
    staff.goto(ledger.url + "/rectifications")
    staff.click(f"a[href='{rect_url[len(ledger.url):]}']")

    def step(page: Any, action: str, text: str) -> None:
        page.fill(f"#step-{action} textarea", text)
        page.click(f"#step-{action} button")

    step(staff, "submit-plan", "补办备案")
    sup.goto(rect_url)
    step(sup, "return", "方案不完整：缺少时间表")
    assert sup.inner_text("#rect-state") == "待提交方案", sup.inner_text("main")
    staff.goto(rect_url)
    assert staff.locator("#step-approve").count() == 0
    step(staff, "submit-plan", "补办备案，十日内完成")
    sup.goto(rect_url)
    step(sup, "approve", "同意")
    staff.goto(rect_url)
    step(staff, "progress", "已提交备案材料")
    sup.goto(rect_url)
    step(sup, "close", "备案回执编号 BA-0001")
    assert sup.inner_text("#rect-state") == "已关闭"
    assert "BA-0001" in sup.inner_text("#rect-evidence")
    history = sup.inner_text("#rect-history")
    for who, text in (("hpf://staff/bob", "补办备案"), ("hpf://supervisor/sup1", "缺少时间表"),
                      ("hpf://staff/bob", "已提交备案材料")):
        assert who in history and text in history
    # A closed rectification takes no further step, from anyone.
    status, _ = ledger.https("staff/bob", "POST", rect_url + "/progress", b"text=x",
                             {"content-type": "application/x-www-form-urlencoded"})
    assert status == 403


def test_a_monthly_report_renders_its_charts_and_the_accounts_their_balances(ledger, seeded, as_party):
    page = as_party("supervisor/sup1")
    page.goto(ledger.url + "/reports?period=month")
    for chart in ("#volume-chart", "#amount-chart", "#rules-chart", "#banks-chart", "#ack-chart"):
        assert page.locator(f"{chart} svg").count() == 1
    assert page.locator("#rules-chart svg path, #rules-chart svg circle").count() >= 1  # the pie has slices
    assessment = page.inner_text("#assessment")
    assert "C52240" in assessment and "C11000" in assessment
    with page.expect_download() as got:
        page.click("#csv")
    text = Path(got.value.path()).read_text(encoding="utf-8")
    assert text.startswith("date,instructions,instructed_sum") and "C52240" in text
    city = as_party("supervisor/city1")
    city.goto(ledger.url + "/accounts")
    table = city.inner_text("#accounts")
    assert DEBIT in table and OTHER_ACCOUNT not in table
    assert as_party("staff/bob").goto(ledger.url + "/reports").status == 403


def test_a_certificate_counts_only_under_the_anchor_of_the_party_it_names(ledger, seeded):
    # carol's entry names her own CA: her certificate from it is let in ...
    assert ledger.https("other/staff/carol", "GET", ledger.url + "/")[0] == 200
    # ... one for her from the dev CA is not, and her CA cannot speak for alice (dev CA's): the
    # handshake refuses both (gateway.tls.chain_refusal, as on every listener).
    for forged in ("staff/carol", "other/staff/alice"):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            ledger.https(forged, "GET", ledger.url + "/")
    assert ledger.https("staff/alice", "GET", ledger.url + "/")[0] == 200


def test_an_answer_with_an_attachment_of_a_forbidden_type_is_refused(ledger, seeded, as_party, tmp_path):
    sup = as_party("supervisor/sup1")
    sup.goto(ledger.url + f"/alerts/{seeded['big']['id']}")
    sup.fill("#ask textarea[name=question]", "请补充材料")
    sup.click("#ask button")
    inquiry_url = sup.url
    staff = as_party("staff/alice")
    staff.goto(inquiry_url)
    page = tmp_path / "page.html"
    page.write_text("<script>alert(1)</script>", encoding="utf-8")
    staff.fill("#answer-form textarea[name=answer]", "见附件")
    staff.set_input_files("#answer-form input[name=attachment]", str(page))
    staff.click("#answer-form button")
    assert "400" in staff.inner_text("h1")
    staff.goto(inquiry_url)
    assert staff.inner_text("#inquiry-state") == "待处理"  # nothing stored
    # nor more files than an answer takes
    notes = []
    for i in range(6):
        notes.append(tmp_path / f"n{i}.txt")
        notes[-1].write_text(f"第{i}页", encoding="utf-8")
    staff.fill("#answer-form textarea[name=answer]", "见附件")
    staff.set_input_files("#answer-form input[name=attachment]", [str(n) for n in notes])
    staff.click("#answer-form button")
    assert "400" in staff.inner_text("h1")
    staff.goto(inquiry_url)
    assert staff.inner_text("#inquiry-state") == "待处理"


def test_every_asset_of_every_page_comes_from_the_console_itself(ledger, seeded, as_party):
    """Nothing is fetched from elsewhere: no web font (the system's CJK fonts, by a font-family stack:
    docs/console.md), no chart library (SVG drawn on the server), no CDN."""
    page = as_party("supervisor/sup1")
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    paths = ["/", "/alerts", f"/alerts/{seeded['big']['id']}", "/instructions", "/instructions?overdue=1",
             "/instructions?unmatched=1", "/inquiries", "/rectifications", "/reports?period=month",
             "/reports?period=year", "/accounts", "/conditions", "/?lang=en"]
    assets: set[str] = set()
    for path in paths:
        assert page.goto(ledger.url + path).status == 200, path
        page.wait_for_load_state("load")
        for selector, attribute in (("link[href]", "href"), ("script[src]", "src"), ("img[src]", "src"),
                                    ("source[src]", "src"), ("iframe[src]", "src"), ("object[data]", "data")):
            for element in page.locator(selector).all():
                assets.add(element.get_attribute(attribute))
        # stylesheets' own references (fonts, images) resolved by the browser
        urls = page.evaluate("""() => [...document.styleSheets].flatMap(s => [...s.cssRules])
            .map(r => r.cssText).filter(t => t.includes('url(') || t.includes('@font-face') || t.includes('@import'))""")
        assert urls == [], (path, urls)
    assert assets == {"/static/console.css", "/static/console.js"}, assets
    assert requested and all(u.startswith(ledger.url + "/") for u in requested), \
        [u for u in requested if not u.startswith(ledger.url + "/")]
    for asset in assets:
        assert page.goto(ledger.url + asset).status == 200
