"""Real processes for the tests, run one way: :class:`Proc` (a child with its output in a file) and the
gateway's pieces built on it (a prepared directory, the gateway, banks, their ops and centre APIs).

The daemon, fault, console and security tests start their long-lived subprocesses (the gateway,
the simulated banks, the ledger with its console, ``hpf-gateway demo``) through :class:`Proc`;
one-shot commands use ``subprocess.run``, and the systemd tests spawn theirs with the sockets
they activate.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig, load_config, render_toml
from gateway.demo import BANKS, write_demo_config
from gateway.pki import init_dev_pki
from gateway.store import migrate

HPF = [sys.executable, "-m", "gateway.cli"]


def prepare(tmp: Path, *, timeouts: dict[str, float] | None = None, limits: dict[str, Any] | None = None,
            ledger: dict[str, Any] | None = None,
            banks: dict[str, dict[str, Any]] | None = None) -> GatewayConfig:
    """Keys, a config and a migrated SQLite database in ``tmp`` (the demo's layout).

    ``banks`` changes keys of the demo's banks (a persistent connection drops ``peer_endpoint``)."""
    init_dev_pki(tmp / "keys", banks=list(BANKS), centres=["C52240"])
    path = write_demo_config(tmp)
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    if timeouts:
        data["timeouts"].update(timeouts)
    if limits:
        data["limits"].update(limits)
    if ledger:
        data["ledger"] = ledger
    for bank_id, fields in (banks or {}).items():
        data["banks"][bank_id].update(fields)
        if fields.get("connection") == "persistent":
            data["banks"][bank_id].pop("peer_endpoint", None)
    path.write_text(render_toml(data), encoding="utf-8")
    config = load_config(path)
    migrate.upgrade(config.database)
    return config


@dataclass
class Proc:
    """A child process in its own session with its output in a file (``err_log``: stderr apart).

    ``cwd`` and ``umask`` are the child's own (the demo is run as the README runs it).
    """

    name: str
    args: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    cwd: Path | None = None
    umask: int | None = None
    err_log: Path | None = None

    def start(self) -> "Proc":
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self._out = open(self.log, "ab")
        self._err = open(self.err_log, "ab") if self.err_log is not None else None
        umask = self.umask
        self.popen = subprocess.Popen(self.args, stdout=self._out,
                                      stderr=self._err if self._err is not None else subprocess.STDOUT,
                                      env=env, cwd=self.cwd, start_new_session=True,
                                      preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout: float = 20.0) -> int:
        assert self.popen is not None
        try:
            return self.popen.wait(timeout)
        finally:
            self._close()

    def kill(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(10)  # type: ignore[union-attr]
        self._close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to its whole session, then SIGKILL when it has not gone within ``timeout``."""
        if self.alive():
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(5)  # type: ignore[union-attr]
        self._close()

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first match of ``pattern`` in its output; AssertionError (with the output's tail) if
        it exits or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.text())
            if found:
                return found
            if not self.alive() or time.monotonic() >= deadline:
                state = "did not print" if self.alive() else "exited before printing"
                raise AssertionError(f"{self.name} {state} {pattern!r}:\n{self.text()[-3000:]}")
            time.sleep(0.2)

    def _close(self) -> None:
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f is not None:
                f.close()


def gateway(config: GatewayConfig, *, env: dict[str, str] | None = None, tag: str = "") -> Proc:
    return Proc("gateway", HPF + ["run", "-c", str(config.path)],
                config.path.parent / f"gateway{tag}.log", env or {})


def bank(config: GatewayConfig, bank_id: str, *extra: str, tag: str = "",
         env: dict[str, str] | None = None) -> Proc:
    stats = config.path.parent / f"bank-{bank_id}{tag}.json"
    return Proc(f"bank-{bank_id}", HPF + ["simulate", "bank", "-c", str(config.path), "--bank", bank_id,
                                          "--stats", str(stats), *extra],
                config.path.parent / f"bank-{bank_id}{tag}.log", env or {})


def bank_stats(config: GatewayConfig, bank_id: str, tag: str = "") -> dict[str, Any]:
    path = config.path.parent / f"bank-{bank_id}{tag}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def ops_url(config: GatewayConfig, path: str) -> str:
    return f"http://127.0.0.1:{config.ops.split(':')[1]}{path}"


def wait_http(url: str, timeout: float = 20.0, expect: int = 200) -> str:
    """Poll a plain-HTTP URL until it answers ``expect`` (bounded)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == expect:
                    return r.read().decode()
        except Exception as e:  # not up yet
            last = e
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer {expect} within {timeout}s: {last}")


def metric(config: GatewayConfig, name: str, labels: str = "") -> float:
    """One sample from the gateway's /metrics (0 when absent)."""
    text = wait_http(ops_url(config, "/metrics"))
    for line in text.splitlines():
        if line.startswith(name + (("{" + labels + "}") if labels else "")) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            if labels or head == name:
                return float(value)
    return 0.0


def centre_call(config: GatewayConfig, method: str, path: str, body: Any = None, *,
                centre: str = "C52240", timeout: float = 10.0,
                port: int | None = None) -> tuple[int, Any, dict[str, str]]:
    """A blocking HTTPS call as a centre (its certificate from the prepared keys)."""
    import http.client
    import ssl

    keys = config.tls.ca.parent
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(keys / "ca.crt"))
    ctx.load_cert_chain(str(keys / f"centre-{centre}.crt"), str(keys / f"centre-{centre}.key"))
    port = port or int(config.centre_api.split(":")[1])
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"content-type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else None), dict(resp.getheaders())
    finally:
        conn.close()


def instruction(n: int | str, amount: str = "10.00") -> dict[str, Any]:
    return {"instruction_id": f"F-{n}", "debit_account": "6200001111222233",
            "creditor": {"account": "6200009999000011", "name": "张三", "bank_code": "105100000017"},
            "amount": amount, "purpose": "withdrawal"}
