"""Alembic migrations of the catalog schema, run by :mod:`indexer.schema` (no alembic.ini needed)."""
