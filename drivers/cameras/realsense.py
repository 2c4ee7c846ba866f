"""Intel RealSense cameras through pyrealsense2, addressed by serial number.

Colour is captured as ``rgb8``; with ``depth=True`` the depth stream (z16, same size and rate) is
attached to each colour frame as ``Frame.depth`` in millimetres. ``Frame.index`` is the device's
frame number (gaps are drops); ``t_device_ns`` is the frame timestamp, whose clock ("timestamp
domain": hardware_clock, system_time or global_time) is in ``camera.device_clock``. Global time
(device clock mapped onto the host's) is switched on where the sensor offers it.

The sensor/syncer API is used rather than ``rs.pipeline``: it behaves the same on hardware, and it
is the only way to drive a ``software_device`` in librealsense >= 2.56, whose context keeps a
software device only through a weak reference (``rs2_context_add_software_device`` holds the sole
strong one), so ``query_devices`` and therefore ``pipeline.start`` never find it. Pass such a
device (or any ``rs.device``) as ``device=`` to run the camera over it; tests do.

pyrealsense2 is imported only when a RealSense camera starts.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from drivers.cameras.base import Camera, CameraDisconnected
from drivers.cameras.frame import Frame
from drivers.errors import RigError


class RealSenseError(RigError):
    """A RealSense camera cannot be used as configured."""


def import_pyrealsense2() -> Any:
    """The pyrealsense2 module, or a RigError saying how to make it importable."""
    try:
        import pyrealsense2 as rs
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "pyrealsense2":
            raise RealSenseError(
                "RealSense support needs pyrealsense2: `pip install 'pyrealsense2>=2.55,<2.60'`"
            ) from exc
        raise RealSenseError(
            f"pyrealsense2 is installed but cannot load ({exc}); it needs the USB library: "
            "`apt-get install libusb-1.0-0`"
        ) from exc
    return rs


def list_realsense_devices(context: Any = None) -> list[tuple[str, str]]:
    """(serial, product name) of each connected RealSense, for `rig cameras` and error messages."""
    rs = import_pyrealsense2()
    ctx = context if context is not None else rs.context()
    return [
        (d.get_info(rs.camera_info.serial_number), d.get_info(rs.camera_info.name)) for d in ctx.query_devices()
    ]


def _mode_text(profile) -> str:
    video = profile.as_video_stream_profile()
    return f"{video.width()}x{video.height()}@{profile.fps()} {str(profile.format()).split('.')[-1]}"


class RealSenseCamera(Camera):
    device_clock = "realsense (timestamp domain known once streaming)"

    def __init__(self, name: str, serial: str, width: int = 640, height: int = 480, fps: float = 30.0,
                 depth: bool = False, *, device: Any = None, context: Any = None, queue_size: int = 4,
                 **camera_options):
        super().__init__(name, width, height, fps, **camera_options)
        self.serial = str(serial)
        self.depth = depth
        self.timestamp_domain: str | None = None
        self._device = device
        self._context = context
        self._queue_size = queue_size
        self._sensors: list[Any] = []

    # ---- opening ----------------------------------------------------------------------------

    def _find_device(self, rs):
        ctx = self._context if self._context is not None else rs.context()
        self._context = ctx
        devices = list(ctx.query_devices())
        serials = [d.get_info(rs.camera_info.serial_number) for d in devices]
        for dev, serial in zip(devices, serials):
            if serial == self.serial:
                return dev
        raise RealSenseError(
            f"camera {self.name!r}: no RealSense with serial {self.serial} is connected "
            f"(connected: {', '.join(serials) or 'none'}); check the cable (USB 3) and `rs-enumerate-devices -s`"
        )

    def _pick(self, rs, sensors, stream, fmt):
        wanted = (self.width, self.height, round(self.fps))
        offered = []
        for sensor in sensors:
            for profile in sensor.get_stream_profiles():
                if profile.stream_type() != stream or not profile.is_video_stream_profile():
                    continue
                offered.append(_mode_text(profile))
                video = profile.as_video_stream_profile()
                if profile.format() == fmt and (video.width(), video.height(), profile.fps()) == wanted:
                    return sensor, profile
        kind = str(stream).split(".")[-1]
        raise RealSenseError(
            f"camera {self.name!r} (RealSense {self.serial}) has no {kind} mode "
            f"{self.width}x{self.height}@{round(self.fps)} {str(fmt).split('.')[-1]}; "
            f"it offers: {', '.join(sorted(set(offered))) or 'none'}"
        )

    def _open(self) -> None:
        rs = import_pyrealsense2()
        self._rs = rs
        device = self._device if self._device is not None else self._find_device(rs)
        sensors = list(device.query_sensors())
        chosen = [self._pick(rs, sensors, rs.stream.color, rs.format.rgb8)]
        if self.depth:
            chosen.append(self._pick(rs, sensors, rs.stream.depth, rs.format.z16))
        by_sensor: dict[int, tuple[Any, list[Any]]] = {}
        for sensor, profile in chosen:  # colour and depth may come from one sensor (e.g. D405)
            by_sensor.setdefault(id(sensor), (sensor, []))[1].append(profile)
        self._mm_per_unit = 1.0
        if self.depth:
            depth_sensor = chosen[1][0]
            if depth_sensor.supports(rs.option.depth_units):
                self._mm_per_unit = depth_sensor.get_option(rs.option.depth_units) * 1000.0
        self._sync = rs.syncer(self._queue_size)
        self._sensors = []
        try:
            for sensor, profiles in by_sensor.values():
                if sensor.supports(rs.option.global_time_enabled):
                    sensor.set_option(rs.option.global_time_enabled, 1)
                sensor.open(profiles if len(profiles) > 1 else profiles[0])
                self._sensors.append(sensor)
                sensor.start(self._sync)
        except RuntimeError as exc:
            self._close()
            raise RealSenseError(
                f"camera {self.name!r} (RealSense {self.serial}) cannot start streaming: {exc}; "
                "is another program using it?"
            ) from exc
        self._last_depth: tuple[float, np.ndarray] | None = None

    # ---- capture ----------------------------------------------------------------------------

    def _depth_mm(self, frame) -> np.ndarray:
        raw = np.asanyarray(frame.get_data())
        if abs(self._mm_per_unit - 1.0) < 1e-6:
            return raw.copy()
        return np.clip(np.rint(raw * self._mm_per_unit), 0, 65535).astype(np.uint16)

    def _grab(self, timeout_s: float) -> Frame | None:
        rs = self._rs
        ok, frames = self._sync.try_wait_for_frames(max(1, int(timeout_s * 1000)))
        t_host = time.monotonic_ns()
        if not ok:
            self._check_connected()
            return None
        colour = None
        for frame in frames.as_frameset():
            stream = frame.get_profile().stream_type()
            if stream == rs.stream.color:
                colour = frame
            elif stream == rs.stream.depth and self.depth:
                self._last_depth = (frame.get_timestamp(), self._depth_mm(frame))
        if colour is None:
            return None  # depth alone: kept for the colour frame it belongs to
        ts_ms = colour.get_timestamp()
        if self.timestamp_domain is None:
            self.timestamp_domain = str(colour.get_frame_timestamp_domain()).split(".")[-1]
            self.device_clock = f"realsense {self.timestamp_domain} (frame timestamp)"
        depth = None
        if self._last_depth is not None and abs(self._last_depth[0] - ts_ms) < 500.0 / self.fps:
            depth = self._last_depth[1]
        return Frame(self.name, int(colour.get_frame_number()), t_host, np.asanyarray(colour.get_data()).copy(),
                     "rgb8", t_device_ns=round(ts_ms * 1_000_000), depth=depth)

    def _check_connected(self) -> None:
        if self._device is not None or self._context is None:
            return  # an injected device: nothing to enumerate against
        rs = self._rs
        serials = {d.get_info(rs.camera_info.serial_number) for d in self._context.query_devices()}
        if self.serial not in serials:
            raise CameraDisconnected(
                f"camera {self.name!r}: RealSense {self.serial} disconnected; plug it back in (USB 3 port) "
                "and restart"
            )

    def _close(self) -> None:
        for sensor in self._sensors:
            for step in (sensor.stop, sensor.close):
                try:
                    step()
                except RuntimeError:
                    pass  # already stopped, or the device is gone
        self._sensors = []
