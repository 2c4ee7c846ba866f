"""Names and small helpers shared by the writer and the reader: the on-disk layout in code.

DATASET/                         zarr v3 group, attrs["rig_dataset"] = {"format", "version"}
  episodes/NNNNNN/               one group per episode; attrs hold the episode metadata
    streams/<stream>/<field>     (T, *shape) numeric, chunked along time
    streams/<stream>/t_ns        (T,) int64 host monotonic ns
    cameras/<cam>/frames         (N,) variable-length bytes, one JPEG per element
    cameras/<cam>/t_ns           (N,) int64 host monotonic ns
    cameras/<cam>/t_device_ns    (N,) int64 camera clock ns, -1 where the camera has none
    cameras/<cam>/index          (N,) int64 driver frame counter (gaps = drops)
  .rig-writer.lock               the recorder's lock (recorder.lock): who records here now

Every array's codec chain ends in zarr v3's ``crc32c`` and every chunk is stored, even an
all-fill one (recorder.integrity); episode attrs["checksum"] = "crc32c" says so for listing.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

try:
    from zarr.core.dtype.common import UnstableSpecificationWarning
except ImportError:  # pragma: no cover - other zarr 3 minor versions
    UnstableSpecificationWarning = UserWarning  # type: ignore[misc,assignment]

# zarr-python marks variable-length bytes as "no v3 spec yet"; the layout is documented and
# readable by zarr-python 3.1+, so only that one warning is silenced, nothing else.
warnings.filterwarnings("ignore", message=r".*VariableLengthBytes.*", category=UnstableSpecificationWarning)

FORMAT_NAME = "rig-episodes"
FORMAT_VERSION = 1
EPISODES = "episodes"
STREAMS = "streams"
CAMERAS = "cameras"
T_NS = "t_ns"
FRAMES = "frames"
T_DEVICE_NS = "t_device_ns"
INDEX = "index"
EPISODE_NAME_WIDTH = 6

# Conventional tick-stream fields that `inspect` understands when a stream has them.
TICK_FIELD = "tick"
DEADLINE_FIELDS = ("t_deadline_ns", "deadline_ns")  # when the tick was due to start
END_FIELD = "t_end_ns"  # when the tick's work finished


class Status(enum.StrEnum):
    RECORDING = "recording"
    COMPLETE = "complete"
    DISCARDED = "discarded"
    RECOVERED = "recovered"


STATUSES = tuple(s.value for s in Status)


def episode_name(index: int) -> str:
    return f"{index:0{EPISODE_NAME_WIDTH}d}"


def episode_path(root: Path, index: int) -> Path:
    return root / EPISODES / episode_name(index)


def jsonable(value: Any) -> Any:
    """Turn configs and calibrations (dataclasses, numpy, paths, tuples) into JSON attrs."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no nan/inf
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)
