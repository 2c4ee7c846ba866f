"""`rig fleet ...`: the central side -- ingest uploads into a catalog, simulate a fleet, compact takes."""

from __future__ import annotations

import argparse
from pathlib import Path

from drivers.errors import RigError


def register(sub) -> None:
    p = sub.add_parser("fleet", help="fleet: ingest uploaded episodes (Ray), simulate contractors, compact takes")
    fsub = p.add_subparsers(dest="fleet_command", metavar="ACTION")
    i = fsub.add_parser("ingest", help="validate uploaded episodes into a Parquet catalog and a contractor report")
    i.add_argument("source", help="s3://bucket/prefix or a directory store, as given to `rig upload`")
    i.add_argument("--catalog", type=Path, required=True, help="catalog directory (created; reruns add new episodes)")
    i.add_argument("--address", default=None,
                   help="join a running Ray cluster: the head's GCS address HOST:PORT (port 6379 by default), or "
                        "`auto`; run on a node of the cluster (ray:// is not supported by Ray Data). "
                        "Default: a local Ray on this machine")
    i.add_argument("--workers", type=int, default=None,
                   help="tasks at once: the local Ray's CPUs, or a cap on a cluster (default: all CPUs)")
    i.add_argument("--lerobot", type=Path, default=None, help="also export accepted episodes as LeRobot v3 here")
    i.add_argument("--progress", action="store_true", help="show Ray Data's progress bars")
    i.set_defaults(func=run_ingest)
    s = fsub.add_parser("simulate", help="N contractors x M handheld episodes, some bad on purpose, uploaded to DEST")
    s.add_argument("dest", help="s3://bucket/prefix or a directory store")
    s.add_argument("--work", type=Path, required=True, help="where the contractors' datasets are written")
    s.add_argument("--contractors", type=int, default=3)
    s.add_argument("--episodes", type=int, default=4, help="episodes per contractor")
    s.add_argument("--bad", type=float, default=0.3, help="fraction of episodes damaged on purpose")
    s.add_argument("--seconds", type=float, default=3.0, help="length of each episode")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=run_simulate)
    c = fsub.add_parser("compact", help="transcode kept episodes' JPEG cameras to video (AV1/H.264), verified")
    c.add_argument("dataset", type=Path)
    c.add_argument("--codec", default="auto", choices=["auto", "av1", "h264"])
    c.add_argument("--crf", type=int, default=None, help="quality (default: 38 for AV1, 22 for H.264)")
    c.add_argument("--gop-s", type=float, default=1.0, help="a keyframe at least this often (at most 1 s)")
    c.add_argument("--min-psnr", type=float, default=25.0,
                   help="a frame decoded back worse than this (dB) keeps the camera's JPEGs")
    c.add_argument("--threads", type=int, default=1, help="encoder threads (default 1: background work)")
    c.add_argument("--background", action="store_true", help="run niced in a separate process and return")
    c.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                   help="keep running, compacting each take once it is kept (never while one is recorded)")
    c.set_defaults(func=run_compact)
    q = fsub.add_parser("catalog", help="query a catalog: totals, or the rejected episodes")
    q.add_argument("catalog", type=Path)
    q.add_argument("--rejected", action="store_true", help="list rejected episodes with their reasons")
    q.set_defaults(func=run_catalog)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def run_ingest(args: argparse.Namespace) -> int:
    from rig.fleet.ingest import ingest, write_report

    if args.workers is not None and args.workers < 1:
        raise RigError("--workers must be >= 1")
    if args.address is not None:
        from rig.fleet.cluster import check_address

        check_address(args.address)  # before listing the store: a ray:// address is refused at once
    res = ingest(args.source, args.catalog, args.address, args.workers, progress=args.progress)
    print(f"{res.listed} manifest(s) in {args.source}; {res.new} new: {res.accepted} accepted, {res.rejected} "
          f"rejected in {res.seconds:.1f} s")
    if res.new:
        from rig.fleet.cluster import describe

        print(f"validated on {describe()}")
    for r in res.rows:
        if not r["accepted"]:
            print(f"  rejected {r['manifest_key']}: {r['reasons']}")
    if args.lerobot is not None:
        from rig.fleet.emit import emit_lerobot

        n = emit_lerobot(args.source, args.catalog, args.lerobot)
        print(f"exported {n} accepted episode(s) as LeRobot v3 to {args.lerobot}")
    print(write_report(args.catalog), end="")
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    from rig.fleet.simulator import EpisodeSpec, simulate_fleet
    from rig.fleet.store import open_store

    truth = simulate_fleet(args.work, open_store(args.dest), args.contractors, args.episodes, args.bad, args.seed,
                           EpisodeSpec(seconds=args.seconds))
    bad = {p: f for p, f in truth.faults.items() if f}
    print(f"{len(truth.faults)} episode(s) from {len(truth.contractors)} contractor(s) in {args.dest}; "
          f"{len(bad)} bad on purpose:")
    for p, f in sorted(bad.items()):
        print(f"  {p}: {f}")
    return 0


def run_compact(args: argparse.Namespace) -> int:
    from recorder.compact import CompactOptions, compact_dataset
    from rig.fleet.compactor import LOG_NAME, BackgroundCompactor

    opts = CompactOptions(codec=args.codec, crf=args.crf, threads=args.threads, gop_s=args.gop_s,
                          min_psnr_db=args.min_psnr)
    if args.background:
        # its output goes to a file: a pipe would break when this command returns
        bg = BackgroundCompactor(args.dataset, opts, watch_s=args.watch, log=args.dataset / LOG_NAME)
        bg.start()
        print(f"compacting {args.dataset} in the background (pid {bg.proc.pid}, nice {bg.nice}; log {bg.log})")
        return 0
    if args.watch:
        from recorder.compact import watch_dataset

        print(f"compacting kept takes of {args.dataset} as they come (every {args.watch:g} s); Ctrl-C stops")
        watch_dataset(args.dataset, opts, args.watch)
        return 0
    reports = compact_dataset(args.dataset, opts)
    skipped = sum(len(r.skipped) for r in reports)
    print(f"{sum(len(r.cameras) for r in reports)} camera(s) of {len(reports)} episode(s) compacted"
          + (f"; {skipped} kept as JPEG (see above)" if skipped else ""))
    return 0


def run_catalog(args: argparse.Namespace) -> int:
    from rig.fleet.ingest import EPISODES_DIR, read_catalog

    if not args.catalog.is_dir():
        raise RigError(f"no catalog at {args.catalog}: give the directory `rig fleet ingest --catalog` wrote")
    if not (args.catalog / EPISODES_DIR).is_dir() and not (args.catalog / "report.txt").is_file():
        raise RigError(f"{args.catalog} is not a catalog (no {EPISODES_DIR}/ nor report.txt in it): give the "
                       "directory `rig fleet ingest --catalog` wrote")
    t = read_catalog(args.catalog).to_pandas()
    acc = t[t["accepted"]]
    print(f"{len(t)} episode(s), {len(acc)} accepted; {t['duration_s'].fillna(0).sum() / 3600:.3f} h recorded, "
          f"{acc['duration_s'].sum() / 3600:.3f} h accepted; {t['contractor'].nunique()} contractor(s)")
    if args.rejected:
        for r in t[~t["accepted"]].itertuples():
            print(f"{r.manifest_key}: {r.reasons}")
    return 0
