"""The database edge: an engine, dedicated thread pools and the group-commit writer.

All database work runs off the reactor, on pools that belong to this service
(never the reactor's default pool, which the resolver shares).  Reads go to a
small pool of their own.  Writes go through :class:`GroupCommitWriter`: one
writer thread, and every write submitted while a commit is running joins the
next transaction.  A caller's Deferred fires only after its transaction is
committed (SQLite ``synchronous=FULL`` or PostgreSQL's durable commit), which
is promise G1 without one fsync per request.

(Over 600 lines because the engine's connection settings, the pools and the writer, with the
clock-step journalling it does at each commit, are one edge with one lifecycle.)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import operator
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from gateway.clock import ClockWatch
from gateway.model import canonical_json
from gateway.store import schema

__all__ = ["CLOCK_STEP", "Database", "GroupCommitWriter", "IN_CHUNK", "execute", "Tx", "StoreUnavailable", "make_engine", "now_us",
           "one_of", "private_file", "PRIVATE_UMASK"]

PRIVATE_UMASK = 0o077
"""Added to the process umask by every ``hpf-gateway`` command: what it writes is its user's alone."""


def private_file(path: str | os.PathLike[str]) -> None:
    """Make sure ``path`` exists with mode 0600 (created so, never briefly readable by others;
    an existing file is narrowed).  For files that hold account data."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    os.chmod(path, 0o600)


def _private_sqlite(url: str) -> None:
    """Create the SQLite database file 0600 before SQLite does (its journal, WAL and shared-memory
    files take the database's mode), and narrow any of them left wider."""
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        if not os.path.exists(database):
            private_file(database)
        for path in (database, database + "-wal", database + "-shm", database + "-journal"):
            if os.path.exists(path):
                st = os.stat(path)
                if st.st_mode & 0o077 and st.st_uid == os.getuid():  # ours to narrow (verify may read another's)
                    os.chmod(path, 0o600)
    except OSError:
        return  # a directory that is missing or not ours: SQLite says so itself when it opens the file


T = TypeVar("T")
log = Logger()

GENESIS = "0" * 64
CLOCK_STEP = "gateway.clock_step"
"""The journal event that records a step of the wall clock (``step_us``; ``before_us``: the time the
clock would have shown without it), written first in the first transaction stamped after it."""


class StoreUnavailable(Exception):
    """The database cannot take writes now (locked, unreachable, full); nothing was stored."""


def now_us() -> int:
    """Wall-clock time in integer microseconds since the epoch."""
    return time.time_ns() // 1000


def make_engine(url: str, *, idle_in_transaction_timeout: float | None = None,
                ping_after_idle_s: float | None = None) -> Engine:
    """An engine for ``url`` with the durability settings the gateway promises.

    SQLite: WAL journal and ``synchronous=FULL``, so a commit is on disk when it
    returns; a busy timeout so readers and the writer wait instead of failing.

    PostgreSQL: with ``idle_in_transaction_timeout`` (seconds) the server ends
    any session of ours that sits inside a transaction waiting for us that
    long.  Several nodes share the journal head row, lease rows and
    instruction rows; a node paused (SIGSTOP, a VM freeze) or cut off in the
    middle of a transaction would otherwise hold those row locks until it
    wakes up, and every other node's writer would wait behind it: the cluster
    stops even though another node took the leases over.  Our transactions
    never wait on anything but our own code between statements, so a healthy
    node does not come near the limit.  A pooled connection is pinged before use
    once it has been idle ``ping_after_idle_s`` (default ``PING_AFTER_IDLE_S``).
    """
    if url.startswith("sqlite"):
        _private_sqlite(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()

        return engine
    connect_args: dict[str, Any] = dict(PG_CONNECT_ARGS)
    if idle_in_transaction_timeout is not None:
        ms = max(1, int(idle_in_transaction_timeout * 1000))
        connect_args["options"] = f"-c idle_in_transaction_session_timeout={ms}"
    engine = create_engine(url, pool_size=8, max_overflow=4, connect_args=connect_args)
    _ping_when_idle(engine, PING_AFTER_IDLE_S if ping_after_idle_s is None else ping_after_idle_s)
    return engine


PING_AFTER_IDLE_S = 1.0
"""A pooled PostgreSQL connection idle this long is pinged before it is used again."""


def _ping_when_idle(engine: Engine, after_s: float) -> None:
    """Check a pooled connection with a ping before use, once it has sat idle ``after_s``.

    SQLAlchemy's ``pool_pre_ping`` pings on *every* checkout: under load that was one round
    trip in seven (``python -m bench relay --count-round-trips``, bench/README.md), all on
    connections used a few milliseconds before.  What the ping is for is a connection that
    went stale while it sat in the pool (the server restarted, a route dropped, the server
    ended an idle session); such a connection is found here and replaced, as before.  A
    connection the server loses within a second of its last use fails its next statement
    like one lost in the middle of a transaction: the operation fails (StoreUnavailable) and
    SQLAlchemy invalidates the pool, so the next checkout connects afresh.
    """
    from sqlalchemy.exc import DisconnectionError

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["hpf_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("hpf_idle_since", None)
        if since is None or time.monotonic() - since < after_s:
            return  # a new connection, or one used a moment ago
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as e:
            raise DisconnectionError(str(e).splitlines()[0] if str(e) else "ping failed") from e
        if not alive:
            raise DisconnectionError("ping failed")


PG_CONNECT_ARGS: dict[str, Any] = {
    # A connection whose handshake goes unanswered (the network swallowed it) gives up here
    # instead of waiting for the server's authentication_timeout (60 s): it was the 31-37 s
    # the bank links took to come back after the database had been unreachable for 30 s.
    "connect_timeout": 5,
    # A peer that vanished (a dead server, a dropped route) is noticed by the kernel: an idle
    # connection is probed after 10 s, given up after three unanswered probes 5 s apart, and
    # data left unacknowledged for 30 s ends the connection.
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
"""libpq connection parameters of every PostgreSQL connection the daemons make."""


class _EventIds:
    """Time-ordered unique event ids: microseconds, a per-process prefix, a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(3).hex()
        self._counter = 0

    def next(self, at_us: int) -> str:
        self._counter = (self._counter + 1) & 0xFFFF
        return f"{at_us:014x}{self._prefix}{self._counter:04x}"


CHAINED = ("event_id", "kind", "centre_id", "instruction_id", "bank_id", "account", "state", "payload")
"""The journal columns a row's hash covers (with ``created_us``, ``raw`` and the previous hash)."""


def chain_hash(prev: str, row: Any) -> str:
    """The journal hash of one row (a mapping or a row with those attributes).

    It covers the previous row's hash and every column that says what
    happened, so an edit, an insertion or a deletion behind the daemon's
    back breaks the chain from that row on.
    """
    get = row.get if isinstance(row, dict) else (lambda k: getattr(row, k))
    # prev, then each column after a 0x1f (None as 0x00), then created_us and raw's own hash:
    # one string, hashed at once (the same bytes as updating the hash part by part).
    parts = [prev]
    for column in CHAINED:
        value = get(column)
        parts.append("\x00" if value is None else str(value))
    parts.append(str(get("created_us")))
    raw = get("raw")
    return hashlib.sha256("\x1f".join(parts).encode("utf-8") + b"\x1f"
                          + (_EMPTY_SHA256 if not raw else hashlib.sha256(raw).digest())).hexdigest()


_EMPTY_SHA256 = hashlib.sha256(b"").digest()


@dataclass
class Tx:
    """What a write operation sees: the connection of the current transaction,
    the transaction's timestamp, and a way to append journal events.

    Events are inserted together when the operation's transaction ends, in the
    order they were appended, each chained to the one before.
    """

    conn: Connection
    now_us: int
    _ids: _EventIds
    _pending: list[dict[str, Any]] = field(default_factory=list)
    centres: set[str] = field(default_factory=set)   # whose feeds the operation changed (told after commit)
    journalled: bool = False   # events were appended (the ledger forwarder is told after commit)

    def event(self, kind: str, payload: dict[str, Any] | str, *, centre_id: str | None = None,
              instruction_id: str | None = None, bank_id: str | None = None,
              account: str | None = None, state: str | None = None,
              raw: bytes | None = None) -> str:
        """Append a fact to the journal; returns its event id.

        ``payload`` is a mapping, or its text already in canonical form
        (:func:`gateway.model.canonical_json`) when the caller has it.
        """
        event_id = self._ids.next(self.now_us)
        self._pending.append(dict(
            event_id=event_id, kind=kind, centre_id=centre_id, instruction_id=instruction_id,
            bank_id=bank_id, account=account, state=state,
            payload=payload if isinstance(payload, str) else canonical_json(payload),
            raw=raw, created_us=self.now_us,
        ))
        return event_id

    def _flush(self) -> None:
        """Insert the pending events, chained after the journal's head (locked for this transaction)."""
        if not self._pending:
            return
        self.journalled = True
        head = schema.chain_head
        postgres = self.conn.dialect.name == "postgresql"
        # The head's statements go to the driver as SQL text (select_rows): built by SQLAlchemy's
        # compiler they cost six times as much, and every transaction that journals runs them.
        # SQLite has no FOR UPDATE: its single writer holds the file's write lock instead.
        locked = f"SELECT hash FROM {head.name} WHERE id = 1" + (" FOR UPDATE" if postgres else "")
        found = next(iter(select_rows(self.conn, locked, ())), None)
        if found is None and postgres:
            # A new database that several nodes share: FOR UPDATE locks no row that is not there,
            # so two first writers would both insert the head and one fail whole.  Insert the
            # genesis head, waiting on another node's insert in flight, then lock the row.
            self.conn.exec_driver_sql(f"INSERT INTO {head.name} (id, hash) VALUES (1, %s) "
                                      "ON CONFLICT (id) DO NOTHING", (GENESIS,))
            found = next(iter(select_rows(self.conn, locked, ())), None)
        prev_hash = found[0] if found else GENESIS
        for row in self._pending:
            prev_hash = row["hash"] = chain_hash(prev_hash, row)
        rows = [_event_values(row) for row in self._pending]
        self._pending = []
        if found is not None and self.conn.dialect.name == "postgresql" \
                and (len(rows) + 1) * len(_EVENT_COLUMNS) <= _PG_MAX_PARAMETERS:
            # One statement, one round trip: the events and the head that now covers them.
            # A data-modifying WITH runs to completion whether or not its output is read.
            width = len(_EVENT_COLUMNS)
            _pg_raw(self.conn,
                    f"WITH e AS (INSERT INTO {schema.events.name} ({', '.join(_EVENT_COLUMNS)}) VALUES "
                    f"{_pg_values(len(rows), width)}) "
                    f"UPDATE {head.name} SET hash = ${len(rows) * width + 1} WHERE id = 1",
                    (*[v for r in rows for v in r], prev_hash))
            return
        insert_many(self.conn, schema.events, _EVENT_COLUMNS, rows)
        m = marker(self.conn)
        if found is None:
            execute(self.conn, f"INSERT INTO {head.name} (id, hash) VALUES (1, {m})", (prev_hash,))
        else:
            execute(self.conn, f"UPDATE {head.name} SET hash = {m} WHERE id = 1", (prev_hash,))


WriteOp = Callable[[Tx], T]

_EVENT_COLUMNS = (*CHAINED, "raw", "created_us", "hash")
_event_values = operator.itemgetter(*_EVENT_COLUMNS)  # a pending event's values, in that order
_STATEMENTS: dict[tuple[str, str, str, tuple[str, ...]], str] = {}
_PG_MAX_PARAMETERS = 65_535  # the wire protocol's limit per statement


def _checked(table: Any, columns: tuple[str, ...]) -> None:
    for c in columns:
        table.c[c]  # noqa: B018 (a column the table lacks fails here, loudly, not in the driver)


def _sqlite_sql(verb: str, table: Any, columns: tuple[str, ...], key: str | None) -> str:
    cache_key = ("sqlite", verb, table.name, columns + ((key,) if key else ()))
    sql = _STATEMENTS.get(cache_key)
    if sql is None:
        _checked(table, columns + ((key,) if key else ()))
        if verb == "insert":
            sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        else:
            sql = f"UPDATE {table.name} SET {', '.join(f'{c} = ?' for c in columns)} WHERE {key} = ?"
        _STATEMENTS[cache_key] = sql
    return sql


def _pg_chunks(rows: list[tuple[Any, ...]], width: int) -> Iterator[list[tuple[Any, ...]]]:
    per = max(1, _PG_MAX_PARAMETERS // width)
    for i in range(0, len(rows), per):
        yield rows[i:i + per]


def _pg_values(n: int, width: int) -> str:
    """``($1, $2), ($3, $4)``: ``n`` rows of ``width`` numbered parameters (see :func:`_pg_raw`).

    The texts of the common sizes are kept (a few MB at most); a larger one is built each time.
    """
    if n * width <= 4096:
        return _pg_values_kept(n, width)
    return _pg_values_built(n, width)


def _pg_values_built(n: int, width: int) -> str:
    return ", ".join("(" + ", ".join([f"${r * width + c}" for c in range(1, width + 1)]) + ")" for r in range(n))


_pg_values_kept = functools.lru_cache(maxsize=64)(_pg_values_built)


def _pg_raw(conn: Connection, sql: str, params: tuple[Any, ...]) -> None:
    """Execute ``sql`` written with PostgreSQL's own numbered parameters (``$1``), through
    SQLAlchemy as any statement (its events, its error handling, its invalidation of a lost
    connection), on a psycopg ``RawCursor``.

    A statement with ``%s`` markers is split by psycopg in Python on every execution when it
    has more than 50 parameters (it caches only smaller ones): for a multi-row ``VALUES`` of a
    hundred instructions that was most of the gateway's CPU on the intake's write path, more
    than the whole write path costs on SQLite (bench/README.md).  A raw statement is sent as it
    is; its parameters are adapted by psycopg's C code as before.
    """
    driver = conn.connection.driver_connection
    factory = driver.cursor_factory
    driver.cursor_factory = _raw_cursor()
    try:
        conn.exec_driver_sql(sql, params)
    finally:
        driver.cursor_factory = factory


@functools.lru_cache(maxsize=1)
def _raw_cursor() -> Any:
    import psycopg

    return psycopg.RawCursor


# On PostgreSQL every multi-row write is ONE statement (multi-row VALUES), never the driver's
# executemany: psycopg pipelines executemany, and a node frozen (SIGSTOP, a VM pause) in the
# middle of sending a pipeline leaves its backend waiting for the rest of it.  The server does
# not count that as idle in a transaction, so idle_in_transaction_session_timeout never ends
# it, and its row locks stopped every other node (tests/faults/test_failover.py caught it;
# tests/unit/test_store.py holds the store to it).  COPY FROM STDIN would cost the gateway less
# still, but has the same flaw: a backend waiting for the rest of the copy data is "active"
# (ClientRead), so neither idle_in_transaction_session_timeout nor statement_timeout ends it,
# and it keeps the journal head locked (tried on PostgreSQL 15, bench/README.md).


def execute(conn: Connection, sql: str, params: Any = (), *, many: bool = False) -> Any:
    """Run one statement written in the driver's own SQL (:func:`marker`) in ``conn``'s transaction.

    On PostgreSQL through SQLAlchemy (``exec_driver_sql``: its events, its invalidation of a
    lost connection).  On SQLite on the transaction's own sqlite3 connection, whose cursor is
    returned: SQLAlchemy's result object and its per-statement bookkeeping cost two to five
    times what SQLite's own work does on the hot statements (about twenty per instruction over
    its three commits; bench/README.md).  The statement and the transaction are the same; a
    driver error is raised as SQLAlchemy's (``OperationalError``, ``IntegrityError``…), as
    ``exec_driver_sql`` raises it, so :func:`_as_failure` still makes a locked or full
    database ``StoreUnavailable``.  ``many``: ``params`` is a list of parameter tuples.
    """
    if conn.dialect.name == "postgresql":
        return conn.exec_driver_sql(sql, params)
    driver = conn.connection.driver_connection
    try:
        return driver.executemany(sql, params) if many else driver.execute(sql, params)
    except conn.dialect.loaded_dbapi.Error as e:
        from sqlalchemy.exc import DBAPIError

        raise DBAPIError.instance(sql, params, e, conn.dialect.loaded_dbapi.Error,
                                  dialect=conn.dialect, ismulti=many) from e


def insert_many(conn: Connection, table: Any, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` (tuples in ``columns`` order) with SQL sent straight to the driver.

    For the hot inserts (instructions at intake, journal events, copies at the
    ledger): SQLAlchemy's per-row parameter processing costs more than the
    database's own work there.  The values must already be what the columns
    store (str, int, bytes, None), which is all the gateway's schema holds.
    """
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        execute(conn, _sqlite_sql("insert", table, columns, None), rows, many=True)
        return
    _checked(table, columns)
    for chunk in _pg_chunks(rows, len(columns)):
        _pg_raw(conn, f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES {_pg_values(len(chunk), len(columns))}",
                tuple([v for row in chunk for v in row]))


def update_many(conn: Connection, table: Any, key: str, columns: tuple[str, ...],
                rows: list[tuple[Any, ...]]) -> None:
    """Set ``columns`` of the row whose ``key`` column matches, for each tuple of ``rows``
    (the new values in ``columns`` order, then the key), the way :func:`insert_many` inserts."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        execute(conn, _sqlite_sql("update", table, columns, key), rows, many=True)
        return
    names = columns + (key,)
    cache_key = ("postgresql", "update", table.name, names)
    head = _STATEMENTS.get(cache_key)
    if head is None:
        _checked(table, names)
        # Each value is cast to its column's type: a VALUES column of parameters that are
        # all NULL would otherwise be text.
        cast = {c: table.c[c].type.compile(dialect=conn.dialect) for c in names}
        head = _STATEMENTS[cache_key] = (
            f"UPDATE {table.name} AS t SET {', '.join(f'{c} = v.{c}::{cast[c]}' for c in columns)} "
            f"FROM (VALUES {{}}) AS v({', '.join(names)}) WHERE t.{key} = v.{key}::{cast[key]}")
    for chunk in _pg_chunks(rows, len(names)):
        _pg_raw(conn, head.format(_pg_values(len(chunk), len(names))), tuple([v for row in chunk for v in row]))


def select_rows(conn: Connection, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Every row of a SELECT sent straight to the driver, as tuples.

    For the hot reads (the intake's and the bank answers' instruction look-ups,
    the results feed, the forwarder's journal read): building a SQLAlchemy
    statement and its per-row result processing cost more than the query.
    ``sql`` uses the connection's own parameter marker (:func:`marker`); the
    columns read must be plain str, int, bytes or None, as the schema's are.
    """
    if conn.dialect.name != "postgresql":
        return execute(conn, sql, params).fetchall()  # type: ignore[no-any-return]
    result = conn.exec_driver_sql(sql, params)
    try:
        return result.cursor.fetchall()
    finally:
        result.close()


def marker(conn: Connection) -> str:
    """The driver's parameter marker for ``conn``: ``%s`` (psycopg) or ``?`` (sqlite3)."""
    return "%s" if conn.dialect.name == "postgresql" else "?"


IN_CHUNK = 500
"""The most values :func:`one_of` is given at once (callers cut longer lists into chunks)."""


def one_of(conn: Connection, values: list[Any]) -> tuple[str, tuple[Any, ...]]:
    """The driver-level SQL, and its parameters, that a column is one of ``values`` (at most
    ``IN_CHUNK``): ``= ANY(%s)`` with one array parameter on PostgreSQL, ``IN (?, …)`` on SQLite.
    Written after the column: ``f"WHERE bank_ref {sql}"``."""
    if conn.dialect.name == "postgresql":
        return "= ANY(%s)", (values,)
    return f"IN ({', '.join('?' * len(values))})", tuple(values)


class GroupCommitWriter:
    """Runs write operations in shared transactions on one dedicated thread.

    ``submit(op)`` queues ``op``; while a transaction is being committed, new
    operations wait, and all of them go into the next one.  If a shared
    transaction fails, it is rolled back and each of its operations is retried
    alone, so one bad operation fails only its own caller.
    """

    def __init__(self, reactor: IReactorThreads, engine: Engine, *, max_batch: int = 2000,
                 on_commit: Callable[[set[str], bool], None] | None = None) -> None:
        self._reactor = reactor
        self._engine = engine
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="hpf-db-writer")
        self._queue: list[tuple[WriteOp[Any], Deferred[Any]]] = []
        self._busy = False
        self._max_batch = max_batch
        self._ids = _EventIds()
        self._held: Connection | None = None  # SQLite: the writer's own connection (_begin)
        # Each transaction's timestamp, and the wall clock's steps journalled (gateway.clock_step).
        self.clock = ClockWatch()
        self._on_commit = on_commit
        self._idle_waiters: list[Deferred[None]] = []
        self.commits = 0
        self.operations = 0
        self.busy_s = 0.0  # time spent inside transactions (work + commit), for /status

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()
        if self._held is not None:  # the writer thread is gone: nothing uses it any more
            self._held.close()
            self._held = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(self, op: WriteOp[T]) -> Deferred[T]:
        """Run ``op(tx)`` in a transaction; fires with its return value once committed."""
        d: Deferred[T] = Deferred()
        self._queue.append((op, d))
        if not self._busy:
            self._next()
        return d

    def idle(self) -> Deferred[None]:
        """Fires when nothing is queued or being committed."""
        if not self._busy and not self._queue:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        return d

    def _next(self) -> None:
        if not self._queue:
            self._busy = False
            waiters, self._idle_waiters = self._idle_waiters, []
            for w in waiters:
                w.callback(None)
            return
        self._busy = True
        batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch:]
        ops = [op for op, _ in batch]
        d = deferToThreadPool(self._reactor, self._pool, self._run, ops)
        d.addCallbacks(self._done, self._crashed, callbackArgs=(batch,), errbackArgs=(batch,))

    def _done(self, outcome: tuple[list[tuple[bool, Any]], set[str], bool], batch: list[Any]) -> None:
        results, centres, journalled = outcome
        self.commits += 1
        self.operations += len(batch)
        if (centres or journalled) and self._on_commit is not None:
            try:
                self._on_commit(centres, journalled)
            except Exception:
                log.failure("store.on_commit_failed")
        for (ok, value), (_, d) in zip(results, batch):
            if ok:
                d.callback(value)
            else:
                d.errback(value)
        self._next()

    def _crashed(self, failure: Failure, batch: list[Any]) -> None:
        log.failure("store.writer_crashed", failure)
        for _, d in batch:
            d.errback(failure)
        self._next()

    # -- on the writer thread ------------------------------------------------

    def _transaction(self, ops: list[WriteOp[Any]]) -> tuple[list[Any], set[str], bool]:
        started = time.perf_counter()
        with self._begin() as conn:
            reading = self.clock.read()
            tx = Tx(conn, reading.now_us, self._ids)
            if reading.step_us:
                # First in the transaction that first stamps an event on the stepped clock: the
                # journal says where its times change axis (docs/reliability.md, "Clocks").
                tx.event("gateway.clock_step", {"step_us": reading.step_us, "before_us": reading.before_us})
            values = [op(tx) for op in ops]
            tx._flush()
            work = time.perf_counter()
        self.clock.settle(reading)  # committed: the step, if any, is in the journal
        if reading.step_us:
            log.warn("store.clock_step", step_s=reading.step_us / 1e6)
        done = time.perf_counter()
        self.busy_s += done - started
        if done - started > 0.25:
            log.warn("store.slow_commit", operations=len(ops), work_ms=round((work - started) * 1000, 1),
                     commit_ms=round((done - work) * 1000, 1))
        return values, tx.centres, tx.journalled

    def _begin(self) -> Any:
        """A transaction on the writer's connection: on SQLite one connection held for good.

        SQLite has one writer, this thread, so nothing is gained by returning its connection
        to the pool after every commit, and checking it out again (a Connection object, the
        pool's events and its reset) cost about a sixth of the store's CPU per instruction at
        100/s, where every commit is a transaction of its own.  The transaction and its commit
        are the same.  PostgreSQL keeps the pool: its checkout is where a connection the server
        ended is found and replaced (:func:`_ping_when_idle`).
        """
        if self._engine.dialect.name == "postgresql":
            return self._engine.begin()
        held = self._held
        if held is None or held.closed or held.invalidated:
            if held is not None:
                held.close()
            held = self._held = self._engine.connect()
        return _begun(held)

    def _run(self, ops: list[WriteOp[Any]]) -> tuple[list[tuple[bool, Any]], set[str], bool]:
        try:
            values, centres, journalled = self._transaction(ops)
            return [(True, v) for v in values], centres, journalled
        except Exception:
            if len(ops) == 1:
                return [(False, _as_failure())], set(), False
        # One of them spoiled the shared transaction: give each its own.
        results: list[tuple[bool, Any]] = []
        centres, journalled = set(), False
        for op in ops:
            try:
                (value,), c, j = self._transaction([op])
                results.append((True, value))
                centres |= c
                journalled = journalled or j
            except Exception:
                results.append((False, _as_failure()))
        return results, centres, journalled


@contextlib.contextmanager
def _begun(conn: Connection) -> Iterator[Connection]:
    """A transaction on ``conn``, committed at the end of the block or rolled back when it
    raises: what ``engine.begin()`` does, on a connection that is kept."""
    with conn.begin():
        yield conn


def _as_failure() -> Failure:
    f = Failure()
    # The store's own errors pass through; driver errors become StoreUnavailable so
    # callers (the centre API: 503) need not know every driver's exception types.
    # A connection the server ended (e.g. a transaction idle past
    # idle_in_transaction_session_timeout: this node was paused) counts too.
    from sqlalchemy.exc import DBAPIError, OperationalError

    if f.check(OperationalError) or (f.check(DBAPIError) and f.value.connection_invalidated):
        return Failure(StoreUnavailable(str(f.value).splitlines()[0]))
    return f


class Database(Service):
    """The database as a service: the engine, the read pool and the group-commit writer."""

    name = "database"

    def __init__(self, reactor: Any, url: str, *, read_threads: int = 3,
                 idle_in_transaction_timeout: float | None = None) -> None:
        self.url = url
        self.reactor = reactor
        self.engine = make_engine(url, idle_in_transaction_timeout=idle_in_transaction_timeout)
        # Reads on PostgreSQL run outside a transaction: under READ COMMITTED (PostgreSQL's
        # default, which the gateway's reads are written for) every statement takes its own
        # snapshot anyway, so a read transaction adds nothing but a BEGIN and a ROLLBACK, two
        # round trips per read.
        # On SQLite a read transaction is what holds one snapshot across statements: kept.
        self._read_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT") \
            if self.engine.dialect.name == "postgresql" else self.engine
        self._read_pool = ThreadPool(minthreads=1, maxthreads=read_threads, name="hpf-db-read")
        # Small, urgent writes (lease renewals) must not queue behind a backlog of
        # bulk work in the group-commit writer: they get their own thread and
        # their own short transaction.
        self._urgent_pool = ThreadPool(minthreads=1, maxthreads=1, name="hpf-db-urgent")
        self._commit_listeners: list[Callable[[set[str]], None]] = []
        self._journal_listeners: list[Callable[[], None]] = []
        self.writer = GroupCommitWriter(reactor, self.engine, on_commit=self._committed)

    def on_commit(self, listener: Callable[[set[str]], None]) -> None:
        """Call ``listener(centre_ids)`` after each commit that changed those centres' feeds."""
        self._commit_listeners.append(listener)

    def on_journal(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after each commit of this process that appended journal events
        (the ledger forwarder's wake-up; another node's commits are not seen here)."""
        self._journal_listeners.append(listener)

    def _committed(self, centres: set[str], journalled: bool) -> None:
        if centres:
            for listener in self._commit_listeners:
                listener(centres)
        if journalled:
            for journal_listener in self._journal_listeners:
                journal_listener()

    def startService(self) -> None:
        self._read_pool.start()
        self._urgent_pool.start()
        self.writer.start()
        super().startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        d = self.writer.idle()

        def _stop(_: Any) -> None:
            self.writer.stop()
            self._read_pool.stop()
            self._urgent_pool.stop()
            self.engine.dispose()

        d.addCallback(_stop)
        return d

    def read(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run ``fn(conn, *args)`` on the read pool; return plain values, never result objects."""
        return deferToThreadPool(self.reactor, self._read_pool, self._read, fn, *args)

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        with self._read_engine.connect() as conn:
            return fn(conn, *args)

    def write(self, op: WriteOp[T]) -> Deferred[T]:
        """Run ``op(tx)`` through the group-commit writer."""
        return self.writer.submit(op)

    def write_now(self, op: WriteOp[T]) -> Deferred[T]:
        """Run ``op(tx)`` at once in a transaction of its own, beside the group-commit writer.

        For small writes whose latency matters more than throughput (a lease
        renewal); they must not append journal events.
        """
        return deferToThreadPool(self.reactor, self._urgent_pool, self._write_now, op)

    def _write_now(self, op: WriteOp[T]) -> T:
        with self.engine.begin() as conn:
            tx = Tx(conn, now_us(), self.writer._ids)
            value = op(tx)
            if tx._pending:
                raise RuntimeError("write_now operations must not append journal events")
        return value
