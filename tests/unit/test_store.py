"""The store on SQLite and PostgreSQL: intake, idempotency, state changes, feed, group commit."""

from __future__ import annotations

import dataclasses
import json

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from twisted.internet import defer, reactor

from gateway import lifecycle
from gateway.model import canonical_json
from gateway.store import instructions as q
from gateway.store import schema
from gateway.store.db import Database, GENESIS, chain_hash
from gateway.store.migrate import SchemaMismatch, check_current
from tests.kit.store import make_instruction, record_bank_outcome, record_movement, record_movements


@pytest.fixture
def db(database_url):
    database = Database(reactor, database_url)
    database.startService()
    yield database
    pytest_twisted.blockon(database.stopService())


@pytest_twisted.inlineCallbacks
def test_intake_assigns_a_fixed_bank_reference_and_journals_received(db):
    [out] = yield db.write(lambda tx: q.intake(tx, [q.IntakeItem(make_instruction(1), "B001")]))
    assert out.status == "created"
    assert out.record["state"] == "received"
    assert len(out.record["bank_ref"]) == 20 and out.record["bank_ref"].startswith("52240")
    rows = yield db.read(lambda c, *a: q.feed(c, "C52240", 0, 10))
    assert [(r["instruction_id"], r["state"]) for r in rows] == [("I1", "received")]


@pytest_twisted.inlineCallbacks
def test_same_id_same_body_is_existing_and_other_body_is_conflict(db):
    item = q.IntakeItem(make_instruction(1), "B001")
    yield db.write(lambda tx: q.intake(tx, [item]))
    [again] = yield db.write(lambda tx: q.intake(tx, [item]))
    [clash] = yield db.write(lambda tx: q.intake(tx, [q.IntakeItem(make_instruction(1, amount=2), "B001")]))
    assert again.status == "existing" and clash.status == "conflict"
    count = yield db.read(lambda c: c.execute(select(schema.instructions.c.id)).all())
    assert len(count) == 1


@pytest_twisted.inlineCallbacks
def test_duplicates_inside_one_batch_are_stored_once(db):
    items = [q.IntakeItem(make_instruction(1), "B001"), q.IntakeItem(make_instruction(1), "B001")]
    outs = yield db.write(lambda tx: q.intake(tx, items))
    assert [o.status for o in outs] == ["created", "existing"]


@pytest_twisted.inlineCallbacks
def test_policy_refusal_is_stored_as_rejected_without_bank_reference(db):
    item = q.IntakeItem(make_instruction(7), "B001", refusal="unregistered counterparty")
    [out] = yield db.write(lambda tx: q.intake(tx, [item]))
    assert out.record["state"] == "rejected" and out.record["bank_ref"] is None
    rows = yield db.read(lambda c: q.feed(c, "C52240", 0, 10))
    assert rows[0]["state"] == "rejected" and rows[0]["reason"] == "unregistered counterparty"


@pytest_twisted.inlineCallbacks
def test_results_are_applied_once_and_a_contradiction_is_refused(db):
    [out] = yield db.write(lambda tx: q.intake(tx, [q.IntakeItem(make_instruction(1), "B001")]))
    ref = out.record["bank_ref"]
    yield db.write(lambda tx: q.record_sent(tx, "B001", [ref]))
    ok = lifecycle.ResultReceived(True)
    first = yield db.write(lambda tx: record_bank_outcome(tx, "B001", ref, ok, host_seq_no="H1", raw=b"x"))
    second = yield db.write(lambda tx: record_bank_outcome(tx, "B001", ref, ok, host_seq_no="H1", raw=b"x"))
    assert first.changed and not second.changed
    with pytest.raises(lifecycle.ConflictingOutcome):
        yield db.write(lambda tx: record_bank_outcome(tx, "B001", ref, lifecycle.ResultReceived(False)))
    rows = yield db.read(lambda c: q.feed(c, "C52240", 0, 10))
    assert [r["state"] for r in rows] == ["received", "sent", "succeeded"]
    assert rows[-1]["result"]["host_seq_no"] == "H1"


@pytest_twisted.inlineCallbacks
def test_a_bank_cannot_report_on_another_banks_instruction(db):
    [out] = yield db.write(lambda tx: q.intake(tx, [q.IntakeItem(make_instruction(1), "B001")]))
    res = yield db.write(lambda tx: record_bank_outcome(
        tx, "B002", out.record["bank_ref"], lifecycle.ResultReceived(True)))
    assert not res.known
    rec = yield db.read(lambda c: q.get(c, "C52240", "I1"))
    assert rec["state"] == "received"


@pytest_twisted.inlineCallbacks
def test_a_replayed_movement_is_recorded_once(db):
    entry = {"account": "6200001111222233", "host_seq_no": "H9", "amount": -500}
    first = yield db.write(lambda tx: record_movement(tx, "B001", entry, account_centre="C52240", raw=b"f"))
    again = yield db.write(lambda tx: record_movement(tx, "B001", entry, account_centre="C52240", raw=b"f"))
    assert first and not again
    kinds = yield db.read(lambda c: c.execute(select(schema.events.c.kind)).scalars().all())
    assert kinds.count("bank.movement") == 1


@pytest_twisted.inlineCallbacks
def test_group_commit_puts_concurrent_writes_in_few_transactions(db):
    items = [q.IntakeItem(make_instruction(n), "B001") for n in range(300)]
    outs = yield defer.gatherResults([db.write(lambda tx, it=it: q.intake(tx, [it])) for it in items])
    assert all(o[0].status == "created" for o in outs)
    assert db.writer.operations == 300
    assert db.writer.commits <= 5, db.writer.commits


@pytest_twisted.inlineCallbacks
def test_a_failing_operation_fails_alone(db):
    def boom(tx):
        raise RuntimeError("bad op")

    good = db.write(lambda tx: q.intake(tx, [q.IntakeItem(make_instruction(1), "B001")]))
    bad = db.write(boom)
    [out] = yield good
    assert out.status == "created"
    with pytest.raises(RuntimeError):
        yield bad


@pytest_twisted.inlineCallbacks
def test_a_commit_that_journals_wakes_the_journal_listeners_and_one_that_does_not_is_silent(db):
    woken, feeds = [], []
    db.on_journal(lambda: woken.append(True))
    db.on_commit(feeds.append)
    yield db.write(lambda tx: None)   # a transaction that appends nothing
    assert woken == [] and feeds == []
    yield db.write(lambda tx: q.intake(tx, [q.IntakeItem(make_instruction(1), "B001")]))
    assert woken == [True] and feeds == [{"C52240"}]
    yield db.write(lambda tx: tx.event("test.fact", {"n": 1}))   # journalled, no centre's feed
    assert woken == [True, True] and feeds == [{"C52240"}]


@pytest_twisted.inlineCallbacks
def test_journal_rows_are_hash_chained(db):
    yield db.write(lambda tx: q.intake(tx, [q.IntakeItem(make_instruction(n), "B001") for n in range(5)]))
    rows = yield db.read(lambda c: c.execute(select(schema.events).order_by(schema.events.c.seq)).all())
    prev = GENESIS
    for r in rows:
        assert r.hash == chain_hash(prev, r)
        prev = r.hash


@pytest_twisted.inlineCallbacks
def test_open_instructions_reload_for_a_bank(db):
    outs = yield db.write(lambda tx: q.intake(tx, [q.IntakeItem(make_instruction(n), "B001") for n in range(3)]))
    ref = outs[0].record["bank_ref"]
    yield db.write(lambda tx: record_bank_outcome(tx, "B001", ref, lifecycle.ResultReceived(True)))
    open_rows = yield db.read(lambda c: q.load_open(c, "B001"))
    assert [r["instruction_id"] for r in open_rows] == ["I1", "I2"]
    newer = yield db.read(lambda c: q.load_new(c, "B001", outs[1].record["id"], 10))
    assert [r["instruction_id"] for r in newer] == ["I2"]


@pytest_twisted.inlineCallbacks
def test_the_relays_poll_reads_the_records_as_they_are_stored(db):
    """load_new reads at driver level: each row must be the whole record, as get() reads it."""
    items = [q.IntakeItem(make_instruction(n, amount=10_000 + n), "B001") for n in range(3)]
    yield db.write(lambda tx: q.intake(tx, items))
    polled = yield db.read(lambda c: q.load_new(c, "B001", 0, 10))
    stored = yield db.read(lambda c: [q.get(c, "C52240", f"I{n}") for n in range(3)])
    assert polled == stored and [r["amount"] for r in polled] == [10_000, 10_001, 10_002]


def test_schema_check_refuses_an_empty_database(tmp_path):
    from gateway.store.db import make_engine

    with pytest.raises(SchemaMismatch, match="migrate"):
        check_current(make_engine(f"sqlite:///{tmp_path / 'empty.db'}"))


def test_migrations_build_exactly_the_schema_in_code(database_url):
    """The Alembic revisions and gateway.store.schema agree (no autogenerate diff)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from gateway.store.db import make_engine

    engine = make_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    engine.dispose()
    assert diff == []


@settings(max_examples=300, deadline=None)
@given(bank=st.text(max_size=8), ref=st.none() | st.text(max_size=24), reason=st.none() | st.text(max_size=40),
       body=st.dictionaries(st.text(max_size=8), st.text(max_size=12) | st.integers() | st.none(), max_size=5))
def test_the_intake_payload_is_the_canonical_json_of_its_parts(bank, ref, reason, body):
    """Assembled around the stored body, it must be byte for byte what canonical_json gives."""
    row = {"bank_id": bank, "bank_ref": ref, "reason": reason, "body": canonical_json(body)}
    expected = {"bank": bank, "bank_ref": ref, "instruction": body}
    if reason:
        expected["reason"] = reason
    assert q.intake_payload(row) == canonical_json(expected)


def test_the_canonical_body_names_every_field_of_the_creditor():
    """to_json spells the creditor out (asdict cost more than the rest of it): a field added to
    Creditor must not silently drop out of the stored body."""
    ins = make_instruction(1)
    assert ins.to_json()["creditor"] == dataclasses.asdict(ins.creditor)


_TEXT = st.text(max_size=12)


@settings(max_examples=300, deadline=None)
@given(row=st.fixed_dictionaries({
    "instruction_id": _TEXT, "state": st.sampled_from([s.value for s in lifecycle.State]), "bank_id": _TEXT,
    "bank_ref": st.none() | _TEXT, "amount": st.integers(1, 10**15), "created_us": st.integers(0, 2**52),
    "updated_us": st.integers(0, 2**52), "reason": st.none() | _TEXT, "host_seq_no": st.none() | _TEXT,
    "result_code": st.none() | _TEXT, "bank_seq_no": st.none() | _TEXT,
    "body": st.dictionaries(_TEXT, _TEXT | st.integers() | st.none(), max_size=5).map(canonical_json)}))
def test_the_answered_record_text_is_the_record(row):
    """The centre API sends the record as text around the stored body: it must read back as the record."""
    assert json.loads(q.public_record_json(row)) == q.public_record(row)


@pytest_twisted.inlineCallbacks
def test_multi_row_writes_are_single_statements_on_postgresql(pg_url):
    """On PostgreSQL no write may go through the driver's executemany.  psycopg pipelines it,
    and a node frozen while sending a pipeline leaves its backend waiting for the rest: the
    server does not count that as idle in a transaction, so the idle-in-transaction limit
    never ends it and its row locks stop every other node (the failover test caught this)."""
    from sqlalchemy import event

    database = Database(reactor, pg_url)
    database.startService()
    many: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if executemany:
            many.append(statement[:80])

    event.listen(database.engine, "before_cursor_execute", seen)
    try:
        items = [q.IntakeItem(make_instruction(n), "B001") for n in range(1, 41)]
        outs = yield database.write(lambda tx: q.intake(tx, items))
        refs = [o.record["bank_ref"] for o in outs]
        sent = yield database.write(lambda tx: q.record_sent(tx, "B001", refs))
        entries = [({"account": "6200001111222233", "host_seq_no": f"H{n}", "amount": -n}, "C52240")
                   for n in range(1, 30)]
        moved = yield database.write(lambda tx: record_movements(tx, "B001", entries, raw=b"notice"))
        states = yield database.read(lambda c: c.execute(select(schema.instructions.c.state)).scalars().all())
    finally:
        yield database.stopService()
    assert (len(outs), sent, moved) == (40, 40, 29)
    assert set(states) == {"sent"}
    assert many == [], many


def test_a_pooled_connection_the_server_ended_while_idle_is_replaced_before_use(pg_url):
    """The ping before reuse (on a connection idle past ``ping_after_idle_s``) finds a session
    the server ended while it sat in the pool, and the pool connects afresh: the caller
    never sees the dead connection."""
    import time

    import sqlalchemy as sa

    from gateway.store.db import make_engine

    engine = make_engine(pg_url, ping_after_idle_s=0.0)
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            first = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with admin.connect() as a:
            assert a.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": first}).scalar() is True
            for _ in range(100):  # the backend leaves pg_stat_activity once it has exited
                if not a.execute(sa.text("SELECT 1 FROM pg_stat_activity WHERE pid = :p"), {"p": first}).first():
                    break
                time.sleep(0.05)
        with engine.connect() as conn:
            second = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        assert second != first
    finally:
        engine.dispose()
        admin.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged(pg_url):
    """Within ``ping_after_idle_s`` of its last use a connection goes back to work without a
    ping: a session ended in between fails the next statement, as one lost mid-transaction
    does, and the pool then connects afresh."""
    import time

    import sqlalchemy as sa
    from sqlalchemy.exc import OperationalError

    from gateway.store.db import make_engine

    engine = make_engine(pg_url, ping_after_idle_s=3600.0)
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            first = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with admin.connect() as a:
            a.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": first})
            for _ in range(100):  # the backend leaves pg_stat_activity once it has exited
                if not a.execute(sa.text("SELECT 1 FROM pg_stat_activity WHERE pid = :p"), {"p": first}).first():
                    break
                time.sleep(0.05)
        with pytest.raises(OperationalError), engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != first
    finally:
        engine.dispose()
        admin.dispose()


@pytest_twisted.inlineCallbacks
def test_reads_on_postgresql_run_outside_a_transaction(pg_url):
    """Under READ COMMITTED a read transaction holds no snapshot across statements, so reads
    skip it (no BEGIN, no ROLLBACK): each statement is its own transaction, as now() shows."""
    database = Database(reactor, pg_url)
    database.startService()
    try:
        stamps = yield database.read(lambda c: [c.exec_driver_sql("SELECT now()").scalar() for _ in range(2)])
        in_write = yield database.write(lambda tx: [tx.conn.exec_driver_sql("SELECT now()").scalar()
                                                    for _ in range(2)])
    finally:
        yield database.stopService()
    assert stamps[0] != stamps[1], "the two statements of a read shared a transaction"
    assert in_write[0] == in_write[1], "a write is one transaction"


@pytest_twisted.inlineCallbacks
def test_journal_events_and_the_chain_head_are_one_statement_on_postgresql(pg_url):
    """Once the head exists, a transaction's events and the head that now covers them go in one
    statement (one round trip); the chain is the same as written row by row."""
    from sqlalchemy import event

    database = Database(reactor, pg_url)
    database.startService()
    statements: list[str] = []
    try:
        yield database.write(lambda tx: tx.event("test.first", {"n": 0}))
        event.listen(database.engine, "before_cursor_execute",
                     lambda conn, cur, statement, *a: statements.append(statement))
        yield database.write(lambda tx: [tx.event("test.more", {"n": n}) for n in range(1, 4)])
        rows = yield database.read(lambda c: c.execute(select(schema.events).order_by(schema.events.c.seq)).all())
        head = yield database.read(lambda c: c.execute(select(schema.chain_head.c.hash)).scalar())
    finally:
        yield database.stopService()
    writes = [s for s in statements if s.lstrip().upper().startswith(("INSERT", "UPDATE", "WITH"))]
    assert len(writes) == 1 and "chain_head" in writes[0] and "INSERT INTO events" in writes[0], writes
    prev = GENESIS
    for r in rows:
        assert r.hash == chain_hash(prev, r._mapping)
        prev = r.hash
    assert [r.kind for r in rows] == ["test.first", "test.more", "test.more", "test.more"]
    assert head == prev


def test_two_nodes_first_journal_writes_to_a_new_shared_database_both_commit_on_one_chain(pg_url):
    """Found by ``python -m bench intake --nodes 2``: on a new database both nodes found no chain
    head, both inserted it, and the second failed its whole batch (a 500 to the centre).  Now
    the second waits for the first and chains after it."""
    import threading

    from sqlalchemy import create_engine

    from gateway.store.db import Tx, _EventIds

    engine = create_engine(pg_url)
    ids = _EventIds()
    outcome: list[object] = []
    try:
        first = engine.connect()
        first.begin()
        tx = Tx(first, 1_000_000, ids)
        tx.event("test.first", {"n": 1})
        tx._flush()   # holds the head (or, before the fix, nothing at all) until it commits

        def second() -> None:
            try:
                with engine.begin() as conn:
                    other = Tx(conn, 2_000_000, ids)
                    other.event("test.second", {"n": 2})
                    other._flush()
                outcome.append("committed")
            except Exception as e:  # noqa: BLE001 (the test reports it)
                outcome.append(e)

        t = threading.Thread(target=second)
        t.start()
        t.join(1.0)
        assert t.is_alive(), "the second node's write did not wait for the first's head"
        first.commit()
        first.close()
        t.join(10.0)
        assert outcome == ["committed"], outcome
        with engine.connect() as c:
            rows = c.execute(select(schema.events).order_by(schema.events.c.seq)).all()
            head = c.execute(select(schema.chain_head.c.hash)).scalar()
    finally:
        engine.dispose()
    prev = GENESIS
    for r in rows:
        prev = chain_hash(prev, r._mapping)
        assert r.hash == prev
    assert [r.kind for r in rows] == ["test.first", "test.second"] and head == prev


def test_multi_row_writes_read_back_exactly(database_url):
    """insert_many and update_many write every value into its own column, in one chunk and across
    several (on PostgreSQL the statements number their parameters $1, $2, …; a chunk holds at
    most 65,535 of them, and the texts of large ones are built afresh, small ones kept)."""
    from gateway.store.db import insert_many, make_engine, update_many

    columns = ("event_id", "kind", "centre_id", "instruction_id", "bank_id", "account", "state", "payload",
               "raw", "created_us", "hash")
    rows = [(f"E{n:06d}", "test.kind", None if n % 3 else "C52240", f"I{n}", "B001", "账户" * (n % 4), None,
             canonical_json({"n": n}), None if n % 2 else bytes([n % 256]) * (n % 7), 2**53 + n, f"{n:064x}")
            for n in range(6100)]  # 67,100 parameters: two chunks on PostgreSQL
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            insert_many(conn, schema.events, columns, rows[:3])
            insert_many(conn, schema.events, columns, rows[3:])
            insert_many(conn, schema.id_floors, ("name", "floor"), [("a", 1), ("b", 2), ("c", 3)])
            update_many(conn, schema.id_floors, "name", ("floor",), [(20, "b"), (2**40, "c")])
        with engine.connect() as conn:
            back = [tuple(r) for r in conn.execute(
                select(*[schema.events.c[c] for c in columns]).order_by(schema.events.c.seq))]
            floors = dict(conn.execute(select(schema.id_floors.c.name, schema.id_floors.c.floor)).all())
    finally:
        engine.dispose()
    assert back == [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]
    assert floors == {"a": 1, "b": 20, "c": 2**40}


@pytest_twisted.inlineCallbacks
def test_the_intake_look_up_probes_the_unique_index_on_a_new_postgresql_database(pg_url):
    """The intake finds repeats by (centre_id, instruction_id).  On a table whose statistics are
    older than its rows (a new database, before autovacuum's first analysis), PostgreSQL read
    "centre_id = $1 AND instruction_id = ANY($2)" as: every row of the centre, filtered; the
    look-up then grew with the table.  The statement it sends must probe both columns of the
    unique index, whatever the statistics say."""
    from sqlalchemy import event

    database = Database(reactor, pg_url)
    database.startService()
    lookups: list[tuple[str, object]] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if "FROM instructions" in statement and "instruction_id" in statement and statement.startswith("SELECT"):
            lookups.append((statement, parameters))

    try:
        for start in range(0, 3000, 500):
            yield database.write(lambda tx, s=start: q.intake(
                tx, [q.IntakeItem(make_instruction(n), "B001") for n in range(s, s + 500)]))
        event.listen(database.engine, "before_cursor_execute", seen)
        outs = yield database.write(lambda tx: q.intake(
            tx, [q.IntakeItem(make_instruction(n), "B001") for n in range(2950, 3050)]))
        event.remove(database.engine, "before_cursor_execute", seen)
        [(statement, parameters)] = lookups
        plan = yield database.read(lambda c: [r[0] for r in c.exec_driver_sql("EXPLAIN " + statement, parameters)])
    finally:
        yield database.stopService()
    assert [o.status for o in outs] == ["existing"] * 50 + ["created"] * 50
    text = "\n".join(plan)
    assert "uq_instructions_centre_instruction" in text and "Filter" not in text, text
    [cond] = [line for line in plan if "Index Cond" in line]
    assert "centre_id" in cond and "instruction_id" in cond, text
