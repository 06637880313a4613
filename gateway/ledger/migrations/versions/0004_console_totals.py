"""The console: totals per day kept in the database, its journal's head, indexes for its lists.

- ``console_totals`` / ``console_alert_totals`` / ``console_totals_mark``: instruction copies per
  business day, centre, bank and state, and alerts per day, centre and rule with their response
  times, folded in as they arrive, so the overview and the reports no longer read every
  instruction copy after each start, nor every alert of the period for each report.  Empty here: the console folds the existing copies in the
  background on its first start (its pages say how far it has come meanwhile).
- ``console_journal_head``: the console journal's newest seq and hash, so ``hpf-gateway verify`` sees
  a row deleted at its tail; set here from the journal's last row.
- ``ix_copies_kind_state_created``: the instruction list (one state on one day, newest first);
  ``ix_alerts_account``: an account's unresolved alerts; ``ix_alerts_open``: the open alerts counted by
  severity and rule from the index alone.

Revision ID: L0004
Revises: L0003
"""
import sqlalchemy as sa
from alembic import op

revision = "L0004"
down_revision = "L0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_totals",
        sa.Column("day", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("centre_id", sa.String(16), primary_key=True),
        sa.Column("bank_id", sa.String(16), primary_key=True),
        sa.Column("state", sa.String(16), primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("fen", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "console_alert_totals",
        sa.Column("day", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("centre_id", sa.String(16), primary_key=True),
        sa.Column("rule", sa.String(40), primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("acked", sa.BigInteger, nullable=False),
        sa.Column("ack_us", sa.BigInteger, nullable=False),
        sa.Column("resolved", sa.BigInteger, nullable=False),
        sa.Column("resolve_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "console_totals_mark",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "console_journal_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.execute("insert into console_journal_head (id, seq, hash) select 1, seq, hash from console_journal "
               "where seq = (select max(seq) from console_journal)")
    op.create_index("ix_copies_kind_state_created", "copies", ["kind", "state", "created_us", "seq"])
    op.create_index("ix_alerts_account", "alerts", ["account", "state"])
    op.create_index("ix_alerts_open", "alerts", ["state", "severity", "rule"])


def downgrade() -> None:
    op.drop_index("ix_alerts_open", "alerts")
    op.drop_index("ix_alerts_account", "alerts")
    op.drop_index("ix_copies_kind_state_created", "copies")
    op.drop_table("console_journal_head")
    op.drop_table("console_totals_mark")
    op.drop_table("console_alert_totals")
    op.drop_table("console_totals")
