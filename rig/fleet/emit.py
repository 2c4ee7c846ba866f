"""Accepted episodes of a catalog as LeRobot v3 shards, through the project's one exporter.

The accepted archives not yet emitted to OUT are unpacked into one temporary rig dataset (its
members were checked by the ingest: relative, stored), and ``recorder.export_lerobot`` appends
them to OUT. Which manifests went to which OUT is remembered in the catalog, so a rerun emits
only what is new. Handheld episodes export the gripper stream (jaw as state and action) on a
grid at the camera rate.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

from recorder import Dataset
from recorder.layout import EPISODES, episode_name
from rig.fleet.ingest import read_catalog
from rig.fleet.manifest import ARCHIVE
from rig.fleet.store import check_key, open_store


def _emitted_path(catalog: Path, out: Path) -> Path:
    tag = hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:12]
    return Path(catalog) / f"emitted-{tag}.json"


def emit_lerobot(source: str, catalog: Path, out: Path, fps: int = 30, log=print) -> int:
    from recorder.export_hdf5 import AlohaMapping
    from recorder.export_lerobot import LeRobotExportOptions, export_lerobot

    store = open_store(source, create=False)
    t = read_catalog(catalog, ["manifest_key", "prefix", "accepted"]).to_pylist()
    record = _emitted_path(catalog, out)
    done = set(json.loads(record.read_text())) if record.exists() else set()
    todo = [r for r in t if r["accepted"] and r["manifest_key"] not in done]
    if not todo:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        ds = Dataset.create(Path(tmp) / "accepted.zarr")
        for i, r in enumerate(todo):
            path = Path(tmp) / ARCHIVE
            path.write_bytes(store.get(r["prefix"] + ARCHIVE))
            dest = ds.path / EPISODES / episode_name(i)
            with zipfile.ZipFile(path) as z:
                for name in z.namelist():
                    check_key(name.rstrip("/"))  # checked by the ingest; checked again before writing
                z.extractall(dest)
            path.unlink()
        handheld = AlohaMapping(stream="gripper", qpos="jaw", qvel="", effort="", action="jaw")
        opts = LeRobotExportOptions(fields=handheld, fps=fps, robot_type="rig-handheld")
        rep = export_lerobot(ds, out, opts, log=log)
        shutil.rmtree(ds.path, ignore_errors=True)
    for line in rep.skipped:  # e.g. a camera size that differs from the export's: that episode waits
        log(f"rig: not emitted: {line}")
    emitted = [todo[i]["manifest_key"] for i in rep.exported]
    record.write_text(json.dumps(sorted(done | set(emitted))))
    return len(emitted)
