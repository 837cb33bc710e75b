"""Alembic migrations of the catalog schema, run by :mod:`core.schema` (no alembic.ini needed)."""
