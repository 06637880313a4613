"""Bank batches: instructions sent to their bank as one batch request (bdc BDC103).

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bank_batches",
        sa.Column("batch_ref", sa.String(32), primary_key=True),
        sa.Column("bank_id", sa.String(16), nullable=False),
        sa.Column("centre_id", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("lines", sa.Integer, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "bank_batch_lines",
        sa.Column("batch_ref", sa.String(32), primary_key=True),
        sa.Column("line_no", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("instruction", sa.BigInteger, nullable=False, unique=True),
    )


def downgrade() -> None:
    op.drop_table("bank_batch_lines")
    op.drop_table("bank_batches")
