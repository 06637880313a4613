"""A neutral instruction builder and the gateway's side of a bank link, for the bank simulator's tests.

The bank simulator's tests, the gateway's link tests and the adapters' tests
build the same messages and play the same counterpart with these.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import replace
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from adapters import base
from adapters.base import Adapter, AdapterError, Message

__all__ = ["make_instruction", "GatewayPeerProtocol"]


def make_instruction(seq_no: str = "52240250101000000001", **overrides: Any) -> base.Instruction:
    """A well-formed neutral Instruction (same-bank transfer of 100.00) with any field overridden."""
    ins = base.Instruction(
        seq_no=seq_no,
        send_date=_dt.date(2025, 1, 1),
        centre_node="C52240",
        unit_no="522400000000000",
        debit_account="6200001111222233",
        debit_name="示例中心归集户",
        creditor_account="6200009999000011",
        creditor_name="张三",
        creditor_bank_code="105100000017",
        creditor_personal=True,
        same_bank=True,
        amount=10_000,
        purpose="withdrawal",
        memo="部分提取",
        reference="W" + seq_no[-8:],
    )
    return replace(ins, **overrides)


class GatewayPeerProtocol(Protocol):
    """A minimal gateway side of a bank link, for tests: sends messages, collects what arrives.

    ``node`` is the gateway's node number, ``bank_node`` the bank's (frame
    headers name both).  Every decoded message is appended to ``received``;
    :meth:`wait_for` returns a Deferred that fires with the first received
    message matching a predicate (already received ones count), failing after
    ``timeout`` seconds so no test waits unbounded.  ``on_connect`` fires when
    the connection is made (before TLS completes), ``closed`` when it ends.
    A frame the adapter refuses is logged and closes the connection.
    """

    log = Logger()

    def __init__(self, adapter: Adapter, *, bank_node: str, node: str = "D00000",
                 clock: IReactorTime) -> None:
        self.adapter = adapter
        self.node = node
        self.bank_node = bank_node
        self.clock = clock
        self.received: list[Message] = []
        self.closed: Deferred[None] = Deferred()
        self.on_connect: Deferred[None] = Deferred()
        self._framer = adapter.framer()
        self._waiters: list[tuple[Callable[[Message], bool], Deferred[Message]]] = []
        self._serial = 0

    def next_seq_no(self) -> str:
        """A fresh gateway-side seq_no (20 digits)."""
        self._serial += 1
        return f"00000{self._serial:015d}"

    def connectionMade(self) -> None:
        self.on_connect.callback(None)

    def dataReceived(self, data: bytes) -> None:
        try:
            for frame in self._framer.feed(data):
                message = self.adapter.decode(frame)
                self.received.append(message)
                for waiter in list(self._waiters):
                    predicate, d = waiter
                    if d.called:  # timed out already
                        self._waiters.remove(waiter)
                    elif predicate(message):
                        self._waiters.remove(waiter)
                        d.callback(message)
        except AdapterError as e:
            self.log.error("test_gateway.bad_frame reason={reason}", reason=str(e))
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionError("lost"))) -> None:
        if not self.closed.called:
            self.closed.callback(None)

    def send(self, message: Message) -> None:
        """Encode and write one message."""
        self.transport.write(self.adapter.encode(message, sender=self.node, receiver=self.bank_node))

    def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 5.0) -> Deferred[Message]:
        """The first received message for which ``predicate`` holds, within ``timeout`` seconds."""
        for message in self.received:
            if predicate(message):
                d: Deferred[Message] = Deferred()
                d.callback(message)
                return d
        d = Deferred()
        self._waiters.append((predicate, d))
        d.addTimeout(timeout, self.clock)
        return d
