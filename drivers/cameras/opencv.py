"""UVC cameras through OpenCV (V4L2 backend), and video files standing in for them.

``device`` is a stable ``/dev/v4l/by-id/...`` link (preferred: ``/dev/videoN`` numbers change
between boots and plug orders), a ``/dev/videoN`` path, or an integer index. Any other path is
opened as a video file through FFmpeg and paced at ``fps``; it ends with a disconnect fault.

With ``fourcc="MJPG"`` frames are the JPEG bytes exactly as the camera (or file) holds them:
``Frame(encoding="jpeg")``, never decoded and re-encoded. V4L2 hands them over when
``CAP_PROP_CONVERT_RGB`` is 0; FFmpeg when ``CAP_PROP_FORMAT`` is -1 (raw packets).
Other FOURCCs (e.g. ``YUYV``) are decoded by OpenCV into ``rgb8`` frames.

``t_device_ns`` is the V4L2 buffer timestamp (the kernel's monotonic clock at capture, read with
millisecond resolution through ``CAP_PROP_POS_MSEC``); for a file, the frame's position in it.
OpenCV does not expose the V4L2 sequence number, so ``Frame.index`` advances by the number of
frame periods between device timestamps: a frame the driver dropped shows up as a gap.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from drivers.cameras.base import Camera, CameraDisconnected, CameraFault
from drivers.cameras.frame import Frame
from drivers.errors import RigError

BY_ID_DIR = "/dev/v4l/by-id"
SYSFS_V4L_DIR = "/sys/class/video4linux"
_VIDEO_NODE = re.compile(r"video(\d+)$")
_READ_FAILURES_BEFORE_FAULT = 3


class OpenCVCameraError(RigError):
    """A UVC camera or video file cannot be opened as configured."""


# ---- V4L2 helpers (pure path/sysfs logic; tested against temp dirs) -------------------------


@dataclass(frozen=True, slots=True)
class UvcDevice:
    """A video capture node as the system lists it."""

    by_id: str | None  # /dev/v4l/by-id/... link, the stable address
    node: str  # /dev/videoN
    index: int
    name: str  # the kernel's name for it (sysfs), e.g. "HD USB Camera"


def video_index(path: str | os.PathLike) -> int | None:
    """N for a path ending in ``videoN`` (after following links), else None."""
    match = _VIDEO_NODE.search(os.path.realpath(path))
    return int(match.group(1)) if match else None


def is_v4l_address(device: str | int) -> bool:
    """True for an index or a /dev path (V4L2); False for anything else (a video file)."""
    if isinstance(device, int):
        return True
    text = str(device)
    return text.isdigit() or text.startswith("/dev/")


def resolve_device(device: str | int, by_id_dir: str = BY_ID_DIR) -> int:
    """The /dev/videoN index a camera address refers to, or an error saying what exists."""
    if isinstance(device, int) or str(device).isdigit():
        return int(device)
    path = str(device)
    if not os.path.lexists(path):
        present = list_uvc_devices(by_id_dir=by_id_dir)
        listing = ", ".join(d.by_id or d.node for d in present) or "none"
        raise OpenCVCameraError(
            f"camera device {path} does not exist; is it plugged in? "
            f"Cameras present: {listing} (see `ls -l {by_id_dir}`)"
        )
    index = video_index(path)
    if index is None:
        raise OpenCVCameraError(
            f"camera device {path} resolves to {os.path.realpath(path)}, which is not a /dev/videoN node"
        )
    return index


def sysfs_name(index: int, sysfs_dir: str = SYSFS_V4L_DIR) -> str:
    """The kernel's name for /dev/videoN ('' if unknown)."""
    try:
        return Path(sysfs_dir, f"video{index}", "name").read_text().strip()
    except OSError:
        return ""


def list_uvc_devices(by_id_dir: str = BY_ID_DIR, sysfs_dir: str = SYSFS_V4L_DIR) -> list[UvcDevice]:
    """Capture nodes with their stable by-id links.

    A UVC camera has two nodes: ``...-video-index0`` streams images, ``-index1`` only metadata,
    so by-id links other than index0 are left out.
    """
    found: dict[int, UvcDevice] = {}
    try:
        links = sorted(os.listdir(by_id_dir))
    except OSError:
        links = []
    for link in links:
        if not link.endswith("-video-index0"):
            continue
        full = os.path.join(by_id_dir, link)
        index = video_index(full)
        if index is not None:
            found[index] = UvcDevice(full, f"/dev/video{index}", index, sysfs_name(index, sysfs_dir))
    try:
        nodes = os.listdir(sysfs_dir)
    except OSError:
        nodes = []
    for node in nodes:  # capture nodes without a by-id link (e.g. built-in cameras) still count
        match = _VIDEO_NODE.fullmatch(node)
        if not match or int(match.group(1)) in found:
            continue
        try:
            capture_node = Path(sysfs_dir, node, "index").read_text().strip() == "0"
        except OSError:
            capture_node = True
        if capture_node:
            index = int(match.group(1))
            found[index] = UvcDevice(None, f"/dev/video{index}", index, sysfs_name(index, sysfs_dir))
    return [found[i] for i in sorted(found)]


def fourcc_code(fourcc: str) -> int:
    if len(fourcc) != 4:
        raise OpenCVCameraError(f"FOURCC must be 4 characters (e.g. MJPG, YUYV), got {fourcc!r}")
    return cv2.VideoWriter.fourcc(*fourcc)


def fourcc_text(code: float) -> str:
    value = int(code)
    return "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00")


def index_step(dt_device_ns: int, period_ns: int) -> int:
    """How many frame periods separate two device timestamps (at least 1).

    Half a period of slack absorbs jitter; a camera that runs slower than configured (e.g. UVC
    auto-exposure halving the rate in dim light) shows as drops, which is what it costs a recording.
    """
    if dt_device_ns <= 0 or period_ns <= 0:
        return 1
    return max(1, int(dt_device_ns / period_ns + 0.5))


# ---- the camera -----------------------------------------------------------------------------


class OpenCVCamera(Camera):
    def __init__(self, name: str, device: str | int, width: int = 640, height: int = 480, fps: float = 30.0,
                 fourcc: str = "MJPG", **camera_options):
        super().__init__(name, width, height, fps, **camera_options)
        self.device = device
        self.fourcc = fourcc.upper()
        fourcc_code(self.fourcc)  # validate early
        self.is_file = not is_v4l_address(device)
        self.device_clock = (
            "video file position (ns)" if self.is_file else "V4L2 buffer timestamp, kernel monotonic (ms resolution)"
        )
        self._cap: cv2.VideoCapture | None = None

    @property
    def raw_jpeg(self) -> bool:
        return self.fourcc == "MJPG"

    def _open(self) -> None:
        if self.is_file:
            if not os.path.isfile(str(self.device)):
                raise OpenCVCameraError(
                    f"camera {self.name!r}: {self.device} is neither a /dev/video device nor a video file"
                )
            cap = cv2.VideoCapture(str(self.device), cv2.CAP_FFMPEG)
            target = str(self.device)
        else:
            index = resolve_device(self.device)
            target = f"/dev/video{index}"
            cap = cv2.VideoCapture(index, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            hint = "" if self.is_file else f"; is another program using it? (`fuser {target}`)"
            raise OpenCVCameraError(f"camera {self.name!r}: OpenCV cannot open {target}{hint}")
        try:
            self._configure(cap, target)
        except Exception:
            cap.release()
            raise
        self._cap = cap
        self._target = target
        self._index = -1
        self._last_device_ns: int | None = None
        self._failures = 0
        self._checked_jpeg = False
        self._t0_ns = time.monotonic_ns()
        self._file_frames = 0

    def _configure(self, cap: cv2.VideoCapture, target: str) -> None:
        if not self.is_file:
            # FOURCC first: V4L2 picks the frame sizes offered for the pixel format in force.
            cap.set(cv2.CAP_PROP_FOURCC, fourcc_code(self.fourcc))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        if self.raw_jpeg:
            flag = (cv2.CAP_PROP_FORMAT, -1) if self.is_file else (cv2.CAP_PROP_CONVERT_RGB, 0)
            if not cap.set(*flag):
                raise OpenCVCameraError(
                    f"camera {self.name!r}: this OpenCV build cannot hand over raw MJPG from {target}; "
                    "use fourcc = \"YUYV\" or an opencv-python(-headless) wheel with V4L2/FFmpeg"
                )
        got = (
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            fourcc_text(cap.get(cv2.CAP_PROP_FOURCC)),
        )
        if got != (self.width, self.height, self.fourcc):
            listing = "its frames" if self.is_file else f"`v4l2-ctl --list-formats-ext -d {target}`"
            raise OpenCVCameraError(
                f"camera {self.name!r} ({target}) gives {got[0]}x{got[1]} {got[2]}, but the config asks for "
                f"{self.width}x{self.height} {self.fourcc}; pick a mode it supports (see {listing})"
            )

    def _grab(self, timeout_s: float) -> Frame | None:
        cap = self._cap
        assert cap is not None  # opened by _open()
        if self.is_file and not self._wait_file_pace(timeout_s):
            return None
        ok = cap.grab()
        t_host = time.monotonic_ns()
        if not ok:
            self._grab_failed()  # raises, or counts a failure
            return None
        device_ns = int(cap.get(cv2.CAP_PROP_POS_MSEC) * 1_000_000)
        position = int(cap.get(cv2.CAP_PROP_POS_FRAMES)) if self.is_file else 0
        ok, data = cap.retrieve()
        if not ok or data is None:
            self._grab_failed()  # raises, or counts a failure
            return None
        self._failures = 0
        if self.raw_jpeg:
            data = np.ascontiguousarray(data).reshape(-1)
            if not self._checked_jpeg:
                self._checked_jpeg = True
                if bytes(data[:2]) != b"\xff\xd8":
                    raise CameraFault(
                        f"camera {self.name!r} ({self._target}) sent frames that are not JPEG despite "
                        "fourcc MJPG; set fourcc to one it streams"
                    )
            encoding = "jpeg"
        else:
            data = cv2.cvtColor(data, cv2.COLOR_BGR2RGB)
            encoding = "rgb8"
        self._index = self._next_index(position, device_ns)
        return Frame(self.name, self._index, t_host, data, encoding, t_device_ns=device_ns)

    def _next_index(self, position: int, device_ns: int) -> int:
        if self.is_file:
            return position - 1  # the file's own frame number: exact
        previous, self._last_device_ns = self._last_device_ns, device_ns
        if previous is None:
            return 0
        return self._index + index_step(device_ns - previous, round(1e9 / self.fps))

    def _wait_file_pace(self, timeout_s: float) -> bool:
        """Deliver file frames at ``fps`` like a camera would, not as fast as they decode."""
        due = self._t0_ns + int(self._file_frames * 1e9 / self.fps)
        wait = (due - time.monotonic_ns()) / 1e9
        if wait > timeout_s:
            time.sleep(timeout_s)
            return False
        if wait > 0:
            time.sleep(wait)
        self._file_frames += 1
        return True

    def _grab_failed(self) -> None:
        if self.is_file:
            raise CameraDisconnected(
                f"camera {self.name!r}: video file {self.device} ended after {self._index + 1} frames"
            )
        if not os.path.exists(self._target) or (
            isinstance(self.device, str) and self.device.startswith("/dev/") and not os.path.exists(self.device)
        ):
            raise CameraDisconnected(
                f"camera {self.name!r} disconnected: {self.device} is gone; plug it back in "
                "(a different USB port may change /dev/videoN, the by-id link stays) and restart"
            )
        self._failures += 1
        if self._failures >= _READ_FAILURES_BEFORE_FAULT:
            raise CameraDisconnected(
                f"camera {self.name!r} ({self._target}): {self._failures} reads in a row failed; "
                "check the cable and USB bandwidth, then restart the camera"
            )
        return None

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
