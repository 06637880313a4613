"""bdc messages the neutral vocabulary (:mod:`adapters.base`) has no place for.

Sign-off (BDC002), single collection (BDC102), batch payment and collection (BDC103/104)
with their result query (BDC107) and result file (BDC108), and the branch-code query
(BDC112).  The codec (:class:`adapters.bdc.BdcAdapter`) writes and reads them like the
neutral messages; docs/protocols/bdc.md lists their fields and what is wired beyond the
codec.  Amounts are integer fen.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

__all__ = ["SignOff", "SignOffAnswer", "Collection", "BatchItem", "Batch", "BatchAccepted",
           "BatchQuery", "BatchStatus", "BATCH_STATES", "BatchResultQuery", "BatchLine",
           "BatchResults", "BranchQuery", "Branch", "Branches", "StatementQuery", "BUS_TYPES", "COLLECTION_BUS_TYPES", "REQUESTS",
           "ANSWERS"]

BUS_TYPES = frozenset([f"{n:02d}" for n in range(1, 21)] + ["2713", "2715"])
"""BusType codes of the interface (01-20, and the centres' local 2713 and 2715)."""

COLLECTION_BUS_TYPES = {"contribution": "01", "loan_repayment": "05", "other": "20"}
"""A collection's purpose (gateway.model.COLLECTION_PURPOSES) to its BusType: ``01``
contribution/back-pay [汇补缴], ``05`` loan deduction [贷款扣款] (a borrower's repayment by
direct debit), ``20`` other business."""


@dataclass(frozen=True)
class SignOff:
    """BDC002: end the session (the bank forgets the session key)."""

    seq_no: str
    node: str


@dataclass(frozen=True)
class SignOffAnswer:
    seq_no: str
    reply_to: str
    node: str
    ok: bool = True
    code: str = ""
    text: str = ""


@dataclass(frozen=True)
class Collection:
    """BDC102 single collection: debit a payer's account, credit the centre's.

    Answered like a single transfer (Receipt / Result: HostStatus, HostSeqNo).
    """

    seq_no: str
    send_date: _dt.date
    centre_node: str
    unit_no: str
    credit_account: str       # the centre's account (CrAcctNo)
    credit_name: str
    debtor_account: str       # the payer (DeAcctNo)
    debtor_name: str
    debtor_personal: bool     # DeAcctClass 1 (person) or 2 (corporate)
    same_bank: bool           # SettleType 1 / DeBankClass 0
    amount: int
    bus_type: str             # BusType code, e.g. "01" contribution
    debtor_bank_code: str = ""  # DeChgNo, 12 digits; empty for a same-bank payer
    debtor_bank_name: str = ""
    agreement_no: str = ""    # ConAgrNo, the multi-party agreement
    memo: str = ""            # Remark
    reference: str = ""       # the centre's business serial: Summary and RefSeqNo


@dataclass(frozen=True)
class BatchItem:
    """One line of a batch file (docs/protocols/bdc.md, "Batches").

    ``account``/``name`` are the payee of a payment or the payer of a collection;
    ``branch_code`` the 12-digit branch of that account (needed when the batch is not all
    same-bank), ``bank_branch_code`` its bank's branch code; ``agreement_no`` only for
    collections, ``reference2`` only for payments.
    """

    no: int
    amount: int
    account: str
    name: str
    summary: str = ""
    branch_code: str = ""
    bank_branch_code: str = ""
    address: str = ""
    agreement_no: str = ""
    ref_account: str = ""
    reference: str = ""
    reference2: str = ""


@dataclass(frozen=True)
class Batch:
    """BDC103 (``kind`` "payment") or BDC104 ("collection"): one file of lines, one bank batch.

    ``account`` is the centre's: debited by a payment, credited by a collection.
    ``file_type`` is 1 (all same-bank), 2 (all other-bank) or 3 (mixed).
    """

    seq_no: str
    send_date: _dt.date
    centre_node: str
    unit_no: str
    kind: str
    bus_type: str
    file_type: str
    account: str
    account_name: str
    items: tuple[BatchItem, ...]
    memo: str = ""
    project_no: str = ""

    @property
    def total(self) -> int:
        return sum(i.amount for i in self.items)


@dataclass(frozen=True)
class BatchAccepted:
    """The answer to a batch: the bank's BatchNo, the key for BDC107/108.

    ``ok`` False (TxStatus not 0) is, as for single items, not a final failure: the deployed
    centre asks BDC110, whose answer carries OldBatchNo.
    """

    seq_no: str
    reply_to: str
    batch_no: str
    ok: bool = True
    code: str = ""
    text: str = ""


@dataclass(frozen=True)
class BatchQuery:
    """BDC107: how far a batch is."""

    seq_no: str
    batch_no: str


BATCH_STATES = {"0": "processing", "1": "complete", "2": "partial", "3": "failed"}
"""BatchTxStatus to its meaning."""


@dataclass(frozen=True)
class BatchStatus:
    """The answer to BDC107.  ``state`` is a value of :data:`BATCH_STATES`; ``summary`` is
    the failure reason when ``state`` is "failed"."""

    seq_no: str
    reply_to: str
    batch_no: str
    state: str
    batch_date: _dt.date
    bus_type: str
    total_num: int
    total_amount: int
    succeeded_num: int
    succeeded_amount: int
    send_seq_no: str = ""
    branch_no: str = ""
    bank_operator: str = ""
    project_no: str = ""
    summary: str = ""
    remark: str = ""


@dataclass(frozen=True)
class BatchResultQuery:
    """BDC108: the result file of a batch (``sub_code`` TxCodeSub: only 3 is known)."""

    seq_no: str
    batch_no: str
    sub_code: str = "3"


@dataclass(frozen=True)
class BatchLine:
    """One item's result in a BDC108 result file; ``no`` links it to the batch line."""

    no: int
    amount: int
    debit_account: str
    debit_name: str
    credit_account: str
    credit_name: str
    code: str                 # rtnCode: 00000 is success
    text: str = ""
    host_date: _dt.date | None = None
    host_seq_no: str = ""
    receipt_no: str = ""

    @property
    def succeeded(self) -> bool:
        return self.code == "00000"


@dataclass(frozen=True)
class BatchResults:
    """The answer to BDC108: the result file's summary line and its item lines."""

    seq_no: str
    reply_to: str
    batch_no: str
    date: _dt.date
    unit_no: str
    total_num: int
    total_amount: int
    succeeded_num: int
    succeeded_amount: int
    failed_num: int
    failed_amount: int
    lines: tuple[BatchLine, ...]
    summary: str = ""


@dataclass(frozen=True)
class BranchQuery:
    """BDC112: the branch codes of one bank (3-digit code) in some areas (4-digit codes)."""

    seq_no: str
    bank_code: str
    areas: tuple[str, ...]


@dataclass(frozen=True)
class Branch:
    code: str                 # ChgNo, 12 digits
    name: str


@dataclass(frozen=True)
class Branches:
    seq_no: str
    reply_to: str
    branches: tuple[Branch, ...]


@dataclass(frozen=True)
class StatementQuery:
    """BDC113: an account's movements between two dates.  The request names no account: the
    head's ReceiveNode (the bank, here ``bank_node``) and CustNo select it (inferred); the
    answer is a :class:`adapters.base.Statement`."""

    seq_no: str
    date_from: _dt.date
    date_to: _dt.date
    bank_node: str = ""


REQUESTS = (SignOff, Collection, Batch, BatchQuery, BatchResultQuery, BranchQuery, StatementQuery)
ANSWERS = (SignOffAnswer, BatchAccepted, BatchStatus, BatchResults, Branches)
