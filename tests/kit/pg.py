"""PostgreSQL for the tests: the server named by ``HPF_TEST_DATABASE_URL``, a fresh database per use."""

from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest

__all__ = ["PG_URL", "fresh_pg_database", "need_pg"]

PG_URL = os.environ.get("HPF_TEST_DATABASE_URL", "")


def need_pg() -> None:
    """Skip the test when no PostgreSQL server is configured."""
    if not PG_URL:
        pytest.skip("PostgreSQL tests need HPF_TEST_DATABASE_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")


def fresh_pg_database() -> Iterator[str]:
    """Yields the URL of a new, empty database on the test server; dropped when the generator closes."""
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
