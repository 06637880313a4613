"""The lowest instruction id the store may hand out next (set by a restore).

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "id_floors",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("floor", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("id_floors")
