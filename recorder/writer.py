"""EpisodeWriter: takes ticks and frames from the rig's threads and lands them in zarr.

The caller's side (``append``/``add_frame``) only copies a row into a preallocated block or
queues a frame for JPEG encoding; it never touches the disk and never blocks on the writer.
One writer thread turns full blocks into zarr chunks as soon as they fill and rewrites the
partial tail chunk every ``flush_interval_s`` so a crash loses at most that much.

Write order inside one flush is what makes recovery possible: data arrays first, ``t_ns``
last. After a crash, rows whose ``t_ns`` is set are complete in every array of the group.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from recorder import layout
from recorder.codec import DEFAULT_JPEG_QUALITY, encode_jpeg, jpeg_backend
from recorder.errors import DiskFullError, RecorderError, fs_error
from recorder.identity import active_writers, identity
from recorder.integrity import ARRAY_CONFIG, checksum_codecs
from recorder.layout import T_NS, Status
from recorder.repair import recover_episode_dir, remove_episode_dir

GROW_CHUNKS = 10  # arrays grow 10 chunks (~10 s) at a time while recording


@dataclass(frozen=True)
class WriterOptions:
    chunk_s: float = 1.0  # chunk length along time, in seconds of the stream's nominal rate
    flush_interval_s: float = 0.5  # the partial tail chunk is rewritten this often (= data at risk)
    poll_s: float = 0.02  # writer wake-up period
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    encoder_threads: int = 2  # JPEG encoders release the GIL, so threads use every core
    max_pending_s: float = 4.0  # per stream/camera backlog before new data is dropped (and counted)

    def __post_init__(self) -> None:
        if not 0 < self.flush_interval_s <= 1.0:
            raise RecorderError(
                f"flush_interval_s={self.flush_interval_s} must be in (0, 1] so at most 1 s is at risk"
            )


@dataclass
class _Stream:
    name: str
    fields: dict[str, tuple[tuple[int, ...], np.dtype]]
    chunk_len: int
    max_pending_blocks: int
    arrays: dict[str, zarr.Array]  # data fields first, t_ns last
    lock: threading.Lock = field(default_factory=threading.Lock)
    block: dict[str, np.ndarray] = field(default_factory=dict)
    n: int = 0
    block_start: int = 0
    full: deque = field(default_factory=deque)
    appended: int = 0
    dropped: int = 0
    rejected: int = 0
    written: int = 0

    def new_block(self) -> dict[str, np.ndarray]:
        blk = {k: np.zeros((self.chunk_len, *shape), dtype) for k, (shape, dtype) in self.fields.items()}
        blk[T_NS] = np.zeros(self.chunk_len, np.int64)
        return blk


@dataclass
class _Camera:
    name: str
    chunk_len: int
    max_pending: int
    arrays: dict[str, zarr.Array]  # frames, index, t_device_ns, t_ns (last)
    fps: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: deque = field(default_factory=deque)  # (index, t_host, t_dev, bytes | Future)
    rows: list = field(default_factory=list)  # ready rows from chunk_start on
    chunk_start: int = 0
    received: int = 0
    dropped: int = 0  # refused because the backlog was full
    rejected: int = 0  # arrived after stop or after a writer error
    encode_errors: int = 0
    written: int = 0
    shape: tuple[int, ...] | None = None
    encodings: set = field(default_factory=set)


def _new_array(
    grp: zarr.Group, name: str, chunks: tuple[int, ...], dtype: Any, fill: Any, compress: bool = True
) -> zarr.Array:
    """An empty array along time whose every chunk carries a CRC-32C (see recorder.integrity)."""
    kw: dict[str, Any] = {} if fill is None else {"fill_value": fill}
    return grp.create_array(
        name, shape=(0, *chunks[1:]), chunks=chunks, dtype=dtype, compressors=checksum_codecs(compress),
        config=ARRAY_CONFIG, **kw,
    )


def write_columns(
    arrays: Mapping[str, zarr.Array], start: int, data: Mapping[str, np.ndarray], grow: int = 0
) -> int:
    """Write rows [start, start+n) of every array, in the mapping's order (t_ns must be last).

    Arrays grow ``grow`` rows past what is needed so most flushes skip the metadata rewrite
    (~1 ms each in zarr-python 3); ``stop()`` trims them, and ``recover`` trims by ``t_ns``.
    """
    n = len(data[T_NS])
    end = start + n
    for name, arr in arrays.items():
        if arr.shape[0] < end:
            arr.resize((end + grow, *arr.shape[1:]))
        arr[start:end] = data[name]
    return end


def trim_columns(arrays: Mapping[str, zarr.Array], length: int) -> None:
    for arr in arrays.values():
        if arr.shape[0] != length:
            arr.resize((length, *arr.shape[1:]))


class EpisodeWriter:
    """Records one episode. Made by ``Dataset.new_episode``; declare streams and cameras,
    then ``start()``, feed it, and ``stop()``. Use as a context manager to stop on exit.
    """

    def __init__(
        self,
        path: Path,
        index: int,
        group: zarr.Group,
        options: WriterOptions,
        on_error: Callable[[RecorderError], None] | None = None,
    ) -> None:
        self.path = path
        self.index = index
        self.options = options
        self._group = group
        self._streams: dict[str, _Stream] = {}
        self._cameras: dict[str, _Camera] = {}
        self._accepting = False
        self._started = False
        self._stopped = False
        self._error: RecorderError | None = None
        self._abandoned = False
        self._on_error = on_error
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._stop_evt = threading.Event()
        self._wake = threading.Event()
        self.start_ns = 0
        self.stop_ns = 0
        self.flushes = 0
        self.flush_seconds = 0.0  # writer-thread time spent writing (cost of crash safety)
        active_writers[str(path)] = self

    # ---- declaration -------------------------------------------------------------------------
    def add_stream(
        self,
        name: str,
        fields: Mapping[str, tuple[tuple[int, ...] | int, str | np.dtype]],
        rate_hz: float = 50.0,
    ) -> None:
        """Declare a stream: ``{"leader_q": ((14,), "f4"), "tick": ((), "i8")}`` at ``rate_hz``."""
        self._check_not_started("add_stream")
        if name in self._streams or T_NS in fields:
            raise RecorderError(f"stream {name!r} is declared twice or names a field 't_ns' (reserved)")
        spec: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for fname, (shape, dtype) in fields.items():
            shp = (shape,) if isinstance(shape, int) else tuple(shape)
            spec[fname] = (shp, np.dtype(dtype))
        chunk_len = max(1, round(rate_hz * self.options.chunk_s))
        arrays: dict[str, zarr.Array] = {}
        try:
            grp = self._group.require_group(layout.STREAMS).create_group(name)
            grp.update_attributes(
                {"rate_hz": float(rate_hz), "fields": {k: [list(s), d.str] for k, (s, d) in spec.items()}}
            )
            for fname, (shp, dt) in spec.items():
                arrays[fname] = _new_array(grp, fname, (chunk_len, *shp), dt, 0)
            arrays[T_NS] = _new_array(grp, T_NS, (chunk_len,), "i8", 0)
        except OSError as e:
            raise self._abandon(e, f"declaring stream {name!r}") from None
        pending = max(2, int(np.ceil(self.options.max_pending_s / self.options.chunk_s)))
        st = _Stream(name, spec, chunk_len, pending, arrays)
        st.block = st.new_block()
        self._streams[name] = st

    def add_camera(self, name: str, fps: float = 30.0) -> None:
        """Declare a camera; its frames are stored as JPEG (rgb8 is encoded, jpeg kept as is)."""
        self._check_not_started("add_camera")
        if name in self._cameras:
            raise RecorderError(f"camera {name!r} is declared twice")
        chunk_len = max(1, round(fps * self.options.chunk_s))
        try:
            grp = self._group.require_group(layout.CAMERAS).create_group(name)
            grp.update_attributes({"fps": float(fps), "encoding": "jpeg"})
            # variable-length bytes, one JPEG file per element; no compressor (JPEG does not shrink)
            arrays = {
                layout.FRAMES: _new_array(grp, layout.FRAMES, (chunk_len,), "bytes", None, compress=False),
                layout.INDEX: _new_array(grp, layout.INDEX, (chunk_len,), "i8", -1),
                layout.T_DEVICE_NS: _new_array(grp, layout.T_DEVICE_NS, (chunk_len,), "i8", -1),
                T_NS: _new_array(grp, T_NS, (chunk_len,), "i8", 0),
            }
        except OSError as e:
            raise self._abandon(e, f"declaring camera {name!r}") from None
        pending = max(4, int(fps * self.options.max_pending_s))
        self._cameras[name] = _Camera(name, chunk_len, pending, arrays, float(fps))

    def _abandon(self, e: OSError, doing: str) -> RecorderError:
        """A write failed before any data was taken: remove the empty episode, so a full or
        read-only disk leaves no phantom ``recording`` episode behind (nothing is lost)."""
        self._abandoned = True
        active_writers.pop(str(self.path), None)
        remove_episode_dir(self.path)
        return fs_error(e, f"{doing} of episode {self.index}", self.path.parent.parent)

    def _check_not_started(self, what: str) -> None:
        if self._abandoned:
            raise RecorderError(f"episode {self.index} was abandoned after a write failed; make a new episode")
        if self._started:
            raise RecorderError(
                f"{what}() must be called before start(); declare every stream and camera first"
            )

    # ---- life cycle --------------------------------------------------------------------------
    def start(self) -> EpisodeWriter:
        if self._started:
            raise RecorderError(f"episode {self.index} was already started; make a new episode per take")
        self._check_not_started("start")
        self.start_ns = time.monotonic_ns()
        try:
            self._group.update_attributes(
                {
                    "status": Status.RECORDING.value,
                    "start_wall": datetime.now(UTC).isoformat(),
                    "start_monotonic_ns": self.start_ns,
                    "writer": identity(),
                }
            )
        except OSError as e:
            raise self._abandon(e, "starting") from None
        self._started = True
        if self._cameras:
            self._pool = ThreadPoolExecutor(
                max_workers=max(1, self.options.encoder_threads), thread_name_prefix="rig-jpeg"
            )
        self._thread = threading.Thread(target=self._run, name=f"rig-episode-{self.index}", daemon=True)
        self._accepting = True
        self._thread.start()
        return self

    def __enter__(self) -> EpisodeWriter:
        if not self._started:
            self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._stopped:
            return
        if exc is None:
            self.stop()
        else:  # keep what was recorded, but do not call it complete
            with contextlib.suppress(RecorderError):
                self.stop(status=Status.RECOVERED, note=f"recording ended by {exc_type.__name__}: {exc}")

    @property
    def error(self) -> RecorderError | None:
        """Set (from the writer thread) when recording stopped on its own, e.g. a full disk."""
        return self._error

    @property
    def recording(self) -> bool:
        return self._accepting

    # ---- hot path: called from the control loop and camera threads --------------------------
    def append(self, stream: str, t_ns: int, **values: Any) -> bool:
        """Add one row to ``stream``. O(1), no disk I/O; returns False if it was not kept."""
        st = self._streams.get(stream)
        if st is None:
            raise RecorderError(f"unknown stream {stream!r}: declare it with add_stream() before start()")
        if not self._accepting:
            st.rejected += 1
            return False
        with st.lock:
            i = st.n
            blk = st.block
            try:
                for k, v in values.items():
                    blk[k][i] = v
            except (KeyError, ValueError) as e:
                raise RecorderError(
                    f"stream {stream!r} cannot take {e}; fields are {sorted(st.fields)} with their declared shapes"
                ) from None
            blk[T_NS][i] = t_ns
            i += 1
            if i == st.chunk_len:
                if len(st.full) < st.max_pending_blocks:
                    st.full.append((st.block_start, i, blk))
                    st.block_start += i
                    st.block = st.new_block()
                else:  # the writer is far behind: reuse this block and count its rows as lost
                    st.dropped += i
                i = 0
            st.n = i
            st.appended += 1
        if i == 0:
            self._wake.set()
        return True

    def add_frame(self, frame: Any) -> bool:
        """Queue a ``drivers.cameras.frame.Frame``; returns False if it was dropped (counted)."""
        cam = self._cameras.get(frame.camera)
        if cam is None:
            raise RecorderError(
                f"unknown camera {frame.camera!r}: declare it with add_camera() before start()"
            )
        if not self._accepting:
            cam.rejected += 1
            return False
        with cam.lock:
            if len(cam.pending) >= cam.max_pending:
                cam.dropped += 1
                return False
            if frame.encoding == "jpeg":
                payload: bytes | Future = np.asarray(frame.data, dtype=np.uint8).tobytes()
            elif frame.encoding == "rgb8":
                if cam.shape is None:
                    cam.shape = tuple(int(s) for s in frame.data.shape)
                assert self._pool is not None
                payload = self._pool.submit(encode_jpeg, frame.data, self.options.jpeg_quality)
            else:
                raise RecorderError(
                    f"camera {frame.camera!r} sent encoding {frame.encoding!r}; the recorder takes 'rgb8' or 'jpeg'"
                )
            cam.encodings.add(frame.encoding)
            t_dev = -1 if frame.t_device_ns is None else int(frame.t_device_ns)
            cam.pending.append((int(frame.index), int(frame.t_host_ns), t_dev, payload))
            cam.received += 1
        return True

    # ---- writer thread -----------------------------------------------------------------------
    def _run(self) -> None:
        next_partial = time.monotonic() + self.options.flush_interval_s
        while True:
            stopping = self._stop_evt.is_set()
            now = time.monotonic()
            partial = stopping or now >= next_partial
            t0 = time.perf_counter()
            try:
                self._flush(partial=partial, final=stopping)
            except Exception as e:  # never let the writer die silently; stop and report
                self._fail(e)
                return
            self.flush_seconds += time.perf_counter() - t0
            if partial:
                self.flushes += 1
                next_partial = now + self.options.flush_interval_s
            if stopping:
                return
            self._wake.wait(self.options.poll_s)
            self._wake.clear()

    def _fail(self, e: BaseException) -> None:
        self._accepting = False
        self._error = self._as_error(e)
        if self._on_error is not None:
            with contextlib.suppress(Exception):
                self._on_error(self._error)

    def _as_error(self, e: BaseException) -> RecorderError:
        if isinstance(e, OSError) and e.errno not in (errno.ENOSPC, None):
            err0 = fs_error(e, f"recording episode {self.index} (data flushed before this point is kept)",
                            self.path)
            err0.__cause__ = e
            return err0
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            err: RecorderError = DiskFullError(
                f"disk full while recording episode {self.index} in {self.path.parent.parent}: recording "
                f"stopped, data flushed before this point is kept. Free space (or record to another disk) "
                f"and start a new episode."
            )
        elif isinstance(e, RecorderError):
            err = e
        else:
            err = RecorderError(
                f"writing episode {self.index} failed ({type(e).__name__}: {e}); recording stopped, data "
                f"flushed before this point is kept. Check the disk at {self.path}."
            )
        if err is not e:
            err.__cause__ = e
        return err

    def _flush(self, partial: bool, final: bool) -> None:
        for st in self._streams.values():
            self._flush_stream(st, partial)
        for cam in self._cameras.values():
            self._flush_camera(cam, partial, final)

    def _flush_stream(self, st: _Stream, partial: bool) -> None:
        with st.lock:
            segs = list(st.full)
            st.full.clear()
            if partial and st.n:
                segs.append((st.block_start, st.n, {k: v[: st.n].copy() for k, v in st.block.items()}))
        if not segs:
            return
        start = segs[0][0]
        if len(segs) == 1:
            data = {k: v[: segs[0][1]] for k, v in segs[0][2].items()}
        else:
            data = {k: np.concatenate([s[2][k][: s[1]] for s in segs]) for k in st.arrays}
        st.written = write_columns(st.arrays, start, data, grow=st.chunk_len * GROW_CHUNKS)

    def _flush_camera(self, cam: _Camera, partial: bool, final: bool) -> None:
        while True:  # move encoded frames, in arrival order, from the backlog to the chunk rows
            with cam.lock:
                if not cam.pending:
                    break
                idx, t_host, t_dev, payload = cam.pending[0]
            if isinstance(payload, Future):
                if not final and not payload.done():
                    break
                try:
                    payload = payload.result()
                except Exception:
                    payload = None
            with cam.lock:
                cam.pending.popleft()
            if payload is None:
                cam.encode_errors += 1
                continue
            cam.rows.append((idx, t_host, t_dev, payload))
        n_full = len(cam.rows) // cam.chunk_len * cam.chunk_len
        if n_full:
            self._write_camera_rows(cam, cam.rows[:n_full])
            del cam.rows[:n_full]
            cam.chunk_start += n_full
        if partial and cam.rows:
            self._write_camera_rows(cam, cam.rows)

    @staticmethod
    def _write_camera_rows(cam: _Camera, rows: list) -> None:
        frames = np.empty(len(rows), dtype=object)
        frames[:] = [r[3] for r in rows]
        data = {
            layout.FRAMES: frames,
            layout.INDEX: np.fromiter((r[0] for r in rows), np.int64, len(rows)),
            layout.T_DEVICE_NS: np.fromiter((r[2] for r in rows), np.int64, len(rows)),
            T_NS: np.fromiter((r[1] for r in rows), np.int64, len(rows)),
        }
        cam.written = write_columns(cam.arrays, cam.chunk_start, data, grow=cam.chunk_len * GROW_CHUNKS)

    # ---- ending ------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            "streams": {
                n: {
                    "appended": s.appended,
                    "written": s.written,
                    "dropped": s.dropped,
                    "rejected": s.rejected,
                }
                for n, s in self._streams.items()
            },
            "cameras": {
                n: {
                    "received": c.received,
                    "written": c.written,
                    "dropped": c.dropped,
                    "rejected": c.rejected,
                    "encode_errors": c.encode_errors,
                }
                for n, c in self._cameras.items()
            },
            "flushes": self.flushes,
            "flush_seconds": round(self.flush_seconds, 4),
        }

    def stop(
        self,
        success: bool | None = None,
        status: Status | str = Status.COMPLETE,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Flush everything, mark the episode ``status`` and return its stats.

        Raises the writer's RecorderError (e.g. DiskFullError) if recording had stopped on its
        own; the data flushed before the failure stays on disk, trimmed to a consistent length.
        """
        if self._stopped:
            raise RecorderError(f"episode {self.index} was already stopped")
        if not self._started:
            raise RecorderError(f"episode {self.index} was never started; call start() first")
        self._stopped = True
        self._accepting = False
        self.stop_ns = time.monotonic_ns()
        self._stop_evt.set()
        self._wake.set()
        assert self._thread is not None
        self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        active_writers.pop(str(self.path), None)
        stats = self.stats()
        if self._error is not None:
            with contextlib.suppress(Exception):  # the disk may still be full; recover() later
                recover_episode_dir(self.path, note=str(self._error), index=self.index)
            raise self._error
        try:  # the disk can fill up right here too: report it the same way
            for st in self._streams.values():
                trim_columns(st.arrays, st.written)
            for cam in self._cameras.values():
                trim_columns(cam.arrays, cam.written)
            status = Status(status)
            attrs: dict[str, Any] = {
                "status": status.value,
                "success": success,
                "stop_monotonic_ns": self.stop_ns,
                "duration_s": (self.stop_ns - self.start_ns) / 1e9,
                "counts": {
                    "streams": {n: s.written for n, s in self._streams.items()},
                    "cameras": {n: c.written for n, c in self._cameras.items()},
                },
                "writer_stats": stats,
                "jpeg_backend": jpeg_backend(),
            }
            if note:
                attrs["note"] = note
            for cam in self._cameras.values():
                cam_attrs: dict[str, Any] = {"source_encodings": sorted(cam.encodings)}
                if cam.shape is not None:
                    cam_attrs["shape"] = list(cam.shape)
                self._group[f"{layout.CAMERAS}/{cam.name}"].update_attributes(cam_attrs)
            self._group.update_attributes(attrs)
        except OSError as e:
            raise self._as_error(e) from e
        return stats

    def discard(self) -> None:
        """Stop and mark the episode discarded (its data stays until ``Dataset.discard(delete=True)``)."""
        self.stop(status=Status.DISCARDED)
