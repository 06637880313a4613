"""A centre's batch as one bdc bank batch (BDC103 or BDC104), and its result file back as one result per line.

The relay holds each line as a neutral :class:`adapters.base.Instruction` (what a single
transfer would send) or a :class:`adapters.bdc.messages.Collection` (what a single collection
would send); :func:`payment_batch` writes transfer lines as the one BDC103 request the
deployed centre sends for a batch payment, :func:`collection_batch` collection lines as one
BDC104 batch collection (docs/protocols/bdc.md, "Batches"), and
:func:`line_results` reads a BDC108 result file as one :class:`adapters.base.Result` per
line it names, about that line's own reference.  Pure: no I/O.
"""

from __future__ import annotations

from typing import Sequence

from adapters import base
from adapters.base import AdapterError

from . import messages as bm
from .codec import _BUS_TYPES

__all__ = ["STATES", "collection_batch", "line_results", "payment_batch"]

STATES = bm.BATCH_STATES
"""BatchTxStatus to its meaning (``processing``, ``complete``, ``partial``, ``failed``)."""


def payment_batch(seq_no: str, lines: Sequence[base.Instruction]) -> bm.Batch:
    """One BDC103 paying every line from the one debit account they share.

    FileType is ``1`` when every payee is at the debiting bank, ``2`` when none is, ``3``
    mixed; each line's ``no`` is its position from 1; its RefSeqNo1 the centre's business
    serial (``reference``), its summary the memo.  Every line must share the debit account
    and the purpose (the batch has one BusType); :class:`AdapterError` otherwise.
    """
    if not lines:
        raise AdapterError("a batch holds at least one line")
    first = lines[0]
    for i, ins in enumerate(lines):
        if ins.debit_account != first.debit_account:
            raise AdapterError(f"line {i + 1}: every line of a batch pays from the same account")
        if ins.purpose != first.purpose:
            raise AdapterError(f"line {i + 1}: every line of a batch has the same purpose (one BusType)")
    bus_type = _BUS_TYPES.get(first.purpose)
    if bus_type is None:
        raise AdapterError(f"purpose: bdc has no BusType for {first.purpose!r}")
    same = {ins.same_bank for ins in lines}
    file_type = "1" if same == {True} else "2" if same == {False} else "3"
    items = tuple(bm.BatchItem(
        no=no, amount=ins.amount, account=ins.creditor_account, name=ins.creditor_name,
        summary=ins.memo, branch_code="" if file_type == "1" else ins.creditor_bank_code,
        reference=ins.reference) for no, ins in enumerate(lines, 1))
    return bm.Batch(seq_no=seq_no, send_date=first.send_date, centre_node=first.centre_node,
                    unit_no=first.unit_no, kind="payment", bus_type=bus_type, file_type=file_type,
                    account=first.debit_account, account_name=first.debit_name, items=items)


def collection_batch(seq_no: str, lines: Sequence[bm.Collection]) -> bm.Batch:
    """One BDC104 crediting the one centre account every line shares, each line debiting its payer.

    FileType ``1`` when every payer is at the collecting bank (that layout has no branch and
    no ConAgrNo: the agreement is the bank's own record), ``2`` when none is, ``3`` mixed;
    each line's ``no`` is its position from 1, its RefSeqNo the centre's business serial, its
    summary the memo, its ChgNo the payer's branch and ConAgrNo its agreement (FileType 2/3).
    Every line must share the credited account and the BusType; :class:`AdapterError` otherwise.
    """
    if not lines:
        raise AdapterError("a batch holds at least one line")
    first = lines[0]
    for i, c in enumerate(lines):
        if not isinstance(c, bm.Collection):
            raise AdapterError(f"line {i + 1}: a batch collection holds collections only")
        if c.credit_account != first.credit_account:
            raise AdapterError(f"line {i + 1}: every line of a batch collection credits the same account")
        if c.bus_type != first.bus_type:
            raise AdapterError(f"line {i + 1}: every line of a batch has the same purpose (one BusType)")
    same = {c.same_bank for c in lines}
    file_type = "1" if same == {True} else "2" if same == {False} else "3"
    items = tuple(bm.BatchItem(
        no=no, amount=c.amount, account=c.debtor_account, name=c.debtor_name, summary=c.memo,
        branch_code="" if file_type == "1" else c.debtor_bank_code,
        agreement_no="" if file_type == "1" else c.agreement_no,
        reference=c.reference) for no, c in enumerate(lines, 1))
    return bm.Batch(seq_no=seq_no, send_date=first.send_date, centre_node=first.centre_node,
                    unit_no=first.unit_no, kind="collection", bus_type=first.bus_type, file_type=file_type,
                    account=first.credit_account, account_name=first.credit_name, items=items)


def line_results(results: bm.BatchResults, refs: Sequence[str], amounts: Sequence[int]) -> list[base.Result]:
    """Each line of a result file as the Result of the line it names (``no`` is its position
    in ``refs``, from 1).  A line with a number the batch does not have, or an amount other
    than its line's, is refused (the whole file: nothing of it is taken)."""
    out = []
    for line in results.lines:
        if not 1 <= line.no <= len(refs):
            raise AdapterError(f"result file line no {line.no}: the batch has {len(refs)} lines")
        if line.amount != amounts[line.no - 1]:
            raise AdapterError(f"result file line no {line.no}: amount {line.amount} fen, the line has "
                               f"{amounts[line.no - 1]}")
        out.append(base.Result(seq_no=results.seq_no, reply_to=results.reply_to, ref=refs[line.no - 1],
                               succeeded=line.succeeded, host_seq_no=line.host_seq_no,
                               bank_seq_no=results.batch_no, code=line.code, text=line.text))
    return out
