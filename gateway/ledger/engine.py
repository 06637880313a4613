"""``MatchEngine``: the pure :class:`~gateway.ledger.matcher.Matcher` on the reactor thread, persisted.

Restart promise: the matcher's snapshot and the last ledger seq it covers are
saved together with the alerts it raised up to that point, in one
transaction.  On start the snapshot is restored and every copy after that seq
is fed again before ingest opens (it answers 503 until then); alerts are
stored once per key, so a replayed copy or a re-run deadline never repeats an
alert, and a copy stored just before a crash is never left unmatched.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gateway.clock import steady_clock
from gateway.daemon import gc_paused
from gateway.ledger import store
from gateway.ledger.config import LedgerConfig
from gateway.ledger.matcher import (
    AccountInfo,
    CentreConditions,
    CounterpartyInfo,
    Fact,
    Matcher,
    Registry,
    StreamClock,
    Thresholds,
)
from gateway.ledger.metrics import LedgerMetrics

__all__ = ["MatchEngine", "registry_from_config", "thresholds_from_config", "conditions_from_row",
           "SPECIAL_ACCOUNT_TYPES"]

log = Logger()

SPECIAL_ACCOUNT_TYPES = frozenset({"collection", "loan", "revenue"})
"""Account types that are the fund's special accounts (专户: 归集, 贷款, 增值收益)."""


def registry_from_config(config: LedgerConfig) -> Registry:
    """The matcher's registers from the config's [accounts] and [counterparties]."""
    return Registry(
        accounts={n: AccountInfo(a.bank, a.centre, a.type in SPECIAL_ACCOUNT_TYPES)
                  for n, a in config.accounts.items()},
        counterparties={n: CounterpartyInfo(c.name, c.bank_code) for n, c in config.counterparties.items()})


def thresholds_from_config(config: LedgerConfig) -> Thresholds:
    """The matcher's thresholds from the config's [thresholds]."""
    t = config.thresholds
    return Thresholds(large_amount=t.large_amount, result_deadline_s=t.result_deadline,
                      booking_deadline_s=t.booking_deadline, balance_tolerance=t.balance_tolerance)


def conditions_from_row(row: Any) -> CentreConditions:
    """A ``centre_conditions`` row as the matcher's :class:`CentreConditions`."""
    deadline = row["result_deadline_ms"]
    switch = row["unregistered_counterparty"]
    return CentreConditions(large_amount=row["large_amount"], balance_tolerance=row["balance_tolerance"],
                            result_deadline_s=deadline / 1000 if deadline is not None else None,
                            unregistered_counterparty=None if switch is None else bool(switch))


# -- the matcher, persisted ----------------------------------------------------------


class MatchEngine(Service):
    """Runs the pure :class:`Matcher` on the reactor thread and persists what it decides.

    ``observe(rows)`` takes copies right after their commit, in ledger seq
    order; the alerts they raise, and now and then the matcher's snapshot
    with the seq it covers, are written in one transaction.  A snapshot
    costs time in proportion to the matcher's state, which holds every
    instruction for ``retention``; so one is taken at most every
    ``snapshot_interval`` seconds *and* only once at least as many copies
    were applied since the last one as the state holds records.  Each copy
    then pays for at most one record's worth of snapshot, however large the
    state grows, and a restart replays at most that many copies.  A failed write keeps the alerts for the next attempt.
    ``ready`` turns True once the copies stored after the saved snapshot have
    been fed again (see the module docstring).
    """

    name = "matcher"

    def __init__(self, db: store.LedgerDatabase, registry: Registry, thresholds: Thresholds,
                 metrics: LedgerMetrics, reactor: Any, *, tick_interval: float = 1.0,
                 snapshot_interval: float = 1.0, replay_page: int = 1000,
                 clock: Callable[[], float] | None = None,
                 behind_hold: float = StreamClock.HOLD_S) -> None:
        self.db = db
        self.registry = registry
        self.thresholds = thresholds
        self.metrics = metrics
        self.reactor = reactor
        self.tick_interval = tick_interval
        self.snapshot_interval = snapshot_interval
        self.replay_page = replay_page
        # The matcher's time: seconds since the epoch that do not step (gateway.clock.steady_clock),
        # so a deadline is real seconds whatever is done to this host's clock; compared with the
        # gateways' times only through StreamClock, which undoes their steps.
        self.clock = clock or steady_clock()
        self.matcher: Matcher | None = None
        # Deadlines run on the gateways' time, not the copies' queue; ``behind_hold`` bounds how
        # long they wait for copies a gateway said it had (StreamClock.head).
        self.stream = StreamClock(behind_hold)
        self.ready = False
        self.applied_seq = 0
        self.saved_seq = 0
        self._dirty = False          # state changed since the last saved snapshot
        self._since_saved = 0        # copies applied since the last saved snapshot
        self._last_saved_at = 0.0
        self._pending: list[Any] = []
        self._flushing: Deferred[None] | None = None
        self._starting: Deferred[None] | None = None
        self._loop = LoopingCall(self.tick)
        self._loop.clock = reactor
        self._ticks = 0
        self._writing = 0            # alerts in the write under way
        self._arrivals: dict[int, float] = {}  # batches come in and not yet matched: token -> arrival
        self._arrival_n = 0
        metrics.alerts_unstored.set_function(lambda: len(self._pending) + self._writing)

    # -- lifecycle -------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._starting = Deferred.fromCoroutine(self._start())
        self._starting.addErrback(lambda f: log.failure("ledger.matcher_start_failed", f))

    async def _start(self) -> None:
        last_seq, snapshot = await self.db.read(store.load_state)
        if snapshot is not None:
            self.matcher = Matcher.restore(self.registry, self.thresholds, json.loads(snapshot))
        else:
            self.matcher = Matcher(self.registry, self.thresholds)
        await self.conditions_changed()
        self.applied_seq = self.saved_seq = last_seq
        replayed = 0
        while self.running:
            rows = await self.db.read(store.copies_after, self.applied_seq, self.replay_page)
            if not rows:
                break
            self._observe(rows, live=False)
            replayed += len(rows)
            await self._flush(force=False)  # alerts per page; a snapshot when one has paid for itself
        if replayed:
            await self._flush(force=True)  # so that the next start need not replay them again
        head, _ = await self.db.read(store.load_head)
        heads = await self.db.read(store.gateway_heads)
        self.metrics.journal_seq.set(head)
        for gateway, seq in heads.items():
            self.metrics.gateway_last_seq.labels(gateway).set(seq)
            # Where each gateway's stored copies end, so that a head it reports is measured
            # from there (no hold comes of it before a copy of it is timed: StreamClock).
            self.stream.reached(gateway, seq, self.clock())
        await self._refresh_gauge()
        if not self.running:
            return
        log.info("ledger.matcher_ready", resumed_at=last_seq, replayed=replayed)
        self.ready = True
        self._loop.start(self.tick_interval, now=False)

    async def conditions_changed(self) -> None:
        """Give the matcher every centre's conditions as stored now (the console's 预警条件设置):
        they apply to the next fact, without a restart."""
        rows = await self.db.read(store.load_conditions)
        if self.matcher is not None:
            self.matcher.conditions = {centre: conditions_from_row(r) for centre, r in rows.items()}

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.ready = False
        if self._loop.running:
            self._loop.stop()
        starting = self._starting or succeed(None)

        async def final() -> None:
            await starting
            if self._flushing is not None:
                await self._flushing  # never two flushes at once: alerts stay in order
            if self.matcher is not None:
                await self._flush(force=True)

        return Deferred.fromCoroutine(final())

    # -- input -----------------------------------------------------------------------

    def observe(self, rows: Sequence[dict[str, Any]], facts: Sequence[Fact | None] | None = None) -> None:
        """Feed stored copies (rows of ``copies``, in seq order) to the matcher; persist what follows.

        ``facts``, when given, are the rows' facts as the ingest check already parsed them
        (None where it did not); the rest are parsed again from the rows.
        """
        if not rows or not self.running:
            # Stopped: the copies are committed, and the next start replays them.
            return
        self._observe(rows, live=True, facts=facts)
        self._kick()

    def _observe(self, rows: Sequence[dict[str, Any]], *, live: bool,
                 facts: Sequence[Fact | None] | None = None) -> None:
        assert self.matcher is not None
        wall = self.clock()
        for i, row in enumerate(rows):
            if row["seq"] <= self.applied_seq:
                continue  # already taken (a replay page racing a live batch cannot happen, but be sure)
            self.stream.reached(row["gateway"], row["gateway_seq"], wall)
            readable = row.get("refused") is None  # a copy stored as refused: copy-refused says so
            try:
                fact = facts[i] if facts is not None else None
                if readable and fact is None:
                    fact = Fact.from_copy(store.copy_document(row))
                if fact is not None:
                    step = fact.payload["step_us"] / 1e6 if fact.kind == "gateway.clock_step" else 0.0
                    now = self.stream.copy(row["gateway"], row["created_us"], wall, step_s=step)
                    self._pending.extend(self.matcher.observe(fact, now))
            except Exception:
                self.metrics.matcher_errors.inc()
                log.failure("ledger.matcher_failed", seq=row["seq"], event_id=row["event_id"])
            self.applied_seq = row["seq"]
            self._dirty = True
            self._since_saved += 1
            if live and readable:
                self.metrics.match_lag.observe(max(0.0, wall - row["created_us"] / 1_000_000))
        self.metrics.matched_seq.set(self.applied_seq)
        self._gauge_deadlines()

    def _gauge_deadlines(self) -> None:
        assert self.matcher is not None
        for rule, n in self.matcher.pending().items():
            self.metrics.deadlines_pending.labels(rule).set(n)

    def _gauge_gateways(self, wall: float) -> None:
        for gateway, (events, held) in self.stream.behind(wall).items():
            self.metrics.gateway_behind_events.labels(gateway).set(events)
            self.metrics.gateway_hold.labels(gateway).set(held)

    def arrived(self) -> int:
        """A batch of copies has come in (the ingest calls this first): until :meth:`settled`
        with the token returned, deadlines are run no later than this moment.

        The stream clock (:class:`StreamClock`) measures how far behind the copies are from
        the copies matched so far; while a batch is being checked and stored it has no newer
        copy to measure by, and would otherwise run on in real time.  A batch that took
        longer than ``result_deadline_s`` to file then had its copies judged late: a balance
        pair settled before the movement in the batch was seen raised balance-break on
        consistent data (bench/README.md, item 39).  Copies not yet here (still at the
        gateway or on the wire) are :meth:`reported_head`'s.
        """
        self._arrival_n += 1
        self._arrivals[self._arrival_n] = self.clock()
        return self._arrival_n

    def reported_head(self, gateway: str, seq: int) -> None:
        """A batch of ``gateway``'s says its journal had reached ``seq`` when it was sent (the
        ingest calls this as the batch comes in).  Until copies up to ``seq`` are taken, and for
        at most ``behind_hold`` seconds after the gateway's last copy taken, deadlines run no
        later than that copy's time (:class:`StreamClock`): the copies after it are known to
        exist, still at the gateway or on the wire (bench/README.md, item 39)."""
        self.stream.head(gateway, seq)

    def settled(self, token: int) -> None:
        """The batch of :meth:`arrived` ``token`` is matched, refused or failed."""
        self._arrivals.pop(token, None)

    def tick(self) -> None:
        """Run the matcher's deadlines (every ``tick_interval``) and persist the alerts due."""
        if self.matcher is None:
            return
        wall = self.clock()
        if self._arrivals:
            wall = min(wall, min(self._arrivals.values()))
        self._gauge_gateways(wall)
        try:
            drafts = self.matcher.tick(self.stream.now(wall))
        except Exception:
            self.metrics.matcher_errors.inc()
            log.failure("ledger.matcher_tick_failed")
            drafts = []
        if drafts:
            self._pending.extend(drafts)
            self._dirty = True
        self._gauge_deadlines()
        self._ticks += 1
        if self._ticks % 10 == 0:
            # Supervisors change states; recount now and then so the gauge cannot drift.
            self.refresh_alert_gauge()
        self._kick()

    # -- persistence -----------------------------------------------------------------

    def _kick(self) -> None:
        if self._flushing is None:
            d = Deferred.fromCoroutine(self._flush_loop())
            if not d.called:  # finished at once (nothing to write): nothing to wait for
                self._flushing = d

    async def _flush_loop(self) -> None:
        try:
            await self._flush(force=False)
        finally:
            self._flushing = None

    async def _flush(self, *, force: bool) -> None:
        """Write pending alerts, with a snapshot when one is due; repeat while there is more."""
        while True:
            due = self._dirty and (force or (self.clock() - self._last_saved_at >= self.snapshot_interval
                                             and self._since_saved >= self.matcher.size()))
            if not self._pending and not due:
                return
            assert self.matcher is not None
            drafts, self._pending = self._pending, []
            state: tuple[int, str] | None = None
            if due:
                # Taken in the same synchronous step as the drafts: the snapshot never
                # covers an alert that is not written with it.
                with gc_paused():
                    state = (self.applied_seq, store.pack_snapshot(self.matcher.snapshot_parts()))
                self._dirty = False
                since, self._since_saved = self._since_saved, 0
            rows = [store.AlertRow(d.key, d.rule, d.severity, d.subject, d.summary, tuple(d.evidence))
                    for d in drafts]
            self._writing = len(drafts)
            try:
                created = await self.db.write(
                    lambda tx, rows=rows, state=state: store.store_alerts(tx, rows, state=state))
            except Exception:
                log.failure("ledger.alert_write_failed", alerts=len(drafts))
                self._pending = drafts + self._pending
                if state is not None:
                    self._dirty = True
                    self._since_saved += since
                return  # the next tick tries again
            finally:
                self._writing = 0
            if state is not None:
                self.saved_seq = state[0]
                self._last_saved_at = self.clock()
            self.alerts_created(created)
            force = False

    def alerts_created(self, created: Sequence[dict[str, Any]]) -> None:
        """Count, log and gauge newly stored alerts (from the matcher or from ingest)."""
        for a in created:
            self.metrics.alerts_raised.labels(a["rule"], a["severity"]).inc()
            self.metrics.open_alerts.labels(a["rule"], a["severity"], "open").inc()
            log.warn("ledger.alert", alert_id=a["id"], rule=a["rule"], severity=a["severity"],
                     subject=a["subject"], summary=a["summary"])

    def refresh_alert_gauge(self) -> None:
        """Recount open and acknowledged alerts from the database (in the background)."""
        d = Deferred.fromCoroutine(self._refresh_gauge())
        d.addErrback(lambda f: log.failure("ledger.alert_gauge_failed", f))

    async def _refresh_gauge(self) -> None:
        counts = await self.db.read(store.alert_counts)
        self.metrics.open_alerts.clear()
        for rule, severity, state, n in counts:
            self.metrics.open_alerts.labels(rule, severity, state).set(n)


