"""The database schema, in SQLAlchemy Core.

Alembic revisions under ``migrations/`` build exactly this; a test compares
the two.  Money columns hold integer fen; times are integer microseconds
since the epoch (UTC), so no column ever holds a float.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger, Column, Index, Integer, LargeBinary, MetaData, String, Table, Text, UniqueConstraint,
)

metadata = MetaData()

# SQLite only makes INTEGER PRIMARY KEY an alias of the rowid; BigInteger keeps
# PostgreSQL roomy while SQLite gets a real autoincrementing key.
Id = BigInteger().with_variant(Integer(), "sqlite")

instructions = Table(
    "instructions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("centre_id", String(16), nullable=False),
    Column("instruction_id", String(32), nullable=False),
    Column("bank_id", String(16), nullable=False),
    Column("debit_account", String(32), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("body", Text, nullable=False),          # canonical JSON of the instruction
    Column("fingerprint", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("bank_ref", String(32), nullable=True),  # SendSeqNo; NULL only for rejected
    Column("reason", Text, nullable=True),          # why rejected, failed or in doubt
    Column("result_code", String(64), nullable=True),
    Column("host_seq_no", String(64), nullable=True),
    Column("bank_seq_no", String(64), nullable=True),
    Column("sends", Integer, nullable=False, default=0),
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    UniqueConstraint("centre_id", "instruction_id", name="uq_instructions_centre_instruction"),
    UniqueConstraint("bank_ref", name="uq_instructions_bank_ref"),
)
Index("ix_instructions_bank_state", instructions.c.bank_id, instructions.c.state, instructions.c.id)

# The journal: every fact, in commit order.  ``seq`` is the cursor of the
# centre's results feed and of copies to the ledger; ``hash`` chains each row
# to the one before so that an edit behind the daemon's back is detectable.
events = Table(
    "events",
    metadata,
    Column("seq", Id, primary_key=True, autoincrement=True),
    Column("event_id", String(32), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("centre_id", String(16), nullable=True),
    Column("instruction_id", String(32), nullable=True),
    Column("bank_id", String(16), nullable=True),
    Column("account", String(32), nullable=True),
    Column("state", String(16), nullable=True),
    Column("payload", Text, nullable=False),
    Column("raw", LargeBinary, nullable=True),      # the bank's original frame, as evidence
    Column("created_us", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("event_id", name="uq_events_event_id"),
)
Index("ix_events_feed", events.c.centre_id, events.c.kind, events.c.seq)

# Bank facts already applied, so a replayed or duplicated bank message is
# recognised and acknowledged again without being applied twice (G3).
bank_facts = Table(
    "bank_facts",
    metadata,
    Column("bank_id", String(16), primary_key=True),
    Column("fact_key", String(160), primary_key=True),
    Column("event_seq", BigInteger, nullable=True),
)

# How far the journal has been delivered to each destination (the ledger):
# every event with seq <= delivered_seq has been answered stored/duplicate.
deliveries = Table(
    "deliveries",
    metadata,
    Column("target", String(64), primary_key=True),
    Column("delivered_seq", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)

# Bookings posted by centres, once each: the same booking_id again is a repeat
# (same body) or a conflict (another body).
bookings = Table(
    "bookings",
    metadata,
    Column("centre_id", String(16), primary_key=True),
    Column("booking_id", String(32), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("event_id", String(32), nullable=False),
)

# The journal's chain head, one row: every transaction that appends events
# locks it (SELECT ... FOR UPDATE), so several gateway nodes on one PostgreSQL
# append to one chain, in seq order.
chain_head = Table(
    "chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
)

# The lowest id a table may hand out next, above what it holds.  A restored
# SQLite store does not know the ids the lost store handed out after the backup,
# and a bank reference is built from the id: ``hpf-gateway restore`` sets the
# instructions' floor far above the restored ones, so no reference repeats.
id_floors = Table(
    "id_floors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("floor", BigInteger, nullable=False),
)

# Which node owns each bank link (and the ledger forwarder), and its fencing
# epoch: a node may act for a lease only while the row still names it with
# the epoch it took; every send is checked against that.
leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False),
)

# A bank batch (bdc BDC103): instructions a centre asked to go to their bank as one batch
# request.  ``batch_ref`` is the request's serial, its first line's bank reference (that
# line's own reference never goes out on its own); each line is an instruction of its own,
# with its own state and result.  What the batch's sends and BatchNo are is read from its
# lines (their ``sends`` and, once the bank confirmed it, their ``bank_seq_no``).
bank_batches = Table(
    "bank_batches",
    metadata,
    Column("batch_ref", String(32), primary_key=True),
    Column("bank_id", String(16), nullable=False),
    Column("centre_id", String(16), nullable=False),
    Column("kind", String(16), nullable=False),       # payment (BDC103) or collection (BDC104)
    Column("lines", Integer, nullable=False),
    Column("created_us", BigInteger, nullable=False),
)
bank_batch_lines = Table(
    "bank_batch_lines",
    metadata,
    Column("batch_ref", String(32), primary_key=True),
    Column("line_no", Integer, primary_key=True, autoincrement=False),   # from 1: the file's ``no``
    Column("instruction", BigInteger, nullable=False, unique=True),      # instructions.id
)
