"""Camera machinery through the synthetic camera: counters, drops, bounded queues, faults."""

from __future__ import annotations

import queue
import threading
import time

import cv2
import numpy as np
import pytest

from drivers.cameras.base import CameraDisconnected, CameraFault, CameraFrozen, FrameQueue
from drivers.cameras.frame import Frame
from drivers.cameras.synthetic import SyntheticCamera, pattern_frame, read_counter

W, H = 64, 48
# Deep enough that a loaded CI machine never makes the synthetic camera drop frames on its own.
DEEP = 10_000


def _collect(q: FrameQueue, n: int, timeout: float = 10.0) -> list[Frame]:
    return [q.get(timeout=timeout) for _ in range(n)]


def _wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_frames_are_the_pattern_with_consecutive_indices_and_host_stamps():
    cam = SyntheticCamera("high", W, H, fps=100, buffers=DEEP)
    assert cam.latest() is None
    with cam:
        q = cam.subscribe(maxsize=64)
        before = time.monotonic_ns()
        frames = _collect(q, 20)
        after = time.monotonic_ns()
    assert [f.index for f in frames] == list(range(frames[0].index, frames[0].index + 20))
    for f in frames:
        assert f.camera == "high" and f.encoding == "rgb8" and f.data.shape == (H, W, 3)
        np.testing.assert_array_equal(f.data, pattern_frame(f.index, W, H))
        assert read_counter(f.data) == f.index
        assert before - 10**9 < f.t_host_ns <= after
        assert f.t_device_ns == f.index * 10_000_000  # nominal 100 fps device clock
    stamps = [f.t_host_ns for f in frames]
    assert stamps == sorted(stamps)
    stats = cam.stats()
    assert stats.frames >= 20 and stats.drops == 0 and stats.overflows == 0 and stats.fault is None
    assert stats.last_index >= frames[-1].index and stats.rate_hz > 0
    assert cam.latest() is not None and not cam.running


def test_pattern_counter_reads_back_large_values_and_after_jpeg():
    img = pattern_frame(0xDEADBEEF, 320, 240)
    assert read_counter(img) == 0xDEADBEEF
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 60])
    assert ok and read_counter(cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)) == 0xDEADBEEF
    assert not np.array_equal(pattern_frame(1, W, H), pattern_frame(2, W, H))  # the bars move


def test_jpeg_mode_delivers_decodable_preencoded_bytes():
    with SyntheticCamera("wrist", 128, 96, fps=100, jpeg=True, jpeg_cycle=7, buffers=DEEP) as cam:
        frames = _collect(cam.subscribe(32), 10)
    for f in frames:
        assert f.encoding == "jpeg" and f.data.dtype == np.uint8 and f.data.ndim == 1
        assert bytes(f.data[:2]) == b"\xff\xd8" and bytes(f.data[-2:]) == b"\xff\xd9"
        rgb = cv2.cvtColor(cv2.imdecode(f.data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert read_counter(rgb) == f.index % 7


def test_gaps_in_index_are_counted_as_drops():
    with SyntheticCamera("low", W, H, fps=100, skip={5, 6, 9}, buffers=DEEP) as cam:
        q = cam.subscribe(64)
        seen = []
        while not seen or seen[-1] < 12:
            seen.append(q.get(timeout=10).index)
    assert 5 not in seen and 6 not in seen and 9 not in seen
    assert cam.stats().drops == 3


def test_frame_queue_drops_oldest_and_never_blocks_the_putter():
    q = FrameQueue(3)
    frames = [Frame("c", i, i, np.zeros(1, np.uint8)) for i in range(10)]
    for f in frames:
        q.put(f)  # would hang here if put ever blocked on a full queue
    assert len(q) == 3 and q.overflows == 7
    assert [f.index for f in q.drain()] == [7, 8, 9]
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_unread_subscriber_does_not_stall_capture_or_other_consumers():
    with SyntheticCamera("high", W, H, fps=100, buffers=DEEP) as cam:
        ignored = cam.subscribe(maxsize=2)
        reader = cam.subscribe(maxsize=256)
        frames = _collect(reader, 40)
        assert [f.index for f in frames] == list(range(frames[0].index, frames[0].index + 40))
        _wait_until(lambda: ignored.overflows >= 30)
        assert len(ignored) == 2
        kept = ignored.drain()
        assert kept[1].index == kept[0].index + 1  # the newest are kept
        stats = cam.stats()
        assert stats.overflows >= 30 and stats.drops == 0
        ignored.close()
        assert cam.stats().overflows >= 30  # a closed queue's losses stay counted


def test_freeze_mid_stream_surfaces_to_a_blocked_consumer_then_clears():
    cam = SyntheticCamera("left_wrist", W, H, fps=100, freeze_after=10, freeze_for_s=0.5, freeze_periods=5,
                          buffers=DEEP)
    with cam:
        q = cam.subscribe(64)
        got = []
        with pytest.raises(CameraFrozen) as info:
            while True:
                got.append(q.get(timeout=30).index)  # blocks during the freeze until the fault wakes it
        assert got[-1] == 10
        message = str(info.value)
        assert "'left_wrist' froze" in message and "after frame 10" in message and "USB" in message
        assert isinstance(cam.fault, CameraFrozen)
        assert cam.stats().freezes == 1 and "froze" in cam.stats().last_error
        # Frames resume: the fault clears and the frames missed while frozen count as drops.
        _wait_until(lambda: cam.fault is None)
        resumed = q.get(timeout=30)
        assert resumed.index > 11
        stats = cam.stats()
        assert stats.drops == resumed.index - 11 and stats.freezes == 1 and stats.fault is None


def test_disconnect_ends_capture_with_a_clear_final_fault():
    cam = SyntheticCamera("right_wrist", W, H, fps=100, disconnect_after=15)
    cam.start()
    q = cam.subscribe(64)
    consumer_result: list[BaseException | None] = []

    def consume():
        try:
            while True:
                q.get(timeout=30)
        except CameraFault as fault:
            consumer_result.append(fault)

    t = threading.Thread(target=consume)
    t.start()
    t.join(30)
    assert not t.is_alive(), "consumer stayed blocked after the disconnect"
    assert isinstance(consumer_result[0], CameraDisconnected)
    assert "disconnected after frame 15" in str(cam.fault) and "reconnect" in str(cam.fault)
    assert cam.stats().last_index == 15
    time.sleep(0.1)
    assert isinstance(cam.fault, CameraDisconnected)  # the watchdog does not turn it into a freeze
    with pytest.raises(CameraDisconnected):
        cam.raise_if_faulted()
    cam.stop()
    cam.stop()  # idempotent


def test_no_first_frame_is_reported_after_the_startup_timeout():
    cam = SyntheticCamera("high", W, H, fps=100, skip=range(10**6), startup_timeout_s=0.2)
    with cam, pytest.raises(CameraFrozen, match="sent no frame within"):
        cam.subscribe().get(timeout=30)


def test_start_stop_idempotent_and_restartable():
    cam = SyntheticCamera("high", W, H, fps=100, buffers=DEEP)
    cam.start()
    cam.start()
    first = cam.subscribe().get(timeout=10)
    cam.stop()
    cam.stop()
    assert not cam.running
    with cam:
        again = cam.subscribe().get(timeout=10)
    assert again.index <= first.index + 5  # a restart begins a fresh stream
    assert cam.stats().frames >= 1


def test_stop_releases_a_consumer_waiting_without_timeout():
    cam = SyntheticCamera("high", W, H, fps=100, skip=range(10**6))  # never delivers
    q = cam.subscribe()
    outcome: list[str] = []

    def consume():
        try:
            q.get()  # no timeout
        except queue.Empty as e:
            outcome.append(str(e))

    with cam:
        t = threading.Thread(target=consume)
        t.start()
        time.sleep(0.05)
    t.join(10)
    assert not t.is_alive() and outcome == ["camera stopped"]
