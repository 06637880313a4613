"""``makeService``: the one function that builds the gateway's whole service tree."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service

from gateway.daemon import OrderedMultiService
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, maybeDeferred
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.internet.endpoints import serverFromString
from twisted.web.server import Site

from adapters.base import load_adapter
from gateway.centre_api import CentreApi, ResultsFeed
from gateway.centre_guard import connection_limits
from gateway.intake import Intake
from gateway.config import GatewayConfig
from gateway.lease import LeaseKeeper
from gateway.exchange import (IgnoredFieldsCollector, ExchangeLink, make_exchange_link,
                              make_exchange_service)
from gateway.front_end import is_front_end, make_front_end_link
from gateway.links import BankLink, make_link_service
from gateway.listener import is_bound, listening_service, when_listening
from gateway.metrics import GatewayMetrics
from gateway.ops import make_ops_site
from gateway.relay import Relay
from gateway.signing import InstructionSigner
from gateway.store.db import Database
from gateway.web import ConnectionGuard, guarded_site
from gateway.tls import (HTTP_ALPN, PartyAnchors, ReloadableOptions, certificate_identity, certificate_inventory,
                         client_options, export_crl_next_updates, server_options, tls_server_factory)

__all__ = ["Gateway", "makeService", "CertificateWatch", "EXPIRY_WARNING_DAYS"]

log = Logger()

#: A certificate expiring within this many days is logged as ``tls.certificate_expiring``.
EXPIRY_WARNING_DAYS = 30
_DAY = 86400.0


def _tls_options(config: GatewayConfig) -> dict[str, Any]:
    """Fresh TLS options for the centre API, every bank link and the ledger link (validates the files).

    Every one gets the configured CRLs (``tls.crls``).
    """
    tls = config.tls
    crls = tls.crls
    # Each party is trusted through its own bundle only (tls.ca where it has none).
    centres = PartyAnchors({("centre", cid): [c.ca or tls.ca] for cid, c in config.centres.items()},
                           default=[tls.ca])
    out: dict[str, Any] = {"centre_api": server_options(tls.certificate, tls.private_key, centres,
                                                        crls=crls, alpn=HTTP_ALPN)}
    for bank_id, bank in config.banks.items():
        make = server_options if bank.direction == "listen" else client_options
        out[f"bank_{bank_id}"] = make(tls.certificate, tls.private_key,
                                      PartyAnchors({("bank", bank_id): [bank.ca or tls.ca]}), crls=crls)
    if config.ops_tls:
        operators = PartyAnchors({("operator", n): [o.ca or tls.ca] for n, o in config.operators.items()},
                                 default=[tls.ca])
        out["ops"] = server_options(tls.certificate, tls.private_key, operators, crls=crls, alpn=HTTP_ALPN)
    if config.ledger is not None:
        out["ledger"] = client_options(tls.certificate, tls.private_key,
                                       PartyAnchors({("ledger", config.ledger.name): [config.ledger.ca or tls.ca]}),
                                       crls=crls)
    return out


def _instruction_signers(config: GatewayConfig) -> dict[str, InstructionSigner]:
    """A signer for every bank whose ``signature_alg`` is not "none" (loads and checks the keys)."""
    return {bank_id: InstructionSigner(bank.signing_key, bank.signature_alg)
            for bank_id, bank in config.banks.items()
            if bank.signature_alg != "none" and bank.signing_key is not None}


def _trust_scopes(config: GatewayConfig) -> dict[str, list[Any]]:
    """Every trust bundle in use, by who it is trusted for (labels of the expiry gauge)."""
    tls = config.tls
    scopes: dict[str, list[Any]] = {"default": [tls.ca]}
    for centre_id, centre in config.centres.items():
        if centre.ca is not None and centre.ca != tls.ca:
            scopes[f"centre/{centre_id}"] = [centre.ca]
    for bank_id, bank in config.banks.items():
        if bank.ca is not None and bank.ca != tls.ca:
            scopes[f"bank/{bank_id}"] = [bank.ca]
    if config.ledger is not None and config.ledger.ca is not None and config.ledger.ca != tls.ca:
        scopes["ledger"] = [config.ledger.ca]
    return scopes


class CertificateWatch(Service):
    """Exports when each certificate we present or trust expires, and warns ahead of it.

    ``check`` (at start, on every reload, and daily) sets
    ``hpf_gateway_certificate_expiry_timestamp_seconds{peer=...}`` for our own
    certificate and every trust anchor (labels: :func:`gateway.tls.certificate_inventory`),
    dropping labels no longer configured, and logs ``tls.certificate_expiring``
    (warning) for each one expiring within ``EXPIRY_WARNING_DAYS`` days or
    already expired, and ``tls.crl_stale`` (error) for a CRL past its nextUpdate
    or ``tls.crl_expiring`` (warning) within a day of it: after that every
    peer of its CA is refused.
    """

    name = "certificate-watch"

    def __init__(self, config: GatewayConfig, metrics: GatewayMetrics, clock: Any,
                 interval: float = _DAY, wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.metrics = metrics
        self.clock = clock  # schedules the daily check
        self.wall = wall    # what the certificates' dates are compared with
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock
        self.interval = interval

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def check(self) -> list[tuple[str, float]]:
        """Refresh the gauge and log what expires soon; returns (label, expiry Unix time) pairs."""
        now = self.wall()  # certificates' dates: the wall clock, not the reactor's
        try:
            inventory = certificate_inventory(self.config.tls.certificate, _trust_scopes(self.config))
            crls = export_crl_next_updates(self.metrics.crl_next_update, self.config.tls.crls)
        except (ValueError, OSError) as e:
            log.error("tls.certificate_check_failed", error=str(e)[:300])
            return []
        gauge = self.metrics.certificate_expiry
        out: list[tuple[str, float]] = []
        for label, not_after in inventory:
            expires = not_after.timestamp()
            gauge.labels(label).set(expires)
            out.append((label, expires))
        # Drop anchors no longer configured (set first, then remove: a scrape, which runs
        # in a thread, never sees the gauge empty).
        current = {label for label, _ in out}
        stale = {s.labels["peer"] for m in gauge.collect() for s in m.samples} - current
        for label in stale:
            gauge.remove(label)
        for label, not_after in inventory:
            expires = not_after.timestamp()
            days = (expires - now) / _DAY
            if days < EXPIRY_WARNING_DAYS:
                log.warn("tls.certificate_expiring", peer=label, not_after=not_after.isoformat(),
                         days_left=round(days, 1), expired=days <= 0)
        for issuer, next_update in crls:
            if next_update is None:
                continue
            hours = (next_update.timestamp() - now) / 3600
            if hours <= 0:
                log.error("tls.crl_stale", issuer=issuer, next_update=next_update.isoformat())
            elif hours < 24:
                log.warn("tls.crl_expiring", issuer=issuer, next_update=next_update.isoformat(),
                         hours_left=round(hours, 1))
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
    links: dict[str, BankLink | ExchangeLink]
    listeners: dict[str, StreamServerEndpointService]
    forwarder: Any = None
    tls_options: dict[str, ReloadableOptions] = field(default_factory=dict)
    reactor: Any = None
    keepers: dict[str, LeaseKeeper] = field(default_factory=dict)
    certificates: CertificateWatch | None = None
    site: Site | None = None
    centre_bdc: Any = None      # the centre listener's factory (gateway/centre_bdc.py), when configured
    notice_pusher: Any = None   # SBDC100 notices to centres (gateway/centre_notify.py), when any has bdc_notify

    def start(self) -> Deferred[None]:
        """Start every service; fires once every listener is bound (then the daemon is ready)."""
        self.service.startService()
        waiting = [when_listening(svc) for svc in self.listeners.values()]
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
        left = sum(d.in_flight for d in self.relay.dispatchers.values())
        log.info("gateway.drained", awaiting_receipt=left)

    def stop(self) -> Deferred[None]:
        return maybeDeferred(self.service.stopService)

    def status(self) -> str:
        """One line for systemd's STATUS=: links up, queue depths, in-flight."""
        parts = []
        for bank_id, d in self.relay.dispatchers.items():
            c = d.counts()
            parts.append(f"{bank_id}:{'up' if d.session else 'down'} q={c['queued']} "
                         f"w={c['awaiting_receipt']} r={c['awaiting_result']}")
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
            signers = _instruction_signers(new)
        except (ConfigError, ValueError, OSError) as e:
            problems = e.problems if isinstance(e, ConfigError) else [str(e)]
            log.error("gateway.reload_refused", problems=" | ".join(problems)[:2000])
            return
        if set(new.banks) != set(self.config.banks) or new.database != self.config.database:
            log.warn("gateway.reload_partial", reason="banks or database changed: restart to apply those")
        for holder in (self, self.api, self.api.intake, self.relay):
            holder.config = new
        for bank_id, d in self.relay.dispatchers.items():
            d.config = new
            d.timeouts = new.timeouts
            d.bank = new.banks.get(d.bank.id, d.bank)
            d.instruction_signer = signers.get(bank_id)
        closed = 0
        for name, options in rebuilt.items():
            if name in self.tls_options:
                # Open connections the new trust refuses (revoked, party removed) are closed now.
                closed += self.tls_options[name].replace(options)
        for link in self.links.values():
            if isinstance(link, ExchangeLink):
                link.recheck()  # no connection stays open to close: a probe meets the new trust now
        if self.site is not None:
            self.site.timeOut = new.limits.centre_idle_timeout  # new connections
        if self.certificates is not None:
            self.certificates.config = new
            self.certificates.check()
        log.info("gateway.reloaded", closed=closed, centres=len(new.centres), accounts=len(new.accounts),
                 counterparties=len(new.counterparties), crls=len(new.tls.crls))


class _LinkOwnership:
    """What a node does when it gains or loses a bank link's lease.

    A listener cannot be started again once stopped (Twisted keeps its old
    port Deferred), so every gain builds the link's service afresh.
    """

    def __init__(self, reactor: Any, link: BankLink | ExchangeLink, options: Any, guard: Any) -> None:
        self.reactor, self.link, self.options, self.guard = reactor, link, options, guard
        self.service: Any = None

    def gained(self, epoch: int) -> None:
        dispatcher = self.link.dispatcher
        dispatcher.activate(dispatcher.owner, dispatcher.lease_name, epoch).addErrback(
            lambda f: log.failure("relay.load_failed", f, bank=dispatcher.bank.id))
        if self.service is None:
            self.service = _link_service(self.reactor, self.link, self.options, self.guard)
            self.service.startService()

    def lost(self) -> None:
        service, self.service = self.service, None
        if service is not None:
            service.stopService()
        self.link.drop_all()
        self.link.dispatcher.deactivate()


def _link_service(reactor: Any, link: Any, options: Any, guard: Any) -> Any:
    """The service keeping ``link``: a persistent session, or per-request exchanges."""
    from gateway.sftp_link import SftpLink, make_sftp_service

    if isinstance(link, SftpLink):
        return make_sftp_service(link)
    if isinstance(link, ExchangeLink):
        return make_exchange_service(reactor, link, options, guard)
    return make_link_service(reactor, link, options, guard)


def _adapter_for(config: GatewayConfig, bank: Any) -> Any:
    """Bank ``bank``'s adapter, tuned to the gateway's config when it offers ``for_gateway``."""
    adapter = load_adapter(bank.adapter)
    tune = getattr(adapter, "for_gateway", None)
    return tune(config, bank) if tune is not None else adapter


def _centre_bdc_service(config: GatewayConfig, intake: Intake, db: Database, metrics: GatewayMetrics,
                        reactor: Any, api: CentreApi, options: Any) -> StreamServerEndpointService:
    """The listener for centres' bdc software: the centre API's trust and connection guards."""
    from adapters.bdc import BdcAdapter
    from gateway.centre_bdc import CentreBdcFactory, CentreDesk

    factory = CentreBdcFactory(CentreDesk(intake, db, node=config.node), BdcAdapter(echo=False), metrics,
                               reactor, timeout=config.limits.centre_request_timeout)
    guard = ConnectionGuard(factory, lambda: connection_limits(api.config.limits), reactor,
                            metrics.security_event, listener="centre_bdc", requests=False)
    service = listening_service(serverFromString(reactor, config.centre_bdc or ""), tls_server_factory(guard, options))
    service.setName("centre-bdc")
    service.bdc_factory = factory  # type: ignore[attr-defined]
    return service


def _notice_pusher(config: GatewayConfig, db: Database, metrics: GatewayMetrics, reactor: Any) -> Any:
    """SBDC100 notices to the centres with ``bdc_notify`` (gateway/centre_notify.py): dialled with
    the gateway's certificate, each centre's peer checked against its own anchor and name."""
    from twisted.internet.endpoints import clientFromString

    from adapters.bdc import BdcAdapter
    from gateway.centre_notify import NoticePusher
    from gateway.exchange import StreamTransport
    from gateway.tls import peer_check, tls_client_endpoint

    def transport_for(centre_id: str, endpoint: str) -> StreamTransport:
        tls = config.tls
        centre = config.centres[centre_id]
        options = client_options(tls.certificate, tls.private_key,
                                 PartyAnchors({("centre", centre_id): [centre.ca or tls.ca]}), crls=tls.crls)
        return StreamTransport(tls_client_endpoint(clientFromString(reactor, endpoint), options),
                               BdcAdapter(echo=False).framer, reactor,
                               timeout=config.limits.centre_request_timeout,
                               check_peer=peer_check("centre", centre_id))

    return NoticePusher(lambda: config, db, BdcAdapter(echo=False), reactor, metrics, transport_for)


def makeService(config: GatewayConfig, reactor: Any) -> Gateway:  # noqa: N802 (Twisted convention)
    """Wire the database, relay, bank links, centre API and ops listener under one MultiService."""
    top = OrderedMultiService()
    metrics = GatewayMetrics()
    # A node paused inside a transaction must not keep its row locks (journal
    # head, leases) past the point where another node takes its leases over.
    db = Database(reactor, config.database, idle_in_transaction_timeout=config.timeouts.lease_ttl / 2)
    db.setServiceParent(top)
    adapters = {bank_id: _adapter_for(config, bank) for bank_id, bank in config.banks.items()}
    relay = Relay(config, db, reactor, metrics, adapters)
    metrics.registry.register(IgnoredFieldsCollector(adapters))
    relay.setServiceParent(top)

    feed = ResultsFeed()
    db.on_commit(feed.notify)
    intake = Intake(config, db, relay.enqueue, metrics, encodable=relay.encodable, backpressure=relay.refusal)
    intake.bank_batch = relay.bank_batch_refusal
    api = CentreApi(config, intake, db, feed, metrics, reactor)

    tls = config.tls
    tls_options = {name: ReloadableOptions(o, name) for name, o in _tls_options(config).items()}
    signers = _instruction_signers(config)
    for bank_id, dispatcher in relay.dispatchers.items():
        dispatcher.instruction_signer = signers.get(bank_id)
    certificates = CertificateWatch(config, metrics, reactor)
    certificates.setServiceParent(top)
    api_options = tls_options["centre_api"]
    listeners: dict[str, StreamServerEndpointService] = {}
    guard = guarded_site(api, lambda: connection_limits(api.config.limits), reactor, metrics.security_event,
                         listener="centre_api")
    site = guard.wrappedFactory
    api_service = listening_service(serverFromString(reactor, config.centre_api), tls_server_factory(guard, api_options))
    api_service.setName("centre-api")
    api_service.setServiceParent(top)
    listeners["centre_api"] = api_service
    if config.centre_bdc is not None:  # centres' bdc software (docs/protocols/bdc.md, "The centre role")
        listeners["centre_bdc"] = _centre_bdc_service(config, intake, db, metrics, reactor, api, api_options)
        listeners["centre_bdc"].setServiceParent(top)

    # With PostgreSQL, several nodes may share the database: each bank link,
    # and the forwarder, runs on the node holding its lease.  The keeper starts
    # the link when this node gains the lease and stops it (dropping
    # connections) when it loses it.  SQLite is one node's own file: that node
    # owns everything, with no leases to renew.
    shared = not config.database.startswith("sqlite")
    links: dict[str, BankLink | ExchangeLink] = {}
    keepers: dict[str, LeaseKeeper] = {}
    ttl = config.timeouts.lease_ttl

    def bank_guard(factory: Any, listener: str) -> ConnectionGuard:
        # The centre API's address cap and handshake deadline; the link's own heartbeats watch the rest.
        return ConnectionGuard(factory, lambda: connection_limits(api.config.limits), reactor,
                               metrics.security_event, listener=listener, requests=False)

    for bank_id, bank in config.banks.items():
        dispatcher = relay.dispatchers[bank_id]
        if is_front_end(bank):
            link = make_front_end_link(reactor, config, bank, adapters[bank_id], dispatcher, metrics)
        elif bank.sftp is not None:   # ISO 20022 files on the bank's SFTP server
            from gateway.sftp_link import make_sftp_link

            link = make_sftp_link(reactor, bank, adapters[bank_id], dispatcher, metrics, db,
                                  gateway_node=config.node)
        elif bank.connection == "per_request":
            link = make_exchange_link(reactor, bank, adapters[bank_id], dispatcher, metrics,
                                      tls_options[f"bank_{bank_id}"], gateway_node=config.node,
                                      heartbeat_interval=config.timeouts.heartbeat_interval,
                                      dead_after=config.timeouts.dead_after)
        else:
            link = BankLink(bank, adapters[bank_id], dispatcher, reactor, metrics,
                            gateway_node=config.node, heartbeat_interval=config.timeouts.heartbeat_interval,
                            dead_after=config.timeouts.dead_after)
        links[bank_id] = link
        if not shared:
            _link_service(reactor, link, tls_options[f"bank_{bank_id}"], bank_guard).setServiceParent(top)
            continue
        dispatcher.active = False
        dispatcher.owner = config.instance
        ownership = _LinkOwnership(reactor, link, tls_options[f"bank_{bank_id}"], bank_guard)
        keeper = LeaseKeeper(db, reactor, lease=dispatcher.lease_name, owner=config.instance, ttl=ttl,
                             on_gain=ownership.gained, on_lose=ownership.lost)
        dispatcher.on_fenced = keeper.fenced
        dispatcher.lease_fresh = keeper.fresh
        keeper.setServiceParent(top)
        keepers[dispatcher.lease_name] = keeper

    def ready() -> tuple[bool, str]:
        unbound = [name for name, svc in listeners.items() if not is_bound(svc)]
        if not db.running:
            return False, "database not open"
        if unbound:
            return False, "listeners not bound: " + ", ".join(sorted(unbound))
        return True, "ready"

    forwarder = None
    if config.ledger is not None:
        from gateway.forwarder import LedgerForwarder

        # The ledger link gets the same CRLs and SIGHUP reload as every other link.
        # Alone, every journal write is this process's and wakes the forwarder; the slow look
        # is only a net.  Sharing the database, other nodes' events are found by looking.
        forwarder = LedgerForwarder(config, db, reactor, metrics, tls_options["ledger"],
                                    gateway_name=certificate_identity(tls.certificate).name,
                                    idle_interval=1.0 if shared else 5.0)
    if forwarder is not None and not shared:
        forwarder.setServiceParent(top)
    elif forwarder is not None:
        keeper = LeaseKeeper(db, reactor, lease="ledger-forwarder", owner=config.instance, ttl=ttl,
                             on_gain=lambda epoch: forwarder.startService(),
                             on_lose=lambda: forwarder.stopService())
        keeper.setServiceParent(top)
        keepers["ledger-forwarder"] = keeper

    pusher = None
    if any(c.bdc_notify for c in config.centres.values()):  # docs/protocols/bdc.md, "The centre role"
        pusher = _notice_pusher(config, db, metrics, reactor)
        if not shared:
            pusher.setServiceParent(top)
        else:  # one node pushes: the lease's holder (a handover may repeat a notice: harmless)
            keeper = LeaseKeeper(db, reactor, lease="centre-notices", owner=config.instance, ttl=ttl,
                                 on_gain=lambda epoch: pusher.startService(),
                                 on_lose=lambda: pusher.stopService())
            keeper.setServiceParent(top)
            keepers["centre-notices"] = keeper

    gateway = Gateway(top, config, db, relay, api, metrics, links, listeners, forwarder, tls_options, reactor,
                      keepers, certificates, site)
    if "centre_bdc" in listeners:
        gateway.centre_bdc = listeners["centre_bdc"].bdc_factory  # type: ignore[attr-defined]
    gateway.notice_pusher = pusher
    # The ops site shows the running parts, so it is built last, from the handle.
    ops_factory: Any = make_ops_site(gateway, ready, lambda: connection_limits(gateway.config.limits))
    if config.ops_tls:
        ops_factory = tls_server_factory(ops_factory, tls_options["ops"])
    ops_service = listening_service(serverFromString(reactor, config.ops), ops_factory)
    ops_service.setName("ops")
    ops_service.setServiceParent(top)
    listeners["ops"] = ops_service
    return gateway
