"""Camera images as terminal text: two pixels per cell with the upper half block (▀).

The foreground colour paints the top pixel, the background the bottom one. Images are shrunk
by plain numpy striding (no filtering: a preview only has to be recognisable, and cheap).
"""

from __future__ import annotations

import numpy as np
from rich.color import Color
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style

UPPER_HALF = "▀"
_QUANT = 3  # drop 3 low bits per channel: 32 levels are plenty and keep the style cache small
_STYLE_CACHE: dict[int, Style] = {}
_CACHE_LIMIT = 50_000


def shrink(image: np.ndarray, cols: int, rows: int) -> np.ndarray:
    """Downscale an (H, W, 3|1) or (H, W) image to at most (2*rows, cols) pixels by striding,
    keeping its aspect ratio (a terminal cell is about twice as tall as wide: 1 col x 2 px)."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    h, w = image.shape[:2]
    if cols < 1 or rows < 1 or h == 0 or w == 0:
        return np.zeros((0, 0, 3), np.uint8)
    step = max(w / cols, h / (2 * rows), 1.0)
    ys = (np.arange(int(h / step)) * step).astype(np.intp)
    xs = (np.arange(int(w / step)) * step).astype(np.intp)
    out = image[ys][:, xs, :3]
    if out.shape[0] % 2:
        out = out[:-1]
    return np.ascontiguousarray(out, dtype=np.uint8)


def _style(key: int) -> Style:
    style = _STYLE_CACHE.get(key)
    if style is None:
        if len(_STYLE_CACHE) > _CACHE_LIMIT:
            _STYLE_CACHE.clear()
        top, bottom = key >> 24, key & 0xFFFFFF
        style = Style(color=Color.from_rgb(top >> 16, (top >> 8) & 0xFF, top & 0xFF),
                      bgcolor=Color.from_rgb(bottom >> 16, (bottom >> 8) & 0xFF, bottom & 0xFF))
        _STYLE_CACHE[key] = style
    return style


class HalfBlockImage:
    """A Rich renderable of an RGB image already shrunk to (2*rows, cols) pixels."""

    def __init__(self, pixels: np.ndarray):
        self.pixels = pixels
        q = (pixels >> _QUANT << _QUANT).astype(np.int64)
        rgb = (q[..., 0] << 16) | (q[..., 1] << 8) | q[..., 2]
        # One int per cell: top pixel colour in the high 24 bits, bottom in the low 24.
        self.keys = (rgb[0::2] << 24) | rgb[1::2]

    @property
    def rows(self) -> int:
        return int(self.keys.shape[0])

    @property
    def cols(self) -> int:
        return int(self.keys.shape[1]) if self.keys.ndim == 2 else 0

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        newline = Segment.line()
        for row in self.keys.tolist():
            # Runs of equal cells become one segment: flat areas (table, sky) cost almost nothing.
            start = 0
            for i in range(1, len(row) + 1):
                if i == len(row) or row[i] != row[start]:
                    yield Segment(UPPER_HALF * (i - start), _style(row[start]))
                    start = i
            yield newline

    def __rich_measure__(self, console: Console, options: ConsoleOptions):
        from rich.measure import Measurement
        return Measurement(self.cols, self.cols)


def render_image(image: np.ndarray, cols: int, rows: int) -> HalfBlockImage:
    return HalfBlockImage(shrink(image, cols, rows))


def image_segments(image: np.ndarray, cols: int, rows: int) -> list[list[Segment]]:
    """One list of segments per cell row (runs of equal cells merged), for Textual's line API."""
    keys = HalfBlockImage(shrink(image, cols, rows)).keys
    lines = []
    for row in keys.tolist():
        segs, start = [], 0
        for i in range(1, len(row) + 1):
            if i == len(row) or row[i] != row[start]:
                segs.append(Segment(UPPER_HALF * (i - start), _style(row[start])))
                start = i
        lines.append(segs)
    return lines
