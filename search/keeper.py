"""Which photo of a duplicate group to keep: an ordered, configurable list of rules.

A pinned keeper (``duplicates --keep``, :mod:`core.catalog.decisions`) comes before every rule, the
most recently pinned first. Then the rules of ``search.keeper_rules``, in their order, each deciding only
between photos the rules before it found equal:

- ``reference``: a photo below a reference folder (``search.reference_folders``, ``duplicates
  --reference``); below the first folder listed before the second;
- ``format``: the better file format (:data:`FORMAT_TIERS`: RAW, then lossless, then a phone's HEIF, then
  a camera's JPEG, then web formats, then GIF);
- ``pixels``: more pixels;
- ``capture_date``: the oldest capture time: EXIF's, else the file's modification time read as the
  computer's local time (EXIF times are a camera's wall clock, without a zone);
- ``file_size``: the larger file;
- ``path``: the shorter path, then the path in code-point order.

A list without ``path`` still ends with it, so the order is total and the same on every run.

The order is the preference order of star grouping (:mod:`search.star_groups`): the keeper is its group's
centre, and every member scores at or above the threshold against it. A group says which rule decided its
keeper: the first one on which the keeper beats the group's next photo in this order (the runner-up, the
photo that would have been kept without the keeper).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from core.catalog import PhotoRecord
from core.config import KEEPER_RULE_NAMES, SearchConfig
from core.errors import ConfigError
from core.photo_metadata import WEBP_LOSSLESS

logger = logging.getLogger(__name__)

PINNED = "pinned"
PATH = "path"

# File formats from the best original to the worst (Pillow's names; an unknown or unread format comes
# after all of them). The one place that ranks formats.
FORMAT_TIERS: tuple[tuple[str, ...], ...] = (
    ("DNG", "RAW"),  # sensor data, should a RAW plugin be installed
    ("TIFF", "PNG", "BMP", WEBP_LOSSLESS),  # lossless
    ("HEIF",),  # what phones write
    ("JPEG", "MPO"),  # what cameras write (MPO: a camera's multi-picture JPEG)
    ("WEBP", "AVIF"),  # lossy, mostly web exports of one of the above
    ("GIF",),  # 256 colours
)
_FORMAT_RANK = {name: rank for rank, tier in enumerate(FORMAT_TIERS) for name in tier}

# Why a keeper was chosen, in words for people (the UI).
KEEPER_RULE_WORDS = {
    PINNED: "pinned as the keeper",
    "reference": "in a reference folder",
    "format": "better file format",
    "pixels": "most pixels",
    "capture_date": "oldest capture date",
    "file_size": "largest file",
    PATH: "shortest path",
}


def format_rank(file_format: str | None) -> int:
    """The rank of a file format among :data:`FORMAT_TIERS` (0 = best); unknown or None comes last."""
    if file_format is None:
        return len(FORMAT_TIERS)
    return _FORMAT_RANK.get(file_format.upper(), len(FORMAT_TIERS))


_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
# Zones change their UTC offset on the hour or the half hour: one offset per quarter hour is exact.
_OFFSET_STEP_S = 900


@functools.lru_cache(maxsize=1 << 16)
def _local_offset_s(step: int) -> int:
    """The computer's UTC offset, in seconds, during the quarter hour ``step`` since 1970."""
    try:
        return time.localtime(step * _OFFSET_STEP_S).tm_gmtoff
    except (OverflowError, OSError, ValueError):  # a time no calendar holds
        return 0


def capture_key(photo: PhotoRecord) -> int:
    """When the photo was taken, as wall-clock microseconds since 1970: its EXIF capture time, else its
    file's mtime read as the computer's local time (what a camera's clock shows), so that the two compare."""
    if photo.capture_time is not None:
        return (photo.capture_time.replace(tzinfo=None) - _EPOCH) // _MICROSECOND
    seconds = photo.mtime_ns // 1_000_000_000
    return photo.mtime_ns // 1_000 + _local_offset_s(seconds // _OFFSET_STEP_S) * 1_000_000


def check_rules(rules: Sequence[str]) -> tuple[str, ...]:
    """``rules`` as a tuple, or :class:`ConfigError` for an unknown or repeated name."""
    unknown = [name for name in rules if name not in KEEPER_RULE_NAMES]
    if unknown:
        raise ConfigError(
            f"unknown keeper rule {', '.join(map(repr, unknown))}: the rules are {', '.join(KEEPER_RULE_NAMES)}"
        )
    if len(set(rules)) != len(rules):
        raise ConfigError(f"keeper rules name one rule more than once: {', '.join(rules)}")
    return tuple(rules)


def _folder(folder: str | Path) -> str:
    """A folder as the prefix of the catalog paths below it (resolved, one trailing separator)."""
    return str(Path(folder).expanduser().resolve()).rstrip(os.sep) + os.sep


@dataclass(frozen=True)
class KeeperPolicy:
    """The order in which photos are preferred as keepers (see the module's docstring).

    ``rules``: rule names in order; ``reference_folders``: folders whose photos the ``reference`` rule
    prefers, the first listed first; ``pinned``: pinned keepers' sha256, the most recently pinned first.
    """

    rules: tuple[str, ...] = KEEPER_RULE_NAMES
    reference_folders: tuple[str, ...] = ()
    pinned: tuple[str, ...] = ()
    names: tuple[str, ...] = field(init=False, repr=False)
    _prefixes: tuple[str, ...] = field(init=False, repr=False)
    _pin_rank: dict[str, int] = field(init=False, repr=False, compare=False)
    _values: tuple[Callable[[PhotoRecord], Any], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rules = check_rules(self.rules)
        names = (PINNED, *rules, *(() if PATH in rules else (PATH,)))
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "_prefixes", tuple(_folder(folder) for folder in self.reference_folders))
        ranks: dict[str, int] = {}
        for rank, sha256 in enumerate(self.pinned):
            ranks.setdefault(sha256, rank)
        object.__setattr__(self, "_pin_rank", ranks)
        # One function per name, chosen once: keys are computed for every photo that has a similar pair.
        object.__setattr__(self, "_values", tuple(self._value_of(name) for name in names))

    @classmethod
    def from_settings(
        cls,
        search: SearchConfig,
        pinned: Sequence[str] = (),
        reference_folders: Sequence[str | Path] | None = None,
        rules: Sequence[str] | None = None,
    ) -> KeeperPolicy:
        """The policy of ``search.keeper_rules`` and ``search.reference_folders``, unless ``rules`` or
        ``reference_folders`` are given (a command's flags), with the ``pinned`` keepers."""
        folders = search.reference_folders if reference_folders is None else reference_folders
        for folder in folders:
            if not Path(folder).expanduser().is_dir():
                logger.warning("reference folder %s is not a folder: no photo is below it", folder)
        return cls(
            rules=tuple(search.keeper_rules if rules is None else rules),
            reference_folders=tuple(str(folder) for folder in folders),
            pinned=tuple(pinned),
        )

    def in_reference(self, path: str) -> bool:
        """Whether ``path`` lies below one of the reference folders."""
        return any(path.startswith(prefix) for prefix in self._prefixes)

    def _value_of(self, name: str) -> Callable[[PhotoRecord], Any]:
        """The function giving a photo's value under the rule ``name`` (smaller is better)."""
        if name == PINNED:
            ranks, unpinned = self._pin_rank, len(self._pin_rank)
            return lambda photo: ranks.get(photo.sha256, unpinned)
        if name == "reference":
            prefixes = self._prefixes

            def reference(photo: PhotoRecord) -> int:
                below = (i for i, prefix in enumerate(prefixes) if photo.path.startswith(prefix))
                return next(below, len(prefixes))

            return reference
        if name == "format":
            return lambda photo: format_rank(photo.file_format)
        if name == "pixels":
            return lambda photo: -(photo.width * photo.height)
        if name == "capture_date":
            return capture_key
        if name == "file_size":
            return lambda photo: -photo.size_bytes
        return lambda photo: (len(photo.path), photo.path)  # PATH

    def key(self, photo: PhotoRecord) -> tuple[Any, ...]:
        """Sort key: the better keeper sorts first (ties broken by id, which no two photos share)."""
        return (*[value(photo) for value in self._values], photo.id)

    def order(self, photos: Iterable[PhotoRecord]) -> list[PhotoRecord]:
        """``photos`` from the best keeper to the worst."""
        return sorted(photos, key=self.key)

    def decided_by(self, keeper: PhotoRecord, runner_up: PhotoRecord) -> str:
        """The first rule (or ``pinned``) on which ``keeper`` beats ``runner_up``, the next photo in order."""
        for name, value in zip(self.names, self._values, strict=True):
            if value(keeper) != value(runner_up):
                return name
        return PATH
