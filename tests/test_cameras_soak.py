"""Several cameras at once for RIG_SOAK_SECONDS (short by default): the books must balance.

Only invariants are asserted, never rates: on a loaded machine frames may be dropped, but every
frame is either delivered, counted as a drop, or counted as a queue overflow.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import uuid

import numpy as np
import pytest

from drivers.cameras import open_camera
from drivers.cameras.shm import FrameRingWriter

W, H = 160, 120


@pytest.mark.soak
def test_four_cameras_account_for_every_frame():
    seconds = float(os.environ.get("RIG_SOAK_SECONDS", "1.5"))
    ring = f"rig-test-soak-{uuid.uuid4().hex[:8]}"
    world = FrameRingWriter(ring, W, H)
    stop = threading.Event()

    def render():
        img, i = np.zeros((H, W, 3), np.uint8), 0
        while not stop.is_set():
            i += 1
            img.fill(i % 256)
            world.write(img, time.monotonic_ns(), i)
            time.sleep(1 / 50)

    # Frames are what this counts, not stalls: a shared machine may hold a capture thread for a few
    # hundred ms (the default freeze watchdog, 10 periods, is 0.17 s at 60 fps); a 2 s watchdog
    # still fails a camera that stops.
    watchdog = {"freeze_periods": 120}
    cams = [
        open_camera({"name": "high", "kind": "synthetic", "width": W, "height": H, "fps": 30, **watchdog}),
        open_camera({"name": "low", "kind": "synthetic", "width": W, "height": H, "fps": 30, "jpeg": True, **watchdog}),
        open_camera({"name": "left_wrist", "kind": "synthetic", "width": W, "height": H, "fps": 60, **watchdog}),
        open_camera({"name": "sim", "kind": "sim", "ring": ring, "width": W, "height": H, "fps": 50, **watchdog}),
    ]
    renderer = threading.Thread(target=render, daemon=True)
    renderer.start()
    queues = [cam.subscribe(maxsize=4) for cam in cams]
    received = {cam.name: [] for cam in cams}
    try:
        for cam in cams:
            cam.start()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for cam, q in zip(cams, queues):
                try:
                    received[cam.name].append(q.get(timeout=0.005).index)
                except queue.Empty:
                    pass
    finally:
        for cam in cams:
            cam.stop()
        stop.set()
        renderer.join(5)
        world.close()
    for cam, q in zip(cams, queues):
        got = received[cam.name] + [f.index for f in q.drain()]
        stats = cam.stats()
        assert stats.fault is None and stats.frames > 0, stats
        assert got == sorted(set(got)), f"{cam.name}: frames out of order or repeated"
        assert len(got) + q.overflows == stats.frames, stats
        assert stats.frames + stats.drops == stats.last_index - stats.first_index + 1, stats
