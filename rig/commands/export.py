"""`rig export DATASET --format aloha-hdf5 OUT`: write episodes for ACT/ALOHA training code."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export episodes to another format (ACT/ALOHA HDF5)")
    p.add_argument("dataset", help="dataset directory (zarr)")
    p.add_argument("out", help="output directory")
    p.add_argument("--format", default="aloha-hdf5", choices=["aloha-hdf5", "lerobot"], help="output format")
    p.add_argument("--cameras", help="comma-separated cameras to export (default: all)")
    p.add_argument("--include-failed", action="store_true", help="also export episodes labelled failed")
    p.add_argument("--sim", action="store_true", help="set attrs['sim'] = True")
    p.add_argument("--stream", default="joints", help="tick stream (default: joints)")
    p.add_argument("--qpos", default="follower_q")
    p.add_argument("--qvel", default="follower_dq")
    p.add_argument("--effort", default="follower_current")
    p.add_argument("--action", default="action")
    from rig.commands import export_lerobot

    export_lerobot.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.format == "lerobot":
        from rig.commands import export_lerobot

        return export_lerobot.run(args)
    from recorder.export_hdf5 import AlohaMapping, export_dataset

    mapping = AlohaMapping(args.stream, args.qpos, args.qvel, args.effort, args.action)
    cams = [c for c in args.cameras.split(",") if c] if args.cameras else None
    paths = export_dataset(
        args.dataset, args.out, mapping, cams, include_failed=args.include_failed, sim=args.sim
    )
    for p in paths:
        print(p)
    print(f"exported {len(paths)} episode(s) to {args.out}")
    return 0
