"""`rig inspect DATASET [EPISODE]`: dropped frames, skew, overruns, stalls and idle stretches."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser("inspect", help="health report of recorded episodes")
    p.add_argument("dataset", help="dataset directory (zarr)")
    p.add_argument("episode", nargs="?", type=int, help="episode index (default: every episode)")
    p.add_argument("--tick-stream", help="stream whose ticks frames are aligned to (default: auto)")
    p.add_argument(
        "--latency", action="append", default=[], metavar="CAM=MS", help="camera latency to subtract, ms"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _latencies(items: list[str]) -> dict[str, int]:
    from recorder import RecorderError

    out = {}
    for item in items:
        cam, _, ms = item.partition("=")
        try:
            out[cam] = int(float(ms) * 1e6)
        except ValueError:
            raise RecorderError(f"--latency takes CAM=MILLISECONDS, e.g. high=35, not {item!r}") from None
    return out


def run(args: argparse.Namespace) -> int:
    import sys

    from recorder import DamagedEpisodeError, Dataset
    from recorder.inspect import format_report, inspect_episode

    ds = Dataset(args.dataset)
    indices = [args.episode] if args.episode is not None else ds.indices()
    lat = _latencies(args.latency)
    reports, damage = [], []
    for i in indices:
        found = ds.verify(i)  # every chunk there and passing its checksum, frames included
        if not found:
            try:
                reports.append(inspect_episode(ds.episode(i), args.tick_stream, lat))
            except DamagedEpisodeError as exc:
                found = [exc.damage]
        damage.extend(found)
    from rig.pose.episode import format_pose_report, pose_report

    poses = {r.index: pose_report(ds.episode(r.index)) for r in reports}  # the handheld pose, if computed
    if args.json:
        print(json.dumps([{**r.to_dict(), **({"pose": poses[r.index]} if poses[r.index] else {})}
                          for r in reports], indent=1))
    else:
        print("\n".join("\n".join([format_report(r), *format_pose_report(poses[r.index] or {})][:None if poses[r.index]
                                   else 1]) for r in reports) or f"(no episodes in {args.dataset})")
    for d in damage:
        print(f"rig: damaged: {d}", file=sys.stderr)
    return 2 if damage else 0
