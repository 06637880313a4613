"""A bank on ``channel = "sftp"``: the whole gateway against the simulated SFTP bank, over real
loopback sockets (SSH on 127.0.0.1), every wait bounded.

B001 of the harness becomes an ISO 20022 bank reached by files: the gateway uploads pain.001
files, the simulator (a Conch SFTP server in front of ``BankCore``) executes each payment once
and writes pain.002 and camt.054 files, which the gateway polls, journals once and applies.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import select
from twisted.conch.ssh import keys
from twisted.internet import reactor
from twisted.internet.task import deferLater

from gateway.config import ConfigError, load_config, render_toml
from gateway.ports import free_port
from gateway.service import makeService
from gateway.store import schema
from tests.integration.harness import DEBIT_B001, Harness, start_harness

BANK = "B001"
USER = "hpfgw"


_free_port = free_port  # below the ephemeral range (gateway/ports.py)


def _key_file(path: Path) -> keys.Key:
    key = keys.Key(ed25519.Ed25519PrivateKey.generate())
    path.write_bytes(key.toString("OPENSSH"))
    path.chmod(0o600)
    return key


def _sftp_table(tmp: Path, port: int, **extra: Any) -> dict[str, Any]:
    """Keys for both ends and the bank's [sftp] table: the gateway's key, the bank's host key
    and a known_hosts line pinning it (``pin`` names another key to pin instead)."""
    ssh = tmp / "ssh"
    ssh.mkdir(exist_ok=True)
    _key_file(ssh / "gateway.key")
    host = _key_file(ssh / f"sftp-host-{BANK}.key")
    pinned = extra.pop("pin", None) or host
    (ssh / f"sftp-{BANK}.known_hosts").write_text(
        f"[127.0.0.1]:{port} {pinned.public().toString('OPENSSH').decode()}\n")
    return {"host": "127.0.0.1", "port": port, "user": USER, "private_key": str(ssh / "gateway.key"),
            "known_hosts": str(ssh / f"sftp-{BANK}.known_hosts"), "outbound": "to-bank",
            "inbound": "from-bank", "poll_interval": 0.2, "timeout": 5, **extra}


async def _harness(tmp: Path, database: str | None = None, report_every: float = 3600.0,
                   **sftp: Any) -> tuple[Harness, Path]:
    port = _free_port()
    table = _sftp_table(tmp, port, **sftp)
    h = await start_harness(tmp, banks={}, timeouts={"receipt_timeout": 5.0}, database=database,
                            bank_config={BANK: {"adapter": "iso20022", "channel": "sftp", "sftp": table}})
    root = tmp / "bank-root"
    h.start_bank(BANK, sftp_root=root, sftp_report_every=report_every)
    await h.banks[BANK].when_listening()
    return h, root


async def _until(condition: Any, what: str, timeout: float = 15.0) -> None:
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await deferLater(reactor, 0.05, lambda: None)


async def _events(h: Harness, kind: str) -> list[Any]:
    E = schema.events
    return await h.gateway.db.read(lambda c: c.execute(
        select(E.c.payload, E.c.raw).where(E.c.kind == kind, E.c.bank_id == BANK).order_by(E.c.seq)).all())


def _refused(h: Harness, reason: str) -> float:
    return h.gateway.metrics.refused.labels(f"bank:{BANK}", reason)._value.get()


@pytest_twisted.ensureDeferred
async def test_instructions_travel_as_files_and_reach_final_results(tmp_path, database_url) -> None:
    # On PostgreSQL the link runs under the bank's lease, as on a cluster node.
    h, root = await _harness(tmp_path, database_url, after_collect="move", collected="from-bank/done")
    try:
        await h.link_up(BANK)
        c = h.client()
        for i in range(3):
            status, _ = await c.submit(f"SFTP-{i}", amount=f"{i + 1}00.00")
            assert status in (200, 201, 202)
        records = [await c.wait_state(f"SFTP-{i}", {"succeeded"}, timeout=20) for i in range(3)]
        stats = h.banks[BANK].link.stats()
        assert stats["executions"] == {r["bank_ref"]: 1 for r in records}
        assert stats["duplicates"] == 0 and stats["link"]["files_in"] == 3
        # Every pain.001 put is journalled with its name, hash and bytes.
        out = [json.loads(p) for p, _ in await _events(h, "bank.file") if json.loads(p)["direction"] == "out"]
        assert sorted(e["name"] for e in out) == sorted(f"pain001-{r['bank_ref']}.xml" for r in records)
        # Each collected status report and notification: journalled once, then moved aside.
        await _until(lambda: h.gateway.links[BANK].counts["collected"] >= 6, "6 files collected")
        collected = [(json.loads(p), raw) for p, raw in await _events(h, "bank.file")
                     if json.loads(p)["direction"] == "in"]
        assert len(collected) == len({e["name"] for e, _ in collected}) >= 6
        assert all(bytes(raw).startswith(b"<?xml") for _, raw in collected)
        assert not [p for p in (root / "from-bank").iterdir() if p.is_file()]
        assert len(list((root / "from-bank" / "done").iterdir())) == len(collected)
        assert len(await _events(h, "bank.movement")) == 3
    finally:
        await h.stop()


@pytest_twisted.ensureDeferred
async def test_a_file_uploaded_again_after_a_gateway_restart_executes_once(tmp_path, database_url) -> None:
    # The gateway polls only when it connects: the bank's answer waits unread.
    h, root = await _harness(tmp_path, database_url, poll_interval=3600)
    try:
        await h.link_up(BANK)
        await _until(lambda: h.gateway.links[BANK].counts["polls"] >= 1, "first poll")
        c = h.client()
        await c.submit("SFTP-R")
        core = h.banks[BANK].core
        await _until(lambda: sum(core.executions.values()) == 1, "the bank executed it")
        await h.gateway.service.stopService()
        # Its answers are lost on the way (taken aside): the gateway never learnt the outcome.
        aside = tmp_path / "aside"
        aside.mkdir()
        for f in (root / "from-bank").iterdir():
            f.rename(aside / f.name)

        # Restart, polling often now: the instruction, sent and unanswered, goes again under
        # the same file name; the bank knows the reference and answers with the original outcome.
        config = h.config
        bank = config.banks[BANK]
        fast = dataclasses.replace(bank, sftp=dataclasses.replace(bank.sftp, poll_interval=0.2))
        h.config = dataclasses.replace(config, banks={**config.banks, BANK: fast})
        h.gateway = makeService(h.config, reactor)
        h.gateway.service.startService()
        record = await c.wait_state("SFTP-R", {"succeeded"}, timeout=20)
        assert core.executions == {record["bank_ref"]: 1}
        assert core.duplicates[record["bank_ref"]] == 1
        names = [json.loads(p)["name"] for p, _ in await _events(h, "bank.file")
                 if json.loads(p)["direction"] == "out"]
        assert names == [f"pain001-{record['bank_ref']}.xml"] * 2
    finally:
        await h.stop()


@pytest_twisted.ensureDeferred
async def test_a_resend_while_the_first_file_still_waits_leaves_that_file_standing(tmp_path) -> None:
    h, root = await _harness(tmp_path)
    try:
        await h.link_up(BANK)
        h.banks[BANK].pause()   # the bank is slow to pick files up
        c = h.client()
        await c.submit("SFTP-W")
        waiting = root / "to-bank"
        await _until(lambda: any(waiting.iterdir()), "the file uploaded")
        (first,) = waiting.iterdir()
        original = first.read_bytes()
        # A restart sends the unconfirmed instruction again: the server refuses to rename onto
        # the waiting file (SFTP v3), so that copy stands and the .part is cleaned up.
        await h.gateway.service.stopService()
        h.gateway = makeService(h.config, reactor)
        h.gateway.service.startService()
        link = h.gateway.links[BANK]
        await _until(lambda: link.counts["already_waiting"] == 1, "the second upload found the first")
        assert [p.name for p in waiting.iterdir()] == [first.name] and first.read_bytes() == original
        h.banks[BANK].resume()
        record = await c.wait_state("SFTP-W", {"succeeded"}, timeout=20)
        assert first.name == f"pain001-{record['bank_ref']}.xml"
        core = h.banks[BANK].core
        assert core.executions == {record["bank_ref"]: 1} and not core.duplicates
    finally:
        await h.stop()


@pytest_twisted.ensureDeferred
async def test_a_garbage_file_is_recorded_and_alerted_and_the_next_file_is_still_read(tmp_path) -> None:
    h, root = await _harness(tmp_path, after_collect="delete")
    try:
        await h.link_up(BANK)
        garbage = root / "from-bank" / "aaa-garbage.xml"
        garbage.write_bytes(b"<Document>not iso 20022")
        c = h.client()
        await c.submit("SFTP-G")
        await c.wait_state("SFTP-G", {"succeeded"}, timeout=20)
        link = h.gateway.links[BANK]
        polls = link.counts["polls"]
        await _until(lambda: link.counts["polls"] >= polls + 2, "two more polls")
        unreadable = await _events(h, "bank.unreadable")
        assert len(unreadable) == 1
        payload, raw = json.loads(unreadable[0][0]), bytes(unreadable[0][1])
        assert payload["part"] == "File aaa-garbage.xml" and raw == garbage.read_bytes()
        files = [json.loads(p)["name"] for p, _ in await _events(h, "bank.file")]
        assert files.count("aaa-garbage.xml") == 1       # read every poll, recorded once
        assert garbage.exists()                          # kept for people to look at
        assert _refused(h, "unreadable_file") == 1
        assert [p.name for p in (root / "from-bank").iterdir()] == ["aaa-garbage.xml"]  # the rest deleted

        # A restarted gateway remembers it: still recorded once, no second alert.
        await h.gateway.service.stopService()
        h.gateway = makeService(h.config, reactor)
        h.gateway.service.startService()
        await h.link_up(BANK)
        link = h.gateway.links[BANK]
        await _until(lambda: link.counts["polls"] >= 2, "two polls after the restart")
        files = [json.loads(p)["name"] for p, _ in await _events(h, "bank.file")]
        assert files.count("aaa-garbage.xml") == 1
        assert _refused(h, "unreadable_file") == 0
    finally:
        await h.stop()


@pytest_twisted.ensureDeferred
async def test_a_lost_connection_is_the_link_down_and_the_gateway_reconnects(tmp_path) -> None:
    h, root = await _harness(tmp_path)
    try:
        await h.link_up(BANK)
        dispatcher = h.gateway.relay.dispatchers[BANK]
        await h.stop_bank(BANK)              # closes the gateway's SSH connection
        await _until(lambda: dispatcher.session is None, "the link down")
        assert h.gateway.metrics.link_up.labels(BANK)._value.get() == 0
        no_session = h.gateway.metrics.refused.labels(f"bank:{BANK}", "sftp_no_session")
        await _until(lambda: no_session._value.get() >= 1, "a reconnect refused while the bank is away")
        h.start_bank(BANK, sftp_root=root)
        await h.banks[BANK].when_listening()
        await h.link_up(BANK, timeout=15)   # after the wait (doubling from 1 s)
        c = h.client()
        await c.submit("SFTP-L")
        record = await c.wait_state("SFTP-L", {"succeeded"}, timeout=20)
        assert h.banks[BANK].core.executions == {record["bank_ref"]: 1}
    finally:
        await h.stop()


@pytest_twisted.ensureDeferred
async def test_a_server_with_another_host_key_is_refused_and_nothing_is_uploaded(tmp_path) -> None:
    stranger = keys.Key(ed25519.Ed25519PrivateKey.generate())
    h, root = await _harness(tmp_path, pin=stranger)
    try:
        c = h.client()
        await c.submit("SFTP-K")
        events = h.gateway.metrics.security_events.labels("bank_sftp_host_key")
        await _until(lambda: events._value.get() >= 2, "refused twice (it retries)")
        assert h.gateway.relay.dispatchers[BANK].session is None
        assert not list((root / "to-bank").iterdir())
        assert h.banks[BANK].link.stats()["received"] == 0
    finally:
        await h.stop()


def test_sftp_config_errors_are_named(tmp_path) -> None:
    from gateway.demo import write_demo_config

    port = _free_port()
    base = _sftp_table(tmp_path, port)
    path = write_demo_config(tmp_path)
    import tomllib

    def problems(bank: dict[str, Any]) -> str:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        entry = {k: v for k, v in data["banks"][BANK].items()
                 if k not in ("direction", "endpoint", "peer_endpoint", "connection")}
        data["banks"][BANK] = {**entry, "adapter": "iso20022", "channel": "sftp", **bank}
        other = tmp_path / "other.toml"
        other.write_text(render_toml(data), encoding="utf-8")
        with pytest.raises(ConfigError) as e:
            load_config(other, check_files=True)
        return " | ".join(e.value.problems)

    assert "banks.B001.sftp.host" in problems({"sftp": {**base, "host": "203.0.113.9"}})
    assert "neither loopback nor a named local address" in problems({"sftp": {**base, "host": "203.0.113.9"}})
    assert "no key for [127.0.0.1]:1" in problems({"sftp": {**base, "port": 1}})
    assert "banks.B001.sftp.collected" in problems({"sftp": {**base, "after_collect": "move"}})
    assert "must not climb out" in problems({"sftp": {**base, "inbound": "../etc"}})
    assert 'needs adapter = "iso20022"' in problems({"adapter": "bdc", "sftp": base})
    assert "banks.B001.sftp: is required" in problems({})
    assert "banks.B001.endpoint: is not used" in problems({"sftp": base, "endpoint": "tcp:127.0.0.1:1"})


@pytest_twisted.ensureDeferred
async def test_balances_come_as_camt052_and_the_day_closes_with_a_camt053_read_once(tmp_path) -> None:
    # The file channel has no balance query: the bank reports each changed balance in an
    # intraday camt.052 (ITBD, to the second) and closes its day with a camt.053 statement.
    h, root = await _harness(tmp_path, report_every=0.3)
    try:
        await h.link_up(BANK)
        files = h.banks[BANK].files
        account = DEBIT_B001
        opening = files.opening[account]
        c = h.client()
        for i in range(2):
            assert (await c.submit(f"DAY-{i}", amount=f"{i + 1}00.00"))[0] in (200, 201, 202)
        for i in range(2):
            await c.wait_state(f"DAY-{i}", {"succeeded"}, timeout=20)

        async def balances() -> list[dict[str, Any]]:
            return [json.loads(p) for p, _ in await _events(h, "bank.balance")]

        found: list[dict[str, Any]] = []
        deadline = reactor.seconds() + 15
        while not any(b["balance"] == opening - 30_000 for b in found):
            assert reactor.seconds() < deadline, found
            await deferLater(reactor, 0.1, lambda: None)
            found = await balances()
        last = [b for b in found if b["account"] == account][-1]   # the other account reports too
        assert last["balance"] == opening - 30_000 and last["status"] == "ITBD" and last["as_of"]
        assert len(await _events(h, "bank.movement")) == 2
        # The bank closes its day: one camt.053 with OPBD, both entries and CLBD, collected,
        # journalled once, read without a problem, and booking nothing twice.
        assert files.close_day() == len(files.opening) == 2     # the bank's two accounts of the centres
        day_files = [p for p in (root / "from-bank").iterdir() if p.name.startswith("camt053-")]
        [statement] = [p for p in day_files if account.encode() in p.read_bytes()]
        deadline = reactor.seconds() + 15
        while True:
            names = [json.loads(p)["name"] for p, _ in await _events(h, "bank.file")]
            if statement.name in names:
                break
            assert reactor.seconds() < deadline, names
            await deferLater(reactor, 0.1, lambda: None)
        assert names.count(statement.name) == 1
        text = statement.read_bytes()
        assert b"<Cd>OPBD</Cd>" in text and b"<Cd>CLBD</Cd>" in text and text.count(b"<Ntry>") == 2
        assert await _events(h, "bank.unreadable") == []
        assert len(await _events(h, "bank.movement")) == 2
        assert h.gateway.links[BANK].counts["unreadable"] == 0
        # The next day opens with the closing balance.
        assert files.opening[account] == opening - 30_000
    finally:
        await h.stop()
