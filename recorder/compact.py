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

from pathlib import Path

import numpy as np

from recorder import layout
from recorder.errors import RecorderError

VIDEO_FILE = "video.mp4"


def camera_dir(episode_path: Path, cam: str) -> Path:
    return Path(episode_path) / layout.CAMERAS / cam


def is_compacted(episode_path: Path, cam: str) -> bool:
    d = camera_dir(episode_path, cam)
    return (d / VIDEO_FILE).exists() and not (d / layout.FRAMES / "zarr.json").exists()


def camera_frame_count(episode_path: Path, cam: str) -> int:
    """Frames a camera holds, in either form (for a video: its frame count, without decoding)."""
    if is_compacted(episode_path, cam):
        from recorder.video import probe

        return int(probe(camera_dir(episode_path, cam) / VIDEO_FILE).frames)
    import zarr

    return int(zarr.open_array(str(camera_dir(episode_path, cam) / layout.FRAMES), mode="r").shape[0])


def camera_frames(episode_path: Path, cam: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """RGB frames ``[start, stop)`` of a camera as (N, H, W, 3) uint8, JPEG or video alike."""
    if is_compacted(episode_path, cam):
        from recorder.video import read_frames

        return read_frames(camera_dir(episode_path, cam) / VIDEO_FILE, start, stop)
    import zarr

    from recorder.codec import decode_jpeg

    blobs = zarr.open_array(str(camera_dir(episode_path, cam) / layout.FRAMES), mode="r")[start:stop]
    if len(blobs) == 0:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack([decode_jpeg(b) for b in blobs])


def camera_jpeg(episode_path: Path, cam: str, start: int = 0, stop: int | None = None,
                quality: int = 95) -> list[bytes]:
    """JPEG bytes per frame; for a compacted camera the decoded video frames are re-encoded, so
    readers written for the JPEG form (replay, quick-train) keep working."""
    if not is_compacted(episode_path, cam):
        import zarr

        return list(zarr.open_array(str(camera_dir(episode_path, cam) / layout.FRAMES), mode="r")[start:stop])
    from recorder.codec import encode_jpeg

    return [encode_jpeg(f, quality) for f in camera_frames(episode_path, cam, start, stop)]


def _require_video():
    try:
        from recorder import video
    except ImportError as e:  # pragma: no cover - video.py and av ship with the recorder
        raise RecorderError("compaction needs recorder/video.py and PyAV (pip install av)") from e
    return video
