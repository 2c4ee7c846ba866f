"""The simulated world's cameras: frames rendered in another process, read from a FrameRing.

``Frame.index`` is the ring's frame counter, so frames the camera missed (the world rendered two
before this camera looked) count as drops. ``t_device_ns`` is the world's render time.

``delay_s`` makes the camera behave like a real one with that much latency: each frame is held
until ``render time + delay_s`` and then delivered stamped with the host time of delivery, the
moment a real delayed camera would hand it over. Latency calibration must then measure the delay;
keeping the render time as ``t_host_ns`` would hide it.
"""

from __future__ import annotations

import collections
import time

import numpy as np

from drivers.cameras.base import Camera, CameraDisconnected
from drivers.cameras.frame import Frame
from drivers.cameras.shm import FrameRingError, FrameRingReader, default_ring_name
from drivers.errors import RigError


class SimCamera(Camera):
    device_clock = "simulated world render time (host monotonic, ns)"

    def __init__(self, name: str, ring: str | None = None, width: int = 640, height: int = 480,
                 fps: float = 30.0, *, delay_s: float = 0.0, attach_timeout_s: float = 10.0, **camera_options):
        super().__init__(name, width, height, fps, **camera_options)
        if delay_s < 0:
            raise RigError(f"camera {name!r}: delay_s must be >= 0, got {delay_s}")
        self.ring = ring or default_ring_name(name)
        self.delay_s = delay_s
        self.attach_timeout_s = attach_timeout_s
        self._reader: FrameRingReader | None = None

    def _open(self) -> None:
        # The world may still be starting: wait for its ring to appear.
        deadline = time.monotonic() + self.attach_timeout_s
        while True:
            try:
                reader = FrameRingReader(self.ring)
                break
            except FrameRingError as exc:
                if time.monotonic() >= deadline:
                    raise FrameRingError(
                        f"camera {self.name!r}: {exc} (waited {self.attach_timeout_s:g} s)"
                    ) from None
                time.sleep(0.02)
        if (reader.width, reader.height) != (self.width, self.height):
            reader.close()
            raise RigError(
                f"camera {self.name!r}: the simulated world renders {reader.width}x{reader.height} into ring "
                f"{self.ring!r}, but the config asks for {self.width}x{self.height}; make them agree"
            )
        self._reader = reader
        self._ring_index = -1 if reader.write_count == 0 else reader.read_latest()[0] - 1  # type: ignore[index]
        self._held: collections.deque[tuple[int, int, np.ndarray]] = collections.deque()

    def _grab(self, timeout_s: float) -> Frame | None:
        reader = self._reader
        assert reader is not None  # attached by _open()
        delay_ns = int(self.delay_s * 1e9)
        deadline_ns = time.monotonic_ns() + int(timeout_s * 1e9)
        while True:
            now = time.monotonic_ns()
            if self._held and self._held[0][1] + delay_ns <= now:
                index, t_render, rgb = self._held.popleft()
                return Frame(self.name, index, time.monotonic_ns(), rgb, "rgb8", t_device_ns=t_render)
            if now >= deadline_ns:
                return None
            until = min(deadline_ns, self._held[0][1] + delay_ns) if self._held else deadline_ns
            got = reader.wait_newer(self._ring_index, (until - now) / 1e9)
            if got is not None:
                index, t_render, rgb = got
                self._ring_index = index
                if delay_ns == 0:
                    return Frame(self.name, index, time.monotonic_ns(), rgb, "rgb8", t_device_ns=t_render)
                self._held.append((index, t_render, rgb))
            elif not reader.writer_alive:
                if not self._held:
                    how = "closed" if reader.writer_closed else f"exited (pid {reader.writer_pid}) without closing"
                    raise CameraDisconnected(
                        f"camera {self.name!r}: the simulated world {how} frame ring {self.ring!r}; "
                        "restart the world, then the camera"
                    )
                time.sleep(max(0, until - time.monotonic_ns()) / 1e9)  # deliver what is still held

    def _close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
