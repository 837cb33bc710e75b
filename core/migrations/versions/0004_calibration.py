"""Schema 4: calibrations of the near-duplicate threshold (one row per calibration).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

Catalogs upgraded from schema 3 have no calibration: they use search.near_duplicate_threshold until the
next build (or `loupe calibrate`) calibrates them. The vectors themselves are unchanged.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "calibrations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("weights_sha256", sa.String(64), nullable=False),
        sa.Column("image_size", sa.Integer(), nullable=False),
        sa.Column("sample", sa.Integer(), nullable=False),
        sa.Column("edits", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("calibrated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("collection_size", sa.BigInteger(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("target_precision", sa.Float(), nullable=False),
        sa.Column("precision", sa.Float(), nullable=False),
        sa.Column("recall", sa.Float(), nullable=False),
        sa.Column("per_edit", sa.Text(), nullable=False),
        sa.Column("left_out", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
    )
    # Same vectors as schema 3: the row must say 4 so that builds of this Loupe are not refused as
    # "built differently".
    op.execute(sa.text("UPDATE provenance SET schema_version = 4"))


def downgrade() -> None:
    op.execute(sa.text("UPDATE provenance SET schema_version = 3"))
    op.drop_table("calibrations")
