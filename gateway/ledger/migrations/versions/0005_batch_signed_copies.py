"""Batch-signed copies: a copy signed in a batch keeps its proof (root, count, index, path).

``batch`` is NULL for a copy signed alone (every copy stored before this revision), and
the canonical JSON of the copy's ``batch`` field otherwise; it is chained with the copy
(gateway.ledger.store).

Revision ID: L0005
Revises: L0004
"""
import sqlalchemy as sa
from alembic import op

revision = "L0005"
down_revision = "L0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("copies", sa.Column("batch", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("copies") as batch:
        batch.drop_column("batch")
