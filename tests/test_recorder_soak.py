"""Sustained recording: cameras and ticks in real time, nothing dropped, every frame in order.

Short by default (2 s); RIG_SOAK_SECONDS sets the length for the soak run.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from drivers.cameras.frame import Frame
from recorder import Dataset
from recorder.inspect import inspect_episode

pytestmark = pytest.mark.filterwarnings("ignore:The data type \\(VariableLengthBytes")


@pytest.mark.soak
def test_sustained_recording_drops_nothing(tmp_path):
    seconds = float(os.environ.get("RIG_SOAK_SECONDS", "2"))
    ds = Dataset.create(tmp_path / "ds")
    ep = ds.new_episode(task="soak")
    ep.add_stream("joints", {"q": ((14,), "f4"), "tick": ((), "i8"), "deadline_ns": ((), "i8")}, rate_hz=50)
    cams = ("high", "wrist")
    for c in cams:
        ep.add_camera(c, fps=30)
    ep.start()
    yy, xx = np.mgrid[0:480, 0:640]
    frames = [np.stack([xx % 256, yy % 256, (xx + yy + 9 * k) % 256], -1).astype(np.uint8) for k in range(10)]
    stop = threading.Event()
    sent = dict.fromkeys(cams, 0)

    def camera(name: str) -> None:
        t0 = time.monotonic_ns()
        k = 0
        while not stop.is_set():
            due = t0 + k * 33_333_333
            time.sleep(max(0.0, (due - time.monotonic_ns()) / 1e9))
            assert ep.add_frame(Frame(name, k, time.monotonic_ns(), frames[k % 10]))
            sent[name] += 1
            k += 1

    threads = [threading.Thread(target=camera, args=(c,)) for c in cams]
    for t in threads:
        t.start()
    t0 = time.monotonic_ns()
    i = 0
    while time.monotonic_ns() - t0 < seconds * 1e9:
        due = t0 + i * 20_000_000
        time.sleep(max(0.0, (due - time.monotonic_ns()) / 1e9))
        assert ep.append("joints", time.monotonic_ns(), q=np.full(14, i, np.float32), tick=i, deadline_ns=due)
        i += 1
    stop.set()
    for t in threads:
        t.join()
    stats = ep.stop(success=True)
    for c in cams:
        assert stats["cameras"][c]["dropped"] == 0
        assert stats["cameras"][c]["written"] == sent[c]
    report = inspect_episode(ds.episode(0))
    assert report.streams[0].samples == i and report.streams[0].skipped_ticks == 0
    for cam in report.cameras:
        assert cam.dropped == 0 and cam.frames == sent[cam.name]
    last = ds.episode(0).read_frame("high", sent["high"] - 1)
    assert np.abs(last.astype(int) - frames[(sent["high"] - 1) % 10]).mean() < 8
