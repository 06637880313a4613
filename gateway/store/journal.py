"""Reading the journal for delivery, and the per-destination delivery cursor."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select, update, insert
from sqlalchemy.engine import Connection

from gateway.store import schema
from gateway.store.db import Tx, marker, select_rows

__all__ = ["delivered", "events_after", "last_seq", "mark_delivered", "mark_restored", "latest_balance", "movements"]

E = schema.events
D = schema.deliveries


def delivered(conn: Connection, target: str) -> int:
    """The highest seq delivered to ``target`` (0 when nothing was)."""
    return conn.execute(select(D.c.delivered_seq).where(D.c.target == target)).scalar() or 0


def last_seq(conn: Connection) -> int:
    return conn.execute(select(func.max(E.c.seq))).scalar() or 0


_EVENT_COLUMNS = tuple(E.c.keys())
_EVENTS_AFTER = f"SELECT {', '.join(_EVENT_COLUMNS)} FROM events WHERE seq > {{m}} ORDER BY seq LIMIT {{m}}"


def events_after(conn: Connection, after: int, limit: int) -> list[dict[str, Any]]:
    """Journal rows with seq > ``after``, oldest first, as plain dicts (read at driver level:
    the forwarder reads every row of the journal this way)."""
    rows = select_rows(conn, _EVENTS_AFTER.format(m=marker(conn)), (after, limit))
    return [dict(zip(_EVENT_COLUMNS, row)) for row in rows]


def latest_balance(conn: Connection, centre_id: str, account: str) -> dict[str, Any] | None:
    """The payload of the newest ``bank.balance`` event of one centre's account, or None."""
    payload = conn.execute(
        select(E.c.payload).where(E.c.centre_id == centre_id, E.c.kind == "bank.balance", E.c.account == account)
        .order_by(E.c.seq.desc()).limit(1)).scalar()
    return json.loads(payload) if payload is not None else None


def movements(conn: Connection, centre_id: str, account: str, limit: int) -> list[dict[str, Any]]:
    """The payloads of one centre's account's ``bank.movement`` events, oldest first, at most
    ``limit`` (the newest ``limit``)."""
    rows = conn.execute(
        select(E.c.payload).where(E.c.centre_id == centre_id, E.c.kind == "bank.movement", E.c.account == account)
        .order_by(E.c.seq.desc()).limit(limit)).scalars().all()
    return [json.loads(p) for p in reversed(rows)]


def mark_delivered(tx: Tx, target: str, seq: int) -> None:
    """Move ``target``'s cursor forward to ``seq`` (never backward)."""
    current = tx.conn.execute(select(D.c.delivered_seq).where(D.c.target == target)).scalar()
    if current is None:
        tx.conn.execute(insert(D).values(target=target, delivered_seq=seq, updated_us=tx.now_us))
    elif seq > current:
        tx.conn.execute(update(D).where(D.c.target == target).values(delivered_seq=seq, updated_us=tx.now_us))


def mark_restored(tx: Tx, skip: int) -> int:
    """Journal ``gateway.restored`` at a seq ``skip`` above the journal's last one; returns that seq.

    A store restored from a backup continues its hash chain from the backup's head, but the lost
    store went on journalling after the backup, and the ledger holds those seqs: the restored
    journal's next seqs would be refused there as out of order (a ``journal-fork`` alert).  This
    event, chained after the head like any other (the hash does not cover the seq), moves the
    journal past every seq the lost store can have used, so the restored gateway's copies are
    taken in order; ``verify`` reports the gap as harmless.  The payload says where the backup
    ended and how far the journal jumped.
    """
    head = last_seq(tx.conn)
    tx.event("gateway.restored", {"backup_seq": head, "skip": skip})
    tx._flush()
    target = head + skip
    tx.conn.execute(update(E).where(E.c.seq == select(func.max(E.c.seq)).scalar_subquery()).values(seq=target))
    return target
