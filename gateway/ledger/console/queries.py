"""The console's reads and writes on the ledger's database (functions of a connection or a Tx).

Every write is also appended to ``console_journal``, hash-chained like the
copies (each row's hash covers the previous hash, its seq, time, who, action,
subject and canonical JSON body), in the same transaction as the change it
records.  Scope is applied here too: every read takes the centres in scope
(None: all), so a page cannot forget it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any, Mapping, Sequence

from sqlalchemy import and_, case, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from gateway.ledger import store
from gateway.ledger.console.totals import (
    _CST_US,
    DAY_US,
    Centres,
    DailyTotals,
    _in_scope,
)
from gateway.ledger.store import (
    alerts,
    centre_conditions,
    console_journal,
    console_journal_head,
    copies,
    inquiries,
    inquiry_attachments,
)
from gateway.store.db import GENESIS, Tx

__all__ = ["journal", "journal_row_hash", "journal_for", "instruction_list", "overdue_instructions",
           "unmatched_copies", "unmatched_count", "UNMATCHED_CAP", "inbox", "alert_row", "overview_counts",
           "evidence", "acknowledge", "note", "raise_manual", "ask", "answer", "list_inquiries",
           "get_inquiry", "get_attachment", "overdue_inquiries", "raise_overdue", "conditions", "set_conditions",
           "MANUAL", "INQUIRY_OVERDUE", "CONSOLE_RULES", "open_rectification", "get_rectification",
           "list_rectifications", "act_on_rectification", "raise_overdue_rectifications"]

MANUAL = "manual"
INQUIRY_OVERDUE = "inquiry-overdue"
CONSOLE_RULES = (MANUAL, INQUIRY_OVERDUE, "rectification-overdue")


# -- the journal ----------------------------------------------------------------------


def _journal_hash(prev: str, seq: int, at_us: int, who: str, action: str, subject: str, body: str) -> str:
    h = hashlib.sha256()
    for part in (prev, str(seq), str(at_us), who, action, subject, body):
        h.update(part.encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


def journal_row_hash(prev: str, row: Mapping[str, Any]) -> str:
    """The hash a stored journal row must carry after ``prev`` (what ``hpf-gateway verify`` recomputes)."""
    return _journal_hash(prev, row["seq"], row["at_us"], row["who"], row["action"], row["subject"], row["body"])


def journal(tx: Tx, who: str, action: str, subject: str, body: Mapping[str, Any]) -> int:
    """Append one console write to the chained journal, and move its head; its seq."""
    conn = tx.conn
    # From the head, never from the last row: a row deleted at the tail leaves a gap verify names.
    head = conn.execute(select(console_journal_head.c.seq, console_journal_head.c.hash)
                        .where(console_journal_head.c.id == 1)).first()
    seq, prev = (int(head[0]) + 1, head[1]) if head else (1, GENESIS)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = _journal_hash(prev, seq, tx.now_us, who[:80], action[:32], subject[:100], text)
    conn.execute(insert(console_journal).values(
        seq=seq, at_us=tx.now_us, who=who[:80], action=action[:32], subject=subject[:100], body=text, hash=digest))
    if head is None:
        conn.execute(insert(console_journal_head).values(id=1, seq=seq, hash=digest))
    else:
        conn.execute(update(console_journal_head).where(console_journal_head.c.id == 1).values(seq=seq, hash=digest))
    return seq


def journal_for(conn: Connection, subject: str) -> list[dict[str, Any]]:
    """The journal rows about one subject, oldest first."""
    return [dict(r) for r in conn.execute(select(console_journal).where(console_journal.c.subject == subject)
                                          .order_by(console_journal.c.seq)).mappings()]


# -- alerts ------------------------------------------------------------------------------


def inbox(conn: Connection, centres: Centres, *, rule: str | None = None, severity: str | None = None,
          centre: str | None = None, bank: str | None = None, state: str | None = None,
          account: str | None = None,
          from_us: int | None = None, to_us: int | None = None, before_id: int | None = None,
          limit: int = 50) -> list[dict[str, Any]]:
    """Alerts newest first, filtered, after the keyset ``before_id`` (ids strictly below it)."""
    q = select(alerts.c.id, alerts.c.rule, alerts.c.severity, alerts.c.state, alerts.c.subject,
               alerts.c.summary, alerts.c.centre_id, alerts.c.bank_id, alerts.c.account,
               alerts.c.created_us).where(_in_scope(alerts.c.centre_id, centres))
    for column, value in ((alerts.c.rule, rule), (alerts.c.severity, severity), (alerts.c.centre_id, centre),
                          (alerts.c.bank_id, bank), (alerts.c.state, state), (alerts.c.account, account)):
        if value is not None:
            q = q.where(column == value)
    if from_us is not None:
        q = q.where(alerts.c.created_us >= from_us)
    if to_us is not None:
        q = q.where(alerts.c.created_us < to_us)
    if before_id is not None:
        q = q.where(alerts.c.id < before_id)
    return [dict(r) for r in conn.execute(q.order_by(alerts.c.id.desc()).limit(limit)).mappings()]


# -- instructions ------------------------------------------------------------------------


def instruction_list(conn: Connection, centres: Centres, *, centre: str | None = None, bank: str | None = None,
                     state: str | None = None, from_us: int | None = None, to_us: int | None = None,
                     before: tuple[int, int] | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The instructions that reached ``state`` (any state when None) in [from_us, to_us), newest first:
    one row per state copy, as the overview and the reports count them.  Keyset ``before`` is the
    (created_us, seq) of the last row shown; ``ix_copies_kind_state_created`` serves it."""
    # Over every state, the kind is tested row by row so that the newest-first walk of ix_copies_created
    # is the plan (given the kind alone, SQLite would take the kind's index and sort a million rows).
    kind = copies.c.kind if state is not None else func.coalesce(copies.c.kind, "")
    q = select(copies.c.seq, copies.c.event_id, copies.c.created_us, copies.c.centre_id, copies.c.instruction_id,
               copies.c.bank_id, copies.c.state).where(kind == "instruction.state",
                                                       _in_scope(copies.c.centre_id, centres))
    for column, value in ((copies.c.centre_id, centre), (copies.c.bank_id, bank), (copies.c.state, state)):
        if value is not None:
            q = q.where(column == value)
    if from_us is not None:
        q = q.where(copies.c.created_us >= from_us)
    if to_us is not None:
        q = q.where(copies.c.created_us < to_us)
    if before is not None:
        q = q.where(or_(copies.c.created_us < before[0], and_(copies.c.created_us == before[0],
                                                                copies.c.seq < before[1])))
    rows = [dict(r) for r in conn.execute(q.order_by(copies.c.created_us.desc(), copies.c.seq.desc())
                                          .limit(limit)).mappings()]
    return _with_instructions(conn, rows)


def overdue_instructions(conn: Connection, centres: Centres, *, centre: str | None = None,
                         bank: str | None = None, before_id: int | None = None,
                         limit: int = 50) -> list[dict[str, Any]]:
    """The instructions whose result is overdue now: one row per open ``missing-result`` alert (what
    the overview counts), newest first; keyset ``before_id`` is the alert id of the last row shown."""
    q = select(alerts.c.id.label("alert_id"), alerts.c.subject, alerts.c.centre_id, alerts.c.bank_id,
               alerts.c.created_us).where(alerts.c.state == "open", alerts.c.rule == "missing-result",
                                          _in_scope(alerts.c.centre_id, centres))
    for column, value in ((alerts.c.centre_id, centre), (alerts.c.bank_id, bank)):
        if value is not None:
            q = q.where(column == value)
    if before_id is not None:
        q = q.where(alerts.c.id < before_id)
    rows = []
    for r in conn.execute(q.order_by(alerts.c.id.desc()).limit(limit)).mappings():
        row = dict(r, instruction_id=r["subject"].split("/", 1)[1] if "/" in r["subject"] else r["subject"],
                   state=None, event_id=None)
        rows.append(row)
    return _with_instructions(conn, rows)


UNMATCHED_CAP = 10_000  # the match-lag count stops here ("10000+"): a page never counts a long replay


def unmatched_copies(conn: Connection, centres: Centres, applied_seq: int, *, after_seq: int | None = None,
                     limit: int = 50) -> list[dict[str, Any]]:
    """The copies filed but not yet taken by the matcher (seq above ``applied_seq``), in scope, the
    longest waiting first (ledger order); keyset ``after_seq`` is the seq of the last row shown.
    A copy of no centre (a bank's balance or movement) is in a province supervisor's scope only."""
    q = select(copies.c.seq, copies.c.event_id, copies.c.kind, copies.c.state, copies.c.centre_id,
               copies.c.instruction_id, copies.c.bank_id, copies.c.account, copies.c.gateway, copies.c.created_us,
               copies.c.received_us).where(copies.c.seq > max(applied_seq, after_seq or 0),
                                           _in_scope(copies.c.centre_id, centres))
    return [dict(r) for r in conn.execute(q.order_by(copies.c.seq).limit(limit)).mappings()]


def unmatched_count(conn: Connection, centres: Centres, applied_seq: int) -> int:
    """How many copies :func:`unmatched_copies` lists, counted up to UNMATCHED_CAP + 1."""
    inner = select(copies.c.seq).where(copies.c.seq > applied_seq, _in_scope(copies.c.centre_id, centres)) \
        .limit(UNMATCHED_CAP + 1).subquery()
    return int(conn.execute(select(func.count()).select_from(inner)).scalar() or 0)


def _with_instructions(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with its instruction's amount, debit account, creditor and latest state, from the
    instruction's own copies (``ix_copies_instruction``)."""
    wanted: dict[str, set[str]] = {}
    for r in rows:
        if r["centre_id"] and r["instruction_id"]:
            wanted.setdefault(r["centre_id"], set()).add(r["instruction_id"])
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for centre_id, ids in wanted.items():
        for chunk in store._chunks(sorted(ids), 200):
            for c in conn.execute(
                    select(copies.c.instruction_id, copies.c.seq, copies.c.state,
                           case((copies.c.state == "received", copies.c.payload), else_=None).label("payload"))
                    .where(copies.c.centre_id == centre_id, copies.c.instruction_id.in_(list(chunk)),
                           copies.c.kind == "instruction.state").order_by(copies.c.seq)).mappings():
                info = found.setdefault((centre_id, c["instruction_id"]), {})
                info["latest"] = c["state"]
                if c["payload"] is not None:
                    instruction = store._loads(c["payload"]).get("instruction") or {}
                    # A transfer pays its creditor from debit_account; a collection takes from its
                    # debtor into credit_account: either way the centre's account and the other party.
                    collection = instruction.get("kind") == "collection"
                    other = instruction.get("debtor" if collection else "creditor")
                    other = other if isinstance(other, dict) else {}
                    info.update(amount=store._amount_or_none(instruction.get("amount")),
                                debit_account=instruction.get("credit_account" if collection else "debit_account"),
                                creditor=other.get("name"))
    for r in rows:
        r.update({"latest": None, "amount": None, "debit_account": None, "creditor": None},
                 **found.get((r["centre_id"], r["instruction_id"]), {}))
    return rows


def alert_row(conn: Connection, alert_id: int, centres: Centres) -> dict[str, Any] | None:
    """One alert in scope, or None (absent and out of scope look the same)."""
    row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).mappings().first()
    if row is None or (centres is not None and row["centre_id"] not in centres):
        return None
    return dict(row)


def overview_counts(conn: Connection, centres: Centres, start_us: int, end_us: int,
                    totals: DailyTotals) -> dict[str, Any]:
    """Today's instruction states by centre and bank, instructed sums, open alerts by severity and rule."""
    day = (start_us + _CST_US) // DAY_US
    today, behind = totals.between(conn, centres, day, day + 1)
    states = [(c, b, st, n) for (_, c, b, st), (n, _) in today.items()]
    sums = {(c, b): fen for (_, c, b, st), (_, fen) in today.items() if st == "received"}
    open_alerts = conn.execute(
        select(alerts.c.severity, alerts.c.rule, func.count())
        .where(alerts.c.state == "open", _in_scope(alerts.c.centre_id, centres))
        .group_by(alerts.c.severity, alerts.c.rule)).all()
    return {"states": states, "sums": sums, "behind": behind,
            "open": [(s, r, int(n)) for s, r, n in open_alerts]}


def evidence(conn: Connection, alert: Mapping[str, Any]) -> dict[str, Any]:
    """What an alert rests on: its evidence copies and the instruction's trail, the account's
    recent balances, its notes, inquiries and journal."""
    ids = json.loads(alert["evidence"])[:200]
    rows: dict[int, dict[str, Any]] = {}
    for chunk in store._chunks(ids, 200):
        for r in conn.execute(select(copies).where(copies.c.event_id.in_(list(chunk)))).mappings():
            rows[r["seq"]] = dict(r)
    subject = alert["subject"]
    if "/" in subject:
        centre, instruction = subject.split("/", 1)
        trail, _ = store.trail(conn, centre, instruction)
        for r in trail:
            rows.setdefault(r["seq"], r)
    balances = store.balance_history(conn, alert["account"], 5) if alert["account"] else []
    notes = [dict(n) for n in conn.execute(select(store.alert_notes).where(
        store.alert_notes.c.alert_id == alert["id"]).order_by(store.alert_notes.c.id)).mappings()]
    asked = [dict(i) for i in conn.execute(select(inquiries).where(inquiries.c.alert_id == alert["id"])
                                           .order_by(inquiries.c.id)).mappings()]
    return {"copies": [rows[s] for s in sorted(rows)], "balances": balances, "notes": notes,
            "inquiries": asked, "journal": journal_for(conn, f"alert/{alert['id']}")}


def acknowledge(tx: Tx, who: str, ids: Sequence[int], reason: str, centres: Centres) -> list[int]:
    """Acknowledge each open alert of ``ids`` in scope; the ids changed (others are left as they are)."""
    changed = []
    for alert_id in ids:
        if alert_row(tx.conn, alert_id, centres) is None:
            continue
        outcome, _ = store.change_state(tx, alert_id, who, "acknowledged", reason)
        if outcome == "changed":
            journal(tx, who, "acknowledged", f"alert/{alert_id}", {"reason": reason})
            changed.append(alert_id)
    return changed


def resolve(tx: Tx, who: str, alert_id: int, reason: str, centres: Centres) -> str:
    """Resolve an acknowledged alert in scope: "changed", "not-found" or "conflict"."""
    if alert_row(tx.conn, alert_id, centres) is None:
        return "not-found"
    outcome, _ = store.change_state(tx, alert_id, who, "resolved", reason)
    if outcome == "changed":
        journal(tx, who, "resolved", f"alert/{alert_id}", {"reason": reason})
    return outcome


def note(tx: Tx, who: str, alert_id: int, text: str, centres: Centres) -> bool:
    """Add a note to an alert in scope; False when there is none."""
    if alert_row(tx.conn, alert_id, centres) is None:
        return False
    store.add_note(tx, alert_id, who, text)
    journal(tx, who, "note", f"alert/{alert_id}", {"text": text})
    return True


def raise_manual(tx: Tx, who: str, event_id: str, severity: str, summary: str,
                 centres: Centres) -> int | None:
    """A supervisor's own alert on a stored fact in scope; its id, or None when no such fact."""
    row = tx.conn.execute(select(copies.c.event_id, copies.c.centre_id, copies.c.instruction_id,
                                 copies.c.account).where(copies.c.event_id == event_id)).first()
    if row is None or (centres is not None and row.centre_id not in centres):
        return None
    subject = f"{row.centre_id}/{row.instruction_id}" if row.centre_id and row.instruction_id else \
        (row.account or event_id)
    key = f"{MANUAL}:{secrets.token_hex(8)}"
    [created] = store.store_alerts(tx, [store.AlertRow(key, MANUAL, severity, subject, summary, (event_id,))])
    journal(tx, who, "manual-alert", f"alert/{created['id']}",
            {"event_id": event_id, "severity": severity, "summary": summary})
    return int(created["id"])


# -- inquiries (意见反馈) -------------------------------------------------------------------


def ask(tx: Tx, who: str, alert_id: int, question: str, deadline_us: int, centres: Centres) -> int | None:
    """Send the alert's centre an inquiry; its id, or None (no alert in scope, or of no centre)."""
    alert = alert_row(tx.conn, alert_id, centres)
    if alert is None or alert["centre_id"] is None:
        return None
    inquiry_id = int(tx.conn.execute(insert(inquiries).values(
        alert_id=alert_id, centre_id=alert["centre_id"], question=question, asked_by=who[:80],
        asked_us=tx.now_us, deadline_us=deadline_us, state="open")).inserted_primary_key[0])
    journal(tx, who, "inquiry", f"inquiry/{inquiry_id}",
            {"alert_id": alert_id, "centre_id": alert["centre_id"], "question": question,
             "deadline_us": deadline_us})
    journal(tx, who, "inquiry", f"alert/{alert_id}", {"inquiry_id": inquiry_id})
    return inquiry_id


Attachment = tuple[str, str, bytes]  # (file name, checked content type, bytes)


def answer(tx: Tx, who: str, inquiry_id: int, text: str, files: Sequence[Attachment], centres: Centres) -> str:
    """The centre's answer to an open inquiry in scope, with its files (each journalled by name, type,
    size and SHA-256): "answered", "not-found" or "conflict"."""
    row = get_inquiry(tx.conn, inquiry_id, centres)
    if row is None:
        return "not-found"
    if row["state"] != "open":
        return "conflict"
    if tx.conn.execute(update(inquiries).where(inquiries.c.id == inquiry_id, inquiries.c.state == "open").values(
            state="answered", answer=text, answered_by=who[:80], answered_us=tx.now_us)).rowcount != 1:
        return "conflict"
    listed = []
    for name, ctype, data in files:
        digest = hashlib.sha256(data).hexdigest()
        tx.conn.execute(insert(inquiry_attachments).values(inquiry_id=inquiry_id, name=name[:100], type=ctype[:64],
                                                           size=len(data), sha256=digest, data=data))
        listed.append({"name": name[:100], "type": ctype[:64], "size": len(data), "sha256": digest})
    body: dict[str, Any] = {"answer": text}
    if listed:
        body["attachments"] = listed
    journal(tx, who, "answer", f"inquiry/{inquiry_id}", body)
    return "answered"


def get_inquiry(conn: Connection, inquiry_id: int, centres: Centres) -> dict[str, Any] | None:
    """One inquiry in scope with its attachments listed (without their bytes), or None."""
    row = conn.execute(select(inquiries).where(inquiries.c.id == inquiry_id)).mappings().first()
    if row is None or (centres is not None and row["centre_id"] not in centres):
        return None
    f = inquiry_attachments.c
    files = [dict(r) for r in conn.execute(select(f.id, f.name, f.type, f.size, f.sha256).where(
        f.inquiry_id == inquiry_id).order_by(f.id)).mappings()]
    return dict(row, attachments=files)


def get_attachment(conn: Connection, inquiry_id: int, attachment_id: int, centres: Centres) -> dict[str, Any] | None:
    """One file of an inquiry's answer in scope (with its bytes), or None."""
    if get_inquiry(conn, inquiry_id, centres) is None:
        return None
    f = inquiry_attachments.c
    row = conn.execute(select(inquiry_attachments).where(f.id == attachment_id, f.inquiry_id == inquiry_id)
                       ).mappings().first()
    return dict(row) if row is not None else None


def list_inquiries(conn: Connection, centres: Centres, *, state: str | None = None,
                   before_id: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
    q = select(inquiries).where(_in_scope(inquiries.c.centre_id, centres))
    if state is not None:
        q = q.where(inquiries.c.state == state)
    if before_id is not None:
        q = q.where(inquiries.c.id < before_id)
    return [dict(r) for r in conn.execute(q.order_by(inquiries.c.id.desc()).limit(limit)).mappings()]


def overdue_inquiries(conn: Connection, now_us: int) -> list[dict[str, Any]]:
    """Open inquiries past their deadline that have not raised their alert yet."""
    return [dict(r) for r in conn.execute(
        select(inquiries.c.id, inquiries.c.alert_id, inquiries.c.centre_id, inquiries.c.deadline_us)
        .where(inquiries.c.state == "open", inquiries.c.deadline_us <= now_us,
               inquiries.c.overdue_alert.is_(None)).limit(500)).mappings()]


def raise_overdue(tx: Tx, now_us: int) -> list[dict[str, Any]]:
    """Raise one ``inquiry-overdue`` alert per open inquiry past its deadline; the new alerts."""
    created_all: list[dict[str, Any]] = []
    for q in overdue_inquiries(tx.conn, now_us):
        alert = tx.conn.execute(select(alerts.c.evidence).where(alerts.c.id == q["alert_id"])).first()
        evidence = tuple(json.loads(alert[0])[:50]) if alert else ()
        created = store.store_alerts(tx, [store.AlertRow(
            f"{INQUIRY_OVERDUE}:{q['id']}", INQUIRY_OVERDUE, "major", f"{q['centre_id']}/inquiry-{q['id']}",
            f"inquiry {q['id']} about alert {q['alert_id']} was not answered by its deadline", evidence)])
        found = created[0]["id"] if created else tx.conn.execute(
            select(alerts.c.id).where(alerts.c.key == f"{INQUIRY_OVERDUE}:{q['id']}")).scalar()
        if created:
            # The alert belongs to the centre asked, whatever its evidence says.
            tx.conn.execute(update(alerts).where(alerts.c.id == found).values(centre_id=q["centre_id"]))
            created[0]["centre_id"] = q["centre_id"]
        tx.conn.execute(update(inquiries).where(inquiries.c.id == q["id"]).values(overdue_alert=found))
        journal(tx, "hpf://ledger/console", "inquiry-overdue", f"inquiry/{q['id']}", {"alert_id": found})
        created_all += created
    return created_all


# -- alert conditions (预警条件设置) ---------------------------------------------------------

CONDITION_FIELDS = ("large_amount", "balance_tolerance", "result_deadline_ms", "unregistered_counterparty")


def conditions(conn: Connection) -> dict[str, dict[str, Any]]:
    """Every centre's own conditions, by centre."""
    return {r["centre_id"]: dict(r) for r in conn.execute(select(centre_conditions)).mappings()}


def set_conditions(tx: Tx, who: str, centre: str, values: Mapping[str, int | None], reason: str) -> dict[str, Any]:
    """Replace a centre's conditions (None: the configured default), journalled with the reason."""
    row = {f: values.get(f) for f in CONDITION_FIELDS}
    conn = tx.conn
    if conn.execute(select(centre_conditions.c.centre_id).where(centre_conditions.c.centre_id == centre)).first():
        conn.execute(update(centre_conditions).where(centre_conditions.c.centre_id == centre).values(
            **row, updated_by=who[:80], updated_us=tx.now_us))
    else:
        conn.execute(insert(centre_conditions).values(centre_id=centre, **row, updated_by=who[:80],
                                                      updated_us=tx.now_us))
    journal(tx, who, "conditions", f"centre/{centre}", {"values": row, "reason": reason})
    return dict(row, centre_id=centre)


# -- rectifications (问题纠正) ------------------------------------------------------------------

RECTIFICATION_OVERDUE = "rectification-overdue"


def open_rectification(tx: Tx, who: str, alert_ids: Sequence[int], title: str, plan_due_us: int,
                       done_due_us: int, centres: Centres) -> int | str:
    """A rectification for alerts of one centre in scope: its id, or why not ("not-found", "centres")."""
    from gateway.ledger.store import rectification_alerts, rectifications

    found = [alert_row(tx.conn, i, centres) for i in dict.fromkeys(alert_ids)]
    if not found or any(a is None for a in found):
        return "not-found"
    owners = {a["centre_id"] for a in found if a is not None}
    if len(owners) != 1 or None in owners:
        return "centres"
    (centre,) = owners
    rid = int(tx.conn.execute(insert(rectifications).values(
        centre_id=centre, title=title, state="awaiting-plan", opened_by=who[:80], opened_us=tx.now_us,
        plan_due_us=plan_due_us, done_due_us=done_due_us, updated_us=tx.now_us)).inserted_primary_key[0])
    for a in found:
        assert a is not None
        tx.conn.execute(insert(rectification_alerts).values(rectification_id=rid, alert_id=a["id"]))
        journal(tx, who, "rectification", f"alert/{a['id']}", {"rectification_id": rid})
    journal(tx, who, "open", f"rectification/{rid}", {"title": title, "alerts": [a["id"] for a in found if a],
                                                      "plan_due_us": plan_due_us, "done_due_us": done_due_us})
    return rid


def get_rectification(conn: Connection, rid: int, centres: Centres) -> dict[str, Any] | None:
    from gateway.ledger.store import rectification_alerts, rectifications

    row = conn.execute(select(rectifications).where(rectifications.c.id == rid)).mappings().first()
    if row is None or (centres is not None and row["centre_id"] not in centres):
        return None
    out = dict(row)
    out["alerts"] = [int(a) for a in conn.execute(select(rectification_alerts.c.alert_id).where(
        rectification_alerts.c.rectification_id == rid).order_by(rectification_alerts.c.alert_id)).scalars()]
    out["journal"] = [dict(j, body=json.loads(j["body"])) for j in journal_for(conn, f"rectification/{rid}")]
    return out


def list_rectifications(conn: Connection, centres: Centres, *, before_id: int | None = None,
                        limit: int = 50) -> list[dict[str, Any]]:
    from gateway.ledger.store import rectifications

    q = select(rectifications).where(_in_scope(rectifications.c.centre_id, centres))
    if before_id is not None:
        q = q.where(rectifications.c.id < before_id)
    return [dict(r) for r in conn.execute(q.order_by(rectifications.c.id.desc()).limit(limit)).mappings()]


def act_on_rectification(tx: Tx, who: str, rid: int, action: str, text: str, supervisor: bool,
                         centres: Centres) -> str:
    """Take one step (:mod:`.rectify`): "done", "not-found" or "conflict" (not allowed now or to you)."""
    from gateway.ledger.console.rectify import next_state
    from gateway.ledger.store import rectifications

    row = get_rectification(tx.conn, rid, centres)
    if row is None:
        return "not-found"
    new_state = next_state(row["state"], action, supervisor)
    if new_state is None:
        return "conflict"
    values: dict[str, Any] = {"state": new_state, "updated_us": tx.now_us}
    if action == "submit-plan":
        values["plan"] = text
    elif action == "close":
        values["evidence"] = text
    tx.conn.execute(update(rectifications).where(rectifications.c.id == rid,
                                                 rectifications.c.state == row["state"]).values(**values))
    journal(tx, who, action, f"rectification/{rid}", {"text": text, "state": new_state})
    return "done"


def raise_overdue_rectifications(tx: Tx, now_us: int) -> list[dict[str, Any]]:
    """One ``rectification-overdue`` alert per late step (the plan, the closure) of each rectification."""
    from gateway.ledger.console.rectify import overdue_step
    from gateway.ledger.store import rectifications

    created_all: list[dict[str, Any]] = []
    late = tx.conn.execute(select(rectifications).where(
        or_(and_(rectifications.c.state == "awaiting-plan", rectifications.c.plan_due_us <= now_us),
            and_(rectifications.c.state.in_(("plan-submitted", "in-progress")),
                 rectifications.c.done_due_us <= now_us))).limit(500)).mappings().all()
    for r in late:
        step = overdue_step(r["state"], r["plan_due_us"], r["done_due_us"], now_us)
        if step is None:
            continue
        due = r["plan_due_us"] if step == "plan" else r["done_due_us"]
        key = f"{RECTIFICATION_OVERDUE}:{r['id']}:{step}:{due}"
        created = store.store_alerts(tx, [store.AlertRow(
            key, RECTIFICATION_OVERDUE, "major", f"{r['centre_id']}/rectification-{r['id']}",
            f"rectification {r['id']}: the {step} is past its deadline", ())])
        for a in created:
            tx.conn.execute(update(alerts).where(alerts.c.id == a["id"]).values(centre_id=r["centre_id"]))
            a["centre_id"] = r["centre_id"]
            journal(tx, "hpf://ledger/console", "overdue", f"rectification/{r['id']}",
                    {"step": step, "alert_id": a["id"]})
        created_all += created
    return created_all
