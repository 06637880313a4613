"""The simulated bank's desk for the bdc-only transactions (adapters/bdc/messages.py).

Sign-off (BDC002), single collection (BDC102), batch payment and collection (BDC103/104),
batch status (BDC107), batch result file (BDC108) and branch codes (BDC112), on top of a
:class:`gateway.simulate.bank.BankCore`.  Every money movement goes through the core's
own instruction path, so it is executed at most once, booked, and notified (SBDC100) like
a single transfer: a collection is a transfer from the payer to the centre, and each batch
line is one transfer under the reference ``<BatchNo>L<no>``.  Pure: no I/O, no clock.

What the desk does not know it does not make up: a query about a batch it never accepted,
and a result file asked before the batch is complete, get no answer (the link closes the
connection, as for any request the bank cannot answer); the branch directory is what it
is given (``branches``, code to name), empty by default.  A status inquiry (BDC110) about
a batch request's serial is answered with the batch's number (``OldBatchNo``), as the
deployed interface answers the centre that lost a batch answer (:meth:`BdcDesk.knows`).

Durable with its core: on a :class:`gateway.simulate.durable.DurableBankCore` every
request the desk takes is written to the core's journal before it is acted on (input
``desk``) and replayed at start, in order with the core's own inputs, so a killed and
restarted simulator still knows every batch it accepted: the same batch request again
gets the same BatchNo, and nothing is executed twice.
"""

from __future__ import annotations

import datetime as _dt
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters import base
from adapters.bdc import messages as bm

__all__ = ["BdcDesk", "REQUESTS", "to_json", "from_json"]

REQUESTS = bm.REQUESTS
"""The message types the desk answers (everything else is the core's, but a status inquiry
about a batch request: :meth:`BdcDesk.knows`)."""

_KINDS = {k.__name__: k for k in (*bm.REQUESTS, base.StatusQuery)}


def to_json(message: Any) -> dict[str, Any]:
    """A request the desk takes, as JSON-ready data (for the durable core's journal)."""
    return {"type": type(message).__name__, "fields": base._plain(message)}


def from_json(data: dict[str, Any]) -> Any:
    """The request :func:`to_json` wrote (our own journal, not outside input)."""
    kind = _KINDS.get(str(data.get("type")))
    if kind is None:
        raise ValueError(f"not a request of the bdc desk: {data.get('type')!r}")
    return base._from_plain(kind, dict(data["fields"]), typing.get_type_hints)


@dataclass(frozen=True)
class _Accepted:
    batch: bm.Batch
    batch_no: str
    date: _dt.date
    refs: tuple[str, ...]       # the core's reference of each line, in line order


class BdcDesk:
    """Answers the bdc-only requests for one simulated bank (see the module docstring)."""

    def __init__(self, core: Any, *, branches: Mapping[str, str] | None = None) -> None:
        self.core = core
        self.branches = dict(branches or {})
        self._batches: dict[str, _Accepted] = {}     # batch_no -> batch
        self._by_request: dict[str, str] = {}        # the batch request's SendSeqNo -> batch_no

    def knows(self, message: Any) -> bool:
        """Whether ``message`` is the desk's: one of its requests, or a status inquiry about a
        batch request it accepted."""
        return isinstance(message, REQUESTS) or (isinstance(message, base.StatusQuery)
                                                 and message.ref in self._by_request)

    def receive(self, message: Any, now: float) -> list[Any]:
        """The answer to ``message`` (if any), then what its executions push (notices).

        With a durable core, the request is journalled first (see the module docstring)."""
        journalled = getattr(self.core, "journalled", None)
        if journalled is not None:
            return journalled("desk", now, to_json(message), lambda: self.take(message, now))
        return self.take(message, now)

    def take(self, message: Any, now: float) -> list[Any]:
        """:meth:`receive` without the journal (what a replay calls)."""
        self.core.version += 1
        if isinstance(message, base.StatusQuery):
            known = self._by_request.get(message.ref)
            if known is None:
                return self.core.receive(message, now)
            self.core.counts["batch_status_queries"] += 1
            return [bm.BatchAccepted(self.core.next_seq_no(), message.seq_no, known)]
        if isinstance(message, bm.SignOff):
            self.core.counts["sign_offs"] += 1
            return [bm.SignOffAnswer(self.core.next_seq_no(), message.seq_no, self.core.node)]
        if isinstance(message, bm.Collection):
            return self.core.receive(self._collection(message), now)
        if isinstance(message, bm.Batch):
            return self._batch(message, now)
        if isinstance(message, bm.BatchQuery):
            status = self._status(message)
            return [status] if status is not None else []
        if isinstance(message, bm.BatchResultQuery):
            results = self._results(message)
            return [results] if results is not None else []
        if isinstance(message, bm.BranchQuery):
            return [self._branches(message)]
        raise TypeError(f"the bdc desk does not take a {type(message).__name__}")

    def _date(self, at: float) -> _dt.date:
        return _dt.datetime.fromtimestamp(at, self.core.tz).date()

    # -- money ---------------------------------------------------------------------

    @staticmethod
    def _collection(m: bm.Collection) -> base.Instruction:
        """A collection as the transfer it is: the payer's account to the centre's."""
        return base.Instruction(
            seq_no=m.seq_no, send_date=m.send_date, centre_node=m.centre_node, unit_no=m.unit_no,
            debit_account=m.debtor_account, debit_name=m.debtor_name, creditor_account=m.credit_account,
            creditor_name=m.credit_name, creditor_bank_code="", creditor_personal=False,
            same_bank=m.same_bank, amount=m.amount, purpose="other", memo=m.memo, reference=m.reference)

    def _line(self, batch: bm.Batch, batch_no: str, item: bm.BatchItem) -> base.Instruction:
        payment = batch.kind == "payment"
        return base.Instruction(
            seq_no=f"{batch_no}L{item.no}", send_date=batch.send_date, centre_node=batch.centre_node,
            unit_no=batch.unit_no,
            debit_account=batch.account if payment else item.account,
            debit_name=batch.account_name if payment else item.name,
            creditor_account=item.account if payment else batch.account,
            creditor_name=item.name if payment else batch.account_name,
            creditor_bank_code=item.branch_code if payment else "", creditor_personal=payment,
            same_bank=batch.file_type == "1" or not item.branch_code, amount=item.amount, purpose="other",
            memo=batch.memo, reference=item.reference or item.summary)

    def _batch(self, batch: bm.Batch, now: float) -> list[Any]:
        known = self._by_request.get(batch.seq_no)
        if known is not None:  # the same request again: the same batch, nothing executed twice
            self.core.duplicates[batch.seq_no] += 1
            return [bm.BatchAccepted(self.core.next_seq_no(), batch.seq_no, known)]
        batch_no = self.core.next_seq_no()
        lines = [self._line(batch, batch_no, item) for item in batch.items]
        self._by_request[batch.seq_no] = batch_no
        self._batches[batch_no] = _Accepted(batch, batch_no, self._date(now),
                                            tuple(line.seq_no for line in lines))
        self.core.counts["batches"] += 1
        pushes: list[Any] = []
        refs = {line.seq_no for line in lines}
        for line in lines:
            # The lines' own answers are the bank's business; what they push (notices) goes out.
            pushes += [m for m in self.core.receive(line, now) if getattr(m, "reply_to", None) not in refs]
        return [bm.BatchAccepted(self.core.next_seq_no(), batch.seq_no, batch_no)] + pushes

    # -- queries -------------------------------------------------------------------

    def _outcomes(self, accepted: _Accepted) -> list[Any]:
        return [self.core.outcome(ref) for ref in accepted.refs]

    def _status(self, m: bm.BatchQuery) -> bm.BatchStatus | None:
        accepted = self._batches.get(m.batch_no)
        if accepted is None:
            self.core.counts["batch_queries_unknown"] += 1
            return None
        outcomes = self._outcomes(accepted)
        done = [(o, item) for o, item in zip(outcomes, accepted.batch.items) if o is not None]
        ok = [item for o, item in done if o.succeeded]
        state = ("complete" if len(done) == len(outcomes) else "partial" if done else "processing")
        return bm.BatchStatus(
            self.core.next_seq_no(), m.seq_no, accepted.batch_no, state, accepted.date,
            accepted.batch.bus_type, len(outcomes), accepted.batch.total, len(ok),
            sum(item.amount for item in ok), send_seq_no=accepted.batch.seq_no,
            project_no=accepted.batch.project_no)

    def _results(self, m: bm.BatchResultQuery) -> bm.BatchResults | None:
        accepted = self._batches.get(m.batch_no)
        if accepted is None or m.sub_code != "3":
            self.core.counts["batch_results_unknown"] += 1
            return None
        outcomes = self._outcomes(accepted)
        if any(o is None for o in outcomes):
            self.core.counts["batch_results_early"] += 1
            return None  # the result file exists once the batch is complete
        batch = accepted.batch
        payment = batch.kind == "payment"
        lines = tuple(bm.BatchLine(
            no=item.no, amount=item.amount,
            debit_account=batch.account if payment else item.account,
            debit_name=batch.account_name if payment else item.name,
            credit_account=item.account if payment else batch.account,
            credit_name=item.name if payment else batch.account_name,
            code=o.code, text=o.text, host_seq_no=o.host_seq_no,
            host_date=self._date(o.executed_at) if o.succeeded else None)
            for o, item in zip(outcomes, batch.items))
        ok = [ln for ln in lines if ln.succeeded]
        bad = [ln for ln in lines if not ln.succeeded]
        return bm.BatchResults(
            self.core.next_seq_no(), m.seq_no, accepted.batch_no, accepted.date, batch.unit_no,
            len(lines), batch.total, len(ok), sum(ln.amount for ln in ok), len(bad),
            sum(ln.amount for ln in bad), lines)

    def _branches(self, m: bm.BranchQuery) -> bm.Branches:
        """The given directory's branches of that bank in those areas (ChgNo digits 1-3 are
        the bank, 4-7 the area, as the deployed centre reads them)."""
        found = tuple(bm.Branch(code, name) for code, name in sorted(self.branches.items())
                      if code[:3] == m.bank_code and code[3:7] in m.areas)
        return bm.Branches(self.core.next_seq_no(), m.seq_no, found)
