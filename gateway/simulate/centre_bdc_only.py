"""A centre that speaks only bdc, simulated: its requests go to the gateway's ``[listen]
centre_bdc`` (gateway/simulate/bdc_centre.py does those), and it listens, as the deployed
centre's ``CRFCenterServer`` does on ``centerIp``/``centerPort``, for the settlement system's
SBDC100 account-change notices, which the gateway pushes (gateway/centre_notify.py).

:class:`NoticeDesk` is that listener's core: one frame per connection, answered with the
deployed centre's reply (the twelve head fields, TxStatus ``0``, an empty body; ``1``/``10000``
when it cannot read the frame), then closed.  As the deployed centre does, it stores each line
once, keyed by (acct, amt, opponentAcct, opponentName, hostSeqNo), and counts the repeats it
skipped (docs/protocols/bdc.md, "The centre role").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.protocol import Factory, Protocol

from adapters import base
from adapters.base import AdapterError
from adapters.bdc import BdcAdapter

__all__ = ["NoticeDesk", "notice_listener"]


@dataclass
class NoticeDesk:
    """What the centre's notice listener has taken (see the module docstring)."""

    node: str
    codec: BdcAdapter = field(default_factory=lambda: BdcAdapter(echo=False))
    lines: dict[tuple[str, int, str, str, str], base.Entry] = field(default_factory=dict)
    notices: int = 0
    repeated_lines: int = 0
    refused: int = 0
    serials: set[str] = field(default_factory=set)
    _serial: int = 0

    def host_serials(self) -> set[str]:
        return {e.host_seq_no for e in self.lines.values() if e.host_seq_no}

    def answer(self, frame: bytes) -> bytes | None:
        """The centre's reply to one frame."""
        self._serial += 1
        seq = f"{self.node[1:]}00000{self._serial:010d}"
        try:
            message = self.codec.decode(frame)
        except AdapterError:
            self.refused += 1
            return self.codec.refusal(frame, sender=self.node, seq_no=seq)
        if isinstance(message, base.Heartbeat):  # the settlement system's probe: answered in clear
            return self.codec.encode(base.HeartbeatAnswer(seq, message.seq_no, self.node), sender=self.node,
                                     receiver=message.node)
        if not isinstance(message, base.Movement):
            self.refused += 1
            return self.codec.refusal(frame, sender=self.node, seq_no=seq)
        self.notices += 1
        self.serials.add(message.seq_no)
        for e in message.entries:
            key = (e.account, e.amount, e.counterparty_account, e.counterparty_name, e.host_seq_no)
            if key in self.lines:
                self.repeated_lines += 1
            else:
                self.lines[key] = e
        return self.codec.encode(base.Ack(seq, message.seq_no), sender=self.node, receiver="D00000")


class _NoticeConnection(Protocol):
    def __init__(self, desk: NoticeDesk) -> None:
        self.desk = desk
        self.framer = desk.codec.framer()
        self.done = False

    def dataReceived(self, data: bytes) -> None:
        if self.done:
            return
        try:
            frames = self.framer.feed(data)
        except AdapterError:
            self.transport.abortConnection()
            return
        if frames:
            self.done = True
            reply = self.desk.answer(frames[0])
            if reply is not None:
                self.transport.write(reply)
            self.transport.loseConnection()


class _NoticeFactory(Factory):
    def __init__(self, desk: NoticeDesk) -> None:
        self.desk = desk

    def buildProtocol(self, addr: Any) -> _NoticeConnection:
        return _NoticeConnection(self.desk)


def notice_listener(reactor: Any, desk: NoticeDesk, *, port: int, certificate: Path, private_key: Path,
                    ca: Path) -> Any:
    """Listen on loopback ``port`` with mutual TLS (the centre's certificate; the peer's must
    chain to ``ca``); returns the Deferred of the listening port."""
    from twisted.internet.endpoints import TCP4ServerEndpoint

    from gateway.tls import server_options, tls_server_factory

    options = server_options(certificate, private_key, [ca])
    return TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(
        tls_server_factory(_NoticeFactory(desk), options))
