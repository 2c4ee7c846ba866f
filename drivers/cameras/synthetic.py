"""A test-pattern camera: deterministic moving colour bars plus the frame counter.

Frame ``i`` is always ``pattern_frame(i, width, height)``: vertical colour bars scrolled 4 px per
frame, and a top band holding ``i`` as 32 black/white blocks (most significant bit first, read
back with ``read_counter``) above the number in digits for people. Frames are paced on the
monotonic clock at ``fps``; if the capture thread falls more than a period behind, the indices it
missed are skipped, as a real camera drops them.

For tests it can also misbehave on purpose: ``skip`` indices (drops), ``freeze_after`` a frame
(for ``freeze_for_s`` seconds, or for good), or ``disconnect_after`` a frame.
``jpeg=True`` delivers JPEG bytes, pre-encoded once for a cycle of ``jpeg_cycle`` frames so that
benchmarks measure the rig, not the encoder (the counter band then shows ``i % jpeg_cycle``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import cv2
import numpy as np

from drivers.cameras.base import Camera, CameraDisconnected
from drivers.cameras.frame import Frame

_BARS = np.array(
    [[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0],
     [255, 0, 255], [255, 0, 0], [0, 0, 255], [0, 0, 0]], dtype=np.uint8,
)
_BITS = 32
_SCROLL_PX = 4


def _band_height(height: int) -> int:
    return max(8, height // 8)


def pattern_frame(index: int, width: int, height: int) -> np.ndarray:
    """The HxWx3 uint8 RGB image a synthetic camera delivers as frame ``index``."""
    cols = (np.arange(width) * len(_BARS)) // width
    row = _BARS[np.roll(cols, (index * _SCROLL_PX) % width)]
    img = np.broadcast_to(row, (height, width, 3)).copy()
    band = _band_height(height)
    img[:band] = 0
    block = width // _BITS
    for bit in range(_BITS):
        if (index >> (_BITS - 1 - bit)) & 1:
            img[: band // 2, bit * block : (bit + 1) * block] = 255
    digits = img[band // 2 : band]  # a view: the text can never spill onto the counter blocks
    cv2.putText(digits, str(index), (2, band // 2 - 1), cv2.FONT_HERSHEY_PLAIN, max((band // 2) / 14, 0.3),
                (255, 255, 255), 1, cv2.LINE_8)
    return img


def read_counter(rgb: np.ndarray) -> int:
    """The frame counter drawn by ``pattern_frame`` (survives JPEG: blocks are thresholded)."""
    height, width = rgb.shape[:2]
    band, block = _band_height(height), width // _BITS
    value = 0
    for bit in range(_BITS):
        patch = rgb[band // 8 : band // 2 - band // 8, bit * block + block // 4 : (bit + 1) * block - block // 4]
        value = (value << 1) | int(patch.mean() > 127)
    return value


class SyntheticCamera(Camera):
    device_clock = "nominal exposure time: index / fps since start (ns)"

    def __init__(self, name: str = "synthetic", width: int = 640, height: int = 480, fps: float = 30.0, *,
                 jpeg: bool = False, jpeg_quality: int = 90, jpeg_cycle: int | None = None,
                 skip: Iterable[int] = (), freeze_after: int | None = None, freeze_for_s: float | None = None,
                 disconnect_after: int | None = None, buffers: int = 4, **camera_options):
        super().__init__(name, width, height, fps, **camera_options)
        if width < _BITS:
            raise ValueError(f"synthetic camera needs width >= {_BITS} for its counter band")
        self.jpeg, self.jpeg_quality = jpeg, jpeg_quality
        self.jpeg_cycle = jpeg_cycle or max(1, round(fps))
        self.skip = frozenset(skip)
        self.freeze_after, self.freeze_for_s = freeze_after, freeze_for_s
        self.disconnect_after = disconnect_after
        self.buffers = buffers
        self._jpegs: list[np.ndarray] = []

    def _open(self) -> None:
        pattern_frame(0, self.width, self.height)  # first call initialises OpenCV's font code (~30 ms)
        if self.jpeg and not self._jpegs:
            params = [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]
            for i in range(self.jpeg_cycle):
                bgr = cv2.cvtColor(pattern_frame(i, self.width, self.height), cv2.COLOR_RGB2BGR)
                ok, buf = cv2.imencode(".jpg", bgr, params)
                assert ok, "OpenCV failed to encode a JPEG"
                self._jpegs.append(buf.reshape(-1))
        self._t0_ns: int | None = None  # set by the first grab: thread start-up is not a stall
        self._next = 0
        self._frozen_until_ns: int | None = None
        self._freeze_pending = self.freeze_after is not None

    def _grab(self, timeout_s: float) -> Frame | None:
        period_ns = round(1e9 / self.fps)
        give_up = time.monotonic_ns() + int(timeout_s * 1e9)
        if self._t0_ns is None:
            self._t0_ns = time.monotonic_ns()
        while True:
            now = time.monotonic_ns()
            if self._frozen_until_ns is not None:
                if now < self._frozen_until_ns:
                    time.sleep(min(timeout_s, (self._frozen_until_ns - now) / 1e9))
                    return None
                # Thawed: carry on with the index a real camera would have reached by now.
                self._frozen_until_ns = None
                self._next = (now - self._t0_ns) // period_ns
            due = self._t0_ns + self._next * period_ns
            if due > now:
                wait = (due - now) / 1e9
                if wait > timeout_s:
                    time.sleep(timeout_s)
                    return None
                time.sleep(wait)
                now = time.monotonic_ns()
            elif now - due >= self.buffers * period_ns:
                # Fell behind by more than the driver buffers hold: the older frames are lost.
                self._next = (now - self._t0_ns) // period_ns - self.buffers + 1
            index = self._next
            self._next += 1
            if index in self.skip:
                if time.monotonic_ns() >= give_up:
                    return None  # let the capture loop see stop() between skipped frames
                continue
            return self._deliver(index)

    def _deliver(self, index: int) -> Frame:
        if self.jpeg:
            data, encoding = self._jpegs[index % self.jpeg_cycle], "jpeg"
        else:
            data, encoding = pattern_frame(index, self.width, self.height), "rgb8"
        t_host = time.monotonic_ns()
        if self.disconnect_after is not None and index > self.disconnect_after:
            raise CameraDisconnected(
                f"camera {self.name!r} disconnected after frame {self.disconnect_after} (simulated unplug); "
                "reconnect it and restart the camera"
            )
        if self._freeze_pending and self.freeze_after is not None and index >= self.freeze_after:
            self._frozen_until_ns = 2**62 if self.freeze_for_s is None else t_host + int(self.freeze_for_s * 1e9)
            self._freeze_pending = False  # freeze once per start()
        return Frame(self.name, index, t_host, data, encoding, t_device_ns=index * round(1e9 / self.fps))

    def _close(self) -> None:
        pass
