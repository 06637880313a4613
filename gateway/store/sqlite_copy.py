"""The SQLite store copied whole: a backup made online, and a backup put in place as a new store.

``hpf-gateway backup`` and ``restore`` (docs/operations.md) are the commands; what they do to the
store's files and rows is here, beside the store's other writes.  Each copy is made with SQLite's
backup API (consistent while the daemon runs) and checked with ``PRAGMA integrity_check``; the
copy is private to its owner (it holds every account's data).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.store.db import private_file

__all__ = ["after_restore", "backup", "restore"]


def _copy(source: Path, dest: Path, *, self_contained: bool) -> str:
    """Copy ``source`` to the new private file ``dest``; the copy's integrity check ("ok" when sound)."""
    private_file(dest)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    target = sqlite3.connect(dest)
    try:
        src.backup(target, pages=1024)
        if self_contained:
            target.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
        return str(target.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        target.close()
        src.close()


def backup(store: Path, dest: Path) -> str:
    """A self-contained copy of the live store at ``dest``; its integrity check."""
    return _copy(store, dest, self_contained=True)


def restore(backup_file: Path, dest: Path) -> tuple[str, int]:
    """The backup put in place as the store ``dest``; its integrity check, and how many open
    instructions not yet counted as sent are now counted as sent once (the restored store cannot
    know what went to the banks after the backup, so each is asked about or resent by its rules)."""
    check = _copy(backup_file, dest, self_contained=False)
    if check != "ok":
        return check, 0
    target = sqlite3.connect(dest)
    try:
        with target:
            marked = target.execute(
                "UPDATE instructions SET sends = 1 WHERE sends = 0 AND bank_ref IS NOT NULL "
                "AND state IN ('received', 'sent')").rowcount
    finally:
        target.close()
    return check, marked


def after_restore(dest: Path, skip_ids: int) -> tuple[int, int, dict[str, int]]:
    """After the restored store is migrated: new instruction ids start ``skip_ids`` above the
    highest (the lost store went on handing out ids, so bank references, after the backup).
    Returns the highest restored id, the new floor, and the open instructions per bank."""
    target = sqlite3.connect(dest)
    try:
        with target:
            highest = target.execute("SELECT coalesce(max(id), 0) FROM instructions").fetchone()[0]
            earlier = target.execute("SELECT coalesce(max(floor), 0) FROM id_floors "
                                     "WHERE name = 'instructions'").fetchone()[0]  # a restored store's
            floor = max(highest, earlier) + skip_ids
            target.execute("INSERT OR REPLACE INTO id_floors (name, floor) VALUES ('instructions', ?)",
                           (floor,))
        open_by_bank = dict(target.execute(
            "SELECT bank_id, count(*) FROM instructions WHERE state IN ('received', 'sent', 'accepted') "
            "GROUP BY bank_id").fetchall())
    finally:
        target.close()
    return highest, floor, open_by_bank
