"""``makeService``: the one function that builds the gateway's whole service tree."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService

from gateway.daemon import OrderedMultiService
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, maybeDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.internet.endpoints import serverFromString
from twisted.web.server import Site

from adapters.base import load_adapter
from gateway.centre_api import CentreApi, Intake, ResultsFeed, make_site
from gateway.config import GatewayConfig
from gateway.lease import LeaseKeeper
from gateway.links import BankLink, make_link_service
from gateway.metrics import GatewayMetrics
from gateway.ops import make_ops_site
from gateway.relay import Relay
from gateway.store.db import Database
from gateway.tls import (ReloadableOptions, certificate_identity, client_options, server_options,
                         tls_server_factory)

__all__ = ["Gateway", "makeService"]

log = Logger()


def _tls_options(config: GatewayConfig) -> dict[str, Any]:
    """Fresh TLS options for the centre API and every bank link (validates the files)."""
    tls = config.tls
    centre_trust = sorted({c.ca or tls.ca for c in config.centres.values()} | {tls.ca})
    out: dict[str, Any] = {"centre_api": server_options(tls.certificate, tls.private_key, centre_trust)}
    for bank_id, bank in config.banks.items():
        make = server_options if bank.direction == "listen" else client_options
        out[f"bank_{bank_id}"] = make(tls.certificate, tls.private_key, [bank.ca or tls.ca])
    return out


@dataclass
class Gateway:
    """Handles on the running parts, for the CLI, the demo and tests."""

    service: MultiService
    config: GatewayConfig
    db: Database
    relay: Relay
    api: CentreApi
    metrics: GatewayMetrics
    links: dict[str, BankLink]
    listeners: dict[str, StreamServerEndpointService]
    forwarder: Any = None
    tls_options: dict[str, ReloadableOptions] = field(default_factory=dict)
    reactor: Any = None
    keepers: dict[str, LeaseKeeper] = field(default_factory=dict)

    def start(self) -> Deferred[None]:
        """Start every service; fires once every listener is bound (then the daemon is ready)."""
        self.service.startService()
        waiting = [svc._waitingForPort for svc in self.listeners.values() if svc._waitingForPort is not None]
        return gatherResults(waiting, consumeErrors=True).addCallback(lambda _: None)

    @inlineCallbacks
    def drain(self, deadline: float | None = None) -> Any:
        """Stop intake (503), commit what is in flight, wait for receipts of what is on the wire."""
        self.api.accepting = False
        yield self.db.writer.idle()
        limit = self.config.timeouts.shutdown_drain if deadline is None else deadline
        end = self.reactor.seconds() + limit
        while self.reactor.seconds() < end and any(
                d.in_flight and d.session is not None for d in self.relay.dispatchers.values()):
            yield deferLater(self.reactor, 0.05, lambda: None)
        yield self.db.writer.idle()
        left = sum(len(d.in_flight) for d in self.relay.dispatchers.values())
        log.info("gateway.drained", awaiting_receipt=left)

    def stop(self) -> Deferred[None]:
        return maybeDeferred(self.service.stopService)

    def status(self) -> str:
        """One line for systemd's STATUS=: links up, queue depths, in-flight."""
        parts = []
        for bank_id, d in self.relay.dispatchers.items():
            parts.append(f"{bank_id}:{'up' if d.session else 'down'} q={len(d.pending)} "
                         f"w={len(d.in_flight)} r={len(d.waiting)}")
        return "; ".join(parts) or "no banks"

    def reload(self) -> None:
        """SIGHUP: re-read the config; swap registries, limits and certificates; keep live links.

        An invalid config is refused whole (logged) and the running one stays.
        Banks added or removed, listeners and the database need a restart.
        """
        from gateway.config import ConfigError, load_config

        try:
            new = load_config(self.config.path)
            rebuilt = _tls_options(new)
        except (ConfigError, ValueError, OSError) as e:
            problems = e.problems if isinstance(e, ConfigError) else [str(e)]
            log.error("gateway.reload_refused", problems=" | ".join(problems)[:2000])
            return
        if set(new.banks) != set(self.config.banks) or new.database != self.config.database:
            log.warn("gateway.reload_partial", reason="banks or database changed: restart to apply those")
        for holder in (self, self.api, self.api.intake, self.relay):
            holder.config = new
        for d in self.relay.dispatchers.values():
            d.config = new
            d.timeouts = new.timeouts
            d.bank = new.banks.get(d.bank.id, d.bank)
        for name, options in rebuilt.items():
            if name in self.tls_options:
                self.tls_options[name].replace(options)
        log.info("gateway.reloaded", centres=len(new.centres), accounts=len(new.accounts),
                 counterparties=len(new.counterparties))


def _link_gained(dispatcher: Any, service: Any) -> Any:
    def gained(epoch: int) -> None:
        dispatcher.activate(dispatcher.owner, dispatcher.lease_name, epoch).addErrback(
            lambda f: log.failure("relay.load_failed", f, bank=dispatcher.bank.id))
        if not service.running:
            service.startService()
    return gained


def _link_lost(dispatcher: Any, service: Any, link: BankLink) -> Any:
    def lost() -> None:
        if service.running:
            service.stopService()
        link.drop_all()
        dispatcher.deactivate()
    return lost


def makeService(config: GatewayConfig, reactor: Any) -> Gateway:  # noqa: N802 (Twisted convention)
    """Wire the database, relay, bank links, centre API and ops listener under one MultiService."""
    top = OrderedMultiService()
    metrics = GatewayMetrics()
    db = Database(reactor, config.database)
    db.setServiceParent(top)
    adapters = {bank_id: load_adapter(bank.adapter) for bank_id, bank in config.banks.items()}
    relay = Relay(config, db, reactor, metrics, adapters)
    relay.setServiceParent(top)

    feed = ResultsFeed()
    db.on_commit(feed.notify)
    intake = Intake(config, db, relay.enqueue, metrics, encodable=relay.encodable, backpressure=relay.refusal)
    api = CentreApi(config, intake, db, feed, metrics, reactor)

    tls = config.tls
    tls_options = {name: ReloadableOptions(o) for name, o in _tls_options(config).items()}
    api_options = tls_options["centre_api"]
    listeners: dict[str, StreamServerEndpointService] = {}
    api_service = StreamServerEndpointService(
        serverFromString(reactor, config.centre_api), tls_server_factory(make_site(api), api_options))
    api_service._raiseSynchronously = True
    api_service.setName("centre-api")
    api_service.setServiceParent(top)
    listeners["centre_api"] = api_service

    # With PostgreSQL, several nodes may share the database: each bank link,
    # and the forwarder, runs on the node holding its lease.  The keeper starts
    # the link when this node gains the lease and stops it (dropping
    # connections) when it loses it.  SQLite is one node's own file: that node
    # owns everything, with no leases to renew.
    shared = not config.database.startswith("sqlite")
    links: dict[str, BankLink] = {}
    keepers: dict[str, LeaseKeeper] = {}
    ttl = config.timeouts.lease_ttl
    for bank_id, bank in config.banks.items():
        dispatcher = relay.dispatchers[bank_id]
        link = BankLink(bank, adapters[bank_id], dispatcher, reactor, metrics,
                        gateway_node=config.node, heartbeat_interval=config.timeouts.heartbeat_interval,
                        dead_after=config.timeouts.dead_after)
        svc = make_link_service(reactor, link, tls_options[f"bank_{bank_id}"])
        inner = svc.getServiceNamed(f"link-{bank_id}")
        if isinstance(inner, StreamServerEndpointService):
            inner._raiseSynchronously = True
        links[bank_id] = link
        if not shared:
            svc.setServiceParent(top)
            continue
        dispatcher.active = False
        dispatcher.owner = config.instance
        keeper = LeaseKeeper(db, reactor, lease=dispatcher.lease_name, owner=config.instance, ttl=ttl,
                             on_gain=_link_gained(dispatcher, svc), on_lose=_link_lost(dispatcher, svc, link))
        dispatcher.on_fenced = keeper.fenced
        dispatcher.lease_fresh = keeper.fresh
        keeper.setServiceParent(top)
        keepers[dispatcher.lease_name] = keeper

    def ready() -> tuple[bool, str]:
        unbound = [name for name, svc in listeners.items() if svc._waitingForPort is None
                   or not svc._waitingForPort.called]
        if not db.running:
            return False, "database not open"
        if unbound:
            return False, "listeners not bound: " + ", ".join(sorted(unbound))
        return True, "ready"

    forwarder = None
    if config.ledger is not None:
        from gateway.forwarder import LedgerForwarder

        forwarder = LedgerForwarder(config, db, reactor, metrics,
                                    gateway_name=certificate_identity(tls.certificate).name)
    if forwarder is not None and not shared:
        forwarder.setServiceParent(top)
    elif forwarder is not None:
        keeper = LeaseKeeper(db, reactor, lease="ledger-forwarder", owner=config.instance, ttl=ttl,
                             on_gain=lambda epoch: forwarder.startService(),
                             on_lose=lambda: forwarder.stopService())
        keeper.setServiceParent(top)
        keepers["ledger-forwarder"] = keeper

    gateway = Gateway(top, config, db, relay, api, metrics, links, listeners, forwarder, tls_options, reactor,
                      keepers)
    # The ops site shows the running parts, so it is built last, from the handle.
    ops_service = StreamServerEndpointService(serverFromString(reactor, config.ops),
                                              make_ops_site(gateway, ready))
    ops_service._raiseSynchronously = True
    ops_service.setName("ops")
    ops_service.setServiceParent(top)
    listeners["ops"] = ops_service
    return gateway
