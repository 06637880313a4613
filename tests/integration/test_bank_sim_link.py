"""The simulated bank on its link: real loopback mutual TLS with dev certificates, and the
protocol edge driven by a fake clock.

A small gateway-side peer (:class:`tests.kit.bank_peer.GatewayPeerProtocol`) speaks the same
adapter as the bank.  Every wait is bounded (at most 5 s).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock, StringTransport

from adapters.base import (
    AdapterError, Ack, Heartbeat, HeartbeatAnswer, Message, Movement, Receipt, Result, SignOn, SignOnAnswer,
    StatusQuery, load_adapter,
)
from gateway.pki import DevPki, init_dev_pki
from gateway.simulate.bank import BankCore
from gateway.simulate.bank_link import BankLink, BankSimProtocol
from gateway.simulate.bank_service import BankService, make_bank_service
from tests.kit.bank_peer import GatewayPeerProtocol, make_instruction
from gateway.tls import client_options, server_options, tls_client_endpoint, tls_server_factory

# The bank speaks any adapter; run this file against another one with HPF_BANK_SIM_ADAPTER=name.
ADAPTER = os.environ.get("HPF_BANK_SIM_ADAPTER", "bdc")
BANK_NODE = "105000"
DEBIT = "6200001111222233"
OWN = "6200004444555566"
WAIT = 5.0

reactor: Any = _reactor


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return init_dev_pki(tmp_path_factory.mktemp("pki"), banks=["B001", "B002"], centres=["C52240"])


def new_core(**options: Any) -> BankCore:
    kwargs: dict[str, Any] = {"node": BANK_NODE, "accounts": {DEBIT: 1_000_000, OWN: 0}}
    kwargs.update(options)
    return BankCore(**kwargs)


def is_(kind: type, **fields: Any) -> Callable[[Message], bool]:
    return lambda m: isinstance(m, kind) and all(getattr(m, k) == v for k, v in fields.items())


def start_bank(request: pytest.FixtureRequest, pki: DevPki, core: BankCore, *, role: str, endpoint: str,
               **options: Any) -> BankService:
    service = make_bank_service(
        reactor, adapter_name=ADAPTER, bank_id="B001", node=core.node, role=role,  # type: ignore[arg-type]
        endpoint=endpoint, certificate=pki.cert("bank", "B001"), private_key=pki.key("bank", "B001"),
        trust=[pki.ca_cert], core=core, **options)
    service.startService()
    request.addfinalizer(lambda: pytest_twisted.blockon(service.stopService()))
    return service


@pytest_twisted.inlineCallbacks
def dial_bank(service: BankService, pki: DevPki, role: str = "gateway", name: str = "main") -> Any:
    port = yield service.when_listening().addTimeout(WAIT, reactor)
    peer = GatewayPeerProtocol(load_adapter(ADAPTER), bank_node=BANK_NODE, clock=reactor)
    endpoint = tls_client_endpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=5),
                                   client_options(pki.cert(role, name), pki.key(role, name), [pki.ca_cert]))
    yield endpoint.connect(Factory.forProtocol(lambda: peer)).addTimeout(WAIT, reactor)
    return peer


@pytest_twisted.inlineCallbacks
def sign_on(peer: GatewayPeerProtocol) -> Any:
    seq_no = peer.next_seq_no()
    peer.send(SignOn(seq_no=seq_no, node="D00000"))
    answer = yield peer.wait_for(is_(SignOnAnswer, reply_to=seq_no))
    assert answer.ok
    return answer


@pytest_twisted.inlineCallbacks
def round_trip(peer: GatewayPeerProtocol) -> Any:
    """Everything sent before has been handled by the bank once this returns (frames are in order)."""
    seq_no = peer.next_seq_no()
    peer.send(Heartbeat(seq_no=seq_no, node="D00000"))
    yield peer.wait_for(is_(HeartbeatAnswer, reply_to=seq_no))


def ref(i: int) -> str:
    return f"52240250101{i:09d}"


# -- real loopback TLS ---------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_listening_bank_executes_an_instruction_and_its_notice_is_acked(
        request: pytest.FixtureRequest, pki: DevPki) -> Any:
    core = new_core()
    bank = start_bank(request, pki, core, role="listen", endpoint="tcp:0:interface=127.0.0.1")
    peer = yield dial_bank(bank, pki)
    try:
        yield sign_on(peer)
        peer.send(make_instruction(ref(1), amount=25_000))
        result = yield peer.wait_for(is_(Result, reply_to=ref(1)))
        assert result.succeeded and result.ref == ref(1) and result.host_seq_no
        movement = yield peer.wait_for(is_(Movement))
        (entry,) = movement.entries
        assert (entry.account, entry.amount, entry.host_seq_no) == (DEBIT, -25_000, result.host_seq_no)
        assert entry.balance_after == 975_000
        assert core.pending_pushes() == [movement]
        peer.send(Ack(seq_no=peer.next_seq_no(), reply_to=movement.seq_no))
        yield round_trip(peer)
        assert core.pending_pushes() == []
        assert dict(core.executions) == {ref(1): 1}
        assert core.balance(DEBIT) == 975_000
        assert bank.link.counters["frames_in.Instruction"] == 1
        assert bank.link.counters["frames_out.Movement"] == 1
    finally:
        peer.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_resend_over_the_link_returns_the_original_result(request: pytest.FixtureRequest, pki: DevPki) -> Any:
    core = new_core()
    bank = start_bank(request, pki, core, role="listen", endpoint="tcp:0:interface=127.0.0.1")
    peer = yield dial_bank(bank, pki)
    try:
        yield sign_on(peer)
        ins = make_instruction(ref(2), amount=1_000)
        peer.send(ins)
        first = yield peer.wait_for(is_(Result, reply_to=ref(2)))
        peer.send(ins)
        yield round_trip(peer)
        results = [m for m in peer.received if isinstance(m, Result) and m.reply_to == ref(2)]
        assert len(results) == 2
        assert results[1].host_seq_no == first.host_seq_no
        assert dict(core.executions) == {ref(2): 1}
        assert core.balance(DEBIT) == 999_000
        assert core.stats()["duplicates"] == 1
        assert core.stats()["conflicting_resends"] == 0  # the copy decoded to the same instruction
    finally:
        peer.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_slow_bank_sends_a_receipt_then_tells_the_outcome(request: pytest.FixtureRequest, pki: DevPki) -> Any:
    """A Receipt first; the outcome is pushed as a late answer to the instruction (reply_to is
    the reference) until acknowledged, and always told to a status query."""
    core = new_core(delay=0.2)
    bank = start_bank(request, pki, core, role="listen", endpoint="tcp:0:interface=127.0.0.1")
    peer = yield dial_bank(bank, pki)
    try:
        yield sign_on(peer)
        peer.send(make_instruction(ref(3)))
        receipt = yield peer.wait_for(is_(Receipt, reply_to=ref(3)))
        assert receipt.ref == ref(3)
        movement = yield peer.wait_for(is_(Movement))
        peer.send(Ack(seq_no=peer.next_seq_no(), reply_to=movement.seq_no))
        pushed = yield peer.wait_for(is_(Result, ref=ref(3), reply_to=ref(3)))
        assert pushed.succeeded
        peer.send(Ack(seq_no=peer.next_seq_no(), reply_to=pushed.seq_no))
        query = peer.next_seq_no()
        peer.send(StatusQuery(seq_no=query, ref=ref(3), ref_date=make_instruction().send_date))
        answer = yield peer.wait_for(is_(Result, reply_to=query))
        assert answer.succeeded and answer.host_seq_no == movement.entries[0].host_seq_no
        assert core.pending_pushes() == []
        assert dict(core.executions) == {ref(3): 1}
    finally:
        peer.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_dialling_bank_re_pushes_an_unacked_notice_after_reconnecting(
        request: pytest.FixtureRequest, pki: DevPki) -> Any:
    peers: list[GatewayPeerProtocol] = []
    arrivals: list[Deferred[GatewayPeerProtocol]] = [Deferred(), Deferred()]

    def build() -> GatewayPeerProtocol:
        peer = GatewayPeerProtocol(load_adapter(ADAPTER), bank_node=BANK_NODE, clock=reactor)
        peer.on_connect.addCallback(lambda _: arrivals[len(peers) - 1].callback(peer))
        peers.append(peer)
        return peer

    gateway_factory = tls_server_factory(
        Factory.forProtocol(build),
        server_options(pki.cert("gateway", "main"), pki.key("gateway", "main"), [pki.ca_cert]))
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(gateway_factory)
    request.addfinalizer(lambda: pytest_twisted.blockon(port.stopListening()))
    core = new_core()
    start_bank(request, pki, core, role="dial", endpoint=f"tcp:127.0.0.1:{port.getHost().port}",
               retry_policy=lambda attempt: 0.05)

    first = yield arrivals[0].addTimeout(WAIT, reactor)
    yield sign_on(first)
    first.send(make_instruction(ref(4)))
    movement = yield first.wait_for(is_(Movement))
    first.transport.loseConnection()  # the gateway goes away without acking

    second = yield arrivals[1].addTimeout(WAIT, reactor)
    try:
        yield sign_on(second)
        again = yield second.wait_for(is_(Movement))
        assert again == movement
        second.send(Ack(seq_no=second.next_seq_no(), reply_to=again.seq_no))
        yield round_trip(second)
        assert core.pending_pushes() == []
        assert dict(core.executions) == {ref(4): 1}
    finally:
        second.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_peer_presenting_a_bank_certificate_instead_of_the_gateways_is_dropped(
        request: pytest.FixtureRequest, pki: DevPki) -> Any:
    core = new_core()
    bank = start_bank(request, pki, core, role="listen", endpoint="tcp:0:interface=127.0.0.1")
    intruder = yield dial_bank(bank, pki, role="bank", name="B002")
    intruder.send(SignOn(seq_no=intruder.next_seq_no(), node="D00000"))
    intruder.send(make_instruction(ref(5)))
    yield intruder.closed.addTimeout(WAIT, reactor)
    assert intruder.received == []
    assert bank.link.counters["peers_refused"] == 1
    assert bank.link.counters["frames_in"] == 0
    assert core.executions == {}


@pytest_twisted.inlineCallbacks
def test_stats_file_is_written_as_json_and_again_at_stop(request: pytest.FixtureRequest, pki: DevPki,
                                                         tmp_path: Path) -> Any:
    core = new_core()
    stats_path = tmp_path / "bank-stats.json"
    bank = make_bank_service(
        reactor, adapter_name=ADAPTER, bank_id="B001", node=BANK_NODE, role="listen",
        endpoint="tcp:0:interface=127.0.0.1", certificate=pki.cert("bank", "B001"),
        private_key=pki.key("bank", "B001"), trust=[pki.ca_cert], core=core, stats_path=stats_path)
    bank.startService()
    try:
        assert json.loads(stats_path.read_text())["executed"] == 0
        peer = yield dial_bank(bank, pki)
        yield sign_on(peer)
        peer.send(make_instruction(ref(6)))
        yield peer.wait_for(is_(Result, reply_to=ref(6)))
        peer.transport.loseConnection()
        yield peer.closed.addTimeout(WAIT, reactor)
    finally:
        yield bank.stopService()
    stats = json.loads(stats_path.read_text())
    assert stats["executions"] == {ref(6): 1}
    assert stats["bank_id"] == "B001"
    assert stats["link"]["frames_in.Instruction"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["bank-stats.json"]  # no temp files left


# -- the protocol edge on a fake clock -------------------------------------------------


class _TLSStringTransport(StringTransport):
    """A StringTransport whose peer presents a given certificate."""

    def __init__(self, certificate: Any) -> None:
        super().__init__()
        self._certificate = certificate

    def getPeerCertificate(self) -> Any:
        return self._certificate


class FakeLink:
    """A bank protocol on a MemoryReactorClock and StringTransport, with a gateway-side codec."""

    def __init__(self, pki: DevPki, core: BankCore, *, peer: tuple[str, str] = ("gateway", "main"),
                 heartbeat_interval: float = 15.0, adapter: Any = None) -> None:
        from cryptography import x509

        self.clock = MemoryReactorClock()
        self.adapter = adapter or load_adapter(ADAPTER)
        self.link = BankLink(self.clock, core, self.adapter, bank_id="B001",
                             heartbeat_interval=heartbeat_interval)
        self.protocol = BankSimProtocol(self.link)
        cert = x509.load_pem_x509_certificate(pki.cert(*peer).read_bytes())
        self.transport = _TLSStringTransport(cert)
        self.protocol.makeConnection(self.transport)
        self.protocol.handshakeCompleted()
        self._framer = self.adapter.framer()
        self._serial = 0

    def send(self, message: Message) -> None:
        self.protocol.dataReceived(self.adapter.encode(message, sender="D00000", receiver=BANK_NODE))

    def seq(self) -> str:
        self._serial += 1
        return f"00000{self._serial:015d}"

    def take(self) -> list[Message]:
        data = self.transport.value()
        self.transport.clear()
        return [self.adapter.decode(f) for f in self._framer.feed(data)]

    def sign_on(self) -> None:
        self.send(SignOn(seq_no=self.seq(), node="D00000"))


def test_nothing_but_sign_on_and_heartbeat_is_answered_before_sign_on(pki: DevPki) -> None:
    core = new_core()
    fake = FakeLink(pki, core)
    fake.send(make_instruction(ref(1)))
    assert fake.take() == []
    assert core.executions == {}
    fake.send(Heartbeat(seq_no=fake.seq(), node="D00000"))
    assert [type(m) for m in fake.take()] == [HeartbeatAnswer]
    fake.sign_on()
    fake.send(make_instruction(ref(1)))
    assert [type(m) for m in fake.take()] == [SignOnAnswer, Result, Movement]
    assert fake.link.counters["frames_before_sign_on"] == 1


def test_refused_sign_on_closes_the_connection(pki: DevPki) -> None:
    fake = FakeLink(pki, new_core(gateway_node="D00000"))
    fake.send(SignOn(seq_no=fake.seq(), node="C52240"))
    (answer,) = fake.take()
    assert isinstance(answer, SignOnAnswer) and not answer.ok
    assert fake.transport.disconnecting


def test_bank_probes_the_line_every_heartbeat_interval_once_signed_on(pki: DevPki) -> None:
    fake = FakeLink(pki, new_core(), heartbeat_interval=10.0)
    fake.clock.advance(29)
    assert fake.take() == []
    fake.sign_on()
    fake.take()
    fake.clock.advance(9.9)
    assert fake.take() == []
    fake.clock.advance(0.1)
    (probe,) = fake.take()
    assert isinstance(probe, Heartbeat)
    for _ in range(2):
        fake.send(HeartbeatAnswer(seq_no=fake.seq(), reply_to=probe.seq_no, node="D00000"))
        fake.clock.advance(10)
        (probe,) = fake.take()
        assert isinstance(probe, Heartbeat)
    fake.protocol.connectionLost()
    assert not fake.clock.getDelayedCalls()


def test_bank_drops_a_line_that_never_signs_on(pki: DevPki) -> None:
    """A connection that never reaches sign-on (a hung handshake, a peer that says nothing) is given up."""
    fake = FakeLink(pki, new_core(), heartbeat_interval=10.0)
    fake.clock.advance(29.9)
    assert not fake.transport.disconnecting
    fake.clock.advance(0.1)
    assert fake.transport.disconnecting or fake.transport.disconnected
    assert fake.link.counters["dead_peers"] == 1


def test_bank_drops_a_gateway_that_has_been_silent_for_three_probes(pki: DevPki) -> None:
    """A half-open line (the gateway gone without a FIN) is given up, so the bank can dial again."""
    fake = FakeLink(pki, new_core(), heartbeat_interval=10.0)
    fake.sign_on()
    fake.take()
    fake.clock.pump([10, 10])
    assert [type(m) for m in fake.take()] == [Heartbeat, Heartbeat]
    assert not fake.transport.disconnecting
    fake.clock.advance(10)
    assert fake.take() == []
    assert fake.transport.disconnecting or fake.transport.disconnected
    assert fake.link.counters["dead_peers"] == 1


def test_execution_delay_runs_on_the_reactor_clock_and_then_the_outcome_is_pushed(pki: DevPki) -> None:
    core = new_core(delay=30.0)
    fake = FakeLink(pki, core, heartbeat_interval=100.0)
    fake.sign_on()
    fake.take()
    fake.send(make_instruction(ref(1)))
    assert [type(m) for m in fake.take()] == [Receipt]
    fake.clock.advance(29)
    assert core.executions == {}
    fake.clock.advance(1)
    pushed = fake.take()
    assert [type(m) for m in pushed] == [Result, Movement]
    assert pushed[0].succeeded and pushed[0].reply_to == ref(1)
    assert core.executions == {ref(1): 1}


def test_pending_pushes_go_out_at_the_next_sign_on(pki: DevPki) -> None:
    core = new_core(delay=5.0)
    first = FakeLink(pki, core)
    first.sign_on()
    first.send(make_instruction(ref(1)))
    first.protocol.connectionLost()  # gone before execution finishes
    first.clock.advance(5)
    assert core.executions == {ref(1): 1}
    second = FakeLink(pki, core)
    second.sign_on()
    kinds = [type(m) for m in second.take()]
    assert kinds == [SignOnAnswer, Result, Movement]


def test_drop_rate_one_executes_but_drops_the_connection_without_answering(pki: DevPki) -> None:
    core = new_core()
    fake = FakeLink(pki, core)
    fake.sign_on()
    fake.take()
    core.drop_rate = 1.0  # from now on: the sign-on itself would have been dropped
    fake.send(make_instruction(ref(1)))
    assert fake.take() == []
    assert fake.transport.disconnecting
    assert core.executions == {ref(1): 1}
    assert fake.link.counters["connections_dropped"] == 1


class _Refusing:
    """The configured adapter, except that it refuses to encode the messages ``refuse`` picks."""

    def __init__(self, inner: Any, refuse: Callable[[Message], bool]) -> None:
        self.inner = inner
        self.refuse = refuse
        self.name = inner.name
        self.max_frame = inner.max_frame

    def framer(self) -> Any:
        return self.inner.framer()

    def decode(self, frame: bytes) -> Message:
        return self.inner.decode(frame)

    def encode(self, message: Message, *, sender: str, receiver: str = "") -> bytes:
        if self.refuse(message):
            raise AdapterError(f"cannot carry {message!r}")
        return self.inner.encode(message, sender=sender, receiver=receiver)


def test_push_the_adapter_cannot_encode_is_given_up_without_dropping_the_link(pki: DevPki) -> None:
    core = new_core()
    fake = FakeLink(pki, core, adapter=_Refusing(load_adapter(ADAPTER), lambda m: isinstance(m, Movement)))
    fake.sign_on()
    fake.take()
    fake.send(make_instruction(ref(1)))
    result, = fake.take()
    assert isinstance(result, Result) and result.succeeded
    assert not fake.transport.disconnecting
    assert core.pending_pushes() == []
    assert fake.link.counters["adapter_errors"] == 1


def test_garbage_frame_closes_the_connection(pki: DevPki) -> None:
    fake = FakeLink(pki, new_core())
    fake.protocol.dataReceived(b"\x00" * 64)
    assert fake.transport.disconnecting
    assert fake.link.counters["adapter_errors"] == 1


def test_bank_certificate_is_refused_after_the_handshake(pki: DevPki) -> None:
    fake = FakeLink(pki, new_core(), peer=("bank", "B002"))
    assert fake.transport.disconnecting
    fake.sign_on()
    assert fake.take() == []
    assert fake.link.counters["peers_refused"] == 1
