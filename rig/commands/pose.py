"""`rig pose DATASET [EPISODE]`: compute (again) the handheld gripper's pose stream of episodes.

Also `rig pose DATASET EPISODE --view`: the stored trajectory in the terminal, top and side views.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("pose", help="the handheld gripper's 6-DoF pose from its wrist camera and IMU")
    p.add_argument("dataset", help="dataset directory (zarr)")
    p.add_argument("episode", nargs="?", type=int, help="episode index (default: every episode)")
    p.add_argument("--camera", default="wrist", help="the wrist camera's name (default wrist)")
    p.add_argument("--view", action="store_true", help="show the stored trajectory (top and side views)")
    p.add_argument("--width", type=int, default=100, help="plot width in characters")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recorder import Dataset
    from rig.pose.episode import compute_episode_pose, format_pose_report, pose_report

    ds = Dataset(args.dataset)
    indices = [args.episode] if args.episode is not None else ds.indices()
    if args.view:
        from rig.pose.view import trajectory_plot

        for i in indices:
            print(trajectory_plot(ds.episode(i), width=args.width))
        return 0
    flagged = False
    for i in indices:
        res = compute_episode_pose(args.dataset, i, camera=args.camera)
        summary = pose_report(ds.episode(i)) or res.summary()
        print(f"episode {i}: pose computed in {res.seconds:.1f} s")
        print("\n".join(format_pose_report(summary)))
        flagged |= bool(res.flags)
    return 0
