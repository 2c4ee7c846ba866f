"""The wrist camera's pose in the board frame, one frame at a time (ChArUco corners + solvePnP).

Each pose carries its reprojection error (RMS over the corners, px) and the number of corners.
A pose is trusted only from enough corners spread over more than a line, with a small error:
a few corners at the image edge give a PnP that fits and is still wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibration.board import BoardDetector, PoseBoard

MIN_CORNERS = 6
MAX_REPROJ_PX = 2.0


@dataclass
class VisualPoses:
    """Per frame: camera position and orientation in the board frame, or NaN where none."""

    t_ns: np.ndarray  # (m,) frame times
    pos: np.ndarray  # (m, 3) m
    quat: np.ndarray  # (m, 4) w x y z, R_board_cam
    reproj_px: np.ndarray  # (m,) NaN where no pose
    corners: np.ndarray  # (m,) corners used
    foreign: np.ndarray  # (m,) markers seen that are not this board's

    @property
    def ok(self) -> np.ndarray:
        return np.isfinite(self.reproj_px)


class BoardPoseEstimator:
    def __init__(self, board: PoseBoard, intrinsics):
        import cv2

        self.cv2 = cv2
        self.detector = BoardDetector(board)
        self.k = intrinsics.camera_matrix()
        self.dist = np.asarray(intrinsics.dist, np.float64) if intrinsics.dist else None
        self._roi: tuple[int, int, int, int] | None = None
        self._last_n = 0

    def _detect(self, image: np.ndarray):
        """Search near the last sighting first; the whole image when that finds less of the board."""
        v = None
        if self._roi is not None:
            v = self.detector.detect(image, self._roi)
            if len(v.ids) < max(MIN_CORNERS, self._last_n - 3):
                v = None
        if v is None:
            v = self.detector.detect(image)
        self._last_n = len(v.ids)
        self._roi = None
        if len(v.ids) >= MIN_CORNERS:
            h, w = image.shape[:2]
            lo, hi = v.img.min(axis=0), v.img.max(axis=0)
            m = 0.5 * (hi - lo) + 40  # the outer markers lie beyond the corners; the hand moves on
            self._roi = (max(0, int(lo[0] - m[0])), max(0, int(lo[1] - m[1])), min(w, int(hi[0] + m[0]) + 1),
                         min(h, int(hi[1] + m[1]) + 1))
        return v

    def estimate(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, int, int]:
        """(position, quaternion wxyz, reprojection px, corners, foreign markers); NaNs when no pose."""
        from scipy.spatial.transform import Rotation

        cv2 = self.cv2
        v = self._detect(image)
        n = len(v.ids)
        nan3, nan4 = np.full(3, np.nan), np.full(4, np.nan)
        if n < MIN_CORNERS or self.detector.board.checkCharucoCornersCollinear(v.ids.reshape(-1, 1)):
            return nan3, nan4, float("nan"), n, v.foreign
        ok, rvec, tvec = cv2.solvePnP(v.obj, v.img, self.k, self.dist, flags=cv2.SOLVEPNP_IPPE)
        if not ok:
            return nan3, nan4, float("nan"), n, v.foreign
        rvec, tvec = cv2.solvePnPRefineLM(v.obj, v.img, self.k, self.dist, rvec, tvec)
        proj, _ = cv2.projectPoints(v.obj, rvec, tvec, self.k, self.dist)
        err = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - v.img) ** 2, axis=1))))
        if err > MAX_REPROJ_PX:
            return nan3, nan4, err, n, v.foreign
        r_cb = cv2.Rodrigues(rvec)[0]
        r_bc = r_cb.T
        pos = -r_bc @ tvec.ravel()
        return pos, Rotation.from_matrix(r_bc).as_quat(scalar_first=True), err, n, v.foreign


def estimate_all(board: PoseBoard, intrinsics, frames, t_ns: np.ndarray) -> VisualPoses:
    """Every frame's pose. ``frames`` is any iterable of RGB images (decoded lazily is fine)."""
    est = BoardPoseEstimator(board, intrinsics)
    m = len(t_ns)
    out = VisualPoses(np.asarray(t_ns, np.int64), np.full((m, 3), np.nan), np.full((m, 4), np.nan),
                      np.full(m, np.nan), np.zeros(m, np.int32), np.zeros(m, np.int32))
    for i, img in enumerate(frames):
        if i >= m:
            break
        p, q, e, n, f = est.estimate(img)
        out.corners[i], out.foreign[i] = n, f
        if np.isfinite(p).all():
            out.pos[i], out.quat[i], out.reproj_px[i] = p, q, e
    return out
