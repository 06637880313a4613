"""A node paused in the middle of a transaction must not stop the other nodes (several nodes on PostgreSQL).

Every node's writer locks the journal's head row to chain its events, and
lease renewals lock the lease row.  A node frozen by SIGSTOP (or a VM pause)
while inside such a transaction looks, from the server, exactly like a client
that began a transaction and went quiet: the session is *idle in
transaction* and keeps its row locks.  These tests play that client on a
real PostgreSQL with the gateway's own engine settings and check that the
other node's writes and takeover go through within the limit, and that the
frozen node finds its transaction gone when it wakes up.

Found by the failover test: a node paused while holding the journal head
left the new owner of the link with instructions it could not claim.
"""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from gateway.store import leases
from gateway.store.db import Tx, _EventIds, make_engine, now_us

pytestmark = pytest.mark.postgres

LIMIT = 1.0  # the gateway uses lease_ttl / 2


def _append_event(engine: sa.Engine, kind: str) -> None:
    with engine.begin() as conn:
        tx = Tx(conn, now_us(), _EventIds())
        tx.event(kind, {"by": kind})
        tx._flush()


def _in_thread(fn, *args) -> tuple[threading.Event, list[float], list[BaseException]]:
    """Run ``fn(*args)`` on a thread; (done, [seconds taken], [error])."""
    done, took, errors = threading.Event(), [], []

    def run() -> None:
        started = time.monotonic()
        try:
            fn(*args)
        except BaseException as e:  # noqa: BLE001 (reported to the test)
            errors.append(e)
        took.append(time.monotonic() - started)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done, took, errors


@pytest.mark.parametrize("limited", [True, False], ids=["idle-timeout", "no-timeout(control)"])
def test_a_node_frozen_holding_the_journal_head_does_not_stop_the_others(pg_url: str, limited: bool) -> None:
    limit = LIMIT if limited else None
    frozen_engine = make_engine(pg_url, idle_in_transaction_timeout=limit)
    other_engine = make_engine(pg_url, idle_in_transaction_timeout=limit)
    frozen = frozen_engine.connect()
    try:
        frozen.begin()
        tx = Tx(frozen, now_us(), _EventIds())
        tx.event("frozen", {"by": "frozen"})
        tx._flush()  # the journal head is locked; then the node goes quiet mid-transaction

        done, took, errors = _in_thread(_append_event, other_engine, "other")
        finished = done.wait(LIMIT + 4.0)
        if not limited:
            # The control: without the limit the other node waits as long as the frozen one sleeps.
            assert not finished, "the other node's write went through while the head row was locked"
            frozen.rollback()
            assert done.wait(5.0) and not errors
            return
        assert finished and not errors, errors
        assert took[0] < LIMIT + 3.0

        # Waking up, the frozen node finds its transaction ended by the server: nothing of it is kept.
        with pytest.raises(DBAPIError):
            frozen.execute(sa.text("SELECT 1"))
    finally:
        frozen.invalidate()
        frozen_engine.dispose()
    with other_engine.connect() as c:
        kinds = [k for (k,) in c.execute(sa.text("SELECT kind FROM events ORDER BY seq"))]
    other_engine.dispose()
    assert kinds == ["other"]


def test_a_node_frozen_while_renewing_its_lease_does_not_block_the_takeover(pg_url: str) -> None:
    frozen_engine = make_engine(pg_url, idle_in_transaction_timeout=LIMIT)
    other_engine = make_engine(pg_url, idle_in_transaction_timeout=LIMIT)
    ttl_us = 500_000
    with frozen_engine.begin() as conn:
        assert leases.acquire(Tx(conn, now_us(), _EventIds()), "bank:B001", "gw-a", ttl_us, None) == 1
    frozen = frozen_engine.connect()
    try:
        frozen.begin()
        # Frozen between the lease row's SELECT ... FOR UPDATE and its commit.
        frozen.execute(sa.text("SELECT epoch FROM leases WHERE name = 'bank:B001' FOR UPDATE"))
        time.sleep(ttl_us / 1e6)  # the lease expires meanwhile

        def take_over() -> None:
            with other_engine.begin() as conn:
                got.append(leases.acquire(Tx(conn, now_us(), _EventIds()), "bank:B001", "gw-b", ttl_us, None))

        got: list[int | None] = []
        done, took, errors = _in_thread(take_over)
        assert done.wait(LIMIT + 4.0) and not errors, errors
        assert got == [2]
        with pytest.raises(DBAPIError):  # the frozen renewal is gone with its session
            frozen.commit()
    finally:
        frozen.invalidate()
        frozen_engine.dispose()
        other_engine.dispose()
