"""Refused copies: a well-signed copy the ledger cannot read is kept, verbatim, in the chain.

``refused`` says why (NULL for every copy read as usual); ``document`` holds the
exact text the gateway signed, since such a copy's fields need not fit the columns.

Revision ID: L0002
Revises: L0001
"""
import sqlalchemy as sa
from alembic import op

revision = "L0002"
down_revision = "L0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("copies", sa.Column("refused", sa.Text, nullable=True))
    op.add_column("copies", sa.Column("document", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("copies") as batch:
        batch.drop_column("document")
        batch.drop_column("refused")
