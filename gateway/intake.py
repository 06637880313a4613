"""``Intake``: a centre's instruction bodies become stored instructions (validation, authorisation, policy).

Validation and policy are pure (:meth:`Intake.prepare`); storage is one
group-committed write (:meth:`Intake.store`), and the centre API answers only
after that commit (G1).
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from typing import Any, Callable, Sequence

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from gateway.config import GatewayConfig
from gateway.faults import crash_point
from gateway.metrics import GatewayMetrics
from gateway.model import FieldError, InvalidInput, parse_instruction
from gateway.store import batches as sb
from gateway.store import instructions as q
from gateway.store.db import Database
from gateway.web import Problem

__all__ = ["Intake", "RESERVED_IDS"]

log = Logger()

RESERVED_IDS = frozenset({"batch"})  # instruction_ids that name a fixed path under /v1/instructions/


class Intake:
    """Turns a centre's instruction bodies into stored instructions (validation, authorisation, policy)."""

    def __init__(self, config: GatewayConfig, db: Database, on_stored: Callable[[list[dict[str, Any]]], None],
                 metrics: GatewayMetrics, today: Callable[[], _dt.date] = _dt.date.today,
                 encodable: Callable[[q.IntakeItem], str | None] | None = None,
                 backpressure: Callable[[str, int], str | None] | None = None) -> None:
        self.config = config
        self.encodable = encodable
        self.backpressure = backpressure
        self.db = db
        self.on_stored = on_stored
        self.metrics = metrics
        self.today = today
        # Why items cannot go to their bank as one bank batch, or None (Relay.bank_batch_refusal).
        self.bank_batch: Callable[[list[q.IntakeItem]], str | None] | None = None

    def prepare(self, centre_id: str, body: Any, today: _dt.date | None = None) -> q.IntakeItem:
        """Validate one body; raises :class:`Problem` (422, 403).  Pure: touches no storage.

        ``today`` is the intake's date (a batch reads the clock once for all its items).
        """
        cfg = self.config
        try:
            ins = parse_instruction(centre_id, body, ceiling_fen=cfg.limits.max_amount,
                                    today=self.today() if today is None else today)
        except InvalidInput as e:
            self.metrics.refused.labels("centre_api", "invalid_instruction").inc()
            raise Problem(422, "invalid-instruction", "The instruction is invalid",
                          errors=tuple(e.errors)) from None
        if ins.instruction_id in RESERVED_IDS:
            self.metrics.refused.labels("centre_api", "invalid_instruction").inc()
            raise Problem(422, "invalid-instruction", "The instruction is invalid",
                          errors=(FieldError("instruction_id", "is reserved: /v1/instructions/batch is the batch "
                                                               "endpoint, so it could not be read back"),))
        account = cfg.accounts.get(ins.account)
        field = "credit_account" if ins.kind == "collection" else "debit_account"
        if account is None or account.centre != centre_id:
            self.metrics.security_events.labels("foreign_account").inc()
            log.warn("centre.foreign_account", kind="foreign_account", centre=centre_id,
                     **{field: ins.account})
            raise Problem(403, "not-your-account", f"The {field.replace('_', ' ')} is not one of this centre's",
                          errors=(FieldError(field, "not an account of this centre"),))
        mismatch = self.own_account_mismatch(ins)
        if mismatch:
            self.metrics.refused.labels("centre_api", "invalid_instruction").inc()
            log.warn("centre.own_account_mismatch", centre=centre_id, creditor_account=ins.creditor.account,
                     fields=",".join(e.field for e in mismatch))
            raise Problem(422, "invalid-instruction", "The creditor does not match the centre's own account",
                          errors=mismatch)
        if self.backpressure is not None:
            busy = self.backpressure(account.bank, 1)
            if busy is not None:
                self.metrics.refused.labels("centre_api", "backpressure").inc()
                raise Problem(503, "unavailable", f"Bank {account.bank} cannot take more instructions now",
                              busy, errors=(FieldError(field, f"held at bank {account.bank}"),))
        item = q.IntakeItem(ins, account.bank, self.policy_refusal(ins))
        if item.refusal is None and self.encodable is not None:
            reason = self.encodable(item)
            if reason is not None:
                self.metrics.refused.labels("centre_api", "not_encodable").inc()
                raise Problem(422, "invalid-instruction", "The bank's protocol cannot carry this instruction",
                              errors=(FieldError("", reason),))
        return item

    def own_account_mismatch(self, ins: Any) -> tuple[FieldError, ...]:
        """For a transfer to one of the centre's own registered accounts, each creditor field that
        differs from the register (a bank code the register lacks cannot be checked, so differs).
        A collection names only the centre's account, so has nothing to differ."""
        if ins.kind == "collection":
            return ()
        c = ins.creditor
        own = self.config.accounts.get(c.account)
        if own is None or own.centre != ins.centre_id:
            return ()
        errors = []
        if c.name != own.name:
            errors.append(FieldError("creditor.name", "is not the registered name of this account of the centre"))
        if not own.bank_code:
            errors.append(FieldError("creditor.bank_code", "this account of the centre has no bank_code in the "
                                                           "register, so a transfer to it cannot be checked"))
        elif c.bank_code != own.bank_code:
            errors.append(FieldError("creditor.bank_code", "is not the registered bank code of this account of "
                                                           "the centre"))
        return tuple(errors)

    def policy_refusal(self, ins: Any) -> str | None:
        """Why policy refuses the instruction (stored as rejected), or None.

        A collection is money into the centre's own account, taken under the payer's
        agreement (ConAgrNo): no counterparty register and no large-amount approval apply.
        """
        if ins.kind == "collection":
            return None
        cfg = self.config
        c = ins.creditor
        registered = cfg.counterparties.get(c.account)
        own = cfg.accounts.get(c.account)
        if own is not None and own.centre == ins.centre_id:
            pass  # a move between the centre's own accounts
        elif registered is None or registered.name != c.name or registered.bank_code != c.bank_code:
            return "unregistered counterparty: creditor account, name and bank code must match the register"
        if ins.amount >= cfg.limits.large_amount and not ins.approval_ref:
            return "large amount without approval_ref"
        return None

    def _count(self, created: list[dict[str, Any]]) -> None:
        """Count stored instructions by bank and state: one increment per pair, not per
        instruction (a batch of a hundred has a few pairs; each labels() look-up costs)."""
        pairs = Counter((rec["bank_id"], rec["state"]) for rec in created)
        for (bank, state), n in pairs.items():
            self.metrics.instructions.labels(bank, state).inc(n)

    @inlineCallbacks
    def store(self, items: Sequence[q.IntakeItem]) -> Any:
        """Commit the items; fires with one :class:`IntakeOutcome` each, after the commit."""
        outcomes = yield self.db.write(lambda tx: q.intake(tx, items))
        crash_point("intake.respond")
        created = [o.record for o in outcomes if o.status == "created"]
        self._count(created)
        fresh = [rec for rec in created if rec["state"] == "received"]
        if fresh:
            self.on_stored(fresh)
        return outcomes

    @inlineCallbacks
    def store_bank_batch(self, items: Sequence[q.IntakeItem]) -> Any:
        """Commit ``items`` as one bank batch (gateway/store/batches.py), or recognise its repeat;
        fires with one :class:`IntakeOutcome` each, after the commit.  Raises
        :class:`gateway.store.batches.BatchConflict` when part of it is stored and part not."""
        kind = "collection" if items and items[0].instruction.kind == "collection" else "payment"
        outcomes = yield self.db.write(lambda tx: sb.intake_bank_batch(tx, items, kind))
        crash_point("intake.respond")
        created = [o.record for o in outcomes if o.status == "created"]
        self._count(created)
        if created:
            self.on_stored(created)  # every line at once, each with its batch_ref: one bank batch
        return outcomes
