"""The machine's limit for relaying bank frames: a bytes-only mutually-authenticated TLS relay.

Three parties, all on 127.0.0.1, all with the dev PKI's certificates and the
gateway's own TLS policy (:func:`gateway.tls.server_options` /
:func:`gateway.tls.client_options`: TLS >= 1.2, AEAD suites, a client
certificate required on every hop, trust only in the dev CA):

- **source** (in the bench process, certificate ``centre-C52240``): opens
  ``links`` TLS connections to the relay and keeps ``window`` bdc Instruction
  frames outstanding on each: it writes ``window`` frames at once, then one
  more frame for every Result frame that comes back (closed loop).
- **relay** (``python -m bench.rawrelay relay``, certificate ``gateway``): for
  each connection it accepts, dials the bank over TLS and copies bytes both
  ways as they arrive, chunk by chunk: no framing, no parsing, no storage,
  no logging.  It is the part that stands in for the gateway.
- **bank** (``python -m bench.rawrelay bank``, certificate ``bank-B001``):
  for every complete Instruction frame received (counted by length, all frames
  are the same bytes) writes one Result frame back.

One *message* is one Instruction relayed to the bank plus its Result relayed
back (each frame crosses the relay's two TLS hops once, so four TLS records
are decrypted and four encrypted per message across the three processes).
The frames are pre-encoded once with :class:`adapters.bdc.BdcAdapter`: an
Instruction (about 1 KB) and its Result (about 0.7 KB), the frames the
gateway sends and receives per instruction; their sizes are in the report.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

__all__ = ["RawFrames", "RawRelayResult", "bank_argv", "encode_frames", "measure", "relay_argv"]


@dataclass(frozen=True)
class RawFrames:
    """The two pre-encoded bdc frames the raw relay passes back and forth."""

    instruction: bytes
    result: bytes

    def save(self, path: Path) -> None:
        """Write both frames (base64 JSON) for the bank process to read."""
        path.write_text(json.dumps({"instruction": base64.b64encode(self.instruction).decode(),
                                    "result": base64.b64encode(self.result).decode()}), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> RawFrames:
        """Read frames written by :meth:`save`."""
        doc = json.loads(path.read_text(encoding="utf-8"))
        return cls(base64.b64decode(doc["instruction"]), base64.b64decode(doc["result"]))


def encode_frames() -> RawFrames:
    """A realistic bdc Instruction (gateway D00000 to bank 105000) and the bank's Result for it."""
    from adapters import base
    from adapters.bdc import BdcAdapter

    adapter = BdcAdapter()
    ref = "52240261127000000001"
    instruction = base.Instruction(
        seq_no=ref, send_date=_dt.date(2026, 11, 27), centre_node="C52240", unit_no="522400000000000",
        debit_account="6200001111222233", debit_name="示例中心归集户", creditor_account="6200009999000011",
        creditor_name="张三", creditor_bank_code="105100000017", creditor_personal=True, same_bank=True,
        amount=123456, purpose="withdrawal", memo="hpf-gateway load test #1", reference="L0-00000001")
    result = base.Result(seq_no="10500026112700000001", reply_to=ref, ref=ref, succeeded=True,
                         host_seq_no="H2026112700000001", bank_seq_no="", code="0000", text="交易成功")
    return RawFrames(adapter.encode(instruction, sender="D00000", receiver="105000"),
                     adapter.encode(result, sender="105000", receiver="D00000"))


# -- the bank: one Result per Instruction ------------------------------------------------


class _Bank(Protocol):
    def __init__(self, frames: RawFrames) -> None:
        self._size = len(frames.instruction)
        self._result = frames.result
        self._have = 0

    def dataReceived(self, data: bytes) -> None:
        self._have += len(data)
        n, self._have = divmod(self._have, self._size)
        if n:
            self.transport.write(self._result * n)


# -- the relay: bytes both ways ------------------------------------------------------------


class _Upstream(Protocol):
    """The relay's connection to the bank: bytes from the bank go to the source unchanged."""

    def __init__(self, down: _Downstream) -> None:
        self.down = down

    def dataReceived(self, data: bytes) -> None:
        self.down.transport.write(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.down.transport.loseConnection()


class _Downstream(Protocol):
    """A connection from the source: dial the bank, then copy bytes to it unchanged."""

    def __init__(self, reactor: Any, upstream: Any) -> None:
        self._reactor = reactor
        self._endpoint = upstream
        self._up: _Upstream | None = None
        self._buffer: list[bytes] = []

    def connectionMade(self) -> None:
        d = connectProtocol(self._endpoint, _Upstream(self))
        d.addCallbacks(self._connected, lambda f: self.transport.loseConnection())

    def _connected(self, up: _Upstream) -> None:
        self._up = up
        if self._buffer:
            up.transport.write(b"".join(self._buffer))
            self._buffer = []

    def dataReceived(self, data: bytes) -> None:
        if self._up is None:
            self._buffer.append(data)
        else:
            self._up.transport.write(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._up is not None:
            self._up.transport.loseConnection()


# -- the source: closed loop, ``window`` outstanding per link --------------------------------


class _Source(Protocol):
    def __init__(self, frames: RawFrames, window: int, meter: _Meter) -> None:
        self._instruction = frames.instruction
        self._size = len(frames.result)
        self._window = window
        self._meter = meter
        self._have = 0
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self._instruction * self._window)

    def dataReceived(self, data: bytes) -> None:
        self._have += len(data)
        n, self._have = divmod(self._have, self._size)
        if n:
            self._meter.done += n
            if self._meter.sending:
                self.transport.write(self._instruction * n)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.lost.called:
            self.lost.callback(None)


class _Meter:
    def __init__(self) -> None:
        self.done = 0
        self.sending = True


@dataclass(frozen=True)
class RawRelayResult:
    """What the raw relay achieved: messages (Instruction + Result round trips) per second."""

    links: int
    window: int
    seconds: float
    messages: int
    msgs_per_s: float
    relay_cpu_s_per_1000: float | None
    bank_cpu_s_per_1000: float | None
    source_cpu_s_per_1000: float | None

    def to_json(self) -> dict[str, Any]:
        return {"links": self.links, "window_per_link": self.window, "seconds": round(self.seconds, 3),
                "messages": self.messages, "msgs_per_s": round(self.msgs_per_s, 1),
                "relay_cpu_s_per_1000": _r(self.relay_cpu_s_per_1000),
                "bank_cpu_s_per_1000": _r(self.bank_cpu_s_per_1000),
                "source_cpu_s_per_1000": _r(self.source_cpu_s_per_1000)}


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


async def measure(reactor: Any, *, keys: Path, frames: RawFrames, port: int, links: int, window: int,
                  seconds: float, warmup: float = 1.0, relay_pid: int | None = None,
                  bank_pid: int | None = None) -> RawRelayResult:
    """Drive the relay at ``127.0.0.1:port`` closed-loop and count round trips over ``seconds``.

    The first ``warmup`` seconds (handshakes, first window) are not counted.
    CPU per 1000 messages is read from /proc for the processes whose PIDs are
    given, and for this process.
    """
    from twisted.internet.task import deferLater

    from bench.common import proc_cpu_seconds, self_cpu_seconds
    from gateway.tls import client_options, tls_client_endpoint

    options = client_options(keys / "centre-C52240.crt", keys / "centre-C52240.key", [keys / "ca.crt"])
    meter = _Meter()
    protocols = []
    for _ in range(links):
        endpoint = tls_client_endpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10), options)
        protocols.append(await connectProtocol(endpoint, _Source(frames, window, meter)))
    await deferLater(reactor, warmup)

    def cpu() -> tuple[float | None, float | None, float]:
        return (proc_cpu_seconds(relay_pid) if relay_pid else None,
                proc_cpu_seconds(bank_pid) if bank_pid else None, self_cpu_seconds())

    c0, n0, t0 = cpu(), meter.done, time.monotonic()
    await deferLater(reactor, seconds)
    c1, n1, t1 = cpu(), meter.done, time.monotonic()
    meter.sending = False
    for p in protocols:
        p.transport.loseConnection()
    for p in protocols:
        await p.lost
    messages = n1 - n0
    elapsed = t1 - t0

    def per_1000(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or messages == 0 else (b - a) * 1000.0 / messages

    return RawRelayResult(links, window, elapsed, messages, messages / elapsed if elapsed > 0 else 0.0,
                          per_1000(c0[0], c1[0]), per_1000(c0[1], c1[1]), per_1000(c0[2], c1[2]))


# -- the helper processes ------------------------------------------------------------------------


def bank_argv(*, port: int, keys: Path, frames: Path) -> list[str]:
    """The command line of the raw relay's bank process."""
    return [sys.executable, "-m", "bench.rawrelay", "bank", "--port", str(port), "--keys", str(keys),
            "--frames", str(frames)]


def relay_argv(*, port: int, upstream: int, keys: Path) -> list[str]:
    """The command line of the raw relay's middle process."""
    return [sys.executable, "-m", "bench.rawrelay", "relay", "--port", str(port), "--upstream", str(upstream),
            "--keys", str(keys)]


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.rawrelay bank|relay …``: serve until SIGTERM."""
    from twisted.internet import reactor

    from gateway.tls import client_options, server_options, tls_client_endpoint, tls_server_factory

    p = argparse.ArgumentParser(prog="python -m bench.rawrelay", description=__doc__.splitlines()[0])
    p.add_argument("role", choices=("bank", "relay"))
    p.add_argument("--port", type=int, required=True, help="listen on 127.0.0.1:PORT")
    p.add_argument("--keys", type=Path, required=True, help="the dev PKI directory")
    p.add_argument("--upstream", type=int, help="relay: the bank's port")
    p.add_argument("--frames", type=Path, help="bank: the frames file written by the bench")
    args = p.parse_args(argv)
    keys: Path = args.keys
    trust = [keys / "ca.crt"]
    if args.role == "bank":
        if args.frames is None:
            p.error("bank needs --frames")
        frames = RawFrames.load(args.frames)
        options = server_options(keys / "bank-B001.crt", keys / "bank-B001.key", trust)
        factory = Factory.forProtocol(lambda: _Bank(frames))
    else:
        if args.upstream is None:
            p.error("relay needs --upstream")
        up_options = client_options(keys / "gateway.crt", keys / "gateway.key", trust)
        upstream = tls_client_endpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", args.upstream, timeout=10),
                                       up_options)
        options = server_options(keys / "gateway.crt", keys / "gateway.key", trust)
        factory = Factory.forProtocol(lambda: _Downstream(reactor, upstream))
    factory.noisy = False
    endpoint = serverFromString(reactor, f"tcp:{args.port}:interface=127.0.0.1")
    d = endpoint.listen(tls_server_factory(factory, options))
    d.addErrback(lambda f: (print(f"cannot listen: {f.getErrorMessage()}", file=sys.stderr), reactor.stop()))
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
