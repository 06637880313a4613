"""The relay's bank batches: what :class:`gateway.relay.BankDispatcher` needs for a centre batch
that goes to its bank as one bdc batch request (docs/protocols/bdc.md, "Batches").

The pure outbox holds a bank batch as one record (gateway/outbox.py); this module is the
driver's side of it: the record built from the store's rows (:func:`batch_open`), the
store reads that find batches (:func:`load_all`, :func:`poll_new`), the messages that
carry its effects (:func:`batch_request`, :func:`batch_inquiry`), and the bank's answers
turned into the outbox's inputs (:func:`on_answer`).  Each line's fact is recorded about
that line's own instruction, as a single instruction's is.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from twisted.logger import Logger

from adapters import base as msg
from adapters.base import AdapterError
from adapters.bdc import bank_batch
from adapters.bdc import messages as bm
from gateway.clock import business_date
from gateway.model import State
from gateway.outbox import Effect, Open, Outbox, Query
from gateway.store import batches as sb
from gateway.store import instructions as q

__all__ = ["ANSWERS", "batch_open", "load_all", "poll_new", "batch_request", "batch_inquiry", "on_answer",
           "is_batch", "claim_refs", "refusal", "evidence"]

log = Logger()

ANSWERS = (bm.BatchAccepted, bm.BatchStatus, bm.BatchResults)
"""The bank's answers about a batch, handed to :func:`on_answer`."""

_OPEN_STATES = (State.RECEIVED.value, State.SENT.value, State.ACCEPTED.value)


def is_batch(payload: Any) -> bool:
    return isinstance(payload, dict) and "batch_ref" in payload


def batch_open(batch: dict[str, Any], slim: Any) -> Open | None:
    """The outbox record of a stored batch (``load_batches`` shape); None when every line is settled.

    Its BatchNo is its confirmed lines' ``bank_seq_no``; its sends its first line's.
    """
    lines = batch["lines"]
    refs = tuple(r["bank_ref"] for r in lines)
    done = frozenset(r["bank_ref"] for r in lines if r["state"] not in _OPEN_STATES)
    if len(done) == len(refs):
        return None
    confirmed = [r for r in lines if r["state"] != State.SENT.value and r["state"] != State.RECEIVED.value
                 and r.get("bank_seq_no")]
    batch_no = confirmed[0]["bank_seq_no"] if confirmed else ""
    kind = batch.get("kind") or ("collection" if json.loads(lines[0]["body"]).get("kind") == "collection"
                                 else "payment")  # fresh from the intake: its lines say (one kind a batch)
    payload = {"batch_ref": batch["batch_ref"], "kind": kind,
               "lines": [slim(r) for r in lines]}
    return Open(batch["batch_ref"], payload, accepted=bool(batch_no), sends=max(r.get("sends") or 0 for r in lines),
                members=refs, batch_no=batch_no, done=done)


def load_all(conn: Any, bank_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(open single instructions, open batches) of ``bank_id``: a batch's lines are not singles."""
    rows = q.load_open(conn, bank_id)
    batches = sb.load_batches(conn, bank_id)
    members = {r["id"] for b in batches for r in b["lines"]}
    return [r for r in rows if r["id"] not in members], batches


def poll_new(conn: Any, bank_id: str, after_id: int, limit: int
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Instructions another node's intake committed: (singles, the batches of any batch lines,
    the highest row id seen)."""
    rows = q.load_new(conn, bank_id, after_id, limit)
    top = rows[-1]["id"] if rows else after_id
    of = sb.batch_members(conn, [r["id"] for r in rows]) if rows else {}
    if not of:
        return rows, [], top
    return ([r for r in rows if r["id"] not in of], sb.load_batches(conn, bank_id, sorted(set(of.values()))), top)


def claim_refs(outbox: Outbox, refs: tuple[str, ...]) -> list[str]:
    """The instructions whose send a claim records: a batch's every line."""
    out: list[str] = []
    for ref in refs:
        e = outbox.entries.get(ref)
        if e is not None and e.members:
            out += e.members
        else:
            out.append(ref)
    return out


def batch_request(dispatcher: Any, payload: dict[str, Any]) -> bm.Batch:
    """The BDC103 (transfers) or BDC104 (collections) that sends batch ``payload``: each line as
    the single transfer or collection would be written."""
    lines = [dispatcher.line_message(row, in_batch=True) for row in payload["lines"]]
    if payload.get("kind") == "collection":
        return bank_batch.collection_batch(payload["batch_ref"], lines)
    return bank_batch.payment_batch(payload["batch_ref"], lines)


def batch_inquiry(query: Query) -> Any:
    """The request an outbox inquiry about a batch is: BDC110 by its serial, BDC107, BDC108."""
    if query.kind == "batch_status":
        return bm.BatchQuery(query.seq, query.batch_no)
    if query.kind == "batch_results":
        return bm.BatchResultQuery(query.seq, query.batch_no)
    lines = query.payload["lines"]
    created = business_date(lines[0]["created_us"])
    return msg.StatusQuery(query.seq, query.ref, created)


def evidence(outbox: Outbox, answer: Any, raw: bytes) -> Any:
    """The exchange that took a held batch, or gave its result file, as a ``bank.file`` to
    journal (a :class:`gateway.sftp.BankFile`), or None.

    A batch line's fact carries no frame (the frame is about the batch, not that line's
    reference, so the ledger's frame check could not read it as the line's): the evidence
    is journalled once per exchange as a file instead, its bytes the request and answer."""
    from gateway.sftp import BankFile

    if not raw:
        return None
    ref = outbox.batch_asked(answer.reply_to) if isinstance(answer, bm.BatchAccepted) and answer.ok else None
    if ref is not None:
        held = outbox.entries[ref].payload
        code = "BDC104" if isinstance(held, dict) and held.get("kind") == "collection" else "BDC103"
        return BankFile.of(f"{code}-{ref}-{answer.batch_no}.exchange", bytes(raw))
    if isinstance(answer, bm.BatchResults) and outbox.batch_of(answer.batch_no) is not None:
        return BankFile.of(f"BDC108-{answer.batch_no}.exchange", bytes(raw))
    return None


def on_answer(outbox: Outbox, answer: Any, now: float, bank_id: str,
              refuse: Callable[[str], None]) -> list[Effect]:
    """A bank's answer about a batch, as the outbox's input (``refuse``: a result file that
    does not fit its batch is refused and recorded as any bad bank message is)."""
    if isinstance(answer, bm.BatchAccepted):
        if not answer.ok:
            # Not a final failure as deployed (TxStatus not 0): asked about by its serial.
            log.warn("bank.batch_unconfirmed", bank=bank_id, ref=answer.reply_to, code=answer.code)
            return []
        ref = outbox.batch_asked(answer.reply_to)  # its BDC103 answer, or BDC110's about its serial
        return outbox.batch_accepted(ref, answer.batch_no, now) if ref is not None else []
    if isinstance(answer, bm.BatchStatus):
        return outbox.batch_status(answer.batch_no, answer.state, answer.summary, now)
    ref = outbox.batch_of(answer.batch_no)
    e = outbox.entries.get(ref) if ref is not None else None
    if e is None:
        return []
    lines = e.payload["lines"]
    try:
        results = bank_batch.line_results(answer, [r["bank_ref"] for r in lines], [r["amount"] for r in lines])
    except AdapterError as err:
        log.error("bank.batch_results_refused", bank=bank_id, batch_no=answer.batch_no, error=str(err)[:300])
        refuse(f"batch result file: {err}")
        return []
    return outbox.batch_results(answer.batch_no, results, now)


def refusal(relay: Any, items: list[q.IntakeItem]) -> str | None:
    """Why ``items`` cannot go to their bank as one bank batch, or None (docs/protocols/bdc.md,
    "Batches": one bdc bank, one kind, one centre account (debited by transfers, credited by
    collections), one purpose, every line passing policy, the whole request encodable as one
    BDC103 or BDC104)."""
    first = items[0]
    bank = relay.config.banks.get(first.bank_id)
    if bank is None or bank.adapter != "bdc":
        return f"bank {first.bank_id} does not speak bdc: only a bdc bank takes a bank batch"
    kind = first.instruction.kind
    account = first.instruction.account
    for i, item in enumerate(items):
        if item.instruction.kind != kind:
            return f"instructions[{i}]: every line of a bank batch is of one kind ({kind})"
        if item.bank_id != first.bank_id or item.instruction.account != account:
            what = "credits the same account" if kind == "collection" else "pays from the same debit account"
            return f"instructions[{i}]: every line of a bank batch {what}"
        if item.instruction.purpose != first.instruction.purpose:
            return f"instructions[{i}]: every line of a bank batch has the same purpose (one BusType)"
        if item.refusal is not None:
            return f"instructions[{i}]: refused by policy ({item.refusal}); a bank batch is taken whole"
    dispatcher = relay.dispatchers[first.bank_id]
    created = business_date(time.time_ns() // 1000)
    try:
        if kind == "collection":
            lines_c = [dispatcher.collection(
                ref=f"{n:020d}", centre_id=it.instruction.centre_id, instruction_id=it.instruction.instruction_id,
                credit_account=account, amount=it.instruction.amount,
                debtor=(it.instruction.debtor.account, it.instruction.debtor.name, it.instruction.debtor.bank_code,
                        it.instruction.debtor.agreement_no),
                purpose=it.instruction.purpose, memo=it.instruction.memo, created=created, in_batch=True)
                for n, it in enumerate(items, 1)]
            batch = bank_batch.collection_batch(lines_c[0].seq_no, lines_c)
        else:
            lines = [dispatcher.message(
                ref=f"{n:020d}", centre_id=it.instruction.centre_id, instruction_id=it.instruction.instruction_id,
                debit_account=account, amount=it.instruction.amount,
                creditor=(it.instruction.creditor.account, it.instruction.creditor.name,
                          it.instruction.creditor.bank_code),
                purpose=it.instruction.purpose, memo=it.instruction.memo, created=created)
                for n, it in enumerate(items, 1)]
            batch = bank_batch.payment_batch(lines[0].seq_no, lines)
        msg.check(relay.adapters[first.bank_id], batch, sender=relay.config.node, receiver=bank.node)
    except msg.AdapterError as e:
        return f"the batch cannot be written as one {'BDC104' if kind == 'collection' else 'BDC103'}: {e}"
    return None
