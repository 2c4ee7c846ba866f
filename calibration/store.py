"""Where calibrations live on disk, and the identity that keeps a file on its own arm.

One versioned TOML file per arm: ``<dir>/<arm>.toml``. ``<dir>`` is ``$RIG_CALIBRATION_DIR`` if
set, else ``$XDG_CONFIG_HOME/rig/calibration`` (``~/.config/rig/calibration``). Camera results
(intrinsics, latency) live beside them in ``<dir>/cameras/<camera>.toml``.

A file records the arm's *identity*: the adapter's stable name (the ``/dev/serial/by-id`` link
that points at its port; ``pty:<arm>`` for simulated and pty ports, which have none) and every
servo's ID and model. Loading a file for an arm whose identity differs is refused with a message
naming both, so a file is never applied to the wrong arm.
"""

from __future__ import annotations

import datetime as _dt
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from calibration.arm import ArmCalibration, CalibrationError, GripperCalibration, JointCalibration

FORMAT = "rig-arm-calibration"
FORMAT_VERSION = 1
ENV_DIR = "RIG_CALIBRATION_DIR"
BY_ID_DIR = Path("/dev/serial/by-id")


class CalibrationMismatch(CalibrationError):
    """A stored calibration belongs to another arm (adapter, servo IDs or models differ)."""


# ---- places ---------------------------------------------------------------------------------------

def calibration_dir() -> Path:
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "rig" / "calibration"


def arm_file(arm: str, directory: Path | None = None) -> Path:
    return (directory or calibration_dir()) / f"{arm}.toml"


def camera_file(camera: str, directory: Path | None = None) -> Path:
    return (directory or calibration_dir()) / "cameras" / f"{camera}.toml"


def write_toml(path: Path, data: Mapping[str, Any]) -> Path:
    """Write atomically: a crash mid-write never leaves half a calibration behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(tomli_w.dumps(dict(data)).encode())
    os.replace(tmp, path)
    return path


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise CalibrationError(f"{path}: not valid TOML ({exc}); re-run the calibration or delete the file") from None


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


# ---- identity -------------------------------------------------------------------------------------

def adapter_identity(port: str, arm: str, by_id_dir: Path = BY_ID_DIR) -> str:
    """The adapter's stable name: the ``by-id`` link resolving to ``port``.

    ``sim:`` and pty ports have no by-id link: they are keyed ``pty:<arm>``. A port that is itself
    a by-id link is named by it. Anything else falls back to ``path:<resolved device>``, which
    can change between boots (the README says to use by-id paths).
    """
    if port.startswith("sim:") or port.startswith("/dev/pts/") or port.startswith("/dev/pty"):
        return f"pty:{arm}"
    p = Path(port)
    if p.parent == by_id_dir:
        return p.name
    target = os.path.realpath(port)
    try:
        links = sorted(by_id_dir.iterdir())
    except OSError:
        links = []
    for link in links:
        if os.path.realpath(link) == target:
            return link.name
    return f"path:{target}"


@dataclass(frozen=True)
class ArmIdentity:
    adapter: str
    servos: tuple[tuple[int, str], ...]  # (id, model), sorted by id: shadows included

    @classmethod
    def of(cls, adapter: str, servos: Iterable[tuple[int, str]]) -> ArmIdentity:
        return cls(adapter, tuple(sorted((int(i), str(m).lower()) for i, m in servos)))

    def describe(self) -> str:
        listing = ", ".join(f"{i}:{m}" for i, m in self.servos)
        return f"adapter {self.adapter} with servos {listing}"


def config_servos(cfg: Any) -> list[tuple[int, str]]:
    """(id, model) of every servo an arm config lists, shadows with their primary's model."""
    out = []
    for j in (*cfg.joints, *([cfg.gripper] if cfg.gripper else [])):
        out.append((j.id, j.model))
        if j.shadow_id is not None:
            out.append((j.shadow_id, j.model))
    return out


def config_identity(cfg: Any) -> ArmIdentity:
    return ArmIdentity.of(adapter_identity(cfg.port, cfg.name), config_servos(cfg))


def check_identity(stored: ArmIdentity, actual: ArmIdentity, arm: str, path: Path | None, what: str) -> None:
    """Refuse when ``actual`` (from the config or the connected servos) is not ``stored``."""
    if stored == actual:
        return
    problems = []
    if stored.adapter != actual.adapter:
        problems.append(f"the adapter differs (file: {stored.adapter}; {what}: {actual.adapter})")
    if stored.servos != actual.servos:
        s, a = dict(stored.servos), dict(actual.servos)
        diffs = [f"servo {i}: file {s.get(i, 'absent')}, {what} {a.get(i, 'absent')}"
                 for i in sorted(set(s) | set(a)) if s.get(i) != a.get(i)]
        problems.append("the servos differ (" + "; ".join(diffs) + ")")
    where = f" {path}" if path else ""
    raise CalibrationMismatch(
        f"arm {arm!r}: the calibration file{where} belongs to another arm: " + "; ".join(problems)
        + f". File: {stored.describe()}. {what.capitalize()}: {actual.describe()}. Re-run "
        f"`rig calibrate arm {arm}` for this arm, or fix the config's port/servos if the wrong one is named")


# ---- arm files ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServoRegisters:
    """What a servo held when it was calibrated; checked again when the arm is opened."""

    id: int
    homing_offset: int
    drive_mode: int
    operating_mode: int


@dataclass(frozen=True)
class StoredArm:
    arm: str
    identity: ArmIdentity
    calibration: ArmCalibration
    joint_names: tuple[str, ...]
    registers: tuple[ServoRegisters, ...] = ()
    created: str = ""
    path: Path | None = field(default=None, compare=False)

    def to_toml(self) -> dict[str, Any]:
        cal = self.calibration
        joints = []
        for name, j in zip(self.joint_names, cal.joints, strict=True):
            row: dict[str, Any] = {"name": name, "zero": float(j.zero), "sign": int(j.sign)}
            if j.min_ticks is not None and j.max_ticks is not None:
                row["min_ticks"], row["max_ticks"] = float(j.min_ticks), float(j.max_ticks)
            row["full_turn"], row["multi_turn"] = bool(j.full_turn), bool(j.multi_turn)
            joints.append(row)
        out: dict[str, Any] = {
            "format": FORMAT, "version": FORMAT_VERSION, "arm": self.arm, "created": self.created or now_iso(),
            "identity": {"adapter": self.identity.adapter,
                         "servos": [{"id": i, "model": m} for i, m in self.identity.servos]},
            "joints": joints,
        }
        if cal.gripper is not None:
            out["gripper"] = {"open": float(cal.gripper.open), "closed": float(cal.gripper.closed)}
        if self.registers:
            out["registers"] = [{"id": r.id, "homing_offset": r.homing_offset, "drive_mode": r.drive_mode,
                                 "operating_mode": r.operating_mode} for r in self.registers]
        return out

    @classmethod
    def from_toml(cls, data: Mapping[str, Any], path: Path | None = None) -> StoredArm:
        where = str(path) if path else "calibration"
        if data.get("format") != FORMAT:
            raise CalibrationError(f"{where}: not a rig arm calibration (format {data.get('format')!r}); "
                                   "re-run `rig calibrate arm`")
        version = data.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CalibrationError(f"{where}: calibration format version {version!r}; this rig reads up to "
                                   f"{FORMAT_VERSION}. Upgrade rig, or re-run `rig calibrate arm`")
        try:
            ident = data["identity"]
            identity = ArmIdentity.of(ident["adapter"], [(s["id"], s["model"]) for s in ident["servos"]])
            joints = tuple(JointCalibration(float(j["zero"]), int(j["sign"]), j.get("min_ticks"), j.get("max_ticks"),
                                            bool(j.get("full_turn", False)), bool(j.get("multi_turn", False)))
                           for j in data["joints"])
            names = tuple(str(j["name"]) for j in data["joints"])
            g = data.get("gripper")
            gripper = GripperCalibration(float(g["open"]), float(g["closed"])) if g else None
            regs = tuple(ServoRegisters(int(r["id"]), int(r["homing_offset"]), int(r["drive_mode"]),
                                        int(r["operating_mode"])) for r in data.get("registers", []))
            arm = str(data["arm"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"{where}: malformed calibration file ({type(exc).__name__}: {exc}); "
                                   "re-run `rig calibrate arm`") from None
        stored = cls(arm, identity, ArmCalibration(joints, gripper, source="file"), names, regs,
                     str(data.get("created", "")), path)
        cal = ArmCalibration(joints, gripper, source=f"file:{path}" if path else "file", origin=stored)
        return cls(arm, identity, cal, names, regs, stored.created, path)


def save_arm(stored: StoredArm, directory: Path | None = None) -> Path:
    return write_toml(arm_file(stored.arm, directory), stored.to_toml())


def read_arm_file(path: Path) -> StoredArm:
    return StoredArm.from_toml(read_toml(path), path)


def load_arm(arm: str, directory: Path | None = None) -> StoredArm | None:
    path = arm_file(arm, directory)
    return read_arm_file(path) if path.exists() else None


def load_for_config(cfg: Any, directory: Path | None = None) -> StoredArm | None:
    """The stored calibration for an arm config, checked against what the config says it is.

    Checks the adapter identity (resolved from the config's port without opening it), the servo
    IDs and models, and the joint count; raises :class:`CalibrationMismatch` naming both sides.
    """
    stored = load_arm(cfg.name, directory)
    if stored is None:
        return None
    check_identity(stored.identity, config_identity(cfg), cfg.name, stored.path, "the config")
    names = tuple(j.name for j in cfg.joints)
    if len(stored.joint_names) != len(names) or (stored.calibration.gripper is None) != (cfg.gripper is None):
        raise CalibrationMismatch(
            f"arm {cfg.name!r}: {stored.path} calibrates joints {', '.join(stored.joint_names)}"
            f"{' + gripper' if stored.calibration.gripper else ''} but the config lists {', '.join(names)}"
            f"{' + gripper' if cfg.gripper else ''}; re-run `rig calibrate arm {cfg.name}`")
    return stored


# ---- camera files ---------------------------------------------------------------------------------

CAMERA_FORMAT = "rig-camera-calibration"


def camera_device(spec: Mapping[str, Any]) -> str:
    """A camera's identity from its config table: what it is addressed by."""
    kind = spec.get("kind", "")
    for key in ("serial", "device", "ring"):
        if key in spec:
            return f"{kind}:{spec[key]}"
    return f"{kind}:{spec.get('name', '')}"


def load_camera(camera: str, directory: Path | None = None) -> dict[str, Any]:
    """A camera's stored sections (``intrinsics``, ``latency``), or {} when none is stored."""
    path = camera_file(camera, directory)
    if not path.exists():
        return {}
    data = read_toml(path)
    if data.get("format") != CAMERA_FORMAT:
        raise CalibrationError(f"{path}: not a rig camera calibration; delete it and calibrate again")
    if int(data.get("version", 0)) > FORMAT_VERSION:
        raise CalibrationError(f"{path}: format version {data.get('version')} is newer than this rig reads "
                               f"({FORMAT_VERSION}); upgrade rig")
    return data


def save_camera_section(camera: str, device: str, section: str, values: Mapping[str, Any],
                        directory: Path | None = None) -> Path:
    """Store one section (``intrinsics`` or ``latency``) of a camera's file, keeping the others."""
    data = load_camera(camera, directory)
    if data.get("device") not in (None, device):
        data = {}  # another device under this name: its old results do not apply
    data.update({"format": CAMERA_FORMAT, "version": FORMAT_VERSION, "camera": camera, "device": device})
    data[section] = {**values, "created": now_iso()}
    return write_toml(camera_file(camera, directory), data)
