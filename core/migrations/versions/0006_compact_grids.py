"""Schema 6: patch grids stored as 1.6-bit ternary codes instead of float16 (196 KB -> 20 KB a photo).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

Every stored float16 grid is encoded in place with :mod:`core.grid_codes` (the codec is fixed: no
training, the same bytes a build of this Loupe writes), chunk by chunk, in the upgrade's transaction; no
photo goes through the model again. The patch index is derived data: the next build or ``reindex``
rebuilds it from the new codes. The downgrade decodes the codes back into float16 grids, which keep the
codes' precision, not the original's.
"""

from __future__ import annotations

import logging

import numpy as np
import sqlalchemy as sa
from alembic import op

from core import grid_codes

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

logger = logging.getLogger(__name__)
CHUNK = 500
GRIDS = sa.table(
    "patch_grids",
    sa.column("image_id", sa.Integer()),
    sa.column("grid", sa.Integer()),
    sa.column("data", sa.LargeBinary()),
)


def _convert(connection: sa.Connection, dim: int, to_codes: bool) -> int:
    """Rewrite every grid (keyset pagination: flat memory); return how many were rewritten."""
    last, converted = -1, 0
    while True:
        rows = connection.execute(
            sa.select(GRIDS.c.image_id, GRIDS.c.grid, GRIDS.c.data)
            .where(GRIDS.c.image_id > last)
            .order_by(GRIDS.c.image_id)
            .limit(CHUNK)
        ).all()
        if not rows:
            return converted
        for image_id, grid, data in rows:
            if to_codes and len(data) == grid * grid * dim * 2:
                cells = np.frombuffer(data, dtype="<f2").astype(np.float32).reshape(grid, grid, dim)
                new = grid_codes.encode_grid(cells)
            elif not to_codes and len(data) == grid_codes.grid_bytes(grid, dim):
                cells = grid_codes.decode_grid(data, grid, dim)
                unit = cells / np.maximum(np.linalg.norm(cells, axis=-1, keepdims=True), 1e-12)
                new = np.ascontiguousarray(unit, dtype="<f2").tobytes()
            else:
                continue  # already in the target form
            connection.execute(GRIDS.update().where(GRIDS.c.image_id == image_id).values(data=new))
            converted += 1
        last = int(rows[-1][0])


def _dim(connection: sa.Connection) -> int | None:
    return connection.execute(sa.text("SELECT dim FROM provenance WHERE id = 1")).scalar()


def upgrade() -> None:
    connection = op.get_bind()
    dim = _dim(connection)
    if dim is not None:
        converted = _convert(connection, int(dim), to_codes=True)
        logger.info("encoded %d stored patch grids as %s codes", converted, grid_codes.CODEC)
    # Same vectors, smaller grids: the row must say 6 so that builds of this Loupe are not refused as
    # "built differently".
    op.execute(sa.text("UPDATE provenance SET schema_version = 6"))


def downgrade() -> None:
    connection = op.get_bind()
    dim = _dim(connection)
    if dim is not None:
        _convert(connection, int(dim), to_codes=False)
    op.execute(sa.text("UPDATE provenance SET schema_version = 4"))
