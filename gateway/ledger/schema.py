"""The ledger's tables: the copies and their chain head, the matcher's snapshot, alerts and notes, and
the console's own tables (its journal, totals, inquiries, rectifications, centre conditions).

What each column holds is said beside it; what the rows mean, and how they are written and read,
is :mod:`gateway.ledger.store` (and :mod:`gateway.ledger.console.queries` for the console's).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from gateway.store.schema import Id  # the one id type: BigInteger, SQLite's rowid alias

__all__ = [
    "alert_notes",
    "alerts",
    "centre_conditions",
    "console_alert_totals",
    "console_journal",
    "console_journal_head",
    "console_totals",
    "console_totals_mark",
    "copies",
    "inquiries",
    "inquiry_attachments",
    "ledger_head",
    "matcher_state",
    "metadata",
    "rectification_alerts",
    "rectifications",
]

metadata = MetaData()

# The copies: every field the gateway signed, the signature, and the ledger's chain.
copies = Table(
    "copies",
    metadata,
    Column("seq", Id, primary_key=True, autoincrement=False),   # the ledger's dense order
    Column("gateway", String(32), nullable=False),
    Column("gateway_seq", BigInteger, nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("centre_id", String(16), nullable=True),
    Column("instruction_id", String(32), nullable=True),
    Column("bank_id", String(16), nullable=True),
    Column("account", String(32), nullable=True),
    Column("state", String(16), nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Column("payload", Text, nullable=False),
    Column("raw", LargeBinary, nullable=True),
    Column("adapter", String(32), nullable=True),
    Column("gateway_hash", String(64), nullable=False),
    Column("signature", Text, nullable=False),
    Column("signature_alg", String(32), nullable=False),
    Column("host_seq_no", String(64), nullable=True),   # from the payload, for trails
    Column("received_us", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("refused", Text, nullable=True),              # why a copy is stored as refused
    Column("document", Text, nullable=True),             # a refused copy's signed text, verbatim
    Column("batch", Text, nullable=True),                # a batch-signed copy's proof, canonical JSON
    UniqueConstraint("event_id", name="uq_copies_event_id"),
)
Index("ix_copies_gateway_seq", copies.c.gateway, copies.c.gateway_seq)
Index("ix_copies_instruction", copies.c.centre_id, copies.c.instruction_id, copies.c.seq)
Index("ix_copies_account", copies.c.account, copies.c.kind, copies.c.seq)
Index("ix_copies_host_seq_no", copies.c.bank_id, copies.c.host_seq_no)
Index("ix_copies_created", copies.c.created_us)
# The console's instruction list: one state on one day, newest first (keyset on created_us, seq).
Index("ix_copies_kind_state_created", copies.c.kind, copies.c.state, copies.c.created_us, copies.c.seq)

# The chain head, written with the copies it ends: a deleted tail shows as head.seq > max(seq).
def _chain_head(name: str) -> Table:
    """A chain's one-row head (``id`` 1): its newest seq and hash."""
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("seq", BigInteger, nullable=False),
        Column("hash", String(64), nullable=False),
    )


ledger_head = _chain_head("ledger_head")

# One row: the matcher's JSON snapshot and the last ledger seq it has applied.
matcher_state = Table(
    "matcher_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("snapshot", Text, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("key", String(255), nullable=False),
    Column("rule", String(40), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("subject", String(100), nullable=False),
    Column("summary", Text, nullable=False),
    Column("evidence", Text, nullable=False),            # JSON array of event ids
    Column("centre_id", String(16), nullable=True),      # where it belongs, from its evidence
    Column("bank_id", String(16), nullable=True),
    Column("account", String(32), nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    UniqueConstraint("key", name="uq_alerts_key"),
)
Index("ix_alerts_state_rule", alerts.c.state, alerts.c.rule, alerts.c.id)
Index("ix_alerts_created", alerts.c.created_us)
Index("ix_alerts_centre", alerts.c.centre_id, alerts.c.id)  # the console's inbox, scoped by centre
Index("ix_alerts_account", alerts.c.account, alerts.c.state)  # the console's accounts page
Index("ix_alerts_open", alerts.c.state, alerts.c.severity, alerts.c.rule)  # the console's open alerts, counted
Index("ix_alerts_subject", alerts.c.subject, alerts.c.id)  # the alerts naming an instruction (trail, evidence)

alert_notes = Table(
    "alert_notes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("alert_id", BigInteger, ForeignKey("alerts.id", name="fk_alert_notes_alert"), nullable=False),
    Column("who", String(80), nullable=False),           # the supervisor's hpf:// identity
    Column("action", String(32), nullable=False),        # "note", "acknowledged", "resolved"
    Column("text", Text, nullable=False),
    Column("at_us", BigInteger, nullable=False),
)
Index("ix_alert_notes_alert", alert_notes.c.alert_id, alert_notes.c.id)

# The supervision console's writes, hash-chained like the copies: who did what, to what, when.
console_journal = Table(
    "console_journal",
    metadata,
    Column("seq", Id, primary_key=True, autoincrement=False),
    Column("at_us", BigInteger, nullable=False),
    Column("who", String(80), nullable=False),           # the authenticated hpf:// identity
    Column("action", String(32), nullable=False),
    Column("subject", String(100), nullable=False),      # "alert/12", "inquiry/3", "centre/C52240"
    Column("body", Text, nullable=False),                # canonical JSON
    Column("hash", String(64), nullable=False),
)
Index("ix_console_journal_subject", console_journal.c.subject, console_journal.c.seq)

# The console journal's newest seq and hash, written with the row it ends (as ledger_head for the copies).
console_journal_head = _chain_head("console_journal_head")

# Instruction copies per business day (UTC+8), centre, bank and state: how many, and the fen instructed
# (for "received"), folded in by the console as copies arrive; console_totals_mark is the last seq folded.
console_totals = Table(
    "console_totals",
    metadata,
    Column("day", Integer, primary_key=True, autoincrement=False),  # days since 1970-01-01, UTC+8
    Column("centre_id", String(16), primary_key=True),
    Column("bank_id", String(16), primary_key=True),
    Column("state", String(16), primary_key=True),
    Column("n", BigInteger, nullable=False),
    Column("fen", BigInteger, nullable=False),
)

# Alerts per business day (of their creation), centre and rule: how many, how many acknowledged and
# resolved, and the microseconds that took summed; folded from alerts and alert_notes by id.
console_alert_totals = Table(
    "console_alert_totals",
    metadata,
    Column("day", Integer, primary_key=True, autoincrement=False),
    Column("centre_id", String(16), primary_key=True),
    Column("rule", String(40), primary_key=True),
    Column("n", BigInteger, nullable=False),
    Column("acked", BigInteger, nullable=False),
    Column("ack_us", BigInteger, nullable=False),
    Column("resolved", BigInteger, nullable=False),
    Column("resolve_us", BigInteger, nullable=False),
)

# How far each fold has come: id 1 the copies' seq, 2 the alerts' id, 3 the alert notes' id.
console_totals_mark = Table(
    "console_totals_mark",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
)

# 意见反馈: a supervisor's question to a centre about an alert, with a deadline, and its answer.
inquiries = Table(
    "inquiries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("alert_id", BigInteger, ForeignKey("alerts.id", name="fk_inquiries_alert"), nullable=False),
    Column("centre_id", String(16), nullable=False),
    Column("question", Text, nullable=False),
    Column("asked_by", String(80), nullable=False),
    Column("asked_us", BigInteger, nullable=False),
    Column("deadline_us", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),         # "open", "answered"
    Column("answer", Text, nullable=True),
    Column("answered_by", String(80), nullable=True),
    Column("answered_us", BigInteger, nullable=True),
    Column("overdue_alert", BigInteger, nullable=True),  # the alert raised when the deadline passed
)
Index("ix_inquiries_centre_state", inquiries.c.centre_id, inquiries.c.state, inquiries.c.id)
Index("ix_inquiries_alert", inquiries.c.alert_id)

# The files of an inquiry's answer (several; each type-checked and bounded by the console).
inquiry_attachments = Table(
    "inquiry_attachments",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("inquiry_id", BigInteger, ForeignKey("inquiries.id", name="fk_inquiry_attachments_inquiry"),
           nullable=False),
    Column("name", String(100), nullable=False),
    Column("type", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("data", LargeBinary, nullable=False),
)
Index("ix_inquiry_attachments_inquiry", inquiry_attachments.c.inquiry_id, inquiry_attachments.c.id)

# 问题纠正: a rectification opened from alerts; the centre plans, the supervisor approves, it closes.
rectifications = Table(
    "rectifications",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("centre_id", String(16), nullable=False),
    Column("title", Text, nullable=False),
    Column("state", String(16), nullable=False),         # see gateway.ledger.console.rectify
    Column("opened_by", String(80), nullable=False),
    Column("opened_us", BigInteger, nullable=False),
    Column("plan_due_us", BigInteger, nullable=False),
    Column("done_due_us", BigInteger, nullable=False),
    Column("plan", Text, nullable=True),
    Column("evidence", Text, nullable=True),
    Column("updated_us", BigInteger, nullable=False),
)
Index("ix_rectifications_centre_state", rectifications.c.centre_id, rectifications.c.state, rectifications.c.id)

rectification_alerts = Table(
    "rectification_alerts",
    metadata,
    Column("rectification_id", BigInteger, ForeignKey("rectifications.id", name="fk_rect_alerts_rect"),
           primary_key=True, autoincrement=False),
    Column("alert_id", BigInteger, ForeignKey("alerts.id", name="fk_rect_alerts_alert"), primary_key=True,
           autoincrement=False),
)

# 预警条件设置: a centre's own alert conditions, overriding [thresholds] field by field (NULL: the default).
centre_conditions = Table(
    "centre_conditions",
    metadata,
    Column("centre_id", String(16), primary_key=True, autoincrement=False),
    Column("large_amount", BigInteger, nullable=True),
    Column("balance_tolerance", BigInteger, nullable=True),
    Column("result_deadline_ms", BigInteger, nullable=True),
    Column("unregistered_counterparty", Integer, nullable=True),  # 1 on, 0 off
    Column("updated_by", String(80), nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)
