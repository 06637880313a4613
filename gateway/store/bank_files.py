"""Files exchanged with a bank (host-to-host), as the store records them.

A file sent to a bank or collected from one is journalled as ``bank.file``: its name, SHA-256
and size in the payload, its bytes as the event's raw (the ledger keeps them as evidence).  A
collected file is recorded once, however often a poll sees it: its name and content mark it in
``bank_facts``, in the same transaction as its journal events.  The SFTP edge
(``gateway/sftp_link.py``) and the relay (a bdc bank batch's exchanges) call these; neither
writes the store itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from gateway.store import schema
from gateway.store.instructions import facts_seen

__all__ = ["FILE_KEY_PREFIX", "BankFile", "collected_keys", "file_key", "record_bank_file", "record_collected"]

FILE_KEY_PREFIX = "file:"


@dataclass(frozen=True)
class BankFile:
    """One file exchanged with a bank, as it was on the wire."""

    name: str
    sha256: str
    data: bytes

    @classmethod
    def of(cls, name: str, data: bytes) -> BankFile:
        return cls(name, hashlib.sha256(data).hexdigest(), data)


def record_bank_file(tx: Any, bank_id: str, f: BankFile, direction: str) -> str:
    """Journal a file sent to (``"out"``) or collected from (``"in"``) a bank: its name and
    SHA-256 in the payload, its bytes as the event's raw.  Returns the event id."""
    if direction not in ("in", "out"):
        raise ValueError(f"direction must be 'in' or 'out', not {direction!r}")
    return tx.event("bank.file", {"bank": bank_id, "direction": direction, "name": f.name,
                                  "sha256": f.sha256, "size": len(f.data)},
                    bank_id=bank_id, raw=f.data)


def file_key(f: BankFile) -> str:
    """The ``bank_facts`` key that marks file ``f`` (its name and content) collected."""
    return FILE_KEY_PREFIX + hashlib.sha256(f"{f.name}\0{f.sha256}".encode()).hexdigest()


def record_collected(tx: Any, bank_id: str, f: BankFile, unreadable: str | None) -> bool:
    """Journal collected file ``f`` once: ``bank.file`` with its bytes and, when it could not be
    read, ``bank.unreadable`` saying why.  False when it was recorded before (nothing written)."""
    if facts_seen(tx, bank_id, [file_key(f)]):
        return False
    record_bank_file(tx, bank_id, f, "in")
    if unreadable is not None:
        tx.event("bank.unreadable", {"part": f"File {f.name}", "reason": unreadable[:500], "bank": bank_id},
                 bank_id=bank_id, raw=f.data)
    return True


def collected_keys(conn: Any, bank_id: str) -> set[str]:
    """The keys of every file collected from ``bank_id`` so far."""
    F = schema.bank_facts
    return set(conn.execute(select(F.c.fact_key).where(
        F.c.bank_id == bank_id, F.c.fact_key.startswith(FILE_KEY_PREFIX))).scalars())
