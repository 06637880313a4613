"""Shared fixtures: databases (SQLite always, PostgreSQL when HPF_TEST_DATABASE_URL is set)."""

from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest

from tests.pki_fixtures import *  # noqa: F401,F403  (dev_pki, other_ca_pki)

PG_URL = os.environ.get("HPF_TEST_DATABASE_URL", "")


def _fresh_pg_database() -> Iterator[str]:
    import sqlalchemy as sa

    name = f"hpf_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A migrated, empty database: a SQLite file, then a fresh PostgreSQL database."""
    from gateway.store import migrate

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'gateway.db'}"
        migrate.upgrade(url)
        yield url
        return
    if not PG_URL:
        pytest.skip("PostgreSQL tests need HPF_TEST_DATABASE_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    gen = _fresh_pg_database()
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

    if not PG_URL:
        pytest.skip("needs PostgreSQL: set HPF_TEST_DATABASE_URL "
                    "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    gen = _fresh_pg_database()
    url = next(gen)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        gen.close()  # runs the generator's finally: DROP DATABASE ... WITH (FORCE)
