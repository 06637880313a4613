"""The relay toward each bank: a Twisted driver around the pure :class:`~gateway.outbox.Outbox`.

One :class:`BankDispatcher` per bank feeds its outbox every input (a commit
of new instructions, the link going up or down, a claim committed, a bank
message, a deadline reached) and carries out the effects it returns: the
fenced claim of sends in the store, frames on the link, bank facts recorded
in group commits and acknowledged after them (G1).  The outbox holds the
rules (G2, G6, the window, commit order); the driver holds the I/O, the
metrics and the one timer for the outbox's next deadline.  Nothing runs on a
timer when nothing is due; only with several nodes on PostgreSQL does the
owner also poll the store for instructions another node's intake committed.
It knows nothing of sockets: a link session hands it decoded messages and
gives it a ``send`` callable.  (Over 600 lines because the dispatcher also
records and acknowledges what concerns accounts rather than references:
movements, statements, balances; and it carries a bank batch's effects, whose
own parts live in gateway/relay_batch.py, through the same ``_run`` as a
single instruction's, so that one code path keeps G1/G2 for both.)
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
import json
from itertools import count
from typing import Any, Callable, Iterable, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from adapters import base as msg
from adapters.bdc import messages as bm
from gateway import lifecycle
from gateway import relay_batch as rb
from gateway.clock import business_date
from gateway.config import BankConfig, GatewayConfig, StatusPolicy, Timeouts
from gateway.faults import armed, crash_point
from gateway.metrics import GatewayMetrics
from gateway.model import FINAL_STATES, State
from gateway.outbox import (Ack, Claim, Effect, Foreign, Open, Outbox, Outcome, Phase, Query, Record, Schedule,
                            Send)
from gateway.refusals import REFUSED_JOURNAL_CAP, REFUSED_JOURNAL_WINDOW, RefusalGate, refused_event  # noqa: F401 (the caps, re-exported)
from gateway.store import instructions as q
from gateway.store import leases
from gateway.store.db import Database

__all__ = ["LinkSession", "BankDispatcher", "Relay", "schedule_for"]

log = Logger()

_CREDITOR_IS_PERSON = {"withdrawal", "refund"}
LOAD_RETRY = 1.0  # seconds between tries of a load the store failed (see BankDispatcher.load)
SWEEP_EVERY = 30  # polls between full sweeps of received instructions (see BankDispatcher.poll)


class LinkSession(Protocol):
    """What a dispatcher needs of a signed-on link."""

    def send(self, message: msg.Message) -> None: ...


_OPEN_KEYS = ("bank_ref", "centre_id", "instruction_id", "debit_account", "amount", "created_us")


def _open(row: dict[str, Any]) -> dict[str, Any]:
    """What a dispatcher keeps of an open instruction: what sending it (again) needs.

    Every open instruction stays in memory until it settles, so the copy is
    slim: none of the columns that only the store and the API use, and the
    body as UTF-8 bytes (a str holding one Chinese character takes two bytes
    for each of its mostly ASCII characters).
    """
    slim = {k: row[k] for k in _OPEN_KEYS}
    slim["body"] = row["body"].encode("utf-8")
    return slim


def schedule_for(bank: BankConfig, timeouts: Timeouts) -> Schedule:
    """The outbox timers of ``bank``: its own status cadence where it has one, else ``[timeouts]``."""
    p = bank.status or StatusPolicy()
    return Schedule(
        receipt_timeout=timeouts.receipt_timeout,
        give_up_unconfirmed=timeouts.result_timeout,
        first_query_after=timeouts.result_timeout if p.first_after is None else p.first_after,
        query_interval=timeouts.status_query_interval if p.interval is None else p.interval,
        query_backoff=p.backoff,
        max_query_interval=p.max_interval,
        query_attempts=timeouts.status_query_attempts if p.attempts is None else p.attempts,
        give_up_after=p.give_up_after,
        ask_before_resend=p.before_resend,
    )


class BankDispatcher:
    """The relay for one bank: the Twisted driver of its :class:`~gateway.outbox.Outbox`.

    Every input goes to the outbox with the time; every effect it returns is
    carried out here against the store and the link; then one timer is armed
    for the outbox's next deadline, and none when it has none (an idle relay
    sleeps).
    """

    def __init__(self, bank: BankConfig, config: GatewayConfig, db: Database, clock: IReactorTime,
                 metrics: GatewayMetrics) -> None:
        self._bank = bank
        self.config = config
        self._timeouts = config.timeouts
        self.db = db
        self.clock = clock
        self.metrics = metrics
        self.session: LinkSession | None = None
        self.poll_mark = 0  # the highest row id seen by poll()
        self._polls = 0
        self._seq = count(1)
        self._seq_prefix = f"G{int(time.time()) % 10**8:08d}"  # wall time: unique across restarts
        self._loaded = False
        self.outbox = self._fresh_outbox()
        self._timer: Any = None  # the one IDelayedCall for outbox.next_deadline()
        self._queue_gauge = metrics.queue_depth.labels(bank.id)
        self._awaiting_gauge = metrics.awaiting_result.labels(bank.id)
        self.down_since: float | None = clock.seconds()  # None while a session is up
        self._batch: list[tuple[Any, Callable[[Any], None]]] = []  # bank facts of this reactor turn
        # Ownership: active unless a lease keeper says otherwise (single-node tests).
        self.active = True
        self.owner: str | None = None
        self.lease_name = f"bank:{bank.id}"
        self.epoch: int | None = None
        self.on_fenced: Callable[[], None] | None = None
        # Whether the lease was renewed recently enough to act on it (set by the keeper).
        self.lease_fresh: Callable[[], bool] = lambda: True
        # Signs every instruction sent ([banks.X] signature_alg; set by gateway.service).
        self.instruction_signer: Any = None
        self._refusals = RefusalGate()  # how many refused messages may still be journalled

    def _fresh_outbox(self) -> Outbox:
        return Outbox(self._bank.window, schedule_for(self._bank, self._timeouts), self.next_seq)

    # A SIGHUP reload swaps the bank's and the timers' config: the outbox follows.
    @property
    def bank(self) -> BankConfig:
        return self._bank

    @bank.setter
    def bank(self, bank: BankConfig) -> None:
        self._bank = bank
        self.outbox.window = bank.window
        self.outbox.schedule = schedule_for(bank, self._timeouts)

    @property
    def timeouts(self) -> Timeouts:
        return self._timeouts

    @timeouts.setter
    def timeouts(self, timeouts: Timeouts) -> None:
        self._timeouts = timeouts
        self.outbox.schedule = schedule_for(self._bank, timeouts)

    # -- carrying effects out ------------------------------------------------

    def _run(self, effects: list[Effect]) -> None:
        """Carry out the outbox's effects in order, then arm the timer for its next deadline."""
        outbox = self.outbox
        link = outbox.link
        sent = 0
        for effect in effects:
            if isinstance(effect, (Send, Query)) and (self.session is None or outbox.link != link):
                # A send failed so that the link went down (or was replaced) meanwhile: the
                # outbox has queued these again for the next session.
                continue
            match effect:
                case Claim():
                    self._claim(outbox, effect)
                case Send(ref=ref, payload=row, resend=resend) if rb.is_batch(row):
                    try:
                        request = rb.batch_request(self, row)  # checked encodable at intake
                    except msg.AdapterError as e:  # (a reload changed the register meanwhile)
                        log.error("link.unencodable", bank=self._bank.id, kind="Batch", ref=ref, error=str(e))
                        continue  # never confirmed: asked about, then in_doubt (G6)
                    self.session.send(request)
                    sent += 1
                    if resend:
                        self.metrics.resends.labels(self._bank.id).inc()
                case Query(payload=row) if rb.is_batch(row):
                    self.session.send(rb.batch_inquiry(effect))
                    self.metrics.status_queries.labels(self._bank.id).inc()
                case Send(ref=ref, payload=row, resend=resend):
                    self.session.send(self._instruction(row))
                    sent += 1
                    if resend:
                        self.metrics.resends.labels(self._bank.id).inc()
                case Query(ref=ref, seq=seq, payload=row):
                    self.session.send(msg.StatusQuery(seq, ref, business_date(row["created_us"])))
                    self.metrics.status_queries.labels(self._bank.id).inc()
                case Record():
                    self._record(self._fact(effect), lambda answer, r=effect: self._answered(outbox, r, answer))
                case Ack(message=m, ok=ok, code=code, text=text):
                    self._ack(m, ok, code, text)
                case Foreign(message=m, ref=ref):
                    self._foreign(m, "reference", ref)
        if sent and armed("bank.sent"):
            # Let the reactor flush the frames to the socket first: "sent" means on the wire.
            self.clock.callLater(0.05, crash_point, "bank.sent")
        self._gauges()
        self._arm()

    def _arm(self) -> None:
        """One timer, for the outbox's next deadline; none at all when nothing is due."""
        when = self.outbox.next_deadline() if self.active else None
        timer = self._timer
        if when is None:
            if timer is not None and timer.active():
                timer.cancel()
            self._timer = None
            return
        delay = max(0.0, when - self.clock.seconds())
        if timer is not None and timer.active():
            if timer.getTime() > when:
                timer.reset(delay)
            return  # an earlier wake finds nothing due and re-arms
        self._timer = self.clock.callLater(delay, self._wake)

    def _wake(self) -> None:
        self._timer = None
        try:
            self.tick()
        except Exception:
            log.failure("relay.tick_failed", bank=self._bank.id)
            # Not at once: a deadline that keeps failing must not spin the reactor.
            self._timer = self.clock.callLater(1.0, self._wake)

    def _claim(self, outbox: Outbox, claim: Claim) -> None:
        """The fenced write: record the sends, checking the lease in the same transaction.

        Only after it commits do the frames go out, so a node that lost the
        lease (paused, partitioned) can never send again.
        """
        session, epoch = self.session, self.epoch
        lease = (self.lease_name, self.owner, epoch) if self.owner is not None else None
        refs = rb.claim_refs(outbox, claim.refs)  # a batch's send is a send of each of its lines
        d = self.db.write(lambda tx: q.record_sent(tx, self._bank.id, refs, lease=lease))

        def claimed(changed: int) -> None:
            if outbox is not self.outbox:
                return  # deactivated meanwhile: that outbox is gone
            now = self.clock.seconds()
            if session is not self.session or epoch != self.epoch or not self.active or not self.lease_fresh():
                # The link changed while the claim committed, or this node cannot be
                # sure it still owns it (paused past its renewal): send nothing.
                self._run(outbox.claim_failed(claim, now))
                return
            if changed:
                self.metrics.instructions.labels(self._bank.id, State.SENT.value).inc(changed)
            self._run(outbox.claimed(claim, now))

        def failed(failure: Any) -> None:
            if failure.check(leases.Fenced):
                self.metrics.security_events.labels("lease_fenced").inc()
                log.error("relay.fenced", bank=self._bank.id, owner=self.owner, epoch=self.epoch,
                          error=failure.getErrorMessage())
                if self.on_fenced is not None:
                    self.on_fenced()
            else:
                log.failure("relay.claim_failed", failure, bank=self._bank.id)  # retried shortly
            if outbox is self.outbox:
                self._run(outbox.claim_failed(claim, self.clock.seconds()))

        d.addCallbacks(claimed, failed)

    def _fact(self, r: Record) -> q.BankFact:
        m = r.message
        if isinstance(m, msg.Result):
            return q.BankFact(r.ref, r.event, raw=r.raw, host_seq_no=m.host_seq_no, bank_seq_no=m.bank_seq_no,
                              code=m.code, text=m.text)
        if isinstance(m, msg.Receipt):
            return q.BankFact(r.ref, r.event, raw=r.raw, bank_seq_no=m.bank_seq_no)
        return q.BankFact(r.ref, r.event, raw=r.raw, text=r.text, bank_seq_no=r.bank_seq_no)

    def _answered(self, outbox: Outbox, r: Record, answer: Any) -> None:
        """A recorded fact's answer from the store, told to the outbox (which then may acknowledge)."""
        state = None
        if isinstance(answer, lifecycle.ConflictingOutcome):
            self.metrics.refused.labels(f"bank:{self._bank.id}", "conflicting_outcome").inc()
            log.error("bank.conflicting_outcome", bank=self._bank.id, ref=r.ref, error=str(answer))
            outcome = Outcome.CONFLICT
        elif isinstance(answer, lifecycle.IllegalTransition):
            log.warn("bank.out_of_order", bank=self._bank.id, ref=r.ref, error=str(answer))
            outcome = Outcome.ILLEGAL
        elif not answer.known:
            outcome = Outcome.UNKNOWN
        else:
            outcome = Outcome.CHANGED if answer.changed else Outcome.SAME
            state = answer.record["state"] if answer.record else None
            if answer.changed:
                self._settled(answer.record)
        if outbox is self.outbox:  # else deactivated meanwhile: that link and its session are gone
            self._run(outbox.recorded(r, outcome, state))

    # -- feeding -------------------------------------------------------------

    def load(self) -> Deferred[None]:
        """Take over every open instruction of this bank from the store (start-up, takeover).

        A load the store fails (the database unreachable at a takeover) is tried again every
        :data:`LOAD_RETRY` seconds while this node still owns the link at the same epoch: an
        owner must not sit on an empty outbox while its instructions wait in the store.
        """
        d = self.db.read(rb.load_all, self._bank.id)
        epoch = self.epoch

        def loaded(found: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> None:
            rows, batches = found
            items = self._batch_opens(batches)
            for row in rows:
                self.poll_mark = max(self.poll_mark, row["id"])
                items.append(Open(row["bank_ref"], _open(row), accepted=row["state"] == State.ACCEPTED.value,
                                  sends=row.get("sends") or 0))
            self._loaded = True
            log.info("relay.loaded", bank=self._bank.id, open=len(rows))
            self._run(self.outbox.loaded(items, self.clock.seconds()))

        def failed(failure: Any) -> None:
            log.failure("relay.load_failed", failure, bank=self._bank.id)
            if self.active:
                self.clock.callLater(LOAD_RETRY, lambda: self.load() if (
                    self.active and self.epoch == epoch and not self._loaded) else None)

        return d.addCallbacks(loaded, failed)

    def enqueue(self, rows: Iterable[dict[str, Any]]) -> None:
        """New instructions committed for this bank: queue them in commit order (and send at once).

        On a node that does not own the link this does nothing: the owner picks
        them up from the store (:meth:`poll`).
        """
        if not self.active:
            return
        items: list[Open] = []
        batches: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            if row.get("batch_ref"):  # a line of a bank batch the intake stored (all lines come together)
                batches.setdefault(row["batch_ref"], []).append(row)
            else:
                items.append(Open(row["bank_ref"], _open(row), sends=row.get("sends") or 0))
        items += self._batch_opens([{"batch_ref": ref, "lines": lines} for ref, lines in batches.items()])
        self._run(self.outbox.committed(items, self.clock.seconds()))

    def _batch_opens(self, batches: list[dict[str, Any]]) -> list[Open]:
        out = []
        for batch in batches:
            for row in batch["lines"]:
                self.poll_mark = max(self.poll_mark, row["id"])
            item = rb.batch_open(batch, _open)
            if item is not None:
                out.append(item)
        return out

    def poll(self) -> Deferred[None]:
        """Pick up instructions another node's intake committed for this bank.

        Rows after the highest id polled so far, and every ``SWEEP_EVERY`` polls
        all received rows: with several nodes, ids are not committed in order,
        so a row with a lower id may become visible after a higher one.
        """
        self._polls += 1
        sweep = self._polls % SWEEP_EVERY == 0
        d = self.db.read(rb.poll_new, self._bank.id, 0 if sweep else self.poll_mark, 5000)

        def found(new: tuple[list[dict[str, Any]], list[dict[str, Any]], int]) -> None:
            rows, batches, top = new
            self.poll_mark = max(self.poll_mark, top)
            self.enqueue(rows)
            if batches and self.active:
                self._run(self.outbox.committed(self._batch_opens(batches), self.clock.seconds()))

        return d.addCallback(found)

    # -- the link ------------------------------------------------------------

    def link_up(self, session: LinkSession) -> None:
        """A session signed on: everything without a receipt goes again, same reference."""
        self.session = session
        self.down_since = None
        self.metrics.link_up.labels(self._bank.id).set(1)
        log.info("link.up", bank=self._bank.id, pending=self.outbox.unconfirmed)
        # The session opens with every account's balance, ahead of what it sends: each movement
        # then has a snapshot before it, which the ledger's balance-break rule needs to judge it.
        self.query_balances()
        self._run(self.outbox.link_up(self.clock.seconds()))

    def link_down(self, session: LinkSession) -> None:
        if session is not self.session:
            return
        self.session = None
        self.down_since = self.clock.seconds()
        self.metrics.link_up.labels(self._bank.id).set(0)
        log.warn("link.down", bank=self._bank.id, in_flight=self.in_flight, pending=self.outbox.unconfirmed)
        self._run(self.outbox.link_down(self.clock.seconds()))

    def next_seq(self) -> str:
        """A unique serial for the gateway's own control messages on this link."""
        return f"{self._seq_prefix}{next(self._seq):011d}"

    def counts(self) -> dict[str, int]:
        """Instructions held, by where they stand (for /status and systemd's STATUS=)."""
        c = self.outbox.counts
        return {"queued": c[Phase.QUEUED], "awaiting_receipt": self.in_flight,
                "awaiting_result": c[Phase.AWAITING_RESULT]}

    @property
    def in_flight(self) -> int:
        """Instructions on the wire awaiting their receipt (or whose send is being recorded)."""
        c = self.outbox.counts
        return c[Phase.AWAITING_RECEIPT] + c[Phase.CLAIMING] + c[Phase.ASKING]

    # -- ownership -----------------------------------------------------------

    def activate(self, owner: str, lease_name: str, epoch: int) -> Deferred[None]:
        """This node now owns the bank's link (lease ``lease_name`` at ``epoch``): take its work over."""
        self.active = True
        self.owner, self.lease_name, self.epoch = owner, lease_name, epoch
        log.info("relay.owner", bank=self._bank.id, owner=owner, epoch=epoch)
        return self.load()

    def deactivate(self) -> None:
        """Another node owns the link now: forget everything held in memory (the store has it all)."""
        self.active = False
        self.epoch = None
        self.session = None
        self.outbox = self._fresh_outbox()
        self._loaded = False
        self.metrics.link_up.labels(self._bank.id).set(0)
        self._gauges()
        self._arm()

    def stop(self) -> None:
        """Cancel the timer (the service stops)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def line_message(self, row: dict[str, Any], *, in_batch: bool = False) -> Any:
        """The message of stored instruction ``row`` (unsigned): what a single send writes, and
        what a bank batch writes as one of its lines.  A transfer is a neutral
        :class:`adapters.base.Instruction`; a collection a bdc :class:`adapters.bdc.messages.Collection`."""
        body = json.loads(row["body"])
        if body.get("kind") == "collection":
            d = body["debtor"]
            return self.collection(ref=row["bank_ref"], centre_id=row["centre_id"],
                                   instruction_id=row["instruction_id"], credit_account=row["debit_account"],
                                   amount=row["amount"],
                                   debtor=(d["account"], d["name"], d["bank_code"], d["agreement_no"]),
                                   purpose=body["purpose"], memo=body.get("memo") or "",
                                   created=business_date(row["created_us"]), in_batch=in_batch)
        creditor = body["creditor"]
        created = business_date(row["created_us"])
        return self.message(ref=row["bank_ref"], centre_id=row["centre_id"], instruction_id=row["instruction_id"],
                            debit_account=row["debit_account"], amount=row["amount"],
                            creditor=(creditor["account"], creditor["name"], creditor["bank_code"]),
                            purpose=body["purpose"], memo=body.get("memo") or "", created=created)

    def _instruction(self, row: dict[str, Any]) -> msg.Instruction:
        """The message that sends stored instruction ``row``, signed when the bank wants signatures."""
        ins = self.line_message(row)
        # Non-repudiation: the signature covers gateway.signing.instruction_signing_bytes(ins).
        # A collection (BDC102) has no place for a signature.
        if self.instruction_signer is None or not isinstance(ins, msg.Instruction):
            return ins
        return dataclasses.replace(ins, signature=self.instruction_signer.sign(ins))

    def message(self, *, ref: str, centre_id: str, instruction_id: str, debit_account: str, amount: int,
                creditor: tuple[str, str, str], purpose: str, memo: str, created: _dt.date) -> msg.Instruction:
        """The neutral message for one instruction (unsigned): what every adapter encodes."""
        centre = self.config.centres[centre_id]
        account = self.config.accounts.get(debit_account)
        c_account, c_name, c_bank = creditor
        return msg.Instruction(
            seq_no=ref, send_date=created, centre_node=centre.id, unit_no=centre.unit_no,
            debit_account=debit_account, debit_name=account.name if account else "",
            creditor_account=c_account, creditor_name=c_name, creditor_bank_code=c_bank,
            creditor_personal=purpose in _CREDITOR_IS_PERSON,
            same_bank=c_bank[:3] == self.bank.node[:3],
            amount=amount, purpose=purpose, memo=memo, reference=instruction_id,
        )

    def collection(self, *, ref: str, centre_id: str, instruction_id: str, credit_account: str, amount: int,
                   debtor: tuple[str, str, str, str], purpose: str, memo: str,
                   created: _dt.date, in_batch: bool = False) -> bm.Collection:
        """The BDC102 message for one collection: ``debtor`` (account, name, bank code,
        agreement number) debited, the centre's ``credit_account`` credited under its registered
        name.  The payer of a loan repayment is a person, of anything else a corporate
        (DeAcctClass); same bank when the payer's bank code is of the bank's own (as for a
        transfer's creditor).  A single BDC102 leaves a same-bank payer's DeChgNo empty, as the
        deployed centre does; a batch line (``in_batch``) keeps it, for a mixed file's ChgNo."""
        centre = self.config.centres[centre_id]
        account = self.config.accounts.get(credit_account)
        d_account, d_name, d_bank, agreement = debtor
        same = d_bank[:3] == self.bank.node[:3]
        return bm.Collection(
            seq_no=ref, send_date=created, centre_node=centre.id, unit_no=centre.unit_no,
            credit_account=credit_account, credit_name=account.name if account else "",
            debtor_account=d_account, debtor_name=d_name, debtor_personal=purpose == "loan_repayment",
            same_bank=same, amount=amount, bus_type=bm.COLLECTION_BUS_TYPES.get(purpose, ""),
            debtor_bank_code="" if same and not in_batch else d_bank, agreement_no=agreement, memo=memo,
            reference=instruction_id)

    # -- what the bank says --------------------------------------------------

    def handle(self, message: msg.Message, raw: bytes) -> None:
        """One decoded message from the bank (link control is handled by the session)."""
        match message:
            case msg.Receipt() | msg.Result() | msg.NotFound():
                self._on_instruction_news(message, raw)
            case bm.BatchAccepted() | bm.BatchStatus() | bm.BatchResults():
                if isinstance(message, bm.BatchAccepted):
                    crash_point("bank.batch_answer")
                self._batch_evidence(message, raw)
                self._run(rb.on_answer(self.outbox, message, self.clock.seconds(), self.bank.id,
                                       lambda reason: self.refused(raw, reason)))
            case msg.Movement():
                self._on_movement(message, raw)
            case msg.Balance():
                self._on_balance(message, raw)
            case msg.Statement():
                self._on_statement(message, raw)
            case _:
                self.metrics.refused.labels(f"bank:{self.bank.id}", "unexpected_message").inc()
                log.warn("bank.unexpected_message", bank=self.bank.id, kind=type(message).__name__)

    def _batch_evidence(self, message: Any, raw: bytes) -> None:
        """Journal the exchange that took a batch or gave its result file (``bank.file``, in)."""
        f = rb.evidence(self.outbox, message, raw)
        if f is not None:
            from gateway.store.bank_files import record_bank_file

            self.db.write(lambda tx: record_bank_file(tx, self._bank.id, f, "in")).addErrback(
                lambda failure: log.failure("relay.evidence_failed", failure, bank=self._bank.id))

    def refused(self, frame: bytes, reason: str) -> None:
        """A whole message from the bank that its link refused: journalled as ``bank.refused``.

        The copy raises the ledger's ``bank-message-refused`` alert.  The reason is kept with
        every long number masked (it may quote a field); the bytes are kept when short enough
        (:data:`gateway.copies.MAX_REFUSED_RAW`), their SHA-256 and size always.  At most
        :data:`gateway.refusals.REFUSED_JOURNAL_CAP` are journalled per bank per window
        seconds; the rest are counted as ``refused{reason=bad_message_unjournalled}``.
        """
        if not self._refusals.admit(self.clock.seconds()):
            # A bank sending bad messages by the thousand: each is still refused, counted and
            # logged, but the journal (and the ledger's alerts) are not flooded with copies.
            self.metrics.refused.labels(f"bank:{self.bank.id}", "bad_message_unjournalled").inc()
            return
        payload, raw = refused_event(frame, reason)
        self._record(q.RefusedMessage(payload, raw), lambda _: None)

    def _ack(self, message: msg.Message, ok: bool = True, code: str = "", text: str = "") -> None:
        if self.session is not None:
            self.session.send(msg.Ack(self.next_seq(), message.seq_no, ok, code, text))

    def _foreign(self, message: msg.Message, what: str, value: str) -> None:
        """A bank reported on something that is not its own: refuse, log, count, change nothing."""
        self.metrics.refused.labels(f"bank:{self.bank.id}", f"foreign_{what}").inc()
        self.metrics.security_events.labels(f"bank_foreign_{what}").inc()
        log.warn("bank.foreign_" + what, bank=self.bank.id, value=value if what != "account" else None,
                 account=value if what == "account" else None)
        self._ack(message, ok=False, code="E403", text=f"not an {what} of this bank")

    def _on_instruction_news(self, m: msg.Message, raw: bytes) -> None:
        """A receipt, result or status answer: the outbox decides what it means and what to record."""
        if isinstance(m, msg.Result):
            crash_point("bank.result")
        self._run(self.outbox.bank(m, raw, self.clock.seconds()))

    def _record(self, item: Any, done: Callable[[Any], None]) -> None:
        """Queue a bank fact; everything queued in one reactor turn is committed in one operation."""
        self._batch.append((item, done))
        if len(self._batch) == 1:
            self.clock.callLater(0, self._commit_batch)

    def _commit_batch(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        items = [item for item, _ in batch]
        d = self.db.write(lambda tx: q.apply_bank_batch(tx, self.bank.id, items))

        def answered(answers: list[Any]) -> None:
            for (_, done), answer in zip(batch, answers):
                try:
                    done(answer)
                except Exception:
                    log.failure("relay.after_commit_failed", bank=self.bank.id)

        def failed(f: Any) -> None:
            # The store refused (disk full, locked past its timeout): these are bank facts
            # already taken off the link, so keep them and try again, in order.
            log.failure("relay.record_failed", f, bank=self.bank.id, facts=len(batch), retry_in_s=1.0)
            first = not self._batch
            self._batch[:0] = batch
            if first:
                self.clock.callLater(1.0, self._commit_batch)

        d.addCallbacks(answered, failed)

    def _settled(self, rec: dict[str, Any]) -> None:
        """Count and log a state change the store committed."""
        state = rec["state"]
        self.metrics.instructions.labels(self._bank.id, state).inc()
        if State(state) in FINAL_STATES:
            self.metrics.submit_to_final.labels(self._bank.id).observe(
                max(rec["updated_us"] - rec["created_us"], 0) / 1_000_000)
            log.debug("instruction.final", bank=self._bank.id, centre=rec["centre_id"],
                      instruction_id=rec["instruction_id"], state=state)
        elif state == State.IN_DOUBT.value:
            self.metrics.in_doubt.labels(self._bank.id).inc()
            log.error("instruction.in_doubt", bank=self._bank.id, centre=rec["centre_id"],
                      instruction_id=rec["instruction_id"], ref=rec["bank_ref"])

    def _account_centre(self, account: str) -> str | None | bool:
        """The owning centre; None for an account on no register; False for another bank's account.

        A movement on an account nobody registered is kept and copied to the
        ledger (its unregistered-account rule exists for exactly that); a bank
        reporting on an account registered at another bank is refused.
        """
        cfg = self.config.accounts.get(account)
        if cfg is None:
            return None
        if cfg.bank != self.bank.id:
            return False
        return cfg.centre

    def _on_movement(self, m: msg.Movement, raw: bytes) -> None:
        every = m.entries + m.pending
        owners = [self._account_centre(e.account) for e in every]
        for e, owner in zip(every, owners):
            if owner is False:
                self._foreign(m, "account", e.account)
                return
        booked = len(m.entries)
        item = q.Movements(tuple((msg.to_json(e), o) for e, o in zip(m.entries, owners[:booked])), raw,
                           tuple((msg.to_json(e), o) for e, o in zip(m.pending, owners[booked:])),
                           _problems(m.problems))
        self._record(item, lambda new: self._ack(m))

    def _on_statement(self, m: msg.Statement, raw: bytes) -> None:
        self._on_movement(msg.Movement(m.seq_no, m.entries, m.pending, m.problems), raw)

    def _on_balance(self, m: msg.Balance, raw: bytes) -> None:
        owner = self._account_centre(m.account)
        if owner is False:
            self._foreign(m, "account", m.account)
            return
        snap = {"account": m.account, "balance": m.balance, "available": m.available,
                "overdraft": m.overdraft, "status": m.status,
                "as_of": m.as_of.isoformat() if m.as_of else None}
        if m.currency != "CNY":   # amounts in another currency's minor units: say which
            snap["currency"] = m.currency
        self._record(q.BalanceSnapshot(snap, owner, raw), lambda _: None)
        if m.problems:
            self._record(q.Movements((), raw, (), _problems(m.problems)), lambda _: None)

    def query_balances(self) -> int:
        """Ask the bank for the balance of every registered account it holds."""
        if self.session is None:
            return 0
        accounts = [n for n, a in self.config.accounts.items() if a.bank == self.bank.id]
        for account in accounts:
            self.session.send(msg.BalanceQuery(self.next_seq(), account))
        self.metrics.balance_queries.labels(self.bank.id).inc(len(accounts))
        return len(accounts)

    # -- time ------------------------------------------------------------------

    def tick(self) -> None:
        """Do what is due now (resends, inquiries, in_doubt); called by the timer, callable any time."""
        if not self.active:
            return
        self._run(self.outbox.tick(self.clock.seconds()))

    def _gauges(self) -> None:
        self._queue_gauge.set(self.outbox.unconfirmed)
        self._awaiting_gauge.set(self.outbox.counts[Phase.AWAITING_RESULT])

    def depth(self) -> int:
        return self.outbox.depth

    def refusal(self, extra: int = 1) -> str | None:
        """Why new work for this bank must wait (backpressure), or None to accept it."""
        if not self.active:
            return None  # another node owns the link and applies this rule there
        limits, timeouts = self.config.limits, self.config.timeouts
        if self.depth() + extra > limits.max_queue_per_bank:
            return f"bank {self._bank.id} has {self.depth()} instructions queued (limit {limits.max_queue_per_bank})"
        if self.down_since is not None:
            down = self.clock.seconds() - self.down_since
            if down >= timeouts.refuse_when_link_down_for:
                return f"the link to bank {self._bank.id} has been down for {int(down)} s"
        return None


class Relay(Service):
    """All banks' dispatchers, the balance schedule, and the routing of new instructions."""

    name = "relay"

    def __init__(self, config: GatewayConfig, db: Database, clock: IReactorTime, metrics: GatewayMetrics,
                 adapters: dict[str, msg.Adapter], *, poll_interval: float = 1.0) -> None:
        self.config = config
        self.adapters = adapters
        self.dispatchers = {bank_id: BankDispatcher(bank, config, db, clock, metrics)
                            for bank_id, bank in config.banks.items()}
        self._clock = clock
        self._poll = LoopingCall(self._poll_all)
        self._poll.clock = clock
        self._poll_interval = poll_interval
        self._balances = LoopingCall(self._balances_all)
        self._balances.clock = clock

    def enqueue(self, rows: list[dict[str, Any]]) -> None:
        """Route freshly committed instructions to their bank's dispatcher."""
        by_bank: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_bank.setdefault(row["bank_id"], []).append(row)
        for bank_id, bank_rows in by_bank.items():
            self.dispatchers[bank_id].enqueue(bank_rows)

    def refusal(self, bank_id: str, extra: int = 1) -> str | None:
        """Backpressure: why ``bank_id`` cannot take ``extra`` more instructions now, or None."""
        return self.dispatchers[bank_id].refusal(extra)

    def encodable(self, item: q.IntakeItem) -> str | None:
        """Why the bank's protocol cannot carry this instruction (e.g. a name outside GBK), or None.

        Checked at intake so that an instruction the link could never send is
        refused with 422 instead of sitting in the queue.
        """
        ins = item.instruction
        dispatcher = self.dispatchers[item.bank_id]
        created = business_date(time.time_ns() // 1000)  # a date: the wall clock
        bank = self.config.banks[item.bank_id]
        if ins.kind == "collection":
            # Only bdc has a collection (BDC102); adapters/base.py has no such kind, and no
            # other adapter writes one.  Never made up for a protocol that has none.
            if bank.adapter != "bdc":
                return (f"collection: bank {item.bank_id} holds credit_account and speaks {bank.adapter}, "
                        f"whose protocol has no collection (direct debit) message; only bdc (BDC102) has one")
            d = ins.debtor
            assert d is not None
            message: Any = dispatcher.collection(
                ref="0" * 20, centre_id=ins.centre_id, instruction_id=ins.instruction_id,
                credit_account=ins.account, amount=ins.amount,
                debtor=(d.account, d.name, d.bank_code, d.agreement_no), purpose=ins.purpose, memo=ins.memo,
                created=created)
            try:
                msg.check(self.adapters[item.bank_id], message, sender=self.config.node, receiver=bank.node)
            except msg.AdapterError as e:
                return str(e)
            return None
        message = dispatcher.message(
            ref="0" * 20, centre_id=ins.centre_id, instruction_id=ins.instruction_id,
            debit_account=ins.debit_account, amount=ins.amount,
            creditor=(ins.creditor.account, ins.creditor.name, ins.creditor.bank_code),
            purpose=ins.purpose, memo=ins.memo, created=created)
        try:
            msg.check(self.adapters[item.bank_id], message, sender=self.config.node, receiver=bank.node)
        except msg.AdapterError as e:
            return str(e)
        return None

    def bank_batch_refusal(self, items: list[q.IntakeItem]) -> str | None:
        """Why ``items`` cannot go to their bank as one bank batch, or None (gateway.relay_batch.refusal)."""
        return rb.refusal(self, items)

    def startService(self) -> None:
        super().startService()
        for d in self.dispatchers.values():
            if d.active and d.owner is None:  # no lease keeper: this node owns every link
                d.load().addErrback(lambda f, b=d.bank.id: log.failure("relay.load_failed", f, bank=b))
        # The safety sweep: only several nodes sharing PostgreSQL (a lease keeper set the
        # owner) can commit instructions this node's intake never saw; alone, the intake's
        # commit wakes the dispatcher (Intake on_stored -> enqueue) and nothing polls.
        if any(d.owner is not None for d in self.dispatchers.values()):
            self._poll.start(self._poll_interval, now=False)
        self._balances.start(self.config.timeouts.balance_query_interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        for call in (self._poll, self._balances):
            if call.running:
                call.stop()
        for d in self.dispatchers.values():
            d.stop()

    def _balances_all(self) -> None:
        for d in self.dispatchers.values():
            d.query_balances()

    def _poll_all(self) -> None:
        for d in self.dispatchers.values():
            # Only with several nodes (a lease keeper set the owner) can another node's
            # intake commit instructions for this link; alone, enqueue() sees them all.
            if d._loaded and d.active and d.owner is not None:
                d.poll().addErrback(lambda f, b=d.bank.id: log.failure("relay.poll_failed", f, bank=b))


def _problems(problems: tuple[msg.Problem, ...]) -> tuple[tuple[dict[str, Any], bytes], ...]:
    """Unreadable parts of a bank's document as journal payloads (part, reason) with their bytes."""
    return tuple(({"part": p.part, "reason": p.reason}, p.raw) for p in problems)
