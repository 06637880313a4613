"""The console's day totals: instruction copies per (business day, centre, bank, state) and alerts
per (day, centre, rule), kept in ``console_totals`` and ``console_alert_totals`` and folded as copies,
alerts and alert notes arrive, so that the overview and the reports read a few rows per day rather
than every copy and alert (docs/console.md, "Measured").
"""

from __future__ import annotations

from typing import Any, Collection, Mapping, Sequence

from sqlalchemy import and_, case, func, insert, select, update
from sqlalchemy.engine import Connection

from gateway.ledger import store
from gateway.ledger.store import (
    alerts,
    console_alert_totals,
    console_totals,
    console_totals_mark,
    copies,
)
from gateway.store.db import Tx

__all__ = ["DAY_US", "Centres", "DailyTotals", "AlertTotals"]

Centres = Collection[str] | None  # the centres in a viewer's scope (None: all)
DAY_US = 86_400_000_000
_CST_US = 8 * 3_600_000_000  # days are business days in China (UTC+8)


def _in_scope(column: Any, centres: Centres) -> Any:
    return True if centres is None else column.in_(sorted(centres))


_COPIES, _ALERTS, _NOTES = 1, 2, 3  # console_totals_mark rows: how far each fold has come


def _mark(conn: Connection, which: int) -> int | None:
    found = conn.execute(select(console_totals_mark.c.seq).where(console_totals_mark.c.id == which)).scalar()
    return None if found is None else int(found)


def _move_mark(conn: Connection, which: int, was: int | None, to: int) -> None:
    if was is None:
        conn.execute(insert(console_totals_mark).values(id=which, seq=to))
    elif conn.execute(update(console_totals_mark).where(console_totals_mark.c.id == which,
                                                        console_totals_mark.c.seq == was)
                      .values(seq=to)).rowcount != 1:
        raise RuntimeError("console totals folded by another writer at the same time")  # rolls back


def _add_to(conn: Connection, table: Any, names: Sequence[str], found: Mapping[tuple[Any, ...], Sequence[int]],
            fields: Sequence[str]) -> None:
    """Add each key's numbers to its row of ``table`` (made when new)."""
    for key, numbers in found.items():
        where = and_(*(table.c[n] == v for n, v in zip(names, key)))
        if conn.execute(update(table).where(where).values(
                **{f: table.c[f] + x for f, x in zip(fields, numbers)})).rowcount == 0:
            conn.execute(insert(table).values(**dict(zip(names, key)), **dict(zip(fields, numbers))))


def _add(into: dict[Any, list[int]], key: Any, numbers: Sequence[int]) -> None:
    slot = into.setdefault(key, [0] * len(numbers))
    for i, x in enumerate(numbers):
        slot[i] += x


def _day_of(us: int) -> int:
    return (us + _CST_US) // DAY_US


class DailyTotals:
    """Instruction copies per (business day UTC+8, centre, bank, state): how many, and the fen
    instructed (for ``received``), kept in ``console_totals``.

    :meth:`fold` adds the copies filed since their mark in ``console_totals_mark``
    (at most ``chunk`` seqs per transaction, so the ingest writer is never held
    long); the console runs it every few seconds.  Each copy is read once, ever:
    a restart reads nothing again.  :meth:`between` reads the table and adds the
    few copies not folded yet, so what it answers is exact; when more than
    ``tail`` seqs are not folded yet (the first start after the migration, a
    console turned on after a long time off) it answers what is folded and
    says how far behind that is, rather than reading them all in a page.
    """

    def __init__(self, *, chunk: int = 5_000, tail: int = 10_000) -> None:
        self.chunk = chunk
        self.tail = tail

    @staticmethod
    def _read(conn: Connection, after: int, upto: int, into: dict[tuple[int, str, str, str], list[int]]) -> None:
        rows = conn.execute(
            select(copies.c.created_us, copies.c.centre_id, copies.c.bank_id, copies.c.state,
                   case((copies.c.state == "received", copies.c.payload), else_=None))
            .where(copies.c.seq > after, copies.c.seq <= upto, copies.c.kind == "instruction.state"))
        for created, centre, bank, state, payload in rows:
            amount = store._amount_or_none((store._loads(payload).get("instruction") or {}).get("amount")) \
                if payload is not None else None
            _add(into, (_day_of(created), centre or "", bank or "", state or ""), (1, amount or 0))

    def fold(self, tx: Tx) -> bool:
        """Fold the next copies into the table; True when more are left."""
        conn = tx.conn
        mark = _mark(conn, _COPIES)
        head, _ = store.load_head(conn)
        done = mark or 0
        upto = min(head, done + self.chunk)
        if upto <= done:
            return False
        found: dict[tuple[int, str, str, str], list[int]] = {}
        self._read(conn, done, upto, found)
        _add_to(conn, console_totals, ("day", "centre_id", "bank_id", "state"), found, ("n", "fen"))
        _move_mark(conn, _COPIES, mark, upto)
        return upto < head

    def between(self, conn: Connection, centres: Centres, first_day: int,
                end_day: int) -> tuple[dict[tuple[int, str, str, str], tuple[int, int]], int]:
        """({(day, centre, bank, state): (count, fen)} for days in [first_day, end_day) and centres in
        scope, how many seqs of the ledger are not counted in it (0: exact))."""
        t = console_totals
        for _ in range(3):  # a fold may commit between the reads: then read again
            mark = _mark(conn, _COPIES) or 0
            found = {(r.day, r.centre_id, r.bank_id, r.state): [int(r.n), int(r.fen)] for r in conn.execute(
                select(t).where(t.c.day >= first_day, t.c.day < end_day, _in_scope(t.c.centre_id, centres)))}
            if (_mark(conn, _COPIES) or 0) == mark:
                break
        head, _ = store.load_head(conn)
        behind = head - mark
        if 0 < behind <= self.tail:
            tail: dict[tuple[int, str, str, str], list[int]] = {}
            self._read(conn, mark, head, tail)
            for key, numbers in tail.items():
                if first_day <= key[0] < end_day and (centres is None or key[1] in centres):
                    _add(found, key, numbers)
            behind = 0
        return {k: (v[0], v[1]) for k, v in found.items()}, behind


class AlertTotals:
    """Alerts per (business day of their creation, centre, rule): how many, how many acknowledged
    and resolved, and the microseconds from creation that took, summed; kept in
    ``console_alert_totals`` and folded like :class:`DailyTotals` (new alerts by id, their
    acknowledged and resolved notes by id), so a report reads a few rows per day, not every alert."""

    _FIELDS = ("n", "acked", "ack_us", "resolved", "resolve_us")

    def __init__(self, *, chunk: int = 5_000, tail: int = 10_000) -> None:
        self.chunk = chunk
        self.tail = tail

    @staticmethod
    def _heads(conn: Connection) -> tuple[int, int]:
        return (int(conn.execute(select(func.max(alerts.c.id))).scalar() or 0),
                int(conn.execute(select(func.max(store.alert_notes.c.id))).scalar() or 0))

    @staticmethod
    def _read(conn: Connection, alerts_after: int, alerts_upto: int, notes_after: int, notes_upto: int,
              into: dict[tuple[int, str, str], list[int]]) -> None:
        notes = store.alert_notes
        for created, centre, rule in conn.execute(select(alerts.c.created_us, alerts.c.centre_id, alerts.c.rule).where(
                alerts.c.id > alerts_after, alerts.c.id <= alerts_upto)):
            _add(into, (_day_of(created), centre or "", rule), (1, 0, 0, 0, 0))
        # An alert moves open -> acknowledged -> resolved once: each such note is its first.
        for action, at, created, centre, rule in conn.execute(
                select(notes.c.action, notes.c.at_us, alerts.c.created_us, alerts.c.centre_id, alerts.c.rule)
                .select_from(notes.join(alerts, alerts.c.id == notes.c.alert_id))
                .where(notes.c.id > notes_after, notes.c.id <= notes_upto,
                       notes.c.action.in_(("acknowledged", "resolved")))):
            took = at - created
            _add(into, (_day_of(created), centre or "", rule),
                 (0, 1, took, 0, 0) if action == "acknowledged" else (0, 0, 0, 1, took))

    def fold(self, tx: Tx) -> bool:
        """Fold the next alerts and notes into the table; True when more are left."""
        conn = tx.conn
        marks = _mark(conn, _ALERTS), _mark(conn, _NOTES)
        heads = self._heads(conn)
        done = (marks[0] or 0, marks[1] or 0)
        upto = (min(heads[0], done[0] + self.chunk), min(heads[1], done[1] + self.chunk))
        if upto == done:
            return False
        found: dict[tuple[int, str, str], list[int]] = {}
        self._read(conn, done[0], upto[0], done[1], upto[1], found)
        _add_to(conn, console_alert_totals, ("day", "centre_id", "rule"), found, self._FIELDS)
        _move_mark(conn, _ALERTS, marks[0], upto[0])
        _move_mark(conn, _NOTES, marks[1], upto[1])
        return upto != heads

    def between(self, conn: Connection, centres: Centres, first_day: int,
                end_day: int) -> tuple[dict[tuple[int, str, str], list[int]], int]:
        """({(day, centre, rule): [n, acked, ack µs, resolved, resolve µs]} in [first_day, end_day) and
        scope, how many alerts and notes are not counted in it (0: exact))."""
        t = console_alert_totals
        for _ in range(3):
            marks = (_mark(conn, _ALERTS) or 0, _mark(conn, _NOTES) or 0)
            found = {(r.day, r.centre_id, r.rule): [int(r[f]) for f in self._FIELDS] for r in conn.execute(
                select(t).where(t.c.day >= first_day, t.c.day < end_day, _in_scope(t.c.centre_id, centres))
            ).mappings()}
            if (_mark(conn, _ALERTS) or 0, _mark(conn, _NOTES) or 0) == marks:
                break
        heads = self._heads(conn)
        behind = heads[0] - marks[0] + heads[1] - marks[1]
        if 0 < behind <= self.tail:
            tail: dict[tuple[int, str, str], list[int]] = {}
            self._read(conn, marks[0], heads[0], marks[1], heads[1], tail)
            for key, numbers in tail.items():
                if first_day <= key[0] < end_day and (centres is None or key[1] in centres):
                    _add(found, key, numbers)
            behind = 0
        return found, behind
