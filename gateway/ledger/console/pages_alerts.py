"""The console's pages over the facts: the overview, the instruction lists, the alert inbox and an
alert's evidence, and the writes on alerts (acknowledge, note, resolve, a manual alert)."""

from __future__ import annotations

import datetime as _dt
import json
from typing import TYPE_CHECKING, Any, Callable, Mapping

from twisted.logger import Logger

from gateway.ledger.console import charts, queries
from gateway.ledger.console.common import (
    _ACCOUNT,
    _BANK,
    _CENTRE,
    _EVENT,
    _ID,
    _KEYSET,
    _STATES,
    ALERT_RULES,
    INSTRUCTION_STATES,
    PAGE,
    Redirect,
    Refused,
    _choice,
    _clean_text,
    _date,
    _day_start_us,
    _now_us,
    _pattern,
    describe_frame,
)
from gateway.ledger.console.i18n import translate
from gateway.ledger.console.scope import Viewer
from gateway.ledger.report import REPORT_TZ, trail_item
from gateway.ledger.rules import SEVERITIES

if TYPE_CHECKING:
    from gateway.ledger.console.state import Console

log = Logger()


class AlertPages:
    """A part of :class:`~gateway.ledger.console.app.ConsoleResource` (its pages of one area)."""

    console: Console
    _deny: Callable[..., Refused]

    # -- overview ------------------------------------------------------------------------

    async def _overview(self, viewer: Viewer, lang: str) -> dict[str, Any]:
        c = self.console
        today = _dt.datetime.now(REPORT_TZ).date()
        start = _day_start_us(today)
        data = await c.db.read(queries.overview_counts, viewer.centres, start, start + 86_400_000_000, c.totals)
        applied = c.engine.applied_seq
        lag = await c.db.read(queries.unmatched_count, viewer.centres, applied)
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for centre, bank, state, n in data["states"]:
            row = rows.setdefault((centre, bank), {"centre": centre, "bank": bank, "city": c.city_name(centre),
                                                   "received": 0, "succeeded": 0, "failed": 0,
                                                   "rejected": 0, "in_doubt": 0})
            if state in row:
                row[state] += n
        for (centre, bank), total in data["sums"].items():
            rows.setdefault((centre, bank), {"centre": centre, "bank": bank, "city": c.city_name(centre),
                                             "received": 0, "succeeded": 0, "failed": 0, "rejected": 0,
                                             "in_doubt": 0})["amount"] = total
        by_severity: dict[str, int] = {s: 0 for s in ("critical", "major", "minor")}
        by_rule: dict[str, int] = {}
        for severity, rule, n in data["open"]:
            by_severity[severity] = by_severity.get(severity, 0) + n
            by_rule[rule] = by_rule.get(rule, 0) + n
        chart = charts.bar_chart([(translate(f"severity.{s}", lang), n) for s, n in by_severity.items()],
                                 title=translate("overview.open_by_severity", lang))
        return {"rows": [rows[k] for k in sorted(rows)], "by_severity": by_severity, "by_rule": by_rule,
                "in_doubt": sum(r["in_doubt"] for r in rows.values()),
                "overdue": by_rule.get("missing-result", 0), "balance_breaks": by_rule.get("balance-break", 0),
                "overdue_inquiries": by_rule.get(queries.INQUIRY_OVERDUE, 0),
                "lag": lag, "lag_cap": queries.UNMATCHED_CAP, "chart": chart, "today": today.isoformat(),
                "behind": data["behind"]}

    # -- instructions ----------------------------------------------------------------------

    async def _instructions(self, request: Any, viewer: Viewer) -> dict[str, Any]:
        """The list behind the overview's counts: by centre, bank, state reached and days, or the
        overdue ones; in scope, paged by keyset."""
        c = self.console
        if _choice(request, b"unmatched", ("1",)):
            return await self._unmatched(request, viewer)
        f = {"centre": _pattern(request, b"centre", _CENTRE), "bank": _pattern(request, b"bank", _BANK),
             "state": _choice(request, b"state", INSTRUCTION_STATES),
             "overdue": _choice(request, b"overdue", ("1",)),
             "from": _date(request, b"from"), "to": _date(request, b"to")}
        from_us = _day_start_us(f["from"]) if f["from"] else None
        to_us = _day_start_us(f["to"]) + 86_400_000_000 if f["to"] else None
        if f["overdue"]:
            before = _pattern(request, b"before", _ID)
            rows = await c.db.read(lambda conn: queries.overdue_instructions(
                conn, viewer.centres, centre=f["centre"], bank=f["bank"],
                before_id=int(before) if before else None, limit=PAGE + 1))
            def key(r: Mapping[str, Any]) -> str:
                return str(r["alert_id"])
        else:
            before = _pattern(request, b"before", _KEYSET)
            after_row = (int(before.split(".")[0]), int(before.split(".")[1])) if before else None
            rows = await c.db.read(lambda conn: queries.instruction_list(
                conn, viewer.centres, centre=f["centre"], bank=f["bank"], state=f["state"], from_us=from_us,
                to_us=to_us, before=after_row, limit=PAGE + 1))
            def key(r: Mapping[str, Any]) -> str:
                return f"{r['created_us']}.{r['seq']}"
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        filters = {k: (v.isoformat() if isinstance(v, _dt.date) else v) for k, v in f.items()}
        return {"instructions": rows, "filters": filters, "next_before": key(rows[-1]) if more and rows else None,
                "paged": before is not None, "states": INSTRUCTION_STATES, "centres": viewer.visible(c.centres)}

    async def _unmatched(self, request: Any, viewer: Viewer) -> dict[str, Any]:
        """The list behind the match lag: the copies filed but not yet matched, the longest waiting first."""
        c = self.console
        after = _pattern(request, b"after", _ID)
        applied = c.engine.applied_seq
        rows = await c.db.read(lambda conn: queries.unmatched_copies(
            conn, viewer.centres, applied, after_seq=int(after) if after else None, limit=PAGE + 1))
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        now_us = _now_us()
        for r in rows:
            r["waited_s"] = max(0, now_us - r["received_us"]) / 1_000_000
        return {"template": "unmatched.html", "copies": rows, "applied_seq": applied, "paged": after is not None,
                "next_after": rows[-1]["seq"] if more and rows else None}

    # -- alerts ----------------------------------------------------------------------------

    async def _inbox(self, request: Any, viewer: Viewer) -> dict[str, Any]:
        c = self.console
        f = {"rule": _choice(request, b"rule", ALERT_RULES), "severity": _choice(request, b"severity", SEVERITIES),
             "state": _choice(request, b"state", _STATES), "centre": _pattern(request, b"centre", _CENTRE),
             "bank": _pattern(request, b"bank", _BANK), "account": _pattern(request, b"account", _ACCOUNT),
             "from": _date(request, b"from"), "to": _date(request, b"to")}
        before = _pattern(request, b"before", _ID)
        rows = await c.db.read(lambda conn: queries.inbox(
            conn, viewer.centres, rule=f["rule"], severity=f["severity"], centre=f["centre"], bank=f["bank"],
            account=f["account"],
            state=f["state"], from_us=_day_start_us(f["from"]) if f["from"] else None,
            to_us=_day_start_us(f["to"]) + 86_400_000_000 if f["to"] else None,
            before_id=int(before) if before else None, limit=PAGE + 1))
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        filters = {k: (v.isoformat() if isinstance(v, _dt.date) else v) for k, v in f.items()}
        return {"alerts": rows, "filters": filters, "next_before": rows[-1]["id"] if more and rows else None,
                "paged": before is not None, "rules": ALERT_RULES, "severities": ("critical", "major", "minor"),
                "states": _STATES, "centres": viewer.visible(c.centres)}

    async def _alert(self, viewer: Viewer, alert_id: int) -> dict[str, Any]:
        c = self.console
        keys = c.keys

        def read(conn: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
            alert = queries.alert_row(conn, alert_id, viewer.centres)
            if alert is None:
                return None
            found = queries.evidence(conn, alert)
            items = []
            for row in found["copies"]:
                item = trail_item(row, keys)  # the signature check of every copy, as the API does it
                item["decoded"], item["raw_text"] = describe_frame(row["adapter"], row["raw"])
                items.append(item)
            found["copies"] = items
            return alert, found

        got = await c.db.read(read)
        if got is None:
            raise Refused(404, "error.404")
        alert, found = got
        instruction = next((i["payload"]["instruction"] for i in found["copies"]
                            if isinstance(i["payload"], dict) and isinstance(i["payload"].get("instruction"), dict)),
                           None)
        timeline = sorted(
            [(i["created_us"], f"{i['kind']} {i['state'] or ''}".strip(), i["gateway"]) for i in found["copies"]]
            + [(n["at_us"], n["action"], n["who"]) for n in found["notes"]]
            + [(j["at_us"], j["action"], j["who"]) for j in found["journal"] if j["action"] not in
               ("note", "acknowledged", "resolved")])
        return {"alert": alert, "evidence_ids": json.loads(alert["evidence"]), "copies": found["copies"],
                "instruction": instruction, "balances": found["balances"], "notes": found["notes"],
                "inquiries": found["inquiries"], "timeline": timeline, "city": c.city_name(alert["centre_id"])}

    async def _ack(self, viewer: Viewer, form: Mapping[str, Any]) -> Redirect:
        ids = [int(i) for i in (form.get("id") or []) if _ID.fullmatch(i)][:PAGE * 4]
        reason = _clean_text(form.get("reason"), "reason")
        changed = await self.console.db.write(
            lambda tx: queries.acknowledge(tx, viewer.uri, ids, reason, viewer.centres))
        log.info("console.acknowledged", who=viewer.uri, alerts=len(changed))
        if changed:
            self.console.engine.refresh_alert_gauge()
        back = form.get("back") or "/alerts"
        return Redirect(back if back.startswith("/alerts") and "//" not in back else "/alerts")

    async def _note(self, viewer: Viewer, alert_id: int, form: Mapping[str, Any]) -> Redirect:
        text = _clean_text(form.get("text"), "text")
        if not await self.console.db.write(lambda tx: queries.note(tx, viewer.uri, alert_id, text, viewer.centres)):
            raise Refused(404, "error.404")
        return Redirect(f"/alerts/{alert_id}")

    async def _resolve(self, viewer: Viewer, alert_id: int, form: Mapping[str, Any]) -> Redirect:
        reason = _clean_text(form.get("reason"), "reason")
        outcome = await self.console.db.write(
            lambda tx: queries.resolve(tx, viewer.uri, alert_id, reason, viewer.centres))
        if outcome == "not-found":
            raise Refused(404, "error.404")
        if outcome == "conflict":
            raise Refused(409, "error.title", "only an acknowledged alert can be resolved")
        self.console.engine.refresh_alert_gauge()
        return Redirect(f"/alerts/{alert_id}")

    async def _manual(self, viewer: Viewer, form: Mapping[str, Any]) -> Redirect:
        event_id = form.get("event_id") or ""
        severity = form.get("severity")
        if not _EVENT.fullmatch(event_id) or severity not in SEVERITIES:
            raise Refused(400, "error.400", "event_id and severity are required")
        summary = _clean_text(form.get("summary"), "summary")
        alert_id = await self.console.db.write(
            lambda tx: queries.raise_manual(tx, viewer.uri, event_id, severity, summary, viewer.centres))
        if alert_id is None:
            raise Refused(404, "error.404", "no such fact in your scope")
        self.console.engine.refresh_alert_gauge()
        return Redirect(f"/alerts/{alert_id}")
