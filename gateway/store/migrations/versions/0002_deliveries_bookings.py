"""Delivery cursors (how far the journal has reached the ledger) and centres' bookings.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("target", sa.String(64), primary_key=True),
        sa.Column("delivered_seq", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "bookings",
        sa.Column("centre_id", sa.String(16), primary_key=True),
        sa.Column("booking_id", sa.String(32), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("bookings")
    op.drop_table("deliveries")
