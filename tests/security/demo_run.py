"""``hpf-gateway demo`` as the README runs it, in a subprocess under a chosen umask, watched.

While it runs, every file and directory under its directory is sampled (so SQLite's -wal and
-shm files, which vanish at a clean close, are seen too) and the widest mode each ever had is
kept.  One run per (umask, faults) serves every test that asks for it.
"""

from __future__ import annotations

import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.kit.procs import HPF, Proc

FAULTS = "unsolicited-debit,result-mismatch,balance-break"


@dataclass
class DemoRun:
    directory: Path
    returncode: int
    stdout: str
    stderr: str
    modes: dict[Path, int] = field(default_factory=dict)   # widest permission bits seen per path

    def logs(self) -> dict[str, str]:
        """Every log the run wrote, by where: its log file(s), stdout and stderr."""
        found = {str(p.relative_to(self.directory)): p.read_text(encoding="utf-8", errors="replace")
                 for p in sorted(self.directory.rglob("*.log"))}
        return {**found, "stdout": self.stdout, "stderr": self.stderr}


def run_demo(directory: Path, *, umask: int, faults: str = "", timeout: float = 240) -> DemoRun:
    """The demo with its defaults (as the README runs it), ``--bank-faults faults`` when given."""
    argv = HPF + ["demo", "--dir", str(directory / "demo")]
    if faults:
        argv += ["--bank-faults", faults]
    modes: dict[Path, int] = {}
    done = threading.Event()

    def sample() -> None:
        root = directory / "demo"
        while not done.wait(0.1):
            for path in [root, *root.rglob("*")] if root.exists() else []:
                try:
                    bits = stat.S_IMODE(path.lstat().st_mode)
                except FileNotFoundError:
                    continue
                modes[path] = modes.get(path, 0) | bits

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    proc = Proc("demo", argv, directory / "demo.stdout", cwd=directory, umask=umask,
                err_log=directory / "demo.stderr").start()
    try:
        returncode = proc.wait(timeout)
    finally:
        proc.kill()
        done.set()
        watcher.join(5)
    root = directory / "demo"
    for path in [root, *root.rglob("*")]:
        modes[path] = modes.get(path, 0) | stat.S_IMODE(path.lstat().st_mode)
    return DemoRun(root, returncode, proc.text(), (directory / "demo.stderr").read_text(encoding="utf-8"), modes)
