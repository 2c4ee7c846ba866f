"""`rig export DATASET OUT --format lerobot`: the options and the run (rig/commands/export.py
hands this format over; recorder/export_lerobot.py does the work)."""

from __future__ import annotations

import argparse
import sys
import time

from rig.commands.argtypes import int_range, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--format lerobot (LeRobotDataset v3.0; --qpos is observation.state)")
    g.add_argument("--fps", type=positive_int, help="rows per second (default: the tick rate, one row per tick)")
    g.add_argument("--codec", default="auto", help="video codec: auto (AV1 where available, else H.264), av1, h264")
    g.add_argument("--crf", type=int_range(0, 63), default=30, help="video quality, lower is better and larger (default 30)")
    g.add_argument("--gop", type=positive_int, default=2, help="frames between keyframes (default 2, capped at 1 s)")
    g.add_argument("--robot-type", help="info.json robot_type (default: the rig's name)")


def run(args: argparse.Namespace) -> int:
    from recorder.export_hdf5 import AlohaMapping
    from recorder.export_lerobot import LeRobotExportOptions, export_lerobot
    from recorder.video import VideoOptions

    opts = LeRobotExportOptions(
        fields=AlohaMapping(args.stream, args.qpos, args.qvel, args.effort, args.action),
        cameras=[c for c in args.cameras.split(",") if c] if args.cameras else None, fps=args.fps,
        include_recovered=args.recovered, include_failed=args.include_failed, robot_type=args.robot_type,
        video=VideoOptions(codec=args.codec, crf=args.crf, gop=args.gop),
    )
    t0 = time.monotonic()
    report = export_lerobot(args.dataset, args.out, opts, log=lambda line: print(line, file=sys.stderr),
                            progress=lambda line: print(line, flush=True))
    wall = time.monotonic() - t0
    kept = f" ({len(report.already)} already there)" if report.already else ""
    speed = f", {report.recorded_s / wall:.1f} recorded s per s" if report.exported and wall > 0 else ""
    print(f"exported {len(report.exported)} episode(s), {report.frames} frames, to {args.out}{kept}{speed}")
    if report.skipped:
        print(f"rig: {len(report.skipped)} episode(s) skipped (see above); fix or leave them out, then run the "
              f"same command again to add them", file=sys.stderr)
        return 2
    return 0
