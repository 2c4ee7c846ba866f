"""Half-block previews and the quality summary: the pieces of the collector's app that need no rig."""

from __future__ import annotations

import numpy as np
from rich.console import Console

from rig.tui.preview import UPPER_HALF, render_image, shrink


def test_shrink_keeps_aspect_and_fits_the_cell_grid():
    img = np.zeros((240, 320, 3), np.uint8)
    px = shrink(img, cols=40, rows=10)
    assert px.shape[1] <= 40 and px.shape[0] <= 20 and px.shape[0] % 2 == 0
    assert abs(px.shape[1] / px.shape[0] - 320 / 240) < 0.15  # 2 pixels per cell row: square pixels
    gray = shrink(np.full((8, 8), 200, np.uint8), cols=8, rows=4)
    assert gray.shape == (8, 8, 3) and np.all(gray == 200)


def test_each_cell_paints_its_top_pixel_in_the_foreground_and_its_bottom_in_the_background():
    img = np.zeros((4, 2, 3), np.uint8)
    img[0] = (255, 0, 0)  # row 0 red, row 1 green: cell row 0
    img[1] = (0, 255, 0)
    img[2] = (0, 0, 255)  # row 2 blue, row 3 white: cell row 1
    img[3] = (248, 248, 248)
    r = render_image(img, cols=2, rows=2)
    assert (r.rows, r.cols) == (2, 2)
    segs = [s for s in Console(width=20, color_system="truecolor").render(r) if s.text.strip("\n")]
    assert [s.text for s in segs] == [UPPER_HALF * 2, UPPER_HALF * 2]  # equal cells merge into one run
    top, bottom = segs
    assert top.style.color.triplet == (248, 0, 0) and top.style.bgcolor.triplet == (0, 248, 0)
    assert bottom.style.color.triplet == (0, 0, 248) and bottom.style.bgcolor.triplet == (248, 248, 248)
