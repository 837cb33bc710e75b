"""The region box of the "Find a region" page: dragged on the image, fine-tuned with two range sliders.

The drag comes from ``streamlit-image-coordinates`` with ``click_and_drag``: on mouse-up it reports where
the mouse went down and up, in the pixels of the image as displayed (the up corner may lie outside it),
with the displayed size. :func:`box_from_drag` turns that into the photo's own pixels.

One state, two inputs: the sliders' session-state values are the box. A drag's callback writes them;
callbacks run before the script, so the sliders are not yet created in that run (Streamlit refuses a
write to a widget's value once the widget exists in the run). The image is drawn from the sliders'
values, so moving a slider redraws the box, and what the page searches is always what it shows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, cast

import streamlit as st
from PIL import Image

# The package ships no type information (no py.typed); its one function is wrapped here.
from streamlit_image_coordinates import streamlit_image_coordinates  # type: ignore[import-untyped]

from ui.thumbnails import Box, draw_box

DISPLAY_SIDE = 420  # the longer side of the image on the page, in CSS pixels
MIN_DRAG = 4  # a drag spanning fewer displayed pixels than this on either axis is a click: ignored
DRAG_FIELDS = ("x1", "y1", "x2", "y2", "width", "height")


@dataclass(frozen=True)
class BoxKeys:
    """Session-state keys of one query's box: the two sliders and the drag component."""

    x: str
    y: str
    drag: str

    @classmethod
    def for_query(cls, page_key: str, label: str) -> BoxKeys:
        """Keys named after the query, so another query image starts with its own default box."""
        return cls(f"{page_key}-x-{label}", f"{page_key}-y-{label}", f"{page_key}-drag-{label}")


def default_box(width: int, height: int) -> Box:
    """The middle half of the image on each axis."""
    return (width // 4, height // 4, 3 * width // 4, 3 * height // 4)


def display_width(width: int, height: int, side: int = DISPLAY_SIDE) -> int:
    """CSS width that shows a ``width x height`` image with its longer side ``side`` pixels."""
    return max(1, round(side * min(1.0, width / max(height, 1))))


def _span(start: float, end: float, shown: float, size: int) -> tuple[int, int] | None:
    """One axis of a drag, clamped to the displayed image and scaled to ``size`` photo pixels."""
    low, high = sorted((min(max(start, 0.0), shown), min(max(end, 0.0), shown)))
    if high - low < MIN_DRAG:
        return None
    first = min(size - 1, round(low * size / shown))
    return first, max(first + 1, min(size, round(high * size / shown)))


def box_from_drag(value: Mapping[str, Any] | None, width: int, height: int) -> Box | None:
    """The box, in the pixels of a ``width x height`` photo, that a drag selects; None for no drag, a
    click (or a drag thinner than ``MIN_DRAG`` displayed pixels) and anything that is not a drag report.

    Corners may come in any order and the mouse-up corner may lie outside the image: the box is clamped
    to the image. The value comes from the browser, so its fields are checked, never trusted.
    """
    if not isinstance(value, Mapping):
        return None
    numbers: list[float] = []
    for field in DRAG_FIELDS:
        number = value.get(field)
        if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
            return None
        numbers.append(float(number))
    x1, y1, x2, y2, shown_width, shown_height = numbers
    if shown_width <= 0 or shown_height <= 0 or width <= 0 or height <= 0:
        return None
    columns = _span(x1, x2, shown_width, width)
    rows = _span(y1, y2, shown_height, height)
    if columns is None or rows is None:
        return None
    return (columns[0], rows[0], columns[1], rows[1])


def apply_drag(state: MutableMapping[Any, Any], keys: BoxKeys, width: int, height: int) -> Box | None:
    """Copy the drag in ``state[keys.drag]`` onto the sliders' values; the box set, or None (unchanged).
    ``state`` is ``st.session_state`` (whose keys Streamlit types as ``str | int``) or a dict in tests.

    Called as the drag component's ``on_change`` callback, before the sliders exist in the run.
    """
    box = box_from_drag(state.get(keys.drag), width, height)
    if box is not None:
        state[keys.x] = (box[0], box[2])
        state[keys.y] = (box[1], box[3])
    return box


def box_editor(image: Image.Image, width: int, height: int, page_key: str, label: str) -> Box:
    """The two range sliders beside the image with the box drawn on it, where a drag sets a new box.

    ``image`` is the query as shown (any scale); ``width`` x ``height`` are the photo's pixels, in which
    the box is returned.
    """
    keys = BoxKeys.for_query(page_key, label)
    start = default_box(width, height)
    # Initial values go into session state before the sliders exist, and no slider gets a ``value``:
    # Streamlit warns when a widget has both.
    if keys.x not in st.session_state:
        st.session_state[keys.x] = (start[0], start[2])
    if keys.y not in st.session_state:
        st.session_state[keys.y] = (start[1], start[3])
    left, right = st.columns([1, 2])
    with left:
        # Without ``value`` the stubs type the slider as one number; its state holds a (low, high) pair.
        x0, x1 = cast(tuple[int, int], st.slider("Left - right (px)", 0, width, key=keys.x))
        y0, y1 = cast(tuple[int, int], st.slider("Top - bottom (px)", 0, height, key=keys.y))
    box = (x0, y0, max(x1, x0 + 1), max(y1, y0 + 1))
    shown_width = display_width(width, height)
    shown = image.copy()
    shown.thumbnail((2 * DISPLAY_SIDE, 2 * DISPLAY_SIDE), Image.Resampling.LANCZOS)  # sharp on HiDPI screens
    with right:
        streamlit_image_coordinates(
            draw_box(shown, box, (width, height)),
            width=shown_width,
            key=keys.drag,
            click_and_drag=True,
            image_format="JPEG",
            jpeg_quality=90,
            cursor="crosshair",
            on_click=lambda: apply_drag(st.session_state, keys, width, height),
        )
    return box
