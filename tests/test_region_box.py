"""The region box's drag-to-box conversion and the drag-to-sliders sync (``ui/region_box.py``).

The page itself is covered by ``tests/test_ui_app.py`` (sliders, with ``AppTest``) and
``tests/test_ui_browser_region.py`` (a real mouse drag in Chromium).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from ui.region_box import MIN_DRAG, BoxKeys, apply_drag, box_from_drag, default_box, display_width

# What the component reports for a 600x400 photo shown 420x280 (scikit-image's coffee, measured in Chromium).
SHOWN = {"width": 420, "height": 280, "unix_time": 1795960512689}


def drag(x1: float, y1: float, x2: float, y2: float, **fields: Any) -> dict[str, Any]:
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2, **SHOWN, **fields}


def test_a_drag_on_the_scaled_image_is_a_box_in_the_photos_pixels() -> None:
    assert box_from_drag(drag(105, 70, 315, 168), 600, 400) == (150, 100, 450, 240)


def test_corners_in_any_order_and_outside_the_image_are_clamped() -> None:
    # Dragged up and to the left, released beyond the image's top-left corner.
    assert box_from_drag(drag(300, 200, -50, -40), 600, 400) == (0, 0, 429, 286)
    # Released beyond the bottom-right corner: the box ends at the photo's edge.
    assert box_from_drag(drag(210, 140, 900, 700), 600, 400) == (300, 200, 600, 400)


def test_a_click_or_a_thin_drag_sets_no_box() -> None:
    assert box_from_drag(drag(100, 100, 100, 100), 600, 400) is None
    assert box_from_drag(drag(100, 100, 100 + MIN_DRAG - 1, 200), 600, 400) is None
    assert box_from_drag(drag(100, 100, 300, 100 + MIN_DRAG - 1), 600, 400) is None
    # Released outside, beyond an edge it started on: nothing left inside the image.
    assert box_from_drag(drag(419, 100, 900, 200), 600, 400) is None
    assert box_from_drag(drag(100, 100, 100 + MIN_DRAG, 100 + MIN_DRAG), 600, 400) is not None


def test_a_box_is_at_least_one_photo_pixel_and_inside_the_photo() -> None:
    # A 3x3 photo shown at 420x420: a small drag still selects one whole pixel.
    assert box_from_drag(drag(0, 0, 5, 5, width=420, height=420), 3, 3) == (0, 0, 1, 1)
    # A drag at the far edge keeps a pixel inside the photo.
    assert box_from_drag(drag(414, 414, 420, 420, width=420, height=420), 3, 3) == (2, 2, 3, 3)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "x1=1",
        [105, 70, 315, 168],
        {"x": 105, "y": 70, **SHOWN},  # a click report (the component without click_and_drag)
        drag("105", 70, 315, 168),
        drag(True, 70, 315, 168),
        drag(math.nan, 70, 315, 168),
        drag(105, 70, math.inf, 168),
        drag(105, 70, 315, 168, width=0),
        drag(105, 70, 315, 168, height=-280),
        {"x1": 105, "y1": 70, "x2": 315, "width": 420, "height": 280},  # y2 missing
    ],
)
def test_anything_but_a_drag_report_sets_no_box(value: Any) -> None:
    assert box_from_drag(value, 600, 400) is None


def test_a_drag_sets_both_sliders_and_a_click_leaves_them() -> None:
    keys = BoxKeys.for_query("region", "coffee.jpg")
    state: dict[str, Any] = {keys.x: (150, 450), keys.y: (100, 300), keys.drag: drag(21, 28, 105, 140)}
    assert apply_drag(state, keys, 600, 400) == (30, 40, 150, 200)
    assert state[keys.x] == (30, 150) and state[keys.y] == (40, 200)

    state[keys.drag] = drag(50, 50, 50, 50)
    assert apply_drag(state, keys, 600, 400) is None
    assert state[keys.x] == (30, 150) and state[keys.y] == (40, 200)


def test_each_query_has_its_own_keys_and_a_centred_default_box() -> None:
    first, second = BoxKeys.for_query("region", "a.jpg"), BoxKeys.for_query("region", "b.jpg")
    assert len({first.x, first.y, first.drag, second.x, second.y, second.drag}) == 6
    assert default_box(600, 400) == (150, 100, 450, 300)


def test_the_longer_side_is_shown_at_the_display_size() -> None:
    assert display_width(600, 400, side=420) == 420  # landscape: width 420
    assert display_width(359, 1024, side=420) == 147  # portrait: height 420
    assert display_width(512, 512, side=420) == 420
