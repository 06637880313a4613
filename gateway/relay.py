"""The outbox toward each bank: what to send, what to resend, what to ask, what to acknowledge.

One :class:`BankDispatcher` per bank owns that bank's open instructions.  It
sends in commit order through whatever link session is up, keeps at most
``window`` instructions waiting for a receipt, resends with the same
reference only while the receipt is unconfirmed (G2), turns overdue results
into status inquiries and then ``in_doubt`` (G6), and acknowledges bank
pushes only after they are committed (G1).  It knows nothing of sockets: a
link session hands it decoded messages and gives it a ``send`` callable.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from collections import OrderedDict
from dataclasses import dataclass
from itertools import count
from typing import Any, Callable, Iterable, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from adapters import base as msg
from gateway import lifecycle
from gateway.config import BankConfig, GatewayConfig
from gateway.faults import armed, crash_point
from gateway.metrics import GatewayMetrics
from gateway.model import FINAL_STATES, State
from gateway.store import instructions as q
from gateway.store import leases
from gateway.store.db import Database

__all__ = ["LinkSession", "BankDispatcher", "Relay"]

log = Logger()

_CREDITOR_IS_PERSON = {"withdrawal", "refund"}
SWEEP_EVERY = 30  # polls between full sweeps of received instructions (see BankDispatcher.poll)


class LinkSession(Protocol):
    """What a dispatcher needs of a signed-on link."""

    def send(self, message: msg.Message) -> None: ...


_OPEN_KEYS = ("bank_ref", "centre_id", "instruction_id", "debit_account", "amount", "created_us", "state",
              "sends")


def _open(row: dict[str, Any]) -> dict[str, Any]:
    """What a dispatcher keeps of an open instruction: what sending it again needs, and its state.

    Every open instruction stays in memory until it settles, so the copy is
    slim: none of the columns that only the store and the API use, and the
    body as UTF-8 bytes (a str holding one Chinese character takes two bytes
    for each of its mostly ASCII characters).
    """
    slim = {k: row[k] for k in _OPEN_KEYS}
    slim["body"] = row["body"].encode("utf-8")
    return slim


@dataclass
class _Waiting:
    """An instruction the bank has received and not settled."""

    since: float
    queries: int = 0
    next_query_at: float = 0.0


class BankDispatcher:
    """The relay for one bank (see the module docstring)."""

    def __init__(self, bank: BankConfig, config: GatewayConfig, db: Database, clock: IReactorTime,
                 metrics: GatewayMetrics) -> None:
        self.bank = bank
        self.config = config
        self.db = db
        self.clock = clock
        self.metrics = metrics
        self.timeouts = config.timeouts
        self.session: LinkSession | None = None
        self.rows: dict[str, dict[str, Any]] = {}          # ref -> row, every open instruction
        self.pending: OrderedDict[str, None] = OrderedDict()  # refs to send on the current session
        self.in_flight: dict[str, float] = {}               # ref -> sent at, awaiting receipt
        self.waiting: dict[str, _Waiting] = {}              # ref -> accepted, awaiting result
        self.queries: dict[str, str] = {}                   # StatusQuery seq_no -> ref
        self.poll_mark = 0  # the highest row id seen by poll()
        self._polls = 0
        self._seq = count(1)
        self._seq_prefix = f"G{int(clock.seconds()) % 10**8:08d}"
        self._loaded = False
        self._sent_once: set[str] = set()  # refs sent by this process (for the resend metric)
        self.down_since: float | None = clock.seconds()  # None while a session is up
        self.claiming: set[str] = set()        # refs whose fenced claim is committing
        self.first_sent: dict[str, float] = {}   # ref -> first send by this node (receipt deadline)
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

    # -- feeding -------------------------------------------------------------

    def load(self) -> Deferred[None]:
        """Take over every open instruction of this bank from the store (start-up, takeover)."""
        d = self.db.read(q.load_open, self.bank.id)

        def loaded(rows: list[dict[str, Any]]) -> None:
            now = self.clock.seconds()
            for row in rows:
                ref = row["bank_ref"]
                if ref in self.rows:
                    continue
                self.rows[ref] = _open(row)
                self.poll_mark = max(self.poll_mark, row["id"])
                if row["state"] == State.ACCEPTED.value:
                    self.waiting[ref] = _Waiting(since=now)
                else:
                    self.pending[ref] = None
            self._loaded = True
            log.info("relay.loaded", bank=self.bank.id, open=len(rows))
            self._gauges()
            self.pump()

        return d.addCallback(loaded)

    def enqueue(self, rows: Iterable[dict[str, Any]]) -> None:
        """New instructions committed for this bank: queue them in commit order.

        On a node that does not own the link this does nothing: the owner picks
        them up from the store (:meth:`poll`).
        """
        if not self.active:
            return
        for row in rows:
            ref = row["bank_ref"]
            if ref in self.rows:
                continue
            self.rows[ref] = _open(row)
            self.pending[ref] = None
        self._gauges()
        self.pump()

    def poll(self) -> Deferred[None]:
        """Pick up instructions another node's intake committed for this bank.

        Rows after the highest id polled so far, and every ``SWEEP_EVERY`` polls
        all received rows: with several nodes, ids are not committed in order,
        so a row with a lower id may become visible after a higher one.
        """
        self._polls += 1
        sweep = self._polls % SWEEP_EVERY == 0
        d = self.db.read(q.load_new, self.bank.id, 0 if sweep else self.poll_mark, 5000)

        def found(rows: list[dict[str, Any]]) -> None:
            if rows:
                self.poll_mark = max(self.poll_mark, rows[-1]["id"])
            self.enqueue(rows)

        return d.addCallback(found)

    # -- the link ------------------------------------------------------------

    def link_up(self, session: LinkSession) -> None:
        """A session signed on: everything without a receipt goes again, same reference."""
        self.session = session
        self.down_since = None
        resend = list(self.in_flight)
        self.in_flight.clear()
        for ref in reversed(resend):
            self.pending[ref] = None
            self.pending.move_to_end(ref, last=False)
        self.metrics.link_up.labels(self.bank.id).set(1)
        log.info("link.up", bank=self.bank.id, resend=len(resend), pending=len(self.pending))
        self.pump()

    def link_down(self, session: LinkSession) -> None:
        if session is not self.session:
            return
        self.session = None
        self.down_since = self.clock.seconds()
        self.metrics.link_up.labels(self.bank.id).set(0)
        log.warn("link.down", bank=self.bank.id, in_flight=len(self.in_flight), pending=len(self.pending))

    def next_seq(self) -> str:
        """A unique serial for the gateway's own control messages on this link."""
        return f"{self._seq_prefix}{next(self._seq):011d}"

    def pump(self) -> None:
        """Claim queued instructions while the window has room, then send them.

        The claim is the fenced write: it records the sends and checks, in the
        same transaction, that this node still holds the bank's lease at its
        epoch.  Only after it commits do the frames go out, so a node that lost
        the lease (paused, partitioned) can never send again.
        """
        if self.session is None or not self.active or self.claiming:
            # One claim at a time: what queues meanwhile goes in the next one, so a
            # busy link claims in batches instead of one instruction per commit.
            return
        batch: list[str] = []
        while self.pending and len(self.in_flight) + len(self.claiming) < self.bank.window:
            ref, _ = self.pending.popitem(last=False)
            if ref in self.rows:
                batch.append(ref)
                self.claiming.add(ref)
        if batch:
            session, epoch = self.session, self.epoch
            lease = (self.lease_name, self.owner, epoch) if self.owner is not None else None
            d = self.db.write(lambda tx: q.record_sent(tx, self.bank.id, batch, lease=lease))
            d.addCallbacks(self._claimed, self._claim_failed, callbackArgs=(batch, session, epoch),
                           errbackArgs=(batch,))
        self._gauges()

    def _requeue(self, refs: list[str]) -> None:
        for ref in reversed(refs):
            if ref in self.rows:
                self.pending[ref] = None
                self.pending.move_to_end(ref, last=False)

    def _claimed(self, changed: int, batch: list[str], session: LinkSession, epoch: int | None) -> None:
        self.claiming.difference_update(batch)
        if session is not self.session or epoch != self.epoch or not self.active or not self.lease_fresh():
            # The link changed while the claim committed, or this node cannot be
            # sure it still owns it (paused past its renewal): send nothing.
            self._requeue(batch)
            return
        now = self.clock.seconds()
        for ref in batch:
            row = self.rows.get(ref)
            if row is None:
                continue  # settled meanwhile (a late result for an earlier send)
            session.send(self._instruction(row))
            if row.get("sends", 0) or ref in self._sent_once:
                self.metrics.resends.labels(self.bank.id).inc()
            self._sent_once.add(ref)
            self.first_sent.setdefault(ref, now)
            self.in_flight[ref] = now
            if row["state"] == State.RECEIVED.value:
                row["state"] = State.SENT.value
        if changed:
            self.metrics.instructions.labels(self.bank.id, State.SENT.value).inc(changed)
        if armed("bank.sent"):
            # Let the reactor flush the frames to the socket first: "sent" means on the wire.
            self.clock.callLater(0.05, crash_point, "bank.sent")
        self.pump()

    def _claim_failed(self, failure: Any, batch: list[str]) -> None:
        self.claiming.difference_update(batch)
        self._requeue(batch)
        self.clock.callLater(0.1, self.pump)
        if failure.check(leases.Fenced):
            self.metrics.security_events.labels("lease_fenced").inc()
            log.error("relay.fenced", bank=self.bank.id, owner=self.owner, epoch=self.epoch,
                      error=failure.getErrorMessage())
            if self.on_fenced is not None:
                self.on_fenced()
        else:
            log.failure("relay.claim_failed", failure, bank=self.bank.id)  # retried by the next tick

    # -- ownership -----------------------------------------------------------

    def activate(self, owner: str, lease_name: str, epoch: int) -> Deferred[None]:
        """This node now owns the bank's link (lease ``lease_name`` at ``epoch``): take its work over."""
        self.active = True
        self.owner, self.lease_name, self.epoch = owner, lease_name, epoch
        log.info("relay.owner", bank=self.bank.id, owner=owner, epoch=epoch)
        return self.load()

    def deactivate(self) -> None:
        """Another node owns the link now: forget everything held in memory (the store has it all)."""
        self.active = False
        self.epoch = None
        self.session = None
        for table in (self.rows, self.pending, self.in_flight, self.waiting, self.queries, self.first_sent):
            table.clear()
        self.claiming.clear()
        self._sent_once.clear()
        self._loaded = False
        self.metrics.link_up.labels(self.bank.id).set(0)
        self._gauges()

    def _instruction(self, row: dict[str, Any]) -> msg.Instruction:
        """The message that sends stored instruction ``row``, signed when the bank wants signatures."""
        body = json.loads(row["body"])
        creditor = body["creditor"]
        created = _dt.datetime.fromtimestamp(row["created_us"] / 1_000_000, _dt.timezone.utc).date()
        ins = self.message(ref=row["bank_ref"], centre_id=row["centre_id"], instruction_id=row["instruction_id"],
                           debit_account=row["debit_account"], amount=row["amount"],
                           creditor=(creditor["account"], creditor["name"], creditor["bank_code"]),
                           purpose=body["purpose"], memo=body.get("memo") or "", created=created)
        # Non-repudiation: the signature covers gateway.signing.instruction_signing_bytes(ins).
        if self.instruction_signer is None:
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

    # -- what the bank says --------------------------------------------------

    def handle(self, message: msg.Message, raw: bytes) -> None:
        """One decoded message from the bank (link control is handled by the session)."""
        match message:
            case msg.Receipt():
                self._on_receipt(message, raw)
            case msg.Result():
                self._on_result(message, raw)
            case msg.NotFound():
                self._on_not_found(message, raw)
            case msg.Movement():
                self._on_movement(message, raw)
            case msg.Balance():
                self._on_balance(message, raw)
            case msg.Statement():
                self._on_statement(message, raw)
            case _:
                self.metrics.refused.labels(f"bank:{self.bank.id}", "unexpected_message").inc()
                log.warn("bank.unexpected_message", bank=self.bank.id, kind=type(message).__name__)

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

    def _on_receipt(self, m: msg.Receipt, raw: bytes) -> None:
        ref = m.ref
        self.in_flight.pop(ref, None)
        self.first_sent.pop(ref, None)
        self.queries.pop(m.reply_to, None)
        if ref not in self.rows:
            # Not open here: already settled (a late receipt), or not ours at all.
            self._apply(m, ref, lifecycle.ReceiptConfirmed(), raw, bank_seq_no=m.bank_seq_no)
            return
        if ref not in self.waiting:
            self.waiting[ref] = _Waiting(since=self.clock.seconds())
        self._apply(m, ref, lifecycle.ReceiptConfirmed(), raw, bank_seq_no=m.bank_seq_no)
        self.pump()

    def _on_result(self, m: msg.Result, raw: bytes) -> None:
        crash_point("bank.result")
        ref = m.ref
        answered = ref in self.in_flight or m.reply_to in self.queries
        self.in_flight.pop(ref, None)
        self.queries.pop(m.reply_to, None)
        self.waiting.pop(ref, None)
        self._apply(m, ref, lifecycle.ResultReceived(m.succeeded), raw, ack=not answered,
                    host_seq_no=m.host_seq_no, bank_seq_no=m.bank_seq_no, code=m.code, text=m.text)
        self.pump()

    def _on_not_found(self, m: msg.NotFound, raw: bytes) -> None:
        ref = m.ref
        self.queries.pop(m.reply_to, None)
        row = self.rows.get(ref)
        if row is not None and row["state"] in (State.RECEIVED.value, State.SENT.value) \
                and ref not in self.waiting:
            # Never arrived: safe to send again, with the same reference.
            self.in_flight.pop(ref, None)
            self.pending[ref] = None
            self.pump()
            return
        self.waiting.pop(ref, None)
        self._apply(m, ref, lifecycle.NotFoundAtBank(), raw,
                    text="the bank denies an instruction it had confirmed")

    def _apply(self, m: msg.Message | None, ref: str, event: lifecycle.Event, raw: bytes | None, *,
               ack: bool = False, **fields: str) -> None:
        """Record what the bank said about ``ref``; acknowledge it (if asked) after the commit."""
        fact = q.BankFact(ref, event, raw=raw, **fields)

        def done(answer: Any) -> None:
            if isinstance(answer, lifecycle.ConflictingOutcome):
                self.metrics.refused.labels(f"bank:{self.bank.id}", "conflicting_outcome").inc()
                log.error("bank.conflicting_outcome", bank=self.bank.id, ref=ref, error=str(answer))
                if ack and m is not None:
                    self._ack(m, ok=False, code="E409", text="contradicts the recorded outcome")
                return
            if isinstance(answer, lifecycle.IllegalTransition):
                log.warn("bank.out_of_order", bank=self.bank.id, ref=ref, error=str(answer))
                if ack and m is not None:
                    self._ack(m)
                return
            if not answer.known:
                if m is not None:
                    self._foreign(m, "reference", ref)
                return
            if answer.changed:
                self._settled(answer.record)
            if ack and m is not None:
                self._ack(m)

        self._record(fact, done)

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
        state = rec["state"]
        self.metrics.instructions.labels(self.bank.id, state).inc()
        row = self.rows.get(rec["bank_ref"])
        if row is not None:
            row["state"] = state
        if State(state) in FINAL_STATES or state == State.IN_DOUBT.value:
            self._sent_once.discard(rec["bank_ref"])
            self.first_sent.pop(rec["bank_ref"], None)
        if State(state) in FINAL_STATES:
            self.rows.pop(rec["bank_ref"], None)
            self.metrics.submit_to_final.labels(self.bank.id).observe(
                max(rec["updated_us"] - rec["created_us"], 0) / 1_000_000)
            log.debug("instruction.final", bank=self.bank.id, centre=rec["centre_id"],
                     instruction_id=rec["instruction_id"], state=state)
        elif state == State.IN_DOUBT.value:
            self.rows.pop(rec["bank_ref"], None)
            self.metrics.in_doubt.labels(self.bank.id).inc()
            log.error("instruction.in_doubt", bank=self.bank.id, centre=rec["centre_id"],
                      instruction_id=rec["instruction_id"], ref=rec["bank_ref"])
        self._gauges()

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
        """Resend what has no receipt in time; ask about results overdue; give up into in_doubt."""
        if not self.active:
            return
        now = self.clock.seconds()
        t = self.timeouts
        if self.session is not None:
            late = [ref for ref, at in self.in_flight.items() if now - at >= t.receipt_timeout]
            given_up = [ref for ref in late if now - self.first_sent.get(ref, now) >= t.result_timeout]
            for ref in given_up:
                # Sent again and again and never confirmed: nothing is left stuck silently (G6).
                del self.in_flight[ref]
                self._apply(None, ref, lifecycle.ResultOverdue(), None,
                            text=f"no receipt from the bank within {t.result_timeout:g} s of the first send")
            for ref in late:
                if ref in self.in_flight:
                    del self.in_flight[ref]
                    self.pending[ref] = None
                    self.pending.move_to_end(ref, last=False)
            if late:
                log.warn("relay.receipt_overdue", bank=self.bank.id, count=len(late), given_up=len(given_up))
        for ref, w in list(self.waiting.items()):
            if now - w.since < t.result_timeout or now < w.next_query_at:
                continue
            if w.queries >= t.status_query_attempts:
                del self.waiting[ref]
                self._apply(None, ref, lifecycle.ResultOverdue(), None,
                            text=f"no result after {w.queries} status inquiries")
                continue
            if self.session is None:
                continue
            row = self.rows.get(ref)
            seq = self.next_seq()
            self.queries[seq] = ref
            created = (_dt.datetime.fromtimestamp(row["created_us"] / 1_000_000, _dt.timezone.utc).date()
                       if row else _dt.date.today())
            self.session.send(msg.StatusQuery(seq, ref, created))
            self.metrics.status_queries.labels(self.bank.id).inc()
            w.queries += 1
            w.next_query_at = now + t.status_query_interval
        self.pump()

    def _gauges(self) -> None:
        self.metrics.queue_depth.labels(self.bank.id).set(len(self.pending) + len(self.in_flight))
        self.metrics.awaiting_result.labels(self.bank.id).set(len(self.waiting))

    def depth(self) -> int:
        return len(self.pending) + len(self.in_flight) + len(self.waiting)

    def refusal(self, extra: int = 1) -> str | None:
        """Why new work for this bank must wait (backpressure), or None to accept it."""
        if not self.active:
            return None  # another node owns the link and applies this rule there
        limits, timeouts = self.config.limits, self.config.timeouts
        if self.depth() + extra > limits.max_queue_per_bank:
            return f"bank {self.bank.id} has {self.depth()} instructions queued (limit {limits.max_queue_per_bank})"
        if self.down_since is not None:
            down = self.clock.seconds() - self.down_since
            if down >= timeouts.refuse_when_link_down_for:
                return f"the link to bank {self.bank.id} has been down for {int(down)} s"
        return None


class Relay(Service):
    """All banks' dispatchers, their timers and the routing of new instructions."""

    name = "relay"

    def __init__(self, config: GatewayConfig, db: Database, clock: IReactorTime, metrics: GatewayMetrics,
                 adapters: dict[str, msg.Adapter], *, tick_interval: float = 0.2,
                 poll_interval: float = 1.0) -> None:
        self.config = config
        self.adapters = adapters
        self.dispatchers = {bank_id: BankDispatcher(bank, config, db, clock, metrics)
                            for bank_id, bank in config.banks.items()}
        self._clock = clock
        self._tick = LoopingCall(self._tick_all)
        self._tick.clock = clock
        self._poll = LoopingCall(self._poll_all)
        self._poll.clock = clock
        self._tick_interval = tick_interval
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
        created = _dt.datetime.fromtimestamp(dispatcher.clock.seconds(), _dt.timezone.utc).date()
        message = dispatcher.message(
            ref="0" * 20, centre_id=ins.centre_id, instruction_id=ins.instruction_id,
            debit_account=ins.debit_account, amount=ins.amount,
            creditor=(ins.creditor.account, ins.creditor.name, ins.creditor.bank_code),
            purpose=ins.purpose, memo=ins.memo, created=created)
        bank = self.config.banks[item.bank_id]
        try:
            msg.check(self.adapters[item.bank_id], message, sender=self.config.node, receiver=bank.node)
        except msg.AdapterError as e:
            return str(e)
        return None

    def startService(self) -> None:
        super().startService()
        for d in self.dispatchers.values():
            if d.active and d.owner is None:  # no lease keeper: this node owns every link
                d.load().addErrback(lambda f, b=d.bank.id: log.failure("relay.load_failed", f, bank=b))
        self._tick.start(self._tick_interval, now=False)
        self._poll.start(self._poll_interval, now=False)
        self._balances.start(self.config.timeouts.balance_query_interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        for call in (self._tick, self._poll, self._balances):
            if call.running:
                call.stop()

    def _tick_all(self) -> None:
        for d in self.dispatchers.values():
            try:
                d.tick()
            except Exception:
                log.failure("relay.tick_failed", bank=d.bank.id)

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
