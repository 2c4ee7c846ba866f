"""`rig export DATASET OUT --format aloha-hdf5|lerobot`: episodes for ACT/ALOHA training code or LeRobot."""

from __future__ import annotations

import argparse
import os

from drivers.errors import RigError


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export episodes to another format (ACT/ALOHA HDF5, LeRobot v3.0)")
    p.add_argument("dataset", help="dataset directory (zarr)")
    p.add_argument("out", help="output directory")
    p.add_argument("--format", default="aloha-hdf5", choices=["aloha-hdf5", "lerobot"], help="output format")
    p.add_argument("--cameras", help="comma-separated cameras to export (default: all)")
    p.add_argument("--recovered", action="store_true", help="also export episodes recovered after a crash")
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
    if args.cameras is not None and not args.cameras.replace(",", "").strip():
        raise RigError(f"--cameras {args.cameras!r} names no camera: give them comma-separated (e.g. top,left_wrist), "
                       "or leave --cameras out to export every camera")
    if args.format == "lerobot":
        from rig.commands import export_lerobot

        return export_lerobot.run(args)
    import sys

    from recorder.export_hdf5 import AlohaMapping, export_dataset, hdf5_left_broken

    mapping = AlohaMapping(args.stream, args.qpos, args.qvel, args.effort, args.action)
    cams = [c.strip() for c in args.cameras.split(",") if c.strip()] if args.cameras is not None else None
    try:
        report = export_dataset(args.dataset, args.out, mapping, cams, include_recovered=args.recovered,
                                include_failed=args.include_failed,
                                sim=args.sim, say=lambda line: print(f"rig: {line}", file=sys.stderr))
    except RigError as exc:
        if not hdf5_left_broken():
            raise
        # HDF5 could not close a file on a disk filled mid-write and would crash at exit: leave now.
        print(f"rig: {exc}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(2)
    return _summary(report, args.out)


def _summary(report, out) -> int:
    """The exported paths, one count line, exit 2 when an episode was skipped (each named above)."""
    for p in report.paths:
        print(p)
    kept = f", {len(report.kept)} already there from an earlier run" if report.kept else ""
    skipped = f", skipped {len(report.skipped)}" if report.skipped else ""
    print(f"exported {len(report.paths)} episode(s) to {out}{kept}{skipped}")
    return 2 if report.skipped else 0
