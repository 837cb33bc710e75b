"""Schema 3: which software made the vectors (torch and birder versions, precision, device).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

Catalogs upgraded from schema 2 have no record of what made their vectors; the next build that embeds
photos adds its own row. The vectors themselves are unchanged.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vector_makers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("torch_version", sa.String(64), nullable=False),
        sa.Column("birder_version", sa.String(64), nullable=False),
        sa.Column("precision", sa.String(16), nullable=False),
        sa.Column("device", sa.String(200), nullable=False),
        sa.Column("images", sa.BigInteger(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("torch_version", "birder_version", "precision", "device", name="uq_vector_maker"),
    )
    # Same vectors as schema 2: the row must say 3 so that builds of this Loupe are not refused as
    # "built differently".
    op.execute(sa.text("UPDATE provenance SET schema_version = 3"))


def downgrade() -> None:
    op.execute(sa.text("UPDATE provenance SET schema_version = 2"))
    op.drop_table("vector_makers")
