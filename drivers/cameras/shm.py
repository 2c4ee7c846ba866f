"""A shared-memory ring of RGB frames: one writer process publishes, any number of readers copy out.

The simulated world renders camera images in its own process and writes them here; ``SimCamera``
reads them back. Nothing is pickled: pixels are copied straight into the segment.

Layout (all integers little-endian int64, every block 64-byte aligned)::

    header  [magic, version, width, height, slots, write_count, writer_pid, writer_closed]
    slot i  [seq, index, t_host_ns, 0, 0, 0, 0, 0] + height*width*3 bytes of RGB

Each slot is guarded by a seqlock: the writer makes ``seq`` odd, writes, then makes it even
again; a reader copies the slot and keeps the copy only if ``seq`` was even and unchanged across
the copy. So a reader never returns a half-written (torn) frame and never blocks the writer.
The writer fills slots round-robin and bumps ``write_count`` after each frame; readers pick the
slot of the newest frame from it.

Readers attach without registering the segment with ``multiprocessing.resource_tracker``: on
Python 3.11 a registered segment is unlinked when the *reader* process exits, which would pull
the ring from under the writer (and print leak warnings).
"""

from __future__ import annotations

import mmap
import os
import time
from multiprocessing import shared_memory

import numpy as np

from drivers.errors import RigError

MAGIC = int.from_bytes(b"RIGFRAME", "little")
VERSION = 1
_HEADER_BYTES = 64
_SLOT_HEADER_BYTES = 64
# header field positions (int64 words)
_H_MAGIC, _H_VERSION, _H_WIDTH, _H_HEIGHT, _H_SLOTS, _H_COUNT, _H_PID, _H_CLOSED = range(8)
# slot header field positions
_S_SEQ, _S_INDEX, _S_T = range(3)
# How long wait_newer sleeps between looks at the write counter; a frame period is >= 16 ms.
_POLL_S = 0.0005


class FrameRingError(RigError):
    """A frame ring cannot be created or attached."""


def default_ring_name(camera: str) -> str:
    """The ring a simulated camera called ``camera`` reads unless its config names another."""
    return f"rig-sim-{camera}"


def _slot_bytes(width: int, height: int) -> int:
    pixels = width * height * 3
    return _SLOT_HEADER_BYTES + (pixels + 63) // 64 * 64


def _segment_bytes(width: int, height: int, slots: int) -> int:
    return _HEADER_BYTES + slots * _slot_bytes(width, height)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # a killed child stays a zombie until its parent reaps it: it counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class _Layout:
    """numpy views onto a mapped segment (header words, per-slot words and pixels)."""

    def __init__(self, buf, width: int, height: int, slots: int):
        self.header = np.ndarray((8,), dtype="<i8", buffer=buf, offset=0)
        step = _slot_bytes(width, height)
        self.slot_words = []
        self.slot_pixels = []
        for i in range(slots):
            base = _HEADER_BYTES + i * step
            self.slot_words.append(np.ndarray((8,), dtype="<i8", buffer=buf, offset=base))
            self.slot_pixels.append(
                np.ndarray((height, width, 3), dtype=np.uint8, buffer=buf, offset=base + _SLOT_HEADER_BYTES)
            )

    def release(self) -> None:
        # Views must go before the mmap can be closed (BufferError otherwise).
        self.header = None  # type: ignore[assignment]
        self.slot_words = []
        self.slot_pixels = []


class FrameRingWriter:
    """Creates the ring ``name`` and publishes HxWx3 uint8 frames into it."""

    def __init__(self, name: str, width: int, height: int, slots: int = 4):
        if width <= 0 or height <= 0 or slots < 2:
            raise FrameRingError(
                f"frame ring {name!r}: need width, height > 0 and slots >= 2, got {width}x{height}, {slots} slots"
            )
        self.name, self.width, self.height, self.slots = name, width, height, slots
        size = _segment_bytes(width, height, slots)
        try:
            self._shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        except FileExistsError:
            self._remove_stale(name)
            self._shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        self._layout = _Layout(self._shm.buf, width, height, slots)
        h = self._layout.header
        h[_H_WIDTH], h[_H_HEIGHT], h[_H_SLOTS] = width, height, slots
        h[_H_COUNT], h[_H_PID], h[_H_CLOSED] = 0, os.getpid(), 0
        h[_H_VERSION] = VERSION
        h[_H_MAGIC] = MAGIC  # last: a reader treats the ring as ready once the magic is there
        self._count = 0
        self._closed = False

    @staticmethod
    def _remove_stale(name: str) -> None:
        """A ring left by a crashed writer is removed; one whose writer still runs is refused."""
        try:
            probe = FrameRingReader(name)
        except FrameRingError:
            probe = None  # not a ring of ours or half-created: nothing live can be using it
        if probe is not None:
            pid, closed = probe.writer_pid, probe.writer_closed
            probe.close()
            if not closed and pid != os.getpid() and _pid_alive(pid):
                raise FrameRingError(
                    f"frame ring {name!r} already has a live writer (pid {pid}); stop that process "
                    "or give this camera another ring name"
                )
        old = shared_memory.SharedMemory(name=name)
        old.close()
        old.unlink()

    def write(self, rgb: np.ndarray, t_host_ns: int, index: int) -> None:
        """Copy one frame in. ``index`` is the frame counter (gaps mean dropped frames)."""
        if self._closed:
            raise FrameRingError(f"frame ring {self.name!r} is closed; create a new writer")
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise FrameRingError(
                f"frame ring {self.name!r} holds {self.height}x{self.width}x3 uint8 frames, "
                f"got {rgb.shape} {rgb.dtype}"
            )
        slot = self._count % self.slots
        words = self._layout.slot_words[slot]
        words[_S_SEQ] += 1  # odd: slot being written
        words[_S_INDEX] = index
        words[_S_T] = t_host_ns
        self._layout.slot_pixels[slot][...] = rgb
        words[_S_SEQ] += 1  # even: slot consistent again
        self._count += 1
        self._layout.header[_H_COUNT] = self._count

    def close(self, unlink: bool = True) -> None:
        """Mark the ring closed (readers see the writer is gone) and release it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._layout.header[_H_CLOSED] = 1
        self._layout.release()
        self._shm.close()
        if unlink:
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> FrameRingWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _attach_readonly(name: str) -> mmap.mmap:
    """Map an existing POSIX shared-memory segment read-only, without the resource tracker."""
    try:
        import _posixshmem  # type: ignore[import-not-found]  # the module SharedMemory itself uses on POSIX

        fd = _posixshmem.shm_open("/" + name, os.O_RDONLY, mode=0o600)
    except FileNotFoundError:
        raise FrameRingError(
            f"no frame ring named {name!r}; start the simulated world (the ring's writer) first, "
            "or check the camera's ring name"
        ) from None
    try:
        size = os.fstat(fd).st_size
        if size < _HEADER_BYTES:
            raise FrameRingError(f"shared memory {name!r} is not a rig frame ring (only {size} bytes)")
        return mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)


class FrameRingReader:
    """Attaches to an existing ring by name; geometry comes from the segment's header."""

    def __init__(self, name: str):
        self.name = name
        self._map = _attach_readonly(name)
        header = np.ndarray((8,), dtype="<i8", buffer=self._map, offset=0)
        magic, version = int(header[_H_MAGIC]), int(header[_H_VERSION])
        width, height, slots = (int(header[i]) for i in (_H_WIDTH, _H_HEIGHT, _H_SLOTS))
        del header
        if magic != MAGIC or version != VERSION:
            self._map.close()
            raise FrameRingError(
                f"shared memory {name!r} is not a version-{VERSION} rig frame ring "
                "(or its writer is still starting); check the ring name"
            )
        if len(self._map) < _segment_bytes(width, height, slots):
            self._map.close()
            raise FrameRingError(f"frame ring {name!r} is shorter than its header says; recreate it")
        self.width, self.height, self.slots = width, height, slots
        self._layout = _Layout(self._map, width, height, slots)
        self._closed = False

    @property
    def write_count(self) -> int:
        """Frames written so far (0 until the first)."""
        return int(self._layout.header[_H_COUNT])

    @property
    def writer_pid(self) -> int:
        return int(self._layout.header[_H_PID])

    @property
    def writer_closed(self) -> bool:
        """True once the writer called ``close()``: no frame will come any more."""
        return bool(self._layout.header[_H_CLOSED])

    @property
    def writer_alive(self) -> bool:
        """False once the writer closed the ring or its process is gone (e.g. it crashed)."""
        return not self.writer_closed and _pid_alive(self.writer_pid)

    def _read_slot(self, slot: int) -> tuple[int, int, np.ndarray] | None:
        words = self._layout.slot_words[slot]
        seq = int(words[_S_SEQ])
        if seq & 1:
            return None
        index, t_ns = int(words[_S_INDEX]), int(words[_S_T])
        rgb = self._layout.slot_pixels[slot].copy()
        if int(words[_S_SEQ]) != seq:
            return None  # the writer lapped us during the copy
        return index, t_ns, rgb

    def read_latest(self) -> tuple[int, int, np.ndarray] | None:
        """The newest complete frame as (index, t_host_ns, rgb copy), or None before the first."""
        while True:
            count = self.write_count
            if count == 0:
                return None
            got = self._read_slot((count - 1) % self.slots)
            if got is not None:
                return got
            # Torn: a newer frame is being written into this slot; the next look finds it.

    def wait_newer(self, index: int, timeout: float) -> tuple[int, int, np.ndarray] | None:
        """Wait up to ``timeout`` s for a frame whose index is greater than ``index``; None if none.

        Returns at once with None when the writer has closed the ring.
        """
        deadline = time.monotonic() + timeout
        seen = -1
        while True:
            count = self.write_count
            if count != seen:
                seen = count
                got = self.read_latest()
                if got is not None and got[0] > index:
                    return got
            if self.writer_closed or time.monotonic() >= deadline:
                return None
            time.sleep(_POLL_S)

    def close(self) -> None:
        """Detach (never unlinks: the ring belongs to the writer). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._layout.release()
        self._map.close()

    def __enter__(self) -> FrameRingReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
