"""Bank batches in the store: a centre's instructions that go to their bank as one batch request.

A bank batch (bdc BDC103, docs/protocols/bdc.md, "Batches") is stored as its lines, each an
ordinary instruction with its own state, journal and result, plus two small tables
(:data:`gateway.store.schema.bank_batches`, ``bank_batch_lines``) that say which
instructions travel together and in which line order.  :func:`intake_bank_batch` stores
the instructions and the batch in one transaction; :func:`load_batches` gives the relay
every batch with a line still open, its lines in order.
"""

from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import select
from sqlalchemy.engine import Connection

from gateway.model import State
from gateway.store import instructions as q
from gateway.store import schema
from gateway.store.db import IN_CHUNK, Tx, insert_many, one_of, select_rows

__all__ = ["BatchConflict", "intake_bank_batch", "load_batches", "batch_members"]

B = schema.bank_batches
L = schema.bank_batch_lines
I = schema.instructions
_OPEN = (State.RECEIVED.value, State.SENT.value, State.ACCEPTED.value)


class BatchConflict(Exception):
    """A bank batch repeats some instructions already stored and not others, or other than as
    the one batch they were stored in: nothing is stored (the whole request is refused)."""


def intake_bank_batch(tx: Tx, items: Sequence[q.IntakeItem], kind: str = "payment") -> list[q.IntakeOutcome]:
    """Store ``items`` as one bank batch, in this order (line ``no`` from 1), or recognise it.

    All new: the instructions and the batch are stored; each created record carries the
    batch's reference as ``batch_ref`` (in memory, for the relay).  All repeats of one
    stored batch, whole and in order: their outcomes (``existing`` or ``conflict`` per
    item, as a single intake answers).  Anything else raises :class:`BatchConflict`.
    """
    outcomes = q.intake(tx, items)
    created = [o for o in outcomes if o.status == "created"]
    if len(created) == len(outcomes):
        rows = [o.record for o in outcomes]
        if any(r["state"] != State.RECEIVED.value for r in rows):
            raise BatchConflict("a line of a bank batch was refused by policy")
        batch_ref = rows[0]["bank_ref"]
        tx.conn.execute(B.insert().values(batch_ref=batch_ref, bank_id=rows[0]["bank_id"],
                                          centre_id=rows[0]["centre_id"], kind=kind, lines=len(rows),
                                          created_us=tx.now_us))
        insert_many(tx.conn, L, ("batch_ref", "line_no", "instruction"),
                    [(batch_ref, no, r["id"]) for no, r in enumerate(rows, 1)])
        for r in rows:
            r["batch_ref"] = batch_ref
        return outcomes
    if created:
        raise BatchConflict("some of these instruction_ids are stored already and some are not: "
                            "a bank batch is submitted whole, once")
    ids = [o.record["id"] for o in outcomes]
    found = tx.conn.execute(select(L.c.batch_ref, L.c.line_no, L.c.instruction)
                            .where(L.c.instruction.in_(ids))).all()
    by_id = {r.instruction: (r.batch_ref, r.line_no) for r in found}
    refs = {by_id[i][0] for i in ids if i in by_id}
    if len(by_id) != len(ids) or len(refs) != 1:
        raise BatchConflict("these instruction_ids were stored, but not as one bank batch")
    [batch_ref] = refs
    lines = tx.conn.execute(select(B.c.lines).where(B.c.batch_ref == batch_ref)).scalar()
    if lines != len(ids) or [by_id[i][1] for i in ids] != list(range(1, len(ids) + 1)):
        raise BatchConflict("these instruction_ids were stored as a bank batch of other lines or order")
    return outcomes


def batch_members(conn: Connection, instruction_ids: Sequence[int]) -> dict[int, str]:
    """The batch reference of each of these instructions (by row id) that is a batch line."""
    out: dict[int, str] = {}
    ids = sorted(set(instruction_ids))
    # Read at driver level (the relay's poll asks this about every row it reads).
    for i in range(0, len(ids), IN_CHUNK):
        test, params = one_of(conn, ids[i:i + IN_CHUNK])
        out.update(select_rows(conn, f"SELECT instruction, batch_ref FROM {L.name} WHERE instruction {test}", params))
    return out


def load_batches(conn: Connection, bank_id: str, batch_refs: Sequence[str] | None = None
                 ) -> list[dict[str, Any]]:
    """This bank's batches with a line still open (or those of ``batch_refs``), oldest first:
    ``{"batch_ref", "kind", "lines": [instruction row, in line order]}``."""
    open_refs = (select(L.c.batch_ref).join(I, I.c.id == L.c.instruction)
                 .where(I.c.bank_id == bank_id, I.c.state.in_(_OPEN)))
    if batch_refs is not None:
        open_refs = open_refs.where(L.c.batch_ref.in_(list(batch_refs)))
    refs = sorted(set(conn.execute(open_refs).scalars()))
    out: list[dict[str, Any]] = []
    for i in range(0, len(refs), 200):
        chunk = refs[i:i + 200]
        kinds = {r.batch_ref: (r.kind, r.created_us) for r in conn.execute(
            select(B.c.batch_ref, B.c.kind, B.c.created_us).where(B.c.batch_ref.in_(chunk), B.c.bank_id == bank_id))}
        lines: dict[str, list[dict[str, Any]]] = {}
        for r in conn.execute(select(L.c.batch_ref, I).join(I, I.c.id == L.c.instruction)
                              .where(L.c.batch_ref.in_(chunk)).order_by(L.c.batch_ref, L.c.line_no)):
            row = dict(r._mapping)
            lines.setdefault(row.pop("batch_ref"), []).append(row)
        out += [{"batch_ref": ref, "kind": kinds[ref][0], "created_us": kinds[ref][1], "lines": lines[ref]}
                for ref in chunk if ref in kinds and ref in lines]
    out.sort(key=lambda b: (b["created_us"], b["batch_ref"]))
    return out
