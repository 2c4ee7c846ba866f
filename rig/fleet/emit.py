"""Accepted episodes of a catalog as LeRobot v3 shards, through the project's one exporter.

The accepted archives not yet emitted to OUT are unpacked into one temporary rig dataset and
``recorder.export_lerobot`` appends them to OUT. The store is not trusted a second time: each
archive is downloaded with the size the catalog accepted as its limit, and must have that size
and SHA-256; it is then unpacked with the ingest's own checks and limits (stored members only,
counted and sized before reading). An archive changed since acceptance is skipped and reported,
never exported. Which manifests went to which OUT is remembered in the catalog, so a rerun emits
only what is new. Handheld episodes export the gripper stream (jaw as state and action) on a
grid at the camera rate.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from pathlib import Path

from recorder import Dataset
from recorder.layout import EPISODES, episode_name
from rig.fleet.ingest import read_catalog
from rig.fleet.manifest import ARCHIVE, ManifestError
from rig.fleet.store import ObjectStore, open_store
from rig.fleet.validate import limits_for, unpack_archive


def _emitted_path(catalog: Path, out: Path) -> Path:
    tag = hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:12]
    return Path(catalog) / f"emitted-{tag}.json"


def fetch_accepted(store: ObjectStore, row: dict, into: Path, dest: Path) -> str | None:
    """The accepted archive of ``row`` unpacked into ``dest``, or why not: it must be the bytes
    validation accepted (size and SHA-256 from the catalog) and pass the same archive checks."""
    key = row["prefix"] + ARCHIVE
    size, digest = row["bytes"], row["archive_sha256"]
    if not digest or size is None:
        return f"{key}: the catalog holds no digest of it (ingested by an older rig); ingest it again"
    info = store.head(key)
    if info is None or info.size != size:
        return f"{key}: changed since it was accepted ({'gone' if info is None else f'{info.size} bytes'}, " \
               f"accepted {size})"
    path = into / ARCHIVE
    try:
        n, got = store.download(key, path, limit=size)
        if n != size or got != digest:
            return f"{key}: changed since it was accepted (SHA-256 {got[:16]}..., accepted {digest[:16]}...)"
        claimed = row["claimed_duration_s"]
        unpack_archive(path, dest, limits_for(claimed if claimed is not None and math.isfinite(claimed) else 0.0))
    except Exception as e:  # whatever the store now holds, the export goes on without it
        shutil.rmtree(dest, ignore_errors=True)
        return f"{key}: {e}" if isinstance(e, ManifestError) else f"{key}: unreadable: {type(e).__name__}: {e}"
    finally:
        path.unlink(missing_ok=True)
    return None


def emit_lerobot(source: str, catalog: Path, out: Path, fps: int = 30, log=print) -> int:
    from recorder.export_hdf5 import AlohaMapping
    from recorder.export_lerobot import LeRobotExportOptions, export_lerobot

    store = open_store(source, create=False)
    t = read_catalog(catalog, ["manifest_key", "prefix", "accepted", "bytes", "archive_sha256",
                               "claimed_duration_s"]).to_pylist()
    record = _emitted_path(catalog, out)
    done = set(json.loads(record.read_text())) if record.exists() else set()
    todo = [r for r in t if r["accepted"] and r["manifest_key"] not in done]
    if not todo:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        ds = Dataset.create(Path(tmp) / "accepted.zarr")
        kept: list[dict] = []
        for r in todo:
            why = fetch_accepted(store, r, Path(tmp), ds.path / EPISODES / episode_name(len(kept)))
            if why:
                log(f"rig: not emitted: {why}")
                continue
            kept.append(r)
        if not kept:
            return 0
        handheld = AlohaMapping(stream="gripper", qpos="jaw", qvel="", effort="", action="jaw")
        opts = LeRobotExportOptions(fields=handheld, fps=fps, robot_type="rig-handheld")
        rep = export_lerobot(ds, out, opts, log=log)
        shutil.rmtree(ds.path, ignore_errors=True)
    for line in rep.skipped:  # e.g. a camera size that differs from the export's: that episode waits
        log(f"rig: not emitted: {line}")
    emitted = [kept[i]["manifest_key"] for i in rep.exported]
    record.write_text(json.dumps(sorted(done | set(emitted))))
    return len(emitted)
