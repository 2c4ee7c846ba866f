"""`rig calibrate {arm,check,camera,latency}`: guided calibration of each part of the rig.

Thin fronts over ``calibration/``: the procedures, their checks and the files live there.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from calibration.arm import CalibrationError
from calibration.check import DEFAULT_GRIPPER_THRESHOLD, DEFAULT_THRESHOLD_DEG, check_arms
from calibration.store import arm_file, calibration_dir, camera_device, save_camera_section
from rig.calibrating import arm_ports, sim_check
from rig.commands.argtypes import positive_float
from rig.config import RigConfig, load_config
from rig.sim.scene import camera_intrinsics as sim_camera_intrinsics


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="calibrate arms, check leader-follower alignment, cameras, latency")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    cs = p.add_subparsers(dest="what", metavar="PART")

    a = cs.add_parser("arm", help="guided zero, direction, range and gripper calibration of one arm")
    a.add_argument("name", help="the arm's name in the config")
    a.add_argument("--config", default=None, help="built-in config name or TOML path (default sim-aloha)")
    a.add_argument("--homing", choices=("auto", "never", "always"), default="auto",
                   help="rewrite servo Homing Offsets: only where a joint's range leaves its mode's window (auto), "
                        "never, or always (mid-range reads 2048)")
    a.add_argument("--dir", type=Path, default=None, help=f"where to store the file (default {calibration_dir()})")
    a.set_defaults(func=run_arm)

    c = cs.add_parser("check", help="leader-follower alignment: per-joint disagreement in degrees")
    c.add_argument("--config", default=None)
    c.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD_DEG, help="flag joints further apart (deg)")
    c.add_argument("--gripper-threshold", type=float, default=DEFAULT_GRIPPER_THRESHOLD,
                   help="flag grippers further apart (normalized opening, default 0.1)")
    c.set_defaults(func=run_check)

    m = cs.add_parser("camera", help="camera intrinsics: ChArUco (UVC) or factory values (RealSense)")
    m.add_argument("name", help="the camera's name in the config")
    m.add_argument("--config", default=None)
    m.add_argument("--views", type=int, default=20, help="views to collect before solving (ChArUco)")
    m.add_argument("--board", type=Path, default=None, help="write the ChArUco board as a PNG to print, and exit")
    m.add_argument("--squares", default="7x5", help="board squares, XxY (default 7x5)")
    m.add_argument("--square-mm", type=float, default=40.0, help="printed square side in mm (measure it)")
    m.add_argument("--marker-mm", type=float, default=30.0, help="printed marker side in mm")
    m.set_defaults(func=run_camera)

    t = cs.add_parser("latency", help="each camera's delay behind the joint states, from motion")
    t.add_argument("--config", default=None)
    t.add_argument("--seconds", type=positive_float, default=15.0, help="how long to record motion")
    t.add_argument("--inject", action="append", default=[], metavar="CAM=MS",
                   help="sim: delay this camera's frames by MS (to check the estimate); not saved")
    t.add_argument("--no-save", action="store_true", help="print the estimates without storing them")
    t.set_defaults(func=run_latency)

    from rig.commands.calibrate_board import register as register_board

    register_board(cs)


# ---- arm ------------------------------------------------------------------------------------------

class LineWaiter:
    """Lines typed on stdin, gathered by a thread so the live table keeps updating meanwhile."""

    def __init__(self, read: Callable[[], str] = input):
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._read = read
        threading.Thread(target=self._run, daemon=True, name="stdin-lines").start()

    def _run(self) -> None:
        while True:
            try:
                self.lines.put(self._read())
            except (EOFError, OSError, RuntimeError):  # RuntimeError: stdin closed ("lost sys.stdin")
                self.lines.put(None)
                return

    def poll(self) -> str | None | bool:
        """A line, None at end of input, False when nothing was typed yet."""
        try:
            return self.lines.get_nowait()
        except queue.Empty:
            return False


def format_table(rows) -> str:
    def f(v, fmt="{:8.1f}"):
        return fmt.format(v) if v is not None else f"{'-':>8}"
    out = [f"{'joint':<14}{'ids':<7}{'ticks':>8}{'angle':>9}{'min':>9}{'max':>9}  note"]
    for r in rows:
        out.append(f"{r.name:<14}{r.ids:<7}{f(r.ticks, '{:8d}')}{f(r.angle_deg, '{:9.1f}')}"
                   f"{f(r.min_deg, '{:9.1f}')}{f(r.max_deg, '{:9.1f}')}  {r.note}")
    return "\n".join(out)


def run_arm(args, waiter: LineWaiter | None = None, out=None) -> int:
    from calibration.procedure import ArmCalibrator

    out = out or sys.stdout
    config = load_config(args.config)
    try:
        cfg = config.arm(args.name)
    except KeyError:
        raise CalibrationError(f"{config.source}: no arm {args.name!r}; arms: "
                               f"{', '.join(a.name for a in config.arms)}") from None
    if cfg.is_handheld:
        raise CalibrationError(f"{args.name} is a handheld gripper; it calibrates itself (`rig gripper`)")
    if cfg.calibration is not None:
        print(f"note: {config.source} has an inline [arms.calibration] for {cfg.name}; it wins over the file "
              f"this writes ({arm_file(cfg.name, args.dir)}). Remove it from the config to use the file.", file=out)
    ports, world = arm_ports(config, [cfg.name])
    waiter = waiter or LineWaiter()
    tty = out.isatty() if hasattr(out, "isatty") else False
    clr = "\x1b[J" if tty else ""  # clear the live table below the cursor
    try:
        with ArmCalibrator(cfg, ports[cfg.name], homing=args.homing, directory=args.dir) as cal:
            proc = cal.procedure
            print(f"Calibrating {cfg.name} on {ports[cfg.name]} ({len(cal.servos)} servos, torque off). "
                  "Enter confirms a step, 'b' goes back, 'q' quits.", file=out)
            while not proc.done:
                step = proc.step
                print(f"\n[{proc.index + 1}/{len(proc.steps) - 1}] {step.title}: {step.instruction}", file=out)
                last_print = 0.0
                while True:
                    cal.sample()
                    now = time.monotonic()
                    if tty and now - last_print > 0.25:
                        table = format_table(proc.table())
                        print("\x1b[J" + table + f"\x1b[{table.count(chr(10)) + 1}A", end="", file=out, flush=True)
                        last_print = now
                    line = waiter.poll()
                    if line is False:
                        time.sleep(0.02)
                        continue
                    if line is None or line.strip().lower() == "q":
                        print(clr + "calibration abandoned; nothing was written", file=out)
                        return 1
                    if line.strip().lower() == "b":
                        proc.back()
                        break
                    try:
                        proc_step = cal.confirm()
                    except CalibrationError as exc:
                        print(f"{clr}! {exc}", file=out)
                        continue
                    print(clr + format_table(proc.table()), file=out)
                    del proc_step
                    break
            stored = cal.finish()
    finally:
        if world is not None:
            world.close()
    for ch in cal.changes:
        print(f"servo {ch.id}: Homing Offset {ch.old} -> {ch.new}" +
              (f" ({ch.leftover:+d} ticks of whole turns kept in the file: the register takes ±1044479)"
               if ch.leftover else ""), file=out)
    print(f"saved {stored.path} (identity: {stored.identity.describe()})", file=out)
    return 0


# ---- check ----------------------------------------------------------------------------------------

def run_check(args, waiter: LineWaiter | None = None, out=None) -> int:
    out = out or sys.stdout
    config = load_config(args.config)
    if not config.followers:
        raise CalibrationError(f"{config.source} has no follower arms to check")
    if all(a.is_sim for a in config.arms):
        reports = sim_check(config, threshold_deg=args.threshold, gripper_threshold=args.gripper_threshold)
        for r in reports:
            print(r.format() + "\n", file=out)
        bad = sum(len(r.flagged) for r in reports)
        print("alignment OK on every pose" if not bad else f"{bad} disagreement(s) over the threshold", file=out)
        return 0 if not bad else 1
    return _hardware_check(config, args, waiter or LineWaiter(), out)


def _hardware_check(config: RigConfig, args, waiter: LineWaiter, out) -> int:
    from calibration.apply import verify_connected
    from rig.arms import Follower, Leader

    arms = []
    try:
        leaders = {a.name: Leader(a, a.port, timeout_margin_ms=100).open() for a in config.leaders
                   if not a.is_handheld}
        arms += leaders.values()
        followers = [Follower(a, a.port, timeout_margin_ms=100).open() for a in config.followers]
        arms += followers
        for a in arms:
            verify_connected(a.cfg, a.calibration, a.bus)
            a.torque_off()  # both arms limp: the operator poses them by hand
        print("Followers and leaders are limp. Pose each follower like its leader (or both alike), then press "
              "Enter to compare; 'q' quits.", file=out)
        bad = 0
        while True:
            line = waiter.poll()
            if line is False:
                time.sleep(0.05)
                continue
            if line is None or line.strip().lower() == "q":
                break
            report = check_arms(followers, leaders, args.threshold, args.gripper_threshold)
            bad = len(report.flagged)
            print(report.format(), file=out)
        return 0 if not bad else 1
    finally:
        for a in arms:
            a.close()


# ---- camera ---------------------------------------------------------------------------------------

def run_camera(args, out=None) -> int:
    from calibration.intrinsics import CharucoTarget, realsense_intrinsics

    out = out or sys.stdout
    try:
        sx, sy = (int(v) for v in args.squares.lower().split("x"))
    except ValueError:
        raise CalibrationError(f"--squares {args.squares!r}: give it as XxY, e.g. 7x5") from None
    target = CharucoTarget(sx, sy, args.square_mm / 1000, args.marker_mm / 1000)
    if args.board is not None:
        import cv2

        img = target.image(px_per_m=300 / 0.0254, margin_px=60)  # 300 dpi
        cv2.imwrite(str(args.board), img)
        print(f"wrote {args.board}: print at 100 % scale (300 dpi), glue flat, then measure a square and pass "
              "--square-mm", file=out)
        return 0
    config = load_config(args.config)
    cam_cfg = next((c for c in config.cameras if c.name == args.name), None)
    if cam_cfg is None:
        raise CalibrationError(f"{config.source}: no camera {args.name!r}; cameras: "
                               f"{', '.join(c.name for c in config.cameras) or 'none'}")
    spec = cam_cfg.spec()
    if cam_cfg.kind == "realsense":
        intr = realsense_intrinsics(str(spec.get("serial", "")), int(spec.get("width", 640)),
                                    int(spec.get("height", 480)), int(spec.get("fps", 30)))
    elif cam_cfg.kind == "sim":
        if config.sim is None:
            raise CalibrationError(f"{config.source}: camera {args.name!r} is a sim camera but there is no [sim] table")
        intr = sim_camera_intrinsics(config.sim.task, cam_cfg.name, int(spec.get("width", 320)),
                                     int(spec.get("height", 240)))
    else:
        intr = _charuco_live(spec, target, args.views, out)
    path = save_camera_section(cam_cfg.name, camera_device(spec), "intrinsics", intr.to_dict())
    extra = f", RMS reprojection {intr.rms_px:.3f} px over {intr.views} views" if intr.rms_px is not None else ""
    print(f"fx {intr.fx:.2f} fy {intr.fy:.2f} cx {intr.cx:.2f} cy {intr.cy:.2f}{extra}\nsaved {path}", file=out)
    return 0


def _charuco_live(spec: dict, target, views: int, out):
    from calibration.intrinsics import CharucoCalibrator
    from drivers.cameras.factory import open_camera

    cam = open_camera(spec)
    cam.start()
    try:
        cal = CharucoCalibrator(target, (cam.width, cam.height))
        print(f"Show the board to {spec['name']}: still at each pose; tile the whole image; tilt it. "
              f"Collecting {views} views (Ctrl-C to stop early and solve).", file=out)
        last_index = -1
        with contextlib.suppress(KeyboardInterrupt):
            while len(cal.obj) < views:
                frame = cam.latest()
                cam.raise_if_faulted()
                if frame is None or frame.index == last_index:
                    time.sleep(0.05)
                    continue
                last_index = frame.index
                rgb = frame.data
                if frame.encoding == "jpeg":
                    import cv2
                    rgb = cv2.cvtColor(cv2.imdecode(frame.data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                rep = cal.add_view(rgb)
                if rep.accepted:
                    print(f"view {rep.views}: {rep.corners} corners, coverage {rep.coverage:.0%}. {rep.hint}", file=out)
                    time.sleep(0.7)  # time to move to a new pose
        intr, errs = cal.calibrate()
        worst = int(np.argmax(errs))
        print(f"per-view error: median {np.median(errs):.3f} px, worst view {worst + 1} at {errs[worst]:.3f} px",
              file=out)
        return intr
    finally:
        cam.stop()


# ---- latency --------------------------------------------------------------------------------------

def _parse_inject(items: Sequence[str]) -> dict[str, float]:
    out = {}
    for item in items:
        try:
            cam, ms = item.split("=", 1)
            out[cam] = float(ms) / 1000
        except ValueError:
            raise CalibrationError(f"--inject takes CAM=MILLISECONDS, e.g. top=120, not {item!r}") from None
    return out


def run_latency(args, out=None) -> int:
    import os

    from calibration.latency import TickCollector, collect_live
    from rig.session import RigSession

    out = out or sys.stdout
    config = load_config(args.config)
    if not config.cameras:
        raise CalibrationError(f"{config.source} has no cameras")
    inject = _parse_inject(args.inject)
    if inject and config.sim is None:
        raise CalibrationError("--inject works on the simulated rig only")
    ticks = TickCollector()
    opts = {"ring_prefix": f"rig-lat-{os.getpid()}-"} if config.sim else {}
    with RigSession(config, sink=ticks, world_options=opts) as session:
        for cam, d in inject.items():
            session.world.set_camera_delay(cam, d)
        session.start()
        time.sleep(config.safety.engage_seconds + 0.3)
        if session.world is not None:
            session.world.set_operator(True, True)
            print(f"the scripted operator moves the arms; recording {args.seconds:g} s ...", file=out, flush=True)
        else:
            print(f"move the leaders in view of every camera, with pauses and quick moves, for {args.seconds:g} s ...",
                  file=out, flush=True)
        rec = collect_live(session.cameras, ticks, args.seconds, min_frames=60, max_seconds=3 * args.seconds)
        if session.teleop is not None and session.teleop.fault is not None:
            raise session.teleop.fault
    estimates = rec.estimate()
    for cam, est in estimates.items():
        note = f" (injected {inject[cam] * 1e3:.0f} ms)" if cam in inject else ""
        print(f"{cam:<14} latency {est.latency_ms:7.1f} ms  r={est.correlation:.2f}  frames {est.frames}  "
              f"frame period {est.frame_period_ms:.1f} ms{note}", file=out)
    if inject or args.no_save:
        print("not saved" + (" (delays were injected)" if inject else ""), file=out)
        return 0
    for c in config.cameras:
        if c.name in estimates:
            path = save_camera_section(c.name, camera_device(c.spec()), "latency", estimates[c.name].to_dict())
    print(f"saved to {path.parent}; the recorder subtracts these when aligning frames to ticks", file=out)
    return 0
