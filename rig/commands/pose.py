"""`rig pose DATASET [EPISODE]`: compute (again) the handheld gripper's pose stream of episodes.

Also `rig pose DATASET EPISODE --view`: the stored trajectory in the terminal, top and side views.
"""

from __future__ import annotations

import argparse

from rig.commands.argtypes import positive_float, positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser("pose", help="the handheld gripper's 6-DoF pose from its wrist camera and IMU")
    p.add_argument("dataset", help="dataset directory (zarr)")
    p.add_argument("episode", nargs="?", type=int, help="episode index (default: every episode)")
    p.add_argument("--camera", default="wrist", help="the wrist camera's name (default wrist)")
    p.add_argument("--view", action="store_true", help="show the stored trajectory (top and side views)")
    p.add_argument("--width", type=positive_int, default=100, help="plot width in characters")
    p.add_argument("--sim-home", type=positive_float, default=None, metavar="SECONDS",
                   help="first record a take of the simulated home (scripted hand, ground truth) into DATASET")
    p.add_argument("--seed", type=int, default=0, help="the scripted hand's seed (with --sim-home)")
    p.add_argument("--imu", choices=("firmware", "world"), default="firmware",
                   help="with --sim-home: the IMU through the firmware's host build and the driver (real time), "
                        "or the world's readings with the firmware's noise model")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recorder import Dataset
    from rig.pose.episode import compute_episode_pose, format_pose_report, pose_report

    if args.sim_home is not None:
        args.episode = record_sim_home(args.dataset, args.sim_home, args.seed, args.imu)
    ds = Dataset(args.dataset)
    indices = [args.episode] if args.episode is not None else ds.indices()
    if args.view:
        from rig.pose.view import trajectory_plot

        for i in indices:
            print(trajectory_plot(ds.episode(i), width=args.width))
        return 0
    for i in indices:
        res = compute_episode_pose(args.dataset, i, camera=args.camera)
        summary = pose_report(ds.episode(i)) or res.summary()
        print(f"episode {i}: pose computed in {res.seconds:.1f} s")
        print("\n".join(format_pose_report(summary)))
    return 0


def record_sim_home(dataset: str, seconds: float, seed: int, imu_mode: str) -> int:
    import os

    os.environ.setdefault("MUJOCO_GL", "egl")
    from rig.pose.episode import record_home_take
    from rig.sim.home import simulate

    print(f"rendering {seconds:.0f} s of the simulated home (seed {seed}) ...", flush=True)
    take = simulate(seed=seed, duration=seconds)
    imu = None
    if imu_mode == "firmware":
        from rig.pose.firmware_imu import imu_through_firmware

        print("playing its IMU through the firmware's host build (real time) ...", flush=True)
        imu = imu_through_firmware(take)
    else:
        from rig.pose.firmware_imu import firmware_noise

        imu = firmware_noise(take, seed)
    index = record_home_take(dataset, take, imu)
    print(f"recorded episode {index} in {dataset} (ground truth in its ground_truth stream)")
    return index
