"""Operations writes are authenticated, come from the listener's own host, and money takes two operators.

An in-process gateway whose bank confirms receipt and never settles, so the
instruction goes in doubt.  On the ops listener: a resolve without a
credential (naming an operator in the body) is 401, a text/plain one 415, one
with a foreign Host or Origin 403 — none journals anything.  Then alice
proposes, alice alone cannot confirm, bob confirming another outcome is
refused, bob confirming the same outcome journals the resolution with both
names.  On a TLS ops listener the operator is its client certificate,
bound to its own anchor.  ``check-config`` refuses an ops listener off
loopback unless it is TLS.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import tomllib
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from gateway.config import ConfigError, load_config, render_toml
from gateway.pki import issue, make_ca
from gateway.store import instructions as q
from gateway.listener import when_listening
from tests.integration.harness import CENTRE, DEBIT_B001, Harness, start_harness
from tests.kit.procs import HPF
from tests.security.support import Https, capture_logs

IN_DOUBT = {"result_timeout": 0.3, "status_query_interval": 0.2, "status_query_attempts": 2}


def _with(path: Path, change: Any) -> None:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(render_toml(data), encoding="utf-8")


def _tokens(tmp: Path, *names: str) -> dict[str, Path]:
    out = {}
    for name in names:
        path = tmp / f"{name}.token"
        path.write_text(secrets.token_urlsafe(32), encoding="utf-8")
        path.chmod(0o600)
        out[name] = path
    return out


async def _in_doubt(h: Harness, instruction_id: str) -> None:
    status, record = await h.client().submit(instruction_id, debit=DEBIT_B001)
    assert status == 202, record
    await h.client().wait_state(instruction_id, {"in_doubt"}, timeout=15)


async def _post(url: str, body: Any, headers: dict[bytes, bytes]) -> tuple[int, Any]:
    raw = json.dumps(body).encode()
    d = Agent(reactor).request(b"POST", url.encode(), Headers({k: [v] for k, v in headers.items()}),
                               FileBodyProducer(BytesIO(raw)))
    d.addTimeout(10, reactor)
    response = await d
    text = await readBody(response)
    return response.code, json.loads(text) if text else None


@pytest_twisted.ensureDeferred
async def test_resolving_money_takes_two_authenticated_operators_from_this_host(tmp_path: Path) -> None:
    tokens = _tokens(tmp_path, "alice", "bob")
    h = await start_harness(tmp_path, banks={"B001": {"delay": 3600, "reply_within": 0}}, timeouts=IN_DOUBT,
                            operators={n: {"token_file": str(p)} for n, p in tokens.items()})
    try:
        await h.link_up("B001")
        await _in_doubt(h, "OPS-1")
        port = h.config.ops.split(":")[1]
        url = f"http://127.0.0.1:{port}/instructions/{CENTRE}/OPS-1/resolve"
        json_ct = {b"content-type": b"application/json"}
        bearer = {n: {**json_ct, b"authorization": b"Bearer " + p.read_bytes()} for n, p in tokens.items()}
        body = {"outcome": "succeeded", "evidence": "statement line 9", "operator": "alice"}

        with capture_logs() as logs:
            assert (await _post(url, body, json_ct))[0] == 401  # a name in the body proves nothing
            assert (await _post(url, body, {**json_ct, b"authorization": b"Bearer " + b"x" * 43}))[0] == 401
            assert (await _post(url, body, {**bearer["alice"], b"content-type": b"text/plain"}))[0] == 415
            assert (await _post(url, body, {**bearer["alice"], b"host": b"evil.example:80"}))[0] == 403
            assert (await _post(url, body, {**bearer["alice"], b"origin": b"http://evil.example"}))[0] == 403
        assert len(logs.named("ops.unauthenticated_operator")) == 2
        assert logs.named("ops.foreign_host") and logs.named("ops.foreign_origin")
        assert (await h.gateway.db.read(q.get, CENTRE, "OPS-1"))["state"] == "in_doubt"

        status, answer = await _post(url, body, bearer["alice"])
        assert status == 202 and answer["proposal"]["proposed_by"] == "alice"
        status, _ = await _post(url, {"outcome": "succeeded", "evidence": "again"}, bearer["alice"])
        assert status == 202  # one operator twice is still one operator
        status, answer = await _post(url, {"outcome": "failed", "evidence": "no"}, bearer["bob"])
        assert status == 409 and "alice proposed succeeded" in answer["error"]
        assert (await h.gateway.db.read(q.get, CENTRE, "OPS-1"))["state"] == "in_doubt"

        status, answer = await _post(url, {"outcome": "succeeded", "evidence": "seen it"}, bearer["bob"])
        assert status == 200, answer
        trail = await h.gateway.db.read(q.trail, CENTRE, "OPS-1")
        resolution = trail[-1]["payload"]["resolution"]
        assert resolution == {"succeeded": True, "evidence": "again", "operator": "alice", "proposed_by": "alice",
                              "confirmed_by": "bob", "confirmation": "seen it"}
    finally:
        await h.stop()


@pytest_twisted.ensureDeferred
async def test_on_a_tls_ops_listener_the_operator_is_its_certificate_bound_to_its_own_anchor(tmp_path: Path) -> None:
    h = await start_harness(tmp_path, banks={"B001": {"delay": 3600, "reply_within": 0}}, timeouts=IN_DOUBT)
    await h.stop()
    keys = h.pki.directory
    own_ca = make_ca(tmp_path / "dave-ca", "dave-ca")
    issue(h.pki.ca_cert, h.pki.ca_key, keys, "operator", "carol")
    issue(h.pki.ca_cert, h.pki.ca_key, keys, "operator", "erin")
    forged = issue(*own_ca, tmp_path / "forged", "operator", "carol")  # dave's CA minting carol
    operators = {"carol": {}, "erin": {}, "dave": {"ca": str(own_ca[0])}}
    h = await start_harness(tmp_path, banks={"B001": {"delay": 3600, "reply_within": 0}}, timeouts=IN_DOUBT,
                            operators=operators, ops_tls=True)
    try:
        await h.link_up("B001")
        await _in_doubt(h, "OPS-2")
        port = (await when_listening(h.gateway.listeners["ops"])).getHost().port
        url = f"https://localhost:{port}/instructions/{CENTRE}/OPS-2/resolve"
        body = {"outcome": "failed", "evidence": "bank says never executed"}
        carol = Https(keys / "operator-carol.crt", keys / "operator-carol.key", h.pki.ca_cert)
        with capture_logs() as logs:
            with pytest.raises(Exception):  # refused in the handshake: nothing reaches HTTP
                await Https(*forged, h.pki.ca_cert).call("POST", url, body)
        assert [e["peer"] for e in logs.named("tls.identity_refused")] == ["hpf://operator/carol"]
        assert (await carol.call("POST", url, body)).status == 202
        # erin confirms with the operator's command, presenting her certificate.
        out = await deferToThread(subprocess.run, HPF + [
            "instructions", "resolve", "OPS-2", "-c", str(h.config.path), "--centre", CENTRE, "--outcome", "failed",
            "--evidence", body["evidence"], "--cert", str(keys / "operator-erin.crt"),
            "--key", str(keys / "operator-erin.key")], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and '"confirmed_by": "erin"' in out.stdout, out.stdout + out.stderr
        trail = await h.gateway.db.read(q.trail, CENTRE, "OPS-2")
        resolution = trail[-1]["payload"]["resolution"]
        assert (resolution["proposed_by"], resolution["confirmed_by"]) == ("carol", "erin")
    finally:
        await h.stop()
    await deferLater(reactor, 0, lambda: None)


def test_check_config_refuses_an_ops_listener_off_loopback_unless_it_is_tls(tmp_path: Path) -> None:
    from gateway.demo import write_demo_config

    path = write_demo_config(tmp_path)
    _with(path, lambda d: d["listen"].__setitem__("ops", "tcp:0:interface=0.0.0.0"))
    with pytest.raises(ConfigError) as refused:
        load_config(path, check_files=False)
    assert any("listen.ops: must listen on loopback" in p for p in refused.value.problems)
    _with(path, lambda d: d["listen"].__setitem__("ops", "tcp:0"))
    with pytest.raises(ConfigError):
        load_config(path, check_files=False)
    _with(path, lambda d: d["listen"].__setitem__("ops_tls", True))
    assert load_config(path, check_files=False).ops_tls is True
