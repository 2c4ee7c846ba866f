"""`rig sim [--task T] [--seed N] [--no-operator]`: run the simulated ALOHA until Ctrl-C."""

from __future__ import annotations

import time

from rig.commands.argtypes import positive_float, positive_int
from rig.sim.tasks import DEFAULT_TASK, TASKS  # the task modules' names (listing them imports no MuJoCo)


def register(sub) -> None:
    p = sub.add_parser("sim", help="run the simulated bimanual ALOHA (emulated servo ports + cameras)")
    p.add_argument("--task", default=DEFAULT_TASK, choices=TASKS)
    p.add_argument("--seed", type=int, default=0, help="object placement and operator variation")
    p.add_argument("--no-operator", action="store_true",
                   help="leaders stay still (move them yourself by writing goals with torque on)")
    p.add_argument("--cameras", default=None,
                   help="comma-separated cameras (top, angle, front_close, left_pillar, right_pillar, "
                        "left_wrist, right_wrist); default: top,left_wrist,right_wrist; 'none' for no cameras")
    p.add_argument("--width", type=positive_int, default=None, help="camera width (default 320)")
    p.add_argument("--height", type=positive_int, default=None, help="camera height (default 240)")
    p.add_argument("--fps", type=positive_float, default=None, help="camera rate (default 15)")
    p.add_argument("--shadows", action="store_true", help="render shadows and reflections (~3x slower)")
    p.add_argument("--ring-prefix", default=None,
                   help="shared-memory ring names become <prefix><camera> (default rig-sim-<camera>); "
                        "lets two worlds run side by side")
    p.set_defaults(func=run)


def run(args) -> int:
    from rig.sim.launch import camera_specs, start_world

    names = None
    if args.cameras is not None:
        names = [] if args.cameras.strip().lower() == "none" else [c.strip() for c in args.cameras.split(",") if c]
    cams = camera_specs(names, width=args.width, height=args.height, fps=args.fps, ring_prefix=args.ring_prefix)
    print(f"starting the simulated rig ({args.task}, seed {args.seed}) ...", flush=True)
    world = start_world(task=args.task, seed=args.seed, cameras=cams, operator=not args.no_operator,
                        shadows=args.shadows)
    try:
        print("servo ports (Dynamixel Protocol 2.0, 1 Mbaud, IDs 1-9):")
        for name, port in world.ports.items():
            print(f"  {name:<15} {port}")
        if world.cameras:
            print("camera frame rings (shared memory):")
            for name, c in world.cameras.items():
                print(f"  {name:<12} {c['ring']:<24} {c['width']}x{c['height']} @ {c['fps']:g} fps")
        op = "on: the leaders perform the task" if not args.no_operator else "off"
        print(f"scripted operator {op}. Ctrl-C to stop.", flush=True)
        last_success = None
        overruns = 0
        while world.alive:
            time.sleep(1.0)
            s = world.stats()
            ok = world.success()
            if ok != last_success:
                print(f"task {'succeeded' if ok else 'not done'}", flush=True)
                last_success = ok
            if s.get("overruns", 0) > overruns:
                overruns = s["overruns"]
                print(f"warning: physics fell behind real time {s['overruns']} times "
                      f"(real-time factor {s['rtf']:.2f}); use fewer cameras or a lower --fps", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        world.close()
    return 0
