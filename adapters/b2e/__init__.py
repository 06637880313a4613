"""b2e: a bank's own bank-enterprise direct-connect protocol (银企直连), as a sans-I/O codec.

:class:`B2eAdapter` is registered under the ``hpf_gateway.adapters`` entry point as ``b2e``.
This docstring is the protocol's reference; :mod:`adapters.b2e.codec` implements it.

Frame
=====

Six ASCII digits, zero-padded, giving the length in bytes of the body that follows (the six
digits themselves excluded), then the body: one GBK XML document::

    000412<?xml version="1.0" encoding="GBK"?>
    <B2E><head>...</head><body>...</body></B2E>

A length that is not six digits, is zero, or exceeds 999,999 (:data:`MAX_BODY`, the most
six digits say) is refused as soon as its bytes arrive, as is a body whose first byte is not
``<``; a framer that refused stays refused (the link must close).  The XML declaration must
name GBK (or an alias such as cp936); a document that is not valid GBK, carries a DOCTYPE,
DTD, entity or processing instruction, or nests deeper than five elements is refused.

Grammar
=======

``<B2E>`` holds one ``<head>`` then one ``<body>``.  Each holds *leaves*: elements named by
their tag holding only text (an empty leaf is ``<Name/>``).  The one exception is the body's
``<Entries>`` list of ``<Entry>`` elements, each holding leaves.  Leaf order is free; an
attribute, stray text, an unknown or repeated leaf, or a missing required one is refused,
naming it.  "Required" means present, perhaps empty where the table allows; optional leaves
are left out when they have no value.

Values: serials are 1-32 printable ASCII characters without space; party numbers 1-20
letters or digits; accounts 1-32 letters, digits or ``-``; amounts plain decimals with two
places, at most 99999999999.99, a leading ``-`` only where marked *signed* (no ``+``, no
leading zeros, no ``-0.00``); dates ``yyyyMMdd``; times ``HHmmss`` (bank local time); flags
``0``/``1``; text is any GBK text without control characters, up to the length given.  A
character GBK lacks is refused at encode, naming the field, never replaced.

Head
====

================  ==========  ==========================================================
leaf              in          meaning
================  ==========  ==========================================================
TransCode         all         the transaction code (below)
SerialNo          all         the sender's unique serial for this message (neutral seq_no)
ReplyTo           answers     the SerialNo of the request answered (links multiplex)
TransDate         all         date the message was written (the encoder's clock)
TransTime         all         time the message was written
SendNo            all         the sending party: the enterprise's customer number or the bank's node
RecvNo            all         the receiving party (may be empty)
RetCode           answers     ``0000`` processed; other codes below
RetMsg            answers     text for RetCode, ≤256 (may be empty)
================  ==========  ==========================================================

A head with ``RetCode`` is an answer and must have ``ReplyTo`` and ``RetMsg``; a request
head has none of the three.  An answer's TransCode is that of the request it answers.

RetCode
-------

``0000``  processed (交易成功); the body says the rest.
``2001``  PAYENT only: the SerialNo was seen before (重复交易，返回原交易结果).  Nothing was
          executed again; the body is the *original* outcome, so the answer decodes to the
          very :class:`~adapters.base.Result` (or Receipt, if still processing) the first
          answer gave.  A resent transfer is never paid twice.  A bank-side peer writes
          one with :meth:`B2eAdapter.encode_already_done`.
``2002``  QPAYENT only: no transfer with that OrigSerialNo (原交易不存在) → NotFound.
``9999``  a refused SIGNON or ACK without a code of its own (交易失败).
other     SIGNON, ACK: refused, RetCode is the reason code.  Any other transaction: the bank
          refused the request itself; there is no neutral message for that, so it decodes to
          an :class:`~adapters.base.AdapterError` naming RetCode and RetMsg.

Transactions
============

SIGNON 签到 (gateway → bank; answer SignOnAnswer)
    request:  NodeNo — the signing-on node (neutral ``node``).
    answer:   NodeNo — the answering node.  RetCode ``0000`` accepts (RetMsg is ``text``,
              and an accepting answer has no ``code``); anything else refuses with RetCode as
              ``code`` (``9999`` when none was given; ``code`` ``0000``/``9999`` cannot be
              sent) and RetMsg as ``text``.

LINETEST 线路测试 (either side; Heartbeat / HeartbeatAnswer)
    request and answer: NodeNo — the sending/answering node.  Answer RetCode is ``0000``.

PAYENT 单笔转账 (gateway → bank; Instruction)
    ============  ========  =====================================================
    TxDate        date      the instruction's send date (unchanged on resends)
    CentreNo      6 A-Z0-9  the instructing centre's node, e.g. C52240
    UnitNo        15 digit  the centre's institution code
    PayAcctNo     account   the debit account
    PayAcctName   text 60   its name, not blank
    RecAcctNo     account   the creditor's account
    RecAcctName   text 60   the creditor's name, not blank
    RecBankCode   12 digit  the creditor's CNAPS code; may be empty when SameBank is 1
    RecAcctType   flag      1 a person's account (对私), 0 a corporate one (对公)
    SameBank      flag      1 the creditor banks here (本行), 0 another bank (跨行)
    Currency      CNY       the only currency carried
    Amount        amount    > 0
    Purpose       code      01 withdrawal, 02 loan_disbursement, 03 allocation,
                            04 deposit_placement, 05 refund, 06 fee, 99 other
    Memo          text 140  附言
    CentreRef     text 60   the centre's instruction id, returned in notices
    Signature     base64    optional: the centre's detached signature (≤16 KiB)
    ============  ========  =====================================================

    The SerialNo is the bank reference: the same on every resend, and what the bank dedupes
    on (RetCode 2001 above).

PAYENT answer (bank → gateway; Receipt or Result), and QPAYENT answer under RetCode 0000
    ============  ========  =====================================================
    OrigSerialNo  serial    QPAYENT only: the transfer asked about (neutral ``ref``)
    TxStatus      S/F/P     S succeeded → Result, F failed → Result, P processing → Receipt
    HostSerialNo  serial    the bank host's serial of the execution; may be empty
    BankSerialNo  serial    the bank's serial for the request; may be empty
    ResultCode    text 32   the outcome's code (neutral ``code``), may be empty
    ResultMsg     text 256  the outcome's text (neutral ``text``), may be empty
    ============  ========  =====================================================

    A PAYENT answer's ``ref`` is its ReplyTo.  A Receipt or Result whose ``reply_to`` is its
    ``ref`` is written as a PAYENT answer (also when the bank pushes the outcome late, after a
    Receipt: the gateway ACKs it); any other as a QPAYENT answer.  Under TxStatus P the
    host serial and result leaves are informational and not kept.

QPAYENT 转账状态查询 (gateway → bank; StatusQuery → Result, Receipt or NotFound)
    request:  OrigSerialNo (serial, ``ref``), OrigTxDate (date, ``ref_date``).
    answer:   the table above under RetCode 0000; only OrigSerialNo under RetCode 2002.

QACCBAL 当日余额查询 (gateway → bank; BalanceQuery → Balance)
    request:  AcctNo (account), Currency (CNY).
    answer, and BALNTF 余额通知 (bank → gateway, pushed unasked: Balance with empty
    ``reply_to``; ACKed):
    ============  ==============  ===========================================
    AcctNo        account         the account
    AcctName      text 60         its name, may be empty
    Currency      CNY
    Balance       amount, signed  the ledger balance
    AvailBal      amount, signed  the available balance
    Overdraft     amount, signed  the overdraft limit
    AcctStatus    text 16         the bank's account status, may be empty
    AsOfDate      date            optional, with AsOfTime: when the snapshot was taken
    AsOfTime      time            optional, with AsOfDate
    ============  ==============  ===========================================

QPD 当日明细查询 (today's transactions → Statement)
    request:  AcctNo (account), Currency (CNY), QueryDate (date).  The neutral vocabulary
              has no statement request, so the codec writes none and refuses to decode one.
    answer:   AcctNo, Currency, OpenBal and CloseBal (optional signed amounts: the day's
              opening and closing balances), and ``<Entries>`` (possibly empty) whose
              entries all belong to AcctNo.

ACCTNTF 账户变动通知 (bank → gateway, pushed unasked; Movement, answered by ACK)
    ``<Entries>`` with at least one ``<Entry>``:

    ============  ==============  ===========================================
    AcctNo        account         the account moved
    HostSerialNo  serial          the bank host's serial of the movement
    Amount        amount, signed  negative: a debit from AcctNo
    ValueDate     date            value date
    TxTime        time            time of the movement
    PeerAcctNo    account         the counterparty's account, may be empty
    PeerAcctName  text 60         its name, may be empty
    PeerBankCode  12 digit        its CNAPS code, may be empty
    AfterBal      amount, signed  optional: AcctNo's balance after the movement
    Summary       text 140        摘要, may be empty
    Remark        text 140        附言, may be empty
    Reversal      flag            1 this entry reverses an earlier one (冲正)
    ============  ==============  ===========================================

ACK 通知确认 (gateway → bank; Ack; an answer only)
    Acknowledges any message the bank pushed (ACCTNTF, BALNTF, a late PAYENT answer);
    ReplyTo is its SerialNo.  Empty body; RetCode and RetMsg as for SIGNON answers.  Sent
    only once what it acknowledges is committed.
"""

from adapters.b2e._frame import HEADER_LEN, MAX_BODY, B2eFramer
from adapters.b2e.codec import (
    PURPOSE_CODES,
    RET_ALREADY_DONE,
    RET_NOT_FOUND,
    RET_OK,
    RET_REFUSED,
    B2eAdapter,
)

__all__ = ["HEADER_LEN", "MAX_BODY", "PURPOSE_CODES", "RET_ALREADY_DONE", "RET_NOT_FOUND", "RET_OK",
           "RET_REFUSED", "B2eAdapter", "B2eFramer"]
