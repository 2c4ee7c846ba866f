"""Recorder: episodes of ticks and camera frames on one monotonic clock, in zarr v3.

Writes without blocking the control loop, survives kill -9 with at most ``flush_interval_s``
of data lost, checksums every chunk and verifies every read (docs/data-integrity.md), reads back for replay, aligns frames to ticks and exports ACT/ALOHA HDF5.
Depends on ``drivers`` only (Frame, RigError); never on ``rig``.
"""

from recorder.align import Alignment, align_frames_to_ticks
from recorder.dataset import Dataset, Episode, EpisodeInfo
from recorder.errors import (
    DatasetLockedError,
    DiskFullError,
    EpisodeNotFoundError,
    ReadOnlyDatasetError,
    RecorderError,
)
from recorder.integrity import Damage, DamagedDatasetError, DamagedEpisodeError
from recorder.layout import Status
from recorder.writer import EpisodeWriter, WriterOptions


def register_codecs() -> None:
    """Nothing to register: frames are variable-length bytes holding plain JPEG files, readable
    with zarr-python 3.1+ alone. Kept so readers written for codec-based layouts have one call."""


__all__ = [
    "Alignment",
    "Damage",
    "DamagedDatasetError",
    "DamagedEpisodeError",
    "Dataset",
    "DatasetLockedError",
    "DiskFullError",
    "Episode",
    "EpisodeInfo",
    "EpisodeNotFoundError",
    "EpisodeWriter",
    "ReadOnlyDatasetError",
    "RecorderError",
    "Status",
    "WriterOptions",
    "align_frames_to_ticks",
    "register_codecs",
]
