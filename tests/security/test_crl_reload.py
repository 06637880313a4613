"""Revocation without a restart: ``[tls] crls`` and SIGHUP on a real gateway process.

The gateway runs as a subprocess (tests/kit/procs.py) with a CRL that revokes
nothing and a simulated bank B001 dialled in.  The centre's certificate is
then revoked in a new CRL and the gateway gets SIGHUP: the centre's open
keep-alive connection is closed within a second (``tls.connection_closed``),
a new connection with the revoked certificate is refused (logged and counted
as a refused handshake), while the bank link that was up stays up — the same
session carries an instruction submitted after the reload with the centre's
rotated certificate.
"""

from __future__ import annotations

import http.client
import json
import signal
import ssl
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewayConfig, load_config, render_toml
from gateway.pki import issue, write_crl
from tests.kit import procs

pytestmark = pytest.mark.slow


def _open(config: GatewayConfig, cert: Path, key: Path) -> http.client.HTTPSConnection:
    keys = config.tls.ca.parent
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(keys / "ca.crt"))
    ctx.load_cert_chain(str(cert), str(key))
    port = int(config.centre_api.split(":")[1])
    return http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)


def _call(config: GatewayConfig, cert: Path, key: Path, method: str, path: str,
          body: Any = None) -> tuple[int, Any]:
    conn = _open(config, cert, key)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"content-type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else None)
    finally:
        conn.close()


def _wait(check: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def _events(proc: procs.Proc, name: str) -> list[dict[str, Any]]:
    out = []
    for line in proc.text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == name:
            out.append(event)
    return out


def test_a_revoked_centre_is_refused_after_sighup_and_the_bank_link_stays_up(tmp_path: Path) -> None:
    config = procs.prepare(tmp_path)
    keys = config.tls.ca.parent
    ca, ca_key = keys / "ca.crt", keys / "ca.key"
    old_cert, old_key = keys / "centre-C52240.crt", keys / "centre-C52240.key"
    # The centre is rotating: a second certificate with the same identity.
    new_cert, new_key = issue(ca, ca_key, tmp_path / "rotated", "centre", "C52240")
    crl = write_crl(ca, ca_key, keys / "ca.crl")  # revokes nothing yet
    data = tomllib.loads(config.path.read_text(encoding="utf-8"))
    data["tls"]["crls"] = ["keys/ca.crl"]
    config.path.write_text(render_toml(data), encoding="utf-8")
    config = load_config(config.path)
    assert config.tls.crls == (crl,)

    gateway = procs.gateway(config).start()
    bank = procs.bank(config, "B001")
    try:
        procs.wait_http(procs.ops_url(config, "/readyz"))
        bank.start()
        _wait(lambda: procs.metric(config, "hpf_gateway_bank_link_up", 'bank="B001"') == 1, "B001 link up")
        status, record = _call(config, old_cert, old_key, "POST", "/v1/instructions", procs.instruction(1))
        assert status == 202, record
        _wait(lambda: _call(config, new_cert, new_key, "GET", "/v1/instructions/F-1")[1]["state"] == "succeeded",
              "F-1 succeeded")
        assert len(_events(gateway, "link.up")) == 1

        # A keep-alive connection with the certificate about to be revoked: answered, then held open.
        held = _open(config, old_cert, old_key)
        held.request("GET", "/v1/results")
        assert held.getresponse().read() and held.sock is not None

        write_crl(ca, ca_key, crl, [old_cert])
        gateway.signal(signal.SIGHUP)
        _wait(lambda: _events(gateway, "gateway.reloaded"), "the reload")
        # Closed by the gateway within a second of the reload: the socket reads end-of-stream.
        held.sock.settimeout(1.0)
        try:
            assert held.sock.recv(1) == b"", "the revoked centre's open connection was served on"
        except (ssl.SSLError, ConnectionError):
            pass  # closed under the TLS layer: the same promise
        held.close()
        [closed] = _events(gateway, "tls.connection_closed")
        assert closed["peer"] == "hpf://centre/C52240" and closed["reason"] == "certificate revoked"

        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            _call(config, old_cert, old_key, "GET", "/v1/results")
        _wait(lambda: procs.metric(config, "hpf_gateway_security_events_total", 'kind="tls_refused"') >= 1,
              "the refused handshake counted")
        refused = _events(gateway, "tls.handshake_refused")
        assert refused and refused[0]["ip"] == "127.0.0.1" and "certificate" in refused[0]["reason"]

        # The rotated certificate is not revoked, and the bank link that was up carries on.
        status, record = _call(config, new_cert, new_key, "POST", "/v1/instructions", procs.instruction(2))
        assert status == 202, record
        _wait(lambda: _call(config, new_cert, new_key, "GET", "/v1/instructions/F-2")[1]["state"] == "succeeded",
              "F-2 succeeded over the same link")
        assert procs.metric(config, "hpf_gateway_bank_link_up", 'bank="B001"') == 1
        assert len(_events(gateway, "link.up")) == 1, "the bank link was re-established: it must not be"
        assert not _events(gateway, "link.tls_refused")
    finally:
        bank.kill()
        gateway.signal(signal.SIGTERM)
        try:
            gateway.wait(20)
        except Exception:
            gateway.kill()
