"""ISO 20022 (pain.001 / pain.002 / camt.052 / camt.053 / camt.054) as a sans-I/O codec.

:class:`Iso20022Adapter` is registered under the ``hpf_gateway.adapters`` entry point as
``iso20022``.  Every document it reads is validated against its official schema (shipped
unchanged in ``schemas/``, loaded once per thread from package data) before it is mapped.

Frame
-----
On the link: a 4-byte big-endian length of the body, then the body, UTF-8 XML (no
declaration needed), at most 4 MiB (:data:`MAX_FRAME`)::

    <hpf:Frame xmlns:hpf="urn:hpf-gateway:iso20022-link:1">
      <AppHdr xmlns="urn:iso:std:iso:20022:tech:xsd:head.001.001.02">   (Business Application Header)
        <Fr>/<To>   OrgId/Id/OrgId/Othr/Id = the sender's / receiver's node
        <BizMsgIdr> the message's seq_no (= GrpHdr/MsgId of the document)
        <MsgDefIdr> the payload: "pain.002.001.10", ... or "hpf.<Element>" for link control
        <CreDt>     creation time (the adapter's clock; not part of any neutral message)
        <Rltd>      only on link-control answers (SignOnAnswer, HeartbeatAnswer, Ack):
                    Rltd/BizMsgIdr = reply_to.  Its other mandatory elements are filled with
                    what the answerer knows (Fr/To swapped, MsgDefIdr hpf.SignOn/hpf.Heartbeat,
                    "unknown" for an Ack, CreDt our own) and are not read back.  ISO documents
                    carry reply_to themselves (pain.002 OrgnlMsgId, camt GrpHdr/OrgnlBizQry/
                    MsgId), which keeps the hot frames small; a Rltd a bank puts on a document
                    is accepted when it agrees with the document (and supplies reply_to to a
                    2009 camt, which has no OrgnlBizQry).
      </AppHdr>
      <Document xmlns="urn:iso:std:iso:20022:tech:xsd:...">...</Document>  or one link-control element
    </hpf:Frame>

One schema of ours (``_schema.py``) imports the official ones and defines ``hpf:Frame``, so
one validation pass checks the AppHdr against head.001.001.02, the Document against its own
message schema, and the link-control elements against our definitions; the codec then checks
what XSD cannot (node and serial character sets, MsgDefIdr naming the payload, AppHdr and
document ids agreeing, Rltd present exactly on link-control answers and never on pain.001 or
camt.054, which answer nothing).  A document's namespace decides its
version and schema.

Link control (namespace ``urn:hpf-gateway:iso20022-link:1``, no ISO message exists for these)::

    SignOn          <hpf:SignOn><hpf:Node>C52240</hpf:Node></hpf:SignOn>
    SignOnAnswer    <hpf:SignOnAnswer><hpf:Node/><hpf:Ok>true|false</hpf:Ok>[<hpf:Cd/>][<hpf:Txt/>]
    Heartbeat       <hpf:Heartbeat><hpf:Node/>          HeartbeatAnswer  same, with Rltd
    Ack             <hpf:Ack><hpf:Ok/>[<hpf:Cd/>][<hpf:Txt/>]   (Rltd = the acknowledged message)
    StatusQuery     <hpf:StatusQuery><hpf:Ref>reference</hpf:Ref><hpf:RefDt>YYYY-MM-DD</hpf:RefDt>
    BalanceQuery    <hpf:BalanceQuery><hpf:Acct>account</hpf:Acct>

Node: 1-35 of ``A-Z a-z 0-9 . _ -``; Cd at most 35 characters, Txt at most 500.

Messages
--------
* **Instruction** -> ``pain.001.001.09``, one CdtTrfTxInf: GrpHdr MsgId = seq_no, NbOfTxs 1,
  CtrlSum, InitgPty = sender node; PmtInf PmtInfId = seq_no, PmtMtd TRF, ReqdExctnDt/Dt =
  send_date, Dbtr/Nm = debit_name, Dbtr/Id/OrgId/Othr = unit_no (SchmeNm/Prtry ``HPFUNIT``) and
  centre_node (``HPFNODE``), DbtrAcct Othr/Id = debit_account, DbtrAgt Othr/Id = receiver node;
  PmtId InstrId = reference, EndToEndId = seq_no; PmtTpInf/LclInstrm/Prtry ``BOOK`` (same_bank)
  or ``CNAPS``; Amt/InstdAmt Ccy="CNY"; CdtrAgt ClrSysMmbId (ClrSysId/Cd ``CNAPS``, MmbId the
  12-digit code; omitted when empty, allowed only for same_bank); Cdtr/Nm; CdtrAcct Othr/Id with
  Tp/Prtry ``PERSONAL``/``CORPORATE`` (creditor_personal); Purp/Prtry = purpose; RmtInf/Ustrd =
  memo; a non-empty signature as base64 in SplmtryData/Envlp/hpf:Sgntr.  Names and memo at most
  140 characters, reference 35, accounts 1-34 of ``0-9 A-Z a-z -``.
  :meth:`Iso20022Adapter.encode_batch` puts several instructions in one pain.001 (consecutive
  ones with the same debtor, account and date share a PmtInf; MsgId ``B`` + a hash of the
  references); ``decode_all`` returns them all, ``decode`` refuses a frame holding several.
  pain.001.001.08 (the sample file) is not accepted: it is outbound for us and we ship no
  schema to validate it.  ``pain001="pain.001.001.03"`` writes the 2009 version instead (a
  plain ISODate ReqdExctnDt, no SplmtryData, so no signature).
* **Receipt / Result / NotFound** -> ``pain.002.001.10``: GrpHdr/MsgId = seq_no;
  OrgnlGrpInfAndSts/OrgnlMsgId = reply_to (OrgnlMsgNmId pain.001.001.09, or hpf.StatusQuery
  when answering a query); OrgnlPmtInfId and OrgnlEndToEndId = ref.  TxSts: Receipt ``ACSP``
  (read: RCVD ACTC ACCP ACSP ACWC ACWP ACFC PATC PDNG), success ``ACSC`` (read: ACSC ACCC),
  failure ``RJCT`` (read: RJCT CANC); StsRsnInf/Rsn/Prtry = code, AddtlInf = text in pieces of
  105 characters (further reasons from other banks are appended to the text as ``; CODE text``);
  AcctSvcrRef = host_seq_no, ClrSysRef = bank_seq_no.  **NotFound** is ``RJCT`` with
  Rsn/Prtry ``NOTFOUND`` (the ISO external code sets have no status reason for "no such
  instruction"), so a Result may not use that code.  A transaction without a status of its
  own takes its payment's, then the group's; a report without transaction detail speaks of
  the original message (ref = OrgnlMsgId).  Every message from one report has seq_no = MsgId.
* **Balance** -> ``camt.052.001.08``, one Rpt with one Bal: Tp/CdOrPrtry = status as the ISO
  balance type (Cd for four capitals such as ``ITBD``, else Prtry; must not be empty), Amt +
  CdtDbtInd = balance, Avlbty with NbOfDays 0 = available (only when it differs from balance),
  CdtLine/Amt = overdraft (not negative), Dt/DtTm = as_of (required), Acct/Nm = account_name,
  GrpHdr/OrgnlBizQry/MsgId = reply_to.  **For this adapter Balance.status is the balance type**
  (ISO has no account status in camt.052): reading a bank's ``<Bal>`` gives status ``ITAV``,
  ``CLBD``, ..., and available = the 0-day availability if any, else the amount itself.
* **Statement** -> ``camt.053.001.08`` (OPBD = opening_balance, CLBD = closing_balance, dated
  by the first and last entry, or the clock's day without entries; then the entries) when it
  has an opening or closing balance, because a camt.053 statement must have a balance; a
  statement with neither is a ``camt.052.001.08`` report with entries only.
* **Movement** -> ``camt.054.001.08``: one Ntfctn per run of consecutive entries on one account
  (so order survives); a Movement needs at least one entry.  decode gives one Movement per
  document with every entry of every Ntfctn.
* **Entry** (in all three) -> Ntry: Amt + CdtDbtInd (a debit is negative), RvslInd when a
  reversal, Sts BOOK, BookgDt/DtTm = value_date + time, ValDt/Dt = value_date, AcctSvcrRef =
  host_seq_no, BkTxCd PMNT/MCOP|MDOP/OTHR, TxDtls RltdPties (the counterparty: Cdtr of a debit,
  Dbtr of a credit; Pty/Nm and Acct Othr/Id), RltdAgts (its agent's ClrSysMmbId/MmbId, CNAPS
  when 12 digits), RmtInf/Ustrd = summary, SplmtryData/Envlp/hpf:BalAftr = balance_after;
  AddtlNtryInf = remark.  Reading banks' files: host_seq_no falls back to TxDtls/Refs/AcctSvcrRef
  then NtryRef, remark to AddtlTxInf, summary joins every Ustrd with a space, a Dt-only
  BookgDt gives time 00:00.  Only BOOK entries are movements: PDNG and FUTR ones go to the
  message's ``pending`` (kept, never booked), any other status is a problem.  A batch entry
  keeps every TxDtls in ``Entry.details`` (the entry's own fields come from the first).

Bank files (``decode_document``): camt.052/053/054 .001.02 to .001.08, pain.002 .001.03 and
.001.10, pain.001 .001.03 and .001.09, read by the elements their versions share, each validated
against its official schema where ``schemas/`` has it.  Elements out of schema order are read in
schema order and flagged; an entry or balance that breaks its schema otherwise is set apart; a
version without a shipped schema, or a document without a namespace, is read and flagged.  What
cannot be read is kept as a :class:`~adapters.base.Problem` (part, reason, bytes) on the message,
and the rest is decoded.  ``docs/protocols/iso20022.md`` has the whole mapping.

Reading camt.052/053 (any version): per Rpt/Stmt, a Statement (always for camt.053; for
camt.052 when the report has entries or no balance) whose opening/closing are the first OPBD
and CLBD amounts, followed by one Balance for every other ``<Bal>``; a camt.052 report with
balances and no entries gives one Balance per ``<Bal>``.  So every entry and every balance of
a bank's file is reported, and our own encodings decode back to exactly one message.

Values
------
* Amounts are integer minor units of their currency's own ISO 4217 exponent (:mod:`.iso4217`:
  JPY 0, CNY 2, BHD 3), and every Entry, Balance and Statement says its currency.  Links accept
  only CNY (:class:`Iso20022Adapter` default ``currencies={"CNY"}``): an entry or balance in
  another currency is kept as a problem naming it, an instruction in one refused.
  ``currencies=None`` (for an operator reading bank files) accepts any ISO 4217 currency with
  minor units.  Digits past the currency's decimals must be zero (``132.4600``).  We always
  write CNY.
* Date-times round-trip exactly: microseconds are written when not zero, an aware value keeps
  its offset (``Z`` for UTC), a naive one is written without a zone (bank local time) and read
  back naive.  Entry.time keeps its zone the same way.
* Text must fit its ISO element (Max35Text, Max140Text, ...) and carry no control characters,
  else :class:`~adapters.base.AdapterError` at encode; empty optional text omits the element.

Encoding does not re-validate by default: re-parsing and validating an encoded pain.001 costs
about five times the encode itself (measured ~70 us against ~15 us), and the encoders are built
to produce valid documents (the tests validate every generated document against the official
schemas); ``validate_outbound=True`` turns it on.  Every inbound frame and document is
validated (about 9 us of a ~50 us Result decode).
"""

from adapters.iso20022._frame import MAX_FRAME, Iso20022Framer
from adapters.iso20022._schema import LINK_NS
from adapters.iso20022.codec import Iso20022Adapter

__all__ = ["LINK_NS", "MAX_FRAME", "Iso20022Adapter", "Iso20022Framer"]
