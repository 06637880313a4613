"""``python -m bench bdc-exchange``: bdc as deployed, one TLS connection per request.

In one process on loopback: the simulated bdc bank serving each request on its own
mutual-TLS connection (:class:`gateway.simulate.bank_exchange.ExchangeBankLink`) and the gateway's
:class:`gateway.exchange.StreamTransport` dialling it, ``--window`` exchanges at once.

Three phases share the time: Instructions (BDC109 answered by a Result: the bank books
and answers), probes (SYS600 over TLS: connection, handshake, one frame each way) and the
same probes over plain TCP.  Each reports exchanges per second and the process's CPU per
exchange (both ends of the connection are in this process).  The handshake's CPU cost is
the difference between a TLS probe and a plain one.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import BenchError, Report, proc_cpu_seconds, run_reactor

HELP = "bdc per-request exchanges over TLS: throughput and the handshake's CPU cost"
DEFAULT_SECONDS = 9.0

_BANK, _GATEWAY = "105000", "D00000"
_ACCOUNT = "6200001111222233"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--window", type=int, default=16, help="exchanges at once (default 16)")
    p.add_argument("--dir", type=Path, help="work directory for the dev keys (default: a temporary one)")


def run(args: argparse.Namespace) -> Report:
    if args.window < 1:
        raise BenchError("--window must be at least 1")
    with tempfile.TemporaryDirectory(prefix="bench-bdc-") as tmp:
        work = args.dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        figures = run_reactor(lambda reactor: _main(reactor, work, args), timeout=args.seconds + 60)
    rows = []
    for phase in ("instruction_tls", "probe_tls", "probe_plain"):
        f = figures[phase]
        rows.append((f"{phase}: exchanges", f["per_s"], "per s"))
        rows.append((f"{phase}: CPU per exchange", f["cpu_ms"], "ms (both ends)"))
    rows.append(("TLS handshake CPU (probe TLS - plain)", figures["handshake_cpu_ms"], "ms per connection"))
    notes = ("both ends of every connection run in this one process: CPU figures cover client and server",)
    return Report("bdc-exchange", f"bdc per request: window {args.window}", tuple(rows), figures,
                  {"seconds": args.seconds, "window": args.window}, notes)


async def _main(reactor: Any, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
    from twisted.internet.protocol import Factory, Protocol

    from adapters import base as msg
    from adapters.bdc import BdcAdapter
    from gateway.exchange import StreamTransport
    from gateway.pki import init_dev_pki
    from gateway.simulate.bank import BankCore
    from gateway.simulate.bank_service import make_bank_service
    from gateway.tls import client_options, tls_client_endpoint

    pki = init_dev_pki(tmp / "keys", banks=["B001"], centres=["C52240"])
    core = BankCore(node=_BANK, accounts={_ACCOUNT: 10**15}, account_names={_ACCOUNT: "示例中心归集户"},
                    gateway_node=_GATEWAY, push_results=False)
    bank = make_bank_service(reactor, adapter_name="bdc", bank_id="B001", node=_BANK, role="listen",
                             endpoint="tcp:0:interface=127.0.0.1", certificate=pki.cert("bank", "B001"),
                             private_key=pki.key("bank", "B001"), trust=[pki.ca_cert], core=core,
                             gateway_node=_GATEWAY, connection="per_request")
    bank.startService()
    adapter = BdcAdapter(echo=False)
    try:
        port = (await bank.when_listening()).getHost().port
        options = client_options(pki.cert("gateway"), pki.key("gateway"), [pki.ca_cert])
        tls = StreamTransport(tls_client_endpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port), options),
                              adapter.framer, reactor, timeout=30.0)

        class Probe(Protocol):  # the plain-TCP peer: answers a probe, then closes
            def connectionMade(self) -> None:
                self.framer = adapter.framer()

            def dataReceived(self, data: bytes) -> None:
                for frame in self.framer.feed(data):
                    m = adapter.decode(frame)
                    self.transport.write(adapter.encode(msg.HeartbeatAnswer("B1", m.seq_no, _BANK),
                                                        sender=_BANK, receiver=_GATEWAY))
                    self.transport.loseConnection()

        plain_port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Probe))
        plain = StreamTransport(TCP4ClientEndpoint(reactor, "127.0.0.1", plain_port.getHost().port),
                                adapter.framer, reactor, timeout=30.0)
        serial = iter(range(1, 10**9))

        def instruction() -> bytes:
            n = next(serial)
            m = msg.Instruction(f"52240{_dt.date.today():%y%m%d}{n:09d}", _dt.date.today(), "C52240",
                                "522400000000000", _ACCOUNT, "示例中心归集户", "6200009999000011", "张三",
                                "105100000017", True, True, 100, "withdrawal", "bench", f"B{n}")
            return adapter.encode(m, sender=_GATEWAY, receiver=_BANK)

        def probe() -> bytes:
            return adapter.encode(msg.Heartbeat(f"00000{next(serial):015d}", _GATEWAY), sender=_GATEWAY,
                                  receiver=_BANK)

        budget = args.seconds / 3
        figures: dict[str, Any] = {}
        for phase, transport, make in (("instruction_tls", tls, instruction), ("probe_tls", tls, probe),
                                       ("probe_plain", plain, probe)):
            figures[phase] = await _phase(reactor, transport, make, args.window, budget)
        await plain_port.stopListening()
        figures["handshake_cpu_ms"] = round(figures["probe_tls"]["cpu_ms"] - figures["probe_plain"]["cpu_ms"], 3)
        figures["bank_executions"] = sum(core.stats()["executions"].values()) if isinstance(
            core.stats().get("executions"), dict) else None
        return figures
    finally:
        await bank.stopService()


async def _phase(reactor: Any, transport: Any, make: Any, window: int, seconds: float) -> dict[str, Any]:
    from twisted.internet.defer import Deferred

    done = {"n": 0, "failed": 0}
    end = time.monotonic() + seconds
    finished: Deferred[None] = Deferred()
    running = {"n": 0}
    cpu0 = proc_cpu_seconds(os.getpid())
    t0 = time.monotonic()

    def one() -> None:
        if time.monotonic() >= end:
            if running["n"] == 0 and not finished.called:
                finished.callback(None)
            return
        running["n"] += 1
        d = transport.request(make())

        def settled(result: Any) -> None:
            running["n"] -= 1
            if isinstance(result, bytes):
                done["n"] += 1
            else:
                done["failed"] += 1
            reactor.callLater(0, one)

        d.addBoth(settled)

    for _ in range(window):
        one()
    await finished
    elapsed = time.monotonic() - t0
    cpu = proc_cpu_seconds(os.getpid()) - cpu0
    n = max(done["n"], 1)
    return {"exchanges": done["n"], "failed": done["failed"], "per_s": round(done["n"] / elapsed, 1),
            "cpu_ms": round(cpu / n * 1000, 3), "elapsed_s": round(elapsed, 2)}
