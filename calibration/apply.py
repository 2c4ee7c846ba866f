"""Hooks the rig calls to apply stored calibrations.

- ``verify_connected(cfg, calibration, bus)``: after ``Arm.open()``, check a file-loaded
  calibration against the servos that actually answer (models by ping; Homing Offset, Drive Mode
  and Operating Mode as they were when calibrated). Inline and raw calibrations pass untouched.
- ``episode_intrinsics(config, cameras)``: each camera's intrinsics for an episode's metadata
  (``TakeRecorder(intrinsics=...)``): a stored ChArUco result, else a RealSense's factory values.
- ``camera_latencies_ns(config)``: each camera's measured delay, for
  ``recorder.align.align_frames_to_ticks(..., latency_ns)`` and the HDF5 export.

Nothing here imports ``rig``: configs are read by attribute (duck-typed).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calibration.arm import ArmCalibration, CalibrationError
from calibration.store import (
    ArmIdentity,
    CalibrationMismatch,
    StoredArm,
    adapter_identity,
    camera_device,
    check_identity,
    load_camera,
)


def verify_connected(cfg: Any, calibration: ArmCalibration, bus: Any) -> None:
    """Refuse a stored calibration whose arm is not the one on the bus.

    Pings every servo for its model and compares the registers the file recorded. Raises
    :class:`CalibrationMismatch` naming the file's arm and the connected one.
    """
    stored = calibration.origin
    if not isinstance(stored, StoredArm):
        return
    from drivers.dynamixel.errors import DynamixelError

    found = []
    for sid, _model in stored.identity.servos:
        try:
            found.append((sid, bus.ping(sid).model_name))
        except DynamixelError:
            found.append((sid, "absent"))
    actual = ArmIdentity.of(adapter_identity(cfg.port, cfg.name), found)
    check_identity(stored.identity, actual, cfg.name, stored.path, "the connected arm")
    from calibration.procedure import read_registers

    regs = read_registers(bus, [r.id for r in stored.registers]) if stored.registers else {}
    changed = []
    for r in stored.registers:
        now = (regs[r.id]["homing_offset"], regs[r.id]["drive_mode"])
        if now != (r.homing_offset, r.drive_mode):
            changed.append(f"servo {r.id}: Homing Offset/Drive Mode {r.homing_offset}/{r.drive_mode} when calibrated, "
                           f"{now[0]}/{now[1]} now")
    if changed:
        raise CalibrationMismatch(
            f"arm {cfg.name!r}: the servos were changed since {stored.path} was made ({'; '.join(changed)}), so its "
            f"zeros no longer hold (another tool or a factory reset?). Re-run `rig calibrate arm {cfg.name}`")


def episode_intrinsics(config: Any, cameras: Mapping[str, Any] | None = None,
                       directory: Path | None = None) -> dict[str, dict[str, Any]]:
    """Intrinsics per camera name, as plain dicts for episode metadata.

    Stored results (``rig calibrate camera``) win; a RealSense without one reports its factory
    intrinsics (read from the device, which needs it connected). Cameras with neither are left out.
    """
    out: dict[str, dict[str, Any]] = {}
    for c in config.cameras:
        spec = c.spec()
        stored = load_camera(c.name, directory)
        if "intrinsics" in stored and stored.get("device") == camera_device(spec):
            out[c.name] = dict(stored["intrinsics"])
            continue
        if c.kind == "realsense":
            from calibration.intrinsics import realsense_intrinsics

            cam = (cameras or {}).get(c.name)
            device = getattr(cam, "_device", None)
            try:
                out[c.name] = realsense_intrinsics(str(spec.get("serial", "")), int(spec.get("width", 640)),
                                                   int(spec.get("height", 480)), int(spec.get("fps", 30)),
                                                   device=device).to_dict()
            except CalibrationError:
                continue  # not connected now: the episode goes without
    return out


def camera_latencies_ns(config: Any, directory: Path | None = None) -> dict[str, int]:
    """Each camera's measured latency (ns) from ``rig calibrate latency``; 0 where none is stored."""
    out = {}
    for c in config.cameras:
        stored = load_camera(c.name, directory)
        lat = stored.get("latency")
        ok = lat is not None and stored.get("device") == camera_device(c.spec())
        out[c.name] = int(lat["latency_ns"]) if ok else 0
    return out
