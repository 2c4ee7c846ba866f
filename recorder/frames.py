"""A camera's frames in either stored form: JPEG blobs in a zarr array, or a video compacted from
them (recorder/compact.py). Readers (the Episode, replay, inspect, export, quick-train) go through
here, so both forms read alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recorder import layout

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
        import zarr

        from recorder.video import read_frames

        n = int(zarr.open_array(str(camera_dir(episode_path, cam) / layout.T_NS), mode="r").shape[0])
        start, stop, _ = slice(start, stop).indices(n)  # the JPEG form's slicing rules
        if stop <= start:
            return np.zeros((0, 0, 0, 3), np.uint8)
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
