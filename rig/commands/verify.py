"""`rig verify DATASET`: read every chunk of every episode and check its CRC-32C; name the damage."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("verify", help="check every chunk of a dataset against its checksum")
    p.add_argument("dataset", help="dataset directory (zarr)")
    p.add_argument("episode", nargs="?", type=int, help="only this episode (default: every episode)")
    p.add_argument("--quick", action="store_true", help="skip the camera frames' checksums (still checks every "
                   "chunk is there)")
    p.add_argument("--repair-root", action="store_true",
                   help="write the dataset's root zarr.json again if it is damaged (it holds only the format marker)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recorder import DamagedDatasetError, Dataset

    try:
        ds = Dataset(args.dataset)
    except DamagedDatasetError:
        if not args.repair_root:
            raise
        Dataset.repair_root(args.dataset)
        print(f"rewrote {args.dataset}/zarr.json")
        ds = Dataset(args.dataset)
    indices = [args.episode] if args.episode is not None else ds.indices()
    damaged, unverified = set(), []
    for i in indices:
        for d in ds.verify(i, deep=not args.quick):
            print(d)
            damaged.add(i)
        if i not in damaged and not ds.info(i).checksum:
            unverified.append(i)
    ok = len(indices) - len(damaged) - len(unverified)
    summary = f"{args.dataset}: {len(indices)} episode(s): {ok} verified, {len(damaged)} damaged"
    if unverified:
        summary += f", {len(unverified)} unverified (recorded before checksums: {unverified})"
    if args.quick:
        summary += " (quick: camera frames present but not read)"
    print(summary)
    return 2 if damaged else 0
