"""Making a rename or a new file durable: the folder that holds it fsync'ed, on every platform that can."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable. Windows cannot open a folder as a file (nor fsync one); its
    NTFS journals the rename itself, so there is nothing to do there."""
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
