"""OpenCV cameras: V4L2 path logic against temp dirs, and the real capture path over an MJPG file."""

from __future__ import annotations

import os
import struct

import cv2
import numpy as np
import pytest

from drivers.cameras.base import CameraDisconnected
from drivers.cameras.opencv import (
    OpenCVCamera,
    OpenCVCameraError,
    fourcc_code,
    fourcc_text,
    index_step,
    is_v4l_address,
    list_uvc_devices,
    resolve_device,
    sysfs_name,
    video_index,
)
from drivers.cameras.synthetic import pattern_frame, read_counter

W, H, N, FILE_FPS = 96, 64, 12, 30


@pytest.fixture
def fake_v4l(tmp_path):
    """/dev/v4l/by-id and /sys/class/video4linux look-alikes: two UVC cameras, one built-in."""
    dev, by_id, sysfs = tmp_path / "dev", tmp_path / "by-id", tmp_path / "sysfs"
    for d in (dev, by_id, sysfs):
        d.mkdir()
    for n, name, index in [(0, "Integrated Camera", 0), (2, "HD USB Camera", 0), (3, "HD USB Camera", 1),
                           (4, "Arducam OV9782", 0), (5, "Arducam OV9782", 1)]:
        (dev / f"video{n}").touch()
        (sysfs / f"video{n}").mkdir()
        (sysfs / f"video{n}" / "name").write_text(name + "\n")
        (sysfs / f"video{n}" / "index").write_text(f"{index}\n")
    for link, n in [("usb-HD_USB_Camera_SN1-video-index0", 2), ("usb-HD_USB_Camera_SN1-video-index1", 3),
                    ("usb-Arducam_OV9782_SN2-video-index0", 4), ("usb-Arducam_OV9782_SN2-video-index1", 5)]:
        os.symlink(dev / f"video{n}", by_id / link)
    os.symlink(tmp_path / "elsewhere" / "not-a-camera", by_id / "usb-broken-video-index0")
    return dev, by_id, sysfs


def test_by_id_links_resolve_to_video_indices(fake_v4l):
    dev, by_id, _ = fake_v4l
    assert resolve_device(str(by_id / "usb-Arducam_OV9782_SN2-video-index0"), by_id_dir=str(by_id)) == 4
    assert resolve_device(str(dev / "video2"), by_id_dir=str(by_id)) == 2
    assert resolve_device(3) == 3 and resolve_device("7") == 7
    assert video_index(by_id / "usb-HD_USB_Camera_SN1-video-index1") == 3


def test_missing_device_error_lists_cameras_present(fake_v4l):
    _, by_id, _ = fake_v4l
    with pytest.raises(OpenCVCameraError) as info:
        resolve_device(str(by_id / "usb-Gone_SN9-video-index0"), by_id_dir=str(by_id))
    message = str(info.value)
    assert "usb-Gone_SN9-video-index0 does not exist" in message and "plugged in" in message
    assert "usb-HD_USB_Camera_SN1-video-index0" in message and "usb-Arducam_OV9782_SN2-video-index0" in message
    assert "index1" not in message  # metadata nodes are not cameras


def test_link_to_something_else_is_refused(tmp_path):
    target = tmp_path / "file.bin"
    target.touch()
    os.symlink(target, tmp_path / "cam")
    with pytest.raises(OpenCVCameraError, match="not a /dev/videoN node"):
        resolve_device(str(tmp_path / "cam"))


def test_listing_keeps_capture_nodes_with_names(fake_v4l):
    _, by_id, sysfs = fake_v4l
    listed = list_uvc_devices(by_id_dir=str(by_id), sysfs_dir=str(sysfs))
    assert [(d.index, d.name, d.by_id is not None) for d in listed] == [
        (0, "Integrated Camera", False), (2, "HD USB Camera", True), (4, "Arducam OV9782", True)]
    assert listed[1].by_id.endswith("usb-HD_USB_Camera_SN1-video-index0") and listed[1].node == "/dev/video2"
    assert sysfs_name(4, str(sysfs)) == "Arducam OV9782" and sysfs_name(99, str(sysfs)) == ""
    assert list_uvc_devices(by_id_dir=str(by_id / "none"), sysfs_dir=str(by_id / "none")) == []


def test_small_helpers():
    assert fourcc_text(fourcc_code("MJPG")) == "MJPG" and fourcc_text(fourcc_code("YUYV")) == "YUYV"
    with pytest.raises(OpenCVCameraError, match="4 characters"):
        fourcc_code("MJPEG")
    assert is_v4l_address(0) and is_v4l_address("2") and is_v4l_address("/dev/v4l/by-id/x")
    assert not is_v4l_address("/tmp/take.avi")
    period = 33_333_333
    assert [index_step(dt, period) for dt in (33_000_000, 40_000_000, 66_000_000, 100_000_000, 0)] == [1, 1, 2, 3, 1]


def _riff_chunks(data: bytes, start: int, end: int):
    """(fourcc, payload) of the RIFF chunks in data[start:end], descending into LISTs."""
    pos = start
    while pos + 8 <= end:
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if cid in (b"RIFF", b"LIST"):
            yield from _riff_chunks(data, pos + 12, pos + 8 + size)
        else:
            yield cid, data[pos + 8 : pos + 8 + size]
        pos += 8 + size + (size & 1)


@pytest.fixture
def mjpg_file(tmp_path):
    path = tmp_path / "take.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FILE_FPS, (W, H))
    assert writer.isOpened()
    for i in range(N):
        writer.write(cv2.cvtColor(pattern_frame(i, W, H), cv2.COLOR_RGB2BGR))
    writer.release()
    blob = path.read_bytes()
    jpegs = [payload for cid, payload in _riff_chunks(blob, 0, len(blob)) if cid == b"00dc"]
    assert len(jpegs) == N
    return path, jpegs


def test_mjpg_frames_are_the_exact_bytes_in_the_file(mjpg_file):
    path, jpegs = mjpg_file
    cam = OpenCVCamera("high", str(path), W, H, fps=200, fourcc="MJPG")
    assert cam.is_file and cam.raw_jpeg
    q = cam.subscribe(maxsize=64)  # before start(): not even the first frame is missed
    with cam:
        frames = []
        with pytest.raises(CameraDisconnected, match=f"ended after {N} frames"):
            while True:
                frames.append(q.get(timeout=10))
    assert [f.index for f in frames] == list(range(N))
    for f, expected in zip(frames, jpegs, strict=True):
        assert f.encoding == "jpeg" and f.data.dtype == np.uint8 and f.data.ndim == 1
        assert f.data.tobytes() == expected
        decoded = cv2.cvtColor(cv2.imdecode(f.data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert read_counter(decoded) == f.index
        assert f.t_device_ns == pytest.approx(f.index * 1e9 / FILE_FPS, abs=1e3)
    stats = cam.stats()
    assert stats.frames == N and stats.drops == 0 and "ended" in stats.last_error
    assert stats.device_clock == "video file position (ns)"


def test_config_mismatch_names_both_modes(mjpg_file):
    path, _ = mjpg_file
    with pytest.raises(OpenCVCameraError, match=rf"gives {W}x{H} MJPG, but the config asks for 640x480 MJPG"):
        OpenCVCamera("high", str(path), 640, 480, fourcc="MJPG").start()
    with pytest.raises(OpenCVCameraError, match="config asks for .* YUYV"):
        OpenCVCamera("high", str(path), W, H, fourcc="YUYV").start()


def test_unopenable_addresses_say_why(tmp_path, fake_v4l):
    with pytest.raises(OpenCVCameraError, match="neither a /dev/video device nor a video file"):
        OpenCVCamera("high", str(tmp_path / "missing.avi")).start()
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video")
    with pytest.raises(OpenCVCameraError, match="OpenCV cannot open"):
        OpenCVCamera("high", str(junk)).start()
    with pytest.raises(OpenCVCameraError, match="does not exist"):
        OpenCVCamera("high", "/dev/v4l/by-id/usb-No_Such_Camera-video-index0").start()
