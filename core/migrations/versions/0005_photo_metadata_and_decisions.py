"""Schema 5: what each photo's header says, and the curator's decisions about duplicates.

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-10

``images`` gains the file format, the EXIF capture time (camera wall-clock time, without a zone: EXIF
rarely records one, so it is not made up as UTC), camera make and model, and ``metadata_version``, the
version of the reader that filled them. Upgraded rows have 0 there: the next build reads their headers
(no decoding, no model pass) and fills them; the vectors are unchanged.

``duplicate_decisions`` keeps decisions by content (sha256), so that they survive rebuilds, moves and
renames: ``dismiss`` (``sha256_a`` < ``sha256_b``: "not duplicates, keep both") and ``keep`` (``sha256_a``
is a pinned keeper; ``sha256_b`` is the empty string, part of the primary key like the others).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NEW_COLUMNS = ("capture_time", "camera_make", "camera_model", "file_format", "metadata_version")


def upgrade() -> None:
    op.add_column("images", sa.Column("capture_time", sa.DateTime(timezone=False), nullable=True))
    op.add_column("images", sa.Column("camera_make", sa.String(128), nullable=True))
    op.add_column("images", sa.Column("camera_model", sa.String(128), nullable=True))
    op.add_column("images", sa.Column("file_format", sa.String(32), nullable=True))
    op.add_column("images", sa.Column("metadata_version", sa.SmallInteger(), nullable=False, server_default="0"))
    op.create_table(
        "duplicate_decisions",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("sha256_a", sa.String(64), primary_key=True),
        sa.Column("sha256_b", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('dismiss', 'keep')", name="ck_duplicate_decision_kind"),
    )
    # Same vectors as schema 4: the row must say 5 so that builds of this Loupe are not refused as
    # "built differently".
    op.execute(sa.text("UPDATE provenance SET schema_version = 5"))


def downgrade() -> None:
    op.execute(sa.text("UPDATE provenance SET schema_version = 4"))
    op.drop_table("duplicate_decisions")
    for column in reversed(NEW_COLUMNS):
        op.drop_column("images", column)
