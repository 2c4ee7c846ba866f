"""The handheld gripper's fixed geometry for its pose: camera to jaw, camera to IMU.

Stored with the arm files: ``<calibration dir>/grippers/<name>.toml``. The camera-to-jaw
transform turns the camera's pose into the jaw's (the end effector's); the IMU's place on the
camera (lever arm) comes from the gripper's drawing. The IMU-to-camera *rotation* is not stored
here: each take estimates it from its own data (rig/pose/fusion.py) and records it.

Camera frame: OpenCV's (x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.arm import CalibrationError

GRIPPER_FORMAT = "rig-gripper-geometry"


@dataclass(frozen=True)
class GripperGeometry:
    jaw_in_cam: tuple[float, float, float] = (0.0, 0.035, 0.11)  # jaw centre, camera frame (m)
    jaw_rot_in_cam: tuple[float, float, float] = (0.0, 0.0, 0.0)  # rotation vector: jaw axes in the camera's
    imu_in_cam: tuple[float, float, float] = (0.012, -0.03, -0.04)  # the IMU chip, camera frame (m)
    source: str = "drawing"

    def T_cam_jaw(self) -> np.ndarray:
        from scipy.spatial.transform import Rotation

        t = np.eye(4)
        t[:3, :3] = Rotation.from_rotvec(self.jaw_rot_in_cam).as_matrix()
        t[:3, 3] = self.jaw_in_cam
        return t


def gripper_file(name: str, directory: Path | None = None) -> Path:
    from calibration.store import calibration_dir

    return (directory or calibration_dir()) / "grippers" / f"{name}.toml"


def save_geometry(name: str, geo: GripperGeometry, directory: Path | None = None) -> Path:
    from calibration.store import FORMAT_VERSION, now_iso, write_toml

    data = {"format": GRIPPER_FORMAT, "version": FORMAT_VERSION, "gripper": name, "created": now_iso(),
            "jaw_in_cam": list(geo.jaw_in_cam), "jaw_rot_in_cam": list(geo.jaw_rot_in_cam),
            "imu_in_cam": list(geo.imu_in_cam), "source": geo.source}
    return write_toml(gripper_file(name, directory), data)


def load_geometry(name: str, directory: Path | None = None) -> GripperGeometry:
    """The stored geometry, or the stock gripper's drawing when none is stored."""
    from calibration.store import read_toml

    path = gripper_file(name, directory)
    if not path.exists():
        return GripperGeometry()
    data = read_toml(path)
    if data.get("format") != GRIPPER_FORMAT:
        raise CalibrationError(f"{path}: not a rig gripper geometry file; delete it or store it again")
    try:
        return GripperGeometry(tuple(map(float, data["jaw_in_cam"])), tuple(map(float, data["jaw_rot_in_cam"])),
                               tuple(map(float, data["imu_in_cam"])), str(data.get("source", "file")))
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"{path}: malformed ({exc}); store the gripper geometry again") from None
