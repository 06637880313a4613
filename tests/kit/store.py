"""For the gateway store's tests: an instruction builder, and the writes the product makes in batches
(:func:`gateway.store.instructions.apply_bank_batch`) one at a time, as the tests state their cases."""

from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

from gateway import lifecycle
from gateway.model import Creditor, Instruction
from gateway.store.db import Tx
from gateway.store.instructions import (
    BankFact,
    Movements,
    OutcomeRecorded,
    apply_bank_batch,
)

__all__ = ["make_instruction", "record_bank_outcome", "record_movements", "record_movement"]


def make_instruction(n: int, *, centre: str = "C52240", amount: int = 10_000, memo: str = "") -> Instruction:
    """Instruction ``I{n}`` of centre ``centre``: a transfer of ``amount`` fen to a registered payee."""
    return Instruction(centre, f"I{n}", "transfer", "6200001111222233",
                       Creditor("6200009999000011", "张三", "105100000017"), amount, "withdrawal", memo,
                       None, dt.date(2026, 11, 27))


def record_bank_outcome(tx: Tx, bank_id: str, ref: str, event: lifecycle.Event, *,
                        host_seq_no: str = "", bank_seq_no: str = "", code: str = "",
                        text: str = "", raw: bytes | None = None) -> OutcomeRecorded:
    """One fact (see :func:`apply_bank_batch`); a refusal is raised."""
    [answer] = apply_bank_batch(tx, bank_id, [BankFact(ref, event, host_seq_no, bank_seq_no, code, text, raw)])
    if isinstance(answer, lifecycle.IllegalTransition):
        raise answer
    return answer


def record_movements(tx: Tx, bank_id: str, entries: Sequence[tuple[dict[str, Any], str | None]], *,
                     raw: bytes | None) -> int:
    """Journal account movements unless already recorded (G3); returns how many were new.

    ``entries`` holds each neutral Entry as JSON with the centre that owns its
    account (None for an account on no register).
    """
    [new] = apply_bank_batch(tx, bank_id, [Movements(tuple(entries), raw)])
    return int(new)


def record_movement(tx: Tx, bank_id: str, entry: dict[str, Any], *, account_centre: str | None,
                    raw: bytes | None) -> bool:
    """Journal one account movement unless it was recorded before (see :func:`record_movements`)."""
    return record_movements(tx, bank_id, [(entry, account_centre)], raw=raw) == 1
