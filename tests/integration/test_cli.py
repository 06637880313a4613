"""The operator's commands against a running daemon and its store."""

from __future__ import annotations

import json
import secrets
import sqlite3
import subprocess
import time
import tomllib

import pytest

from gateway.config import load_config, render_toml
from tests.kit import procs

pytestmark = pytest.mark.slow


def hpf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(procs.HPF + list(args), capture_output=True, text=True, timeout=60)


def test_check_config_names_every_problem_and_keys_init_makes_a_pki(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\nnode = "x"\n[tls]\ncertificate = 1\n', encoding="utf-8")
    out = hpf("check-config", "-c", str(bad))
    assert out.returncode == 2
    assert f"{bad}: gateway.node:" in out.stderr and f"{bad}: tls.certificate:" in out.stderr
    assert f"{bad}: listen: is required" in out.stderr
    out = hpf("keys", "init", str(tmp_path / "k"), "--bank", "B001", "--centre", "C52240",
              "--sm2-key", "instructions-B001")
    assert out.returncode == 0, out.stderr
    assert oct((tmp_path / "k" / "instructions-B001.key").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "k" / "bank-B001.key").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "k" / "gateway-signing.key").stat().st_mode & 0o777) == "0o600"


def _operators(config, tmp_path, *names):
    """Give the config operators with token files (mode 0600); their paths by name."""
    data = tomllib.loads(config.path.read_text(encoding="utf-8"))
    tokens = {}
    for name in names:
        path = tmp_path / f"operator-{name}.token"
        path.write_text(secrets.token_urlsafe(32) + "\n", encoding="utf-8")
        path.chmod(0o600)
        tokens[name] = str(path)
        data.setdefault("operators", {})[name] = {"token_file": str(path)}
    config.path.write_text(render_toml(data), encoding="utf-8")
    return load_config(config.path), tokens


def test_in_doubt_is_resolved_by_two_operators_with_evidence_and_the_centre_sees_it(tmp_path):
    config = procs.prepare(tmp_path, timeouts={"result_timeout": 0.3, "status_query_interval": 0.2,
                                               "status_query_attempts": 2})
    config, tokens = _operators(config, tmp_path, "alice", "bob")
    gw = procs.gateway(config).start()
    # the bank confirms receipt at once and never settles: status inquiries only hear "processing"
    bank = procs.bank(config, "B001", "--delay", "3600", "--reply-within", "0").start()
    try:
        procs.wait_http(procs.ops_url(config, "/readyz"))
        deadline = time.monotonic() + 15
        while procs.metric(config, "hpf_gateway_bank_link_up", 'bank="B001"') != 1.0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert procs.centre_call(config, "POST", "/v1/instructions", procs.instruction(1))[0] == 202
        deadline = time.monotonic() + 20
        while procs.centre_call(config, "GET", "/v1/instructions/F-1")[1]["state"] != "in_doubt":
            assert time.monotonic() < deadline, "never went in doubt"
            time.sleep(0.1)
        assert procs.metric(config, "hpf_gateway_in_doubt_total", 'bank="B001"') == 1.0

        status = json.loads(hpf("status", "-c", str(config.path)).stdout)
        assert status["in_doubt"] == 1 and status["links"]["B001"]["up"] is True

        resolve = ("instructions", "resolve", "F-1", "-c", str(config.path))
        anonymous = hpf(*resolve, "--outcome", "succeeded", "--evidence", "no token")
        assert anonymous.returncode == 1 and "Authenticate as an operator" in anonymous.stdout
        out = hpf(*resolve, "--outcome", "succeeded", "--token-file", tokens["alice"],
                  "--evidence", "bank statement 2026-11-27 line 17, host serial H000000000042")
        assert out.returncode == 0 and "awaiting" in out.stdout, out.stdout + out.stderr
        alone = hpf(*resolve, "--outcome", "succeeded", "--token-file", tokens["alice"],
                    "--evidence", "statement line 17, restated")
        assert alone.returncode == 0 and "awaiting" in alone.stdout  # still a proposal: one operator is not two
        assert procs.centre_call(config, "GET", "/v1/instructions/F-1")[1]["state"] == "in_doubt"
        out = hpf(*resolve, "--outcome", "succeeded", "--token-file", tokens["bob"],
                  "--evidence", "checked the statement too")
        assert out.returncode == 0 and '"confirmed_by": "bob"' in out.stdout, out.stdout + out.stderr
        again = hpf(*resolve, "--outcome", "failed", "--token-file", tokens["bob"], "--evidence", "second try")
        assert again.returncode == 1 and "not in doubt" in again.stdout

        _, feed, _ = procs.centre_call(config, "GET", "/v1/results?after=0")
        states = [r["state"] for r in feed["results"] if r["instruction_id"] == "F-1"]
        assert states[-2:] == ["in_doubt", "succeeded"]
        shown = json.loads(hpf("instructions", "show", "F-1", "-c", str(config.path)).stdout)
        resolution = shown["trail"][-1]["payload"]["resolution"]
        assert resolution["succeeded"] is True and resolution["evidence"] == "statement line 17, restated"
        assert (resolution["operator"], resolution["proposed_by"], resolution["confirmed_by"]) == \
            ("alice", "alice", "bob")
        assert resolution["confirmation"] == "checked the statement too"

        backup = tmp_path / "backup.db"
        out = hpf("backup", "-c", str(config.path), str(backup))
        assert out.returncode == 0, out.stderr
        rows = sqlite3.connect(backup).execute("select state from instructions").fetchall()
        assert rows == [("succeeded",)]
    finally:
        gw.kill()
        bank.kill()
    out = hpf("verify", "-c", str(config.path))
    assert out.returncode == 0 and "intact" in out.stdout, out.stdout + out.stderr
    # an edit behind the daemon's back is caught
    db = sqlite3.connect(tmp_path / "var" / "gateway.db")
    edited = db.execute("update events set payload = replace(payload, 'line 17', 'line 71') "
                        "where payload like '%line 17%'").rowcount
    db.commit()
    assert edited == 1
    out = hpf("verify", "-c", str(config.path))
    assert out.returncode == 1 and "altered" in out.stdout, out.stdout


@pytest.mark.parametrize("sample", ["camt052_001_02.xml", "camt053_001_02.xml"])
def test_adapters_decode_reports_every_entry_and_balance_of_a_real_bank_file(sample):
    from pathlib import Path

    from lxml import etree

    path = Path(__file__).parents[1] / "data" / "iso20022" / sample
    out = hpf("adapters", "decode", "iso20022", str(path))
    assert out.returncode == 0, out.stderr
    messages = [json.loads(line) for line in out.stdout.splitlines()]
    tree = etree.parse(str(path))
    entries = len(tree.xpath("//*[local-name()='Ntry']"))
    balances = len(tree.xpath("//*[local-name()='Bal']"))
    got_entries = sum(len(m.get("entries", [])) for m in messages)
    got_balances = sum(1 for m in messages if m["kind"] == "Balance") + sum(
        (m.get("opening_balance") is not None) + (m.get("closing_balance") is not None)
        for m in messages if m["kind"] == "Statement")
    assert (got_entries, got_balances) == (entries, balances)


def test_adapters_decode_refuses_a_bad_file_in_one_line(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_bytes(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')
    out = hpf("adapters", "decode", "iso20022", str(bad))
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_restore_puts_a_backup_in_place_only_where_there_is_no_store(tmp_path):
    import shutil

    config = procs.prepare(tmp_path / "old")
    backup = tmp_path / "backup.db"
    assert hpf("backup", "-c", str(config.path), str(backup)).returncode == 0
    over = hpf("restore", "-c", str(config.path), str(backup))
    assert over.returncode == 2 and "exists" in over.stderr, over.stderr  # never over a store
    fresh = tmp_path / "new"
    fresh.mkdir()
    shutil.copy2(config.path, fresh / config.path.name)
    shutil.copytree(tmp_path / "old" / "keys", fresh / "keys")
    (fresh / "var").mkdir(mode=0o700)
    missing = hpf("restore", "-c", str(fresh / config.path.name), str(tmp_path / "nothing.db"))
    assert missing.returncode == 2 and "no backup" in missing.stderr, missing.stderr
    out = hpf("restore", "-c", str(fresh / config.path.name), str(backup))
    assert out.returncode == 0 and "integrity ok" in out.stdout, out.stdout + out.stderr
    assert (fresh / "var" / "gateway.db").stat().st_mode & 0o077 == 0  # holds every account's data
    out = hpf("verify", "-c", str(fresh / config.path.name))
    assert out.returncode == 0 and "intact" in out.stdout, out.stdout + out.stderr
