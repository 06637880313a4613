"""Files that hold account data are readable by their owner alone, whatever the umask (issue 16, item 9).

The demo (gateway, ledger, banks and centre in one process) runs under umask 022 and under 000;
every file it writes at any moment of the run (databases and their -wal/-shm, the log, the
generated configs, keys and certificates) must be 0600 and every directory 0700.  A backup made
under umask 000 is 0600 too, and a database file left readable by others is narrowed when the
store opens it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from gateway.store.db import make_engine
from tests.security.demo_run import FAULTS

pytestmark = pytest.mark.slow


def _show(modes: dict) -> str:
    return ", ".join(f"{p.name} {m:04o}" for p, m in sorted(modes.items()))


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_every_file_the_demo_writes_is_0600_in_a_0700_directory(demo_run, umask):
    run = demo_run(umask=umask, faults=FAULTS if umask == 0o022 else "")
    assert "ledger alerts by rule" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]  # the run finished
    names = {p.name for p in run.modes}
    assert {"gateway.db", "ledger.db", "gateway.log", "gateway.toml", "ledger.toml", "ca.key"} <= names
    assert any(n.endswith("-wal") for n in names), "the run was watched while the databases were open"
    wide_files = {p: m for p, m in run.modes.items() if not p.is_dir() and m & 0o077}
    wide_dirs = {p: m for p, m in run.modes.items() if p.is_dir() and m != 0o700}
    assert not wide_files, f"readable or writable by others: {_show(wide_files)}"
    assert not wide_dirs, f"directories not 0700: {_show(wide_dirs)}"


def test_a_backup_made_under_umask_000_is_0600(demo_run, tmp_path):
    run = demo_run(umask=0o022, faults=FAULTS)
    dest = tmp_path / "backup.db"
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "backup", "-c", str(run.directory / "gateway.toml"),
                          str(dest)], capture_output=True, text=True, timeout=60, preexec_fn=lambda: os.umask(0))
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


def test_the_store_narrows_a_database_left_readable_by_others(tmp_path):
    path = tmp_path / "old.db"
    path.write_bytes(b"")
    path.chmod(0o644)
    engine = make_engine(f"sqlite:///{path}")
    with engine.connect() as c:
        c.exec_driver_sql("CREATE TABLE t (x)")
        c.commit()
        for suffix in ("", "-wal", "-shm"):
            assert stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode) == 0o600, suffix
    engine.dispose()
