"""A throwaway PostgreSQL server for the fault suite: its own data directory, port and socket directory.

The shared server (``HPF_TEST_DATABASE_URL``) holds every other test's
databases, so a test that restarts or crashes the *server* gets a private one:
``initdb`` into a new directory, ``pg_ctl start`` on a free port with the
socket in that directory, trust authentication on 127.0.0.1 only.  The server
runs as the ``postgres`` user (PostgreSQL refuses root); without ``initdb``
or that user the test skips.  :meth:`PgServer.close` stops it (immediate
shutdown) and removes the directory.

``initdb`` runs once per test session, into a template directory; each server
starts on a copy of it (``cp -a``: the files and their owner, as ``initdb``
left them), so every test still gets a cluster no other test has touched,
without paying ``initdb`` again.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.faults.harness import free_port

__all__ = ["PgServer"]

_template: Path | None = None  # initdb's output, made by the first server of the session


class PgServer:
    """One private PostgreSQL server (see the module docstring)."""

    def __init__(self) -> None:
        initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
        if initdb is None or pg_ctl is None:
            pytest.skip("needs PostgreSQL's initdb and pg_ctl on PATH")
        try:
            self._user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("needs a postgres user to run a private server as")
        if os.geteuid() not in (0, self._user.pw_uid):
            pytest.skip("needs root or the postgres user to run a private server")
        self.pg_ctl = pg_ctl
        self.dir = Path(tempfile.mkdtemp(prefix="hpf-pg-"))
        os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)
        self.data = self.dir / "data"
        self.port = free_port()
        subprocess.run(["cp", "-a", str(self._template(initdb)), str(self.data)], check=True,
                       capture_output=True, timeout=60)
        self.start()

    def _template(self, initdb: str) -> Path:
        """A freshly initialised, never started cluster, made once per session (see the module docstring)."""
        global _template
        if _template is None or not _template.exists():
            parent = Path(tempfile.mkdtemp(prefix="hpf-pg-template-"))
            os.chown(parent, self._user.pw_uid, self._user.pw_gid)
            atexit.register(shutil.rmtree, parent, ignore_errors=True)
            data = parent / "data"
            self._as_postgres(initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                              "--no-instructions", cwd=parent)
            _template = data
        return _template

    def _as_postgres(self, *args: str, timeout: float = 60,
                     cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        cmd = list(args) if os.geteuid() == self._user.pw_uid else ["runuser", "-u", "postgres", "--", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd or self.dir,
                              check=False)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done

    def start(self) -> float:
        """Start the server and wait until it accepts connections; the seconds that took."""
        began = time.monotonic()
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=60"
        self._as_postgres(self.pg_ctl, "-D", str(self.data), "-l", str(self.dir / "server.log"), "-o", options,
                          "-w", "-t", "60", "start")
        return time.monotonic() - began

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m MODE``: ``fast`` (sessions ended, a clean shutdown) or ``immediate`` (a crash:
        no checkpoint, WAL replayed at the next start)."""
        self._as_postgres(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new database on this server; its SQLAlchemy URL."""
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as c:
                c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            engine.dispose()
        return self.url(name)

    def log(self) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        try:
            self.stop("immediate")
        except (AssertionError, subprocess.TimeoutExpired):
            pass  # not running
        shutil.rmtree(self.dir, ignore_errors=True)
