"""The ledger's storage: the write operations and the named reads, over its tables and its own hash chain.

The ledger keeps a journal of copies (``copies``) filed by one or many
gateways.  ``seq`` is the ledger's own order, assigned densely (1, 2, 3, …)
by the single writer thread, and ``hash`` chains every row to the one before
it over everything the gateway signed, the signature (and, for a copy signed
in a batch, its batch proof), the seq and the arrival time; ``ledger_head`` records the newest seq and hash in the same
transaction, so a row deleted at the tail shows too.  A copy stored as
refused (:class:`gateway.copies.Unreadable`) is a row of kind ``refused``
with its reason and the exact text the gateway signed (``document``); it is
chained like any other, and every named read by kind passes it by.  Alerts are stored once
per key (``alerts.key`` is unique); ``matcher_state`` holds the matcher's
snapshot and the last ledger seq it covers.

The tables are :mod:`gateway.ledger.schema` and the chain :mod:`gateway.ledger.chain`; both are
named here too, so a caller reaches every ledger name through the store.  Every write is a
function of a :class:`gateway.store.db.Tx` run through the group-commit writer; every read is
a function of a connection run on the read pool, returning plain values.  Times are integer microseconds since the
epoch (UTC); money is integer fen.

(Over 600 lines on purpose: it is the named reads and writes of the ingest, the matcher, the
supervisor API and the console over the ledger's tables, so that their SQL is in one place;
only ``hpf-gateway verify`` (gateway/ledger/verify.py) reads the chain on its own.)
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import operator
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from adapters._frozen import quick_init
from gateway import copies as spec
from gateway.ledger.schema import (
    alert_notes,
    alerts,
    centre_conditions,
    console_alert_totals,
    console_journal,
    console_journal_head,
    console_totals,
    console_totals_mark,
    copies,
    inquiries,
    inquiry_attachments,
    ledger_head,
    matcher_state,
    metadata,
    rectification_alerts,
    rectifications,
)
from gateway.ledger.chain import (
    batch_proof,
    canonical_bytes,
    chain_hash,
    copy_document,
    ledger_chain_hash,
    row_chain_hash,
    signed_bytes,
    verify_row,
)
from gateway.store.db import GENESIS, Database, Tx, insert_many
from gateway.store.migrate import Migrations

__all__ = [
    "metadata", "copies", "ledger_head", "matcher_state", "alerts", "alert_notes",
    "console_journal", "console_journal_head", "console_totals", "console_alert_totals",
    "console_totals_mark", "inquiries", "inquiry_attachments", "centre_conditions", "rectifications", "rectification_alerts",
    "MIGRATIONS", "ALERT_STATES", "SIGNED_FIELDS", "REFUSED",
    "LedgerDatabase", "CopyRow", "CopyOutcome", "AlertRow",
    "canonical_bytes", "copy_document", "signed_bytes", "batch_proof", "verify_row", "ledger_chain_hash", "row_chain_hash",
    "store_copies", "store_alerts", "add_note", "change_state",
    "load_state", "pack_snapshot", "unpack_snapshot", "load_conditions", "load_head", "copies_after", "gateway_heads", "list_alerts", "get_alert",
    "alert_counts", "trail", "balance_history", "daily_rows",
]

MIGRATIONS = Migrations(Path(__file__).with_name("migrations"), version_table="ledger_alembic_version",
                        migrate_hint="hpf-gateway ledger --migrate -c CONFIG")
"""The ledger's own Alembic folder and version table (never the gateway's)."""

ALERT_STATES = ("open", "acknowledged", "resolved")
_NEXT_STATE = {"open": "acknowledged", "acknowledged": "resolved"}

SIGNED_FIELDS = spec.SIGNED_FIELDS
REFUSED = "refused"
"""The ``kind`` of a copy stored as refused (its claimed kind is in its ``document``)."""


# -- the database service ---------------------------------------------------------


class LedgerDatabase(Database):
    """The gateway's :class:`Database` service (pools, group commit, durability) on the ledger's schema."""

    name = "ledger-database"

    def __init__(self, reactor: Any, url: str, *, read_threads: int = 3) -> None:
        # Ledger operations never append gateway journal events (they keep the
        # ledger's own chain, see store_copies), so the plain writer serves.
        super().__init__(reactor, url, read_threads=read_threads)


# -- writes ------------------------------------------------------------------------


@quick_init
@dataclass(frozen=True)
class CopyRow:
    """A checked copy ready to store: the parsed fields (``raw`` as bytes) and ``host_seq_no``;
    for one stored as refused, the reason and the signed text (:meth:`unreadable`)."""

    gateway: str
    gateway_seq: int
    event_id: str
    kind: str
    centre_id: str | None
    instruction_id: str | None
    bank_id: str | None
    account: str | None
    state: str | None
    created_us: int
    payload: str
    raw: bytes | None
    adapter: str | None
    gateway_hash: str
    signature: str
    signature_alg: str
    host_seq_no: str | None
    refused: str | None = None
    document: str | None = None
    batch: str | None = None
    # canonical_bytes of the copy as checked, when the caller has them (the ingest check
    # does): the same bytes the stored row gives back, so the chain need not rebuild them.
    signed: bytes | None = field(default=None, compare=False, repr=False)

    def values(self) -> dict[str, Any]:
        """The columns of this copy (without seq, received_us and hash)."""
        return dict(zip(_COPY_COLUMNS, self.columns()))

    def columns(self) -> tuple[Any, ...]:
        """The columns of this copy in ``_COPY_COLUMNS`` order (read in C: the ingest stores
        a row per copy)."""
        return _copy_columns(self)

    @classmethod
    def of(cls, copy: spec.Copy) -> "CopyRow":
        """The row of a copy read whole (its ``signed`` bytes included)."""
        assert copy.signature is not None and copy.signature_alg is not None
        return cls(copy.gateway, copy.seq, copy.event_id, copy.kind, copy.centre_id, copy.instruction_id,
                   copy.bank_id, copy.account, copy.state, copy.created_us, copy.payload_text, copy.raw,
                   copy.adapter, copy.hash, copy.signature, copy.signature_alg, copy.host_seq_no,
                   batch=copy.batch.text() if copy.batch is not None else None, signed=copy.signed or None)

    @classmethod
    def unreadable(cls, found: spec.Unreadable) -> "CopyRow":
        """The row of a copy stored as refused: the envelope, the identifiers that are valid, the
        reason, and the signed text verbatim (the columns are for copies the ledger can read)."""
        env, doc = found.envelope, found.envelope.document

        def valid(key: str, pattern: Any) -> str | None:
            value = doc.get(key)
            return value if isinstance(value, str) and pattern.fullmatch(value) else None

        created = doc.get("created_us")
        payload = doc.get("payload")
        return cls(env.gateway, env.seq, env.event_id, REFUSED, valid("centre_id", spec.CENTRE),
                   valid("instruction_id", spec.INSTRUCTION), valid("bank_id", spec.BANK),
                   valid("account", spec.ACCOUNT), doc.get("state") if doc.get("state") in spec.STATES else None,
                   created if isinstance(created, int) and not isinstance(created, bool)
                   and 0 < created < 2**63 else 0,
                   payload if isinstance(payload, str) and "\x00" not in payload else "", None, None, env.hash,
                   env.signature, env.signature_alg, None, refused=found.reason[:1000],
                   document=env.signed.decode("utf-8"),
                   batch=env.batch.text() if env.batch is not None else None, signed=env.signed)


@dataclass(frozen=True)
class CopyOutcome:
    """What happened to one copy: ``stored`` (with its ledger ``seq``), ``refused-stored`` (stored
    as refused, with its seq), ``duplicate``, ``refused`` or ``skipped``.

    ``conflict`` is True when the event id was already stored with other
    content (a forged-copy alert is due); ``fork`` is the gateway seq of a new event id
    refused as out of order (a journal-fork alert is due); ``row`` is the stored row for a
    ``stored`` copy (for the matcher).
    """

    event_id: str
    status: str
    reason: str = ""
    seq: int | None = None
    conflict: bool = False
    row: dict[str, Any] | None = None
    fork: int | None = None  # refused out of order: the gateway seq it claimed (a journal-fork alert)


@dataclass(frozen=True)
class AlertRow:
    """An alert to store: the matcher's draft, flattened (``evidence`` is a tuple of event ids)."""

    key: str
    rule: str
    severity: str
    subject: str
    summary: str
    evidence: tuple[str, ...]


_COPY_COLUMNS = tuple(f for f in CopyRow.__dataclass_fields__ if f != "signed")
_STORED_COLUMNS = _COPY_COLUMNS + ("seq", "received_us", "hash")
_copy_columns = operator.attrgetter(*_COPY_COLUMNS)


def _head(conn: Connection) -> tuple[int, str]:
    row = conn.execute(select(ledger_head.c.seq, ledger_head.c.hash).where(ledger_head.c.id == 1)).first()
    return (int(row[0]), row[1]) if row else (0, GENESIS)


def store_copies(tx: Tx, gateway: str, rows: Sequence[CopyRow]) -> list[CopyOutcome]:
    """Store ``rows`` from ``gateway`` in order; one outcome per row.

    - an event id already stored with the same signed content: ``duplicate``,
      nothing changes;
    - an event id already stored with other content (or by another gateway):
      ``refused`` with ``conflict`` set;
    - a new event id whose gateway seq is not above the gateway's last stored
      seq: ``refused`` (out of order, or inserted into the gateway's journal);
    - otherwise ``stored``, with the next ledger seq, chained; a row built
      with :meth:`CopyRow.unreadable` the same way, answered ``refused-stored``;
    - every row after a refused one: ``skipped``, nothing stored.  A gateway
      sends its journal in order and resends from the refused copy on, so
      storing what follows it would turn the resend into an out-of-order
      refusal.
    """
    conn = tx.conn
    ids = [r.event_id for r in rows]
    known: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(ids, 500):
        for found in conn.execute(select(copies).where(copies.c.event_id.in_(chunk))).mappings():
            known[found["event_id"]] = dict(found)
    last_gseq = conn.execute(
        select(func.max(copies.c.gateway_seq)).where(copies.c.gateway == gateway)).scalar()
    last_gseq = -1 if last_gseq is None else int(last_gseq)
    seq, prev = _head(conn)
    head_before = seq
    outcomes: list[CopyOutcome] = []
    new_rows: list[tuple[Any, ...]] = []
    for r in rows:
        if outcomes and outcomes[-1].status in ("refused", "skipped"):
            outcomes.append(CopyOutcome(r.event_id, "skipped", "after a refused copy; send it again"))
            continue
        columns = r.columns()
        values = dict(zip(_COPY_COLUMNS, columns))
        existing = known.get(r.event_id)
        if existing is not None:
            if existing["gateway"] == gateway and signed_bytes(existing) == (r.signed or signed_bytes(values)):
                outcomes.append(CopyOutcome(r.event_id, "duplicate", "already stored",
                                            seq=existing["seq"]))
            else:
                outcomes.append(CopyOutcome(
                    r.event_id, "refused", "the event id is already stored with other content",
                    conflict=True))
            continue
        if r.gateway_seq <= last_gseq:
            outcomes.append(CopyOutcome(
                r.event_id, "refused",
                f"out of order: seq {r.gateway_seq} is not after this gateway's last stored seq "
                f"{last_gseq} (a copy inserted into the journal, or sent out of order)", fork=r.gateway_seq))
            continue
        seq += 1
        values.update(seq=seq, received_us=tx.now_us)
        signed = r.signed if r.signed is not None else signed_bytes(values)
        values["hash"] = prev = chain_hash(prev, seq, tx.now_us, signed, r.signature, r.batch)
        new_rows.append((*columns, seq, tx.now_us, prev))  # _STORED_COLUMNS
        known[r.event_id] = values
        last_gseq = r.gateway_seq
        outcomes.append(CopyOutcome(r.event_id, "stored" if r.refused is None else "refused-stored",
                                    r.refused or "", seq=seq, row=values))
    if new_rows:
        insert_many(conn, copies, _STORED_COLUMNS, new_rows)
        if head_before == 0 and conn.execute(select(ledger_head.c.id)).first() is None:
            conn.execute(insert(ledger_head).values(id=1, seq=seq, hash=prev))
        else:
            conn.execute(update(ledger_head).where(ledger_head.c.id == 1).values(seq=seq, hash=prev))
    return outcomes


def store_alerts(tx: Tx, drafts: Sequence[AlertRow], *,
                 state: tuple[int, str] | None = None) -> list[dict[str, Any]]:
    """Store each draft whose key is new (the rest are already stored: nothing changes).

    Each new alert is placed (centre, bank, account) from its first evidence
    copy that has them.  With ``state`` = (last_seq, snapshot as stored: :func:`pack_snapshot`'s
    text, or plain JSON) the
    matcher state is saved in the same transaction.  Returns the new alerts.
    """
    conn = tx.conn
    keys = list(dict.fromkeys(d.key for d in drafts))
    existing: set[str] = set()
    for chunk in _chunks(keys, 500):
        existing.update(conn.execute(select(alerts.c.key).where(alerts.c.key.in_(chunk))).scalars())
    created: list[dict[str, Any]] = []
    for d in drafts:
        if d.key in existing:
            continue
        existing.add(d.key)
        where = _placement(conn, d)
        values = dict(key=d.key[:255], rule=d.rule[:40], severity=d.severity[:16], state="open",
                      subject=d.subject[:100], summary=d.summary,
                      evidence=json.dumps(list(d.evidence), ensure_ascii=False),
                      created_us=tx.now_us, updated_us=tx.now_us, **where)
        values["id"] = conn.execute(insert(alerts).values(**values)).inserted_primary_key[0]
        created.append(values)
    if state is not None:
        last_seq, snapshot = state
        if conn.execute(select(matcher_state.c.id).where(matcher_state.c.id == 1)).first() is None:
            conn.execute(insert(matcher_state).values(id=1, last_seq=last_seq, snapshot=snapshot,
                                                      updated_us=tx.now_us))
        else:
            conn.execute(update(matcher_state).where(matcher_state.c.id == 1).values(
                last_seq=last_seq, snapshot=snapshot, updated_us=tx.now_us))
    return created


def _placement(conn: Connection, draft: AlertRow) -> dict[str, Any]:
    where: dict[str, Any] = {"centre_id": None, "bank_id": None, "account": None}
    if draft.evidence:
        found = conn.execute(
            select(copies.c.event_id, copies.c.centre_id, copies.c.bank_id, copies.c.account)
            .where(copies.c.event_id.in_(list(draft.evidence[:50])))).all()
        by_id = {f.event_id: f for f in found}
        for event_id in draft.evidence:
            f = by_id.get(event_id)
            if f is None:
                continue
            for col in ("centre_id", "bank_id", "account"):
                if where[col] is None and getattr(f, col) is not None:
                    where[col] = getattr(f, col)
    if where["centre_id"] is None and "/" in draft.subject:
        centre = draft.subject.split("/", 1)[0]
        where["centre_id"] = centre[:16] or None
    return where


def add_note(tx: Tx, alert_id: int, who: str, text: str) -> dict[str, Any] | None:
    """Record ``who``'s note on an alert; None when there is no such alert."""
    if tx.conn.execute(select(alerts.c.id).where(alerts.c.id == alert_id)).first() is None:
        return None
    return _note(tx, alert_id, who, "note", text)


def _note(tx: Tx, alert_id: int, who: str, action: str, text: str) -> dict[str, Any]:
    values = dict(alert_id=alert_id, who=who[:80], action=action, text=text, at_us=tx.now_us)
    values["id"] = tx.conn.execute(insert(alert_notes).values(**values)).inserted_primary_key[0]
    return values


def change_state(tx: Tx, alert_id: int, who: str, new_state: str,
                 reason: str) -> tuple[str, dict[str, Any] | None]:
    """Move an alert one step along open -> acknowledged -> resolved, recording who and why.

    Returns ``("changed", alert)``, ``("not-found", None)`` or
    ``("conflict", alert)`` when ``new_state`` is not the next state.
    """
    row = tx.conn.execute(select(alerts).where(alerts.c.id == alert_id)).mappings().first()
    if row is None:
        return "not-found", None
    alert = dict(row)
    if _NEXT_STATE.get(alert["state"]) != new_state:
        return "conflict", alert
    tx.conn.execute(update(alerts).where(alerts.c.id == alert_id, alerts.c.state == alert["state"])
                    .values(state=new_state, updated_us=tx.now_us))
    _note(tx, alert_id, who, new_state, reason)
    alert.update(state=new_state, updated_us=tx.now_us)
    return "changed", alert


# -- reads -------------------------------------------------------------------------


def load_state(conn: Connection) -> tuple[int, str | None]:
    """The matcher's saved (last applied ledger seq, snapshot JSON); (0, None) when none is saved."""
    row = conn.execute(select(matcher_state.c.last_seq, matcher_state.c.snapshot)
                       .where(matcher_state.c.id == 1)).first()
    return (int(row[0]), unpack_snapshot(row[1])) if row else (0, None)


PACKED = "zlib1:"
"""How a packed snapshot begins; a snapshot stored as plain JSON (before packing, or by
hand) begins with ``{`` and is read as it is."""


def pack_snapshot(parts: Iterable[str]) -> str:
    """The matcher's snapshot text (ASCII, :meth:`Matcher.snapshot_parts`), compressed as it
    comes and stored as ``zlib1:`` and base64: never the whole text at once.

    Writing the snapshot was the ledger's peak memory: the text joined from its pieces, and
    the database driver's copy of it, at the largest state (bench/README.md, items 41 and
    43).  Compressed as it is written, what is held is the compressed text, a tenth of the
    size or less; the column stays TEXT on SQLite and PostgreSQL alike.
    """
    z = zlib.compressobj(1)
    out = [z.compress(part.encode("ascii")) for part in parts]
    out.append(z.flush())
    return PACKED + base64.b64encode(b"".join(out)).decode("ascii")


def unpack_snapshot(stored: str) -> str:
    """The snapshot JSON text of a stored snapshot, packed (:func:`pack_snapshot`) or plain."""
    if not stored.startswith(PACKED):
        return stored
    return zlib.decompress(base64.b64decode(stored[len(PACKED):], validate=True)).decode("ascii")


def load_conditions(conn: Connection) -> dict[str, dict[str, Any]]:
    """Every centre's own alert conditions (rows of ``centre_conditions``), by centre."""
    return {r["centre_id"]: dict(r) for r in conn.execute(select(centre_conditions)).mappings()}


def load_head(conn: Connection) -> tuple[int, str]:
    """The ledger chain head: (newest seq, its hash); (0, GENESIS) for an empty ledger."""
    return _head(conn)


def copies_after(conn: Connection, after_seq: int, limit: int) -> list[dict[str, Any]]:
    """Stored copies with a ledger seq above ``after_seq``, oldest first (the matcher's replay)."""
    return [dict(r) for r in conn.execute(
        select(copies).where(copies.c.seq > after_seq).order_by(copies.c.seq).limit(limit)).mappings()]


def gateway_heads(conn: Connection) -> dict[str, int]:
    """The last stored gateway seq of every gateway that filed a copy."""
    return {g: int(s) for g, s in conn.execute(
        select(copies.c.gateway, func.max(copies.c.gateway_seq)).group_by(copies.c.gateway))}


def _alert_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "key": row["key"], "rule": row["rule"], "severity": row["severity"],
        "state": row["state"], "subject": row["subject"], "summary": row["summary"],
        "evidence": json.loads(row["evidence"]), "centre_id": row["centre_id"],
        "bank_id": row["bank_id"], "account": row["account"],
        "created_at": iso_us(row["created_us"]), "updated_at": iso_us(row["updated_us"]),
    }


def _note_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "who": row["who"], "action": row["action"], "text": row["text"],
            "at": iso_us(row["at_us"])}


def list_alerts(conn: Connection, *, state: str | None, rule: str | None, since_us: int | None,
                after_id: int, limit: int) -> list[dict[str, Any]]:
    """Alerts by id, filtered by state, rule and creation time (at or after ``since_us``)."""
    q = select(alerts).where(alerts.c.id > after_id)
    if state is not None:
        q = q.where(alerts.c.state == state)
    if rule is not None:
        q = q.where(alerts.c.rule == rule)
    if since_us is not None:
        q = q.where(alerts.c.created_us >= since_us)
    return [_alert_json(r) for r in conn.execute(q.order_by(alerts.c.id).limit(limit)).mappings()]


def get_alert(conn: Connection, alert_id: int) -> dict[str, Any] | None:
    """One alert with its notes (oldest first), or None."""
    row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).mappings().first()
    if row is None:
        return None
    out = _alert_json(row)
    out["notes"] = [_note_json(n) for n in conn.execute(
        select(alert_notes).where(alert_notes.c.alert_id == alert_id).order_by(alert_notes.c.id)).mappings()]
    return out


def alert_counts(conn: Connection) -> list[tuple[str, str, str, int]]:
    """(rule, severity, state, count) for every alert not resolved."""
    return [(r, s, st, int(n)) for r, s, st, n in conn.execute(
        select(alerts.c.rule, alerts.c.severity, alerts.c.state, func.count())
        .where(alerts.c.state != "resolved")
        .group_by(alerts.c.rule, alerts.c.severity, alerts.c.state))]


def trail(conn: Connection, centre_id: str, instruction_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every copy about one instruction, in ledger order, and the alerts naming it.

    The copies are those filed under the instruction, and the bank's
    movements and the centre's bookings carrying a host serial that the
    bank's results for it reported.
    """
    own = [dict(r) for r in conn.execute(
        select(copies).where(copies.c.centre_id == centre_id, copies.c.instruction_id == instruction_id)
        .order_by(copies.c.seq)).mappings()]
    serials = {(r["bank_id"], r["host_seq_no"]) for r in own if r["host_seq_no"]}
    seen = {r["seq"] for r in own}
    linked: list[dict[str, Any]] = []
    for bank_id, host_seq_no in serials:
        cond = copies.c.host_seq_no == host_seq_no
        cond = and_(cond, or_(copies.c.bank_id == bank_id, copies.c.kind == "booking")) if bank_id else cond
        for r in conn.execute(select(copies).where(cond).order_by(copies.c.seq)).mappings():
            if r["seq"] not in seen:
                seen.add(r["seq"])
                linked.append(dict(r))
    rows = sorted(own + linked, key=lambda r: r["seq"])
    found = [_alert_json(a) for a in conn.execute(
        select(alerts).where(alerts.c.subject == f"{centre_id}/{instruction_id}").order_by(alerts.c.id)
    ).mappings()]
    return rows, found


def balance_history(conn: Connection, account: str, limit: int) -> list[dict[str, Any]]:
    """The account's last ``limit`` balance snapshots, oldest first, each checked against the one before.

    For each snapshot after the first: ``expected`` = the previous snapshot's
    balance plus every movement on the account filed between the two (ledger
    order), ``reported`` = its balance, and their difference.
    """
    snaps = [dict(r) for r in conn.execute(
        select(copies.c.seq, copies.c.event_id, copies.c.payload, copies.c.created_us, copies.c.bank_id)
        .where(copies.c.account == account, copies.c.kind == "bank.balance")
        .order_by(copies.c.seq.desc()).limit(limit + 1)).mappings()]
    snaps.reverse()
    if not snaps:
        return []
    moves = [dict(r) for r in conn.execute(
        select(copies.c.seq, copies.c.event_id, copies.c.payload)
        .where(copies.c.account == account, copies.c.kind == "bank.movement",
               copies.c.seq > snaps[0]["seq"], copies.c.seq < snaps[-1]["seq"])
        .order_by(copies.c.seq)).mappings()]
    out: list[dict[str, Any]] = []
    prev: dict[str, Any] | None = None
    mi = 0
    for s in snaps:
        payload = _loads(s["payload"])
        balance = _int_or_none(payload.get("balance"))
        item: dict[str, Any] = {
            "seq": s["seq"], "event_id": s["event_id"], "bank_id": s["bank_id"],
            "at": iso_us(s["created_us"]), "as_of": payload.get("as_of"), "reported": balance,
            "available": _int_or_none(payload.get("available")),
        }
        movements: list[str] = []
        net = 0
        while mi < len(moves) and moves[mi]["seq"] < s["seq"]:
            amount = _int_or_none(_loads(moves[mi]["payload"]).get("amount"))
            net += amount or 0
            movements.append(moves[mi]["event_id"])
            mi += 1
        if prev is not None and prev["reported"] is not None and balance is not None:
            item.update(previous=prev["event_id"], movements=movements, net_movement=net,
                        expected=prev["reported"] + net, difference=balance - (prev["reported"] + net))
        out.append(item)
        prev = item
    # One snapshot more than asked was read, so the first one shown has its predecessor.
    return out[-limit:]


def daily_rows(conn: Connection, start_us: int, end_us: int) -> dict[str, Any]:
    """What the daily report is computed from: the day's copies (light columns) and alerts.

    Returns ``{"copies": [...], "instructions": {(centre, id): amount_fen}, "alerts": [...]}``
    where ``instructions`` gives the instructed amount of every instruction
    whose result or booking falls on the day, wherever it was received.
    """
    day = [dict(r) for r in conn.execute(
        select(copies.c.seq, copies.c.kind, copies.c.centre_id, copies.c.instruction_id,
               copies.c.bank_id, copies.c.account, copies.c.state, copies.c.payload, copies.c.created_us)
        .where(copies.c.created_us >= start_us, copies.c.created_us < end_us, copies.c.kind != REFUSED)
        .order_by(copies.c.seq)).mappings()]
    wanted = sorted({(r["centre_id"], r["instruction_id"]) for r in day
                     if r["instruction_id"] and r["centre_id"]})
    amounts: dict[tuple[str, str], tuple[int | None, str | None, str | None]] = {}
    for chunk in _chunks(wanted, 200):
        cond = or_(*[and_(copies.c.centre_id == c, copies.c.instruction_id == i) for c, i in chunk])
        for r in conn.execute(
                select(copies.c.centre_id, copies.c.instruction_id, copies.c.payload, copies.c.bank_id,
                       copies.c.account)
                .where(copies.c.kind == "instruction.state", copies.c.state.in_(("received", "rejected")),
                       cond)).mappings():
            ins = _loads(r["payload"]).get("instruction") or {}
            amounts[(r["centre_id"], r["instruction_id"])] = (
                _amount_or_none(ins.get("amount")), r["bank_id"], r["account"])
    day_alerts = [dict(r) for r in conn.execute(
        select(alerts.c.id, alerts.c.rule, alerts.c.severity, alerts.c.state, alerts.c.centre_id,
               alerts.c.bank_id, alerts.c.account)
        .where(alerts.c.created_us >= start_us, alerts.c.created_us < end_us)).mappings()]
    return {"copies": day, "instructions": amounts, "alerts": day_alerts}


# -- helpers -----------------------------------------------------------------------


def iso_us(us: int | None) -> str | None:
    """Microseconds since the epoch as an RFC 3339 UTC timestamp (None stays None)."""
    if us is None:
        return None
    return _dt.datetime.fromtimestamp(us / 1_000_000, _dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _loads(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _amount_or_none(value: Any) -> int | None:
    from gateway.model import parse_signed_amount

    try:
        return parse_signed_amount(value)
    except ValueError:
        return None


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
