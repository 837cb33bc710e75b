"""Alembic migrations of the catalog schema, run by :mod:`core.catalog.schema` (no alembic.ini needed)."""
