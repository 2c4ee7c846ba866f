"""SimCamera over a FrameRing written by another process (or a thread standing in for the world)."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import uuid

import numpy as np
import pytest

from drivers.cameras.base import CameraDisconnected, CameraFrozen
from drivers.cameras.shm import FrameRingError, FrameRingWriter
from drivers.cameras.sim import SimCamera
from drivers.errors import RigError

W, H = 64, 48


def _name() -> str:
    return f"rig-test-sim-{uuid.uuid4().hex[:8]}"


def _world(name: str, indices: list[int], period_s: float, ready, go) -> None:
    """A stand-in simulated world: renders frames whose pixels all equal index % 256."""
    ring = FrameRingWriter(name, W, H)
    ready.set()
    go.wait(30)
    img = np.empty((H, W, 3), np.uint8)
    for i in indices:
        img.fill(i % 256)
        ring.write(img, time.monotonic_ns(), i)
        time.sleep(period_s)
    time.sleep(0.2)
    ring.close()


def _thread_world(name: str, indices, period_s: float = 0.01, close: bool = True):
    ring = FrameRingWriter(name, W, H)

    def run():
        img = np.empty((H, W, 3), np.uint8)
        for i in indices:
            img.fill(i % 256)
            ring.write(img, time.monotonic_ns(), i)
            time.sleep(period_s)
        if close:
            time.sleep(0.1)
            ring.close()

    return ring, threading.Thread(target=run, daemon=True)


def test_frames_from_a_world_process_with_index_gaps_as_drops():
    name = _name()
    ctx = mp.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    indices = [i for i in range(1, 41) if i not in (7, 8, 20)]
    world = ctx.Process(target=_world, args=(name, indices, 0.01, ready, go))
    world.start()
    try:
        assert ready.wait(30)
        cam = SimCamera("high", ring=name, width=W, height=H, fps=100, freeze_periods=100)
        q = cam.subscribe(256)
        with cam:
            go.set()
            frames = []
            with pytest.raises(CameraDisconnected, match="world closed frame ring"):
                while True:
                    frames.append(q.get(timeout=30))
        got = [f.index for f in frames]
        assert got == sorted(got) and got[-1] == 40 and not {7, 8, 20} & set(got)
        for f in frames:
            assert f.encoding == "rgb8" and f.data.shape == (H, W, 3) and (f.data == f.index % 256).all()
            assert f.t_device_ns <= f.t_host_ns  # rendered before delivered
        stats = cam.stats()
        assert stats.drops == 40 - len(got) - (got[0] - 1) and stats.drops >= 3
    finally:
        world.join(30)
    assert world.exitcode == 0


def test_delay_holds_frames_and_stamps_delivery_time():
    name = _name()
    ring, world = _thread_world(name, range(1, 11), period_s=0.01)
    try:
        cam = SimCamera("wrist", ring=name, width=W, height=H, fps=100, delay_s=0.15, freeze_periods=100)
        q = cam.subscribe(64)
        with cam:
            world.start()
            frames = [q.get(timeout=30) for _ in range(10)]
        assert [f.index for f in frames] == list(range(1, 11))
        for f in frames:
            assert f.t_host_ns - f.t_device_ns >= 150_000_000  # the delay shows in the host stamp
        world.join(10)
    finally:
        ring.close()


def test_world_that_stops_rendering_freezes_the_camera():
    name = _name()
    ring, world = _thread_world(name, range(1, 6), close=False)
    try:
        cam = SimCamera("low", ring=name, width=W, height=H, fps=100, freeze_periods=5)
        q = cam.subscribe(64)
        with cam:
            world.start()
            with pytest.raises(CameraFrozen, match="'low' froze.*after frame 5"):
                while True:
                    q.get(timeout=30)
        world.join(10)
    finally:
        ring.close()


def test_missing_ring_and_size_mismatch_are_explained():
    with pytest.raises(FrameRingError, match="no frame ring named 'rig-sim-nowhere'.*start the simulated world"):
        SimCamera("nowhere", attach_timeout_s=0.1).start()
    name = _name()
    with FrameRingWriter(name, W, H), pytest.raises(RigError, match="renders 64x48 .* config asks for 640x480"):
        SimCamera("high", ring=name, attach_timeout_s=0.1).start()


def _crashing_world(name: str, ready) -> None:
    ring = FrameRingWriter(name, W, H)
    ring.write(np.full((H, W, 3), 1, np.uint8), time.monotonic_ns(), 1)
    ready.set()
    time.sleep(60)  # killed long before this


def test_world_process_that_dies_is_a_disconnect_not_a_freeze():
    name = _name()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    world = ctx.Process(target=_crashing_world, args=(name, ready))
    world.start()
    try:
        assert ready.wait(30)
        cam = SimCamera("high", ring=name, width=W, height=H, fps=100, freeze_periods=1000)
        q = cam.subscribe()
        with cam:
            assert q.get(timeout=10).index == 1
            world.kill()
            with pytest.raises(CameraDisconnected, match=rf"world exited \(pid {world.pid}\) without closing"):
                q.get(timeout=30)
    finally:
        world.join(10)
