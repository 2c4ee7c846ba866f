"""Camera intrinsics: a ChArUco procedure for UVC cameras, factory values for RealSense.

ChArUco (OpenCV 5 ``cv2.aruco``): a chessboard whose white squares carry ArUco markers, so every
corner is identified even when the board is partly out of view. Each accepted view adds its
identified corners; :meth:`CharucoCalibrator.calibrate` runs ``cv2.calibrateCamera`` (pinhole,
k1 k2 p1 p2 k3) and reports the RMS reprojection error. While collecting, the operator sees how
much of the image the corners have covered and where to move the board next: corners only near
the centre leave the distortion, and so the edges, poorly determined.

RealSense cameras are calibrated at the factory; :func:`realsense_intrinsics` reads those values
from the colour stream profile.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from calibration.arm import CalibrationError

MIN_CORNERS = 6  # per view: fewer constrain nothing
MIN_VIEWS = 8
GRID = (8, 6)  # coverage cells across x, y
DUPLICATE_PX = 15.0  # a view whose corners moved less than this from an earlier one adds nothing


@dataclass(frozen=True)
class CameraIntrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    dist: tuple[float, ...] = ()  # OpenCV order: k1, k2, p1, p2, k3 (RealSense: its model's coeffs)
    model: str = "opencv"
    source: str = "charuco"
    rms_px: float | None = None
    views: int | None = None
    coverage: float | None = None

    def camera_matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dist"] = [float(x) for x in self.dist]
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CameraIntrinsics:
        keys = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in d.items() if k in keys}
        kw["dist"] = tuple(kw.get("dist", ()))
        return cls(**kw)


@dataclass(frozen=True)
class CharucoTarget:
    """The printed board. Measure the printed square: printers scale."""

    squares_x: int = 7
    squares_y: int = 5
    square_m: float = 0.04
    marker_m: float = 0.03
    dictionary: str = "DICT_5X5_100"

    def board(self):
        import cv2

        try:
            dic = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        except AttributeError:
            raise CalibrationError(f"unknown ArUco dictionary {self.dictionary!r}; use e.g. DICT_5X5_100") from None
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_m, self.marker_m, dic)

    def image(self, px_per_m: float = 4000.0, margin_px: int = 0) -> np.ndarray:
        """The board as a grey image (``px_per_m`` pixels per metre), e.g. to print."""
        w = int(round(self.squares_x * self.square_m * px_per_m)) + 2 * margin_px
        h = int(round(self.squares_y * self.square_m * px_per_m)) + 2 * margin_px
        return self.board().generateImage((w, h), marginSize=margin_px)


@dataclass
class ViewReport:
    corners: int
    accepted: bool
    reason: str
    views: int
    coverage: float
    hint: str
    corners_px: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)), repr=False)


class CharucoCalibrator:
    def __init__(self, target: CharucoTarget, image_size: tuple[int, int]):
        import cv2

        self.cv2 = cv2
        self.target = target
        self.board = target.board()
        self.detector = cv2.aruco.CharucoDetector(self.board)
        self.size = (int(image_size[0]), int(image_size[1]))  # width, height
        self.obj: list[np.ndarray] = []
        self.img: list[np.ndarray] = []
        self._ids: list[np.ndarray] = []
        self.cells = np.zeros(GRID[::-1], dtype=np.int32)  # rows (y) x cols (x)

    # ---- collecting ----------------------------------------------------------------------------

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(corner ids, object points, image points) in one image; empty when no board is seen."""
        cv2 = self.cv2
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        cc, ci, _, _ = self.detector.detectBoard(grey)
        if cc is None or ci is None or len(ci) == 0:
            return np.zeros(0, np.int32), np.zeros((0, 3), np.float32), np.zeros((0, 2), np.float32)
        obj, img = self.board.matchImagePoints(cc, ci)
        return (np.asarray(ci).reshape(-1).astype(np.int32), np.asarray(obj).reshape(-1, 3).astype(np.float32),
                np.asarray(img).reshape(-1, 2).astype(np.float32))

    def add_view(self, image: np.ndarray) -> ViewReport:
        if image.shape[1] != self.size[0] or image.shape[0] != self.size[1]:
            raise CalibrationError(f"image is {image.shape[1]}x{image.shape[0]} but the calibration is for "
                                   f"{self.size[0]}x{self.size[1]}; keep one camera mode throughout")
        ids, obj, img = self.detect(image)
        n = len(ids)
        if n < MIN_CORNERS:
            return self._report(n, False, f"{n} corners seen (need {MIN_CORNERS}): show more of the board", img)
        for prev_ids, prev_img in zip(self._ids, self.img, strict=True):
            common, a, b = np.intersect1d(ids, prev_ids, return_indices=True)
            if len(common) >= 0.8 * n and np.median(np.linalg.norm(img[a] - prev_img[b], axis=1)) < DUPLICATE_PX:
                return self._report(n, False, "same pose as an earlier view: move or tilt the board", img)
        if self._collinear(ids):
            return self._report(n, False, "the corners lie on one line: show more rows of the board", img)
        self._ids.append(ids)
        self.obj.append(obj)
        self.img.append(img)
        cx = np.clip((img[:, 0] / self.size[0] * GRID[0]).astype(int), 0, GRID[0] - 1)
        cy = np.clip((img[:, 1] / self.size[1] * GRID[1]).astype(int), 0, GRID[1] - 1)
        np.add.at(self.cells, (cy, cx), 1)
        return self._report(n, True, "accepted", img)

    def _collinear(self, ids: np.ndarray) -> bool:
        return bool(self.board.checkCharucoCornersCollinear(ids.reshape(-1, 1)))

    @property
    def coverage(self) -> float:
        return float((self.cells > 0).mean())

    def hint(self) -> str:
        if len(self.obj) >= MIN_VIEWS and self.coverage >= 0.8:
            return "enough views and coverage: calibrate (more tilted views still help)"
        empty = np.argwhere(self.cells == 0)
        if len(empty) == 0:
            return f"coverage complete; {max(0, MIN_VIEWS - len(self.obj))} more view(s), tilted differently"
        gy, gx = empty.mean(axis=0)
        v = "top" if gy < GRID[1] / 3 else "bottom" if gy > 2 * GRID[1] / 3 else ""
        h = "left" if gx < GRID[0] / 3 else "right" if gx > 2 * GRID[0] / 3 else ""
        where = "-".join(x for x in (v, h) if x) or "edges"
        return f"move the board toward the {where} of the image (corners have covered {self.coverage:.0%})"

    def _report(self, n: int, ok: bool, reason: str, img: np.ndarray) -> ViewReport:
        return ViewReport(n, ok, reason, len(self.obj), self.coverage, self.hint(), img)

    # ---- solving -------------------------------------------------------------------------------

    def calibrate(self) -> tuple[CameraIntrinsics, np.ndarray]:
        """(intrinsics, per-view RMS error in px). Needs ``MIN_VIEWS`` accepted views."""
        cv2 = self.cv2
        if len(self.obj) < MIN_VIEWS:
            raise CalibrationError(f"{len(self.obj)} view(s) accepted; need at least {MIN_VIEWS}: show the board "
                                   "at more positions and tilts")
        rms, k, dist, rvecs, tvecs = cv2.calibrateCamera(self.obj, self.img, self.size, None, None)
        errs = []
        for obj, img, r, t in zip(self.obj, self.img, rvecs, tvecs, strict=True):
            proj, _ = cv2.projectPoints(obj, r, t, k, dist)
            errs.append(float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - img) ** 2, axis=1)))))
        intr = CameraIntrinsics(self.size[0], self.size[1], float(k[0, 0]), float(k[1, 1]), float(k[0, 2]),
                                float(k[1, 2]), tuple(float(x) for x in np.ravel(dist)), "opencv", "charuco",
                                float(rms), len(self.obj), self.coverage)
        return intr, np.array(errs)


# ---- rendering a board through a known camera (tests, and a dry run of the procedure) -----------

class BoardRenderer:
    """Images of a board seen by a pinhole camera with distortion, through chosen poses.

    Each output pixel is undistorted (``cv2.undistortPoints``: the inverse of the camera's
    distortion), cast as a ray onto the board plane, and sampled from the board image. Rendering
    at 2x and averaging down keeps the edges anti-aliased, as a real sensor does.
    """

    def __init__(self, target: CharucoTarget, k: np.ndarray, dist: np.ndarray, size: tuple[int, int],
                 px_per_m: float = 6000.0, supersample: int = 2):
        import cv2

        self.cv2 = cv2
        self.size = size
        self.ss = supersample
        self.px_per_m = px_per_m
        self.board_img = target.image(px_per_m).astype(np.float32)
        w, h = size[0] * supersample, size[1] * supersample
        us, vs = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        # Sub-pixel centres of the supersampled grid, in the output image's pixel coordinates.
        pts = np.stack([(us + 0.5) / supersample - 0.5, (vs + 0.5) / supersample - 0.5], axis=-1).reshape(-1, 1, 2)
        norm = cv2.undistortPoints(pts, k, dist, criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-10))
        self.rays = np.concatenate([norm.reshape(-1, 2), np.ones((norm.shape[0], 1))], axis=1)  # (N, 3)
        self.shape = (h, w)

    def render(self, rvec: np.ndarray, tvec: np.ndarray, background: int = 90, noise: float = 2.0,
               seed: int = 0) -> np.ndarray:
        cv2 = self.cv2
        r, _ = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64))
        m = np.column_stack([r[:, 0], r[:, 1], np.asarray(tvec, dtype=np.float64).ravel()])
        b = self.rays @ np.linalg.inv(m).T  # board plane (X, Y, 1) up to scale
        with np.errstate(divide="ignore", invalid="ignore"):
            x = b[:, 0] / b[:, 2]
            y = b[:, 1] / b[:, 2]
        behind = b[:, 2] <= 0
        mx = (x * self.px_per_m - 0.5).astype(np.float32)
        my = (y * self.px_per_m - 0.5).astype(np.float32)
        mx[behind] = my[behind] = -10
        img = cv2.remap(self.board_img, mx.reshape(self.shape), my.reshape(self.shape), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=float(background))
        img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
        if noise:
            img = img + np.random.default_rng(seed).normal(0, noise, img.shape)
        return np.clip(img, 0, 255).astype(np.uint8)


def board_poses(target: CharucoTarget, k: np.ndarray, size: tuple[int, int], n: int = 16,
                seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Board poses that tile the image and tilt the board: what an operator is asked to do."""
    import cv2

    rng = np.random.default_rng(seed)
    centre = np.array([target.squares_x * target.square_m / 2, target.squares_y * target.square_m / 2, 0.0])
    poses = []
    spots = [(u, v) for v in (0.3, 0.5, 0.7) for u in (0.3, 0.5, 0.7)]
    for i in range(n):
        u, v = spots[i % len(spots)]
        u, v = u + rng.uniform(-0.05, 0.05), v + rng.uniform(-0.05, 0.05)
        z = rng.uniform(0.45, 0.65)
        rvec = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.3)])
        r, _ = cv2.Rodrigues(rvec)
        target_pt = np.array([(u * size[0] - k[0, 2]) / k[0, 0] * z, (v * size[1] - k[1, 2]) / k[1, 1] * z, z])
        tvec = target_pt - r @ centre
        poses.append((rvec, tvec))
    return poses


# ---- RealSense ------------------------------------------------------------------------------------

def realsense_intrinsics(serial: str, width: int = 640, height: int = 480, fps: int = 30, *,
                         device: Any = None, context: Any = None) -> CameraIntrinsics:
    """The factory intrinsics of a RealSense's colour stream in the given mode."""
    from drivers.cameras.realsense import RealSenseError, import_pyrealsense2

    try:
        rs = import_pyrealsense2()
    except RealSenseError as exc:
        raise CalibrationError(str(exc)) from None
    if device is None:
        ctx = context if context is not None else rs.context()
        found = [d for d in ctx.query_devices() if d.get_info(rs.camera_info.serial_number) == str(serial)]
        if not found:
            raise CalibrationError(f"no RealSense with serial {serial} is connected; list them with "
                                   "`rs-enumerate-devices -s`")
        device = found[0]
    offered = []
    for sensor in device.query_sensors():
        for profile in sensor.get_stream_profiles():
            if profile.stream_type() != rs.stream.color or not profile.is_video_stream_profile():
                continue
            video = profile.as_video_stream_profile()
            offered.append(f"{video.width()}x{video.height()}@{profile.fps()}")
            if (video.width(), video.height(), profile.fps()) == (width, height, fps):
                i = video.get_intrinsics()
                return CameraIntrinsics(i.width, i.height, float(i.fx), float(i.fy), float(i.ppx), float(i.ppy),
                                        tuple(float(c) for c in i.coeffs), str(i.model).split(".")[-1],
                                        "realsense-factory")
    raise CalibrationError(f"RealSense {serial} has no colour mode {width}x{height}@{fps}; it offers "
                           f"{', '.join(sorted(set(offered))) or 'none'}")
