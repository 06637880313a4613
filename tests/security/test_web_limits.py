"""Every listener of both daemons gets the same guards from gateway.web: per-address cap, handshake and request deadlines.

Idle TCP connections (no TLS ClientHello, no request) are opened from
127.0.0.1 against the ledger's supervisor API, its ingest and its ops
listener, and against the gateway's ops listener: past
``connections_per_ip`` each new one is cut at once, and each held one is cut
when its deadline passes.  Limits are set low in the config so everything is
bounded to a few seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest
import pytest_twisted
from twisted.internet import reactor

from gateway.ledger import store as ledger_store
from gateway.ledger.config import load_ledger_config
from gateway.ledger.service import Ledger, makeLedgerService
from gateway.pki import DevPki
from gateway.listener import when_listening
from tests.integration.harness import start_harness
from tests.security.support import capture_logs, connect_tcp, ledger_config, settle

CAP = 4
HANDSHAKE, REQUEST = 1.0, 1.5


@pytest_twisted.async_yield_fixture
async def ledger(tmp_path: Path, dev_pki: DevPki) -> AsyncIterator[Ledger]:
    config = load_ledger_config(ledger_config(tmp_path, dev_pki, limits={
        "connections_per_ip": CAP, "handshake_timeout": HANDSHAKE, "request_timeout": REQUEST}))
    ledger_store.MIGRATIONS.upgrade(config.database)
    running = makeLedgerService(config, reactor)
    running.service.startService()
    yield running
    await running.service.stopService()


async def _port(ledger: Ledger, name: str) -> int:
    return (await when_listening(ledger.listeners[name])).getHost().port


@pytest.mark.parametrize("listener", ["supervisor", "ingest", "ops"])
@pytest_twisted.ensureDeferred
async def test_idle_connections_from_one_address_are_cut_at_the_cap_and_at_their_deadline(
        ledger: Ledger, listener: str) -> None:
    port = await _port(ledger, listener)
    with capture_logs() as logs:
        held = [await connect_tcp(port) for _ in range(CAP)]
        extra = [await connect_tcp(port) for _ in range(3)]
        for probe in held + extra:
            await settle(probe, 5.0)
    assert all(not p.open for p in held + extra), "an idle connection outlived its deadline"
    # Past the cap: cut at once.  Within it: held until the deadline, not before.
    deadline = HANDSHAKE if listener != "ops" else REQUEST
    for probe in extra:
        assert probe.lost_at - probe.connected_at < deadline, "a connection past the cap was held"
    for probe in held:
        assert probe.lost_at - probe.connected_at >= deadline - 0.05, "cut before its deadline"
    limit = logs.named(f"{listener}.connection_limit")
    assert len(limit) == 3 and {e["ip"] for e in limit} == {"127.0.0.1"}
    timeouts = logs.named(f"{listener}.handshake_timeout" if listener != "ops" else "ops.request_timeout")
    assert len(timeouts) == CAP
    # Freed: a new connection is accepted again.
    again = await connect_tcp(port)
    await settle(again, 0.3)
    assert again.open
    again.close()


@pytest_twisted.ensureDeferred
async def test_the_gateway_ops_listener_has_the_centre_apis_cap(tmp_path: Path) -> None:
    h = await start_harness(tmp_path, banks={}, limits={"centre_connections_per_ip": CAP})
    try:
        port = (await when_listening(h.gateway.listeners["ops"])).getHost().port
        with capture_logs() as logs:
            held = [await connect_tcp(port) for _ in range(CAP)]
            extra = await connect_tcp(port)
            await settle(extra, 2.0)
            assert not extra.open and all(p.open for p in held)
            for probe in held:
                probe.close()
        assert len(logs.named("ops.connection_limit")) == 1
    finally:
        await h.stop()


@pytest.mark.parametrize("bank", ["B001", "B003"])  # bdc: a connection per request; iso20022: persistent
@pytest_twisted.ensureDeferred
async def test_a_bank_link_listener_has_the_same_cap_and_handshake_deadline(tmp_path: Path, bank: str) -> None:
    """Idle TCP to the port a bank dials in on: cut at the cap at once, and at the handshake deadline."""
    h = await start_harness(tmp_path, banks={}, limits={"centre_connections_per_ip": CAP,
                                                        "centre_handshake_timeout": HANDSHAKE})
    try:
        assert h.config.banks[bank].direction == "listen"
        port = int(h.config.banks[bank].endpoint.split(":")[1])
        with capture_logs() as logs:
            held = [await connect_tcp(port) for _ in range(CAP)]
            extra = [await connect_tcp(port) for _ in range(3)]
            for probe in held + extra:
                await settle(probe, 5.0)
        assert all(not p.open for p in held + extra), "an idle connection outlived its deadline"
        for probe in extra:
            assert probe.lost_at - probe.connected_at < HANDSHAKE, "a connection past the cap was held"
        for probe in held:
            assert probe.lost_at - probe.connected_at >= HANDSHAKE - 0.05, "cut before its deadline"
        assert len(logs.named(f"bank:{bank}.connection_limit")) == 3
        assert len(logs.named(f"bank:{bank}.handshake_timeout")) == CAP
    finally:
        await h.stop()
