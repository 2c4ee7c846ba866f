"""Rig configuration: a TOML file describing arms, cameras, rate and safety.

Built-in configs live in rig/configs/ and are found by name (`sim-aloha`, `aloha`, `koch-pair`,
`handheld`); any other argument is a path. Every validation error names the file, the key and
the fix, and is raised as one :class:`ConfigError`.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from calibration.arm import ArmCalibration, CalibrationError, GripperCalibration, JointCalibration
from drivers.dynamixel.control_table import BAUD_CODES, MODELS
from drivers.errors import RigError

DEFAULT_CONFIG = "sim-aloha"
DEFAULT_RATE_HZ = 50.0  # the control rate when a config (or a recorded episode) does not say: the one definition
# Where `rig record` and `rig collect` keep takes unless told otherwise (relative to where rig runs).
DEFAULT_DATASET = Path("data/rig.zarr")
ROLES = ("leader", "follower")
SIDES = ("left", "right", "center")
ON_EXIT = ("torque_off", "hold")
# Arm, camera and gripper names become file names and array keys: letters, digits, _ - . only.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
WATCHDOG_MS = (20, 2540)  # what a servo's Bus Watchdog can count (1-127 units of 20 ms)


class ConfigError(RigError):
    def __init__(self, source: str, key: str, problem: str):
        super().__init__(f"{source}: {key}: {problem}")
        self.source, self.key = source, key


@dataclass(frozen=True)
class JointSpec:
    name: str
    id: int
    model: str
    shadow_id: int | None = None  # ALOHA's paired shoulder/elbow: second servo on the same joint
    lower: float | None = None  # joint limits in radians (after calibration); None: no limit
    upper: float | None = None


@dataclass(frozen=True)
class ArmConfig:
    name: str
    role: str
    side: str
    port: str
    baud: int
    joints: tuple[JointSpec, ...]  # arm joints, without the gripper
    gripper: JointSpec | None
    leader: str | None = None  # for a follower: the leader it mirrors
    device: str = "dynamixel"  # "handheld": a leader whose only value is the handheld gripper's jaw
    calibration: ArmCalibration | None = None
    allow_uncalibrated: bool = False
    gripper_current_limit: int | None = None  # follower gripper, raw units (current-based position)

    @property
    def servo_ids(self) -> list[int]:
        ids = []
        for j in (*self.joints, *([self.gripper] if self.gripper else [])):
            ids.append(j.id)
            if j.shadow_id is not None:
                ids.append(j.shadow_id)
        return sorted(ids)

    @property
    def n_values(self) -> int:
        """Values this arm contributes to a state vector: joints plus the gripper."""
        return len(self.joints) + (1 if self.gripper else 0)

    @property
    def is_sim(self) -> bool:
        return self.port.startswith("sim:")

    @property
    def is_handheld(self) -> bool:
        return self.device == "handheld"


@dataclass(frozen=True)
class GripperConfig:
    """A handheld gripper (firmware/ + drivers/gripper) on a serial port."""

    port: str  # /dev/serial/by-id/... ; "standin" runs the firmware's host build on a pty
    name: str = "gripper"
    rate_hz: int = 200
    record_button: int | None = 0  # this button (or the trigger with -1) starts and stops takes
    standin_args: tuple[str, ...] = ()  # extra flags for the host stand-in (simulated sensors)

    @property
    def is_standin(self) -> bool:
        return self.port == "standin"


@dataclass(frozen=True)
class CameraConfig:
    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, **self.options}


@dataclass(frozen=True)
class HomeConfig:
    """The simulated home (rig/sim/home.py) as a handheld rig's world: its wrist camera renders the
    home, the gripper stand-in plays the home's IMU and jaw, and ground truth is recorded."""

    seed: int = 0  # the scripted hand's take
    seconds: float = 120.0  # how long the hand moves; after that it rests where it ended
    camera: str = "wrist"  # the [[cameras]] entry (kind = "sim") that is the wrist camera


@dataclass(frozen=True)
class SafetyConfig:
    max_step_rad: float = 0.12  # largest change of a follower target per tick (rad); 6 rad/s at 50 Hz
    max_gripper_step: float = 0.2  # normalized gripper units per tick
    engage_seconds: float = 1.5
    missed_reads_to_stop: int = 5
    on_exit: str = "torque_off"
    max_leader_jump_rad: float = 1.0  # a leader reading jumping further in one tick is a glitch
    takeover_rad: float = 0.15  # a leader moved this far (rad; gripper: normalized) takes over from a policy; 0: never
    watchdog_ms: float = 100.0  # followers stop on their own when no instruction comes this long; 0 = off


@dataclass(frozen=True)
class LoopConfig:
    realtime: str | int = "auto"  # "auto", "off", or a SCHED_FIFO priority (see rig/realtime.py)


@dataclass(frozen=True)
class RecordingConfig:
    # After a take is kept, its cameras are transcoded to video in a niced background process,
    # stopped while a take records (docs/fleet.md): "off", "auto" (AV1 where PyAV has it, else
    # H.264), "av1" or "h264".
    compact: str = "off"


COMPACT = ("off", "auto", "av1", "h264")


@dataclass(frozen=True)
class SimConfig:
    task: str = "transfer_cube"
    seed: int = 0
    wire_timing: bool = True
    operator: bool = True


@dataclass(frozen=True)
class RigConfig:
    name: str
    source: str
    rate_hz: float
    arms: tuple[ArmConfig, ...]
    cameras: tuple[CameraConfig, ...]
    safety: SafetyConfig
    sim: SimConfig | None
    raw: dict[str, Any]
    gripper: GripperConfig | None = None  # the file as parsed: the snapshot stored in each episode
    loop: LoopConfig = LoopConfig()
    recording: RecordingConfig = RecordingConfig()
    home: HomeConfig | None = None

    def arm(self, name: str) -> ArmConfig:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(name)

    @property
    def leaders(self) -> list[ArmConfig]:
        return [a for a in self.arms if a.role == "leader"]

    @property
    def followers(self) -> list[ArmConfig]:
        return [a for a in self.arms if a.role == "follower"]


def builtin_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("rig.configs").iterdir() if p.name.endswith(".toml"))


def load_config(name_or_path: str | Path | None = None) -> RigConfig:
    """A built-in config by name, or a TOML file by path."""
    ref = str(name_or_path or DEFAULT_CONFIG)
    path = Path(ref)
    if path.suffix == ".toml" or path.exists():
        if not path.exists():
            raise ConfigError(ref, "(file)", "no such file; give a path to a .toml file or one of the built-in "
                              f"configs: {', '.join(builtin_names())}")
        if not path.is_file():
            raise ConfigError(ref, "(file)", "is a directory, not a file; give the path of a .toml file in it")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(ref, "(file)", f"is not UTF-8 text (at byte offset {exc.start}); save it as UTF-8 TOML") from None
        except OSError as exc:
            raise ConfigError(ref, "(file)", f"cannot be read ({exc.strerror}); check its permissions") from None
        source = str(path)
    else:
        res = resources.files("rig.configs") / f"{ref}.toml"
        if not res.is_file():
            raise ConfigError(ref, "(name)", f"no built-in config by that name; use one of "
                              f"{', '.join(builtin_names())}, or a path to a .toml file")
        text, source = res.read_text(), f"{ref} (built-in)"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "(syntax)", f"{exc}; fix the TOML syntax") from None
    return parse_config(raw, source)


# ---- validation ---------------------------------------------------------------------------------

class _Reader:
    """Typed access to a TOML table that names the key path in every error."""

    def __init__(self, table: dict, source: str, prefix: str):
        self.t, self.source, self.prefix = table, source, prefix

    def key(self, k: str) -> str:
        return f"{self.prefix}{k}"

    def fail(self, k: str, problem: str):
        raise ConfigError(self.source, self.key(k), problem)

    def get(self, k: str, typ, default=..., *, choices=None, positive=False, lo=None, hi=None, name=False):
        """The value of ``k`` checked for type (bool is never a number, numbers are finite),
        ``choices``, ``positive``, the range ``lo``..``hi`` and, with ``name``, a safe name."""
        if k not in self.t:
            if default is ...:
                self.fail(k, f"missing; add `{k} = ...` to this table")
            return default
        return check_value(self.t[k], typ, lambda problem: self.fail(k, problem), choices=choices,
                           positive=positive, lo=lo, hi=hi, name=name)

    def table(self, k: str, default=None) -> _Reader | None:
        v = self.get(k, dict, default)
        return None if v is None else _Reader(v, self.source, f"{self.key(k)}.")

    def unknown(self, allowed: set[str]) -> None:
        for k in self.t:
            if k not in allowed:
                self.fail(k, f"unknown key; valid keys here: {', '.join(sorted(allowed))}")


def check_value(v, typ, fail, *, choices=None, positive=False, lo=None, hi=None, name=False):
    types = typ if isinstance(typ, tuple) else (typ,)
    numeric = any(t in (int, float) for t in types)
    ok = isinstance(v, types) and not (numeric and isinstance(v, bool))
    if float in types and isinstance(v, int) and not isinstance(v, bool):
        v, ok = float(v), True
    if not ok:
        label = "/".join({"str": "string", "dict": "table", "int": "integer", "bool": "boolean (true or false)"}
                         .get(t.__name__, t.__name__) for t in types)
        fail(f"must be {'an' if label[0] in 'aeiou' else 'a'} {label}, got {_show(v)}")
    if isinstance(v, float) and not math.isfinite(v):
        fail(f"must be a finite number, got {v!r}")
    if choices is not None and v not in choices:
        fail(f"{_show(v)} is not one of {', '.join(map(str, choices))}")
    if positive and v <= 0:
        fail(f"must be > 0, got {v!r}")
    if lo is not None and v < lo or hi is not None and v > hi:
        fail(f"must be between {lo} and {hi}, got {v!r}")
    if name and not SAFE_NAME.fullmatch(v):
        fail(f"{_show(v)} is not a safe name: use 1-64 letters, digits, '_', '-' or '.', starting with a "
             "letter or digit (it becomes a file name)")
    return v


def _show(v) -> str:
    """A value for a one-line message: short, and no control characters."""
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _joint(r: _Reader) -> JointSpec:
    r.unknown({"name", "id", "model", "shadow_id", "lower", "upper", "gripper"})
    model = r.get("model", str)
    if model.lower() not in MODELS:
        r.fail("model", f"unknown servo model {model!r}; supported: {', '.join(MODELS)}")
    sid = r.get("id", int)
    if not 0 <= sid <= 252:
        r.fail("id", f"servo IDs are 0-252, got {sid}")
    shadow = r.get("shadow_id", int, None)
    if shadow is not None and not 0 <= shadow <= 252:
        r.fail("shadow_id", f"servo IDs are 0-252, got {shadow}")
    lower, upper = r.get("lower", float, None), r.get("upper", float, None)
    if lower is not None and upper is not None and lower >= upper:
        r.fail("lower", f"lower ({lower}) must be below upper ({upper})")
    return JointSpec(r.get("name", str), sid, model.lower(), shadow, lower, upper)


def _calibration(r: _Reader, n_joints: int, has_gripper: bool) -> ArmCalibration:
    r.unknown({"zero", "sign", "gripper_open", "gripper_closed"})
    zero = r.get("zero", list, [2048] * n_joints)
    sign = r.get("sign", list, [1] * n_joints)
    for k, v in (("zero", zero), ("sign", sign)):
        if len(v) != n_joints:
            r.fail(k, f"has {len(v)} values but the arm has {n_joints} joints (gripper excluded)")
    for i, z in enumerate(zero):
        check_value(z, float, lambda problem, i=i: r.fail(f"zero[{i}]", problem), lo=-(2**31), hi=2**31 - 1)
    for i, g in enumerate(sign):
        check_value(g, int, lambda problem, i=i: r.fail(f"sign[{i}]", problem), choices=(1, -1))
    gripper = None
    if has_gripper:
        ticks = dict(lo=-(2**31), hi=2**31 - 1)
        try:
            gripper = GripperCalibration(r.get("gripper_open", float, **ticks), r.get("gripper_closed", float, **ticks))
        except CalibrationError as exc:
            r.fail("gripper_open", str(exc))
    try:
        return ArmCalibration(tuple(JointCalibration(float(z), int(s)) for z, s in zip(zero, sign, strict=True)),
                              gripper, source="config")
    except CalibrationError as exc:
        r.fail("sign", str(exc))


def _arm(r: _Reader) -> ArmConfig:
    r.unknown({"name", "role", "side", "port", "baud", "joints", "leader", "calibration", "allow_uncalibrated",
               "gripper_current_limit", "device"})
    name = r.get("name", str, name=True)
    device = r.get("device", str, "dynamixel", choices=("dynamixel", "handheld"))
    if device == "handheld":
        if r.get("role", str, choices=ROLES) != "leader":
            r.fail("device", "a handheld gripper can only be a leader; its follower is a Dynamixel arm")
        hand = JointSpec("gripper", 0, "xl330-m077")  # a placeholder servo: the value comes from the gripper
        return ArmConfig(name=name, role="leader", side=r.get("side", str, "center", choices=SIDES),
                         port="handheld", baud=1_000_000, joints=(), gripper=hand, device="handheld",
                         calibration=ArmCalibration((), GripperCalibration(1.0, 0.0), source="handheld"))
    joints_raw = r.get("joints", list)
    if not joints_raw:
        r.fail("joints", "the arm has no joints; list its servos as { name, id, model } tables")
    joints, gripper = [], None
    for i, j in enumerate(joints_raw):
        if not isinstance(j, dict):
            r.fail(f"joints[{i}]", "each joint is a table like { name = \"waist\", id = 1, model = \"xm430-w350\" }")
        jr = _Reader(j, r.source, f"{r.key('joints')}[{i}].")
        spec = _joint(jr)
        if jr.get("gripper", bool, False):
            if gripper is not None:
                jr.fail("gripper", "an arm has at most one gripper")
            gripper = spec
        else:
            joints.append(spec)
    ids = [i for s in (*joints, *([gripper] if gripper else [])) for i in (s.id, s.shadow_id) if i is not None]
    dups = sorted({i for i in ids if ids.count(i) > 1})
    if dups:
        r.fail("joints", f"servo ID(s) {dups} used twice on one bus; give every servo its own ID "
               "(`rig setup-motors PORT`)")
    baud = r.get("baud", int, 1_000_000)
    if baud not in BAUD_CODES:
        r.fail("baud", f"{baud} is not a Dynamixel rate; use one of {', '.join(map(str, sorted(BAUD_CODES)))}")
    cal_table = r.table("calibration")
    cal = _calibration(cal_table, len(joints), gripper is not None) if cal_table else None
    return ArmConfig(
        name=name, role=r.get("role", str, choices=ROLES), side=r.get("side", str, "center", choices=SIDES),
        port=r.get("port", str), baud=baud, joints=tuple(joints), gripper=gripper,
        leader=r.get("leader", str, None), calibration=cal,
        allow_uncalibrated=r.get("allow_uncalibrated", bool, False),
        gripper_current_limit=r.get("gripper_current_limit", int, None, lo=1, hi=32767),
    )


def parse_config(raw: dict[str, Any], source: str) -> RigConfig:
    r = _Reader(raw, source, "")
    r.unknown({"name", "rate_hz", "arms", "cameras", "safety", "sim", "description", "gripper", "loop",
              "recording", "home"})
    gripper = _gripper(r.table("gripper")) if "gripper" in raw else None
    arms_raw = r.get("arms", list, [] if gripper else ...)
    arms = []
    for i, a in enumerate(arms_raw):
        if not isinstance(a, dict):
            r.fail(f"arms[{i}]", "each arm is a [[arms]] table")
        arms.append(_arm(_Reader(a, source, f"arms[{i}].")))
    names = [a.name for a in arms]
    for i, a in enumerate(arms):
        if names.count(a.name) > 1:
            r.fail(f"arms[{i}].name", f"two arms are called {a.name!r}; names must be unique")
        if a.role == "follower":
            leader = a.leader
            if leader is None:
                r.fail(f"arms[{i}].leader", "a follower names the leader it mirrors: add `leader = \"...\"`")
            if leader not in names or arms[names.index(leader)].role != "leader":
                r.fail(f"arms[{i}].leader", f"{leader!r} is not a leader arm in this config; leaders: "
                       f"{', '.join(x.name for x in arms if x.role == 'leader') or 'none'}")
            lead = arms[names.index(leader)]
            if len(lead.joints) != len(a.joints) or (lead.gripper is None) != (a.gripper is None):
                r.fail(f"arms[{i}].joints", f"follower {a.name!r} has {a.n_values} values but its leader "
                       f"{leader!r} has {lead.n_values}; they must match joint for joint")
    cameras = []
    for i, c in enumerate(r.get("cameras", list, [])):
        if not isinstance(c, dict):
            r.fail(f"cameras[{i}]", "each camera is a [[cameras]] table")
        cameras.append(_camera(_Reader(c, source, f"cameras[{i}].")))
    cam_names = [c.name for c in cameras]
    for i, c in enumerate(cameras):
        if c.name in cam_names[:i]:
            r.fail(f"cameras[{i}].name", f"two cameras are called {c.name!r}; names must be unique")
    s = r.table("safety")
    safety = SafetyConfig()
    if s is not None:
        s.unknown(set(SafetyConfig.__dataclass_fields__))
        safety = SafetyConfig(
            max_step_rad=s.get("max_step_rad", float, safety.max_step_rad, positive=True),
            max_gripper_step=s.get("max_gripper_step", float, safety.max_gripper_step, positive=True),
            engage_seconds=s.get("engage_seconds", float, safety.engage_seconds, lo=0, hi=60),
            missed_reads_to_stop=s.get("missed_reads_to_stop", int, safety.missed_reads_to_stop, lo=1, hi=10_000),
            on_exit=s.get("on_exit", str, safety.on_exit, choices=ON_EXIT),
            max_leader_jump_rad=s.get("max_leader_jump_rad", float, safety.max_leader_jump_rad, positive=True),
            takeover_rad=s.get("takeover_rad", float, safety.takeover_rad, lo=0, hi=10),
            watchdog_ms=s.get("watchdog_ms", float, safety.watchdog_ms, lo=0, hi=WATCHDOG_MS[1]),
        )
        if 0 < safety.watchdog_ms < WATCHDOG_MS[0]:
            s.fail("watchdog_ms", f"a servo's bus watchdog counts in 20 ms units: use {WATCHDOG_MS[0]}-"
                   f"{WATCHDOG_MS[1]} ms, or 0 to leave it off")
    loop = _loop(r.table("loop"))
    recording = RecordingConfig()
    if (rt := r.table("recording")) is not None:
        rt.unknown(set(RecordingConfig.__dataclass_fields__))
        recording = RecordingConfig(compact=rt.get("compact", str, "off", choices=COMPACT))
    sim = None
    st = r.table("sim")
    if st is not None:
        st.unknown(set(SimConfig.__dataclass_fields__))
        sim = SimConfig(task=st.get("task", str, "transfer_cube", choices=_sim_tasks()),
                        seed=st.get("seed", int, 0, lo=0, hi=2**32 - 1),
                        wire_timing=st.get("wire_timing", bool, True), operator=st.get("operator", bool, True))
    elif any(a.is_sim for a in arms):
        r.fail("sim", "arms use sim: ports but there is no [sim] table; add `[sim]` (task, seed)")
    home = _home(r.table("home"), gripper, cameras) if "home" in raw else None
    if any(a.is_handheld for a in arms) and gripper is None:
        r.fail("gripper", "an arm has device = \"handheld\" but there is no [gripper] table; add one with its port")
    return RigConfig(name=r.get("name", str, Path(source.split(" ")[0]).stem), source=source,
                     rate_hz=r.get("rate_hz", float, DEFAULT_RATE_HZ, positive=True, hi=1000.0), arms=tuple(arms),
                     cameras=tuple(cameras), safety=safety, sim=sim, raw=raw, gripper=gripper, loop=loop,
                     recording=recording, home=home)



def _home(r: _Reader, gripper: GripperConfig | None, cameras: list[CameraConfig]) -> HomeConfig:
    r.unknown(set(HomeConfig.__dataclass_fields__))
    home = HomeConfig(seed=r.get("seed", int, 0, lo=0, hi=2**32 - 1),
                      seconds=r.get("seconds", float, 120.0, positive=True, hi=3600.0),
                      camera=r.get("camera", str, "wrist", name=True))
    if gripper is None or not gripper.is_standin:
        r.fail("seconds", "the simulated home moves the gripper stand-in: add [gripper] with port = \"standin\"")
    if not any(c.name == home.camera and c.kind == "sim" for c in cameras):
        r.fail("camera", f"the home renders camera {home.camera!r}: add a [[cameras]] table with that name and "
               "kind = \"sim\"")
    return home


def _loop(r: _Reader | None) -> LoopConfig:
    if r is None:
        return LoopConfig()
    from rig.realtime import RealtimeSettingError, parse_setting

    r.unknown(set(LoopConfig.__dataclass_fields__))
    try:
        return LoopConfig(realtime=parse_setting(r.t.get("realtime", "auto")))
    except RealtimeSettingError as exc:
        r.fail("realtime", str(exc))


def _sim_tasks() -> tuple[str, ...]:
    from rig.sim.scene import TASKS  # only for configs with a [sim] table
    return TASKS


def _camera(r: _Reader) -> CameraConfig:
    """A [[cameras]] table: the keys and value types the camera factory takes."""
    import dataclasses

    from drivers.cameras.factory import KINDS, CameraSpec

    fields = {f.name: f for f in dataclasses.fields(CameraSpec)}
    r.unknown(set(fields))
    name = r.get("name", str, name=True)
    kind = r.get("kind", str, choices=KINDS)
    checks = {"width": dict(typ=int, lo=1, hi=16384), "height": dict(typ=int, lo=1, hi=16384),
              "fps": dict(typ=float, positive=True, hi=1000.0), "delay_s": dict(typ=float, lo=0, hi=10.0),
              "freeze_periods": dict(typ=int, lo=1, hi=100_000), "device": dict(typ=(str, int)),
              "serial": dict(typ=str), "fourcc": dict(typ=str), "ring": dict(typ=str), "depth": dict(typ=bool),
              "jpeg": dict(typ=bool), "options": dict(typ=dict)}
    opts = {}
    for k in r.t:
        if k in ("name", "kind"):
            continue
        check = dict(checks.get(k, {"typ": object}))
        opts[k] = r.get(k, check.pop("typ"), **check)
    if "fourcc" in opts and len(opts["fourcc"]) != 4:
        r.fail("fourcc", f"{opts['fourcc']!r} is not a four-character code like \"MJPG\"")
    return CameraConfig(name, kind, opts)


def _gripper(r: _Reader) -> GripperConfig:
    r.unknown({"name", "port", "rate_hz", "record_button", "standin_args"})
    rate = r.get("rate_hz", int, 200, positive=True, hi=10_000)
    button = r.get("record_button", int, 0)
    if not -1 <= button <= 7:
        r.fail("record_button", f"{button} is not a button: use 0-7, or -1 for the trigger")
    args = r.get("standin_args", list, [])
    for i, a in enumerate(args):
        check_value(a, str, lambda problem, i=i: r.fail(f"standin_args[{i}]", problem))
    return GripperConfig(port=r.get("port", str), name=r.get("name", str, "gripper", name=True), rate_hz=rate,
                         record_button=button, standin_args=tuple(str(a) for a in args))
