"""Simulated rig costs: render time per camera (shadows/reflections on vs off, several
resolutions), raw physics speed, and the real-time factor of the running world process.

    python benchmarks/bench_sim_render.py [--frames 10] [--seconds 5] [--cameras top,left_wrist]

Uses MUJOCO_GL=egl unless set. Numbers depend on the machine's load: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")

RESOLUTIONS = ((480, 640), (240, 320), (120, 160))


def bench_render(task: str, cameras: list[str], frames: int) -> None:
    import mujoco

    from rig.sim.scene import SimScene

    scene = SimScene(task)
    scene.reset(0)
    m, d = scene.model, scene.data
    print(f"render time per frame, ms (MUJOCO_GL={os.environ['MUJOCO_GL']}, "
          f"LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS', 'all cores')})")
    print("(wall ms / CPU ms of this process, all render threads; CPU time is what a busy machine cannot hide)")
    print(f"{'camera':<13}{'size':>9}  {'shadows+refl':>14}  {'plain':>12}  {'speed-up':>8}")
    for h, w in RESOLUTIONS:
        m.vis.global_.offwidth, m.vis.global_.offheight = max(640, w), max(480, h)
        r = mujoco.Renderer(m, h, w)
        for cam in cameras:
            times = {}
            for flag in (True, False):
                r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = flag
                r.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = flag
                r.update_scene(d, cam)
                r.render()  # warm-up
                t, c = time.perf_counter(), time.process_time()
                for _ in range(frames):
                    r.update_scene(d, cam)
                    r.render()
                times[flag] = ((time.perf_counter() - t) / frames * 1000, (time.process_time() - c) / frames * 1000)
            on, off = times[True], times[False]
            print(f"{cam:<13}{w:>4}x{h:<4}  {on[0]:>6.1f} /{on[1]:>6.1f}  {off[0]:>5.1f} /{off[1]:>5.1f}  "
                  f"{on[1] / off[1]:>7.1f}x")
        r.close()


def bench_physics(task: str, seconds: float) -> None:
    from rig.sim.scene import SimScene

    scene = SimScene(task)
    scene.reset(0)
    n = int(seconds / scene.model.opt.timestep)
    t = time.perf_counter()
    scene.step(n)
    wall = time.perf_counter() - t
    print(f"\nphysics alone: {n} steps of {scene.model.opt.timestep * 1000:.1f} ms in {wall:.2f} s "
          f"= {wall / n * 1e6:.0f} us/step, {n * scene.model.opt.timestep / wall:.0f}x real time")


def bench_world(task: str, seconds: float, cameras: str) -> None:
    from dynamixel_sdk import COMM_SUCCESS, GroupSyncRead, PacketHandler, PortHandler

    from rig.sim.launch import camera_specs, start_world

    names = [] if cameras == "none" else (None if cameras == "default" else cameras.split(","))
    specs = camera_specs(names)
    world = start_world(task=task, cameras=specs, ring_prefix=f"rig-bench-{os.getpid()}-")
    try:
        port = PortHandler(world.ports["left_leader"])
        port.openPort()
        port.setBaudRate(1_000_000)
        sync = GroupSyncRead(port, PacketHandler(2.0), 132, 4)
        for i in range(1, 10):
            sync.addParam(i)
        lat, fails = [], 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            if sync.txRxPacket() != COMM_SUCCESS:
                fails += 1
            lat.append((time.perf_counter() - t) * 1000)
            time.sleep(0.02)
        port.closePort()
        s = world.stats()
        lat.sort()
        cams = ", ".join(f"{c.name} {c.width}x{c.height}@{c.fps:g}" for c in specs) or "none"
        print(f"\nworld process ({cams}), {seconds:.0f} s with a 50 Hz 9-servo sync read on one leader:")
        print(f"  real-time factor {s['rtf']:.3f}, overruns {s['overruns']}")
        print(f"  sync read latency p50 {lat[len(lat) // 2]:.2f} ms, p99 {lat[int(len(lat) * 0.99)]:.2f} ms, "
              f"failed reads {fails}/{len(lat)}")
        for name, n in s.get("frames", {}).items():
            print(f"  camera {name}: {n / seconds:.1f} fps delivered, render {s['render_ms'][name]:.1f} ms/frame")
    finally:
        world.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="transfer_cube")
    ap.add_argument("--frames", type=int, default=10, help="frames per render measurement")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the physics and world runs")
    ap.add_argument("--cameras", default="top,angle,left_wrist",
                    help="cameras for the render table (comma-separated)")
    ap.add_argument("--world-cameras", default="default",
                    help="cameras of the world run: 'default', 'none' or a comma-separated list")
    args = ap.parse_args()
    bench_render(args.task, args.cameras.split(","), args.frames)
    bench_physics(args.task, args.seconds)
    bench_world(args.task, args.seconds, args.world_cameras)


if __name__ == "__main__":
    main()
