"""Schema 1: images, provenance and the revision counter (the catalog of Loupe's first release).

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Catalogs written before Loupe used Alembic have no ``alembic_version`` table: :mod:`core.catalog.schema`
recognises a schema-1 catalog by its tables and stamps it with this revision, so only the later
migrations run on it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# PostgreSQL compares text by locale by default; the C collation orders paths byte-wise as SQLite does,
# and lets the unique index serve folder-prefix LIKE queries.
PATH = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("path", PATH, nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("width", sa.Integer()),
        sa.Column("height", sa.Integer()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_reason", sa.String(64)),
        sa.Column("error", sa.Text()),
        sa.Column("embedding", sa.LargeBinary()),
        sa.Column("vector_revision", sa.BigInteger()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("path"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_images_sha256", "images", ["sha256"])
    op.create_index("ix_images_status", "images", ["status"])
    op.create_table(
        "provenance",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("catalog_id", sa.String(36), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("weights_kind", sa.String(16), nullable=False),
        sa.Column("weights_sha256", sa.String(64), nullable=False),
        sa.Column("weights_source", sa.Text(), nullable=False),
        sa.Column("image_size", sa.Integer(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("preprocessing", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "catalog_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("revision", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("catalog_state")
    op.drop_table("provenance")
    op.drop_index("ix_images_status", "images")
    op.drop_index("ix_images_sha256", "images")
    op.drop_table("images")
