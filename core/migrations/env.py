"""Alembic's environment: runs migrations on the connection :mod:`core.catalog.schema` hands over.

Loupe runs migrations itself (``Catalog.open`` for writers, ``python -m indexer migrate``), so there is
no ``alembic.ini``. A developer writing a new migration can still use the ``alembic`` command with
``-x url=sqlite:///...`` and ``script_location = core:migrations`` in a scratch ini file.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection

from core.catalog import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("give the catalog's URL: alembic -x url=postgresql+psycopg://... upgrade head")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as own_connection:
        _run(own_connection)
    engine.dispose()


def _run(connection: Connection) -> None:
    # render_as_batch: SQLite can't ALTER most things in place; batch mode copies the table instead.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("Loupe's migrations run against a live database (offline SQL generation is not supported)")
run_migrations_online()
