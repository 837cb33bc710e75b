"""Keeper rules on crafted photos: each rule decides when the rules before it tie, pins beat every rule,
and the rule that decided is the one named."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from core.catalog import PhotoRecord
from core.config import KEEPER_RULE_NAMES, SearchConfig, config_from_mapping
from core.errors import ConfigError
from search.keeper import FORMAT_TIERS, KeeperPolicy, capture_key, format_rank

# 2019-07-01 local time, as a file's mtime
MTIME_2019 = int(datetime(2019, 7, 1, 9, 0).timestamp()) * 1_000_000_000

BASE = PhotoRecord(
    id=1,
    path="/photos/b/IMG_0001.jpg",
    width=4000,
    height=3000,
    sha256="a" * 64,
    size_bytes=3_000_000,
    mtime_ns=MTIME_2019,
    capture_time=datetime(2019, 6, 30, 18, 0),
    camera_make="Canon",
    camera_model="EOS 5D",
    file_format="JPEG",
)


def _other(**changes: object) -> PhotoRecord:
    """A second photo equal to BASE on every rule but those changed (a longer path ties on nothing else)."""
    values: dict[str, object] = {"id": 2, "sha256": "b" * 64, "path": "/photos/b/IMG_0001-copy.jpg", **changes}
    return replace(BASE, **values)  # type: ignore[arg-type]


def _decide(policy: KeeperPolicy, first: PhotoRecord, second: PhotoRecord) -> tuple[int, str]:
    """The keeper's id and the rule that chose it; the same whichever order the photos come in."""
    decisions = set()
    for photos in ([first, second], [second, first]):
        keeper, runner_up = policy.order(photos)
        decisions.add((keeper.id, policy.decided_by(keeper, runner_up)))
    assert len(decisions) == 1
    return decisions.pop()


@pytest.mark.parametrize(
    ("rule", "better"),
    [
        ("format", {"file_format": "PNG"}),
        ("pixels", {"width": 6000, "height": 4000}),
        ("capture_date", {"capture_time": datetime(2010, 1, 1)}),
        ("file_size", {"size_bytes": 5_000_000}),
    ],
)
def test_each_rule_decides_when_the_ones_before_tie(rule: str, better: dict[str, object]) -> None:
    policy = KeeperPolicy()
    assert _decide(policy, BASE, _other(**better)) == (2, rule)


def test_the_reference_folder_comes_first_and_its_own_order_counts(tmp_path: Path) -> None:
    originals, backup = tmp_path / "originals", tmp_path / "backup"
    in_originals = _other(path=str(originals / "small.jpg"), width=10, height=10, file_format="GIF")
    in_backup = replace(BASE, path=str(backup / "IMG_0001.jpg"))
    policy = KeeperPolicy(reference_folders=(str(originals), str(backup)))
    assert _decide(policy, in_backup, in_originals) == (2, "reference")
    assert policy.in_reference(in_backup.path) and not policy.in_reference(BASE.path)
    # A folder whose name only starts like a reference folder is not below it.
    lookalike = _other(path=str(tmp_path / "originals-old" / "x.jpg"))
    assert not policy.in_reference(lookalike.path)
    assert _decide(KeeperPolicy(), in_backup, in_originals) == (1, "format")  # no reference folders: format


def test_the_shortest_path_breaks_the_last_tie() -> None:
    copy = _other()
    assert _decide(KeeperPolicy(), BASE, copy) == (1, "path")
    short = _other(path="/photos/b/IMG_01.jpg")
    assert _decide(KeeperPolicy(), BASE, short) == (2, "path")


def test_capture_date_falls_back_to_the_file_time() -> None:
    undated_old = _other(capture_time=None, mtime_ns=int(datetime(2012, 1, 1).timestamp()) * 1_000_000_000)
    # The mtime is read as local wall-clock time, like an EXIF time: the same moment gives the same key.
    assert capture_key(undated_old) == capture_key(replace(undated_old, capture_time=datetime(2012, 1, 1)))
    assert capture_key(replace(undated_old, mtime_ns=undated_old.mtime_ns + 1_000)) == capture_key(undated_old) + 1
    assert _decide(KeeperPolicy(), BASE, undated_old) == (2, "capture_date")
    # An undated photo whose file is newer than BASE's capture loses to BASE, on the same rule.
    undated_new = _other(capture_time=None, mtime_ns=MTIME_2019 + 3_600_000_000_000)
    assert _decide(KeeperPolicy(), BASE, undated_new) == (1, "capture_date")


def test_the_configured_order_is_followed() -> None:
    bigger_jpeg = _other(width=6000, height=4000)
    png = replace(BASE, file_format="PNG")
    assert _decide(KeeperPolicy(), png, bigger_jpeg) == (1, "format")
    pixels_first = KeeperPolicy(rules=("pixels", "format"))
    assert _decide(pixels_first, png, bigger_jpeg) == (2, "pixels")
    # Rules left out do not count; path still ends the list so the order is total.
    assert pixels_first.names == ("pinned", "pixels", "format", "path")
    only_path = KeeperPolicy(rules=("path",))
    assert _decide(only_path, png, bigger_jpeg) == (1, "path")


def test_a_pinned_keeper_beats_every_rule_and_the_latest_pin_wins() -> None:
    worse = _other(width=10, height=10, file_format="GIF", capture_time=datetime(2024, 1, 1))
    assert _decide(KeeperPolicy(pinned=(worse.sha256,)), BASE, worse) == (2, "pinned")
    # Both pinned: the most recently pinned (first in the tuple) comes first.
    assert _decide(KeeperPolicy(pinned=(BASE.sha256, worse.sha256)), BASE, worse) == (1, "pinned")
    assert _decide(KeeperPolicy(pinned=(worse.sha256, BASE.sha256)), BASE, worse) == (2, "pinned")
    # Copies with the same bytes are pinned together; the rules pick between them.
    copy = replace(worse, id=3, path="/p/x.gif")
    assert _decide(KeeperPolicy(pinned=(worse.sha256,)), worse, copy) == (3, "path")


def test_formats_rank_raw_then_lossless_then_camera_then_web() -> None:
    ranks = [format_rank(name) for name in ("DNG", "TIFF", "PNG", "WEBP-LOSSLESS", "HEIF", "JPEG", "MPO", "WEBP")]
    assert ranks == sorted(ranks) and ranks[0] < ranks[1] == ranks[2] == ranks[3] < ranks[4] < ranks[5] == ranks[6]
    assert format_rank("jpeg") == format_rank("JPEG")
    assert format_rank(None) == format_rank("XCF") == len(FORMAT_TIERS) > format_rank("GIF")


def test_keeper_rules_are_validated() -> None:
    assert SearchConfig().keeper_rules == KEEPER_RULE_NAMES
    config = config_from_mapping({"search": {"keeper_rules": ["pixels", "path"], "reference_folders": ["/a", "/b"]}})
    assert config.search.keeper_rules == ("pixels", "path")
    assert config.search.reference_folders == (Path("/a"), Path("/b"))
    with pytest.raises(ConfigError, match=r"search.keeper_rules: .*'oldest'.* the rules are reference, format"):
        config_from_mapping({"search": {"keeper_rules": ["pixels", "oldest"]}})
    with pytest.raises(ConfigError, match="'pixels' more than once"):
        config_from_mapping({"search": {"keeper_rules": ["pixels", "path", "pixels"]}})
    with pytest.raises(ConfigError, match="unknown keeper rule 'size'"):
        KeeperPolicy(rules=("size",))


def test_policy_from_settings_takes_flags_over_the_config(tmp_path: Path) -> None:
    search = config_from_mapping(
        {"search": {"keeper_rules": ["pixels"], "reference_folders": [str(tmp_path / "cfg")]}}
    ).search
    policy = KeeperPolicy.from_settings(search, pinned=("c" * 64,))
    assert policy.rules == ("pixels",) and policy.pinned == ("c" * 64,)
    assert policy.in_reference(str(tmp_path / "cfg" / "a.jpg"))
    flagged = KeeperPolicy.from_settings(search, reference_folders=[tmp_path / "flag"], rules=["path"])
    assert flagged.rules == ("path",)
    assert flagged.in_reference(str(tmp_path / "flag" / "a.jpg")) and not flagged.in_reference(
        str(tmp_path / "cfg" / "a.jpg")
    )
    # Folders are resolved as the catalog stores paths (a relative one from the working directory).
    relative = KeeperPolicy(reference_folders=("photos",))
    assert relative.in_reference(os.path.join(os.getcwd(), "photos", "a.jpg"))
