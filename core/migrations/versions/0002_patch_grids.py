"""Schema 2: pooled patch grids per photo (region search) and the grid size in the provenance.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

A catalog upgraded from schema 1 holds no patch grids, so its provenance says ``patch_grid = 0`` (built
without patches): builds into it need ``--no-patches`` until it is rebuilt, and region search says why.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "patch_grids",
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("grid", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    op.add_column("provenance", sa.Column("patch_grid", sa.Integer(), nullable=False, server_default="0"))
    # The vectors themselves did not change between schema 1 and 2; the row must say 2 so that builds
    # with this Loupe's provenance are not refused as "built differently".
    op.execute(sa.text("UPDATE provenance SET schema_version = 2"))


def downgrade() -> None:
    op.execute(sa.text("UPDATE provenance SET schema_version = 1"))
    with op.batch_alter_table("provenance") as batch:
        batch.drop_column("patch_grid")
    op.drop_table("patch_grids")
