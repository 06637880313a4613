"""Backup and restore as a drill: backed up under load, restored onto a fresh directory, reconciled.

The procedure is docs/operations.md, "Backup and restore", run as an operator
would: ``hpf-gateway backup`` copies the gateway's SQLite store and
``sqlite3 … .backup`` the ledger's while a centre submits and a slow bank
answers, so the copy holds instructions in flight; the run goes on to the end
and is counted; everything stops.  Then, in a new directory holding only the
config and keys: ``hpf-gateway restore`` puts the gateway's copy in place,
``hpf-gateway verify`` passes on it and on the ledger's copy, and the restored
gateway starts, with ``status_before_resend = true`` on the bank as the
procedure says.  Every instruction in flight at backup time must end final
with the outcome the bank gave the first time, learnt by status query: the
bank sees a status query for each, no resend of a reference it already holds
(its ``duplicates``) and executes nothing twice.  The journal chain continues
(more events, ``verify`` still passes).

What the drill shows about the instructions acknowledged after the backup
(the rewind) is checked too: the restored gateway does not know them and the
ledger, which the procedure uses to list them, holds every one.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from gateway.config import load_config, render_toml
from tests.faults.harness import (
    FINAL,
    Load,
    Rig,
    count_everything,
    dump,
    feed_entries,
    read_only_engine,
    settle,
    wait_until,
)
from tests.kit import procs

pytestmark = pytest.mark.slow

N = 60
OPEN = ("received", "sent", "accepted")


def _hpf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*procs.HPF, *args], capture_output=True, text=True, timeout=60, check=False)


def _instructions(db: Path) -> dict[str, dict]:
    """instruction_id -> (state, bank_ref, sends) in a gateway store, read-only."""
    engine = read_only_engine(db)
    try:
        with engine.connect() as c:
            rows = c.exec_driver_sql("SELECT instruction_id, state, bank_ref, sends FROM instructions")
            return {r[0]: {"state": r[1], "bank_ref": r[2], "sends": r[3]} for r in rows}
    finally:
        engine.dispose()


def _fresh_machine(rig: Rig, fresh: Path, *, ledger: bool = False) -> Path:
    """A new directory with the gateway's config and keys only, as on a replacement machine.

    The bank is asked before anything is resent (the procedure's step); the
    ledger link is kept only with ``ledger`` (the drill counts the bank's side
    with the ledger stopped; the ledger's side is its own test below).
    """
    fresh.mkdir()
    shutil.copytree(rig.tmp / "keys", fresh / "keys")
    (fresh / "var").mkdir(mode=0o700)
    data = tomllib.loads(rig.config.path.read_text(encoding="utf-8"))
    if not ledger:
        data.pop("ledger", None)
    data["banks"]["B001"]["status_before_resend"] = True
    path = fresh / "gateway.toml"
    path.write_text(render_toml(data), encoding="utf-8")
    return path


def test_backup_under_load_restores_onto_a_fresh_directory_and_asks_the_bank(tmp_path, request):
    # The gateway asks the bank 5 s after a receipt with no result (and the ledger's deadline is 10 s).
    rig = Rig.prepare(tmp_path, timeouts={"result_timeout": 5.0})
    assert rig.ledger_db is not None and rig.ledger_conf is not None
    ids = [f"BR-{n}" for n in range(N)]
    backup, ledger_backup = tmp_path / "gateway-backup.db", tmp_path / "ledger-backup.db"
    try:
        ledger = rig.start_ledger()
        gw = rig.start_gateway()
        # Answers a second after each instruction: the backup catches some on their way.  It keeps
        # what it executed on disk (--state), so it is the same bank when it comes back for the restore.
        bank_args = ("--delay", "1.0", "--state", str(tmp_path / "bank-B001.state"))
        bank = rig.start_bank(*bank_args)
        rig.wait_link()
        load = Load(rig.config, ids, interval=0.05, deadline=90)
        load.start()
        wait_until(lambda: len(load.acknowledged) >= N // 3, "a third of the load acknowledged", 30)
        made = _hpf("backup", "-c", str(rig.config.path), str(backup))
        assert made.returncode == 0, made.stderr
        ledger_made = subprocess.run(["sqlite3", str(rig.ledger_db), f".backup '{ledger_backup}'"],
                                     capture_output=True, text=True, timeout=60, check=False)
        assert ledger_made.returncode == 0, ledger_made.stderr
        at_backup = _instructions(backup)
        in_flight = {i for i, r in at_backup.items() if r["state"] in OPEN}
        assert in_flight, f"the backup caught nothing in flight: {at_backup}"

        # The run goes on to its end and is counted as every fault test is.
        load.finish(90)
        feed = settle(rig, load.acknowledged, timeout=60)
        first_outcome = {e["instruction_id"]: e["state"] for e in feed if e["state"] in FINAL}
        assert rig.stop(gw) == 0
        rig.stop(bank)  # its stats file is final once it has stopped
        counts = count_everything(rig, load, feed=feed, stats=rig.bank_stats())
        rig.stop(ledger)
        counts.assert_exactly_once()

        # The rewind: acknowledged after the backup, unknown to the copy; the ledger lists them.
        rewound = set(load.acknowledged) - set(at_backup)
        at_ledger = {c["instruction_id"] for c in rig.ledger_copies()}
        assert rewound and rewound <= at_ledger, (len(rewound), rewound - at_ledger)

        # The ledger's copy, restored onto a new directory, verifies.
        fresh = tmp_path / "restored"
        config_path = _fresh_machine(rig, fresh)
        ledger_data = tomllib.loads(rig.ledger_conf.read_text(encoding="utf-8"))
        ledger_data["ledger"]["database"] = f"sqlite:///{fresh / 'ledger.db'}"
        shutil.copy2(ledger_backup, fresh / "ledger.db")
        (fresh / "ledger.toml").write_text(render_toml(ledger_data), encoding="utf-8")
        checked = _hpf("verify", "-c", str(fresh / "ledger.toml"))
        assert checked.returncode == 0, checked.stdout + checked.stderr

        # The gateway's copy: restore, verify, start.
        restored = _hpf("restore", "-c", str(config_path), str(backup))
        assert restored.returncode == 0, restored.stderr
        assert "status_before_resend" not in restored.stderr, restored.stderr
        checked = _hpf("verify", "-c", str(config_path))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        events_at_backup = len(read_events(fresh / "var" / "gateway.db"))

        original = rig.config  # the bank keeps its stats beside the original config
        stats_file = original.path.parent / "bank-B001.json"
        stats_file.unlink()
        bank = rig.start_bank(*bank_args)
        before = wait_until(lambda: procs.bank_stats(original, "B001"), "the bank back from its journal", 20)
        rig.config = load_config(config_path)
        started = time.monotonic()
        gw = rig.start_gateway()
        rig.wait_link()

        def reconciled() -> dict[str, str] | None:
            finals = {e["instruction_id"]: e["state"] for e in feed_entries(rig.config) if e["state"] in FINAL}
            return finals if in_flight <= set(finals) else None

        finals = wait_until(reconciled, "every instruction in flight at backup time final again", 60)
        took = round(time.monotonic() - started, 2)
        assert rig.stop(gw) == 0
        rig.stop(bank)
        after = procs.bank_stats(original, "B001")

        asked = after["counts"].get("status_queries", 0) - before["counts"].get("status_queries", 0)
        resent = after["duplicates"] - before["duplicates"]
        executed = after["executed"] - before["executed"]
        changed = {i: (first_outcome[i], finals[i]) for i in in_flight if finals[i] != first_outcome[i]}
        checked = _hpf("verify", "-c", str(config_path))
        events_after = len(read_events(fresh / "var" / "gateway.db"))
        extra = dict(in_flight_at_backup=len(in_flight), rewound=len(rewound), status_queries=asked,
                     resent_to_bank=resent, executed_after_restore=executed, reconciled_s=took,
                     recovery=f"{len(in_flight)} in flight reconciled in {took} s")
        dump(tmp_path.parent / "fault-counts.jsonl", counts, test=request.node.name, **extra)
        print(f"\nbackup/restore: {counts.line()} {extra}")
        assert asked >= len(in_flight), extra
        assert resent == 0 and executed == 0, extra
        assert after["max_executions_per_reference"] == 1, after
        assert not changed, changed
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert events_after > events_at_backup, (events_at_backup, events_after)
    finally:
        rig.kill_all()


def read_events(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return list(c.execute("SELECT seq, event_id FROM events ORDER BY seq"))


def test_an_instruction_taken_after_a_restore_gets_a_reference_the_bank_never_saw(tmp_path):
    rig = Rig.prepare(tmp_path, ledger=False)
    backup = tmp_path / "gateway-backup.db"
    try:
        gw = rig.start_gateway()
        bank = rig.start_bank()
        rig.wait_link()
        before = Load(rig.config, [f"RB-{n}" for n in range(3)], interval=0.05, deadline=30)
        before.start()
        before.finish(30)
        settle(rig, before.acknowledged, ledger=False)
        made = _hpf("backup", "-c", str(rig.config.path), str(backup))
        assert made.returncode == 0, made.stderr
        lost = Load(rig.config, ["RB-lost"], deadline=30)  # acknowledged and executed after the backup
        lost.start()
        lost.finish(30)
        settle(rig, ["RB-lost"], ledger=False)
        assert rig.stop(gw) == 0

        original = rig.config
        config_path = _fresh_machine(rig, tmp_path / "restored")
        restored = _hpf("restore", "-c", str(config_path), str(backup))
        assert restored.returncode == 0, restored.stderr
        rig.config = load_config(config_path)
        gw = rig.start_gateway()
        rig.wait_link()
        after = Load(rig.config, ["RB-new"], deadline=30)  # a new payment, a new id
        after.start()
        after.finish(30)
        wait_until(lambda: "RB-new" in {e["instruction_id"] for e in feed_entries(rig.config)
                                        if e["state"] in FINAL}, "RB-new final", 30)
        executions = wait_until(
            lambda: (e := procs.bank_stats(original, "B001")["executions_by_reference"]).get("C52240/RB-new") and e,
            "the bank to execute RB-new", 10,
            explain=lambda: procs.bank_stats(original, "B001")["counts"])
        assert executions.get("C52240/RB-lost") == 1, executions
        assert "start above" in restored.stdout, restored.stdout
        refs = {e["instruction_id"]: e["bank_ref"] for e in feed_entries(rig.config) if e.get("bank_ref")}
        assert int(refs["RB-new"][-9:]) > 100_000_000, refs  # far above every id the lost store used
        rig.stop(gw)
        rig.stop(bank)
    finally:
        rig.kill_all()


def _submit(rig: Rig, ids: list[str]) -> None:
    """Submit ``ids`` and wait until each is final on the feed (the ledger is waited for apart)."""
    load = Load(rig.config, ids, interval=0.05, deadline=30)
    load.start()
    load.finish(30)
    assert sorted(load.acknowledged) == sorted(ids), load.answers
    wait_until(lambda: set(ids) <= {e["instruction_id"] for e in feed_entries(rig.config) if e["state"] in FINAL},
               f"{ids} final on the feed", 30)


def _ledger_holds(rig: Rig, db: Path) -> None:
    """Until the ledger holds a copy of every event in the gateway store ``db``."""
    wait_until(lambda: {e for _, e in read_events(db)} <= {c["event_id"] for c in rig.ledger_copies()},
               "the ledger holding every event of the gateway's journal", 30)


def test_the_ledger_takes_a_restored_gateways_copies_and_refuses_a_forked_journal(tmp_path):
    """After ``hpf-gateway restore`` the journal jumps past the lost store's seqs (``gateway.restored``):
    the ledger, which holds the lost interval's copies, takes the restored gateway's new ones in
    order, with no alert.  The same backup put in place by hand (a plain file copy) re-uses seqs the
    ledger holds: its first new copy is refused, a ``journal-fork`` alert is raised once, and
    nothing of that journal is stored from there on."""
    rig = Rig.prepare(tmp_path)
    backup = tmp_path / "gateway-backup.db"
    try:
        rig.start_ledger()
        gw = rig.start_gateway()
        rig.start_bank()
        rig.wait_link()
        _submit(rig, ["RL-1"])
        _ledger_holds(rig, rig.gateway_db)
        made = _hpf("backup", "-c", str(rig.config.path), str(backup))
        assert made.returncode == 0, made.stderr
        _submit(rig, ["RL-lost"])  # the interval the restore loses; the ledger holds its copies
        _ledger_holds(rig, rig.gateway_db)
        assert rig.stop(gw) == 0
        lost_head = max(c["gateway_seq"] for c in rig.ledger_copies())
        assert lost_head > read_events(backup)[-1][0]

        # Restored as docs/operations.md says: the ledger takes the new copies, in order.
        restored_dir = tmp_path / "restored"
        config_path = _fresh_machine(rig, restored_dir, ledger=True)
        restored = _hpf("restore", "-c", str(config_path), str(backup))
        assert restored.returncode == 0, restored.stderr
        checked = _hpf("verify", "-c", str(config_path))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        rig.config = load_config(config_path)
        gw = rig.start_gateway()
        rig.wait_link()
        _submit(rig, ["RL-new"])
        _ledger_holds(rig, restored_dir / "var" / "gateway.db")
        new = [c for c in rig.ledger_copies() if c["instruction_id"] == "RL-new"]
        assert new and min(c["gateway_seq"] for c in new) > lost_head, (lost_head, new)
        marks = [c for c in rig.ledger_copies() if c["event_id"] in {
            e for _, e in read_events(restored_dir / "var" / "gateway.db")} and c["instruction_id"] is None]
        assert any(c["gateway_seq"] > lost_head for c in marks), marks  # gateway.restored, past the lost seqs
        assert rig.stop(gw) == 0
        rules = [a["rule"] for a in rig.ledger_alerts()]
        assert "journal-fork" not in rules and "forged-copy" not in rules, rules
        assert checked.returncode == 0

        # The same backup copied into place by hand: a forked journal, refused and alerted.
        forked_dir = tmp_path / "forked"
        config_path = _fresh_machine(rig, forked_dir, ledger=True)
        shutil.copy2(backup, forked_dir / "var" / "gateway.db")
        rig.config = load_config(config_path)
        gw = rig.start_gateway()  # no need to wait for the bank: the copy of the intake is refused
        load = Load(rig.config, ["RL-fork"], deadline=30)
        load.start()
        load.finish(30)
        assert load.acknowledged == ["RL-fork"], load.answers
        forks = wait_until(lambda: [a for a in rig.ledger_alerts() if a["rule"] == "journal-fork"],
                           "a journal-fork alert", 30)
        time.sleep(1.5)  # the gateway goes on resending the refused copy: still one alert
        forks = [a for a in rig.ledger_alerts() if a["rule"] == "journal-fork"]
        assert len(forks) == 1 and forks[0]["severity"] == "critical", forks
        assert not [c for c in rig.ledger_copies() if c["instruction_id"] == "RL-fork"]
        assert rig.ledger_metric("hpf_ledger_copies_total", 'gateway="main",status="refused"') >= 1
        rig.stop(gw)
    finally:
        rig.kill_all()
