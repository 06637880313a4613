"""Bad networks between every pair: each fault under load, counted like the crash tests, and the link back.

A :class:`~tests.faults.netproxy.FaultyLink` sits between two real processes:
the bank and the gateway (the bank dials the gateway through it), the centre
and the gateway (every centre call goes through it), the gateway and the
ledger (the gateway's ledger URL points at it).  Each case sets one fault for
a few seconds while the centre submits, then heals the network; the case
passes when, with no process restarted, every acknowledged instruction is
executed once, final once on the feed and at the ledger once, and the link is
up again.  Timers are short (heartbeat 1 s, dead after 3 s) so that dead peers
are found within a test.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.faults.harness import Load, Rig, count_everything, dump, settle
from tests.faults.netproxy import FaultyLink
from tests.kit import procs

pytestmark = pytest.mark.slow

N = 60
FAULT_SECONDS = 5.0
# result_timeout sets how long the rig's ledger waits before it judges missing results (its
# result_timeout plus two status query intervals: Rig.prepare), which every case waits out before
# its alerts are counted: 10 s (a 14 s deadline) is twice the fault and still leaves the gateway's
# own status queries (5 of them, 2 s apart) the time to settle anything the fault held up.
TIMERS = {"heartbeat_interval": 1.0, "dead_after": 3.0, "receipt_timeout": 2.0, "result_timeout": 10.0}

FAULTS: dict[str, Callable[[FaultyLink], None]] = {
    "latency-jitter": lambda p: p.delay(0.08, 0.06),
    "bandwidth": lambda p: p.limit(4_000),
    "reset-mid-frame": lambda p: p.reset_after(700),
    "half-open": lambda p: p.silence(),
    "black-hole": lambda p: (p.black_hole(), p.reset_all()),
}


def _port(endpoint: str) -> int:
    return int(endpoint.split(":")[1])


def _run(rig: Rig, proxy: FaultyLink, fault: str, request: pytest.FixtureRequest, *, pair: str,
         load: Load, gw: procs.Proc, bank: procs.Proc, ledger: procs.Proc) -> None:
    load.start()
    time.sleep(0.5)
    FAULTS[fault](proxy)
    time.sleep(FAULT_SECONDS)
    proxy.heal()
    healed = time.monotonic()
    rig.wait_link(timeout=30)  # the link is back on its own, nothing restarted
    link_back_s = round(time.monotonic() - healed, 2)
    load.finish(90)
    feed = settle(rig, load.acknowledged, timeout=90)
    assert gw.alive() and bank.alive() and ledger.alive()
    assert rig.stop(gw) == 0
    rig.stop(bank)
    stats = rig.bank_stats()
    # A silent line to the ledger holds copies back past the ledger's result deadline: the
    # ledger cannot tell a silent gateway from a missing result, and says so (docs/reliability.md).
    expected = {"missing-result"} if (pair, fault) == ("gateway-ledger", "half-open") else set()
    counts = count_everything(rig, load, feed=feed, stats=stats, expect_alerts=expected)
    # How long the bank link took to come back is this fault's recovery only when the fault was on it.
    recovery = {"link_back_s": link_back_s} if pair.startswith("gateway-bank") else {}
    dump(rig.tmp.parent / "fault-counts.jsonl", counts, test=request.node.name, pair=pair, fault=fault,
         proxy=dict(proxy.counts), **recovery)
    print(f"\n{pair} {fault}: {counts.line()} proxy={proxy.counts} link_back_s={link_back_s}")
    counts.assert_exactly_once()


@pytest.mark.parametrize("fault", list(FAULTS))
def test_gateway_bank_network_faults_lose_and_double_nothing(tmp_path, fault, request):
    """bdc as deployed: the gateway's requests, each on its own connection, go through the proxy."""
    rig = Rig.prepare(tmp_path, timeouts=TIMERS)
    bank = rig.config.banks["B001"]
    assert bank.connection == "per_request" and bank.peer_endpoint is not None
    port = _port(bank.peer_endpoint.replace("tcp:127.0.0.1:", "tcp:"))
    proxy = FaultyLink(("127.0.0.1", port))
    rig.config.path.write_text(rig.config.path.read_text(encoding="utf-8").replace(
        bank.peer_endpoint, f"tcp:127.0.0.1:{proxy.port}"), encoding="utf-8")
    try:
        ledger, gw = rig.start_ledger_and_gateway()
        sim = rig.start_bank("--endpoint", f"tcp:{port}:interface=127.0.0.1")  # where it really listens
        rig.wait_link()
        load = Load(rig.config, [f"NB-{n}" for n in range(N)], interval=0.1, deadline=90)
        _run(rig, proxy, fault, request, pair="gateway-bank (per request)", load=load, gw=gw, bank=sim,
             ledger=ledger)
    finally:
        rig.kill_all()
        proxy.close()


@pytest.mark.parametrize("fault", ["reset-mid-frame", "half-open"])
def test_a_persistent_bank_link_survives_network_faults(tmp_path, fault, request):
    """The persistent opt-in: the bank dials the gateway through the proxy and keeps its session."""
    rig = Rig.prepare(tmp_path, timeouts=TIMERS, banks={"B001": {"connection": "persistent"}})
    proxy = FaultyLink(("127.0.0.1", _port(rig.config.banks["B001"].endpoint)))
    try:
        ledger, gw = rig.start_ledger_and_gateway()
        bank = rig.start_bank("--endpoint", f"tcp:127.0.0.1:{proxy.port}")
        rig.wait_link()
        load = Load(rig.config, [f"NP-{n}" for n in range(N)], interval=0.1, deadline=90)
        _run(rig, proxy, fault, request, pair="gateway-bank (persistent)", load=load, gw=gw, bank=bank,
             ledger=ledger)
    finally:
        rig.kill_all()
        proxy.close()


@pytest.mark.parametrize("fault", ["latency-jitter", "reset-mid-frame", "half-open"])
def test_centre_gateway_network_faults_lose_and_double_nothing(tmp_path, fault, request):
    rig = Rig.prepare(tmp_path, timeouts=TIMERS)
    proxy = FaultyLink(("127.0.0.1", _port(rig.config.centre_api)))
    try:
        ledger, gw = rig.start_ledger_and_gateway()
        bank = rig.start_bank()
        rig.wait_link()
        # The centre's calls go through the proxy; a call that hears nothing times out and is retried.
        load = Load(rig.config, [f"NC-{n}" for n in range(N)], interval=0.1, deadline=90,
                    port=proxy.port, call_timeout=2.0)
        _run(rig, proxy, fault, request, pair="centre-gateway", load=load, gw=gw, bank=bank, ledger=ledger)
    finally:
        rig.kill_all()
        proxy.close()


@pytest.mark.parametrize("fault", ["latency-jitter", "reset-mid-frame", "half-open"])
def test_gateway_ledger_network_faults_lose_and_double_nothing(tmp_path, fault, request):
    rig = Rig.prepare(tmp_path, timeouts=TIMERS)
    assert rig.config.ledger is not None
    ingest = int(rig.config.ledger.url.rsplit(":", 1)[1])
    proxy = FaultyLink(("127.0.0.1", ingest))
    rig.config.path.write_text(rig.config.path.read_text(encoding="utf-8").replace(
        f"127.0.0.1:{ingest}", f"127.0.0.1:{proxy.port}"), encoding="utf-8")
    try:
        ledger, gw = rig.start_ledger_and_gateway()
        bank = rig.start_bank()
        rig.wait_link()
        load = Load(rig.config, [f"NL-{n}" for n in range(N)], interval=0.1, deadline=90)
        _run(rig, proxy, fault, request, pair="gateway-ledger", load=load, gw=gw, bank=bank, ledger=ledger)
    finally:
        rig.kill_all()
        proxy.close()
