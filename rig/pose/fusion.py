"""Visual poses fused with the IMU: an error-state Kalman filter run forward and backward.

The pose is computed after the take, so every sample can use the whole take: the filter runs
forward in time and again backward (the same propagation with a negative time step), and the
two estimates are combined by their covariances (a two-filter smoother, equivalent to RTS for
this use). Across a gap in the board's view, the forward pass carries the pose in from the last
view and the backward pass from the next one, so the error is that of half the gap from each end.

State: the IMU's position, velocity and orientation in the board frame, gyro and accelerometer
biases, and gravity in the board frame (the table is level only to a degree or so, and one
degree of gravity left in the accelerometer is 8 cm after a 1 s gap). Error state 18-D, the
angle error local (Sola, "Quaternion kinematics for the error-state Kalman filter", 2017).

Before filtering, :func:`calibrate_extrinsics` estimates from the take itself the rotation
from the IMU to the camera (aligning the gyro's angular velocity with the camera's, Kabsch) and
the time offset between the two (cross-correlating the rates' magnitudes, as UMI calibrates its
camera latency), and :func:`check_scale` the board's scale against the accelerometer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Sources of a pose sample
SOURCE_NONE, SOURCE_VISION, SOURCE_FUSED, SOURCE_IMU = 0, 1, 2, 3
SOURCES = {SOURCE_NONE: "none", SOURCE_VISION: "vision", SOURCE_FUSED: "fused", SOURCE_IMU: "imu-only"}


@dataclass(frozen=True)
class FusionOptions:
    max_gap_s: float = 1.0  # longest gap in the board's view bridged between two views
    max_edge_s: float = 0.25  # at the take's ends, IMU-only before the first/after the last view
    vision_window_s: float = 0.05  # a sample this close to a view counts as seen
    gyro_noise: float = 1.5e-3  # rad/s/sqrt(Hz)
    accel_noise: float = 4e-3  # m/s^2/sqrt(Hz)
    gyro_walk: float = 1e-4  # rad/s^2/sqrt(Hz)
    accel_walk: float = 1e-3  # m/s^3/sqrt(Hz)
    pos_sigma_m: float = 0.002  # a visual pose at 0.5 px reprojection error
    rot_sigma_rad: float = 0.004
    trusted_sigma_m: float = 0.02  # samples with a position sigma above this are not trusted
    gate_chi2: float = 40.0  # innovations beyond this (6 dof) are rejected as outliers
    imu_gap_s: float = 0.1  # IMU samples further apart than this break the integration (shorter
    # dropouts are integrated through with the last sample held, as a late USB frame is)


@dataclass
class Extrinsics:
    R_cam_imu: np.ndarray  # rotates IMU-frame vectors into the camera frame
    offset_s: float  # add to the camera's frame times to put them on the IMU's timeline
    residual_rad_s: float  # RMS gyro-vs-camera angular velocity after alignment
    correlation: float  # peak normalised cross-correlation of the rates
    pairs: int
    ok: bool
    message: str = ""


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def _exp(w: np.ndarray) -> np.ndarray:
    th = float(np.linalg.norm(w))
    k = _skew(w)
    if th < 1e-8:
        return np.eye(3) + k
    return np.eye(3) + np.sin(th) / th * k + (1 - np.cos(th)) / th**2 * (k @ k)


def _log(r: np.ndarray) -> np.ndarray:
    """The rotation vector of a rotation matrix (angles below ~179 degrees; filter residuals are small)."""
    c = min(1.0, max(-1.0, (r[0, 0] + r[1, 1] + r[2, 2] - 1.0) * 0.5))
    th = float(np.arccos(c))
    v = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if th < 1e-8:
        return 0.5 * v
    if th > 3.1:
        from scipy.spatial.transform import Rotation

        return Rotation.from_matrix(r).as_rotvec()
    return v * (th / (2.0 * np.sin(th)))


def _quat_to_mats(q: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_quat(q, scalar_first=True).as_matrix()


# ---- extrinsics from the take ------------------------------------------------------------------------

def camera_rates(t_s: np.ndarray, quat: np.ndarray, max_dt: float = 0.07) -> tuple[np.ndarray, np.ndarray]:
    """(mid times, body-frame angular velocity) from consecutive visual orientations."""
    from scipy.spatial.transform import Rotation

    ok = np.isfinite(quat).all(axis=1)
    i = np.flatnonzero(ok[:-1] & ok[1:])
    dt = t_s[i + 1] - t_s[i]
    i, dt = i[(dt > 0) & (dt < max_dt)], dt[(dt > 0) & (dt < max_dt)]
    r = Rotation.from_quat(quat[i], scalar_first=True)
    r1 = Rotation.from_quat(quat[i + 1], scalar_first=True)
    w = (r.inv() * r1).as_rotvec() / dt[:, None]
    return 0.5 * (t_s[i] + t_s[i + 1]), w


def calibrate_extrinsics(t_imu: np.ndarray, gyro: np.ndarray, t_cam: np.ndarray, quat: np.ndarray,
                         max_offset_s: float = 0.2, corners: np.ndarray | None = None,
                         min_corners: int = 10) -> Extrinsics:
    """IMU-to-camera rotation and the camera's time offset, from a take with the board in view.
    Only views with ``min_corners`` corners are used: one poor view makes a wild rate."""
    if corners is not None:
        quat = np.where((corners >= min_corners)[:, None], quat, np.nan)
    tc, wc = camera_rates(t_cam, quat)
    if len(tc) < 30:
        return Extrinsics(np.eye(3), 0.0, float("nan"), float("nan"), len(tc), False,
                          "too few consecutive board views to calibrate the IMU against the camera")
    # Time offset: the rates' magnitudes do not depend on the rotation between the sensors.
    # The gyro is averaged over each camera interval (the camera's rate is a mean over one).
    dt = 0.002
    grid = np.arange(tc[0] - max_offset_s, tc[-1] + max_offset_s, dt)
    gmag = np.interp(grid, t_imu, np.linalg.norm(gyro, axis=1))
    cmag = np.interp(grid, tc, np.linalg.norm(wc, axis=1))
    # only where a camera rate is near: never across a stretch without views
    k = np.clip(np.searchsorted(tc, grid), 1, len(tc) - 1)
    seen = np.minimum(np.abs(grid - tc[k - 1]), np.abs(tc[k] - grid)) <= 0.02
    lags = np.arange(-int(max_offset_s / dt), int(max_offset_s / dt) + 1)
    corr = np.empty(len(lags))
    for n, k in enumerate(lags):
        g = np.roll(gmag, -k)
        a, b = cmag[seen], g[seen]
        a, b = a - a.mean(), b - b.mean()
        corr[n] = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
    j = int(np.argmax(corr))
    off = lags[j] * dt
    if 0 < j < len(lags) - 1:  # parabolic peak
        c0, c1, c2 = corr[j - 1], corr[j], corr[j + 1]
        den = c0 - 2 * c1 + c2
        if den < 0:
            off += 0.5 * (c0 - c2) / den * dt
    peak = float(corr[j])
    # Rotation: Kabsch on the paired angular velocities (camera = R * imu)
    gi = np.column_stack([np.interp(tc + off, t_imu, gyro[:, k]) for k in range(3)])
    keep = np.ones(len(tc), bool)
    for _ in range(2):  # fit, drop the pairs far off the fit (poor views), fit again
        r = _kabsch(gi[keep], wc[keep])
        err = np.linalg.norm(wc - gi @ r.T, axis=1)
        keep = err <= max(3 * float(np.median(err)), 0.05)
    resid = float(np.sqrt(np.mean(err[keep] ** 2)))
    spread = np.linalg.svd(wc - wc.mean(0), compute_uv=False)
    ok, msg = True, f"IMU-camera offset {off * 1000:+.1f} ms, residual {resid:.3f} rad/s"
    if abs(off) >= max_offset_s - 2 * dt or peak < 0.6:
        ok, msg = False, (f"the camera and the IMU do not agree in time (best offset {off * 1000:+.0f} ms, "
                          f"correlation {peak:.2f}): the gripper's clock sync failed or the streams are not "
                          "from one take; re-record, and check `rig gripper` clock sync")
    elif spread[-1] < 0.05 * spread[0]:
        ok, msg = False, "the take turns about one axis only: the IMU-camera rotation is not observable"
    return Extrinsics(r, float(off), resid, peak, len(tc), ok, msg)


def _kabsch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rotation R minimising sum |b - R a|^2."""
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


# ---- the board's scale against the accelerometer -----------------------------------------------------

@dataclass
class ScaleCheck:
    scale: float  # true / stored board size (NaN when unobservable)
    gravity: np.ndarray  # board frame
    ok: bool | None  # None: not enough motion to tell
    message: str


def check_scale(t_cam: np.ndarray, pos_imu: np.ndarray, r_board_imu: np.ndarray, t_imu: np.ndarray,
                accel: np.ndarray, tolerance: float = 0.05, smooth_s: float = 0.15) -> ScaleCheck:
    """Fit ``s * a_vision - g = R f`` over runs of consecutive views: the visual IMU positions'
    second difference and the rotated specific force, both through the same low-pass (so the
    filter's attenuation cancels). s is the board's true size over the stored one."""
    from scipy.ndimage import gaussian_filter1d

    ok = np.isfinite(pos_imu).all(axis=1)
    rows_v, rows_f = [], []
    for a, b in _runs(ok):
        tt = t_cam[a:b]
        if len(tt) < 4:
            continue
        dt = float(np.median(np.diff(tt)))
        sig = smooth_s / dt
        trim = int(np.ceil(3 * sig)) + 1
        if b - a < 2 * trim + 5 or np.max(np.abs(np.diff(tt) - dt)) > 0.3 * dt:
            continue
        pv = gaussian_filter1d(pos_imu[a:b], sig, axis=0, mode="nearest")
        av = np.zeros_like(pv)
        av[1:-1] = (pv[2:] - 2 * pv[1:-1] + pv[:-2]) / dt**2
        f_i = np.column_stack([np.interp(tt, t_imu, accel[:, k]) for k in range(3)])
        f_b = gaussian_filter1d(np.einsum("nij,nj->ni", r_board_imu[a:b], f_i), sig, axis=0, mode="nearest")
        rows_v.append(av[trim:-trim])
        rows_f.append(f_b[trim:-trim])
    if not rows_v:
        return ScaleCheck(float("nan"), np.array([0.0, 0.0, 9.81]), None, "too few steady board views to "
                          "check the board's size against the IMU")
    av, fb = np.concatenate(rows_v), np.concatenate(rows_f)
    n = len(av)
    # unknowns: s, g (3); rows: s*av - g = fb
    a_mat = np.zeros((3 * n, 4))
    a_mat[:, 0] = av.ravel()
    for k in range(3):
        a_mat[k::3, 1 + k] = -1.0
    sol, *_ = np.linalg.lstsq(a_mat, fb.ravel(), rcond=None)
    s, g = float(sol[0]), sol[1:]
    motion = float(np.sqrt(np.mean(np.sum((av - av.mean(0)) ** 2, axis=1))))
    if motion < 0.3:
        return ScaleCheck(float("nan"), g, None, f"the take moves too gently ({motion:.2f} m/s^2) to check the "
                          "board's size against the IMU")
    if abs(s - 1) > tolerance:
        return ScaleCheck(s, g, False, f"the board seen is {s:.2f}x the stored size (checked against the IMU): "
                          "a board of another size, or a wrong measurement; run `rig calibrate board --measured MM`")
    return ScaleCheck(s, g, True, f"board size agrees with the IMU (scale {s:.3f})")


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    m = np.concatenate(([False], mask, [False])).astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


# ---- the filter ----------------------------------------------------------------------------------------

@dataclass
class _Pass:
    pos: np.ndarray
    rot: np.ndarray  # (n, 3, 3)
    cov: np.ndarray  # (n, 6, 6): position and angle
    valid: np.ndarray


class ErrorStateKF:
    """One pass of the ESKF over IMU samples; ``direction`` -1 runs it backward in time.

    The nominal state is integrated at every IMU sample; the covariance is carried in steps of
    up to ``cov_every`` samples (and at every view), with the step's mean rate and force: at
    200 Hz that changes nothing measurable and costs a quarter of the time.
    """

    def __init__(self, opts: FusionOptions, gravity: np.ndarray, cov_every: int = 4):
        self.o = opts
        self.g0 = np.asarray(gravity, float)
        self.cov_every = cov_every

    def _propagate_cov(self, cov, r0, f, w, dt):
        o = self.o
        eye3 = np.eye(3)
        fx = np.eye(18)
        fx[0:3, 3:6] = eye3 * dt
        fx[3:6, 6:9] = -(r0 @ _skew(f)) * dt
        fx[3:6, 12:15] = -r0 * dt
        fx[3:6, 15:18] = eye3 * dt
        fx[6:9, 6:9] = _exp(w * dt).T
        fx[6:9, 9:12] = -eye3 * dt
        adt = abs(dt)
        q = np.zeros(18)
        q[3:6] = o.accel_noise**2 * adt
        q[6:9] = o.gyro_noise**2 * adt
        q[9:12] = o.gyro_walk**2 * adt
        q[12:15] = o.accel_walk**2 * adt
        cov = fx @ cov @ fx.T
        cov[np.diag_indices(18)] += q
        return cov

    def run(self, t: np.ndarray, gyro: np.ndarray, accel: np.ndarray, meas: dict[int, tuple],
            direction: int) -> _Pass:
        """``meas[i]`` = (position, R, pos sigma, rot sigma) of the IMU at sample i."""
        o = self.o
        n = len(t)
        out = _Pass(np.full((n, 3), np.nan), np.full((n, 3, 3), np.nan), np.full((n, 6, 6), np.nan),
                    np.zeros(n, bool))
        order = range(n) if direction > 0 else range(n - 1, -1, -1)
        started = False
        p = v = r = bg = ba = g = None
        cov = np.zeros((18, 18))
        prev = None
        eye3 = np.eye(3)
        h = np.zeros((6, 18))
        h[0:3, 0:3] = eye3
        h[3:6, 6:9] = eye3
        blk_n, blk_dt, blk_f, blk_w, blk_r = 0, 0.0, np.zeros(3), np.zeros(3), None
        sel = [0, 1, 2, 6, 7, 8]
        for i in order:
            if started and prev is not None:
                dt = float(t[i] - t[prev])
                # integrate with the sample we leave (forward: the earlier one; backward: the later one)
                w = gyro[prev] - bg
                f = accel[prev] - ba
                if blk_n == 0:
                    blk_r = r
                a_w = r @ f + g
                p = p + v * dt + 0.5 * a_w * dt * dt
                v = v + a_w * dt
                r = r @ _exp(w * dt)
                blk_n, blk_dt, blk_f, blk_w = blk_n + 1, blk_dt + dt, blk_f + f, blk_w + w
                if blk_n >= self.cov_every or i in meas:
                    cov = self._propagate_cov(cov, blk_r, blk_f / blk_n, blk_w / blk_n, blk_dt)
                    blk_n, blk_dt, blk_f, blk_w = 0, 0.0, np.zeros(3), np.zeros(3)
            if i in meas:
                mp, mr, sp, sr = meas[i]
                if not started:
                    p, r = mp.copy(), mr.copy()
                    v, bg, ba, g = np.zeros(3), np.zeros(3), np.zeros(3), self.g0.copy()
                    cov = np.diag([sp**2] * 3 + [0.3**2] * 3 + [sr**2] * 3 + [0.01**2] * 3 + [0.1**2] * 3
                                  + [0.05**2] * 3)
                    started = True
                else:
                    res = np.concatenate([mp - p, _log(r.T @ mr)])
                    rm = np.diag([sp**2] * 3 + [sr**2] * 3)
                    ph = cov[:, sel]
                    s = ph[sel] + rm
                    s_inv = np.linalg.inv(s)
                    if float(res @ s_inv @ res) <= o.gate_chi2:
                        k = ph @ s_inv
                        dx = k @ res
                        p, v = p + dx[0:3], v + dx[3:6]
                        r = r @ _exp(dx[6:9])
                        bg, ba, g = bg + dx[9:12], ba + dx[12:15], g + dx[15:18]
                        ikh = np.eye(18) - k @ h
                        cov = ikh @ cov @ ikh.T + k @ rm @ k.T
            if started:
                out.pos[i], out.rot[i], out.valid[i] = p, r, True
                out.cov[i] = cov[np.ix_(sel, sel)]
            prev = i
        return out


@dataclass
class FusedPose:
    """The pose stream: camera pose in the board frame at the IMU's sample times."""

    t_s: np.ndarray
    pos: np.ndarray  # (n, 3), NaN where no pose
    quat: np.ndarray  # (n, 4) w x y z, R_board_cam
    pos_sigma: np.ndarray  # (n,) m, NaN where no pose
    rot_sigma: np.ndarray  # (n,) rad
    source: np.ndarray  # (n,) uint8: SOURCE_*
    trusted: np.ndarray  # (n,) bool
    flags: list[str] = field(default_factory=list)


def fuse(t_imu: np.ndarray, gyro: np.ndarray, accel: np.ndarray, t_cam: np.ndarray, cam_pos: np.ndarray,
         cam_quat: np.ndarray, reproj_px: np.ndarray, corners: np.ndarray, R_cam_imu: np.ndarray, p_cam_imu: np.ndarray,
         gravity: np.ndarray, opts: FusionOptions | None = None) -> FusedPose:
    """Fuse visual camera poses (board frame; times already on the IMU's timeline) with the IMU.

    Returns the camera pose at every IMU sample, with its source and sigma; samples in gaps of
    the board's view longer than ``max_gap_s`` (or past ``max_edge_s`` at the take's ends, or
    across a break in the IMU stream) have no pose.
    """
    o = opts or FusionOptions()
    n = len(t_imu)
    ok = np.isfinite(cam_pos).all(axis=1)
    r_bc = np.full((len(t_cam), 3, 3), np.nan)
    if ok.any():
        r_bc[ok] = _quat_to_mats(cam_quat[ok])
    r_ci = np.asarray(R_cam_imu, float)
    # visual poses -> IMU poses, each at its nearest IMU sample
    idx = np.clip(np.searchsorted(t_imu, t_cam), 1, max(1, n - 1))
    idx = np.where(np.abs(t_imu[idx - 1] - t_cam) < np.abs(t_imu[np.minimum(idx, n - 1)] - t_cam), idx - 1, idx)
    idx = np.minimum(idx, n - 1)
    near = np.abs(t_imu[idx] - t_cam) <= 0.0051
    meas: dict[int, tuple] = {}
    for j in np.flatnonzero(ok & near):
        # a view's sigma grows with its reprojection error and with fewer corners
        k = max(1.0, float(reproj_px[j]) / 0.5) * max(1.0, 12.0 / max(int(corners[j]), 1)) ** 1.5
        rb = r_bc[j]
        meas[int(idx[j])] = (cam_pos[j] + rb @ p_cam_imu, rb @ r_ci, o.pos_sigma_m * k, o.rot_sigma_rad * k)
    out = FusedPose(t_imu, np.full((n, 3), np.nan), np.full((n, 4), np.nan), np.full(n, np.nan),
                    np.full(n, np.nan), np.zeros(n, np.uint8), np.zeros(n, bool))
    # IMU breaks: integrate each unbroken run on its own
    breaks = np.flatnonzero(np.diff(t_imu) > o.imu_gap_s) + 1
    bounds = [0, *breaks.tolist(), n]
    kf = ErrorStateKF(o, gravity)
    from scipy.spatial.transform import Rotation

    seen_t = np.sort(t_imu[list(meas)]) if meas else np.zeros(0)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        m = {i - a: v for i, v in meas.items() if a <= i < b}
        if not m:
            continue
        fw = kf.run(t_imu[a:b], gyro[a:b], accel[a:b], m, +1)
        bw = kf.run(t_imu[a:b], gyro[a:b], accel[a:b], m, -1)
        pos, rot, cov = _combine_all(fw, bw)
        both = fw.valid & bw.valid
        ti = t_imu[a:b]
        k = np.searchsorted(seen_t, ti)
        before = np.where(k > 0, ti - seen_t[np.maximum(k - 1, 0)], np.inf)
        after = np.where(k < len(seen_t), seen_t[np.minimum(k, len(seen_t) - 1)] - ti, np.inf)
        near = np.minimum(before, after)
        src = np.zeros(b - a, np.uint8)
        have = fw.valid | bw.valid
        src[have & ~both & (near <= o.max_edge_s)] = SOURCE_IMU
        # a gap is the time without views: the interval between two views less one frame (the window)
        src[both & (before + after <= o.max_gap_s + o.vision_window_s)] = SOURCE_FUSED
        src[have & (near <= o.vision_window_s)] = SOURCE_VISION
        keep = src > 0  # the rest: an unbridgeable gap, no pose rather than an invented one
        r_bcam = rot[keep] @ r_ci.T
        sl = np.arange(a, b)[keep]
        out.pos[sl] = pos[keep] - r_bcam @ p_cam_imu
        out.quat[sl] = Rotation.from_matrix(r_bcam).as_quat(scalar_first=True)
        out.pos_sigma[sl] = np.sqrt(np.trace(cov[keep][:, :3, :3], axis1=1, axis2=2) / 3)
        out.rot_sigma[sl] = np.sqrt(np.trace(cov[keep][:, 3:, 3:], axis1=1, axis2=2) / 3)
        out.source[sl] = src[keep]
    out.trusted = np.isfinite(out.pos_sigma) & (out.pos_sigma <= o.trusted_sigma_m)
    return out


def _combine_all(fw: _Pass, bw: _Pass) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample, the forward and backward estimates combined by their covariances (angles in
    the forward estimate's tangent space); one side alone where the other has not started."""
    from scipy.spatial.transform import Rotation

    n = len(fw.valid)
    pos, rot, cov = fw.pos.copy(), fw.rot.copy(), fw.cov.copy()
    only_b = bw.valid & ~fw.valid
    pos[only_b], rot[only_b], cov[only_b] = bw.pos[only_b], bw.rot[only_b], bw.cov[only_b]
    both = np.flatnonzero(fw.valid & bw.valid)
    if len(both) == 0 or n == 0:
        return pos, rot, cov
    r1, r2 = fw.rot[both], bw.rot[both]
    d = Rotation.from_matrix(np.transpose(r1, (0, 2, 1)) @ r2).as_rotvec()
    x2 = np.concatenate([bw.pos[both], d], axis=1)
    x1 = np.concatenate([fw.pos[both], np.zeros_like(d)], axis=1)
    i1, i2 = np.linalg.inv(fw.cov[both]), np.linalg.inv(bw.cov[both])
    c = np.linalg.inv(i1 + i2)
    x = np.einsum("nij,nj->ni", c, np.einsum("nij,nj->ni", i1, x1) + np.einsum("nij,nj->ni", i2, x2))
    pos[both] = x[:, :3]
    rot[both] = r1 @ Rotation.from_rotvec(x[:, 3:]).as_matrix()
    cov[both] = c
    return pos, rot, cov
