"""Queries on instructions and their journal events, named by what they do.

Write operations take a :class:`~gateway.store.db.Tx` and run on the writer
thread inside a group-committed transaction; reads take a connection and run
on the read pool.  Every function returns plain values (dicts), never live
result objects.  Every state change goes through :func:`gateway.lifecycle.advance`
and appends an ``instruction.state`` event, which is the centre's feed.

(Over 600 lines because every query on the instructions table and the facts recorded against
it is here, a few with a PostgreSQL form beside the portable one (the intake's duplicate
probe, the relay's driver-level polls): intake, the relay's loads and polls, the bank facts,
the feed and the trail.  Split by caller, one table's rules would be read in three places.)
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import operator
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from adapters._frozen import quick_init
from gateway import lifecycle
from gateway.clock import business_date
from gateway.model import Instruction, State, canonical_json, compact_json, format_amount
from gateway.store import leases, schema
from gateway.faults import crash_point
from gateway.store.db import IN_CHUNK, Tx, execute, insert_many, marker, one_of, select_rows, update_many

__all__ = [
    "IntakeItem", "IntakeOutcome", "intake", "get", "feed", "load_open", "load_new",
    "trail", "resolve_in_doubt", "count_by_state", "record_sent", "BankFact",
    "apply_bank_batch", "Movements", "BalanceSnapshot", "RefusedMessage", "record_balance",
    "record_booking",
    "bank_ref_for",
    "public_record",
    "public_record_json",
]

I = schema.instructions
E = schema.events


@quick_init
@dataclass(frozen=True)
class IntakeItem:
    """One validated instruction to store; ``refusal`` is set for policy rejections."""

    instruction: Instruction
    bank_id: str
    refusal: str | None = None


@quick_init
@dataclass(frozen=True)
class IntakeOutcome:
    """What intake did with one item: ``created``, ``existing`` (same body) or ``conflict``."""

    status: str
    record: dict[str, Any]


def bank_ref_for(centre_id: str, row_id: int, day: _dt.date) -> str:
    """The bank reference (bdc SendSeqNo): 5 centre digits, YYMMDD, a 9-digit serial.

    The serial is the instruction's row id, so the reference is unique for as
    long as the database lives and is fixed at intake: every resend reuses it.
    """
    return f"{centre_id[-5:]}{_yymmdd(day)}{row_id % 1_000_000_000:09d}"


@functools.lru_cache(maxsize=64)
def _yymmdd(day: _dt.date) -> str:
    # Cached: an intake's references all carry its one day, and strftime costs more than the rest.
    return f"{day:%y%m%d}"


def _row_dict(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


def _public_fields(row: dict[str, Any]) -> dict[str, Any]:
    """Every field of the public record but ``instruction`` (the stored body)."""
    out: dict[str, Any] = {
        "instruction_id": row["instruction_id"],
        "state": row["state"],
        "bank": row["bank_id"],
        "bank_ref": row["bank_ref"],
        "amount": format_amount(row["amount"]),
        "created_at": _iso(row["created_us"]),
        "updated_at": _iso(row["updated_us"]),
    }
    if row.get("reason"):
        out["reason"] = row["reason"]
    if row.get("host_seq_no") or row.get("result_code"):
        out["result"] = {"host_seq_no": row.get("host_seq_no"), "code": row.get("result_code"),
                         "bank_seq_no": row.get("bank_seq_no")}
    return out


def public_record(row: dict[str, Any]) -> dict[str, Any]:
    """The record as the centre API shows it, as a mapping (see :func:`public_record_json`)."""
    out = _public_fields(row)
    out["instruction"] = json.loads(row["body"])
    return out


def public_record_json(row: dict[str, Any]) -> str:
    """:func:`public_record` as JSON text, with the stored body spliced in as it is.

    The body is already canonical JSON, so an answer never parses it only to
    serialise it again (a batch answer holds one per item).
    """
    head = compact_json(_public_fields(row))
    return f'{head[:-1]},"instruction":{row["body"]}}}'


@functools.lru_cache(maxsize=1024)
def _iso(us: int) -> str:
    # Cached: every record of one commit shares its timestamp, and a batch's
    # answer formats the same few values over and over.
    return _dt.datetime.fromtimestamp(us / 1_000_000, _dt.timezone.utc).isoformat(timespec="milliseconds")


# -- intake ------------------------------------------------------------------


_INTAKE_COLUMNS = ("id", "centre_id", "instruction_id", "bank_id", "debit_account", "amount", "body",
                   "fingerprint", "state", "bank_ref", "reason", "sends", "created_us", "updated_us")
_intake_values = operator.itemgetter(*_INTAKE_COLUMNS)  # a new row's values, in that order


def _new_ids(tx: Tx, n: int) -> list[int]:
    """``n`` fresh instruction ids, in order.

    PostgreSQL: from the table's own sequence, so nodes sharing the database
    never collide.  SQLite: the file has a single writer, this one (the
    group-commit writer, inside its write transaction), so the next ids
    follow the highest one, or the floor a restore set (``id_floors``),
    whichever is higher.
    """
    conn = tx.conn
    if conn.dialect.name == "postgresql":
        return list(conn.exec_driver_sql(
            "SELECT nextval(pg_get_serial_sequence('instructions', 'id')) FROM generate_series(1, %(n)s)",
            {"n": n}).scalars())
    [(top,)] = select_rows(conn, "SELECT max(coalesce((SELECT max(id) FROM instructions), 0), "
                                 "coalesce((SELECT floor FROM id_floors WHERE name = 'instructions'), 0))", ())
    return list(range(top + 1, top + 1 + n))


def intake_payload(row: dict[str, Any]) -> str:
    """The journal payload of a new instruction, as canonical JSON text.

    It is ``canonical_json({"bank": …, "bank_ref": …, "instruction": <body>,
    "reason": …})`` (reason only when refused), assembled around the stored
    body, which is already canonical, instead of parsing and re-serialising it.
    Keys are written in sorted order.
    """
    parts = ['{"bank":', canonical_json(row["bank_id"]), ',"bank_ref":', canonical_json(row["bank_ref"]),
             ',"instruction":', row["body"]]
    if row["reason"]:
        parts += [',"reason":', canonical_json(row["reason"])]
    parts.append("}")
    return "".join(parts)


def intake(tx: Tx, items: Sequence[IntakeItem]) -> list[IntakeOutcome]:
    """Store new instructions, recognise repeats, detect conflicts; all in ``tx``.

    A repeat with the same body is ``existing`` (the caller answers 200 with
    the current state); the same id with another body is ``conflict`` (409).
    """
    if not items:
        return []
    by_centre: dict[str, set[str]] = {}
    for it in items:
        by_centre.setdefault(it.instruction.centre_id, set()).add(it.instruction.instruction_id)
    known: dict[tuple[str, str], dict[str, Any]] = {}
    for centre, ids in by_centre.items():
        for row in _rows_where(tx, "instruction_id", ids, centre_id=centre):
            known[(centre, row["instruction_id"])] = row

    new_rows: list[dict[str, Any]] = []
    plan: list[tuple[str, Any]] = []
    for it in items:
        ins = it.instruction
        key = (ins.centre_id, ins.instruction_id)
        body = ins.canonical()
        fingerprint = hashlib.sha256(body.encode("utf-8")).hexdigest()  # = ins.fingerprint(), once
        if key in known:
            existing = known[key]
            plan.append(("existing" if existing["fingerprint"] == fingerprint else "conflict", existing))
            continue
        state = lifecycle.advance(State.RECEIVED, lifecycle.PolicyRefusal(it.refusal)) if it.refusal \
            else State.RECEIVED
        row = dict(
            centre_id=ins.centre_id, instruction_id=ins.instruction_id, bank_id=it.bank_id,
            debit_account=ins.account, amount=ins.amount,
            body=body,
            fingerprint=fingerprint, state=state.value, bank_ref=None, reason=it.refusal, sends=0,
            created_us=tx.now_us, updated_us=tx.now_us,
        )
        known[key] = row
        new_rows.append(row)
        plan.append(("created", row))

    if new_rows:
        # The ids are taken first, so each bank reference is known before the
        # insert: one statement per batch, sent to the driver as is.
        day = business_date(tx.now_us)  # the date every message about the instruction carries
        for row, row_id in zip(new_rows, _new_ids(tx, len(new_rows))):
            row["id"] = row_id
            if row["state"] == State.RECEIVED.value:
                row["bank_ref"] = bank_ref_for(row["centre_id"], row_id, day)
        insert_many(tx.conn, I, _INTAKE_COLUMNS, [_intake_values(row) for row in new_rows])
        for row in new_rows:
            _state_event(tx, row, intake_payload(row), row["state"], None)
        crash_point("intake.commit")
    return [IntakeOutcome(status, row) for status, row in plan]


# -- reads -------------------------------------------------------------------


def get(conn: Connection, centre_id: str, instruction_id: str) -> dict[str, Any] | None:
    """One centre's instruction, or None (another centre's is None too)."""
    row = conn.execute(
        select(I).where(I.c.centre_id == centre_id, I.c.instruction_id == instruction_id)
    ).first()
    return _row_dict(row) if row else None


def trail(conn: Connection, centre_id: str, instruction_id: str) -> list[dict[str, Any]]:
    """Every journal event about one instruction, oldest first (payloads parsed, raw as hex)."""
    rows = conn.execute(
        select(E.c.seq, E.c.event_id, E.c.kind, E.c.state, E.c.payload, E.c.raw, E.c.created_us)
        .where(E.c.centre_id == centre_id, E.c.instruction_id == instruction_id).order_by(E.c.seq)).all()
    return [{"seq": r.seq, "event_id": r.event_id, "kind": r.kind, "state": r.state, "at": _iso(r.created_us),
             "payload": json.loads(r.payload), "raw_bytes": len(r.raw) if r.raw else 0} for r in rows]


def resolve_in_doubt(tx: Tx, centre_id: str, instruction_id: str, *, succeeded: bool, evidence: str,
                     operator: str, confirmed_by: str | None = None,
                     confirmation: str | None = None) -> OutcomeRecorded:
    """An audited manual resolution of an in-doubt instruction (IllegalTransition otherwise).

    ``operator`` proposed it with ``evidence``; ``confirmed_by`` (another
    operator) confirmed it, with ``confirmation`` if they said anything.
    """
    row = tx.conn.execute(select(I).where(I.c.centre_id == centre_id, I.c.instruction_id == instruction_id)).first()
    if row is None:
        return OutcomeRecorded(False, False, None)
    rec = _row_dict(row)
    event = lifecycle.ManualResolution(succeeded)
    resolution: dict[str, Any] = {"succeeded": succeeded, "evidence": evidence, "operator": operator}
    if confirmed_by is not None:
        resolution.update(proposed_by=operator, confirmed_by=confirmed_by)
        if confirmation:
            resolution["confirmation"] = confirmation
    payload = {"resolution": resolution}
    dirty: dict[int, dict[str, Any]] = {}
    changed = _transition(tx, rec, event, fields={"reason": f"manual: {evidence}"[:500]}, payload=payload,
                          raw=None, dirty=dirty)
    _store_dirty(tx, dirty)
    return OutcomeRecorded(True, changed, rec)


def count_by_state(conn: Connection) -> dict[str, int]:
    """How many instructions are in each state."""
    from sqlalchemy import func

    return {r[0]: r[1] for r in conn.execute(select(I.c.state, func.count()).group_by(I.c.state))}


_FEED_SQL = ("SELECT seq, event_id, instruction_id, state, payload, created_us FROM events "
             "WHERE centre_id = {m} AND kind = {m} AND seq > {m} ORDER BY seq LIMIT {m}")
_SHOWS_AMOUNT = (State.RECEIVED.value, State.REJECTED.value)


def feed(conn: Connection, centre_id: str, after: int, limit: int) -> list[dict[str, Any]]:
    """The centre's state changes with a cursor greater than ``after``, oldest first (read at
    driver level: centres long-poll this)."""
    rows = select_rows(conn, _FEED_SQL.format(m=marker(conn)), (centre_id, "instruction.state", after, limit))
    out = []
    for seq, event_id, instruction_id, state, payload_text, created_us in rows:
        payload = json.loads(payload_text)
        item = {"cursor": seq, "event_id": event_id, "instruction_id": instruction_id,
                "state": state, "at": _iso(created_us)}
        for key in ("bank_ref", "reason", "result"):
            if payload.get(key):
                item[key] = payload[key]
        if state in _SHOWS_AMOUNT:
            item["amount"] = payload["instruction"]["amount"]
        out.append(item)
    return out


_OPEN = (State.RECEIVED.value, State.SENT.value, State.ACCEPTED.value)


def load_open(conn: Connection, bank_id: str) -> list[dict[str, Any]]:
    """Every instruction for ``bank_id`` still waiting on the bank, oldest first (restart, takeover)."""
    return [_row_dict(r) for r in conn.execute(
        select(I).where(I.c.bank_id == bank_id, I.c.state.in_(_OPEN)).order_by(I.c.id)
    )]


_NEW_SQL = "SELECT {columns} FROM instructions WHERE bank_id = {m} AND id > {m} AND state = {m} ORDER BY id LIMIT {m}"


def load_new(conn: Connection, bank_id: str, after_id: int, limit: int) -> list[dict[str, Any]]:
    """Instructions received for ``bank_id`` after row ``after_id`` (intake on another node).

    Read at driver level (:func:`select_rows`): with several nodes on PostgreSQL the relay polls
    this every second, and it reads back every instruction the node's own intake committed since.
    """
    rows = select_rows(conn, _NEW_SQL.format(columns=", ".join(_COLUMNS), m=marker(conn)),
                       (bank_id, after_id, State.RECEIVED.value, limit))
    return [dict(zip(_COLUMNS, values)) for values in rows]


# -- bank facts --------------------------------------------------------------


_MUTABLE = ("state", "updated_us", "host_seq_no", "bank_seq_no", "result_code", "reason")


def _transition(tx: Tx, row: dict[str, Any], event: lifecycle.Event, *, fields: dict[str, Any],
                payload: dict[str, Any], raw: bytes | None, dirty: dict[int, dict[str, Any]]) -> bool:
    """Apply ``event`` to the row (in memory) and journal it if the state changed.

    The row is put in ``dirty``; :func:`_store_dirty` writes every dirty row
    once, so a batch of facts costs one UPDATE statement, not one per fact.
    """
    old = State(row["state"])
    new = lifecycle.advance(old, event)
    if new is old:
        return False
    row.update(fields, state=new.value, updated_us=tx.now_us)
    dirty[row["id"]] = row
    payload = dict(payload, bank_ref=row["bank_ref"])
    _state_event(tx, row, payload, new.value, raw)
    return True


def _state_event(tx: Tx, row: dict[str, Any], payload: dict[str, Any] | str, state: str,
                 raw: bytes | None) -> None:
    """Journal an instruction's new state: the centre's feed, whose long-polling readers the commit wakes."""
    tx.event("instruction.state", payload, centre_id=row["centre_id"],
             instruction_id=row["instruction_id"], bank_id=row["bank_id"],
             account=row["debit_account"], state=state, raw=raw)
    tx.centres.add(row["centre_id"])


def _store_dirty(tx: Tx, dirty: dict[int, dict[str, Any]]) -> None:
    if not dirty:
        return
    update_many(tx.conn, I, "id", _MUTABLE,
                [tuple([row.get(c) for c in _MUTABLE] + [row_id]) for row_id, row in dirty.items()])


_COLUMNS = tuple(I.c.keys())


def _rows_where(tx: Tx, column: str, values: Iterable[str], *, centre_id: str | None = None
                ) -> list[dict[str, Any]]:
    """Instructions whose ``column`` is one of ``values`` (and, given ``centre_id``, that
    centre's), as row dicts, read at driver level (:func:`select_rows`): on the hot paths
    (every intake, every claim and every batch of bank answers).
    """
    assert column in _COLUMNS
    keys = sorted(set(values))
    conn = tx.conn
    select_list = ", ".join(_COLUMNS)
    postgres = conn.dialect.name == "postgresql"
    mark = marker(conn)
    where, fixed = (f"centre_id = {mark} AND ", (centre_id,)) if centre_id is not None else ("", ())
    out: list[dict[str, Any]] = []
    for i in range(0, len(keys), IN_CHUNK):
        chunk = keys[i:i + IN_CHUNK]
        if postgres and centre_id is not None and column == "instruction_id":
            # One probe of the unique (centre_id, instruction_id) index per key.  Given
            # "centre_id = $1 AND instruction_id = ANY($2)" instead, PostgreSQL scanned every row
            # of the centre whenever its statistics were older than the table (a new database,
            # its first minute: autovacuum had not analysed it yet), which made the intake's
            # look-up grow with the table; a LATERAL subquery with LIMIT 1 keeps its plan fixed.
            rows = select_rows(conn, f"SELECT i.* FROM unnest(%s::text[]) AS k(key) CROSS JOIN LATERAL "
                                     f"(SELECT {select_list} FROM instructions WHERE centre_id = %s AND "
                                     f"{column} = k.key LIMIT 1) AS i", (chunk, centre_id))
        else:
            test, params = one_of(conn, chunk)
            rows = select_rows(conn, f"SELECT {select_list} FROM instructions WHERE {where}{column} {test}",
                               fixed + params)
        out += [dict(zip(_COLUMNS, values)) for values in rows]
    return out


def _rows_by_ref(tx: Tx, bank_id: str, refs: Iterable[str]) -> dict[str, dict[str, Any]]:
    """This bank's instructions with these references, as row dicts (other banks' are not found).

    The rows are found by reference alone and the bank is checked here:
    given ``bank_id = ? AND bank_ref IN (…)`` with a few hundred references,
    SQLite's planner picks the (bank_id, state, id) index and walks every
    instruction of the bank, a cost that grows with the table (60 ms per
    query at 212,000 instructions, found in the million-instruction run).
    """
    # Another bank's reference is not found (G7).
    return {row["bank_ref"]: row for row in _rows_where(tx, "bank_ref", refs) if row["bank_id"] == bank_id}


def record_sent(tx: Tx, bank_id: str, refs: Iterable[str], *,
                lease: tuple[str, str, int] | None = None) -> int:
    """Count a send of each reference; first sends move ``received`` to ``sent``.

    With ``lease`` (name, owner, epoch) the sends are fenced: if this node no
    longer holds that lease at that epoch, :class:`~gateway.store.leases.Fenced`
    is raised and nothing is recorded, and the caller must not send.
    """
    refs = list(refs)
    if not refs:
        return 0
    if lease is not None and not leases.holds(tx, *lease):
        raise leases.Fenced(f"lease {lease[0]} is no longer held by {lease[1]} at epoch {lease[2]}")
    rows = _rows_by_ref(tx, bank_id, refs)
    ids = sorted(row["id"] for row in rows.values())  # by id: checked to be this bank's by _rows_by_ref
    for i in range(0, len(ids), IN_CHUNK):  # SQL text to the driver: every claim runs it
        test, params = one_of(tx.conn, ids[i:i + IN_CHUNK])
        execute(tx.conn, f"UPDATE {I.name} SET sends = sends + 1 WHERE id {test}", params)
    dirty: dict[int, dict[str, Any]] = {}
    changed = 0
    for row in rows.values():
        if row["state"] == State.RECEIVED.value:
            changed += _transition(tx, row, lifecycle.Sent(), fields={}, payload={}, raw=None, dirty=dirty)
    _store_dirty(tx, dirty)
    return changed


@dataclass(frozen=True)
class OutcomeRecorded:
    """What recording a bank fact about an instruction did."""

    known: bool              # the reference is one of this bank's instructions
    changed: bool            # the state moved (False: a repeat, already applied)
    record: dict[str, Any] | None


@dataclass(frozen=True)
class BankFact:
    """One thing a bank said about one of its instructions: a receipt, a result, a status answer."""

    ref: str
    event: lifecycle.Event
    host_seq_no: str = ""
    bank_seq_no: str = ""
    code: str = ""
    text: str = ""
    raw: bytes | None = None

    def change(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The columns and the journal payload this fact sets."""
        event = self.event
        if isinstance(event, (lifecycle.ResultReceived, lifecycle.ManualResolution)):
            return ({"host_seq_no": self.host_seq_no or None, "bank_seq_no": self.bank_seq_no or None,
                     "result_code": self.code or None, "reason": self.text or None},
                    {"result": {"succeeded": event.succeeded, "host_seq_no": self.host_seq_no,
                                "bank_seq_no": self.bank_seq_no, "code": self.code, "text": self.text}})
        if isinstance(event, lifecycle.ReceiptConfirmed):
            return {"bank_seq_no": self.bank_seq_no or None}, {}
        if self.text:
            return {"reason": self.text}, {"reason": self.text}
        return {}, {}


@dataclass(frozen=True)
class Movements:
    """Account movements in one bank message (a notice or a statement), each with its account's centre.

    ``pending`` are entries the bank announced but has not booked (journalled as
    ``bank.movement_pending``, never as movements); ``problems`` the parts of the bank's
    document it could not read, each JSON with its bytes (journalled as ``bank.unreadable``
    with those bytes as the event's raw, so they can be alerted on).
    """

    entries: tuple[tuple[dict[str, Any], str | None], ...]
    raw: bytes | None
    pending: tuple[tuple[dict[str, Any], str | None], ...] = ()
    problems: tuple[tuple[dict[str, Any], bytes], ...] = ()


@dataclass(frozen=True)
class RefusedMessage:
    """A whole message a bank link refused (journalled as ``bank.refused``, which the ledger alerts on).

    ``payload`` names the bank, the reason (no full account numbers), the message's SHA-256
    and size; ``raw`` is its bytes when they are short enough to keep
    (:data:`gateway.copies.MAX_REFUSED_RAW`), else None.
    """

    payload: dict[str, Any]
    raw: bytes | None


@dataclass(frozen=True)
class BalanceSnapshot:
    snapshot: dict[str, Any]
    centre: str | None
    raw: bytes | None


def apply_bank_batch(tx: Tx, bank_id: str,
                     items: Sequence[BankFact | Movements | BalanceSnapshot | RefusedMessage]
                     ) -> list[Any]:
    """Apply everything a bank said in one reactor turn, in arrival order, with batched look-ups.

    Answers per item: for a :class:`BankFact` an :class:`OutcomeRecorded`, or the
    :class:`~gateway.lifecycle.IllegalTransition` refusing it; for :class:`Movements` the number
    of new movements; for a balance None; for a :class:`RefusedMessage` the event id.

    A fact whose reference is not this bank's instruction is answered unknown and changes
    nothing: a bank cannot report on another bank's instructions.  A fact that contradicts the
    recorded outcome (or cannot happen in the instruction's state) is answered with the refusal
    and changes nothing; the other items still apply.
    """
    facts = [i for i in items if isinstance(i, BankFact)]
    rows = _rows_by_ref(tx, bank_id, (f.ref for f in facts)) if facts else {}
    keys = [_movement_key(e) for i in items if isinstance(i, Movements) for e, _ in i.entries]
    keys += [_movement_key(e, "pd") for i in items if isinstance(i, Movements) for e, _ in i.pending]
    seen = facts_seen(tx, bank_id, keys) if keys else set()
    dirty: dict[int, dict[str, Any]] = {}
    out: list[Any] = []
    for item in items:
        if isinstance(item, BankFact):
            rec = rows.get(item.ref)
            if rec is None:
                out.append(OutcomeRecorded(False, False, None))
                continue
            fields, payload = item.change()
            try:
                changed = _transition(tx, rec, item.event, fields=fields, payload=payload, raw=item.raw,
                                      dirty=dirty)
            except lifecycle.IllegalTransition as e:
                out.append(e)
                continue
            out.append(OutcomeRecorded(True, changed, dict(rec)))
        elif isinstance(item, Movements):
            new = 0
            for entry, centre in item.entries:
                key = _movement_key(entry)
                if key in seen:
                    continue
                seen.add(key)
                tx.event("bank.movement", dict(entry, bank=bank_id), centre_id=centre, bank_id=bank_id,
                         account=entry["account"], raw=item.raw)
                new += 1
            for entry, centre in item.pending:
                key = _movement_key(entry, "pd")
                if key not in seen:   # an intraday report repeats what is still pending
                    seen.add(key)
                    tx.event("bank.movement_pending", dict(entry, bank=bank_id), centre_id=centre,
                             bank_id=bank_id, account=entry["account"], raw=item.raw)
            for problem, part in item.problems:
                tx.event("bank.unreadable", dict(problem, bank=bank_id), bank_id=bank_id,
                         raw=part or item.raw)
            out.append(new)
        elif isinstance(item, RefusedMessage):
            out.append(tx.event("bank.refused", dict(item.payload, bank=bank_id), bank_id=bank_id,
                                raw=item.raw))
        else:
            record_balance(tx, bank_id, item.snapshot, account_centre=item.centre, raw=item.raw)
            out.append(None)
    _store_dirty(tx, dirty)
    return out


def facts_seen(tx: Tx, bank_id: str, keys: Sequence[str]) -> set[str]:
    """Mark bank facts applied; the keys that had been applied before (replays)."""
    F = schema.bank_facts
    seen: set[str] = set()
    unique = sorted(set(keys))
    for i in range(0, len(unique), IN_CHUNK):  # SQL text to the driver: every movement notice asks
        test, params = one_of(tx.conn, unique[i:i + IN_CHUNK])
        seen.update(key for (key,) in select_rows(
            tx.conn, f"SELECT fact_key FROM {F.name} WHERE bank_id = {marker(tx.conn)} AND fact_key {test}",
            (bank_id,) + params))
    fresh = [k for k in unique if k not in seen]
    if fresh:
        insert_many(tx.conn, F, ("bank_id", "fact_key"), [(bank_id, k) for k in fresh])
    return seen


def _movement_key(entry: dict[str, Any], prefix: str = "mv") -> str:
    return f"{prefix}:{entry['account']}:{entry['host_seq_no']}:{entry['amount']}"[:160]


def record_booking(tx: Tx, booking: Any) -> tuple[str, dict[str, Any]]:
    """Journal a centre's booking once: ``created``, ``existing`` (same body) or ``conflict``."""
    B = schema.bookings
    found = tx.conn.execute(select(B.c.fingerprint).where(
        B.c.centre_id == booking.centre_id, B.c.booking_id == booking.booking_id)).first()
    body = booking.to_json()
    if found is not None:
        return ("existing" if found.fingerprint == booking.fingerprint() else "conflict"), body
    event_id = tx.event("booking", body, centre_id=booking.centre_id, instruction_id=booking.instruction_id,
                        account=booking.account)
    tx.conn.execute(insert(B).values(centre_id=booking.centre_id, booking_id=booking.booking_id,
                                     fingerprint=booking.fingerprint(), event_id=event_id))
    return "created", body


def record_balance(tx: Tx, bank_id: str, snapshot: dict[str, Any], *, account_centre: str | None,
                   raw: bytes | None) -> None:
    """Journal a balance snapshot; the journal is append-only, so it can never be altered."""
    tx.event("bank.balance", dict(snapshot, bank=bank_id), centre_id=account_centre,
             bank_id=bank_id, account=snapshot["account"], raw=raw)
