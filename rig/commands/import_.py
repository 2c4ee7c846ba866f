"""`rig import SOURCE DATASET`: a LeRobot v3.0 dataset or an ALOHA HDF5 folder into a rig dataset,
so inspect, replay and quick-train work on data recorded elsewhere."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rig.commands.argtypes import positive_float


def register(subparsers) -> None:
    p = subparsers.add_parser("import", help="import a LeRobot v3.0 dataset or an ALOHA HDF5 folder")
    p.add_argument("source", help="LeRobot dataset directory (meta/info.json) or folder of episode_*.hdf5")
    p.add_argument("dataset", help="rig dataset directory (created if missing; episodes are added)")
    p.add_argument("--fps", type=positive_float, default=50.0, help="ALOHA HDF5 only: tick rate (default 50, ALOHA's)")
    p.add_argument("--task", help="ALOHA HDF5 only: task label (default: the file's rig_task or the folder name)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from drivers.errors import RigError
    from recorder.import_aloha import import_aloha, is_aloha_folder
    from recorder.import_lerobot import import_lerobot, is_lerobot

    src = Path(args.source)
    if not src.exists():
        raise RigError(f"{src} does not exist; give a LeRobot dataset directory or a folder of episode_*.hdf5")
    def log(line: str) -> None:
        print(line, file=sys.stderr)

    if is_lerobot(src):
        report = import_lerobot(src, args.dataset, log=log)
    elif is_aloha_folder(src):
        report = import_aloha(src, args.dataset, fps=args.fps, task=args.task, log=log)
    else:
        raise RigError(f"{src} is neither a LeRobot dataset (no meta/info.json) nor an ALOHA folder "
                       f"(no episode_*.hdf5)")
    print(f"imported {len(report.episodes)} episode(s), {report.frames} frames, into {args.dataset}: "
          f"episodes {report.episodes}")
    if report.skipped:
        print(f"rig: {len(report.skipped)} episode(s) skipped (see above)", file=sys.stderr)
        return 2
    return 0
