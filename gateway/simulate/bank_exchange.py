"""The simulated bank as the deployed bdc interface serves it: one request per connection."""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.interfaces import (
    IAddress,
    IReactorTime,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from adapters import base
from adapters.bdc.messages import Collection
from adapters.base import (
    Adapter,
    AdapterError,
    Message,
    Receipt,
)
from gateway.simulate.bank import BankCore
from gateway.simulate.bank_link import BankLink, BankSimProtocol

__all__ = ["ExchangeBankLink", "ExchangeBankProtocol", "ExchangeBankFactory", "deployed_style"]

_log = Logger()


class ExchangeBankLink(BankLink):
    """The bank as the deployed bdc interface serves it: one request per connection.

    Each connection carries one request and its answer, then closes; nothing names the
    request but the connection.  An answer the core gives later (an execution that must
    finish before the answer) is written on the connection still waiting for it.  What
    the bank pushes (notices, late results) goes to the gateway each on a connection of
    its own, dialled through ``push`` (a :class:`gateway.exchange.Transport`), and stays
    pending in the core until the gateway's answer acknowledges it; pending pushes are
    sent again every ``push_every`` seconds.
    """

    def __init__(self, reactor: IReactorTime, core: BankCore, adapter: Adapter, *, bank_id: str,
                 heartbeat_interval: float = 15.0, push: Any = None, push_every: float = 1.0,
                 deployed_style: bool = True) -> None:
        super().__init__(reactor, core, adapter, bank_id=bank_id, heartbeat_interval=heartbeat_interval)
        self.push = push
        self.waiting: dict[str, "ExchangeBankProtocol"] = {}  # request serial -> its connection
        self.pushing: set[str] = set()
        self._repush = LoopingCall(self.push_pending)
        self._repush.clock = reactor
        self.push_every = push_every
        self.deployed_style = deployed_style
        self._unconfirmed = 0

    def styled(self, frame: bytes, message: Message) -> bytes:
        """``frame`` as the deployed systems would write it, when ``deployed_style``; and a
        not-yet answer to an instruction with TxStatus ``1`` rather than ``2`` every other time
        (both mean "unconfirmed, ask BDC110" to the deployed centre)."""
        if not self.deployed_style:
            return frame
        if isinstance(message, Receipt) and message.reply_to == message.ref:
            self._unconfirmed += 1
            if self._unconfirmed % 2:
                frame = frame.replace(b'<field name="TxStatus">2</field>', b'<field name="TxStatus">1</field>', 1)
        return deployed_style(frame)

    def start(self) -> None:
        if self.push is not None and not self._repush.running:
            self._repush.start(self.push_every, now=False)

    def stop(self) -> None:
        super().stop()
        if self._repush.running:
            self._repush.stop()

    def exchange(self, protocol: "ExchangeBankProtocol", message: Message) -> None:
        """One request from its connection: answer it there now, or when the core has the answer."""
        drop = self.core.draw_drop()
        out = self.receive(message)
        if drop:
            self.counters["connections_dropped"] += 1
            protocol._close(abort=True)
            self._route(out)
            return
        answers = [m for m in out if getattr(m, "reply_to", None) == message.seq_no]
        self._route([m for m in out if m not in answers])
        protocol.request = message
        if answers:
            protocol.answer(answers[0])
        elif isinstance(message, (base.Instruction, Collection)) and self.core.outcome(message.seq_no) is None \
                and not self.core.silent:
            self.waiting[message.seq_no] = protocol  # answered when execution finishes
        else:
            protocol._close()

    def _tick(self) -> None:
        self._timer = None
        out = self.core.tick(self.reactor.seconds())
        self._log_executed()
        self._route(out)
        self._arm()

    def _route(self, out: list[Message]) -> None:
        for message in out:
            waiting = self.waiting.pop(getattr(message, "reply_to", ""), None)
            if waiting is not None:
                waiting.answer(message)
            elif message.seq_no in {m.seq_no for m in self.core.pending_pushes()}:
                self._send_push(message)

    def push_pending(self) -> None:
        for message in self.core.pending_pushes():
            self._send_push(message)

    def _send_push(self, message: Message) -> None:
        if self.push is None or message.seq_no in self.pushing:
            return
        try:
            frame = self.adapter.encode(message, sender=self.core.node, receiver=self.core.gateway_node)
        except AdapterError as e:
            self.counters["adapter_errors"] += 1
            _log.error("bank.encode_failed bank={bank} reason={reason}", bank=self.bank_id, reason=str(e))
            self.core.discard_push(message.seq_no)
            return
        frame = self.styled(frame, message)
        self.pushing.add(message.seq_no)
        self.counters["frames_out"] += 1
        self.counters["frames_out." + type(message).__name__] += 1

        def answered(answer_frame: bytes) -> None:
            bind = getattr(self.adapter, "decode_answer", None)
            ack = bind(answer_frame, message) if bind else self.adapter.decode(answer_frame)
            self.counters["frames_in"] += 1
            self.counters["frames_in." + type(ack).__name__] += 1
            self.receive(ack)

        def failed(f: Failure) -> None:
            self.counters["pushes_unanswered"] += 1
            _log.info("bank.push_unanswered bank={bank} reason={reason}", bank=self.bank_id,
                      reason=f.getErrorMessage()[:200])

        d = self.push.request(frame)
        d.addCallbacks(answered, failed)
        d.addBoth(lambda _: self.pushing.discard(message.seq_no))


_AMOUNT_FIELD = re.compile(r'(<field name="(?:Amt|CapAmt|AcctBal|AcctRestBal|AcctOverBal)">)(-?[0-9]+\.[0-9]{2})(</field>)')
_DATA_FIELD = re.compile(r'(<field name="DATA">)([0-9A-F]+)(</field>)')


def _java_amount(text: str) -> str:
    """An amount as the public centre-side Java writes a BigDecimal made from it: no trailing zeros."""
    from decimal import Decimal

    return f"{Decimal(text).normalize():f}"


def _java_line(line: str) -> str:
    """A notice line as the public project's AccChangeNoticeFile writes one: unset columns as
    ``null``, amounts without trailing zeros."""
    if "|" not in line:
        return line
    cols = line[:line.rfind("|")].split("|")
    for i in (3, 9, 10, 15, 16, 17, 18):
        if i < len(cols) and cols[i] == "":
            cols[i] = "null"
    for i in (6, 14):
        if i < len(cols) and cols[i]:
            cols[i] = _java_amount(cols[i])
    return "|".join(cols) + "|"


def deployed_style(frame: bytes) -> bytes:
    """A clear bdc frame rewritten the way the deployed systems write it (docs/protocols/bdc.md):
    amounts without trailing zeros, notice lines with ``null`` columns, the body before the head,
    indented.  The same message; only the writing differs, so a tolerant reader reads the same."""
    from adapters.bdc._files import pack_data, unpack_data

    text = frame[20:].decode("gbk")
    if not text.startswith("<?xml"):
        return frame  # encrypted: left alone
    text = _AMOUNT_FIELD.sub(lambda m: m.group(1) + _java_amount(m.group(2)) + m.group(3), text)
    text = _DATA_FIELD.sub(lambda m: m.group(1) + pack_data(
        "\n".join(_java_line(x) for x in unpack_data(m.group(2)).split("\n"))) + m.group(3), text)
    head = text[text.index("<head>"):text.index("</head>") + len("</head>")]
    body_start = text.index("</head>") + len("</head>")
    body = text[body_start:text.rindex("</message>")]
    text = (text[:text.index("<head>")] + " \n  " + body + "  \n  " + head.replace("><field", ">\n    <field")
            + " \n</message>\n")
    raw = text.encode("gbk")
    return frame[:16] + len(raw).to_bytes(4, "big") + raw


class ExchangeBankProtocol(BankSimProtocol):
    """One request of the gateway on its own connection (see :class:`ExchangeBankLink`)."""

    link: ExchangeBankLink

    def dataReceived(self, data: bytes) -> None:
        if self._closing or getattr(self, "_taken", False):
            return
        if self.peer is None:
            self._refuse_peer("data before the peer was verified")
            return
        try:
            frames = self.framer.feed(data)
        except AdapterError as e:
            self.link.counters["adapter_errors"] += 1
            _log.warn("bank.frame_refused bank={bank} reason={reason}", bank=self.link.bank_id, reason=str(e))
            self._close(abort=True)
            return
        if not frames:
            return
        self._taken = True
        try:
            message = self.link.adapter.decode(frames[0])
        except AdapterError as e:
            self.link.counters["adapter_errors"] += 1
            _log.warn("bank.frame_refused bank={bank} reason={reason}", bank=self.link.bank_id, reason=str(e))
            refusal = getattr(self.link.adapter, "refusal", None)
            answer = refusal(frames[0], sender=self.link.core.node, seq_no=self.link.core.next_seq_no()) \
                if refusal else None
            if answer is not None:
                self.transport.write(answer)
            self._close()
            return
        self.link.counters["frames_in"] += 1
        self.link.counters["frames_in." + type(message).__name__] += 1
        self.link.exchange(self, message)

    request: Message | None = None

    def answer(self, message: Message) -> None:
        """Write the answer to this connection's request (a BDC101 answer to a single payment)."""
        encode_answer = getattr(self.link.adapter, "encode_answer", None)
        if encode_answer is not None and self.request is not None and not self._closing:
            try:
                frame = encode_answer(message, self.request, sender=self.link.core.node,
                                      receiver=self.link.core.gateway_node)
            except AdapterError as e:
                self.link.counters["adapter_errors"] += 1
                _log.error("bank.encode_failed bank={bank} reason={reason}", bank=self.link.bank_id,
                           reason=str(e))
                self._close()
                return
            self.link.counters["frames_out"] += 1
            self.link.counters["frames_out." + type(message).__name__] += 1
            self.transport.write(self.link.styled(frame, message))
        else:
            self.send(message)
        self._close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        for seq_no, protocol in list(self.link.waiting.items()):
            if protocol is self:
                del self.link.waiting[seq_no]
        super().connectionLost(reason)


class ExchangeBankFactory(Factory):
    """Builds an :class:`ExchangeBankProtocol` per connection, all sharing one link."""

    def __init__(self, link: ExchangeBankLink) -> None:
        self.link = link

    def buildProtocol(self, addr: IAddress) -> ExchangeBankProtocol:
        return ExchangeBankProtocol(self.link)
