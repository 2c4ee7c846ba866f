"""Where the task's objects are at the start of a take, from one frame of a fixed camera.

The default needs no colour: an object is what differs from an empty-scene *reference* of the
same camera, captured live (on the simulated rig: :func:`rig.sim.reference.capture_reference`;
on hardware: a frame the operator takes with the table cleared and the arms at the start pose).
The arms are masked (they render, or stand, a little differently each time), the difference is
thresholded, and the ``n`` largest blobs are the objects, ordered left to right in the image.
Each comes back as its intensity-weighted centroid in normalized image coordinates (-1..1), to
a fraction of a pixel. A colour prior exists as an explicit option (``colour="red"``), for a
task whose objects are known to be that colour; it is never the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rig.train import TrainError

DIFF_THRESHOLD = 30  # grey levels (max over channels): JPEG noise stays well under it
MIN_AREA = 4  # pixels of a blob


@dataclass
class Located:
    xy: np.ndarray  # (n, 2) normalized image coordinates (x right, y down), -1..1
    area: np.ndarray  # (n,) pixels of each blob (0: not found, xy is the image centre)

    @property
    def found(self) -> bool:
        return bool((self.area > 0).all())


def _normalize(cx: float, cy: float, h: int, w: int) -> tuple[float, float]:
    return 2.0 * (cx + 0.5) / w - 1.0, 2.0 * (cy + 0.5) / h - 1.0


def _blobs(weight: np.ndarray, binary: np.ndarray, n: int) -> Located:
    import cv2

    h, w = binary.shape
    # an opening keeps solid blobs (an object) and drops thin ones (the edge of an arm a little off)
    binary = cv2.morphologyEx(binary.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    order = sorted(range(1, count), key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    found = [i for i in order if stats[i, cv2.CC_STAT_AREA] >= MIN_AREA][:n]
    xy, area = [], []
    ys, xs = np.mgrid[0:h, 0:w]
    for i in found:
        sel = labels == i
        wt = weight[sel].astype(np.float64)
        xy.append(_normalize(float((xs[sel] * wt).sum() / wt.sum()), float((ys[sel] * wt).sum() / wt.sum()), h, w))
        area.append(int(sel.sum()))
    pts = sorted(zip(xy, area), key=lambda p: p[0][0])  # left to right: a stable order for the policy
    while len(pts) < n:
        pts.append(((0.0, 0.0), 0))
    return Located(np.array([p[0] for p in pts], np.float32).reshape(n, 2), np.array([p[1] for p in pts]))


def locate_by_difference(frame: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None, n: int = 1,
                         threshold: float = DIFF_THRESHOLD) -> Located:
    """The ``n`` largest regions where ``frame`` differs from the empty-scene ``reference``."""
    if frame.shape != reference.shape:
        raise TrainError(f"the reference frame is {reference.shape[1]}x{reference.shape[0]} but the camera's frame is "
                         f"{frame.shape[1]}x{frame.shape[0]}; capture the reference at the camera's size")
    diff = np.abs(frame.astype(np.int16) - reference.astype(np.int16)).max(-1)
    if mask is not None:
        diff[mask] = 0
    return _blobs(diff, diff > threshold, n)


def locate_by_colour(frame: np.ndarray, colour: str = "red", n: int = 1) -> Located:
    """Colour prior (an explicit option): the ``n`` largest regions dominated by ``colour``."""
    idx = {"red": 0, "green": 1, "blue": 2}.get(colour)
    if idx is None:
        raise TrainError(f"unknown colour prior {colour!r}; choose red, green or blue")
    f = frame.astype(np.int16)
    others = np.delete(f, idx, axis=-1).max(-1)
    score = np.clip(f[..., idx] - others, 0, None)
    return _blobs(score, score > 60, n)


@dataclass
class Locator:
    """How a policy locates its objects: ``method`` "difference" (default) or "colour:<name>"."""

    method: str = "difference"
    camera: str = "top"
    n: int = 1

    @property
    def colour(self) -> str | None:
        return self.method.split(":", 1)[1] if self.method.startswith("colour:") else None

    @property
    def needs_reference(self) -> bool:
        return self.colour is None

    def __call__(self, frame: np.ndarray, reference: np.ndarray | None = None, mask: np.ndarray | None = None) -> Located:
        if self.colour is not None:
            return locate_by_colour(frame, self.colour, self.n)
        if reference is None:
            raise TrainError("the object locator needs an empty-scene reference frame of camera "
                             f"{self.camera!r}: capture one (table cleared, arms at the start pose), or choose the "
                             "colour prior explicitly (--locator colour:red)")
        return locate_by_difference(frame, reference, mask, self.n)


def median_reference(frames: list[np.ndarray]) -> np.ndarray:
    """An empty-scene estimate from the first frames of many takes: the objects stand somewhere else
    in most of them, so the per-pixel median is the table. Only for *recorded* frames: live frames
    differ from recorded ones by more than an object's size (measured: 63-84 mm off), so live
    trials use a reference captured live."""
    if not frames:
        raise TrainError("no first frames to build a reference from")
    return np.median(np.stack(frames), axis=0).astype(np.uint8)
