"""The one record every camera produces."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image, stamped on the rig's clock.

    ``t_host_ns`` is ``time.monotonic_ns()`` taken as close to capture as the backend allows;
    ``t_device_ns`` is the camera's own clock where it has one (stored beside, never instead).
    ``index`` is the device/driver frame counter: a gap between consecutive indices is a drop.
    ``encoding`` is ``"rgb8"`` (``data`` is HxWx3 uint8) or ``"jpeg"`` (``data`` is a 1-D uint8
    array of the bytes exactly as the camera sent them, e.g. UVC MJPG).
    """

    camera: str
    index: int
    t_host_ns: int
    data: np.ndarray
    encoding: str = "rgb8"
    t_device_ns: int | None = None
    depth: np.ndarray | None = None  # HxW uint16, millimetres scaled by the device depth unit
