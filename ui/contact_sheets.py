"""Contact sheets: a duplicate group's thumbnails in one image, numbered, cached on disk.

A page of the Duplicates review shows 20 groups of up to 10 photos or more. One image per group instead
of one per photo is 20 requests to the server for the browser instead of 200, and 20 images for it to
lay out: on a loaded 2-core machine that is the difference between about 2 and about 4 seconds for a page
(README, "The browser UI"). Each tile is numbered as the group's table and keep toggles number its
photos; the keeper's tile is framed. A sheet is named by the thumbnails it holds (their names carry photo
id, content hash and size), so it is made once and a changed group gets a new one.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ui.thumbnails import thumbnail_dir

TILE = 140  # pixels per tile side: the review's thumbnails are made at this size
PER_ROW = 10  # 1,400 pixels: under Streamlit's 1,460, above which it would resize the sheet on every rerun
MOST_TILES = 50  # a larger group shows its first 50 photos here (its table lists them all)
GAP = 4
KEEPER_FRAME = (230, 170, 0)
BACKGROUND = (255, 255, 255)
UNREADABLE = (200, 200, 200)


def sheet_dir(data_dir: Path) -> Path:
    return thumbnail_dir(data_dir) / "sheets"


def contact_sheet(data_dir: Path, tiles: Sequence[Path | None]) -> Path:
    """The sheet of ``tiles`` (thumbnails in the group's order, the keeper first; None for a photo that
    cannot be shown, drawn as a grey tile): made on first use, then read from the cache."""
    shown = list(tiles[:MOST_TILES])
    names = "\n".join("-" if tile is None else tile.name for tile in shown)
    target = sheet_dir(data_dir) / f"{hashlib.sha256(names.encode()).hexdigest()[:24]}.jpg"
    if target.exists():
        return target
    columns = min(PER_ROW, len(shown))
    rows = -(-len(shown) // PER_ROW)
    step = TILE + GAP
    sheet = Image.new("RGB", (columns * step - GAP, rows * step - GAP), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font()  # one per sheet: sheets are drawn in threads, and a FreeType face is not for sharing
    for position, tile in enumerate(shown):
        left, top = (position % PER_ROW) * step, (position // PER_ROW) * step
        _paste(sheet, draw, font, tile, left, top)
        if position == 0:
            draw.rectangle((left, top, left + TILE - 1, top + TILE - 1), outline=KEEPER_FRAME, width=4)
        _badge(draw, font, f"{position + 1}" + (" keeper" if position == 0 else ""), left, top)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    sheet.save(temporary, format="JPEG", quality=85)
    os.replace(temporary, target)
    return target


Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def _paste(sheet: Image.Image, draw: ImageDraw.ImageDraw, font: Font, tile: Path | None, left: int, top: int) -> None:
    """The thumbnail centred in its tile, or a grey tile when it is missing or cannot be read."""
    try:
        if tile is None:
            raise OSError("no thumbnail")
        with Image.open(tile) as opened:
            image = opened.convert("RGB")
        image.thumbnail((TILE, TILE))
    except OSError:
        draw.rectangle((left, top, left + TILE - 1, top + TILE - 1), fill=UNREADABLE)
        draw.text((left + 8, top + TILE // 2), "unreadable", fill=(60, 60, 60), font=font)
        return
    sheet.paste(image, (left + (TILE - image.width) // 2, top + (TILE - image.height) // 2))


def _badge(draw: ImageDraw.ImageDraw, font: Font, text: str, left: int, top: int) -> None:
    x0, y0, x1, y1 = draw.textbbox((left + 6, top + 4), text, font=font)
    draw.rectangle((x0 - 4, y0 - 3, x1 + 4, y1 + 3), fill=(0, 0, 0))
    draw.text((left + 6, top + 4), text, fill=(255, 255, 255), font=font)


def _font() -> Font:
    try:
        return ImageFont.load_default(size=18)
    except (ImportError, OSError):  # Pillow without FreeType: the fixed-size bitmap font
        return ImageFont.load_default()
