"""`rig episodes DATASET`: list episodes; keep, discard, relabel or recover them."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser("episodes", help="list the episodes of a dataset and relabel them")
    p.add_argument("dataset", help="dataset directory (zarr)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--recover", type=int, metavar="N", help="trim crashed episode N and mark it recovered")
    p.add_argument("--discard", type=int, metavar="N", help="mark episode N discarded")
    p.add_argument("--keep", type=int, metavar="N", help="mark episode N complete again")
    p.add_argument("--success", nargs=2, metavar=("N", "yes|no|unset"), help="label episode N's outcome")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from recorder import Dataset, RecorderError, Status

    ds = Dataset(args.dataset)
    if args.recover is not None:
        ds.recover(args.recover)
    if args.discard is not None:
        ds.discard(args.discard)
    if args.keep is not None:
        ds.set_status(args.keep, Status.COMPLETE)
    if args.success:
        n, word = args.success
        values = {"yes": True, "no": False, "unset": None}
        if word not in values:
            raise RecorderError(f"--success takes yes, no or unset, not {word!r}")
        ds.set_success(int(n), values[word])
    infos, damage = ds.scan()
    # quick check of every listed episode: all chunks present, tick streams' checksums (not the frames)
    for i in infos:
        damage.extend(ds.verify(i.index, deep=False))
    bad = {d.episode for d in damage}
    if args.json:
        print(json.dumps([{**i.__dict__, "path": str(i.path), "flags": i.flags + (["damaged"] if i.index in bad else
                                                                                   [])} for i in infos], indent=1))
        return _report(damage, sys.stderr)
    cams = sorted({c for i in infos for c in i.camera_counts})
    header = ["index", "status", "success", "duration_s", *[f"frames:{c}" for c in cams], "flags"]
    rows = [
        [
            str(i.index),
            i.status,
            {True: "yes", False: "no", None: "-"}[i.success],
            f"{i.duration_s:.1f}",
            *[str(i.camera_counts.get(c, "-")) for c in cams],
            " ".join(i.flags + (["damaged"] if i.index in bad else [])),
        ]
        for i in infos
    ]
    widths = [max(len(h), *(len(r[k]) for r in rows)) if rows else len(h) for k, h in enumerate(header)]
    for line in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    if not rows:
        print(f"(no episodes in {args.dataset})")
    return _report(damage, sys.stderr)


def _report(damage, err) -> int:
    """One line per damaged thing; exit 2 when there is any (`rig verify` also reads the frames)."""
    for d in damage:
        print(f"rig: damaged: {d}", file=err)
    return 2 if damage else 0
