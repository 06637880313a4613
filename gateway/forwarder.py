"""Copies of every journal event to the supervision ledger (promise G4).

The journal is the outbox: the forwarder reads events after the delivery
cursor in ``seq`` order, signs them as one batch (one signature over the
Merkle root of the batch's copies; every copy carries its path to that root,
so each is still provable alone: :mod:`gateway.signing`), POSTs the batch over mutual TLS
(with ``head_seq``, the journal's newest seq, so the ledger knows what is still to come) and
moves the cursor past the copies the ledger answered ``stored``,
``duplicate`` or ``refused-stored`` (well signed but unreadable to the
ledger, kept there as refused and alerted: see :mod:`gateway.copies`).  One
batch is in flight at a time, so copies arrive in journal order (hence in
order per instruction and per account).  When the ledger is down or refuses
a copy whole, the cursor stays, the backlog grows (a metric), and the same
copies go again after a backoff: at-least-once delivery, made exactly-once
in effect by the ledger's dedupe on ``event_id``.

Nothing is read while nothing happens: a commit of this process that
appended journal events wakes the forwarder (:meth:`Database.on_journal`),
and the rounds it starts are at least ``interval`` apart so that copies
committed close together go as one batch.  Between wakes it looks at the
journal only every ``idle_interval``: for the events another node commits
to a shared database (only the node holding the forwarder's lease forwards),
and as a net under a wake that never came (:class:`Cadence`).
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from gateway.config import GatewayConfig
from gateway.copies import copy_of
from gateway.faults import crash_point
from gateway.metrics import GatewayMetrics
from gateway.signing import Signer
from gateway.store import journal
from gateway.store.db import Database
from gateway.tls import ExpectPeer, FixedCreatorPolicy, TLSOptions

__all__ = ["Cadence", "LedgerForwarder"]

DELIVERED = ("stored", "duplicate", "refused-stored")
"""The ledger's answers that take a copy off the backlog."""

log = Logger()
TARGET = "ledger"


class Cadence:
    """When the forwarder next reads the journal: the schedule alone, no I/O.

    A full batch is followed at once by the next; otherwise the forwarder waits for a
    wake (:meth:`woken`), but never reads sooner than ``interval`` after its last round
    ended (as it did when it polled: under steady load the batches are as large as before,
    and the ledger gets as few requests), and never later than ``idle_interval`` after it.
    After a failure it backs off (0.5 s doubling to 30 s) and a wake does not cut the
    backoff short.
    """

    def __init__(self, batch: int, interval: float, idle_interval: float) -> None:
        if not 0 < interval <= idle_interval:
            raise ValueError("need 0 < interval <= idle_interval")
        self.batch, self.interval, self.idle_interval = batch, interval, idle_interval
        self.failures = 0
        self._ended = float("-inf")   # when the last round ended
        self._woken = False           # a wake came since the last round began

    def begin(self, now: float) -> None:
        """A round starts reading now."""
        self._woken = False

    def sent(self, count: int, now: float) -> float:
        """The round sent ``count`` copies: the delay to the next round."""
        self.failures, self._ended = 0, now
        if count >= self.batch:
            return 0.0
        if self._woken:
            return self.interval
        return self.idle_interval

    def failed(self) -> float:
        """The round failed: the delay to the next."""
        self.failures += 1
        return min(30.0, 0.25 * 2 ** min(self.failures, 8))

    def woken(self, now: float, running: bool) -> float | None:
        """Journal events were committed: the delay to bring the next round forward to,
        or None to leave the schedule alone (a round is running, which will see the wake,
        or the link is backing off)."""
        self._woken = True
        if running or self.failures:
            return None
        return self._spaced(now)

    def _spaced(self, now: float) -> float:
        return max(0.0, self._ended + self.interval - now)


class LedgerForwarder(Service):
    """Delivers the journal to the ledger (see the module docstring)."""

    name = "ledger-forwarder"

    def __init__(self, config: GatewayConfig, db: Database, reactor: IReactorTime, metrics: GatewayMetrics,
                 options: TLSOptions, *, gateway_name: str, interval: float = 0.05,
                 idle_interval: float = 1.0) -> None:
        ledger = config.ledger
        assert ledger is not None
        self.config = config
        self.db = db
        self.reactor = reactor
        self.metrics = metrics
        self.gateway_name = gateway_name
        self.url = ledger.url.rstrip("/") + "/v1/copies"
        self.batch = ledger.batch
        self.signer = Signer(ledger.signing_key, ledger.signature_alg)
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 1
        self.agent = Agent(reactor, contextFactory=FixedCreatorPolicy(ExpectPeer(options, "ledger", ledger.name)),
                           pool=pool, connectTimeout=10)
        self.pool = pool
        self.cadence = Cadence(self.batch, interval, idle_interval)
        db.on_journal(self.wake)
        self.adapters = {bank_id: bank.adapter for bank_id, bank in config.banks.items()}
        self.delivered: int | None = None
        self._call: Any = None
        self._running: Deferred[None] | None = None
        self._marking: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self._schedule(0)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        d = self._running if self._running is not None else self._marked()
        closing = self.pool.closeCachedConnections()
        return d.addBoth(lambda _: self._marked()).addBoth(lambda _: closing)

    def wake(self) -> None:
        """Journal events were committed here: deliver them soon (see :class:`Cadence`)."""
        if not self.running:
            return
        delay = self.cadence.woken(self.reactor.seconds(), running=self._running is not None)
        call = self._call
        if delay is not None and call is not None and call.active() \
                and call.getTime() > self.reactor.seconds() + delay:
            call.reset(delay)

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._call = self.reactor.callLater(delay, self._round)

    def _round(self) -> None:
        self.cadence.begin(self.reactor.seconds())
        self._running = self.deliver_once()
        self._running.addCallback(self._next)
        self._running.addErrback(self._failed)

    def _next(self, sent: int) -> None:
        self._running = None
        self._schedule(self.cadence.sent(sent, self.reactor.seconds()))

    def _failed(self, failure: Any) -> None:
        self._running = None
        delay = self.cadence.failed()
        failures = self.cadence.failures
        if failures in (1, 10) or failures % 100 == 0:
            log.warn("ledger.unreachable", error=failure.getErrorMessage()[:200], failures=failures,
                     retry_in_s=delay)
        self.metrics.ledger_failures.inc()
        self._schedule(delay)

    def _prepare(self, conn: Any, after: int) -> tuple[list[tuple[int, str]], bytes | None, int]:
        """On a read thread: the next batch after ``after`` as (seq, event_id) pairs and the signed
        request body, and the journal's newest seq.  Building, signing (libsodium, without the
        GIL) and serialising here keeps that work off the reactor thread.

        The body carries that newest seq as ``head_seq``: read after the batch, so never below
        its last copy, it tells the ledger this gateway has copies it has not sent yet, and the
        ledger's deadlines wait for them (``StreamClock`` in ``gateway/ledger/match_records.py``;
        bench/README.md, item 39).  A seq, not the newest event's ``created_us``: "behind" is
        then an exact comparison with the copies' own seqs, untouched by this host's clock steps
        and by its nodes' skew, and it costs no query (the backlog metric reads it already)."""
        rows = journal.events_after(conn, after, self.batch)
        last = journal.last_seq(conn)
        if not rows:
            return [], None, last
        copies = ",".join(self.signer.sign_batch_json(
            [copy_of(r, self.gateway_name, self.adapters.get(r["bank_id"])) for r in rows]))
        body = f'{{"copies":[{copies}],"head_seq":{int(last)}}}'.encode("utf-8")
        return [(r["seq"], r["event_id"]) for r in rows], body, last

    @inlineCallbacks
    def deliver_once(self) -> Any:
        """Send the next batch; fires with how many copies were accepted.

        The delivered mark of one batch is committed while the next is prepared and
        sent: a mark lost to a crash only means copies sent again, which the ledger
        answers "duplicate" (G4).  At most one mark is outstanding, and its failure
        fails the round that waits for it.
        """
        if self.delivered is None:
            self.delivered = yield self.db.read(journal.delivered, TARGET)
        rows, body, last = yield self.db.read(self._prepare, self.delivered)
        self.metrics.ledger_backlog.set(max(last - self.delivered, 0))
        if not rows:
            yield self._marked()
            return 0
        d = self.agent.request(b"POST", self.url.encode(), Headers({b"content-type": [b"application/json"]}),
                               FileBodyProducer(BytesIO(body)))
        d.addTimeout(30, self.reactor)
        response = yield d
        content = yield readBody(response)
        if response.code != 200:
            raise RuntimeError(f"ledger answered {response.code}: {content[:200]!r}")
        results = json.loads(content)["results"]
        if len(results) != len(rows):
            raise RuntimeError(f"ledger answered {len(results)} results for {len(rows)} copies")
        accepted = 0
        for (seq, event_id), result in zip(rows, results):
            if result.get("event_id") != event_id:
                raise RuntimeError("ledger answered out of order")
            status = result.get("status")
            self.metrics.ledger_copies.labels(status or "unknown").inc()
            if status == "refused-stored":
                log.warn("ledger.copy_refused_stored", event_id=event_id, seq=seq,
                         reason=str(result.get("reason"))[:200])
            elif status not in DELIVERED:
                # Never skip a copy refused whole: stop here, keep it at the head of the backlog.
                log.error("ledger.copy_refused", event_id=event_id, seq=seq,
                          reason=str(result.get("reason"))[:200])
                break
            accepted += 1
        crash_point("ledger.forward")
        yield self._marked()
        if accepted:
            upto = rows[accepted - 1][0]
            self._marking = self.db.write(lambda tx: journal.mark_delivered(tx, TARGET, upto))
            self.delivered = upto
            self.metrics.ledger_backlog.set(max(last - upto, 0))
        if accepted < len(rows):
            yield self._marked()
            raise RuntimeError("the ledger refused a copy")
        return accepted

    def _marked(self) -> Deferred[None]:
        """The outstanding delivered mark, committed (fires at once when there is none)."""
        marking, self._marking = self._marking, None
        return marking if marking is not None else succeed(None)
