"""The console's pure parts and its queries: scope, CSRF, catalogue, charts, pagination, journal, overdue.

Queries run on a real SQLite ledger database (and PostgreSQL when
HPF_TEST_DATABASE_URL is set), through the group-commit writer, as the pages run them.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType

import pytest
import pytest_twisted
import sqlalchemy as sa

from gateway.config import render_toml
from gateway.ledger import store
from gateway.ledger.config import (
    ConsoleCity,
    ConsoleConfig,
    ConsoleStaff,
    load_ledger_config,
)
from gateway.ledger.console import csrf, queries, report_queries
from gateway.ledger.console.charts import bar_chart, line_chart, pie_chart
from gateway.ledger.console.i18n import CATALOGUE, choose_lang, translate
from gateway.ledger.console.scope import CITY, PROVINCE, STAFF, viewer_for
from gateway.ledger.engine import registry_from_config
from gateway.ledger.matcher import CentreConditions, Fact, Matcher, Thresholds
from gateway.ledger.verify import verify_database
from gateway.tls import PeerIdentity
from tests.kit.ledger import DEBIT, PAYEE, file, make_copy, received_payload
from tests.kit.ledger import sql as sql_


def ident(role: str, name: str) -> PeerIdentity:
    return PeerIdentity(role, name, f"hpf://{role}/{name}", "00" * 32)


def config_data() -> dict:
    return {
        "ledger": {"name": "main", "database": "sqlite:///x.db"},
        "tls": {"certificate": "a.crt", "private_key": "a.key", "ca": "ca.crt"},
        "listen": {"ingest": "tcp:1:interface=127.0.0.1", "supervisor": "tcp:2:interface=127.0.0.1",
                   "ops": "tcp:3:interface=127.0.0.1"},
        "supervisors": {"prov": {}, "gy": {}},
        "thresholds": {"large_amount": "1000000.00"},
        "accounts": {DEBIT: {"bank": "B001", "centre": "C52240", "name": "归集户", "type": "collection"}},
        "counterparties": {PAYEE["account"]: {"name": PAYEE["name"], "bank_code": PAYEE["bank_code"]}},
        "console": {"listen": "tcp:4:interface=127.0.0.1",
                    "cities": {"guiyang": {"name": "贵阳市", "centres": ["C52240"]},
                               "beijing": {"name": "北京市", "centres": ["C11000"]}},
                    "city_supervisors": {"gy": "guiyang"}, "staff": {"alice": {"centre": "C52240"}}},
    }


@pytest.fixture
def config(tmp_path: Path):
    data = config_data()
    path = tmp_path / "ledger.toml"
    path.write_text(render_toml(data), encoding="utf-8")
    return load_ledger_config(path, check_files=False)


# -- config and scope ------------------------------------------------------------------------


def test_the_console_section_is_read_and_its_mistakes_reported(config, tmp_path):
    assert config.console == ConsoleConfig(
        "tcp:4:interface=127.0.0.1",
        MappingProxyType({"guiyang": ConsoleCity("guiyang", "贵阳市", ("C52240",)),
                          "beijing": ConsoleCity("beijing", "北京市", ("C11000",))}),
        MappingProxyType({"gy": "guiyang"}), MappingProxyType({"alice": ConsoleStaff("alice", "C52240")}))
    data = config_data()
    data["console"]["city_supervisors"] = {"nobody": "guiyang", "gy": "atlantis"}
    data["console"]["staff"] = {"alice": {"centre": "52240", "colour": "red"}}
    config.path.write_text(render_toml(data), encoding="utf-8")
    from gateway.ledger.config import check_ledger_config

    problems = "\n".join(check_ledger_config(config.path, check_files=False))
    assert "console.city_supervisors.nobody: is not a supervisor listed in [supervisors]" in problems
    assert "console.city_supervisors.gy: must name a city of [console.cities]" in problems
    assert "console.staff.alice.centre" in problems and "console.staff.alice.colour: unknown key" in problems


def test_roles_come_from_the_certificate_and_the_config(config):
    province = viewer_for(ident("supervisor", "prov"), config)
    city = viewer_for(ident("supervisor", "gy"), config)
    staff = viewer_for(ident("staff", "alice"), config)
    assert (province.level, province.centres) == (PROVINCE, None)
    assert (city.level, city.centres, city.city) == (CITY, frozenset({"C52240"}), "guiyang")
    assert (staff.level, staff.centres, staff.supervisor) == (STAFF, frozenset({"C52240"}), False)
    assert province.sees_centre(None) and not city.sees_centre(None)  # facts of no centre: province only
    assert city.sees_centre("C52240") and not city.sees_centre("C11000")
    assert province.province and not city.province
    # Nobody else: unlisted names, other roles, no certificate.
    for who in (ident("supervisor", "stranger"), ident("staff", "mallory"), ident("centre", "C52240"),
                ident("gateway", "main"), None):
        assert viewer_for(who, config) is None


# -- CSRF ----------------------------------------------------------------------------------------


def test_a_csrf_token_is_bound_to_its_cookie_and_to_the_identity():
    secret = b"k" * 32
    cookie = csrf.new_cookie_value()
    token = csrf.token_for(secret, "hpf://supervisor/prov", cookie)
    assert csrf.token_ok(secret, "hpf://supervisor/prov", cookie, token)
    assert not csrf.token_ok(secret, "hpf://supervisor/gy", cookie, token)        # another identity
    assert not csrf.token_ok(secret, "hpf://supervisor/prov", csrf.new_cookie_value(), token)  # another cookie
    assert not csrf.token_ok(b"x" * 32, "hpf://supervisor/prov", cookie, token)  # another ledger run
    assert not csrf.token_ok(secret, "hpf://supervisor/prov", None, token)
    assert not csrf.token_ok(secret, "hpf://supervisor/prov", cookie, None)


def test_requests_from_another_site_are_recognised():
    host = "localhost:8445"
    assert not csrf.cross_site("https://localhost:8445", "same-origin", host)
    assert not csrf.cross_site(None, None, host)   # not a browser: the token decides
    assert csrf.cross_site("https://evil.example", None, host)
    assert csrf.cross_site("null", None, host)
    assert csrf.cross_site(None, "cross-site", host)
    assert csrf.cross_site(None, "same-site", host)  # a sibling subdomain is another party
    assert csrf.cross_site("https://localhost:9999", "same-origin", host)


# -- the catalogue -------------------------------------------------------------------------------


def test_every_message_a_template_uses_is_in_the_catalogue_in_both_languages():
    used: set[str] = set()
    templates = files("gateway.ledger.console").joinpath("templates")
    for entry in templates.iterdir():
        text = entry.read_text(encoding="utf-8")
        used |= set(re.findall(r"""\bt\(\s*["']([a-z_.0-9]+)["']\s*\)""", text))
        for prefix in re.findall(r"""\bt\(\s*["']([a-z_.]+\.)["']\s*\+""", text):
            used |= {k for k in CATALOGUE if k.startswith(prefix)}
    assert used and used <= set(CATALOGUE), sorted(used - set(CATALOGUE))
    for key in ("rect.state.awaiting-plan", "rect.action.submit-plan", "severity.critical", "severity.major", "severity.minor", "state.open", "state.acknowledged",
                "state.resolved", "state.answered", "who.province", "who.city", "who.staff"):
        assert translate(key, "en") and translate(key, "zh-CN")
    assert all(zh.strip() and en.strip() for zh, en in CATALOGUE.values())
    with pytest.raises(KeyError):
        translate("no.such.message", "en")


def test_the_language_is_chosen_explicitly_then_by_the_browser_else_chinese():
    assert choose_lang(None, None, None) == "zh-CN"
    assert choose_lang("en", "zh-CN", "zh-CN") == "en"
    assert choose_lang(None, "en", "zh-CN") == "en"
    assert choose_lang("fr", None, "en-US,en;q=0.9") == "en"
    assert choose_lang(None, None, "en;q=0.5,zh-TW;q=0.8") == "zh-CN"
    assert choose_lang(None, None, "de-DE,fr;q=0.9") == "zh-CN"
    assert choose_lang(None, None, "en;q=bogus") == "zh-CN"


# -- charts ---------------------------------------------------------------------------------------


def test_charts_are_svg_with_escaped_labels_and_proportional_shapes():
    svg = str(bar_chart([("<b>x</b>", 10), ("y", 5)], title="t & t"))
    assert svg.startswith("<svg") and "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg and "t &amp; t" in svg
    widths = [float(w) for w in re.findall(r'class="bar" x="\d+" y="\d+" width="([0-9.]+)"', svg)]
    assert widths[0] == pytest.approx(2 * widths[1])
    assert "style=" not in svg  # the CSP forbids inline style: colours come from classes
    pie = str(pie_chart([("a", 3), ("b", 1)], title="p"))
    assert pie.count("<path") == 2 and 'A' in pie and "slice-0" in pie and "style=" not in pie
    whole = str(pie_chart([("only", 7)], title="p"))
    assert "<circle" in whole
    line = str(line_chart([("2026-11-01", 1), ("2026-11-02", 4)], title="l"))
    assert "<polyline" in line and "2026-11-01" in line and "2026-11-02" in line
    assert str(bar_chart([], title="empty")).endswith("</svg>")


# -- queries on a real database -------------------------------------------------------------------


def _alerts(n: int, centre_of: callable) -> list[store.AlertRow]:
    return [store.AlertRow(f"manual:{i}", "manual", ("critical", "major", "minor")[i % 3], f"{centre_of(i)}/I{i}",
                           f"alert {i}", ()) for i in range(n)]


@pytest_twisted.ensureDeferred
async def test_the_inbox_pages_by_keyset_within_scope_and_filters(ldb):
    await ldb.write(lambda tx: store.store_alerts(tx, _alerts(130, lambda i: "C52240" if i % 2 else "C11000")))
    seen: list[int] = []
    before = None
    while True:
        page = await ldb.read(lambda c: queries.inbox(c, {"C52240"}, before_id=before, limit=50))
        if not page:
            break
        seen += [a["id"] for a in page]
        before = page[-1]["id"]
    assert len(seen) == 65 == len(set(seen)) and seen == sorted(seen, reverse=True)
    everyone = await ldb.read(lambda c: queries.inbox(c, None, limit=1000))
    assert len(everyone) == 130
    critical = await ldb.read(lambda c: queries.inbox(c, None, severity="critical", centre="C11000", limit=1000))
    assert critical and all(a["severity"] == "critical" and a["centre_id"] == "C11000" for a in critical)
    newest, oldest = everyone[0]["created_us"], everyone[-1]["created_us"]
    assert len(await ldb.read(lambda c: queries.inbox(c, None, from_us=newest + 1, limit=1000))) == 0
    assert len(await ldb.read(lambda c: queries.inbox(c, None, to_us=oldest, limit=1000))) == 0
    assert len(await ldb.read(lambda c: queries.inbox(c, None, from_us=oldest, to_us=newest + 1, limit=1000))) == 130
    some = everyone[0]["id"]
    assert await ldb.read(queries.alert_row, some, None) is not None
    outside = next(a["id"] for a in everyone if a["centre_id"] == "C11000")
    assert await ldb.read(queries.alert_row, outside, {"C52240"}) is None


@pytest_twisted.ensureDeferred
async def test_the_instruction_list_is_the_list_behind_the_overviews_counts(ldb):
    from gateway.ledger.console.totals import DAY_US, DailyTotals
    from tests.kit.ledger import T0, result_payload

    other = "6222002222333344"
    docs = []
    for n in range(1, 8):  # seven received: odd ones Guiyang (C52240), even ones Beijing (C11000)
        centre, account = ("C52240", DEBIT) if n % 2 else ("C11000", other)
        docs.append(make_copy(n, instruction_id=f"I{n}", centre_id=centre, account=account,
                              payload=received_payload(f"I{n}", n, amount=f"{n}.00", debit_account=account)))
    docs.append(make_copy(8, instruction_id="I1", state="succeeded", payload=result_payload(1, "H1")))
    docs.append(make_copy(9, instruction_id="I3", state="in_doubt", payload={"bank_ref": "x"}))
    await file(ldb, docs)
    day = (T0 + 8 * 3_600_000_000) // DAY_US
    start = day * DAY_US - 8 * 3_600_000_000

    async def listed(centres, **kw):
        return await ldb.read(lambda c: queries.instruction_list(c, centres, **kw))

    counted, _ = await ldb.read(DailyTotals().between, {"C52240"}, day, day + 1)
    for state in ("received", "succeeded", "in_doubt"):
        rows = await listed({"C52240"}, state=state, from_us=start, to_us=start + DAY_US)
        assert len(rows) == counted[(day, "C52240", "B001", state)][0], state  # the count and its list agree
    [i1] = await listed(None, state="succeeded", bank="B001")
    assert (i1["instruction_id"], i1["amount"], i1["latest"], i1["creditor"]) == ("I1", 100, "succeeded",
                                                                                    PAYEE["name"])
    [i3] = await listed(None, state="in_doubt")
    assert i3["latest"] == "in_doubt" and i3["amount"] == 300
    # scope: a Guiyang viewer asking for Beijing gets nothing; newest first, paged by keyset
    assert await listed({"C52240"}, centre="C11000") == []
    seen, before = [], None
    while True:
        page = await listed(None, state="received", before=before, limit=3)
        if not page:
            break
        seen += [r["instruction_id"] for r in page]
        before = (page[-1]["created_us"], page[-1]["seq"])
    assert seen == [f"I{n}" for n in range(7, 0, -1)]
    assert await listed(None, from_us=start + DAY_US) == []
    # overdue: the instructions whose missing-result alert is open, in scope
    [late] = await ldb.write(lambda tx: store.store_alerts(tx, [store.AlertRow(
        "missing-result:C11000/I2", "missing-result", "major", "C11000/I2", "no result", (docs[1]["event_id"],))]))
    [row] = await ldb.read(lambda c: queries.overdue_instructions(c, None))
    assert (row["alert_id"], row["instruction_id"], row["amount"], row["latest"]) == (late["id"], "I2", 200,
                                                                                      "received")
    assert await ldb.read(lambda c: queries.overdue_instructions(c, {"C52240"})) == []
    await ldb.write(lambda tx: queries.acknowledge(tx, "hpf://supervisor/prov", [late["id"]], "chased", None))
    assert await ldb.read(lambda c: queries.overdue_instructions(c, None)) == []


@pytest_twisted.ensureDeferred
async def test_every_console_write_is_chained_in_the_journal_and_a_change_shows(ldb, ledger_url):
    [a, b] = await ldb.write(lambda tx: store.store_alerts(tx, _alerts(2, lambda i: "C52240")))
    done = await ldb.write(lambda tx: queries.acknowledge(tx, "hpf://supervisor/prov", [a["id"], b["id"]],
                                                          "checked", {"C52240"}))
    assert done == [a["id"], b["id"]]
    # out of scope: nothing changes, nothing is journalled
    assert await ldb.write(lambda tx: queries.acknowledge(tx, "hpf://supervisor/gy", [a["id"]], "x", {"C11000"})) == []
    assert await ldb.write(lambda tx: queries.note(tx, "hpf://supervisor/prov", a["id"], "called", None))
    rows = await ldb.read(lambda c: queries.journal_for(c, f"alert/{a['id']}"))
    assert [(r["who"], r["action"]) for r in rows] == [("hpf://supervisor/prov", "acknowledged"),
                                                       ("hpf://supervisor/prov", "note")]
    assert verify_database(ledger_url, kind="console").ok
    engine = sa.create_engine(ledger_url)
    with engine.begin() as conn:
        conn.execute(sa.text("update console_journal set body = '{\"reason\":\"nothing\"}' where seq = 1"))
    engine.dispose()
    report = verify_database(ledger_url, kind="console")
    assert (report.problem.seq, report.problem.kind) == (1, "altered"), report.describe()


@pytest_twisted.ensureDeferred
async def test_hpf_gateway_verify_walks_the_console_journal_and_names_a_tampered_row(ldb, ledger_url, tmp_path):
    import io

    from gateway.ledger.verify import verify_main

    [a, b] = await ldb.write(lambda tx: store.store_alerts(tx, _alerts(2, lambda i: "C52240")))
    await ldb.write(lambda tx: queries.acknowledge(tx, "hpf://supervisor/prov", [a["id"], b["id"]], "seen", None))
    await ldb.write(lambda tx: queries.note(tx, "hpf://supervisor/prov", a["id"], "called the centre", None))
    data = config_data()
    data["ledger"]["database"] = ledger_url
    path = tmp_path / "ledger.toml"
    path.write_text(render_toml(data), encoding="utf-8")

    def verify() -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        return verify_main(str(path), out=out, err=err), out.getvalue() + err.getvalue()

    code, text = verify()
    assert code == 0 and "console journal (console_journal): 3 rows, chain intact" in text, text
    # who acknowledged is rewritten behind the console's back: verify fails and names the row
    sql_(ledger_url, "update console_journal set who = 'hpf://supervisor/gy' where seq = 2")
    code, text = verify()
    assert code == 1 and "console journal (console_journal): BROKEN at seq 2 (altered)" in text, text
    assert "ledger journal (copies)" in text  # the copies are walked as before
    sql_(ledger_url, "update console_journal set who = 'hpf://supervisor/prov' where seq = 2")
    assert verify()[0] == 0
    # the newest row deleted: the journal's head still names it
    sql_(ledger_url, "delete from console_journal where seq = 3")
    code, text = verify()
    assert code == 1 and "BROKEN at seq 3 (deleted)" in text, text
    # and the next write does not paper over the gap
    await ldb.write(lambda tx: queries.note(tx, "hpf://supervisor/prov", a["id"], "again", None))
    assert verify()[0] == 1


@pytest_twisted.ensureDeferred
async def test_an_inquiry_past_its_deadline_raises_one_alert_for_its_centre(ldb):
    [a] = await ldb.write(lambda tx: store.store_alerts(tx, _alerts(1, lambda i: "C52240")))
    asked = await ldb.write(lambda tx: queries.ask(tx, "hpf://supervisor/prov", a["id"], "why?", 5_000, None))
    answered = await ldb.write(lambda tx: queries.ask(tx, "hpf://supervisor/prov", a["id"], "and?", 5_000, None))
    assert await ldb.write(lambda tx: queries.answer(tx, "hpf://staff/alice", answered, "because", [],
                                                     {"C52240"})) == "answered"
    assert await ldb.write(lambda tx: queries.answer(tx, "hpf://staff/bob", asked, "x", [], {"C11000"})) \
        == "not-found"
    assert await ldb.write(lambda tx: queries.raise_overdue(tx, 4_999)) == []  # not yet due
    created = await ldb.write(lambda tx: queries.raise_overdue(tx, 5_000))
    assert [(c["rule"], c["centre_id"]) for c in created] == [("inquiry-overdue", "C52240")]
    assert await ldb.write(lambda tx: queries.raise_overdue(tx, 10**12)) == []  # once only
    row = await ldb.read(queries.get_inquiry, asked, None)
    assert row["overdue_alert"] == created[0]["id"]


@pytest_twisted.ensureDeferred
async def test_an_answer_keeps_each_of_its_attachments_and_journals_each_by_its_digest(ldb):
    import hashlib
    import json

    [a] = await ldb.write(lambda tx: store.store_alerts(tx, _alerts(1, lambda i: "C52240")))
    asked = await ldb.write(lambda tx: queries.ask(tx, "hpf://supervisor/prov", a["id"], "why?", 10**15, None))
    files = [("a.txt", "text/plain", "甲".encode()), ("b.png", "image/png", b"\x89PNG\r\n\x1a\n" + b"x" * 10)]
    assert await ldb.write(lambda tx: queries.answer(tx, "hpf://staff/alice", asked, "see both", files,
                                                     {"C52240"})) == "answered"
    row = await ldb.read(queries.get_inquiry, asked, {"C52240"})
    assert [(f["name"], f["type"], f["size"]) for f in row["attachments"]] == [("a.txt", "text/plain", 3),
                                                                              ("b.png", "image/png", 18)]
    got = await ldb.read(queries.get_attachment, asked, row["attachments"][1]["id"], {"C52240"})
    assert got["data"] == files[1][2]
    # another centre's staff, or an attachment id of another inquiry, finds nothing
    assert await ldb.read(queries.get_attachment, asked, row["attachments"][1]["id"], {"C11000"}) is None
    assert await ldb.read(queries.get_attachment, asked + 1, row["attachments"][1]["id"], None) is None
    [entry] = [j for j in await ldb.read(queries.journal_for, f"inquiry/{asked}") if j["action"] == "answer"]
    body = json.loads(entry["body"])
    assert [f["sha256"] for f in body["attachments"]] == [hashlib.sha256(d).hexdigest() for _, _, d in files]


def test_attachments_are_bounded_in_count_size_and_type():
    from gateway.ledger.console.common import (
        MAX_ATTACHMENT,
        MAX_ATTACHMENTS,
        Refused,
        checked_attachments,
    )

    pdf = ("r.pdf", "application/pdf", b"%PDF-1.7 ...")
    assert checked_attachments([pdf, ("../../x.txt", "text/plain", b"ok")])[1][0] == "....x.txt"
    for bad in ([pdf] * (MAX_ATTACHMENTS + 1),                                   # too many
                [("big.pdf", "application/pdf", b"%PDF-" + b"0" * MAX_ATTACHMENT)],  # too large
                [("p.pdf", "application/pdf", b"<html>")],                      # not what it says
                [("x.html", "text/html", b"<script>")],                         # a type not allowed
                [("t.txt", "text/plain", b"\xff\xfe")],                          # text not UTF-8
                [pdf, ("b.pdf", "application/pdf", b"%PDF-" + b"0" * (MAX_ATTACHMENT - 8)),
                 ("c.pdf", "application/pdf", b"%PDF-" + b"0" * (MAX_ATTACHMENT - 8))],  # too much together
                "x"):
        with pytest.raises(Refused):
            checked_attachments(bad)


@pytest_twisted.ensureDeferred
async def test_a_manual_alert_rests_on_a_stored_fact_in_scope(ldb):
    copy = make_copy(1)
    await file(ldb, [copy])
    assert await ldb.write(lambda tx: queries.raise_manual(tx, "hpf://supervisor/gy", copy["event_id"], "major",
                                                           "looks odd", {"C11000"})) is None
    alert_id = await ldb.write(lambda tx: queries.raise_manual(tx, "hpf://supervisor/prov", copy["event_id"],
                                                               "major", "looks odd", None))
    alert = await ldb.read(queries.alert_row, alert_id, {"C52240"})
    assert (alert["rule"], alert["subject"], alert["centre_id"]) == ("manual", "C52240/I1", "C52240")


# -- live conditions in the matcher ------------------------------------------------------------------


def test_a_centres_own_conditions_apply_to_the_next_fact(config):
    m = Matcher(registry_from_config(config), Thresholds(large_amount=100_000_000, result_deadline_s=60,
                                                         booking_deadline_s=600))
    small = make_copy(1, instruction_id="S1", payload=received_payload("S1", 1, amount="600.00"))
    assert [d.rule for d in m.observe(Fact.from_copy(small), 1.0)] == []
    m.conditions = {"C52240": CentreConditions(large_amount=50_000, unregistered_counterparty=False)}
    odd = make_copy(2, instruction_id="S2", payload=received_payload(
        "S2", 2, amount="600.00", creditor={"account": "6200001234000099", "name": "王五",
                                            "bank_code": "105100000017"}))
    drafts = m.observe(Fact.from_copy(odd), 2.0)
    assert [d.rule for d in drafts] == ["large-amount"]  # the counterparty check is off for this centre
    assert "500.00" in drafts[0].summary


# -- rectifications ---------------------------------------------------------------------------------


def test_each_rectification_step_belongs_to_one_side():
    from gateway.ledger.console.rectify import next_state, overdue_step

    assert next_state("awaiting-plan", "submit-plan", supervisor=False) == "plan-submitted"
    assert next_state("awaiting-plan", "submit-plan", supervisor=True) is None
    assert next_state("plan-submitted", "approve", supervisor=True) == "in-progress"
    assert next_state("plan-submitted", "approve", supervisor=False) is None
    assert next_state("plan-submitted", "return", supervisor=True) == "awaiting-plan"
    assert next_state("in-progress", "close", supervisor=True) == "closed"
    assert next_state("closed", "progress", supervisor=False) is None
    assert overdue_step("awaiting-plan", 10, 20, 9) is None
    assert overdue_step("awaiting-plan", 10, 20, 10) == "plan"
    assert overdue_step("in-progress", 10, 20, 20) == "closure"
    assert overdue_step("closed", 10, 20, 99) is None


@pytest_twisted.ensureDeferred
async def test_a_late_rectification_step_raises_one_alert_per_step(ldb):
    alerts = await ldb.write(lambda tx: store.store_alerts(tx, _alerts(3, lambda i: "C52240" if i < 2 else "C11000")))
    mixed = await ldb.write(lambda tx: queries.open_rectification(
        tx, "hpf://supervisor/prov", [a["id"] for a in alerts], "x", 10, 20, None))
    assert mixed == "centres"
    rid = await ldb.write(lambda tx: queries.open_rectification(
        tx, "hpf://supervisor/prov", [alerts[0]["id"], alerts[1]["id"]], "x", 10, 20, None))
    assert await ldb.write(lambda tx: queries.raise_overdue_rectifications(tx, 9)) == []
    [late_plan] = await ldb.write(lambda tx: queries.raise_overdue_rectifications(tx, 10))
    assert (late_plan["rule"], late_plan["centre_id"]) == ("rectification-overdue", "C52240")
    assert await ldb.write(lambda tx: queries.raise_overdue_rectifications(tx, 15)) == []  # once
    assert await ldb.write(lambda tx: queries.act_on_rectification(
        tx, "hpf://staff/alice", rid, "submit-plan", "plan", False, {"C52240"})) == "done"
    assert await ldb.write(lambda tx: queries.act_on_rectification(
        tx, "hpf://staff/alice", rid, "approve", "", False, {"C52240"})) == "conflict"
    [late_close] = await ldb.write(lambda tx: queries.raise_overdue_rectifications(tx, 20))
    assert "closure" in late_close["summary"]
    row = await ldb.read(queries.get_rectification, rid, None)
    assert row["alerts"] == [alerts[0]["id"], alerts[1]["id"]] and row["plan"] == "plan"


# -- reports ------------------------------------------------------------------------------------------


def test_report_periods_series_and_assessment():
    import datetime as dt

    from gateway.ledger.console.reports import day_series, period_range, report_csv

    d = dt.date(2026, 11, 27)
    assert period_range("day", d) == (d, dt.date(2026, 11, 28))
    assert period_range("month", d) == (dt.date(2026, 11, 1), dt.date(2026, 12, 1))
    assert period_range("quarter", d) == (dt.date(2026, 10, 1), dt.date(2027, 1, 1))
    assert period_range("year", d) == (dt.date(2026, 1, 1), dt.date(2027, 1, 1))
    assert period_range("month", dt.date(2026, 12, 31)) == (dt.date(2026, 12, 1), dt.date(2027, 1, 1))
    with pytest.raises(ValueError):
        period_range("week", d)
    epoch_day = (d - dt.date(1970, 1, 1)).days
    series = day_series({epoch_day: [3, 12345]}, dt.date(2026, 11, 26), dt.date(2026, 11, 29))
    assert series == [("2026-11-26", 0, 0), ("2026-11-27", 3, 12345), ("2026-11-28", 0, 0)]
    hour = 3_600_000_000
    data = {"centres": {"C52240": 20_000}, "overdue_inquiries": {"C52240": 1},
            "responses": [("C52240", "large-amount", 1, 1, 2 * hour, 1, 4 * hour), ("C52240", "balance-break", 1, 0, 0, 0, 0),
                          ("C52240", "inquiry-overdue", 1, 0, 0, 0, 0), ("C52240", "rectification-overdue", 1, 0, 0, 0, 0),
                          ("C11000", "large-amount", 5, 5, 50 * hour, 0, 0)]}
    [row] = report_queries.assessment(data, ["C52240"])
    assert row == {"centre": "C52240", "instructions": 20_000, "alerts": 2, "per_10k": 1.0, "ack_hours": 2.0,
                   "resolve_hours": 4.0, "overdue_inquiries": 1, "overdue_rectifications": 1}
    text = report_csv(series, [row])
    assert "2026-11-27,3,123.45" in text and "C52240,20000,2,1.0,2.0,4.0,1,1" in text


@pytest_twisted.ensureDeferred
async def test_a_reports_response_times_are_summed_per_centre_and_rule_in_the_database(ldb):
    from gateway.ledger.console.totals import AlertTotals, DailyTotals

    made = await ldb.write(lambda tx: store.store_alerts(tx, _alerts(4, lambda i: "C52240" if i < 3 else "C11000")))
    a, b, _, d = (m["id"] for m in made)
    await ldb.write(lambda tx: queries.acknowledge(tx, "hpf://supervisor/prov", [a, b, d], "seen", None))
    await ldb.write(lambda tx: queries.resolve(tx, "hpf://supervisor/prov", a, "done", None))
    start = min(m["created_us"] for m in made)
    # Read before and after a fold (the tail read from the tables, then the folded rows): the same
    data = await ldb.read(report_queries.report_data, None, start, start + 10**12, DailyTotals(), AlertTotals())
    assert await ldb.write(AlertTotals(chunk=2).fold) is True and await ldb.write(AlertTotals().fold) is False
    assert await ldb.read(report_queries.report_data, None, start, start + 10**12, DailyTotals(), AlertTotals(tail=0)) \
        == data
    by = {(c, r): row for c, r, *row in data["responses"]}
    # _alerts(4): rules manual; C52240 holds a (acked, resolved), b (acked), c (open); C11000 holds d (acked)
    n, acked, _, resolved, _ = by[("C52240", "manual")]
    assert (n, acked, resolved) == (3, 2, 1) and by[("C11000", "manual")][:2] == [1, 1]
    assert all(us >= 0 for row in by.values() for us in (row[2], row[4]))
    assert data["rules"] == [("manual", 4)]
    assert (await ldb.read(report_queries.report_data, {"C11000"}, start, start + 10**12, DailyTotals(),
                           AlertTotals()))["rules"] == \
        [("manual", 1)]
    [row] = report_queries.assessment(data, ["C52240"])
    assert row["alerts"] == 0 and row["ack_hours"] is not None and row["resolve_hours"] is not None  # manual is the console's


@pytest_twisted.ensureDeferred
async def test_daily_totals_take_each_instruction_once_as_copies_arrive(ldb):
    from gateway.ledger.console.totals import DAY_US, DailyTotals
    from tests.kit.ledger import T0

    totals = DailyTotals(chunk=2, tail=1)
    day = (T0 + 8 * 3_600_000_000) // DAY_US
    await file(ldb, [make_copy(1, instruction_id="A1", payload=received_payload("A1", 1, amount="1.50")),
                     make_copy(2, instruction_id="A1", state="sent", payload={"bank_ref": "x"})])
    # Not folded yet: two seqs behind, more than the tail a page reads itself
    assert await ldb.read(totals.between, None, day, day + 1) == ({}, 2)
    assert await ldb.write(totals.fold) is False  # both seqs in one chunk, nothing left
    assert await ldb.write(totals.fold) is False  # nothing new: nothing counted twice
    both = {(day, "C52240", "B001", "received"): (1, 150), (day, "C52240", "B001", "sent"): (1, 0)}
    assert await ldb.read(totals.between, None, day, day + 1) == (both, 0)
    # One copy not folded yet is within the tail: read from the copies, so the answer is exact
    await file(ldb, [make_copy(3, instruction_id="A2", payload=received_payload("A2", 3, amount="2.00"))])
    counted, behind = await ldb.read(totals.between, None, day, day + 1)
    assert behind == 0 and counted[(day, "C52240", "B001", "received")] == (2, 350)
    await file(ldb, [make_copy(n, instruction_id=f"B{n}", payload=received_payload(f"B{n}", n, amount="1.00"))
                     for n in (4, 5, 6)])
    assert await ldb.write(totals.fold) is True  # four seqs behind, two per chunk
    assert await ldb.write(totals.fold) is False
    counted, behind = await ldb.read(totals.between, None, day, day + 1)
    assert behind == 0 and counted[(day, "C52240", "B001", "received")] == (5, 650)
    # A restart keeps what was folded: a new reader starts from the stored mark
    assert await ldb.read(DailyTotals().between, None, day, day + 1) == (counted, 0)
    assert await ldb.read(totals.between, {"C11000"}, day, day + 1) == ({}, 0)
    assert await ldb.read(totals.between, None, day + 1, day + 2) == ({}, 0)


def test_a_banks_frame_is_shown_decoded_by_its_adapter_and_as_readable_text():
    from gateway.ledger.console.common import describe_frame
    from tests.kit.ledger import result_frame

    decoded, text = describe_frame("bdc", result_frame(1, "H0001"))
    assert decoded.startswith("Result(") and "host_seq_no='H0001'" in decoded
    assert "H0001" in text and "\x00" not in text and "\\x00" in text  # binary header escaped, XML readable
    assert describe_frame("bdc", "报文 <x/>".encode("gbk"))[1] == "报文 <x/>"
    bad_decoded, _ = describe_frame("bdc", b"garbage")
    assert bad_decoded.startswith("(")  # the adapter's refusal is shown, the page still renders
    assert describe_frame(None, None) == (None, None)


def test_no_template_holds_what_the_content_security_policy_would_block():
    from gateway.ledger.console.common import CSP

    assert "'unsafe-inline'" not in CSP and "default-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
    templates = files("gateway.ledger.console").joinpath("templates")
    for entry in templates.iterdir():
        text = entry.read_text(encoding="utf-8")
        assert "style=" not in text and "<style" not in text, entry.name
        assert re.findall(r"<script[^>]*>", text) in ([], ['<script src="/static/console.js" defer>']), entry.name
        assert not re.search(r"\son[a-z]+\s*=", text), entry.name  # no inline event handlers
        assert "|safe" not in text.replace(" ", ""), entry.name  # nothing bypasses autoescaping


def test_migration_0006_moves_an_answers_one_attachment_to_its_own_table_and_back(tmp_path):
    from alembic import command

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store.MIGRATIONS.upgrade(url, "L0005")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("insert into alerts (key, rule, severity, state, subject, summary, evidence, created_us,"
                             " updated_us) values ('k', 'manual', 'major', 'open', 'C52240/I1', 's', '[]', 1, 1)"))
        conn.execute(sa.text("insert into inquiries (alert_id, centre_id, question, asked_by, asked_us, deadline_us,"
                             " state, answer, attachment_name, attachment_type, attachment) values (1, 'C52240', 'q',"
                             " 'hpf://supervisor/p', 1, 2, 'answered', 'a', 'r.pdf', 'application/pdf', :d)"),
                     {"d": b"%PDF-1"})
    store.MIGRATIONS.upgrade(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select inquiry_id, name, type, size, data from inquiry_attachments")).all()
        assert [tuple(r) for r in rows] == [(1, "r.pdf", "application/pdf", 6, b"%PDF-1")]
        assert "attachment" not in {c["name"] for c in sa.inspect(conn).get_columns("inquiries")}
    command.downgrade(store.MIGRATIONS._config(url), "L0005")
    with engine.connect() as conn:
        assert conn.execute(sa.text("select attachment_name, attachment from inquiries")).one() == ("r.pdf", b"%PDF-1")
    engine.dispose()


@pytest_twisted.ensureDeferred
async def test_the_copies_behind_the_match_lag_are_those_above_the_matchers_seq_oldest_first_in_scope(ldb):
    await file(ldb, [make_copy(1, instruction_id="A1"),
                     make_copy(2, instruction_id="B1", centre_id="C11000",
                               payload=received_payload("B1", 2)),
                     make_copy(3, instruction_id="A2", payload=received_payload("A2", 3))])
    every = await ldb.read(queries.unmatched_copies, None, 0)
    assert [r["instruction_id"] for r in every] == ["A1", "B1", "A2"]  # the longest waiting first
    assert await ldb.read(queries.unmatched_count, None, 0) == 3
    # the matcher has taken the first: two are left, one of them Guiyang's
    first = every[0]["seq"]
    assert [r["instruction_id"] for r in await ldb.read(queries.unmatched_copies, None, first)] == ["B1", "A2"]
    assert [r["instruction_id"] for r in await ldb.read(queries.unmatched_copies, {"C52240"}, first)] == ["A2"]
    assert await ldb.read(queries.unmatched_count, {"C52240"}, first) == 1
    # paged by the seq of the last row shown
    assert [r["instruction_id"] for r in await ldb.read(
        lambda c: queries.unmatched_copies(c, None, first, after_seq=every[1]["seq"]))] == ["A2"]
    assert await ldb.read(queries.unmatched_count, None, every[2]["seq"]) == 0


def test_the_length_of_a_deadline_day_and_the_overdue_check_are_configured_seconds(tmp_path, config):
    from gateway.config import ConfigError

    assert (config.console.deadline_day, config.console.overdue_check) == (86_400.0, 5.0)  # the defaults
    data = config_data()
    data["console"].update(deadline_day=1.5, overdue_check=0.2)
    path = tmp_path / "short.toml"
    path.write_text(render_toml(data), encoding="utf-8")
    console = load_ledger_config(path, check_files=False).console
    assert (console.deadline_day, console.overdue_check) == (1.5, 0.2)
    data["console"]["deadline_day"] = 0
    path.write_text(render_toml(data), encoding="utf-8")
    with pytest.raises(ConfigError, match="deadline_day"):
        load_ledger_config(path, check_files=False)


def test_the_inbox_filter_offers_every_rule_the_ledger_raises():
    # A rule added to the ledger (clock-step, journal-fork, centre-message-refused...) must be
    # selectable in the inbox, not only visible in it.
    from gateway.ledger import rules
    from gateway.ledger.console.common import ALERT_RULES

    assert set(ALERT_RULES) >= rules.ALL_RULES
    assert len(ALERT_RULES) == len(set(ALERT_RULES))


@pytest_twisted.ensureDeferred
async def test_a_collection_is_listed_with_the_centres_account_and_its_payer(ldb):
    # A collection credits the centre's account and debits its payer (the debtor): the list shows
    # the centre's account and the payer as the other party, as it does a transfer's creditor.
    from tests.kit.ledger import bank_ref

    payer = {"account": "6217009999000123", "name": "示例缴存单位<b>", "bank_code": "105100000017",
             "agreement_no": "AG-2026-001"}
    instruction = {"instruction_id": "IC1", "kind": "collection", "credit_account": DEBIT, "debtor": payer,
                   "amount": "9.00", "purpose": "contribution", "memo": "", "approval_ref": None,
                   "requested_date": "2026-11-27"}
    await file(ldb, [make_copy(1, instruction_id="IC1", payload={"instruction": instruction, "bank": "B001",
                                                                 "bank_ref": bank_ref(1)})])
    [row] = await ldb.read(lambda c: queries.instruction_list(c, None, state="received"))
    assert (row["amount"], row["debit_account"], row["creditor"]) == (900, DEBIT, payer["name"])
