"""The daemon as systemd runs it: READY only when serving, watchdog pings, SIGHUP reload, SIGTERM drain."""

from __future__ import annotations

import signal
import socket
import time
import tomllib

import pytest

from gateway.config import render_toml
from tests.kit import procs

pytestmark = pytest.mark.slow


def _notify_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(0.2)
    return sock, path


def _drain(sock, until: float) -> list[str]:
    got = []
    while time.monotonic() < until:
        try:
            got.append(sock.recv(4096).decode())
        except socket.timeout:
            continue
    return got


def _wait_for(sock, needle: str, timeout: float = 20.0) -> list[str]:
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            continue
        got.append(msg)
        if needle in msg:
            return got
    raise AssertionError(f"no {needle!r} from the daemon within {timeout}s; got {got}")


def test_ready_watchdog_reload_and_graceful_stop(tmp_path):
    config = procs.prepare(tmp_path)
    sock, path = _notify_socket(tmp_path)
    gw = procs.gateway(config, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "600000"}).start()
    bank = procs.bank(config, "B001").start()
    try:
        got = _wait_for(sock, "READY=1")
        # READY=1 means serving: the API and ops listeners answer at once
        assert procs.wait_http(procs.ops_url(config, "/readyz"), timeout=1).startswith("ready")
        assert any("STATUS=" in m for m in got)
        pings = [m for m in _drain(sock, time.monotonic() + 1.0) if "WATCHDOG=1" in m]
        assert len(pings) >= 3  # every watchdog_usec / 3

        # wait for the link, then pay
        deadline = time.monotonic() + 15
        while procs.metric(config, "hpf_gateway_bank_link_up", 'bank="B001"') != 1.0:
            assert time.monotonic() < deadline, "link B001 never came up"
            time.sleep(0.1)
        status, rec, _ = procs.centre_call(config, "POST", "/v1/instructions", procs.instruction(1))
        assert status == 202

        # SIGHUP: a new counterparty becomes payable without restarting or dropping the link
        data = tomllib.loads(config.path.read_text(encoding="utf-8"))
        data["counterparties"]["6200007777000033"] = {"name": "王五", "bank_code": "105100000017"}
        config.path.write_text(render_toml(data), encoding="utf-8")
        body = dict(procs.instruction(2), creditor={"account": "6200007777000033", "name": "王五",
                                                    "bank_code": "105100000017"})
        status, rec, _ = procs.centre_call(config, "POST", "/v1/instructions", body)
        assert rec["state"] == "rejected"  # not yet registered
        gw.signal(signal.SIGHUP)
        _wait_for(sock, "READY=1", timeout=10)
        status, rec, _ = procs.centre_call(config, "POST", "/v1/instructions", dict(body, instruction_id="F-3"))
        assert status == 202 and rec["state"] == "received"
        assert procs.metric(config, "hpf_gateway_bank_link_up", 'bank="B001"') == 1.0
        assert "gateway.reloaded" in gw.text()

        # a broken config on SIGHUP is refused whole; the daemon keeps running
        config.path.write_text(config.path.read_text(encoding="utf-8") + "\nbogus = 1\n", encoding="utf-8")
        gw.signal(signal.SIGHUP)
        _wait_for(sock, "READY=1", timeout=10)
        assert "gateway.reload_refused" in gw.text() and gw.alive()

        # SIGTERM: STOPPING=1, drain, exit 0
        gw.signal(signal.SIGTERM)
        _wait_for(sock, "STOPPING=1", timeout=10)
        assert gw.wait(30) == 0
        assert "daemon.stopped" in gw.text()
    finally:
        gw.kill()
        bank.kill()
        sock.close()


def test_run_refuses_a_group_readable_key_and_an_unmigrated_database(tmp_path):
    config = procs.prepare(tmp_path)
    config.tls.private_key.chmod(0o640)
    gw = procs.gateway(config).start()
    assert gw.wait(30) == 2
    assert "0640" in gw.text() or "mode" in gw.text()
    config.tls.private_key.chmod(0o600)
    (tmp_path / "var" / "gateway.db").unlink()
    gw = procs.gateway(config, tag="-2").start()
    assert gw.wait(30) == 2
    assert "migrate" in gw.text()


def test_a_listener_that_cannot_bind_makes_the_daemon_exit_1_instead_of_hanging(tmp_path):
    import socket as _socket

    config = procs.prepare(tmp_path)
    port = int(config.centre_api.split(":")[1])
    with _socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        gw = procs.gateway(config).start()
        try:
            assert gw.wait(30) == 1
        finally:
            gw.kill()
    assert "daemon.start_failed" in gw.text() and "Address already in use" in gw.text()
