"""The console's reads for 监管报告 reports, the 考核 assessment of centres and 银行账户管理 accounts
(functions of a connection, in scope like every read of :mod:`.queries`)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from gateway.ledger import store
from gateway.ledger.console.queries import CONSOLE_RULES
from gateway.ledger.console.totals import (
    _CST_US,
    DAY_US,
    AlertTotals,
    Centres,
    DailyTotals,
    _add,
    _in_scope,
)
from gateway.ledger.store import alerts, copies, inquiries

__all__ = ["report_data", "assessment", "account_status"]


# -- reports and assessment (监管报告, 考核) -----------------------------------------------------



def report_data(conn: Connection, centres: Centres, start_us: int, end_us: int,
                totals: DailyTotals, alert_totals: AlertTotals) -> dict[str, Any]:
    """What a report over [start_us, end_us) is drawn from, in scope.

    ``days``: {day index (UTC+8): [instructions, instructed fen]}; ``outcomes``: [(bank, state, n)];
    ``rules``: [(rule, n)]; ``responses``: [(centre, rule, alerts, acknowledged, µs to acknowledge summed,
    resolved, µs to resolve summed)];
    ``centres``: {centre: instructions}; ``overdue_inquiries``: {centre: n}.
    """
    days: dict[int, list[int]] = {}
    per_centre: dict[str, int] = {}
    first_day, end_day = (start_us + _CST_US) // DAY_US, (end_us + _CST_US) // DAY_US
    outcome: dict[tuple[str, str], int] = {}
    counted, behind = totals.between(conn, centres, first_day, end_day)
    for (day, centre, bank, state), (n, fen) in counted.items():
        if state in ("succeeded", "failed", "rejected", "in_doubt"):
            outcome[(bank, state)] = outcome.get((bank, state), 0) + n
        if state != "received":
            continue
        slot = days.setdefault(day, [0, 0])
        slot[0] += n
        slot[1] += fen
        per_centre[centre] = per_centre.get(centre, 0) + n
    outcomes = [(b, st, n) for (b, st), n in sorted(outcome.items())]
    by_centre_rule: dict[tuple[str, str], list[int]] = {}
    counted_alerts, alerts_behind = alert_totals.between(conn, centres, first_day, end_day)
    for (_, centre, rule), numbers in counted_alerts.items():
        _add(by_centre_rule, (centre, rule), numbers)
    responses = [(c, r, *numbers) for (c, r), numbers in sorted(by_centre_rule.items())]
    by_rule: dict[str, int] = {}
    for _, rule, n, *_ in responses:
        by_rule[rule] = by_rule.get(rule, 0) + n
    rules = sorted(by_rule.items())
    overdue = {c: int(n) for c, n in conn.execute(
        select(inquiries.c.centre_id, func.count()).where(
            inquiries.c.overdue_alert.is_not(None), inquiries.c.asked_us >= start_us, inquiries.c.asked_us < end_us,
            _in_scope(inquiries.c.centre_id, centres)).group_by(inquiries.c.centre_id))}
    return {"days": days, "outcomes": outcomes, "rules": rules, "responses": responses, "centres": per_centre,
            "overdue_inquiries": overdue, "behind": behind + alerts_behind}


def assessment(data: Mapping[str, Any], centres: Sequence[str]) -> list[dict[str, Any]]:
    """考核: per centre, alerts per 10,000 instructions, mean hours to acknowledge and to resolve,
    overdue inquiries and rectifications (pure, from :func:`report_data`)."""
    rows = []
    for centre in centres:
        mine = [r for r in data["responses"] if r[0] == centre]
        alerts_n = sum(r[2] for r in mine if r[1] not in CONSOLE_RULES)
        acked, ack_us = sum(r[3] for r in mine), sum(r[4] for r in mine)
        resolved, resolve_us = sum(r[5] for r in mine), sum(r[6] for r in mine)
        instructions = data["centres"].get(centre, 0)
        rows.append({
            "centre": centre, "instructions": instructions, "alerts": alerts_n,
            "per_10k": round(alerts_n * 10_000 / instructions, 1) if instructions else None,
            "ack_hours": round(ack_us / acked / 3.6e9, 2) if acked else None,
            "resolve_hours": round(resolve_us / resolved / 3.6e9, 2) if resolved else None,
            "overdue_inquiries": data["overdue_inquiries"].get(centre, 0),
            "overdue_rectifications": sum(r[2] for r in mine if r[1] == "rectification-overdue"),
        })
    return rows


# -- accounts (银行账户管理) ------------------------------------------------------------------------


def account_status(conn: Connection, account: str) -> dict[str, Any]:
    """An account's latest bank balance, the balance the ledger expects now (that balance plus the
    movements filed since), its last movement and its open alerts."""
    last = conn.execute(select(copies.c.seq, copies.c.payload, copies.c.created_us).where(
        copies.c.account == account, copies.c.kind == "bank.balance").order_by(copies.c.seq.desc()).limit(1)).first()
    reported = store._int_or_none(store._loads(last.payload).get("balance")) if last else None
    expected = None
    if last is not None and reported is not None:
        net = 0
        for (payload,) in conn.execute(select(copies.c.payload).where(
                copies.c.account == account, copies.c.kind == "bank.movement", copies.c.seq > last.seq)):
            net += store._int_or_none(store._loads(payload).get("amount")) or 0
        expected = reported + net
    move = conn.execute(select(copies.c.payload, copies.c.created_us).where(
        copies.c.account == account, copies.c.kind == "bank.movement").order_by(copies.c.seq.desc()).limit(1)).first()
    open_alerts = conn.execute(select(func.count()).where(alerts.c.account == account,
                                                          alerts.c.state != "resolved")).scalar()
    return {"reported": reported, "reported_us": last.created_us if last else None, "expected": expected,
            "last_movement": store._int_or_none(store._loads(move.payload).get("amount")) if move else None,
            "last_movement_us": move.created_us if move else None, "open_alerts": int(open_alerts or 0)}
