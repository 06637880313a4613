"""Schema migrations: ``hpf-gateway migrate`` and the start-up check that the schema is current.

:class:`Migrations` works on any Alembic folder; the module-level functions
are the gateway's own (``gateway/store/migrations``).  The supervision ledger
has its own folder and version table (``gateway.ledger.store.MIGRATIONS``), so
the two schemas never mix even in one PostgreSQL database.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from gateway.store.db import make_engine

__all__ = ["SchemaMismatch", "Migrations", "GATEWAY", "upgrade", "current_revision", "head_revision",
           "check_current"]

_MIGRATIONS = Path(__file__).with_name("migrations")


class SchemaMismatch(Exception):
    """The database schema is not the one this release runs on."""


class Migrations:
    """One Alembic migrations folder and the table that records its revision.

    ``version_table`` is handed to the folder's ``env.py`` through the Alembic
    config attributes (``version_table``) and used when reading the current
    revision; ``migrate_hint`` is the command an operator runs to upgrade,
    named in :class:`SchemaMismatch` messages.
    """

    def __init__(self, folder: Path, *, version_table: str = "alembic_version",
                 migrate_hint: str = "hpf-gateway migrate -c CONFIG") -> None:
        self.folder = Path(folder)
        self.version_table = version_table
        self.migrate_hint = migrate_hint

    def _config(self, url: str) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(self.folder))
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        cfg.attributes["version_table"] = self.version_table
        return cfg

    def head_revision(self) -> str:
        """The newest revision this release knows."""
        head = ScriptDirectory.from_config(self._config("sqlite://")).get_current_head()
        assert head is not None
        return head

    def current_revision(self, engine: Engine) -> str | None:
        """The revision the database is at; None for an empty database."""
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": self.version_table})
            return context.get_current_revision()

    def upgrade(self, url: str, target: str = "head") -> tuple[str | None, str]:
        """Apply pending migrations up to ``target``; returns (revision before, revision after)."""
        engine = make_engine(url)
        try:
            before = self.current_revision(engine)
            self._known_or_raise(before)
            cfg = self._config(url)
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, target)
            return before, self.head_revision() if target == "head" else target
        finally:
            engine.dispose()

    def _known_or_raise(self, revision: str | None) -> None:
        if revision is None:
            return
        script = ScriptDirectory.from_config(self._config("sqlite://"))
        if revision not in {s.revision for s in script.walk_revisions()}:
            raise SchemaMismatch(
                f"the database is at schema revision {revision}, newer than this release knows "
                f"(newest known: {self.head_revision()}); upgrade hpf-gateway before starting it"
            )

    def check_current(self, engine: Engine) -> None:
        """Refuse to run on a database that is empty, behind or ahead of this release."""
        revision = self.current_revision(engine)
        self._known_or_raise(revision)
        if revision != self.head_revision():
            raise SchemaMismatch(
                f"the database is at schema revision {revision or 'none (empty)'}, this release needs "
                f"{self.head_revision()}: run `{self.migrate_hint}` first"
            )


GATEWAY = Migrations(_MIGRATIONS)
"""The gateway's own schema."""


def head_revision() -> str:
    """The newest revision of the gateway schema this release knows."""
    return GATEWAY.head_revision()


def current_revision(engine: Engine) -> str | None:
    """The gateway schema revision the database is at; None for an empty database."""
    return GATEWAY.current_revision(engine)


def upgrade(url: str) -> tuple[str | None, str]:
    """Apply every pending gateway migration; returns (revision before, revision after)."""
    return GATEWAY.upgrade(url)


def check_current(engine: Engine) -> None:
    """Refuse to run on a database whose gateway schema is empty, behind or ahead of this release."""
    GATEWAY.check_current(engine)
