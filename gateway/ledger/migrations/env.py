"""Alembic environment of the ledger schema: runs on the connection or URL handed in by
``gateway.ledger.store.MIGRATIONS`` (a :class:`gateway.store.migrate.Migrations`), recording
its revision in its own version table so it never mixes with the gateway's schema."""

from alembic import context

from gateway.ledger.store import metadata

config = context.config
version_table = config.attributes.get("version_table", "ledger_alembic_version")
connection = config.attributes.get("connection")
if connection is None:
    from sqlalchemy import create_engine

    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True,
                          version_table=version_table)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      version_table=version_table)
    with context.begin_transaction():
        context.run_migrations()
