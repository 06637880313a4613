"""``make_bank_service``: a simulated bank as a Twisted service, dialling or listening over mutual TLS."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from twisted.application.internet import ClientService, StreamServerEndpointService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
)
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from adapters.base import (
    Adapter,
    load_adapter,
)
from gateway.listener import listening_service, when_listening
from gateway.simulate.bank import BankCore
from gateway.simulate.bank_exchange import ExchangeBankFactory, ExchangeBankLink
from gateway.simulate.bank_link import BankLink, BankSimFactory
from gateway.tls import (
    client_options,
    peer_identity,
    server_options,
    tls_client_endpoint,
    tls_server_factory,
)

__all__ = ["BankService", "make_bank_service", "exchange_bank_service", "write_json_atomically"]

_log = Logger()


class BankService(MultiService):
    """The running simulated bank: its link service and, with ``stats_path``, a stats writer.

    ``core`` and ``link`` are the live objects (tests read them);
    :meth:`when_listening` gives the bound port in the "listen" role.  Stats
    are written as JSON atomically every second while they change, and once
    more at stop.
    """

    def __init__(self, link: BankLink, *, stats_path: Path | None = None) -> None:
        super().__init__()
        self.link = link
        self.core = link.core
        self.stats_path = stats_path
        self._listener: StreamServerEndpointService | None = None
        self._stats_loop: LoopingCall | None = None
        self._written: tuple[int, int] | None = None

    def when_listening(self) -> Deferred[IListeningPort]:
        """The listening port in the "listen" role; fails in the "dial" role."""
        if self._listener is None:
            return fail(RuntimeError("this bank dials the gateway; it does not listen"))
        return when_listening(self._listener)

    def startService(self) -> None:
        super().startService()
        if self.stats_path is not None:
            self._stats_loop = LoopingCall(self._write_stats_if_changed)
            self._stats_loop.clock = self.link.reactor
            self._stats_loop.start(1.0, now=True)

    def stopService(self) -> Deferred[None]:
        if self._stats_loop is not None and self._stats_loop.running:
            self._stats_loop.stop()
        d = maybeDeferred(super().stopService)
        self.link.close_all()
        self.link.stop()

        def final(result: object) -> object:
            if self.stats_path is not None:
                self.write_stats()
            return result

        return d.addBoth(final)

    def _write_stats_if_changed(self) -> None:
        mark = (self.core.version, sum(self.link.counters.values()))
        if mark != self._written:
            self.write_stats()
            self._written = mark

    def write_stats(self) -> None:
        """Write the stats JSON to ``stats_path`` atomically (temp file, then rename)."""
        if self.stats_path is None:
            return
        try:
            write_json_atomically(self.stats_path, self.link.stats())
        except OSError as e:
            _log.error("bank.stats_write_failed path={path} reason={reason}", path=str(self.stats_path),
                       reason=str(e))


def write_json_atomically(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON so that a reader sees the old or the new file, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def make_bank_service(
    reactor: Any,
    *,
    adapter_name: str,
    bank_id: str,
    node: str,
    role: Literal["dial", "listen"],
    endpoint: str,
    certificate: Path,
    private_key: Path,
    trust: Sequence[Path],
    core: BankCore,
    gateway_node: str = "D00000",
    heartbeat_interval: float = 15.0,
    stats_path: Path | None = None,
    retry_policy: Callable[[int], float] | None = None,
    connection: Literal["persistent", "per_request"] = "persistent",
    push_endpoint: str | None = None,
) -> BankService:
    """The simulated bank ``bank_id`` as a service, speaking adapter ``adapter_name`` over mutual TLS.

    ``role`` "dial": the bank dials the gateway's bank listener at the client
    endpoint string ``endpoint`` and redials with exponential backoff and
    jitter (``retry_policy``, default 0.5 s doubling up to 30 s) whenever the
    connection ends.  ``role`` "listen": the bank listens on the server
    endpoint string ``endpoint`` and the gateway dials it.  Either way the
    bank presents ``certificate``/``private_key``, trusts only ``trust``, and
    talks only to a peer whose certificate names ``hpf://gateway/…``.

    ``connection`` "per_request" is the deployed bdc model (:class:`ExchangeBankLink`): the
    bank listens on ``endpoint`` for the gateway's requests, one per connection, and
    dials ``push_endpoint`` (a client endpoint string) for each of its pushes; ``role``
    is then "listen".

    ``node`` and ``gateway_node`` must be the core's (they are checked, so a
    CLI cannot wire a bank that refuses its own gateway).  Raises
    ``ValueError``/``KeyError`` for bad options, an unknown adapter or bad TLS files.
    """
    if node != core.node:
        raise ValueError(f"node {node!r} is not the core's node {core.node!r}")
    if gateway_node != core.gateway_node:
        raise ValueError(f"gateway_node {gateway_node!r} is not the core's {core.gateway_node!r}")
    adapter = load_adapter(adapter_name)
    if connection == "per_request":
        return exchange_bank_service(reactor, adapter, bank_id=bank_id, endpoint=endpoint,
                                      push_endpoint=push_endpoint, certificate=certificate,
                                      private_key=private_key, trust=trust, core=core,
                                      heartbeat_interval=heartbeat_interval, stats_path=stats_path)
    link = BankLink(reactor, core, adapter, bank_id=bank_id, heartbeat_interval=heartbeat_interval)
    factory = BankSimFactory(link)
    service = BankService(link, stats_path=stats_path)
    if role == "dial":
        tls_endpoint = tls_client_endpoint(clientFromString(reactor, endpoint),
                                           client_options(certificate, private_key, trust))
        policy = retry_policy or backoffPolicy(initialDelay=0.5, maxDelay=30.0, factor=2.0)
        ClientService(tls_endpoint, factory, retryPolicy=policy, clock=reactor).setServiceParent(service)
    elif role == "listen":
        listener = listening_service(serverFromString(reactor, endpoint),
                                     tls_server_factory(factory, server_options(certificate, private_key, trust)))
        listener.setServiceParent(service)
        service._listener = listener
    else:
        raise ValueError(f"role must be 'dial' or 'listen', not {role!r}")
    return service


def exchange_bank_service(reactor: Any, adapter: Adapter, *, bank_id: str, endpoint: str,
                           push_endpoint: str | None, certificate: Path, private_key: Path,
                           trust: Sequence[Path], core: BankCore, heartbeat_interval: float,
                           stats_path: Path | None) -> BankService:
    """The per-request bank (see :func:`make_bank_service`)."""
    from gateway.exchange import StreamTransport

    variant = getattr(adapter, "variant", None)
    if variant is not None:
        adapter = variant(echo=False)  # the deployed dialect: answers name no request
    # The deployed interface pushes no results: an outcome not in the answer is asked with
    # BDC110 (and the money shows in the SBDC100 notice).
    core.push_results = False
    push = None
    if push_endpoint is not None:
        def gateway_only(transport: Any) -> str | None:
            try:
                peer = peer_identity(transport)
            except ValueError as e:
                return str(e)
            return None if peer is not None and peer.role == "gateway" else "peer is not a gateway"

        push = StreamTransport(
            tls_client_endpoint(clientFromString(reactor, push_endpoint),
                                client_options(certificate, private_key, trust)),
            adapter.framer, reactor, timeout=max(heartbeat_interval, 5.0), check_peer=gateway_only)
    link = ExchangeBankLink(reactor, core, adapter, bank_id=bank_id, heartbeat_interval=heartbeat_interval,
                            push=push)
    service = _ExchangeBankService(link, stats_path=stats_path)
    listener = listening_service(serverFromString(reactor, endpoint),
                                 tls_server_factory(ExchangeBankFactory(link),
                                                    server_options(certificate, private_key, trust)))
    listener.setServiceParent(service)
    service._listener = listener
    return service


class _ExchangeBankService(BankService):
    link: ExchangeBankLink

    def startService(self) -> None:
        super().startService()
        self.link.start()
