"""Camera frames at the size a policy sees them: a JPEG decoded straight to a reduced size
(libjpeg scales in the DCT), then resized to exactly ``hw``.

Training (rig/train/data.py), the policy source on the control loop's side (rig/sources.py) and the
simulated references (rig/sim/reference.py) all call :func:`decode_small`, so a policy sees the
same pixels, JPEG artefacts and scaling included, in training and on the arms. This module imports
no training code: the control loop may use it.
"""

from __future__ import annotations

import cv2
import numpy as np

from drivers.errors import RigError

_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


class FrameError(RigError):
    """A camera frame cannot be read."""


def reduction(width: int, height: int, hw: tuple[int, int]) -> int:
    """The largest JPEG scale-down (8, 4, 2 or 1) that still leaves at least the target size."""
    for r in (8, 4, 2):
        if width // r >= hw[1] and height // r >= hw[0]:
            return r
    return 1


def decode_small(blob: bytes | np.ndarray, hw: tuple[int, int], factor: int = 1) -> np.ndarray:
    """JPEG bytes -> (H, W, 3) uint8 RGB at ``hw``, decoded at 1/``factor`` scale first (see :func:`reduction`)."""
    buf = np.frombuffer(blob, np.uint8) if isinstance(blob, bytes | bytearray) else blob
    img = cv2.imdecode(buf, _REDUCED[factor])
    if img is None:
        raise FrameError("a camera frame is not a readable JPEG; check the episode with `rig inspect`")
    if img.shape[:2] != tuple(hw):
        img = cv2.resize(img, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def jpeg_size(blob: bytes) -> tuple[int, int]:
    """(width, height) of a JPEG, from a full decode of one frame (once per camera)."""
    img = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise FrameError("a camera frame is not a readable JPEG; check the episode with `rig inspect`")
    return img.shape[1], img.shape[0]


__all__ = ["FrameError", "decode_small", "jpeg_size", "reduction"]
