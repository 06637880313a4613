"""The simulated bank's persistent link edge: one :class:`~gateway.simulate.bank.BankCore` on TLS connections.

:class:`BankLink` drives the core on a reactor (sessions, execution timer,
counters); :class:`BankSimProtocol` is one connection with the gateway: the
peer's identity, sign-on, heartbeats, frames in and out.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHandshakeListener,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from adapters import base
from adapters.base import (
    Adapter,
    AdapterError,
    Heartbeat,
    Message,
    SignOn,
    SignOnAnswer,
)
from gateway.faults import crash_point
from gateway.model import mask_account
from gateway.simulate.bank import BankCore
from gateway.simulate.bdc_desk import REQUESTS as DESK_REQUESTS, BdcDesk
from gateway.tls import (
    PeerIdentity,
    peer_identity,
)

__all__ = ["BankLink", "BankSimProtocol", "BankSimFactory", "DEAD_AFTER_PROBES"]

_log = Logger()


class BankLink:
    """Drives one :class:`BankCore` on a reactor: sessions, execution timer, counters, stats.

    Every frame in and out is counted (``counters``: ``frames_in``,
    ``frames_out``, per kind ``frames_in.<Kind>`` …, ``connections``,
    ``peers_refused``, ``adapter_errors``, ``frames_before_sign_on``,
    ``connections_dropped``).  What the core produces outside a request
    (executions finishing) goes to the most recently signed-on session; when
    there is none, pushes simply stay pending in the core and go out at the
    next sign-on.
    """

    def __init__(self, reactor: IReactorTime, core: BankCore, adapter: Adapter, *, bank_id: str,
                 heartbeat_interval: float = 15.0) -> None:
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive")
        self.reactor = reactor
        self.core = core
        self.adapter = adapter
        self.bank_id = bank_id
        self.heartbeat_interval = heartbeat_interval
        self.counters: Counter[str] = Counter()
        # The bdc-only transactions (gateway/simulate/bdc_desk.py): a durable core has its own,
        # journalled with it.
        self.desk = getattr(core, "desk", None) or BdcDesk(core)
        self.sessions: list[BankSimProtocol] = []  # signed on, oldest first
        self._connections: set[BankSimProtocol] = set()
        self._timer: IDelayedCall | None = None

    # -- sessions ------------------------------------------------------------

    def connection_made(self, protocol: "BankSimProtocol") -> None:
        self._connections.add(protocol)
        self.counters["connections"] += 1

    def connection_lost(self, protocol: "BankSimProtocol") -> None:
        self._connections.discard(protocol)
        if protocol in self.sessions:
            self.sessions.remove(protocol)

    def signed_on(self, protocol: "BankSimProtocol") -> None:
        self.sessions.append(protocol)
        self.counters["sessions"] += 1
        pending = self.core.pending_pushes()
        if pending:
            _log.info("bank.repush bank={bank} count={count}", bank=self.bank_id, count=len(pending))
        for message in pending:
            protocol.send(message)

    def close_all(self) -> None:
        """Close every connection (the service is stopping)."""
        for protocol in list(self._connections):
            protocol.transport.loseConnection()

    # -- the core ------------------------------------------------------------

    def receive(self, message: Message) -> list[Message]:
        """Feed one message to the core (or its bdc desk) now; re-arm the execution timer."""
        if isinstance(message, DESK_REQUESTS) or self.desk.knows(message):
            out = self.desk.receive(message, self.reactor.seconds())
        else:
            out = self.core.receive(message, self.reactor.seconds())
        if isinstance(message, base.Instruction):
            crash_point("simbank.answer")
        if isinstance(message, base.Instruction) and self.core.duplicates[message.seq_no]:
            _log.info("bank.duplicate bank={bank} ref={ref} copies={copies}", bank=self.bank_id,
                      ref=message.seq_no, copies=self.core.duplicates[message.seq_no])
        self._log_executed()
        self._arm()
        return out

    def _log_executed(self) -> None:
        for o in self.core.take_executed():
            _log.debug("bank.executed bank={bank} ref={ref} succeeded={succeeded} code={code} "
                      "host_seq_no={host_seq_no}", bank=self.bank_id, ref=o.ref, succeeded=o.succeeded,
                      code=o.code, host_seq_no=o.host_seq_no)
        for f in self.core.take_offences():
            # Said loudly on purpose: a demo shows these beside the ledger's alerts.
            _log.warn("bank.offence bank={bank} fault={fault} transfer={transfer} ref={ref} account={account} "
                      "host_seq_no={host_seq_no} amount={amount}", bank=self.bank_id, fault=f.fault,
                      transfer=f.transfer, ref=f.ref, account=mask_account(f.account),
                      host_seq_no=f.host_seq_no, amount=f.amount)

    def _arm(self) -> None:
        due = self.core.next_due()
        if due is None:
            return
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= due:
                return
            self._timer.cancel()
        self._timer = self.reactor.callLater(max(0.0, due - self.reactor.seconds()), self._tick)

    def _tick(self) -> None:
        self._timer = None
        out = self.core.tick(self.reactor.seconds())
        self._log_executed()
        if out and self.sessions:
            session = self.sessions[-1]
            for message in out:
                session.send(message)
        self._arm()

    def stop(self) -> None:
        """Cancel the execution timer (executions still due stay due in the core)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # -- stats ---------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The core's stats plus this link's counters, JSON-ready."""
        out = self.core.stats()
        out["bank_id"] = self.bank_id
        out["link"] = dict(sorted(self.counters.items()))
        return out


#: Probes (heartbeat intervals) without a byte from the gateway before the line is taken for dead.
DEAD_AFTER_PROBES = 3


@implementer(IHandshakeListener)
class BankSimProtocol(Protocol):
    """One connection of the simulated bank with the gateway.

    After the TLS handshake the peer must present an ``hpf://gateway/…``
    identity, else the connection is closed.  The gateway signs on first;
    until then only SignOn and Heartbeat are answered.  Once signed on the
    bank pushes its pending notices and results and probes the line every
    ``heartbeat_interval``; a gateway silent for :data:`DEAD_AFTER_PROBES`
    probes is taken for dead and the connection aborted, as a bank's front-end
    does with a half-open line.  Any :class:`AdapterError` closes the connection.
    """

    def __init__(self, link: BankLink) -> None:
        self.link = link
        self.framer = link.adapter.framer()
        self.peer: PeerIdentity | None = None
        self.is_signed_on = False
        self._closing = False
        self._heartbeat: LoopingCall | None = None
        self._last_rx = 0.0
        self._sign_on_deadline: IDelayedCall | None = None

    # -- connection ------------------------------------------------------------

    def connectionMade(self) -> None:
        self._last_rx = self.link.reactor.seconds()
        # A line that never gets as far as a sign-on (a handshake that hangs, a peer that
        # accepted and says nothing) is given up like a silent one.
        self._sign_on_deadline = self.link.reactor.callLater(
            DEAD_AFTER_PROBES * self.link.heartbeat_interval, self._no_sign_on)
        self.link.connection_made(self)

    def _no_sign_on(self) -> None:
        self._sign_on_deadline = None
        if not self.is_signed_on and not self._closing:
            self.link.counters["dead_peers"] += 1
            _log.warn("bank.no_sign_on bank={bank}", bank=self.link.bank_id)
            self._close(abort=True)

    def handshakeCompleted(self) -> None:
        try:
            peer = peer_identity(self.transport)
        except ValueError as e:
            self._refuse_peer(str(e))
            return
        if peer is None or peer.role != "gateway":
            self._refuse_peer("peer is not a gateway: " + (peer.uri if peer else "no certificate"))
            return
        self.peer = peer
        _log.info("bank.peer_verified bank={bank} peer={peer} fingerprint={fingerprint}",
                  bank=self.link.bank_id, peer=peer.uri, fingerprint=peer.fingerprint)

    def _refuse_peer(self, reason: str) -> None:
        self.link.counters["peers_refused"] += 1
        _log.warn("bank.peer_refused bank={bank} reason={reason}", bank=self.link.bank_id, reason=reason)
        self._close(abort=True)

    def _close(self, *, abort: bool = False) -> None:
        self._closing = True
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        if self._sign_on_deadline is not None and self._sign_on_deadline.active():
            self._sign_on_deadline.cancel()
        self.link.connection_lost(self)
        _log.info("bank.connection_lost bank={bank} reason={reason}", bank=self.link.bank_id,
                  reason=reason.getErrorMessage())

    # -- frames ----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if self.peer is None:
            # Application data can only follow a completed handshake; be strict anyway.
            self._refuse_peer("data before the peer was verified")
            return
        counters = self.link.counters
        counters["bytes_in"] += len(data)
        self._last_rx = self.link.reactor.seconds()
        try:
            for frame in self.framer.feed(data):
                if self._closing:
                    return
                message = self.link.adapter.decode(frame)
                counters["frames_in"] += 1
                counters["frames_in." + type(message).__name__] += 1
                self._handle(message)
        except AdapterError as e:
            counters["adapter_errors"] += 1
            _log.warn("bank.frame_refused bank={bank} reason={reason}", bank=self.link.bank_id, reason=str(e))
            self._close()

    def _handle(self, message: Message) -> None:
        link = self.link
        if not self.is_signed_on and not isinstance(message, (SignOn, Heartbeat)):
            link.counters["frames_before_sign_on"] += 1
            _log.warn("bank.not_signed_on bank={bank} kind={kind}", bank=link.bank_id,
                      kind=type(message).__name__)
            return
        drop = link.core.draw_drop()
        out = link.receive(message)
        if drop:
            # The frame was taken (an instruction may have executed) but its answer is lost.
            link.counters["connections_dropped"] += 1
            _log.info("bank.connection_dropped bank={bank} kind={kind}", bank=link.bank_id,
                      kind=type(message).__name__)
            self._close(abort=True)
            return
        for answer in out:
            self.send(answer)
        if isinstance(message, SignOn) and out and isinstance(out[0], SignOnAnswer):
            if out[0].ok and not self.is_signed_on:
                self.is_signed_on = True
                if self._sign_on_deadline is not None and self._sign_on_deadline.active():
                    self._sign_on_deadline.cancel()
                _log.info("bank.signed_on bank={bank} node={node}", bank=link.bank_id, node=message.node)
                self._heartbeat = LoopingCall(self._probe)
                self._heartbeat.clock = link.reactor
                self._heartbeat.start(link.heartbeat_interval, now=False)
                link.signed_on(self)
            elif not out[0].ok:
                _log.warn("bank.sign_on_refused bank={bank} node={node}", bank=link.bank_id, node=message.node)
                self._close()

    def _probe(self) -> None:
        silent = self.link.reactor.seconds() - self._last_rx
        if silent >= DEAD_AFTER_PROBES * self.link.heartbeat_interval:
            self.link.counters["dead_peers"] += 1
            _log.warn("bank.dead_peer bank={bank} silent_s={silent}", bank=self.link.bank_id,
                      silent=round(silent, 1))
            self._close(abort=True)
            return
        self.send(self.link.core.heartbeat())

    def send(self, message: Message) -> None:
        """Encode and write one message.

        A push the adapter cannot encode is given up (it would fail again on
        every reconnect); any other encoding failure closes the connection.
        """
        if self._closing:
            return
        link = self.link
        try:
            frame = link.adapter.encode(message, sender=link.core.node, receiver=link.core.gateway_node)
        except AdapterError as e:
            link.counters["adapter_errors"] += 1
            _log.error("bank.encode_failed bank={bank} kind={kind} reason={reason}", bank=link.bank_id,
                       kind=type(message).__name__, reason=str(e))
            if link.core.discard_push(message.seq_no):
                # Pushing it again after a reconnect would fail again: give it up, keep the link.
                return
            self._close()
            return
        counters = self.link.counters
        counters["frames_out"] += 1
        counters["frames_out." + type(message).__name__] += 1
        counters["bytes_out"] += len(frame)
        self.transport.write(frame)


class BankSimFactory(Factory):
    """Builds a :class:`BankSimProtocol` per connection, all sharing one :class:`BankLink`."""

    def __init__(self, link: BankLink) -> None:
        self.link = link

    def buildProtocol(self, addr: IAddress) -> BankSimProtocol:
        return BankSimProtocol(self.link)
