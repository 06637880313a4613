"""The request/answer link (gateway/exchange.py): serials, the window of concurrent
connections, binding answers by connection, failures costing one request only, the
bank's own requests answered on their connection; StreamTransport over real loopback."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock

from adapters.base import (
    Ack,
    AdapterError,
    Balance,
    BalanceQuery,
    Heartbeat,
    Instruction,
    Movement,
    Receipt,
    Result,
    SignOn,
    SignOnAnswer,
    StatusQuery,
)
from adapters.bdc import BdcAdapter
from gateway.exchange import ExchangeFailed, ExchangeLink, Serials, StreamTransport
from gateway.metrics import GatewayMetrics

NOW = dt.datetime(2017, 11, 30, 10, 15, 2, 500000)
BANK_NODE, GATEWAY = "105000", "D00000"
ADAPTER = BdcAdapter(clock=lambda: NOW, echo=False)


def test_serials_have_the_deployed_form() -> None:
    serials = Serials("C52240", lambda: NOW)
    assert serials.sign_on() == "52240171130999999999"
    first, second = serials.next(), serials.next()
    assert len(first) == 20 and first[:11] == "52240171130" and first[11] == "9"
    assert int(second) == int(first) + 1


def test_serials_of_a_restart_later_that_day_do_not_repeat() -> None:
    early = Serials("D00000", lambda: NOW).next()
    later = Serials("D00000", lambda: NOW + dt.timedelta(seconds=1)).next()
    assert later > early


@dataclass
class Recorder:
    """The dispatcher side of the link's interface, recording what it is given."""

    ups: list[Any] = field(default_factory=list)
    downs: list[Any] = field(default_factory=list)
    handled: list[tuple[Any, bytes]] = field(default_factory=list)

    def link_up(self, session: Any) -> None:
        self.ups.append(session)

    def link_down(self, session: Any) -> None:
        self.downs.append(session)

    def handle(self, message: Any, raw: bytes) -> None:
        self.handled.append((message, raw))

    def next_seq(self) -> str:
        return "G1"


@dataclass
class Bank:
    """A bank answering through the real codec, one exchange at a time, when told to."""

    pending: list[tuple[bytes, Deferred[bytes]]] = field(default_factory=list)

    def request(self, payload: bytes) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self.pending.append((payload, d))
        return d

    def answer(self, index: int, make: Any) -> bytes:
        payload, d = self.pending.pop(index)
        request = ADAPTER.decode(payload)
        frame = ADAPTER.encode(make(request), sender=BANK_NODE, receiver=GATEWAY)
        d.callback(frame)
        return payload


@dataclass(frozen=True)
class BankConf:
    id: str = "B001"
    node: str = BANK_NODE
    window: int = 2


def make_link(window: int = 2) -> tuple[ExchangeLink, Bank, Recorder, Clock]:
    clock, bank, dispatcher = Clock(), Bank(), Recorder()
    link = ExchangeLink(BankConf(window=window), ADAPTER, dispatcher, clock, GatewayMetrics(), bank,
                        gateway_node=GATEWAY, heartbeat_interval=5.0, dead_after=15.0,
                        today=lambda: NOW)
    return link, bank, dispatcher, clock


def signed_on() -> tuple[ExchangeLink, Bank, Recorder, Clock]:
    link, bank, dispatcher, clock = make_link()
    link.start()
    bank.answer(0, lambda r: SignOnAnswer("B0", "", BANK_NODE))
    assert dispatcher.ups == [link]
    return link, bank, dispatcher, clock


def instruction(n: int) -> Instruction:
    return Instruction(f"5224017113000000000{n}", dt.date(2017, 11, 30), "C52240", "522400000000000",
                       "6200001111222233", "甲", "6200004444555566", "乙", "", True, True, 100 * n,
                       "allocation")


def test_sign_on_uses_the_sign_in_serial_and_brings_the_session_up() -> None:
    link, bank, dispatcher, _ = make_link()
    link.start()
    assert ADAPTER.decode(bank.pending[0][0]) == SignOn("00000171130999999999", GATEWAY)
    bank.answer(0, lambda r: SignOnAnswer("B0", "", BANK_NODE))
    assert link.signed_on and dispatcher.ups == [link]


def test_a_refused_sign_on_is_tried_again_later() -> None:
    link, bank, dispatcher, clock = make_link()
    link.start()
    bank.answer(0, lambda r: SignOnAnswer("B0", "", BANK_NODE, ok=False, code="E1"))
    assert not dispatcher.ups and not bank.pending
    clock.advance(1.0)
    assert isinstance(ADAPTER.decode(bank.pending[0][0]), SignOn)


def test_no_more_than_window_requests_are_on_the_wire() -> None:
    link, bank, dispatcher, _ = signed_on()
    for n in range(1, 6):
        link.send(instruction(n))
    assert len(bank.pending) == 2
    bank.answer(0, lambda r: Result("B1", r.seq_no, r.seq_no, True, "H1"))
    assert len(bank.pending) == 2 and len(link.queue) == 2


def test_each_answer_is_bound_to_the_request_of_its_connection() -> None:
    link, bank, dispatcher, _ = signed_on()
    link.send(instruction(1))
    link.send(instruction(2))
    request = bank.answer(1, lambda r: Result("B2", r.seq_no, r.seq_no, True, "H2"))  # answered out of order
    bank.answer(0, lambda r: Receipt("B1", r.seq_no, r.seq_no))
    (first, raw1), (second, raw2) = dispatcher.handled
    assert first == Result("B2", instruction(2).seq_no, instruction(2).seq_no, True, "H2")
    assert second == Receipt("B1", instruction(1).seq_no, instruction(1).seq_no)
    assert raw1.startswith(request)  # evidence: the exchange, request then answer
    assert ADAPTER.decode_all(raw1) == [first]


def test_queries_go_out_with_deployed_serials_and_come_back_under_the_dispatchers() -> None:
    link, bank, dispatcher, _ = signed_on()
    link.send(StatusQuery("G00000001", instruction(1).seq_no, dt.date(2017, 11, 30)))
    link.send(BalanceQuery("G00000002", "6200001111222233"))
    wire = [ADAPTER.decode(p) for p, _ in bank.pending]
    assert all(m.seq_no.startswith("00000171130") for m in wire)
    bank.answer(0, lambda r: Result("B1", "", instruction(1).seq_no, False))
    bank.answer(0, lambda r: Balance("B2", "", "6200001111222233", 5, 5, as_of=NOW.replace(microsecond=0)))
    (result, _), (balance, _) = dispatcher.handled
    assert result.reply_to == "G00000001" and result.ref == instruction(1).seq_no
    assert balance.reply_to == "G00000002"


def test_a_failed_exchange_costs_that_request_only() -> None:
    link, bank, dispatcher, _ = signed_on()
    link.send(instruction(1))
    link.send(instruction(2))
    bank.pending.pop(0)[1].errback(ExchangeFailed("no answer within 60 s"))
    assert link.signed_on and dispatcher.downs == []
    bank.answer(0, lambda r: Result("B2", r.seq_no, r.seq_no, True, "H2"))
    assert [m.ref for m, _ in dispatcher.handled] == [instruction(2).seq_no]


def test_an_unreadable_answer_is_recorded_and_the_session_goes_on() -> None:
    link, bank, dispatcher, _ = signed_on()
    link.send(instruction(1))
    bank.pending.pop(0)[1].callback(b"105000" + b"0" + bytes(9) + b"\x00\x00\x00\x03abc")
    assert link.signed_on and dispatcher.handled == []
    assert link.metrics.refused.labels("bank:B001", "bad_message")._value.get() == 1


def test_an_unreachable_bank_takes_the_session_down_until_a_sign_on_gets_through() -> None:
    link, bank, dispatcher, clock = signed_on()
    link.send(instruction(1))
    bank.pending.pop(0)[1].errback(ExchangeFailed("no connection", connected=False))
    assert dispatcher.downs == [link] and not link.signed_on
    clock.advance(1.0)
    bank.answer(0, lambda r: SignOnAnswer("B0", "", BANK_NODE))
    assert dispatcher.ups == [link, link]


def test_an_idle_session_is_probed_and_a_silent_one_signs_on_again() -> None:
    link, bank, dispatcher, clock = signed_on()
    clock.advance(5.0)
    assert isinstance(ADAPTER.decode(bank.pending[0][0]), Heartbeat)
    bank.pending.pop(0)[1].errback(ExchangeFailed("no answer"))
    clock.advance(11.0)
    assert dispatcher.downs == [link]
    assert any(isinstance(ADAPTER.decode(p), SignOn) for p, _ in bank.pending)


class _Inbound:
    def __init__(self) -> None:
        self.answers: list[Any] = []
        self.closed = False

    def answer(self, message: Any) -> None:
        self.answers.append(message)

    def close(self) -> None:
        self.closed = True


def test_the_banks_notice_is_answered_on_its_own_connection_once_committed() -> None:
    link, bank, dispatcher, _ = signed_on()
    connection = _Inbound()
    notice = Movement("D0000020171130004711", ())
    link.inbound(notice, b"frame", connection)
    assert dispatcher.handled == [(notice, b"frame")] and connection.answers == []
    link.send(Ack("G5", notice.seq_no))  # the dispatcher, after its commit
    assert connection.answers == [Ack("G5", notice.seq_no)] and not bank.pending


# -- StreamTransport over loopback ----------------------------------------------------


class OneShot(Protocol):
    """Answers one frame with ``answer`` (or stays silent), as the deployed server does."""

    def __init__(self, answer: bytes | None) -> None:
        self.answer, self.framer = answer, ADAPTER.framer()

    def dataReceived(self, data: bytes) -> None:
        if self.framer.feed(data) and self.answer is not None:
            self.transport.write(self.answer)
            self.transport.loseConnection()


async def serve(answer: bytes | None) -> Any:
    return await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(lambda: OneShot(answer)))


@pytest_twisted.ensureDeferred
async def test_stream_transport_returns_the_answer_frame_of_its_connection() -> None:
    answer = ADAPTER.encode(SignOnAnswer("B0", "S0", BANK_NODE), sender=BANK_NODE, receiver=GATEWAY)
    port = await serve(answer)
    try:
        transport = StreamTransport(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
                                    ADAPTER.framer, reactor, timeout=5.0)
        request = ADAPTER.encode(SignOn("S0", GATEWAY), sender=GATEWAY, receiver=BANK_NODE)
        frames = [await transport.request(request) for _ in range(3)]  # a connection each
        assert frames == [answer] * 3
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_stream_transport_gives_up_after_its_timeout() -> None:
    port = await serve(None)
    try:
        transport = StreamTransport(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
                                    ADAPTER.framer, reactor, timeout=0.2)
        with pytest.raises(ExchangeFailed, match="no answer within"):
            await transport.request(ADAPTER.encode(SignOn("S0", GATEWAY), sender=GATEWAY,
                                                   receiver=BANK_NODE))
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_stream_transport_says_when_the_request_never_left() -> None:
    port = await serve(None)
    number = port.getHost().port
    await port.stopListening()
    transport = StreamTransport(TCP4ClientEndpoint(reactor, "127.0.0.1", number), ADAPTER.framer,
                                reactor, timeout=5.0)
    with pytest.raises(ExchangeFailed) as info:
        await transport.request(b"x")
    assert info.value.connected is False


@pytest_twisted.ensureDeferred
async def test_stream_transport_refuses_an_answer_with_a_bad_header() -> None:
    port = await serve(b"\x00" * 40)
    try:
        transport = StreamTransport(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
                                    ADAPTER.framer, reactor, timeout=5.0)
        with pytest.raises(ExchangeFailed, match="answer frame"):
            await transport.request(ADAPTER.encode(SignOn("S0", GATEWAY), sender=GATEWAY,
                                                   receiver=BANK_NODE))
    finally:
        await port.stopListening()


def test_an_instruction_whose_answer_was_lost_goes_again_at_once_with_its_reference() -> None:
    link, bank, dispatcher, _ = signed_on()
    link.send(instruction(1))
    sent = bank.pending.pop(0)
    sent[1].errback(ExchangeFailed("closed before an answer"))
    assert [p for p, _ in bank.pending] == [sent[0]]  # the very same frame
    for _ in range(ExchangeLink.RESEND_AFTER_LOSS):
        bank.pending.pop(0)[1].errback(ExchangeFailed("closed before an answer"))
    assert bank.pending == []  # then the dispatcher's receipt timer decides


def test_ignored_fields_are_exported_per_bank_and_name() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from gateway.exchange import IgnoredFieldsCollector

    adapter = BdcAdapter(clock=lambda: NOW, echo=False)
    frame = adapter.encode(Result("B1", "S1", "S1", True, "H1"), sender=BANK_NODE, receiver=GATEWAY)
    body = frame[20:].decode("gbk").replace("</body>", '<field name="Remark">x</field></body>').encode("gbk")
    adapter.decode(frame[:16] + len(body).to_bytes(4, "big") + body)
    registry = CollectorRegistry()
    registry.register(IgnoredFieldsCollector({"B001": adapter, "B002": object()}))
    text = generate_latest(registry).decode()
    assert 'hpf_gateway_bank_ignored_fields_total{bank="B001",field="Remark"} 1.0' in text


# -- body encryption ---------------------------------------------------------------------


def test_encrypted_bodies_end_to_end_through_the_link_with_a_session_key_from_sign_on() -> None:
    """The plug-in point: the bank's sign-on answer carries HandKey, both sides then encrypt
    every business body (flag '0') and keep sign-in-class ones in clear."""
    from adapters.base import AdapterError

    gateway_side = BdcAdapter(clock=lambda: NOW, echo=False, cipher=TestCipher())
    bank_side = BdcAdapter(clock=lambda: NOW, echo=False, cipher=TestCipher())
    clock, dispatcher = Clock(), Recorder()
    wire: list[tuple[bytes, bytes]] = []

    class Answering:
        def request(self, payload: bytes) -> Deferred[bytes]:
            request = bank_side.decode(payload)
            if isinstance(request, SignOn):
                answer = SignOnAnswer("B0", request.seq_no, BANK_NODE)
            else:
                answer = Result("B1", request.seq_no, request.seq_no, True, "H1")
            frame = bank_side.encode(answer, sender=BANK_NODE, receiver=GATEWAY)
            wire.append((payload, frame))
            d: Deferred[bytes] = Deferred()
            d.callback(frame)
            return d

    link = ExchangeLink(BankConf(), gateway_side, dispatcher, clock, GatewayMetrics(), Answering(),
                        gateway_node=GATEWAY, heartbeat_interval=5.0, dead_after=15.0, today=lambda: NOW)
    link.start()
    assert dispatcher.ups == [link]
    sign_on, sign_on_answer = wire[0]
    assert sign_on[6:7] == b"1" and sign_on[20:].startswith(b"<?xml")
    assert sign_on_answer[20:].startswith(b"<?xml") and b'name="HandKey">' in sign_on_answer
    link.send(instruction(1))
    request, answer = wire[1]
    assert request[6:7] == b"0" and not request[20:].startswith(b"<?xml") and b'<field name="CrAcctName">' not in request
    assert not answer[20:].startswith(b"<?xml")
    (result, _), = dispatcher.handled
    assert result == Result("B1", instruction(1).seq_no, instruction(1).seq_no, True, "H1")
    with pytest.raises(AdapterError, match="in clear while bodies are encrypted"):
        gateway_side.decode(ADAPTER.encode(Result("B1", "S1", "S1", True, "H1"), sender=BANK_NODE,
                                           receiver=GATEWAY))
    with pytest.raises(AdapterError, match="does not decrypt"):
        gateway_side.decode(answer[:30] + bytes([answer[30] ^ 1]) + answer[31:])
    assert BdcAdapter(cipher=TestCipher()).refusal(request, sender=BANK_NODE, seq_no="B9") is None


def test_without_a_sign_on_no_business_message_is_encoded() -> None:
    from adapters.base import AdapterError

    with pytest.raises(AdapterError, match="sign-on first"):
        BdcAdapter(cipher=TestCipher()).encode(instruction(1), sender=GATEWAY, receiver=BANK_NODE)


# -- the persistent link (gateway/links.py): one bad message never costs it ---------------


def test_a_persistent_link_refuses_a_bad_message_and_goes_on() -> None:
    from twisted.internet.testing import StringTransport

    from gateway.links import BankLink

    echo = BdcAdapter(clock=lambda: NOW)
    dispatcher = Recorder()
    link = BankLink(BankConf(), echo, dispatcher, Clock(), GatewayMetrics(), gateway_node=GATEWAY,
                    heartbeat_interval=5.0, dead_after=15.0)
    proto = link.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.verified = True
    proto._sign_on_seq = "S0"
    proto.dataReceived(echo.encode(SignOnAnswer("B0", "S0", BANK_NODE), sender=BANK_NODE, receiver=GATEWAY))
    assert proto.signed_on and dispatcher.ups == [proto]
    transport.clear()
    unsupported = ('<?xml version="1.0" encoding="GBK"?>\n<message><head>'
                   '<field name="SendDate">20171130</field><field name="SendTime">103016</field>'
                   '<field name="SendSeqNo">B7</field><field name="SendNode">105000</field>'
                   '<field name="TxCode">BDC904</field><field name="ReceiveNode">D00000</field>'
                   '</head><body/></message>').encode("gbk")
    garbage = b"\xff\xfe<msg"
    good = echo.encode(Result("B1", "S1", "S1", True, "H1"), sender=BANK_NODE, receiver=GATEWAY)
    proto.dataReceived(b"".join(b"105000" + b"0" + bytes(9) + len(body).to_bytes(4, "big") + body
                                for body in (unsupported, garbage)) + good)
    assert not transport.disconnecting
    # The protocol's own answer to BDC904 (the garbage one gets none: it has no head to answer).
    assert transport.value().count(b"<message>") == 1 and b">BDC904<" in transport.value()
    assert b'<field name="TxStatus">1</field><field name="RtnCode">10000</field>' in transport.value()
    assert [m for m, _ in dispatcher.handled] == [Result("B1", "S1", "S1", True, "H1")]
    assert link.metrics.refused.labels("bank:B001", "bad_message")._value.get() == 2
    proto.dataReceived(b"\x00" * 40)  # an unreadable header: that does close it
    assert link.metrics.refused.labels("bank:B001", "bad_frame")._value.get() == 1
    assert transport.disconnecting


# -- the simulator writes as the deployed systems write ----------------------------------


@pytest.mark.parametrize("message", [
    Movement("M1", (__import__("adapters.base", fromlist=["Entry"]).Entry(
        "6200001111222233", "H1", -250000, dt.date(2017, 11, 30), dt.time(10, 0, 0), "6200004444555566",
        "张三", "", 100000000, "s", "r"),)),
    Balance("B1", "Q1", "6200001111222233", 100000000, 99999950, 0, "示例", "0", dt.datetime(2017, 11, 30, 10)),
    Result("B2", "S1", "S1", True, "H1"),
    Receipt("B3", "S1", "S1"),
])
def test_the_simulators_deployed_style_reads_back_the_same(message: Any) -> None:
    from gateway.simulate.bank_exchange import deployed_style

    frame = ADAPTER.encode(message, sender=BANK_NODE, receiver=GATEWAY)
    styled = deployed_style(frame)
    assert styled != frame and styled[20:].decode("gbk").index("<body") < styled[20:].decode("gbk").index("<head>")
    assert ADAPTER.decode(styled) == ADAPTER.decode(frame)
    if isinstance(message, Movement):
        from adapters.bdc._files import unpack_data

        data = styled.decode("gbk").split('<field name="DATA">')[1].split("<")[0]
        line = unpack_data(data)
        assert "|-2500|" in line and "|1000000|" in line and "|null|" in line
    if isinstance(message, Balance):
        assert b'<field name="AcctBal">1000000</field>' in styled
        assert b'<field name="AcctOverBal">0</field>' in styled


def test_the_simulator_answers_unconfirmed_with_tx_status_1_every_other_time() -> None:
    from gateway.simulate.bank import BankCore
    from gateway.simulate.bank_exchange import ExchangeBankLink

    core = BankCore(node=BANK_NODE, accounts={"6200001111222233": 10**12})
    link = ExchangeBankLink(Clock(), core, ADAPTER, bank_id="B001")
    receipt = Receipt("B3", "S1", "S1")
    frames = [link.styled(ADAPTER.encode(receipt, sender=BANK_NODE, receiver=GATEWAY), receipt)
              for _ in range(2)]
    assert [b'<field name="TxStatus">1</field>' in f for f in frames] == [True, False]
    assert all(ADAPTER.decode_answer(f, instruction(1).__class__(**{**instruction(1).__dict__, "seq_no": "S1"}))
               == Receipt("B3", "S1", "S1") for f in frames)


def test_the_banks_probe_on_its_own_connection_is_answered_there_and_closed() -> None:
    from twisted.internet.testing import StringTransport

    from gateway.exchange import InboundFactory

    link, bank, dispatcher, clock = signed_on()
    proto = InboundFactory(link, timeout=5.0).buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    probe = ADAPTER.encode(Heartbeat("D0000020171130004711", "D00000"), sender="D00000", receiver=GATEWAY)
    proto.dataReceived(probe)
    answer = ADAPTER.decode(transport.value())
    assert type(answer).__name__ == "HeartbeatAnswer" and transport.disconnecting
    assert transport.value()[6:7] == b"0"  # as the deployed centre flags its SYS600 reply


def test_a_connection_that_says_nothing_is_closed_after_the_timeout() -> None:
    from twisted.internet.testing import StringTransport

    from gateway.exchange import InboundFactory

    link, bank, dispatcher, clock = signed_on()
    proto = InboundFactory(link, timeout=5.0).buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    clock.advance(5.0)
    assert transport.disconnecting and transport.value() == b""


class TestCipher:
    """A stand-in body cipher for these tests only (the vendor's is closed): AES-128-GCM, 12-byte nonce first; HandKey is the key in hex."""

    __test__ = False  # not a pytest class

    def new_hand_key(self) -> tuple[str, bytes]:
        key = os.urandom(16)
        return key.hex().upper(), key

    def session_key(self, hand_key: str) -> bytes:
        try:
            key = bytes.fromhex(hand_key)
        except ValueError:
            raise AdapterError("HandKey: not a key this cipher knows") from None
        if len(key) != 16:
            raise AdapterError("HandKey: not a key this cipher knows")
        return key

    def encrypt(self, body: bytes, key: bytes) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        return nonce + AESGCM(key).encrypt(nonce, body, None)

    def decrypt(self, data: bytes, key: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(data) < 28:
            raise AdapterError("body: too short to be encrypted")
        try:
            return AESGCM(key).decrypt(data[:12], data[12:], None)
        except InvalidTag:
            raise AdapterError("body: does not decrypt with the session key") from None
