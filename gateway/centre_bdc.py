"""Centres' existing bdc software, connecting unchanged: the gateway plays the settlement system.

A centre that speaks bdc sends each request on a TLS connection of its own (one request,
one answer, then close, as the deployed interface does) to the gateway, which answers as
node ``D00000`` would (docs/protocols/bdc.md, "The centre role").  What it takes:

- **BDC001** sign-on, **BDC002** sign-off and **SYS600** probe: answered at once (sign-on
  refused when the frame's SendNode is not the centre its certificate names);
- **BDC109** single transfer, **BDC101** single payment (principal only) and **BDC102**
  single collection (from one of the centre's own accounts a transfer, from any other payer
  a ``collection`` under its agreement ConAgrNo): turned into the very instruction
  body the HTTPS API takes and passed through the same :class:`gateway.intake.Intake`
  (validation, the centre's own debit account, register, limits, the bank's protocol),
  stored, then relayed to whichever bank holds the account.  The instruction id is
  ``<SendDate>-<SendSeqNo>``, so the centre sending the same request again (same serial,
  same date) is the same instruction, executed once.  The answer is the outcome when it is
  already final, else "not yet" (TxStatus ``2``), on which the deployed centre asks BDC110;
- **BDC110**: the stored instruction of ``<TxDate>-<TxSeqNo>``, answered as OldTxStatus ``0``
  (succeeded), ``1`` (failed or rejected) or ``2`` (anything else), or as a failed query when
  there is none;
- **BDC123**: the newest balance the account's bank reported (journal ``bank.balance``), for
  the centre's own accounts only;
- **BDC113**: the movements its bank notified (journal ``bank.movement``) on the centre's one
  account at the bank ReceiveNode names, value dates in the range.

Everything else (batches, deposits, BDC90x, codes
the codec does not know) is refused with the protocol's own answer, and every refusal is
recorded (metric, log, and a ``centre.refused`` journal event through
:mod:`gateway.refusals`, the path bank refusals take, whose ledger copy raises
``centre-message-refused``); the connection closes after its one answer.  Authorisation is the
client certificate (``hpf://centre/ID``, chained to that centre's own anchor by the listener's
TLS options): the frame's SendNode must be that centre and TxUnitNo its unit.  SBDC100
notices to the centre are :mod:`gateway.centre_notify`'s.
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from typing import Any

from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from adapters import base
from adapters.base import AdapterError
from adapters.bdc import messages as bm
from adapters.bdc.codec import _PURPOSES as PURPOSE_OF_BUS_TYPE
from gateway.centre_notify import entry_of
from gateway.intake import Intake
from gateway.model import State, format_amount, mask_numbers
from gateway.refusals import RefusalGate, centre_refusal
from gateway.store import instructions as q
from gateway.store import journal
from gateway.tls import peer_identity
from gateway.web import Problem

__all__ = ["CentreBdcFactory", "CentreDesk", "collection_body", "instruction_body", "instruction_id_for"]

log = Logger()

_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
REFUSED_CODE = "10000"  # the interface's one failure code (docs/protocols/bdc.md)
MAX_STATEMENT_DAYS = 31
MAX_STATEMENT_LINES = 10_000  # the newest movements of the account looked at for one BDC113


def instruction_id_for(seq_no: str, day: _dt.date) -> str | None:
    """The instruction id of a centre's request: ``<yyyyMMdd>-<SendSeqNo>``, or None when that
    is not a valid instruction id (a serial with other characters, or too long)."""
    candidate = f"{day:%Y%m%d}-{seq_no}"
    return candidate if _ID.fullmatch(candidate) else None


def instruction_body(ins: base.Instruction, instruction_id: str, config: Any) -> dict[str, Any]:
    """The HTTPS API's instruction body for a decoded BDC101/BDC109 request.

    A same-bank transfer may leave CrChgNo empty; the creditor's bank code is then taken from
    the register (the centre's own accounts, then the counterparties), and left empty (so the
    intake refuses it) when the register does not have it.
    """
    bank_code = ins.creditor_bank_code
    if not bank_code:
        own = config.accounts.get(ins.creditor_account)
        known = config.counterparties.get(ins.creditor_account)
        bank_code = (getattr(own, "bank_code", "") if own is not None else "") or \
            (getattr(known, "bank_code", "") if known is not None else "")
    return {
        "instruction_id": instruction_id, "kind": "transfer", "debit_account": ins.debit_account,
        "creditor": {"account": ins.creditor_account, "name": ins.creditor_name, "bank_code": bank_code},
        "amount": format_amount(ins.amount), "purpose": ins.purpose, "memo": ins.memo,
    }


def collection_body(c: bm.Collection, instruction_id: str, config: Any) -> dict[str, Any]:
    """The HTTPS API's instruction body for a decoded BDC102.

    From one of the centre's own accounts it is exactly a transfer: the payer's account
    (DeAcctNo) debited, the collecting account (CrAcctNo) credited with the register's bank
    code, the purpose from BusType.  From any other payer (an employer's contribution, a
    borrower's repayment by direct debit) it is a ``collection``: CrAcctNo credited, the payer
    debited under the multi-party agreement ConAgrNo (required by the intake); the payer's bank
    code is DeChgNo, or, for a same-bank payer that leaves it empty, the collecting account's
    registered bank code (the same bank); the purpose from BusType (``01`` contribution, ``05``
    loan repayment, anything else ``other``).  The intake validates either exactly as the HTTPS
    API's body.
    """
    own = config.accounts.get(c.credit_account)
    own_code = (getattr(own, "bank_code", "") if own is not None else "") or ""
    payer = config.accounts.get(c.debtor_account)
    if payer is not None and own is not None and payer.centre == own.centre:
        return {
            "instruction_id": instruction_id, "kind": "transfer", "debit_account": c.debtor_account,
            "creditor": {"account": c.credit_account, "name": c.credit_name, "bank_code": own_code},
            "amount": format_amount(c.amount), "purpose": PURPOSE_OF_BUS_TYPE.get(c.bus_type, "other"),
            "memo": c.memo,
        }
    return {
        "instruction_id": instruction_id, "kind": "collection", "credit_account": c.credit_account,
        "debtor": {"account": c.debtor_account, "name": c.debtor_name,
                   "bank_code": c.debtor_bank_code or (own_code if c.same_bank else ""),
                   "agreement_no": c.agreement_no},
        "amount": format_amount(c.amount), "purpose": _COLLECTION_PURPOSE.get(c.bus_type, "other"),
        "memo": c.memo,
    }


_COLLECTION_PURPOSE = {code: purpose for purpose, code in bm.COLLECTION_BUS_TYPES.items()}


class CentreDesk:
    """Answers one centre's decoded bdc request (see the module docstring)."""

    def __init__(self, intake: Intake, db: Any, *, node: str) -> None:
        self.intake, self.db, self.node = intake, db, node
        self._serial = 0
        # Answers' ReceiveSeqNo: D, the process start in seconds (8 digits), a counter (11):
        # a restart does not reuse one.
        self._prefix = f"D{int(time.time()) % 10**8:08d}"

    @property
    def config(self) -> Any:
        """The intake's configuration (a reload swaps it there)."""
        return self.intake.config

    def next_seq(self) -> str:
        self._serial += 1
        return f"{self._prefix}{self._serial % 10**11:011d}"

    async def answer(self, centre: str, message: base.Message) -> base.Message | tuple[str, str]:
        """The answer to ``message`` from ``centre``, or ``(code, text)`` for a refusal in protocol."""
        match message:
            case base.SignOn():
                ok = message.node == centre
                return base.SignOnAnswer(self.next_seq(), message.seq_no, self.node, ok=ok,
                                         code="" if ok else REFUSED_CODE,
                                         text="" if ok else "SendNode is not the certificate's centre")
            case base.Heartbeat():
                return base.HeartbeatAnswer(self.next_seq(), message.seq_no, self.node)
            case bm.SignOff():
                ok = message.node == centre
                return bm.SignOffAnswer(self.next_seq(), message.seq_no, self.node, ok=ok,
                                        code="" if ok else REFUSED_CODE,
                                        text="" if ok else "SendNode is not the certificate's centre")
            case base.Instruction():
                return await self._instruction(centre, message)
            case bm.Collection():
                return await self._collection(centre, message)
            case base.StatusQuery():
                return await self._status(centre, message)
            case base.BalanceQuery():
                return await self._balance(centre, message)
            case bm.StatementQuery():
                return await self._statement(centre, message)
        return REFUSED_CODE, f"{type(message).__name__}: not supported by the gateway's centre listener"

    async def _instruction(self, centre: str, ins: base.Instruction) -> base.Message | tuple[str, str]:
        return await self._take(centre, ins, lambda iid: instruction_body(ins, iid, self.config))

    async def _collection(self, centre: str, c: bm.Collection) -> base.Message | tuple[str, str]:
        account = self.config.accounts.get(c.credit_account)
        if account is None or account.centre != centre:
            return REFUSED_CODE, "CrAcctNo: not an account of this centre"
        return await self._take(centre, c, lambda iid: collection_body(c, iid, self.config))

    async def _take(self, centre: str, request: Any, body: Any) -> base.Message | tuple[str, str]:
        """A money movement: the same intake as ``POST /v1/instructions``, under ``<SendDate>-<SendSeqNo>``."""
        cfg = self.config.centres.get(centre)
        if request.centre_node != centre or cfg is None or request.unit_no != cfg.unit_no:
            return REFUSED_CODE, "SendNode/TxUnitNo are not the certificate's centre"
        instruction_id = instruction_id_for(request.seq_no, request.send_date)
        if instruction_id is None:
            return REFUSED_CODE, "SendSeqNo cannot name an instruction"
        try:
            item = self.intake.prepare(centre, body(instruction_id))
        except Problem as p:
            fields = "; ".join(f"{e.field}: {e.reason}" for e in p.errors)[:200]
            return REFUSED_CODE, f"{p.title}{': ' if fields else ''}{fields}"
        [outcome] = await self.intake.store([item])
        if outcome.status == "conflict":
            return REFUSED_CODE, "this SendSeqNo was used on that date with another request"
        return self._outcome(outcome.record, reply_to=request.seq_no, ref=request.seq_no)

    async def _status(self, centre: str, query: base.StatusQuery) -> base.Message:
        instruction_id = instruction_id_for(query.ref, query.ref_date)
        row = await self.db.read(q.get, centre, instruction_id) if instruction_id is not None else None
        if row is None:
            return base.NotFound(self.next_seq(), query.seq_no, query.ref)
        return self._outcome(row, reply_to=query.seq_no, ref=query.ref)

    async def _balance(self, centre: str, query: base.BalanceQuery) -> base.Message | tuple[str, str]:
        """The newest balance the account's bank reported (the relay asks every
        ``balance_query_interval``), as of when the bank gave it."""
        account = self.config.accounts.get(query.account)
        if account is None or account.centre != centre:
            return REFUSED_CODE, "AcctNo: not an account of this centre"
        snap = await self.db.read(journal.latest_balance, centre, query.account)
        if snap is None or snap.get("currency", "CNY") != "CNY":
            return REFUSED_CODE, "no balance of this account is known yet"
        as_of = _dt.datetime.fromisoformat(snap["as_of"]) if snap.get("as_of") else None
        return base.Balance(self.next_seq(), query.seq_no, query.account, int(snap["balance"]),
                            int(snap.get("available") if snap.get("available") is not None else snap["balance"]),
                            int(snap.get("overdraft") or 0), account_name=account.name,
                            status=str(snap.get("status") or ""), as_of=as_of.replace(tzinfo=None) if as_of else None)

    async def _statement(self, centre: str, query: bm.StatementQuery) -> base.Message | tuple[str, str]:
        """The movements the bank notified on the centre's account at the bank the query goes
        to (BDC113 names no account: ReceiveNode picks the bank, which must hold exactly one
        of the centre's accounts), value dates within the range."""
        cfg = self.config
        own = [n for n, a in cfg.accounts.items()
               if a.centre == centre and a.bank in cfg.banks and cfg.banks[a.bank].node == query.bank_node]
        if len(own) != 1:
            return REFUSED_CODE, ("ReceiveNode: no account of this centre at that bank" if not own else
                                  "ReceiveNode: the centre has several accounts at that bank; BDC113 names none")
        if query.date_to < query.date_from or (query.date_to - query.date_from).days > MAX_STATEMENT_DAYS:
            return REFUSED_CODE, f"TxDateBegin/TxDateEnd: a range of at most {MAX_STATEMENT_DAYS} days"
        rows = await self.db.read(journal.movements, centre, own[0], MAX_STATEMENT_LINES)
        entries = [entry_of(p) for p in rows
                   if query.date_from <= _dt.date.fromisoformat(p["value_date"]) <= query.date_to
                   and p.get("currency", "CNY") == "CNY"]
        return base.Statement(self.next_seq(), query.seq_no, own[0], tuple(entries))

    def _outcome(self, row: dict[str, Any], *, reply_to: str, ref: str) -> base.Message:
        state = State(row["state"])
        if state in (State.SUCCEEDED, State.FAILED, State.REJECTED):
            ok = state is State.SUCCEEDED
            return base.Result(self.next_seq(), reply_to, ref, ok, host_seq_no=row.get("host_seq_no") or "",
                               code="" if ok else (row.get("result_code") or "")[:32],
                               text="" if ok else (row.get("reason") or "")[:200])
        return base.Receipt(self.next_seq(), reply_to, ref)


@implementer(IHandshakeListener)
class _CentreConnection(Protocol):
    """One request of a centre on its own connection: answered on it, then closed."""

    def __init__(self, factory: CentreBdcFactory) -> None:
        self.factory = factory
        self.framer = factory.adapter.framer()
        self.centre: str | None = None
        self.taken = False
        self.timer: Any = None

    def connectionMade(self) -> None:
        self.timer = self.factory.clock.callLater(self.factory.timeout, self._abort)

    def handshakeCompleted(self) -> None:
        identity = None
        try:
            identity = peer_identity(self.transport)
        except ValueError:
            pass
        if identity is None or identity.role != "centre" or identity.name not in self.factory.config.centres:
            self.factory.metrics.security_events.labels("unauthorised_peer").inc()
            log.warn("centre_bdc.unauthorised_peer", kind="unauthorised_peer",
                     peer=identity.uri if identity is not None else "no certificate")
            self._abort()
            return
        self.centre = identity.name

    def dataReceived(self, data: bytes) -> None:
        if self.taken:
            return  # one frame per connection, as the deployed server reads: the rest is not read
        if self.centre is None:
            self._abort()  # data before the peer's identity was verified
            return
        try:
            frames = self.framer.feed(data)
        except AdapterError as e:
            self._refused(data, str(e), "bad_frame")
            self._abort()
            return
        if not frames:
            return
        self.taken = True
        frame = frames[0]
        try:
            message = self.factory.adapter.decode(frame)
        except AdapterError as e:
            self._refused(frame, str(e), "bad_message")
            # The reason in RtnMessage ("TxCode: BDC114 requests are not supported"), else 失败.
            adapter, desk = self.factory.adapter, self.factory.desk
            self._write(adapter.refusal(frame, sender=desk.node, seq_no=desk.next_seq(),
                                        text=mask_numbers(str(e))[:200])
                        or adapter.refusal(frame, sender=desk.node, seq_no=desk.next_seq()))
            return
        d = self._answer(message, frame)
        d.addErrback(lambda f: (log.failure("centre_bdc.answer_failed", f, centre=self.centre), self._abort()))

    async def _answer_coro(self, message: base.Message, frame: bytes) -> None:
        answer = await self.factory.desk.answer(self.centre or "", message)
        if isinstance(answer, tuple):
            self._refused(frame, answer[1], "refused_request")
            self._write(self.factory.adapter.refusal(frame, sender=self.factory.desk.node,
                                                     seq_no=self.factory.desk.next_seq(), text=answer[1]))
            return
        try:
            frame = self.factory.adapter.encode_answer(answer, message, sender=self.factory.desk.node,
                                                       receiver=self.centre or "")
        except AdapterError as e:  # what the store holds cannot be carried in bdc (say, a field too long)
            self._refused(frame, str(e), "unencodable_answer")
            frame = self.factory.adapter.refusal(frame, sender=self.factory.desk.node,
                                                 seq_no=self.factory.desk.next_seq(), text="the answer cannot be carried")
        self._write(frame)

    def _answer(self, message: base.Message, frame: bytes) -> Any:
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(self._answer_coro(message, frame))

    def _refused(self, frame: bytes, reason: str, kind: str) -> None:
        self.factory.refused(self.centre or "", frame, reason, kind)

    def _write(self, frame: bytes | None) -> None:
        if frame is not None and self.transport is not None and not self.transport.disconnecting:
            self.transport.write(frame)
        self._close()

    def _close(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        if self.transport is not None:
            self.transport.loseConnection()

    def _abort(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()


class CentreBdcFactory(Factory):
    """Connections of centres' bdc software (wrap it in TLS with the centres' trust).

    ``adapter`` is the canonical bdc codec (``BdcAdapter(echo=False)``); ``timeout`` bounds a
    connection, TLS, request and answer included.
    """

    def __init__(self, desk: CentreDesk, adapter: Any, metrics: Any, clock: Any, *,
                 timeout: float = 60.0) -> None:
        self.desk, self.adapter, self.metrics, self.clock = desk, adapter, metrics, clock
        self.timeout = timeout
        self._gates: dict[str, RefusalGate] = {}  # per centre: refusals still to be journalled
        self.journalling: list[Any] = []  # journal writes under way (tests wait on them)

    def refused(self, centre: str, frame: bytes, reason: str, kind: str) -> None:
        """A centre's message refused: counted (``refused{source="centre_bdc:ID",reason=kind}``),
        logged (the reason with long numbers masked), and journalled as ``centre.refused``
        (:mod:`gateway.refusals`: the path and the cap bank refusals have), whose ledger copy
        raises ``centre-message-refused``."""
        self.metrics.refused.labels(f"centre_bdc:{centre}", kind).inc()
        log.warn("centre_bdc." + kind, centre=centre, reason=mask_numbers(reason)[:500], frame_bytes=len(frame))
        if not centre:
            return
        gate = self._gates.setdefault(centre, RefusalGate())
        if not gate.admit(self.clock.seconds()):
            self.metrics.refused.labels(f"centre_bdc:{centre}", f"{kind}_unjournalled").inc()
            return
        d = self.desk.db.write(centre_refusal(centre, frame, f"{kind}: {reason}"))
        self.journalling.append(d)
        d.addBoth(lambda r: (self.journalling.remove(d), r)[1])
        d.addErrback(lambda f: log.failure("centre_bdc.journal_failed", f, centre=centre))

    @property
    def config(self) -> Any:
        return self.desk.config

    def buildProtocol(self, addr: Any) -> _CentreConnection:
        return _CentreConnection(self)
