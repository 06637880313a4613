"""Initial schema: instructions, the journal, applied bank facts.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "instructions",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("centre_id", sa.String(16), nullable=False),
        sa.Column("instruction_id", sa.String(32), nullable=False),
        sa.Column("bank_id", sa.String(16), nullable=False),
        sa.Column("debit_account", sa.String(32), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("bank_ref", sa.String(32), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("result_code", sa.String(64), nullable=True),
        sa.Column("host_seq_no", sa.String(64), nullable=True),
        sa.Column("bank_seq_no", sa.String(64), nullable=True),
        sa.Column("sends", sa.Integer, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("centre_id", "instruction_id", name="uq_instructions_centre_instruction"),
        sa.UniqueConstraint("bank_ref", name="uq_instructions_bank_ref"),
    )
    op.create_index("ix_instructions_bank_state", "instructions", ["bank_id", "state", "id"])
    op.create_table(
        "events",
        sa.Column("seq", Id, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("centre_id", sa.String(16), nullable=True),
        sa.Column("instruction_id", sa.String(32), nullable=True),
        sa.Column("bank_id", sa.String(16), nullable=True),
        sa.Column("account", sa.String(32), nullable=True),
        sa.Column("state", sa.String(16), nullable=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("event_id", name="uq_events_event_id"),
    )
    op.create_index("ix_events_feed", "events", ["centre_id", "kind", "seq"])
    op.create_table(
        "bank_facts",
        sa.Column("bank_id", sa.String(16), primary_key=True),
        sa.Column("fact_key", sa.String(160), primary_key=True),
        sa.Column("event_seq", sa.BigInteger, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("bank_facts")
    op.drop_index("ix_events_feed", "events")
    op.drop_table("events")
    op.drop_index("ix_instructions_bank_state", "instructions")
    op.drop_table("instructions")
