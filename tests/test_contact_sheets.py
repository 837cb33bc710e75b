"""Contact sheets of duplicate groups (:mod:`ui.contact_sheets`): layout, numbering and caching."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from ui.contact_sheets import GAP, KEEPER_FRAME, MOST_TILES, PER_ROW, TILE, UNREADABLE, contact_sheet


def _tiles(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(count):
        path = folder / f"{number}-abc.jpg"
        Image.new("RGB", (TILE, TILE // 2), (0, 0, 40 + number)).save(path)
        paths.append(path)
    return paths


def test_a_sheet_holds_each_thumbnail_in_its_numbered_tile(tmp_path: Path) -> None:
    tiles = _tiles(tmp_path / "thumbs", 3)
    sheet = contact_sheet(tmp_path / "data", [tiles[0], None, tiles[2]])
    with Image.open(sheet) as image:
        assert image.size == (3 * TILE + 2 * GAP, TILE)
        pixels = image.convert("RGB")
        # The keeper's frame, a grey tile for the photo that cannot be shown, a thumbnail centred in its tile.
        assert all(abs(a - b) < 40 for a, b in zip(pixels.getpixel((TILE // 2, TILE - 2)), KEEPER_FRAME, strict=True))
        assert all(
            abs(a - b) < 20 for a, b in zip(pixels.getpixel((TILE + GAP + 5, TILE - 5)), UNREADABLE, strict=True)
        )
        assert pixels.getpixel((2 * (TILE + GAP) + TILE // 2, TILE // 2))[2] < 80  # the dark blue thumbnail
        assert pixels.getpixel((2 * (TILE + GAP) + TILE // 2, 5)) == (255, 255, 255)  # above it: background


def test_sheets_wrap_rows_cap_their_tiles_and_are_made_once(tmp_path: Path) -> None:
    tiles = _tiles(tmp_path / "thumbs", MOST_TILES + 5)
    data = tmp_path / "data"
    twelve = contact_sheet(data, tiles[:12])
    with Image.open(twelve) as image:
        assert image.size == (PER_ROW * (TILE + GAP) - GAP, 2 * (TILE + GAP) - GAP)
    made = twelve.stat().st_mtime_ns
    assert contact_sheet(data, tiles[:12]) == twelve and twelve.stat().st_mtime_ns == made  # from the cache
    assert contact_sheet(data, tiles[1:13]) != twelve  # other photos, another sheet
    with Image.open(contact_sheet(data, tiles)) as image:
        assert image.height == (MOST_TILES // PER_ROW) * (TILE + GAP) - GAP
