"""The supervision console: its chained journal, inquiries, rectifications, per-centre conditions, an index.

Revision ID: L0003
Revises: L0002
"""
import sqlalchemy as sa
from alembic import op

revision = "L0003"
down_revision = "L0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_index("ix_alerts_centre", "alerts", ["centre_id", "id"])
    op.create_table(
        "console_journal",
        sa.Column("seq", Id, primary_key=True, autoincrement=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("who", sa.String(80), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(100), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_console_journal_subject", "console_journal", ["subject", "seq"])
    op.create_table(
        "inquiries",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.BigInteger, sa.ForeignKey("alerts.id", name="fk_inquiries_alert"),
                  nullable=False),
        sa.Column("centre_id", sa.String(16), nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("asked_by", sa.String(80), nullable=False),
        sa.Column("asked_us", sa.BigInteger, nullable=False),
        sa.Column("deadline_us", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("answer", sa.Text, nullable=True),
        sa.Column("answered_by", sa.String(80), nullable=True),
        sa.Column("answered_us", sa.BigInteger, nullable=True),
        sa.Column("attachment_name", sa.String(100), nullable=True),
        sa.Column("attachment_type", sa.String(64), nullable=True),
        sa.Column("attachment", sa.LargeBinary, nullable=True),
        sa.Column("overdue_alert", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_inquiries_centre_state", "inquiries", ["centre_id", "state", "id"])
    op.create_index("ix_inquiries_alert", "inquiries", ["alert_id"])
    op.create_table(
        "rectifications",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("centre_id", sa.String(16), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("opened_by", sa.String(80), nullable=False),
        sa.Column("opened_us", sa.BigInteger, nullable=False),
        sa.Column("plan_due_us", sa.BigInteger, nullable=False),
        sa.Column("done_due_us", sa.BigInteger, nullable=False),
        sa.Column("plan", sa.Text, nullable=True),
        sa.Column("evidence", sa.Text, nullable=True),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_rectifications_centre_state", "rectifications", ["centre_id", "state", "id"])
    op.create_table(
        "rectification_alerts",
        sa.Column("rectification_id", sa.BigInteger,
                  sa.ForeignKey("rectifications.id", name="fk_rect_alerts_rect"), primary_key=True,
                  autoincrement=False),
        sa.Column("alert_id", sa.BigInteger, sa.ForeignKey("alerts.id", name="fk_rect_alerts_alert"),
                  primary_key=True, autoincrement=False),
    )
    op.create_table(
        "centre_conditions",
        sa.Column("centre_id", sa.String(16), primary_key=True, autoincrement=False),
        sa.Column("large_amount", sa.BigInteger, nullable=True),
        sa.Column("balance_tolerance", sa.BigInteger, nullable=True),
        sa.Column("result_deadline_ms", sa.BigInteger, nullable=True),
        sa.Column("unregistered_counterparty", sa.Integer, nullable=True),
        sa.Column("updated_by", sa.String(80), nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("centre_conditions")
    op.drop_table("rectification_alerts")
    op.drop_index("ix_rectifications_centre_state", "rectifications")
    op.drop_table("rectifications")
    op.drop_index("ix_inquiries_alert", "inquiries")
    op.drop_index("ix_inquiries_centre_state", "inquiries")
    op.drop_table("inquiries")
    op.drop_index("ix_console_journal_subject", "console_journal")
    op.drop_table("console_journal")
    op.drop_index("ix_alerts_centre", "alerts")
