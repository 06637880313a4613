"""``makeLedgerService``: the supervision ledger's whole service tree, and ``hpf-gateway ledger``.

The tree: the database (the gateway's group-commit writer on the ledger
schema), the :class:`~gateway.ledger.api.CheckPool` (signature, shape and
bank-frame checks, in ``check_processes`` processes beside this one, or on a
small thread pool), the :class:`MatchEngine` (the pure matcher, its
persistence and its one-second deadline timer), and three listeners: ingest
(gateways), supervisor, ops.

Restart promise: the matcher's snapshot and the last ledger seq it covers are
saved together with the alerts it raised up to that point, in one
transaction.  On start the snapshot is restored and every copy after that seq
is fed again before ingest opens (it answers 503 until then); alerts are
stored once per key, so a replayed copy or a re-run deadline never repeats an
alert, and a copy stored just before a crash is never left unmatched.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, GCCollector, Histogram, ProcessCollector
from prometheus_client.twisted import MetricsResource
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service

from gateway.daemon import OrderedMultiService, gc_paused
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import Resource

from adapters.base import load_adapter
from gateway.ledger import store
from gateway.ledger.api import (
    CheckPool,
    CopyChecker,
    Ingest,
    IngestApi,
    SupervisorApi,
)
from gateway.ledger.config import LedgerConfig, PublicSigningKey, load_public_key
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
from gateway.web import TextCheck, guarded_site
from gateway.tls import (
    HTTP_ALPN,
    export_crl_next_updates,
    PartyAnchors,
    ReloadableOptions,
    identity_from_certificate,
    load_certificates,
    server_options,
    tls_server_factory,
)

__all__ = ["LedgerMetrics", "MatchEngine", "Ledger", "makeLedgerService", "run_ledger",
           "registry_from_config", "thresholds_from_config", "load_signing_keys", "SPECIAL_ACCOUNT_TYPES"]

log = Logger()

_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)

SPECIAL_ACCOUNT_TYPES = frozenset({"collection", "loan", "revenue"})
"""Account types that are the fund's special accounts (专户: 归集, 贷款, 增值收益)."""


class LedgerMetrics:
    """Every metric the ledger exports, on a registry of its own (``hpf_ledger_*``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        # The process's CPU, memory and file descriptors, and the cycle collector's work
        # (prometheus_client's standard process_* and python_gc_* families).
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        self.copies = Counter(
            "hpf_ledger_copies", "Copies filed by gateways, by outcome (stored, duplicate, refused).",
            ["gateway", "status"], registry=r)
        self.match_lag = Histogram(
            "hpf_ledger_match_lag_seconds", "From a copy's journal time at the gateway to the matcher taking it.",
            buckets=_LAG_BUCKETS, registry=r)
        self.open_alerts = Gauge(
            "hpf_ledger_open_alerts", "Alerts not resolved, by rule, severity and state (open, acknowledged).",
            ["rule", "severity", "state"], registry=r)
        self.alerts_raised = Counter(
            "hpf_ledger_alerts_raised", "Alerts stored, by rule and severity.", ["rule", "severity"], registry=r)
        self.gateway_last_seq = Gauge(
            "hpf_ledger_gateway_last_seq", "The last gateway journal seq stored from each gateway.",
            ["gateway"], registry=r)
        self.journal_seq = Gauge(
            "hpf_ledger_journal_seq", "The ledger's newest journal seq.", registry=r)
        self.matched_seq = Gauge(
            "hpf_ledger_matched_seq", "The newest ledger seq the matcher has taken into account.", registry=r)
        self.denied = Counter(
            "hpf_ledger_denied", "Requests refused for who made them or for writing, by listener and reason.",
            ["listener", "reason"], registry=r)
        self.api_requests = Counter(
            "hpf_ledger_api_requests", "Requests by listener, route and status.", ["listener", "route", "status"],
            registry=r)
        self.deadlines_pending = Gauge(
            "hpf_ledger_deadlines_pending",
            "The matcher's deadlines not yet run, by rule (result, debit, balance, booking, book, forget-*).",
            ["rule"], registry=r)
        self.alerts_unstored = Gauge(
            "hpf_ledger_alerts_unstored", "Alerts the matcher raised that are not yet written.", registry=r)
        self.matcher_errors = Counter(
            "hpf_ledger_matcher_errors", "Copies or deadlines the matcher failed on (a bug: see the log).",
            registry=r)
        self.crl_next_update = Gauge(
            "hpf_ledger_crl_next_update_timestamp_seconds",
            "When each configured CRL (tls.crls) must be replaced (its nextUpdate, Unix time); past it, "
            "every peer of that issuer is refused.", ["issuer"], registry=r)


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


def load_signing_keys(config: LedgerConfig) -> dict[str, tuple[str, PublicSigningKey]]:
    """Each gateway's (signature_alg, public key); ``ValueError`` names the bad key file."""
    keys: dict[str, tuple[str, PublicSigningKey]] = {}
    for name, peer in config.gateways.items():
        try:
            keys[name] = (peer.signature_alg, load_public_key(peer.signing_key, peer.signature_alg))
        except ValueError as e:
            raise ValueError(f"gateways.{name}.signing_key: {peer.signing_key}: {e}") from None
    return keys


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
                 clock: Callable[[], float] | None = None) -> None:
        self.db = db
        self.registry = registry
        self.thresholds = thresholds
        self.metrics = metrics
        self.reactor = reactor
        self.tick_interval = tick_interval
        self.snapshot_interval = snapshot_interval
        self.replay_page = replay_page
        # The matcher's time is compared with the gateways' wall-clock times: the wall clock,
        # not the reactor's (which runs on the monotonic clock in the daemon).
        self.clock = clock or time.time
        self.matcher: Matcher | None = None
        self.stream = StreamClock()  # deadlines run on the gateways' time, not the copies' queue
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
            readable = row.get("refused") is None  # a copy stored as refused: copy-refused says so
            try:
                fact = facts[i] if facts is not None else None
                if readable and fact is None:
                    fact = Fact.from_copy(store.copy_document(row))
                if fact is not None:
                    now = self.stream.copy(row["gateway"], row["created_us"], wall)
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

    def tick(self) -> None:
        """Run the matcher's deadlines (every ``tick_interval``) and persist the alerts due."""
        if self.matcher is None:
            return
        try:
            drafts = self.matcher.tick(self.stream.now(self.clock()))
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
                    state = (self.applied_seq, json.dumps(self.matcher.snapshot(), separators=(",", ":"),
                                                           ensure_ascii=False))
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


# -- the tree ------------------------------------------------------------------------------


class _PoolService(Service):
    """A named thread pool started and stopped with the tree."""

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        self.pool.start()
        super().startService()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()


@dataclass
class Ledger:
    """Handles on the running parts, for the CLI, the demo and tests."""

    service: MultiService
    config: LedgerConfig
    db: store.LedgerDatabase
    engine: MatchEngine
    checks: CheckPool
    ingest: Ingest
    ingest_api: IngestApi
    supervisor_api: SupervisorApi
    metrics: LedgerMetrics
    listeners: dict[str, StreamServerEndpointService]
    tls_options: dict[str, ReloadableOptions]
    limits: list[Any]  # [the listeners' ConnectionLimits]: one cell, replaced on reload

    def reload(self) -> bool:
        """SIGHUP: new certificates, trust, CRLs, limits and supervisors; open connections the new trust refuses are closed.

        An invalid config is refused whole (logged) and the running one stays;
        gateways and registries apply after a restart.  Returns whether it was applied.
        """
        from gateway.config import ConfigError
        from gateway.ledger.config import load_ledger_config

        try:
            fresh = load_ledger_config(self.config.path)
            rebuilt = _tls_options(fresh)
        except (ConfigError, ValueError, OSError) as e:
            problems = e.problems if isinstance(e, ConfigError) else [str(e)]
            log.error("ledger.reload_refused", problems=" | ".join(problems)[:2000])
            return False
        closed = sum(self.tls_options[name].replace(options) for name, options in rebuilt.items())
        self.limits[0] = fresh.limits
        # Who may read and annotate follows the file at once; gateways need their keys, so a restart.
        self.supervisor_api.config = replace(self.supervisor_api.config, supervisors=fresh.supervisors)
        export_crl_next_updates(self.metrics.crl_next_update, fresh.tls.crls)
        log.info("ledger.reloaded", closed=closed, crls=len(fresh.tls.crls),
                 note="certificates, trust and CRLs reloaded; registries apply after a restart")
        return True
    console: Any = None  # the supervision console, when [console] is configured


def _tls_options(config: LedgerConfig) -> dict[str, Any]:
    """Fresh TLS options for the ingest and supervisor listeners (validates the files)."""
    tls = config.tls
    # Each party is trusted through its own bundle only (tls.ca where it has none).
    gateways = PartyAnchors({("gateway", n): [g.ca or tls.ca] for n, g in config.gateways.items()},
                            default=[tls.ca])
    supervisors = PartyAnchors({("supervisor", n): [s.ca or tls.ca] for n, s in config.supervisors.items()},
                               default=[tls.ca])
    options = {"ingest": server_options(tls.certificate, tls.private_key, gateways, crls=tls.crls, alpn=HTTP_ALPN),
               "supervisor": server_options(tls.certificate, tls.private_key, supervisors, crls=tls.crls,
                                            alpn=HTTP_ALPN)}
    if config.console is not None:
        from gateway.ledger.console import console_trust

        options["console"] = server_options(tls.certificate, tls.private_key, console_trust(config),
                                            crls=tls.crls, alpn=HTTP_ALPN)
    return options


def makeLedgerService(config: LedgerConfig, reactor: Any) -> Ledger:
    """Wire the database, checks, matcher and the ingest, supervisor and ops listeners.

    Raises ``ValueError`` / :class:`gateway.tls.InsecureKeyError` for unusable
    keys or certificates, before anything listens.
    """
    top = OrderedMultiService()
    metrics = LedgerMetrics()
    keys = load_signing_keys(config)
    tls = config.tls
    # Gateways check the ledger's identity before sending; a certificate naming
    # another party would only fail there, far from the cause.
    own = identity_from_certificate(load_certificates(tls.certificate)[0])
    if own.role != "ledger" or own.name != config.name:
        raise ValueError(f"tls.certificate {tls.certificate} names {own.uri}, not hpf://ledger/{config.name} "
                         "(ledger.name)")
    tls_options = {name: ReloadableOptions(o, name) for name, o in _tls_options(config).items()}
    export_crl_next_updates(metrics.crl_next_update, tls.crls)
    ingest_options, supervisor_options = tls_options["ingest"], tls_options["supervisor"]

    db = store.LedgerDatabase(reactor, config.database)
    db.setServiceParent(top)
    pool = ThreadPool(minthreads=1, maxthreads=2, name="hpf-ledger-verify")
    _PoolService(pool).setServiceParent(top)
    checks = CheckPool(CopyChecker(keys, load_adapter), keys, config.check_processes, reactor, pool, load_adapter)
    checks.setServiceParent(top)
    engine = MatchEngine(db, registry_from_config(config), thresholds_from_config(config), metrics, reactor)
    engine.setServiceParent(top)
    ingest = Ingest(db, engine, checks, metrics)
    ingest_api = IngestApi(config, ingest, engine, metrics)
    supervisor_api = SupervisorApi(config, db, engine, keys, metrics)

    listeners: dict[str, StreamServerEndpointService] = {}

    def listen(name: str, description: str, factory: Any) -> None:
        svc = StreamServerEndpointService(serverFromString(reactor, description), factory)
        svc._raiseSynchronously = True
        svc.setName(name)
        svc.setServiceParent(top)
        listeners[name] = svc

    def report(kind: str, event: str, **fields: Any) -> None:
        metrics.denied.labels(fields.get("listener", "?"), kind).inc()
        log.warn(event, kind=kind, **fields)

    # Every listener gets the same guards (gateway.web), read per connection so a reload applies.
    limits = [config.limits]
    guarded = {name: guarded_site(resource, lambda: limits[0], reactor, report, listener=name, tls=tls)
               for name, resource, tls in (("ingest", ingest_api, True), ("supervisor", supervisor_api, True))}
    listen("ingest", config.ingest, tls_server_factory(guarded["ingest"], ingest_options))
    listen("supervisor", config.supervisor, tls_server_factory(guarded["supervisor"], supervisor_options))
    console = None
    if config.console is not None:
        from gateway.ledger.console import console_listener

        console, console_site = console_listener(config, db, engine, keys, metrics, top)
        guarded["console"] = guarded_site(console_site, lambda: limits[0], reactor, report, listener="console",
                                          tls=True)
        listen("console", config.console.listen, tls_server_factory(guarded["console"], tls_options["console"]))

    def ready() -> tuple[bool, str]:
        unbound = [name for name, svc in listeners.items()
                   if svc._waitingForPort is None or not svc._waitingForPort.called]
        if not db.running:
            return False, "database not open"
        if unbound:
            return False, "listeners not bound: " + ", ".join(sorted(unbound))
        if not engine.ready:
            return False, "matcher catching up"
        return True, "ready"

    ops = Resource()
    ops.putChild(b"metrics", MetricsResource(registry=metrics.registry))
    ops.putChild(b"healthz", TextCheck(lambda: (True, "ok")))
    ops.putChild(b"readyz", TextCheck(ready))
    listen("ops", config.ops, guarded_site(ops, lambda: limits[0], reactor, report, listener="ops", tls=False))
    return Ledger(top, config, db, engine, checks, ingest, ingest_api, supervisor_api, metrics, listeners,
                  tls_options, limits, console)


def run_ledger(config_path: str, *, migrate: bool = False) -> int:
    """``hpf-gateway ledger -c CONFIG [--migrate]``: run the ledger daemon until stopped.

    With ``migrate`` the ledger schema is brought up to date first; without
    it the daemon refuses a database that is not current.  Returns the exit
    status: 2 for a bad config, schema, key or certificate (said on stderr).
    """
    from twisted.internet import reactor

    from gateway.config import ConfigError
    from gateway.ledger.config import load_ledger_config
    from gateway.logs import start_logging
    from gateway.store.db import make_engine
    from gateway.store.migrate import SchemaMismatch
    from gateway.tls import InsecureKeyError

    try:
        config = load_ledger_config(config_path)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return 2
    try:
        if migrate:
            before, after = store.MIGRATIONS.upgrade(config.database)
            if before != after:
                print(f"ledger schema {before or 'empty'} -> {after}", file=sys.stderr)
        engine = make_engine(config.database)
        try:
            store.MIGRATIONS.check_current(engine)
        finally:
            engine.dispose()
    except SchemaMismatch as e:
        print(f"hpf-gateway ledger: {e}", file=sys.stderr)
        return 2
    from twisted.internet.defer import gatherResults, maybeDeferred, succeed

    from gateway.daemon import monotonic_timers, run_daemon

    monotonic_timers(reactor)
    try:
        ledger = makeLedgerService(config, reactor)
    except (InsecureKeyError, ValueError) as e:
        print(f"hpf-gateway ledger: {e}", file=sys.stderr)
        return 2

    def start() -> Any:
        ledger.service.startService()
        waiting = [svc._waitingForPort for svc in ledger.listeners.values() if svc._waitingForPort is not None]
        return gatherResults(waiting, consumeErrors=True)

    def reload() -> None:
        ledger.reload()

    def status() -> str:
        return f"copies stored {int(ledger.metrics.journal_seq._value.get())}"

    start_logging()
    return run_daemon(reactor, start=start, drain=lambda: succeed(None),
                      stop=lambda: maybeDeferred(ledger.service.stopService), reload=reload, status=status)
