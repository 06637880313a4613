"""``Ingest``: files a gateway's batch of copies — checked, stored in order, then matched.

A batch that did not come whole and in order (:func:`gateway.copies.batch_break`) is
refused where it breaks.
A bad signature or a bank frame that disagrees refuses the copy and raises a
``forged-copy`` alert; a well-signed copy whose content cannot be read is
stored as refused (``refused-stored``) and raises ``copy-refused``, and the
copies after it are stored as usual.  The answer per copy is given only after
the commit.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Sequence

from twisted.internet.defer import DeferredLock
from twisted.logger import Logger

from gateway.copies import Refusal, batch_break, batch_proof_of
from gateway.ledger import store
from gateway.ledger.checks import CheckPool, ParsedCopy
from gateway.ledger.matcher import forged_copy_alert
from gateway.ledger.rules import copy_refused_alert, journal_fork_alert

if TYPE_CHECKING:
    from gateway.ledger.engine import MatchEngine
    from gateway.ledger.metrics import LedgerMetrics

__all__ = ["Ingest"]

log = Logger()


class Ingest:
    """Files a gateway's batch of copies: check off the reactor, store in order, then match.

    One batch per gateway at a time (a lock per gateway), so copies from one
    gateway reach the store in the order they were sent.  The batch is checked
    by the :class:`CheckPool`, in slices when it checks in processes, then
    stored in one transaction (its copies and the alerts it raises) and matched.
    """

    def __init__(self, db: store.LedgerDatabase, engine: MatchEngine, checks: CheckPool,
                 metrics: LedgerMetrics) -> None:
        self.db = db
        self.engine = engine
        self.checks = checks
        self.metrics = metrics
        self._locks: dict[str, DeferredLock] = {}

    async def file(self, gateway: str, docs: Sequence[Any], head_seq: int | None = None) -> list[dict[str, Any]]:
        """One result per copy, in order, each ``{"event_id", "status", "reason"?}``; after the commit.

        ``head_seq``: how far the gateway's journal had got when it sent the batch (None from a
        gateway that does not say); deadlines wait for the copies up to it
        (:meth:`MatchEngine.reported_head`).
        """
        if head_seq is not None:
            self.engine.reported_head(gateway, head_seq)
        token = self.engine.arrived()  # deadlines wait for these copies (MatchEngine.arrived)
        try:
            lock = self._locks.setdefault(gateway, DeferredLock())
            await lock.acquire()
            try:
                return await self._file(gateway, docs)
            finally:
                lock.release()
        finally:
            self.engine.settled(token)

    async def _file(self, gateway: str, docs: Sequence[Any]) -> list[dict[str, Any]]:
        # On a thread, one batch is checked on one thread: sharing it among threads was
        # measured (bench/README.md, item 13): no more copies per second, 20 % more CPU per copy.
        slices = self.checks.check(gateway, docs)
        checked: list[ParsedCopy | Refusal] = []
        try:
            for d in slices:
                checked += await d
        finally:
            for d in slices:  # a failed slice fails the batch; the others' failures are its too
                d.addErrback(lambda _: None)
        # A batch cut short or out of order: refused where it breaks.  The proofs the checks
        # read with the envelopes serve; only a copy they refused is read here again.
        proofs = [c.fact.batch if isinstance(c, ParsedCopy) and c.fact is not None else batch_proof_of(doc)
                  for c, doc in zip(checked, docs)]
        broken = batch_break(docs, proofs)
        if broken is not None and not isinstance(checked[broken[0]], Refusal):
            checked[broken[0]] = Refusal(_event_id(checked[broken[0]]), broken[1], forged=True)
        return await self._file_checked(gateway, checked)

    async def _file_checked(self, gateway: str, checked: Sequence[ParsedCopy | Refusal]) -> list[dict[str, Any]]:
        """Store a checked batch in one transaction, and match it."""
        # Nothing after the first copy refused whole is stored: the gateway resends from there
        # in journal order (see store.store_copies).  Unreadable copies are not refusals here.
        first_bad = next((i for i, c in enumerate(checked) if isinstance(c, Refusal)), len(checked))
        parsed = [c for c in checked[:first_bad] if isinstance(c, ParsedCopy)]
        forged = [forged_copy_alert(gateway, c.event_id, c.reason) for c in checked
                  if isinstance(c, Refusal) and c.forged]

        def op(tx: Any) -> tuple[list[store.CopyOutcome], list[dict[str, Any]]]:
            outcomes = store.store_copies(tx, gateway, [p.row for p in parsed])
            drafts = forged + [forged_copy_alert(gateway, o.event_id, o.reason) if o.conflict
                               else journal_fork_alert(gateway, o.fork, o.event_id) if o.fork is not None
                               else copy_refused_alert(gateway, o.event_id, o.reason)
                               for o in outcomes
                               if o.conflict or o.fork is not None or o.status == "refused-stored"]
            return outcomes, store.store_alerts(tx, [_alert_row(d) for d in drafts])

        outcomes: list[store.CopyOutcome] = []
        if parsed or forged:
            outcomes, new_alerts = await self.db.write(op)
            stored = [o.row for o in outcomes if o.status in ("stored", "refused-stored") and o.row is not None]
            facts = {p.row.event_id: p.fact for p in parsed}
            self.engine.observe(stored, [facts.get(r["event_id"]) for r in stored])
            self.engine.alerts_created(new_alerts)
        else:
            stored = []
        by_id = iter(outcomes)
        results: list[dict[str, Any]] = []
        for i, c in enumerate(checked):
            if i > first_bad:
                event_id = c.event_id if isinstance(c, Refusal) else c.row.event_id
                result = {"event_id": event_id, "status": "skipped",
                          "reason": "after a refused copy; send it again"}
            elif isinstance(c, Refusal):
                result = {"event_id": c.event_id, "status": "refused", "reason": c.reason}
                log.warn("ledger.copy_refused", gateway=gateway, event_id=c.event_id, reason=c.reason,
                         forged=c.forged)
            else:
                o = next(by_id)
                result = {"event_id": o.event_id, "status": o.status}
                if o.status == "refused-stored":
                    result["reason"] = o.reason
                    log.warn("ledger.copy_refused_stored", gateway=gateway, event_id=o.event_id,
                             reason=o.reason[:300])
                elif o.status == "refused":
                    result["reason"] = o.reason
                    log.warn("ledger.copy_refused", gateway=gateway, event_id=o.event_id, reason=o.reason,
                             forged=o.conflict)
            results.append(result)
        for status, n in Counter(r["status"] for r in results).items():  # a label lookup per status, not per copy
            self.metrics.copies.labels(gateway, status).inc(n)
        if stored:
            self.metrics.gateway_last_seq.labels(gateway).set(max(r["gateway_seq"] for r in stored))
            self.metrics.journal_seq.set(max(r["seq"] for r in stored))
        return results


def _event_id(checked: ParsedCopy | Refusal) -> str:
    return checked.event_id if isinstance(checked, Refusal) else checked.row.event_id


def _alert_row(draft: Any) -> store.AlertRow:
    return store.AlertRow(draft.key, draft.rule, draft.severity, draft.subject, draft.summary,
                          tuple(draft.evidence))
