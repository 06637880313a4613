"""Leases: which gateway node acts for a bank link (or the ledger forwarder), with a fencing epoch.

A lease row names its owner, an epoch and an expiry.  Taking a lease (free,
expired, or our own after a restart) bumps the epoch; renewing keeps it.
Every send of an instruction is checked against ``(owner, epoch)`` in the
same transaction that records it, so a node that lost its lease — paused,
partitioned, or just slow — can never send again: its epoch is stale.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update

from gateway.store import schema
from gateway.store.db import Tx, marker, select_rows

__all__ = ["Fenced", "acquire", "holds", "release"]

L = schema.leases


class Fenced(Exception):
    """This node no longer holds the lease (another node took it over)."""


def acquire(tx: Tx, name: str, owner: str, ttl_us: int, held_epoch: int | None) -> int | None:
    """Take or renew lease ``name`` for ``owner``; the epoch held afterwards, or None.

    ``held_epoch`` is the epoch this process believes it holds (None at
    start): a renewal succeeds only if the row still carries it.
    """
    now = tx.now_us
    row = tx.conn.execute(select(L).where(L.c.name == name).with_for_update()).first()
    if row is None:
        # Several nodes may create the row at once: the first insert wins, the others read it.
        created = tx.conn.execute(_insert_if_absent(tx).values(name=name, owner=owner, epoch=1,
                                                               expires_us=now + ttl_us)).rowcount
        if created:
            return 1
        row = tx.conn.execute(select(L).where(L.c.name == name).with_for_update()).first()
    if row.owner == owner and held_epoch is not None and row.epoch == held_epoch:
        tx.conn.execute(update(L).where(L.c.name == name).values(expires_us=now + ttl_us))
        return held_epoch
    if row.expires_us < now or (row.owner == owner and held_epoch is None):
        epoch = row.epoch + 1
        tx.conn.execute(update(L).where(L.c.name == name).values(owner=owner, epoch=epoch,
                                                                 expires_us=now + ttl_us))
        return epoch
    return None


def _insert_if_absent(tx: Tx) -> Any:
    if tx.conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(L).on_conflict_do_nothing(index_elements=["name"])
    return insert(L).prefix_with("OR IGNORE")


def holds(tx: Tx, name: str, owner: str, epoch: int) -> bool:
    """Whether ``owner`` still holds lease ``name`` at ``epoch`` and it has not expired."""
    # SQL text to the driver (select_rows): every claim of a bank link's sends asks this.
    rows = select_rows(tx.conn, f"SELECT owner, epoch, expires_us FROM {L.name} WHERE name = {marker(tx.conn)}",
                       (name,))
    return bool(rows) and rows[0][0] == owner and rows[0][1] == epoch and rows[0][2] >= tx.now_us


def release(tx: Tx, name: str, owner: str, epoch: int) -> None:
    """Give the lease up at once (graceful stop), so another node need not wait for it to expire."""
    tx.conn.execute(update(L).where(L.c.name == name, L.c.owner == owner, L.c.epoch == epoch)
                    .values(expires_us=0))
