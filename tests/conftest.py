"""Shared fixtures: databases (SQLite always, PostgreSQL when HPF_TEST_DATABASE_URL is set)."""

from __future__ import annotations

import os
from typing import Any, Iterator

import pytest

from tests.kit.pg import fresh_pg_database, need_pg
from tests.pki_fixtures import *  # noqa: F401,F403  (dev_pki, other_ca_pki)


def pytest_configure(config: pytest.Config) -> None:
    """Each parallel worker draws its loopback ports from a block of its own (gateway/ports.py),
    below the kernel's ephemeral range, so no worker and no outgoing connection takes a port a
    test chose for a listener; the processes a test starts inherit the block."""
    from gateway.ports import PORT_BLOCK_ENV

    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if worker.startswith("gw") and worker[2:].isdigit() and count > 1:
        low, high = 10_000, 32_000
        size = (high - low) // count
        n = int(worker[2:])
        os.environ[PORT_BLOCK_ENV] = f"{low + n * size}-{low + (n + 1) * size - 1}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A migrated, empty database: a SQLite file, then a fresh PostgreSQL database."""
    from gateway.store import migrate

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'gateway.db'}"
        migrate.upgrade(url)
        yield url
        return
    need_pg()
    gen = fresh_pg_database()
    url = next(gen)
    migrate.upgrade(url)
    yield url
    try:
        next(gen)
    except StopIteration:
        pass


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database, dropped afterwards (skips without HPF_TEST_DATABASE_URL)."""
    from gateway.store import migrate

    need_pg()
    gen = fresh_pg_database()
    url = next(gen)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        gen.close()  # runs the generator's finally: DROP DATABASE ... WITH (FORCE)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A database with the ledger schema: a SQLite file, then a fresh PostgreSQL database."""
    from gateway.ledger import store as ledger_store

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
        ledger_store.MIGRATIONS.upgrade(url)
        yield url
        return
    need_pg()
    gen = fresh_pg_database()
    url = next(gen)
    ledger_store.MIGRATIONS.upgrade(url)
    yield url
    next(gen, None)


@pytest.fixture
def ldb(ledger_url: str) -> Iterator[Any]:
    """A running ledger store on ``ledger_url``."""
    import pytest_twisted
    from twisted.internet import reactor

    from gateway.ledger import store as ledger_store

    database = ledger_store.LedgerDatabase(reactor, ledger_url)
    database.startService()
    yield database
    pytest_twisted.blockon(database.stopService())
