"""Build a camera from one ``[[cameras]]`` table of the rig config.

Example (TOML)::

    [[cameras]]
    name = "high"
    kind = "opencv"            # opencv | realsense | sim | synthetic
    device = "/dev/v4l/by-id/usb-HD_USB_Camera_SN1-video-index0"
    width = 640
    height = 480
    fps = 30
    fourcc = "MJPG"
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from drivers.cameras.base import Camera
from drivers.errors import RigError

KINDS = ("opencv", "realsense", "sim", "synthetic")


class CameraConfigError(RigError):
    """A camera table in the config is wrong."""


@dataclass(frozen=True, slots=True)
class CameraSpec:
    name: str
    kind: str
    device: str | int | None = None  # opencv: /dev/v4l/by-id/... link, /dev/videoN, index, or a video file
    serial: str | None = None  # realsense: serial number
    width: int = 640
    height: int = 480
    fps: float = 30.0
    fourcc: str = "MJPG"  # opencv: MJPG frames are stored as the camera's own JPEG bytes
    depth: bool = False  # realsense: also capture depth (millimetres, Frame.depth)
    ring: str | None = None  # sim: shared-memory ring name (default rig-sim-<name>)
    delay_s: float = 0.0  # sim: extra camera latency, for latency-calibration tests
    jpeg: bool = False  # synthetic: deliver pre-encoded JPEG bytes
    freeze_periods: int = 10  # fault when no frame came for this many frame periods
    options: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for the kind's class

    @classmethod
    def from_dict(cls, table: dict[str, Any]) -> CameraSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        label = table.get("name", "?")
        unknown = sorted(set(table) - known)
        if unknown:
            raise CameraConfigError(
                f"camera {label!r}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}"
            )
        for key in ("name", "kind"):
            if not table.get(key):
                raise CameraConfigError(f"camera table {table!r} needs a {key!r}")
        return cls(**table)


def open_camera(spec: dict[str, Any] | CameraSpec) -> Camera:
    """The camera a config table describes, not yet started (call ``start()`` or use ``with``)."""
    if not isinstance(spec, CameraSpec):
        spec = CameraSpec.from_dict(spec)
    common: dict[str, Any] = dict(width=spec.width, height=spec.height, fps=spec.fps, freeze_periods=spec.freeze_periods)
    common.update(spec.options)
    if spec.kind == "opencv":
        if spec.device is None:
            raise CameraConfigError(
                f"camera {spec.name!r} (opencv) needs device = \"/dev/v4l/by-id/...\" (see `ls -l /dev/v4l/by-id`)"
            )
        from drivers.cameras.opencv import OpenCVCamera

        return OpenCVCamera(spec.name, spec.device, fourcc=spec.fourcc, **common)
    if spec.kind == "realsense":
        if not spec.serial:
            raise CameraConfigError(
                f"camera {spec.name!r} (realsense) needs serial = \"...\" (see `rs-enumerate-devices -s`)"
            )
        from drivers.cameras.realsense import RealSenseCamera

        return RealSenseCamera(spec.name, spec.serial, depth=spec.depth, **common)
    if spec.kind == "sim":
        from drivers.cameras.sim import SimCamera

        return SimCamera(spec.name, ring=spec.ring, delay_s=spec.delay_s, **common)
    if spec.kind == "synthetic":
        from drivers.cameras.synthetic import SyntheticCamera

        return SyntheticCamera(spec.name, jpeg=spec.jpeg, **common)
    raise CameraConfigError(
        f"camera {spec.name!r}: unknown kind {spec.kind!r}; valid kinds: {', '.join(KINDS)}"
    )
