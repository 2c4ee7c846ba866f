"""`rig upload DATASET DEST`: send kept episodes to s3://bucket/prefix or a directory, resumably."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from drivers.errors import RigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(i?[bB]?)?\s*$")


def parse_size(text: str) -> float:
    """'2M' -> 2 MiB, '500k' -> 500 KiB, '1048576' -> bytes."""
    m = _SIZE.match(text or "")
    if not m:
        raise RigError(f"size {text!r} must be a number with an optional K, M or G (e.g. 2M)")
    return float(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]


def register(sub) -> None:
    p = sub.add_parser("upload", help="upload kept episodes to s3://bucket/prefix or a directory (resumable)")
    p.add_argument("dataset", nargs="?", type=Path, help="dataset directory (zarr)")
    p.add_argument("dest", nargs="?", help="s3://bucket/prefix, or a directory used as an object store")
    p.add_argument("--status", action="store_true", help="show what is uploaded, partly sent and pending; send nothing")
    p.add_argument("--bwlimit", default=None, help="bandwidth limit in bytes/s, e.g. 2M (default: none)")
    p.add_argument("--part-size", default="8M", help="multipart part size (>= 5M, default 8M)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--compact", action="store_true",
                   help="first transcode kept episodes' JPEG cameras to video (see `rig fleet compact`)")
    p.add_argument("--set-identity", action="store_true", help="set this rig's contractor (and device) id, once")
    p.add_argument("--contractor", help="with --set-identity: the contractor id")
    p.add_argument("--device", help="with --set-identity: the device id (default: generated)")
    p.add_argument("--force", action="store_true", help="with --set-identity: change ids already set")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rig.fleet.identity import require_identity, set_identity

    if args.set_identity:
        if not args.contractor:
            raise RigError("--set-identity needs --contractor ID")
        ident = set_identity(args.contractor, args.device, force=args.force)
        print(f"this rig is contractor {ident.contractor}, device {ident.device}")
        if args.dataset is None:
            return 0
    if args.dataset is None or args.dest is None:
        raise RigError("usage: rig upload DATASET DEST (DEST is s3://bucket/prefix or a directory)")
    from rig.fleet.store import open_store
    from rig.fleet.upload import Uploader, UploadOptions, upload_status

    # the options first: a typo in one should not wait for an identity or a dataset to be found
    bw = parse_size(args.bwlimit) if args.bwlimit else None
    part = int(parse_size(args.part_size))
    opts = UploadOptions(part_size=part, multipart_threshold=2 * part, bwlimit=bw, progress=not args.no_progress)
    ident = require_identity()
    store = open_store(args.dest)
    if args.status:
        rows = upload_status(args.dataset, store, ident)
        for r in rows:
            extra = f" ({r.stored_bytes / 1e6:.1f} of ~{r.local_bytes / 1e6:.1f} MB in the store)" if r.state == "partial" else ""
            print(f"episode {r.index}: {r.state:8s} {r.local_bytes / 1e6:8.1f} MB  {r.prefix}{extra}")
        pending = [r for r in rows if r.state != "uploaded"]
        left = sum(r.local_bytes - r.stored_bytes for r in pending)
        print(f"{len(rows) - len(pending)} uploaded, {len(pending)} pending ({left / 1e6:.1f} MB to send) "
              f"to {store.url}")
        return 0
    if args.compact:
        from recorder.compact import compact_dataset

        compact_dataset(args.dataset)
    rep = Uploader(store, ident, opts).upload_dataset(args.dataset)
    rate = rep.bytes_sent / rep.seconds / 1e6 if rep.seconds > 0 else 0.0
    print(f"uploaded {rep.episodes_sent} episode(s), {rep.bytes_sent / 1e6:.1f} MB in {rep.seconds:.1f} s "
          f"({rate:.1f} MB/s); {rep.episodes_already_up} already there; {rep.bytes_resumed / 1e6:.1f} MB resumed; "
          f"{rep.retries} retries -> {store.url}")
    return 0
