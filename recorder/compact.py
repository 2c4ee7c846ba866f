"""Compaction: a kept episode's JPEG camera frames transcoded to video, and reading either form.

A camera in its recorded form holds ``cameras/<cam>/frames`` (one JPEG per element). Compacted,
that array is gone and the frames live in ``cameras/<cam>/video.mp4`` (a plain MP4 file beside
the camera's zarr arrays, written by recorder/video.py: AV1 or H.264, yuv420p, GOP <= 1 s), frame
``i`` of the video being row ``i`` of the camera. ``t_ns``, ``t_device_ns`` and ``index`` stay as
they were: per-frame host times, device stamps and driver counters are never re-derived from a
frame rate. The camera's attrs say ``encoding = "video"`` and keep the encoder settings and the
PSNR measured against the JPEG originals.

``camera_frames`` is the one reader of both forms; ``Episode.read_frames``/``read_frame``/
``read_jpeg`` go through it for a compacted camera, so replay, inspect, export and quick-train
read both forms without knowing which.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recorder import layout
from recorder.errors import RecorderError
from recorder.frames import (  # noqa: F401
    VIDEO_FILE,
    camera_dir,
    camera_frame_count,
    camera_frames,
    camera_jpeg,
    is_compacted,
)

DECODE_CHUNK = 32  # JPEG frames read and decoded at a time (bounded memory at any episode length)


# ---- compaction --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CompactOptions:
    codec: str = "auto"  # "auto" (AV1 where PyAV has SVT-AV1, else H.264), "av1" or "h264"
    # None: 38 for AV1, 22 for H.264 -- on the simulated rig's rendered frames both are >= 8x smaller
    # than the stored JPEGs at >= 38 dB (benchmarks/bench_fleet.py); AV1 38 is also smaller than
    # LeRobot's default (AV1 crf 30) on noisy camera frames
    crf: int | None = None
    preset: int | str | None = None  # None: 10 for SVT-AV1, "veryfast" for x264
    gop_s: float = 1.0  # a keyframe at least this often (never more than 1 s)
    threads: int = 1  # encoder threads: compaction is background work, one core by default
    min_psnr_db: float = 25.0  # a frame decoded back worse than this vs its JPEG (a broken decode) keeps the JPEGs

    def video_options(self, codec: str, fps: float):
        from recorder.video import AV1, VideoOptions

        crf = self.crf if self.crf is not None else (38 if codec == AV1 else 22)
        preset = self.preset if self.preset is not None else (10 if codec == AV1 else "veryfast")
        gop = max(1, int(round(min(self.gop_s, 1.0) * fps)))
        return VideoOptions(codec=codec, crf=crf, preset=preset, gop=gop, threads=self.threads)


@dataclass
class CameraCompaction:
    camera: str
    frames: int
    jpeg_bytes: int
    video_bytes: int
    psnr_db_mean: float
    psnr_db_min: float
    seconds: float
    cpu_seconds: float
    codec: str

    @property
    def ratio(self) -> float:
        return self.jpeg_bytes / self.video_bytes if self.video_bytes else float("inf")


@dataclass
class CompactReport:
    episode: Path
    cameras: list[CameraCompaction] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _jpeg_chunks(frames_array, n: int) -> Iterator[tuple[int, list[bytes]]]:
    for lo in range(0, n, DECODE_CHUNK):
        yield lo, list(frames_array[lo:min(n, lo + DECODE_CHUNK)])


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def compact_camera(episode_path: Path, cam: str, options: CompactOptions | None = None,
                   wait_while: Callable[[], bool] | None = None) -> CameraCompaction:
    """Transcode one camera's JPEG frames to video, check it frame for frame, then drop the JPEGs.

    The video appears under its final name only once finished (video.py writes .partial, then
    renames); the camera's attrs switch to ``video`` next; the JPEG array is deleted last. A crash
    anywhere leaves the JPEG form whole (a leftover video is overwritten by the next run).
    ``wait_while()`` is asked between chunks: while it is true (a take is being recorded) the
    work waits.
    """
    import zarr

    from recorder.codec import decode_jpeg
    from recorder.video import VideoWriter, iter_frames, pick_codec, psnr

    opts = options or CompactOptions()
    d = camera_dir(episode_path, cam)
    grp = zarr.open_group(str(d), mode="r+")
    if layout.FRAMES not in grp:
        raise RecorderError(f"camera {cam} of {episode_path} is already compacted")
    frames = grp[layout.FRAMES]
    n = int(frames.shape[0])
    if n == 0:
        raise RecorderError(f"camera {cam} of {episode_path} has no frames to compact")
    fps = float(grp.attrs.get("fps") or 30.0)
    codec = pick_codec(opts.codec)
    vopts = opts.video_options(codec, fps)
    first = decode_jpeg(frames[0:1][0])
    h, w = first.shape[:2]
    if h % 2 or w % 2:
        raise RecorderError(f"camera {cam}: {w}x{h} frames cannot be stored as yuv420p video (odd size)")
    t0, c0 = time.perf_counter(), time.process_time()
    out = d / VIDEO_FILE
    with VideoWriter(out, fps, w, h, vopts) as vw:
        for _, blobs in _jpeg_chunks(frames, n):
            while wait_while is not None and wait_while():
                time.sleep(0.2)
            for b in blobs:
                vw.write(decode_jpeg(b))
    # decode it back and compare frame for frame with the JPEG originals
    scores: list[float] = []
    video = iter_frames(out)
    for lo, blobs in _jpeg_chunks(frames, n):
        while wait_while is not None and wait_while():
            time.sleep(0.2)
        for k, b in enumerate(blobs):
            got = next(video, None)
            if got is None or got[0] != lo + k:
                out.unlink(missing_ok=True)
                raise RecorderError(f"camera {cam}: the video decoded back {lo + k} of {n} frames; JPEGs kept")
            ref = decode_jpeg(b)
            if got[1].shape != ref.shape:
                out.unlink(missing_ok=True)
                raise RecorderError(f"camera {cam}: frame {lo + k} decoded as {got[1].shape}, not {ref.shape}")
            scores.append(min(psnr(got[1], ref), 99.0))
    if next(video, None) is not None:
        out.unlink(missing_ok=True)
        raise RecorderError(f"camera {cam}: the video holds more than the {n} recorded frames; JPEGs kept")
    worst = float(min(scores))
    if worst < opts.min_psnr_db:
        out.unlink(missing_ok=True)
        raise RecorderError(f"camera {cam}: a frame decoded back at {worst:.1f} dB PSNR, under "
                            f"{opts.min_psnr_db:.0f} dB; JPEGs kept (lower --crf)")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    jpeg_bytes = _dir_bytes(d / layout.FRAMES)
    result = CameraCompaction(cam, n, jpeg_bytes, out.stat().st_size, float(np.mean(scores)), worst, seconds, cpu,
                              codec)
    grp.update_attributes({"encoding": "video", "video": {
        "file": VIDEO_FILE, "codec": codec, "crf": vopts.crf, "preset": vopts.preset, "gop": vopts.gop,
        "pix_fmt": "yuv420p", "frames": n, "bytes": result.video_bytes, "jpeg_bytes": jpeg_bytes,
        "psnr_db_mean": round(result.psnr_db_mean, 2), "psnr_db_min": round(worst, 2)}})
    shutil.rmtree(d / layout.FRAMES)  # only now: the video decoded back frame for frame
    return result


def compact_episode(episode_path: Path, options: CompactOptions | None = None,
                    wait_while: Callable[[], bool] | None = None) -> CompactReport:
    """Compact every JPEG camera of a kept (complete) episode; never one being recorded."""
    import zarr

    episode_path = Path(episode_path)
    g = zarr.open_group(str(episode_path), mode="r+")
    status = g.attrs.get("status")
    if status != "complete":
        raise RecorderError(f"{episode_path} is {status!r}; only kept (complete) episodes are compacted")
    rep = CompactReport(episode_path)
    cams = sorted(n for n, _ in g[layout.CAMERAS].groups()) if layout.CAMERAS in g else []
    for cam in cams:
        if is_compacted(episode_path, cam):
            continue
        try:
            rep.cameras.append(compact_camera(episode_path, cam, options, wait_while))
        except RecorderError as e:
            rep.skipped.append(str(e))
    if not rep.skipped and cams:
        g.update_attributes({"compacted": True})
    return rep


def recording_in_progress(dataset: Path) -> bool:
    """True while a take of this dataset is being recorded (its writer alive, on this machine)."""
    import zarr

    from recorder.dataset import Dataset
    from recorder.identity import writer_alive

    ds = Dataset(dataset)
    for i in ds.indices()[-2:]:  # a take being recorded is the newest episode (two: one just begun)
        path = layout.episode_path(ds.path, i)
        try:
            attrs = dict(zarr.open_group(str(path), mode="r").attrs)
        except Exception:
            continue  # unreadable metadata: not a take being recorded by a live writer
        if attrs.get("status") == "recording" and writer_alive(attrs, path):
            return True
    return False


def compact_dataset(dataset: Path, options: CompactOptions | None = None,
                    wait_while: Callable[[], bool] | None = None,
                    log: Callable[[str], None] = print, skip: set[int] | None = None) -> list[CompactReport]:
    """Compact every kept episode of a dataset that still holds JPEG frames.

    By default the work waits, between chunks of 32 frames, while a take of the same dataset is
    being recorded: compaction never competes with a recording for the CPU or the disk.
    """
    from recorder.dataset import Dataset

    ds = Dataset(dataset)
    if wait_while is None:
        def wait_while() -> bool:
            return recording_in_progress(ds.path)
    out = []
    for info in ds.episodes():
        if info.status != "complete" or (skip is not None and info.index in skip):
            continue
        ep = ds.episode(info.index)
        if ep.attrs.get("compacted"):
            continue
        while wait_while():
            time.sleep(0.2)
        rep = compact_episode(ep.path, options, wait_while)
        for c in rep.cameras:
            log(f"episode {info.index} camera {c.camera}: {c.frames} frames, {c.jpeg_bytes / 1e6:.1f} MB JPEG -> "
                f"{c.video_bytes / 1e6:.2f} MB {c.codec} ({c.ratio:.1f}x), PSNR {c.psnr_db_mean:.1f} dB "
                f"(min {c.psnr_db_min:.1f}), {c.cpu_seconds / max(c.frames, 1) * 1e3:.1f} ms CPU a frame")
        for s in rep.skipped:
            log(f"episode {info.index}: {s}")
        if rep.skipped and skip is not None:
            skip.add(info.index)  # watching: do not retry it every scan
        out.append(rep)
    return out


def watch_dataset(dataset: Path, options: CompactOptions | None = None, every_s: float = 10.0,
                  stop: Callable[[], bool] = lambda: False, log: Callable[[str], None] = print) -> None:
    """Keep compacting: each kept take is compacted after it is kept, never while one is recorded."""
    failed: set[int] = set()
    while not stop():
        compact_dataset(dataset, options, log=log, skip=failed)
        end = time.monotonic() + every_s
        while time.monotonic() < end and not stop():
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    """``python -m recorder.compact DATASET``: what ``rig fleet compact DATASET`` does, with its
    defaults, on a machine with the recorder but not the rest of rig (options belong to rig's
    command line). Bad input: one line, exit status 2."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m recorder.compact DATASET (options: `rig fleet compact --help`)", file=sys.stderr)
        return 2
    try:
        reports = compact_dataset(Path(args[0]))
    except RecorderError as exc:
        print(f"recorder.compact: {exc}", file=sys.stderr)
        return 2
    skipped = sum(len(r.skipped) for r in reports)
    print(f"{sum(len(r.cameras) for r in reports)} camera(s) of {len(reports)} episode(s) compacted"
          + (f"; {skipped} kept as JPEG (see above)" if skipped else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["CompactOptions", "CompactReport", "camera_frame_count", "camera_frames",
           "camera_jpeg", "compact_dataset", "compact_episode", "is_compacted", "recording_in_progress",
           "watch_dataset"]
