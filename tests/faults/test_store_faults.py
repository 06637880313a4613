"""The gateway's SQLite under stress: held locks and a full volume (G1, G6, G7: refuse cleanly, lose nothing).

The gateway runs as a subprocess; the test takes the database from outside,
as another process would: ``BEGIN EXCLUSIVE`` on the same file (the gateway's
busy_timeout is 10 s: under it a write waits, past it the write fails and
intake answers 503), or a tiny tmpfs under ``var/`` filled to the last byte.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Self

import pytest

from tests.faults.harness import (
    Load,
    Rig,
    count_everything,
    dump,
    instruction_body,
    instruction_state,
    settle,
    wait_until,
)
from tests.kit import procs

pytestmark = pytest.mark.slow

# The bank answers 1 s after a send; the volume is full from then until 2 s: no resend falls inside.
QUICK = {"receipt_timeout": 2.5, "result_timeout": 2.0, "status_query_interval": 0.5, "status_query_attempts": 2}


class ExclusiveLock:
    """``BEGIN EXCLUSIVE`` on ``db`` from this process for ``seconds``, released by a timer thread."""

    def __init__(self, db: Path, seconds: float) -> None:
        self.conn = sqlite3.connect(str(db), timeout=10, isolation_level=None, check_same_thread=False)
        self.seconds = seconds
        self.released = threading.Event()

    def __enter__(self) -> Self:
        self.conn.execute("BEGIN EXCLUSIVE")
        self.taken_at = time.monotonic()
        threading.Timer(self.seconds, self.release).start()
        return self

    def release(self) -> None:
        if not self.released.is_set():
            self.conn.execute("ROLLBACK")
            self.released.set()

    def __exit__(self, *exc: object) -> None:
        self.released.wait(self.seconds + 5)
        self.release()
        self.conn.close()


def _run_under_lock(rig: Rig, ids: list[str], seconds: float) -> tuple[Load, float]:
    """Take the lock, submit ``ids`` while it is held; (the finished load, when the lock was released)."""
    with ExclusiveLock(rig.gateway_db, seconds) as lock:
        load = Load(rig.config, ids, interval=0.2, deadline=seconds + 40)
        load.start()
        lock.released.wait(seconds + 5)
        released = time.monotonic() - lock.taken_at
    load.finish(seconds + 45)
    return load, released


def test_a_database_lock_shorter_than_busy_timeout_only_delays_intake(tmp_path, request):
    """2 s of BEGIN EXCLUSIVE: intake waits for it and answers 2xx late; no 503, nothing lost or doubled."""
    rig = Rig.prepare(tmp_path, ledger=False)
    try:
        gw = rig.start_gateway()
        bank = rig.start_bank()
        rig.wait_link()
        before = Load(rig.config, [f"B-{n}" for n in range(5)])
        before.start()
        before.finish(20)
        load, held = _run_under_lock(rig, [f"L-{n}" for n in range(5)], 2.0)
        # The first submission waited for the lock and still succeeded: no refusal at all.
        assert all(a == [202] for a in load.answers.values()), load.answers
        assert load.took["L-0"] >= 1.5, load.took
        ids = before.ids + load.ids
        feed = settle(rig, ids, timeout=20, ledger=False)
        assert rig.stop(gw) == 0
        rig.stop(bank)
        whole = Load(rig.config, ids)  # the two loads as one, for counting
        whole.answers = {**before.answers, **load.answers}
        whole.final_status = {**before.final_status, **load.final_status}
        counts = count_everything(rig, whole, feed=feed, stats=rig.bank_stats())
        dump(tmp_path.parent / "fault-counts.jsonl", counts, test=request.node.name)
        print(f"\nlock {held:.1f}s: {counts.line()} first_during_lock_took={load.took['L-0']:.2f}s")
        counts.assert_exactly_once()
    finally:
        rig.kill_all()


def test_a_database_lock_past_busy_timeout_refuses_with_503_and_loses_nothing(tmp_path, request):
    """11 s of BEGIN EXCLUSIVE: intake answers 503 (Retry-After) past busy_timeout; retries settle exactly once."""
    rig = Rig.prepare(tmp_path, ledger=False)
    try:
        gw = rig.start_gateway()
        bank = rig.start_bank()
        rig.wait_link()
        load, held = _run_under_lock(rig, [f"L-{n}" for n in range(4)], 11.0)
        refused = [i for i, a in load.answers.items() if 503 in a]
        print(f"\nlock {held:.1f}s: answers={load.answers} took={ {k: round(v, 1) for k, v in load.took.items()} }")
        # The write that waited out the busy_timeout was refused cleanly; the same id then went through.
        assert refused and all(load.final_status[i] == 202 for i in load.ids), load.answers
        status, body, _ = procs.centre_call(rig.config, "GET", f"/v1/instructions/{refused[0]}")
        assert status == 200 and body["instruction_id"] == refused[0]
        feed = settle(rig, load.ids, timeout=20, ledger=False)
        assert rig.stop(gw) == 0
        rig.stop(bank)
        counts = count_everything(rig, load, feed=feed, stats=rig.bank_stats())
        dump(tmp_path.parent / "fault-counts.jsonl", counts, test=request.node.name)
        print(counts.line())
        counts.assert_exactly_once()
    finally:
        rig.kill_all()


def _mount_tmpfs(directory: Path, size: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                       check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a small tmpfs for the database (needs root and mount(2)): {e}")


def _fill(directory: Path) -> Path:
    """Write a file in ``directory`` until the volume is full (ENOSPC); the file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = b"\0" * 4096
        for _ in range(1_000_000):  # bounded: far more than any tmpfs here holds
            os.write(fd, chunk)
    except OSError as e:
        assert e.errno == 28, e  # ENOSPC: that is the point
    finally:
        os.close(fd)
    return filler


def test_a_full_volume_is_refused_cleanly_and_the_database_survives(tmp_path, request):
    """SQLite on a 2 MB tmpfs filled to the last byte: intake answers 503, stores nothing; freed, all goes on."""
    var = tmp_path / "var"
    _mount_tmpfs(var, "2m")
    rig: Rig | None = None
    try:
        rig = Rig.prepare(tmp_path, ledger=False)
        gw = rig.start_gateway()
        bank = rig.start_bank()
        rig.wait_link()
        before = Load(rig.config, [f"B-{n}" for n in range(5)])
        before.start()
        before.finish(20)
        settle(rig, before.ids, timeout=20, ledger=False)  # nothing in flight when the volume fills up
        ids = [f"F-{n}" for n in range(3)]
        filler = _fill(var)
        try:
            answers = [procs.centre_call(rig.config, "POST", "/v1/instructions", instruction_body(i))
                       for i in ids]
            lookups = [procs.centre_call(rig.config, "GET", f"/v1/instructions/{i}")[0] for i in ids]
        finally:
            filler.unlink()
        statuses = [a[0] for a in answers]
        print(f"\ndisk full: answers={statuses} "
              f"detail={answers[0][1].get('detail') if isinstance(answers[0][1], dict) else answers[0][1]!r}")
        assert statuses == [503] * len(ids), answers
        headers = [{k.lower(): v for k, v in a[2].items()} for a in answers]
        assert all(h.get("content-type") == "application/problem+json" and h.get("retry-after")
                   for h in headers), headers
        assert lookups == [404] * len(ids)  # refused means not stored
        load = Load(rig.config, ids)  # the centre retries the same ids once space is back
        load.start()
        load.finish(20)
        assert all(load.final_status[i] == 202 for i in ids), load.answers
        every = before.ids + ids
        feed = settle(rig, every, timeout=20, ledger=False)
        assert rig.stop(gw) == 0
        rig.stop(bank)
        with sqlite3.connect(str(rig.gateway_db)) as c:
            integrity = c.execute("PRAGMA integrity_check").fetchall()
        assert integrity == [("ok",)], integrity
        whole = Load(rig.config, every)
        whole.answers = {**before.answers, **load.answers}
        whole.final_status = {**before.final_status, **load.final_status}
        counts = count_everything(rig, whole, feed=feed, stats=rig.bank_stats())
        dump(tmp_path.parent / "fault-counts.jsonl", counts, test=request.node.name)
        print(f"{counts.line()} integrity={integrity[0][0]}")
        counts.assert_exactly_once()
    finally:
        if rig is not None:
            rig.kill_all()
        subprocess.run(["umount", "-l", str(var)], check=False, capture_output=True, timeout=10)


def test_bank_results_arriving_while_the_disk_is_full_are_not_lost(tmp_path):
    """The bank answers while the volume is full: once space is back the outcomes must still arrive."""
    var = tmp_path / "var"
    _mount_tmpfs(var, "2m")
    rig: Rig | None = None
    try:
        # Short timers: a gateway that does notice the lost results settles them within seconds.
        rig = Rig.prepare(tmp_path, ledger=False, timeouts=QUICK)
        gw = rig.start_gateway()
        bank = rig.start_bank("--delay", "1.0", "--reply-within", "2.0")  # the result comes 1 s after the send
        rig.wait_link()
        load = Load(rig.config, [f"P-{n}" for n in range(3)])
        load.start()
        load.finish(20)
        wait_until(lambda: all(instruction_state(rig.config, i) == "sent" for i in load.ids), "all sent", 10, 0.02)
        filler = _fill(var)
        try:
            time.sleep(2.0)  # the results arrive and cannot be committed
        finally:
            filler.unlink()
        try:
            feed = settle(rig, load.ids, timeout=8, ledger=False)
        finally:
            states = {i: instruction_state(rig.config, i) for i in load.ids}
            print(f"\nresults while full: states={states} bank_executed={rig.bank_stats().get('executed')}")
        assert rig.stop(gw) == 0
        rig.stop(bank)
        count_everything(rig, load, feed=feed, stats=rig.bank_stats()).assert_exactly_once()
    finally:
        if rig is not None:
            rig.kill_all()
        subprocess.run(["umount", "-l", str(var)], check=False, capture_output=True, timeout=10)
