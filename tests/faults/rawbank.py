"""A bank that says exactly what the test tells it to, byte for byte, over real mutual TLS.

The simulator (:mod:`gateway.simulate.bank`) is a well-behaved bank; to
replay a frame the gateway has already seen, a test needs one that is not.
:class:`RawBank` dials the gateway's B001 listener with the bank's dev
certificate, signs on, and then lets the test send encoded frames (the same
bytes as often as it likes) and read what the gateway answers.  Blocking
sockets, bounded by timeouts: it lives in the test's own thread.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from itertools import count

from adapters import base as msg
from adapters.bdc import BdcAdapter
from gateway.config import GatewayConfig

__all__ = ["RawBank"]


class RawBank:
    """Bank B001 of ``config`` as a scripted peer (see the module docstring)."""

    def __init__(self, config: GatewayConfig, bank_id: str = "B001") -> None:
        bank = config.banks[bank_id]
        m = re.fullmatch(r"tcp:(?:port=)?(\d+)(?::interface=([^:]+))?", bank.endpoint)
        assert m and bank.direction == "listen", f"{bank_id} must be a bank the gateway listens for"
        self.port = int(m.group(1))
        self.node = bank.node
        self.gateway_node = config.node
        keys = config.tls.ca.parent
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False  # peers are named by hpf:// identities, not DNS names
        ctx.load_verify_locations(str(keys / "ca.crt"))
        ctx.load_cert_chain(str(keys / f"bank-{bank_id}.crt"), str(keys / f"bank-{bank_id}.key"))
        self.ctx = ctx
        self.adapter = BdcAdapter()
        self.sock: ssl.SSLSocket | None = None
        self._framer = self.adapter.framer()
        self._seq = count(int(time.time()) % 10**6 * 10**6)
        self.inbox: list[msg.Message] = []

    def seq(self) -> str:
        """A fresh bank serial (node + 14 digits)."""
        return f"{self.node}{next(self._seq):014d}"

    def connect(self, timeout: float = 15.0) -> None:
        """Dial (retrying while the gateway is not listening yet), verify, and answer its SignOn."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                raw = socket.create_connection(("127.0.0.1", self.port), timeout=2)
                self.sock = self.ctx.wrap_socket(raw)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._framer = self.adapter.framer()
        self.inbox = []
        sign_on = self.expect(msg.SignOn, timeout=10)
        self.send(msg.SignOnAnswer(self.seq(), sign_on.seq_no, self.node))

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def encode(self, message: msg.Message) -> bytes:
        return self.adapter.encode(message, sender=self.node, receiver=self.gateway_node)

    def send(self, message: msg.Message) -> bytes:
        """Encode and send one message; the frame's bytes (to send again with :meth:`send_raw`)."""
        frame = self.encode(message)
        self.send_raw(frame)
        return frame

    def send_raw(self, frame: bytes) -> None:
        assert self.sock is not None, "not connected"
        self.sock.sendall(frame)

    def _read(self, timeout: float) -> None:
        assert self.sock is not None, "not connected"
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        if not data:
            raise ConnectionError("the gateway closed the link")
        for frame in self._framer.feed(data):
            for m in msg.decode_all(self.adapter, frame):
                if isinstance(m, msg.Heartbeat):  # keep the line alive, as any bank would
                    self.send(msg.HeartbeatAnswer(self.seq(), m.seq_no, self.node))
                else:
                    self.inbox.append(m)

    def expect(self, kind: type, timeout: float = 10.0, **fields: object) -> msg.Message:
        """The first received message of ``kind`` whose attributes equal ``fields`` (removed from the inbox)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.inbox):
                if isinstance(m, kind) and all(getattr(m, k) == v for k, v in fields.items()):
                    return self.inbox.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind.__name__} {fields} from the gateway within {timeout}s; "
                                     f"got {self.inbox}")
            self._read(min(left, 0.5))

    def drain(self, seconds: float) -> list[msg.Message]:
        """Everything the gateway sends during ``seconds`` (the inbox is emptied)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._read(max(min(deadline - time.monotonic(), 0.2), 0.01))
        out, self.inbox = self.inbox, []
        return out
