"""An inquiry's answer takes several attachments (their own table); alerts are found by subject by an index.

``inquiry_attachments`` holds each file of an answer (name, checked type, size, SHA-256 and the
bytes); the one attachment an answer could carry before (``inquiries.attachment*``) moves there and
those columns go.  ``ix_alerts_subject`` serves the alerts naming an instruction (an alert's evidence
page, the supervisor API's trail), which read the whole table before.

Revision ID: L0006
Revises: L0005
"""
import hashlib

import sqlalchemy as sa
from alembic import op

revision = "L0006"
down_revision = "L0005"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_index("ix_alerts_subject", "alerts", ["subject", "id"])
    files = op.create_table(
        "inquiry_attachments",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("inquiry_id", sa.BigInteger, sa.ForeignKey("inquiries.id", name="fk_inquiry_attachments_inquiry"),
                  nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_inquiry_attachments_inquiry", "inquiry_attachments", ["inquiry_id", "id"])
    conn = op.get_bind()
    old = sa.table("inquiries", sa.column("id"), sa.column("attachment_name"), sa.column("attachment_type"),
                   sa.column("attachment", sa.LargeBinary))
    for r in conn.execute(sa.select(old).where(old.c.attachment.is_not(None)).order_by(old.c.id)):
        data = bytes(r.attachment)
        conn.execute(sa.insert(files).values(inquiry_id=r.id, name=r.attachment_name or "attachment",
                                             type=r.attachment_type or "application/octet-stream", size=len(data),
                                             sha256=hashlib.sha256(data).hexdigest(), data=data))
    with op.batch_alter_table("inquiries") as batch:
        batch.drop_column("attachment")
        batch.drop_column("attachment_type")
        batch.drop_column("attachment_name")


def downgrade() -> None:
    # Back to one attachment per answer: the first of each answer is kept, the others are lost.
    with op.batch_alter_table("inquiries") as batch:
        batch.add_column(sa.Column("attachment_name", sa.String(100), nullable=True))
        batch.add_column(sa.Column("attachment_type", sa.String(64), nullable=True))
        batch.add_column(sa.Column("attachment", sa.LargeBinary, nullable=True))
    conn = op.get_bind()
    files = sa.table("inquiry_attachments", sa.column("id"), sa.column("inquiry_id"), sa.column("name"),
                     sa.column("type"), sa.column("data", sa.LargeBinary))
    old = sa.table("inquiries", sa.column("id"), sa.column("attachment_name"), sa.column("attachment_type"),
                   sa.column("attachment", sa.LargeBinary))
    first = {}
    for r in conn.execute(sa.select(files).order_by(files.c.id)):
        first.setdefault(r.inquiry_id, r)
    for inquiry_id, r in first.items():
        conn.execute(sa.update(old).where(old.c.id == inquiry_id).values(
            attachment_name=r.name, attachment_type=r.type, attachment=r.data))
    op.drop_index("ix_inquiry_attachments_inquiry", table_name="inquiry_attachments")
    op.drop_table("inquiry_attachments")
    op.drop_index("ix_alerts_subject", table_name="alerts")
