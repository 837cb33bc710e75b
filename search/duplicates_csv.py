"""Duplicate groups as CSV, one row per photo: what ``duplicates --csv`` prints and the UI's download."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import IO

from search.duplicates import DuplicateGroup

DUPLICATE_CSV_FIELDS = [
    "group",
    "member",
    "original",
    "exact",
    "score",
    "width",
    "height",
    "size_bytes",
    "id",
    "path",
    "keeper_rule",
    "file_format",
    "capture_time",
    "camera_make",
    "camera_model",
    "match",
]


def write_duplicates_csv(groups: Sequence[DuplicateGroup], out: IO[str]) -> None:
    """One CSV row per photo: group number, position (0 = suggested original), its facts and the keeper
    rule that chose its group's original."""
    writer = csv.writer(out)
    writer.writerow(DUPLICATE_CSV_FIELDS)
    for number, group in enumerate(groups, start=1):
        for position, m in enumerate(group.members):
            writer.writerow(
                [
                    number,
                    position,
                    int(m.original),
                    int(m.exact),
                    f"{m.score:.6f}",
                    m.width,
                    m.height,
                    m.size_bytes,
                    m.id,
                    m.path,
                    group.keeper_rule,
                    m.file_format or "",
                    "" if m.capture_time is None else m.capture_time.isoformat(),
                    m.camera_make or "",
                    m.camera_model or "",
                    m.match,
                ]
            )
