"""Schema migrations: ``hpf-gateway migrate`` and the start-up check that the schema is current."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from gateway.store.db import make_engine

__all__ = ["SchemaMismatch", "upgrade", "current_revision", "head_revision", "check_current"]

_MIGRATIONS = Path(__file__).with_name("migrations")


class SchemaMismatch(Exception):
    """The database schema is not the one this release runs on."""


def _config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest revision this release knows."""
    head = ScriptDirectory.from_config(_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str) -> tuple[str | None, str]:
    """Apply every pending migration; returns (revision before, revision after)."""
    engine = make_engine(url)
    try:
        before = current_revision(engine)
        _known_or_raise(before)
        cfg = _config(url)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return before, head_revision()
    finally:
        engine.dispose()


def _known_or_raise(revision: str | None) -> None:
    if revision is None:
        return
    script = ScriptDirectory.from_config(_config("sqlite://"))
    if revision not in {s.revision for s in script.walk_revisions()}:
        raise SchemaMismatch(
            f"the database is at schema revision {revision}, newer than this release knows "
            f"(newest known: {head_revision()}); upgrade hpf-gateway before starting it"
        )


def check_current(engine: Engine) -> None:
    """Refuse to run on a database that is empty, behind or ahead of this release."""
    revision = current_revision(engine)
    _known_or_raise(revision)
    if revision != head_revision():
        raise SchemaMismatch(
            f"the database is at schema revision {revision or 'none (empty)'}, this release needs "
            f"{head_revision()}: run `hpf-gateway migrate -c CONFIG` first"
        )
