"""The console's casework: 意见反馈 inquiries and their answers, 问题纠正 rectifications, and
预警条件设置 the alert conditions."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Callable, Mapping

from twisted.logger import Logger

from gateway.ledger.console import queries
from gateway.ledger.console.common import (
    _ID,
    PAGE,
    Raw,
    Redirect,
    Refused,
    _choice,
    _clean_text,
    _now_us,
    _pattern,
    checked_attachments,
)
from gateway.ledger.console.scope import Viewer
from gateway.model import parse_amount

if TYPE_CHECKING:
    from gateway.ledger.console.state import Console

log = Logger()


class CasePages:
    """A part of :class:`~gateway.ledger.console.app.ConsoleResource` (its pages of one area)."""

    console: Console
    _deny: Callable[..., Refused]

    # -- inquiries ---------------------------------------------------------------------------

    async def _ask(self, viewer: Viewer, alert_id: int, form: Mapping[str, Any]) -> Redirect:
        question = _clean_text(form.get("question"), "question")
        days = form.get("days") or ""
        if not days.isdigit() or not 1 <= int(days) <= 90:
            raise Refused(400, "error.400", "the deadline is 1 to 90 days")
        c = self.console
        deadline = _now_us() + c.days_us(int(days))
        inquiry_id = await c.db.write(
            lambda tx: queries.ask(tx, viewer.uri, alert_id, question, deadline, viewer.centres))
        if inquiry_id is None:
            raise Refused(404, "error.404")
        return Redirect(f"/inquiries/{inquiry_id}")

    async def _answer(self, viewer: Viewer, inquiry_id: int, form: Mapping[str, Any]) -> Redirect:
        text = _clean_text(form.get("answer"), "answer")
        files = checked_attachments(form.get("attachment") or [])
        outcome = await self.console.db.write(
            lambda tx: queries.answer(tx, viewer.uri, inquiry_id, text, files, viewer.centres))
        if outcome == "not-found":
            raise Refused(404, "error.404")
        if outcome == "conflict":
            raise Refused(409, "error.title", "this inquiry is already answered")
        return Redirect(f"/inquiries/{inquiry_id}")

    async def _inquiries(self, request: Any, viewer: Viewer) -> dict[str, Any]:
        before = _pattern(request, b"before", _ID)
        state = _choice(request, b"state", ("open", "answered"))
        rows = await self.console.db.read(lambda conn: queries.list_inquiries(
            conn, viewer.centres, state=state, before_id=int(before) if before else None, limit=PAGE + 1))
        now_us = _now_us()
        return {"inquiries": rows[:PAGE], "next_before": rows[PAGE - 1]["id"] if len(rows) > PAGE else None,
                "now_us": now_us, "state": state}

    async def _inquiry(self, viewer: Viewer, inquiry_id: int) -> dict[str, Any]:
        row = await self.console.db.read(queries.get_inquiry, inquiry_id, viewer.centres)
        if row is None:
            raise Refused(404, "error.404")
        return {"inquiry": row, "now_us": _now_us()}

    async def _attachment(self, viewer: Viewer, inquiry_id: int, attachment_id: int) -> Raw:
        row = await self.console.db.read(queries.get_attachment, inquiry_id, attachment_id, viewer.centres)
        if row is None:
            raise Refused(404, "error.404")
        # Always a download, never rendered in our origin.
        return Raw(row["data"], "application/octet-stream", row["name"])

    # -- rectifications ----------------------------------------------------------------------

    def _now_us(self) -> int:
        return _now_us()

    async def _open_rectification(self, viewer: Viewer, form: Mapping[str, Any]) -> Redirect:
        ids = [int(i) for i in (form.get("id") or []) if _ID.fullmatch(i)][:PAGE * 4]
        title = _clean_text(form.get("title"), "title")
        plan_days, due_days = form.get("plan_days") or "", form.get("due_days") or ""
        if not (plan_days.isdigit() and due_days.isdigit() and 1 <= int(plan_days) <= int(due_days) <= 365):
            raise Refused(400, "error.400", "deadlines: 1 <= plan days <= closure days <= 365")
        now, c = self._now_us(), self.console
        rid = await c.db.write(lambda tx: queries.open_rectification(
            tx, viewer.uri, ids, title, now + c.days_us(int(plan_days)), now + c.days_us(int(due_days)),
            viewer.centres))
        if rid == "not-found":
            raise Refused(404, "error.404", "choose alerts in your scope")
        if rid == "centres":
            raise Refused(400, "error.400", "a rectification is about the alerts of one centre")
        return Redirect(f"/rectifications/{rid}")

    async def _rectification_step(self, request: Any, viewer: Viewer, rid: int, action: str,
                                  form: Mapping[str, Any]) -> Redirect:
        text = _clean_text(form.get("text"), "text", required=action in ("submit-plan", "progress", "close",
                                                                         "return"))
        outcome = await self.console.db.write(lambda tx: queries.act_on_rectification(
            tx, viewer.uri, rid, action, text, viewer.supervisor, viewer.centres))
        if outcome == "not-found":
            raise Refused(404, "error.404")
        if outcome == "conflict":
            raise self._deny(request, None, f"rectification-{action}-not-allowed")
        return Redirect(f"/rectifications/{rid}")

    # -- conditions --------------------------------------------------------------------------

    async def _conditions(self, viewer: Viewer) -> dict[str, Any]:
        c = self.console
        own = await c.db.read(queries.conditions)
        history = await c.db.read(lambda conn: [queries.journal_for(conn, f"centre/{centre}")
                                                for centre in viewer.visible(c.centres)])
        entries = sorted((dict(j, body=json.loads(j["body"])) for h in history for j in h),
                         key=lambda j: -j["seq"])
        return {"centres": viewer.visible(c.centres), "own": own, "defaults": c.config.thresholds,
                "history": entries[:200]}

    async def _set_conditions(self, viewer: Viewer, form: Mapping[str, Any]) -> Redirect:
        c = self.console
        centre = form.get("centre") or ""
        if centre not in c.centres:
            raise Refused(400, "error.400", "no such centre")
        reason = _clean_text(form.get("reason"), "reason")
        values: dict[str, int | None] = {}
        try:
            for field in ("large_amount", "balance_tolerance"):
                text = (form.get(field) or "").strip()
                values[field] = None if not text else (0 if field == "balance_tolerance" and
                                                       re.fullmatch(r"0(\.0{1,2})?", text) else parse_amount(text))
            deadline = (form.get("result_deadline") or "").strip()
            if deadline and (not re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,3})?", deadline) or float(deadline) <= 0):
                raise ValueError("the result deadline is seconds above 0")
            values["result_deadline_ms"] = round(float(deadline) * 1000) if deadline else None
        except ValueError as e:
            raise Refused(400, "error.400", str(e)) from None
        switch = form.get("unregistered_counterparty") or ""
        if switch not in ("", "on", "off"):
            raise Refused(400, "error.400", "unregistered_counterparty is on, off or default")
        values["unregistered_counterparty"] = None if not switch else int(switch == "on")
        await c.db.write(lambda tx: queries.set_conditions(tx, viewer.uri, centre, values, reason))
        await c.engine.conditions_changed()  # live: the next fact is judged under them
        log.info("console.conditions", who=viewer.uri, centre=centre)
        return Redirect("/conditions")
