"""The shared-memory frame ring across real processes: no torn frames, no premature unlink."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from drivers.cameras.shm import FrameRingError, FrameRingReader, FrameRingWriter

W, H = 64, 48


def _ring_name() -> str:
    return f"rig-test-{uuid.uuid4().hex[:10]}"


def _t_of(index: int) -> int:
    return 1_000_000 + index * 1000 + 7


def _writer_proc(name: str, n: int, ready, go) -> None:
    """Child process: create the ring, then write n frames whose every pixel equals index % 256."""
    # Two slots and frames big enough that a copy takes ~0.1 ms: the writer laps readers often.
    w = FrameRingWriter(name, 320, 240, slots=2)
    ready.set()
    go.wait(10)
    frame = np.empty((240, 320, 3), np.uint8)
    for i in range(1, n + 1):
        frame.fill(i % 256)
        w.write(frame, _t_of(i), i)
    w.close(unlink=False)  # the parent unlinks after checking


def test_round_trip_in_one_process():
    name = _ring_name()
    with FrameRingWriter(name, W, H, slots=3) as w, FrameRingReader(name) as r:
        assert (r.width, r.height, r.slots) == (W, H, 3)
        assert r.read_latest() is None
        assert r.wait_newer(-1, timeout=0.01) is None
        img = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
        w.write(img, 123, 5)
        index, t, got = r.read_latest()
        assert (index, t) == (5, 123)
        np.testing.assert_array_equal(got, img)
        img[0, 0, 0] ^= 0xFF
        assert got[0, 0, 0] != img[0, 0, 0]  # the reader holds a copy, not a view
        assert r.wait_newer(5, timeout=0.01) is None
        w.write(img, 124, 7)
        assert r.wait_newer(5, timeout=0.01)[0] == 7
        assert r.write_count == 2 and not r.writer_closed
    with pytest.raises(FrameRingError, match="no frame ring named"):
        FrameRingReader(name)


def test_wrong_shape_is_refused():
    with FrameRingWriter(_ring_name(), W, H) as w, pytest.raises(FrameRingError, match="48x64x3 uint8"):
        w.write(np.zeros((H, W), np.uint8), 0, 0)


def test_concurrent_writer_process_and_reader_never_tears():
    name = _ring_name()
    ctx = mp.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    n = 10000
    child = ctx.Process(target=_writer_proc, args=(name, n, ready, go))
    child.start()
    try:
        assert ready.wait(30), "writer process did not start"
        reader = FrameRingReader(name)
        go.set()
        reads, last = 0, 0
        while True:
            got = reader.wait_newer(last, timeout=5)
            if got is None:
                break
            index, t, rgb = got
            assert index > last
            assert t == _t_of(index), "metadata from another frame than the pixels"
            value = index % 256
            assert rgb.min() == value and rgb.max() == value, f"torn frame {index}"
            last, reads = index, reads + 1
        assert reader.writer_closed
        assert last == n  # the final frame is always readable
        assert reads > 10
        reader.close()
    finally:
        child.join(10)
        try:
            from multiprocessing import shared_memory

            leftover = shared_memory.SharedMemory(name)
            leftover.close()
            leftover.unlink()
        except FileNotFoundError:
            pass
    assert child.exitcode == 0


def test_reader_process_exit_does_not_unlink_the_ring():
    name = _ring_name()
    with FrameRingWriter(name, W, H) as w:
        w.write(np.full((H, W, 3), 9, np.uint8), 1, 1)
        code = (
            "from drivers.cameras.shm import FrameRingReader\n"
            f"r = FrameRingReader({name!r})\n"
            "i, t, rgb = r.read_latest()\n"
            "assert (i, int(rgb[0, 0, 0])) == (1, 9)\n"
            # no close(): the interpreter exit must not take the segment with it either
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "leaked" not in done.stderr and "resource_tracker" not in done.stderr
        time.sleep(0.2)  # the child's resource tracker (if any) would have unlinked by now
        with FrameRingReader(name) as again:
            assert again.read_latest()[0] == 1
        w.write(np.full((H, W, 3), 10, np.uint8), 2, 2)


def test_stale_ring_is_replaced_live_one_refused():
    name = _ring_name()
    first = FrameRingWriter(name, W, H)
    try:
        # Same process counts as stale (a restarted world in one process); another live pid does not.
        second = FrameRingWriter(name, W * 2, H)
        with FrameRingReader(name) as r:
            assert r.width == W * 2
        code = (
            "import sys, time\n"
            "from drivers.cameras.shm import FrameRingWriter\n"
            f"w = FrameRingWriter({name!r}, 8, 8)\n"
            "print('up', flush=True)\n"
            "sys.stdin.readline()\n"
            "w.close()\n"
        )
        second.close()
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "up"
            with pytest.raises(FrameRingError, match=f"live writer \\(pid {proc.pid}\\)"):
                FrameRingWriter(name, W, H)
        finally:
            proc.stdin.write("\n")
            proc.stdin.flush()
            proc.wait(30)
        assert not os.path.exists(f"/dev/shm/{name}")
    finally:
        first.close(unlink=False)
