"""Revocation reaches open connections: on reload, every connection the new trust refuses is closed within a second.

In-process daemons over loopback TLS.  A keep-alive HTTP connection (one
request answered, then held open) is made as each party; the CRL or the
config changes and the daemon reloads (what SIGHUP runs): the connection of
the revoked or removed party is closed at once, the others stay open, and
``tls.connection_closed`` names the peer.  The bank link of a revoked bank
drops and its new handshakes are refused.  The subprocess version, with a
real SIGHUP, is tests/security/test_crl_reload.py.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest_twisted
from cryptography.hazmat.primitives import serialization
from twisted.internet import reactor

from gateway.config import render_toml
from gateway.ledger import store as ledger_store
from gateway.ledger.config import load_ledger_config
from gateway.ledger.service import makeLedgerService
from gateway.pki import DevPki, init_dev_pki, write_crl
from gateway.tls import client_options
from gateway.listener import when_listening
from tests.integration.harness import CENTRE, OTHER_CENTRE, start_harness
from tests.security.support import Probe, capture_logs, connect_tls, settle, sleep
from tests.kit.ledger import GATEWAY_KEY

WITHIN = 1.0  # seconds: the promise


async def _keep_alive(port: int, pki: DevPki, role: str, name: str, path: str = "/v1/results") -> Probe:
    """A TLS connection as ``role/name`` that got one HTTP answer and is kept open."""
    probe = await connect_tls(port, client_options(pki.cert(role, name), pki.key(role, name), [pki.ca_cert]))
    probe.transport.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())  # type: ignore[union-attr]
    await probe.got_data.addTimeout(10, reactor)
    assert probe.received.startswith(b"HTTP/1.1 "), probe.received[:100]
    await settle(probe, 0.1)
    assert probe.open
    return probe


def _set_toml(path: Path, change: Any) -> None:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(render_toml(data), encoding="utf-8")


@pytest_twisted.ensureDeferred
async def test_a_revoked_centres_open_connection_and_a_revoked_banks_link_are_closed_on_reload(tmp_path: Path) -> None:
    h = await start_harness(tmp_path, banks={"B001": {}})
    try:
        await h.link_up("B001")
        port = (await when_listening(h.gateway.listeners["centre_api"])).getHost().port
        crl = write_crl(h.pki.ca_cert, h.pki.ca_key, tmp_path / "ca.crl")  # revokes nothing
        _set_toml(h.config.path, lambda d: d["tls"].__setitem__("crls", [str(crl)]))
        h.gateway.reload()
        revoked = await _keep_alive(port, h.pki, "centre", CENTRE)
        other = await _keep_alive(port, h.pki, "centre", OTHER_CENTRE)

        write_crl(h.pki.ca_cert, h.pki.ca_key, crl, [h.pki.cert("centre", CENTRE), h.pki.cert("bank", "B001")])
        with capture_logs() as logs:
            h.gateway.reload()
            await settle(revoked, WITHIN)
            assert not revoked.open, "the revoked centre's connection was still open a second after the reload"
            assert other.open
            for _ in range(int(WITHIN / 0.05)):  # its probe must meet the new trust within the second
                if h.gateway.relay.dispatchers["B001"].session is None:
                    break
                await sleep(0.05)
            assert h.gateway.relay.dispatchers["B001"].session is None, "the revoked bank's link is still up"
            await sleep(0.5)  # the bank dials again, and is refused in the handshake
            assert h.gateway.relay.dispatchers["B001"].session is None
        # B001 takes a connection per request (the deployed bdc model): no connection of its
        # stays open to close; a probe meets the new trust at once, is refused, and the session is down.
        assert h.config.banks["B001"].connection == "per_request"
        assert logs.named("link.recheck")
        closed = {(e["listener"], e["peer"]) for e in logs.named("tls.connection_closed")}
        assert ("centre_api", f"hpf://centre/{CENTRE}") in closed
        assert closed <= {("centre_api", f"hpf://centre/{CENTRE}"), ("bank_B001", "hpf://bank/B001")}
        assert all(e["reason"] == "certificate revoked" for e in logs.named("tls.connection_closed"))
        other.close()
    finally:
        await h.stop()


@pytest_twisted.ensureDeferred
async def test_a_centre_removed_from_the_config_loses_its_open_connection_on_reload(tmp_path: Path) -> None:
    h = await start_harness(tmp_path, banks={})
    try:
        port = (await when_listening(h.gateway.listeners["centre_api"])).getHost().port
        removed = await _keep_alive(port, h.pki, "centre", OTHER_CENTRE)
        kept = await _keep_alive(port, h.pki, "centre", CENTRE)

        def drop(data: dict[str, Any]) -> None:
            del data["centres"][OTHER_CENTRE]
            data["accounts"] = {k: v for k, v in data["accounts"].items() if v["centre"] != OTHER_CENTRE}

        _set_toml(h.config.path, drop)
        with capture_logs() as logs:
            h.gateway.reload()
            await settle(removed, WITHIN)
        assert not removed.open and kept.open
        [line] = logs.named("tls.connection_closed")
        assert line["peer"] == f"hpf://centre/{OTHER_CENTRE}" and "not a configured party" in line["reason"]
        kept.close()
    finally:
        await h.stop()


@pytest_twisted.ensureDeferred
async def test_the_ledger_takes_crls_and_closes_a_revoked_supervisors_open_connection_on_reload(
        tmp_path: Path) -> None:
    pub = tmp_path / "gateway-signing.pub"
    pub.write_bytes(GATEWAY_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    # A CA of our own for this test: the CRL it signs must not touch the shared dev PKI.
    pki = init_dev_pki(tmp_path / "pki", banks=(), centres=(), supervisors=("sup1", "sup2"))
    crl = write_crl(pki.ca_cert, pki.ca_key, tmp_path / "ca.crl")
    path = tmp_path / "ledger.toml"
    path.write_text(render_toml({
        "ledger": {"name": "main", "database": f"sqlite:///{tmp_path / 'ledger.db'}"},
        "tls": {"certificate": str(pki.cert("ledger")), "private_key": str(pki.key("ledger")),
                "ca": str(pki.ca_cert), "crls": [str(crl)]},
        "listen": {"ingest": "tcp:0:interface=127.0.0.1", "supervisor": "tcp:0:interface=127.0.0.1",
                   "ops": "tcp:0:interface=127.0.0.1"},
        "gateways": {"main": {"signing_key": str(pub), "signature_alg": "ed25519"}},
        "supervisors": {"sup1": {}, "sup2": {}},
        "thresholds": {"large_amount": "1000000.00", "result_deadline": 60.0, "booking_deadline": 60.0,
                       "balance_tolerance": "0.00"},
    }), encoding="utf-8")
    config = load_ledger_config(path)
    assert config.tls.crls == (crl,)
    ledger_store.MIGRATIONS.upgrade(config.database)
    ledger = makeLedgerService(config, reactor)
    ledger.service.startService()
    try:
        port = (await when_listening(ledger.listeners["supervisor"])).getHost().port
        ingest = (await when_listening(ledger.listeners["ingest"])).getHost().port
        revoked = await _keep_alive(port, pki, "supervisor", "sup1", "/v1/alerts")
        other = await _keep_alive(port, pki, "supervisor", "sup2", "/v1/alerts")
        gateway = await _keep_alive(ingest, pki, "gateway", "main", "/v1/copies")
        assert ledger.metrics.crl_next_update.collect()[0].samples, "the CRL's nextUpdate is not exported"

        write_crl(pki.ca_cert, pki.ca_key, crl, [pki.cert("supervisor", "sup1")])
        with capture_logs() as logs:
            assert ledger.reload()
            await settle(revoked, WITHIN)
        assert not revoked.open and other.open and gateway.open
        [line] = logs.named("tls.connection_closed")
        assert (line["listener"], line["peer"]) == ("supervisor", "hpf://supervisor/sup1")
        # A new connection with the revoked certificate is refused in the handshake.
        with capture_logs() as logs:
            probe = await connect_tls(port, client_options(pki.cert("supervisor", "sup1"),
                                                           pki.key("supervisor", "sup1"), [pki.ca_cert]))
            await settle(probe, 2.0)
        assert not probe.open and logs.named("tls.chain_refused")

        # sup2 leaves the config: its open connection is closed, and a new one is not served.
        _set_toml(path, lambda d: d["supervisors"].pop("sup2"))
        with capture_logs() as logs:
            assert ledger.reload()
            await settle(other, WITHIN)
        assert not other.open and gateway.open
        assert [e["peer"] for e in logs.named("tls.connection_closed")] == ["hpf://supervisor/sup2"]
        again = await _keep_alive(port, pki, "supervisor", "sup2", "/v1/alerts")
        assert again.received.startswith(b"HTTP/1.1 403 "), again.received[:100]
        again.close()
        gateway.close()
    finally:
        await ledger.service.stopService()
