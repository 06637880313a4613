"""``makeLedgerService``: the supervision ledger's whole service tree, and ``hpf-gateway ledger``.

The tree: the database (the gateway's group-commit writer on the ledger
schema), the :class:`~gateway.ledger.checks.CheckPool` (signature, shape and
bank-frame checks, in ``check_processes`` processes beside this one, or on a
small thread pool), the :class:`~gateway.ledger.engine.MatchEngine` (the pure
matcher, its persistence and its one-second deadline timer; its restart
promise is told there), and three listeners: ingest (gateways), supervisor, ops.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client.twisted import MetricsResource
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service

from gateway.daemon import OrderedMultiService
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import Resource

from adapters.base import load_adapter
from gateway.ledger import store
from gateway.ledger.api import IngestApi, SupervisorApi
from gateway.ledger.checks import CheckPool, CopyChecker
from gateway.ledger.config import LedgerConfig, PublicSigningKey, load_public_key
from gateway.ledger.engine import MatchEngine, registry_from_config, thresholds_from_config
from gateway.ledger.ingest import Ingest
from gateway.ledger.metrics import LedgerMetrics
from gateway.listener import is_bound, listening_service, when_listening
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

__all__ = ["Ledger", "makeLedgerService", "run_ledger", "load_signing_keys"]

log = Logger()


def load_signing_keys(config: LedgerConfig) -> dict[str, tuple[str, PublicSigningKey]]:
    """Each gateway's (signature_alg, public key); ``ValueError`` names the bad key file."""
    keys: dict[str, tuple[str, PublicSigningKey]] = {}
    for name, peer in config.gateways.items():
        try:
            keys[name] = (peer.signature_alg, load_public_key(peer.signing_key, peer.signature_alg))
        except ValueError as e:
            raise ValueError(f"gateways.{name}.signing_key: {peer.signing_key}: {e}") from None
    return keys


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
    engine = MatchEngine(db, registry_from_config(config), thresholds_from_config(config), metrics, reactor,
                         behind_hold=config.thresholds.gateway_behind_hold)
    engine.setServiceParent(top)
    ingest = Ingest(db, engine, checks, metrics)
    ingest_api = IngestApi(config, ingest, engine, metrics)
    supervisor_api = SupervisorApi(config, db, engine, keys, metrics)

    listeners: dict[str, StreamServerEndpointService] = {}

    def listen(name: str, description: str, factory: Any) -> None:
        svc = listening_service(serverFromString(reactor, description), factory)
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
        unbound = [name for name, svc in listeners.items() if not is_bound(svc)]
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
        waiting = [when_listening(svc) for svc in ledger.listeners.values()]
        return gatherResults(waiting, consumeErrors=True)

    def reload() -> None:
        ledger.reload()

    def status() -> str:
        return f"copies stored {int(ledger.metrics.journal_seq._value.get())}"

    start_logging()
    return run_daemon(reactor, start=start, drain=lambda: succeed(None),
                      stop=lambda: maybeDeferred(ledger.service.stopService), reload=reload, status=status)
