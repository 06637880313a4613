"""Ledger schema: copies (hash-chained), chain head, matcher state, alerts and their notes.

Revision ID: L0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "L0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "copies",
        sa.Column("seq", Id, primary_key=True, autoincrement=False),
        sa.Column("gateway", sa.String(32), nullable=False),
        sa.Column("gateway_seq", sa.BigInteger, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("centre_id", sa.String(16), nullable=True),
        sa.Column("instruction_id", sa.String(32), nullable=True),
        sa.Column("bank_id", sa.String(16), nullable=True),
        sa.Column("account", sa.String(32), nullable=True),
        sa.Column("state", sa.String(16), nullable=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=True),
        sa.Column("adapter", sa.String(32), nullable=True),
        sa.Column("gateway_hash", sa.String(64), nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
        sa.Column("signature_alg", sa.String(32), nullable=False),
        sa.Column("host_seq_no", sa.String(64), nullable=True),
        sa.Column("received_us", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("event_id", name="uq_copies_event_id"),
    )
    op.create_index("ix_copies_gateway_seq", "copies", ["gateway", "gateway_seq"])
    op.create_index("ix_copies_instruction", "copies", ["centre_id", "instruction_id", "seq"])
    op.create_index("ix_copies_account", "copies", ["account", "kind", "seq"])
    op.create_index("ix_copies_host_seq_no", "copies", ["bank_id", "host_seq_no"])
    op.create_index("ix_copies_created", "copies", ["created_us"])
    op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "matcher_state",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("snapshot", sa.Text, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "alerts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("rule", sa.String(40), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(100), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("centre_id", sa.String(16), nullable=True),
        sa.Column("bank_id", sa.String(16), nullable=True),
        sa.Column("account", sa.String(32), nullable=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("key", name="uq_alerts_key"),
    )
    op.create_index("ix_alerts_state_rule", "alerts", ["state", "rule", "id"])
    op.create_index("ix_alerts_created", "alerts", ["created_us"])
    op.create_table(
        "alert_notes",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.BigInteger, sa.ForeignKey("alerts.id", name="fk_alert_notes_alert"),
                  nullable=False),
        sa.Column("who", sa.String(80), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_alert_notes_alert", "alert_notes", ["alert_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_alert_notes_alert", "alert_notes")
    op.drop_table("alert_notes")
    op.drop_index("ix_alerts_created", "alerts")
    op.drop_index("ix_alerts_state_rule", "alerts")
    op.drop_table("alerts")
    op.drop_table("matcher_state")
    op.drop_table("ledger_head")
    for name in ("ix_copies_created", "ix_copies_host_seq_no", "ix_copies_account",
                 "ix_copies_instruction", "ix_copies_gateway_seq"):
        op.drop_index(name, "copies")
    op.drop_table("copies")
