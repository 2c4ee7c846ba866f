"""RealSense cameras driven for real through pyrealsense2's software_device."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from drivers.cameras.realsense import RealSenseCamera, RealSenseError, list_realsense_devices
from tests import system

rs = system.realsense()  # None where libusb-1.0-0 is missing: the tests marked below skip
needs_libusb = pytest.mark.system("libusb")

W, H, FPS = 64, 48, 30


class SoftwareRealSense:
    """A software RealSense: colour (and depth) sensors we push frames into."""

    def __init__(self, serial: str = "SW-0001", depth_units: float = 0.001, domain=None):
        self.device = rs.software_device()
        self.device.create_matcher(rs.matchers.default)  # lets the syncer pair depth with colour
        self.device.register_info(rs.camera_info.serial_number, serial)
        self.domain = domain or rs.timestamp_domain.global_time
        intr = rs.intrinsics()
        intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = W, H, 50.0, 50.0, W / 2, H / 2
        self.depth_sensor, self.depth_profile = self._add("Depth", rs.stream.depth, rs.format.z16, 2, 0, intr)
        self.depth_sensor.add_read_only_option(rs.option.depth_units, depth_units)
        self.colour_sensor, self.colour_profile = self._add("Color", rs.stream.color, rs.format.rgb8, 3, 1, intr)
        self._keep: list[np.ndarray] = []  # librealsense reads the pixels after on_video_frame returns

    def _add(self, name, stream, fmt, bpp, uid, intr):
        sensor = self.device.add_sensor(name)
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = stream, 0, uid, W, H, FPS, bpp, fmt
        vs.intrinsics = intr
        return sensor, rs.video_stream_profile(sensor.add_video_stream(vs))

    def _push(self, sensor, profile, pixels: np.ndarray, number: int, t_ms: float) -> None:
        self._keep.append(pixels)
        frame = rs.software_video_frame()
        frame.pixels, frame.bpp = pixels, pixels.itemsize * (3 if pixels.ndim == 3 else 1)
        frame.stride, frame.timestamp, frame.domain = W * frame.bpp, t_ms, self.domain
        frame.frame_number, frame.profile = number, profile
        sensor.set_metadata(rs.frame_metadata_value.actual_fps, 0)
        sensor.on_video_frame(frame)

    def push(self, number: int, t_ms: float, depth: bool = True) -> None:
        if depth:
            self._push(self.depth_sensor, self.depth_profile, np.full((H, W), 10 * number, np.uint16), number, t_ms)
        self._push(self.colour_sensor, self.colour_profile, np.full((H, W, 3), number, np.uint8), number, t_ms)


def _t_ms(number: int) -> float:
    return 5000.0 + number * 1000.0 / FPS


@needs_libusb
def test_colour_and_depth_with_frame_numbers_and_device_timestamps():
    sw = SoftwareRealSense()
    cam = RealSenseCamera("high", "SW-0001", W, H, FPS, depth=True, device=sw.device, queue_size=64)
    q = cam.subscribe(64)
    numbers = [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12]  # 5 never arrives: a drop
    with cam:
        for n in numbers:
            sw.push(n, _t_ms(n))
        frames = [q.get(timeout=10) for _ in range(8)]  # the syncer may hold the newest back
    assert [f.index for f in frames] == numbers[:8]
    for f in frames:
        assert f.camera == "high" and f.encoding == "rgb8" and f.data.shape == (H, W, 3)
        assert (f.data == f.index).all()
        assert f.t_device_ns == round(_t_ms(f.index) * 1_000_000)
        assert f.depth is not None and f.depth.dtype == np.uint16 and f.depth.shape == (H, W)
        assert (f.depth == 10 * f.index).all()  # depth units 1 mm: values are millimetres already
    assert cam.timestamp_domain == "global_time" and "global_time" in cam.stats().device_clock
    stats = cam.stats()
    assert stats.drops == 1 and stats.last_index >= 9  # the 8 frames read end at 9


@needs_libusb
def test_colour_only_and_depth_units_scaled_to_millimetres():
    sw = SoftwareRealSense(serial="SW-0002", depth_units=0.0001, domain=rs.timestamp_domain.hardware_clock)
    colour_only = RealSenseCamera("low", "SW-0002", W, H, FPS, device=sw.device)
    q = colour_only.subscribe(16)
    with colour_only:
        sw.push(1, _t_ms(1), depth=False)
        frame = q.get(timeout=10)
    assert frame.index == 1 and frame.depth is None and colour_only.timestamp_domain == "hardware_clock"

    cam = RealSenseCamera("low", "SW-0002", W, H, FPS, depth=True, device=sw.device, queue_size=64)
    q = cam.subscribe(16)
    with cam:
        for n in range(1, 6):
            sw.push(n, _t_ms(n))
        frame = q.get(timeout=10)
    assert (frame.depth == frame.index).all()  # 10*n units of 0.1 mm = n mm


@needs_libusb
def test_unsupported_mode_lists_what_the_device_offers():
    sw = SoftwareRealSense()
    with pytest.raises(RealSenseError, match=r"has no color mode 640x480@30 rgb8; it offers: 64x48@30 rgb8"):
        RealSenseCamera("high", "SW-0001", 640, 480, 30, device=sw.device).start()


@needs_libusb
def test_missing_serial_names_the_connected_ones():
    ctx = rs.context()  # no hardware here: nothing connected
    assert list_realsense_devices(ctx) == []
    with pytest.raises(RealSenseError, match=r"no RealSense with serial 123456 is connected \(connected: none\)"):
        RealSenseCamera("high", "123456", context=ctx).start()


def test_missing_libusb_is_reported_with_the_apt_command(tmp_path):
    # A stand-in pyrealsense2 that fails the way the real one does without Debian's libusb-1.0-0.
    fake = tmp_path / "pyrealsense2"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        'raise ImportError("libusb-1.0.so.0: cannot open shared object file: No such file or directory")\n'
    )
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from drivers.cameras.realsense import RealSenseCamera
        from drivers.errors import RigError
        cam = RealSenseCamera("high", "1")  # constructing needs no pyrealsense2
        try:
            cam.start()
        except RigError as e:
            print("RigError", e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("RigError ")
    assert "`apt-get install libusb-1.0-0`" in out.stdout and "libusb-1.0.so.0" in out.stdout
