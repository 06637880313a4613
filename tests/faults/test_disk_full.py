"""The gateway's database volume fills under load: 503 with Retry-After, nothing acknowledged lost, resumes alone.

The gateway's ``var/`` (its SQLite database and WAL) is put on a tmpfs of a
few MiB, so the disk really fills (SQLITE_FULL from the kernel's ENOSPC, no
injection).  The centre keeps submitting, retrying every 503 with the same id
and body.  When the centre has seen 503s, the volume is grown (``mount -o
remount,size=…``, as an operator freeing space would): the daemon, never
restarted, takes writes again and every acknowledged instruction is executed
once and final on the feed.  Needs root and tmpfs (CI has both); skips
otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.faults.harness import Load, Rig, count_everything, dump, settle, wait_until
from tests.kit import procs

pytestmark = pytest.mark.slow


def _mount_tmpfs(where: Path, size: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                   check=True, capture_output=True)


def _small_volume(var: Path, size: str) -> None:
    """Put ``var`` (already holding the migrated database) on a tmpfs of ``size``."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to make a small filesystem")
    keep = var.with_name("var.keep")
    shutil.copytree(var, keep)
    try:
        _mount_tmpfs(var, size)
    except subprocess.CalledProcessError as e:
        shutil.rmtree(keep)
        pytest.skip(f"cannot mount a tmpfs here: {e.stderr.decode(errors='replace').strip()}")
    for item in keep.iterdir():
        shutil.copy2(item, var / item.name)
    shutil.rmtree(keep)


def test_disk_full_answers_503_loses_nothing_and_resumes_when_space_returns(tmp_path, request):
    rig = Rig.prepare(tmp_path, ledger=False)
    var = rig.gateway_db.parent
    _small_volume(var, "1m")
    ids = [f"DF-{n}" for n in range(400)]
    try:
        gw = rig.start_gateway()
        bank = rig.start_bank()
        rig.wait_link()
        load = Load(rig.config, ids, interval=0.01, deadline=120)
        load.start()
        wait_until(lambda: any(503 in a for a in load.answers.values()), "a 503 from the full disk", 60)
        time.sleep(2)  # the disk stays full a while under load: the daemon must ride it out
        assert gw.alive(), "the gateway died of a full disk"
        assert procs.wait_http(procs.ops_url(rig.config, "/healthz"), timeout=5)
        status, body, headers = procs.centre_call(rig.config, "POST", "/v1/instructions",
                                                  dict(procs.instruction("DF-probe")), timeout=10)
        assert status == 503 and body["type"].endswith("unavailable"), (status, body)
        assert int(headers["Retry-After"]) >= 1
        subprocess.run(["mount", "-o", "remount,size=64m", str(var)], check=True)
        load.finish(120)
        assert all(200 <= s < 300 for s in load.final_status.values()), load.final_status
        feed = settle(rig, load.acknowledged, timeout=60, ledger=False)
        assert rig.stop(gw) == 0
        rig.stop(bank)
        stats = rig.bank_stats()
        counts = count_everything(rig, load, feed=feed, stats=stats)
        refused = sum(a.count(503) for a in load.answers.values())
        dump(tmp_path.parent / "fault-counts.jsonl", counts, test=request.node.name, answered_503=refused)
        print(f"\ndisk full: {counts.line()} answered_503={refused}")
        counts.assert_exactly_once()
    finally:
        rig.kill_all()
        subprocess.run(["umount", "-l", str(var)], check=False, capture_output=True)


def test_ledger_disk_full_holds_copies_back_and_catches_up_when_space_returns(tmp_path, request):
    rig = Rig.prepare(tmp_path)
    assert rig.ledger_conf is not None and rig.ledger_db is not None
    ledger_var = tmp_path / "ledger-var"
    ledger_var.mkdir(mode=0o700)
    _small_volume(ledger_var, "1m")
    moved = ledger_var / "ledger.db"
    rig.ledger_conf.write_text(rig.ledger_conf.read_text(encoding="utf-8")
                               .replace(str(rig.ledger_db), str(moved)), encoding="utf-8")
    rig.ledger_db = moved
    ids = [f"LF-{n}" for n in range(400)]
    try:
        ledger, gw = rig.start_ledger_and_gateway()
        bank = rig.start_bank()
        rig.wait_link()
        load = Load(rig.config, ids, interval=0.01, deadline=120)
        load.start()
        # The ledger's disk fills: the gateway keeps relaying and holds the copies back.
        wait_until(lambda: "disk is full" in ledger.text() or "full" in ledger.text().lower(),
                   "the ledger to meet its full disk", 60)
        load.finish(120)
        assert all(200 <= s < 300 for s in load.final_status.values()), load.final_status
        assert ledger.alive(), "the ledger died of a full disk"
        assert rig.metric("hpf_gateway_ledger_backlog") > 0
        subprocess.run(["mount", "-o", "remount,size=64m", str(ledger_var)], check=True)
        feed = settle(rig, load.acknowledged, timeout=90)
        assert rig.stop(gw) == 0
        rig.stop(bank)
        stats = rig.bank_stats()
        # The ledger cannot store the results that come while its disk is full, so instructions it
        # saw before may pass its result deadline without one (missing-result): the fault's alerts.
        counts = count_everything(rig, load, feed=feed, stats=stats, expect_alerts=frozenset({"missing-result"}))
        dump(tmp_path.parent / "fault-counts.jsonl", counts, test=request.node.name)
        print(f"\nledger disk full: {counts.line()}")
        counts.assert_exactly_once()
        assert rig.stop(ledger) == 0
    finally:
        rig.kill_all()
        subprocess.run(["umount", "-l", str(ledger_var)], check=False, capture_output=True)
