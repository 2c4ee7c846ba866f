"""Validate one uploaded episode, independently of every other: the unit of work of the ingest.

``validate_episode(store, manifest_key)`` never raises: whatever an upload holds (bad JSON, keys
leaving the prefix, a manifest that lies, a truncated or hostile archive), it returns one catalog
row, accepted or rejected with reasons. Each reason starts with its category, so reports can count
them: ``bad JSON``, ``schema``, ``path outside the prefix``, ``manifest lies``, ``truncated object``,
``unreadable``, ``non-monotonic``, ``drops``, ``stall``, ``clock``, ``duration``, ``labels``.
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rig.fleet.manifest import ARCHIVE, MANIFEST, Manifest, ManifestError, parse_manifest
from rig.fleet.store import BadKeyError, ObjectStore, check_key

MIN_DURATION_S = 1.0
MAX_DURATION_S = 4 * 3600.0
MAX_DROP_FRACTION = 0.02
MAX_CLOCK_RESIDUAL_MS = 5.0
MAX_ARCHIVE_BYTES = 64 << 30

# one catalog row: these columns, these types, every time (Parquet and Ray Data need one schema)
COLUMNS: dict[str, type] = {
    "manifest_key": str, "prefix": str, "contractor": str, "device": str, "dataset": str, "episode_uuid": str,
    "task": str, "accepted": bool, "reasons": str, "category": str, "quality": float, "duration_s": float,
    "claimed_duration_s": float, "gripper_rate_hz": float, "camera_fps": float, "frames": int,
    "drop_fraction": float, "max_gap_s": float, "clock_residual_ms": float, "bytes": int, "compacted": bool,
    "ingested_at": str,
}


def empty_row(manifest_key: str) -> dict[str, Any]:
    parts = manifest_key.split("/")
    row: dict[str, Any] = {k: (t() if t is not float else math.nan) for k, t in COLUMNS.items()}
    row.update(manifest_key=manifest_key, prefix=manifest_key[: -len(MANIFEST)],
               contractor=parts[-4] if len(parts) >= 4 else (parts[0] if parts else ""),
               ingested_at=datetime.now(UTC).isoformat())
    return row


def _category(reason: str) -> str:
    return reason.split(":", 1)[0]


def validate_episode(store: ObjectStore, manifest_key: str, workdir: str | None = None) -> dict[str, Any]:
    row = empty_row(manifest_key)
    reasons: list[str] = []
    try:
        _validate(store, manifest_key, row, reasons, workdir)
    except ManifestError as e:
        reasons.append(str(e))
    except Exception as e:  # a hostile upload must never take the job down
        reasons.append(f"unreadable: {type(e).__name__}: {str(e)[:160]}")
    row["accepted"] = not reasons
    row["reasons"] = "; ".join(reasons)
    row["category"] = _category(reasons[0]) if reasons else ""
    if reasons:
        row["quality"] = 0.0
    return row


def _validate(store: ObjectStore, key: str, row: dict[str, Any], reasons: list[str], workdir: str | None) -> None:
    head = store.head(key)
    if head is None:
        raise ManifestError("unreadable: the manifest vanished")
    m = parse_manifest(key, store.get(key, 0, min(head.size, 1 << 20) + 1))
    ep = m.episode
    row.update(contractor=m.contractor, device=m.device, dataset=m.dataset, episode_uuid=m.episode_uuid,
               task=str(ep.get("task") or ""), compacted=bool(ep.get("compacted")))
    claimed = ep.get("duration_s")
    if isinstance(claimed, int | float) and not isinstance(claimed, bool):
        row["claimed_duration_s"] = float(claimed)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / ARCHIVE
        _fetch_objects(store, m, row, Path(tmp))
        _check_archive(path)
        episode_dir = Path(tmp) / ".unpacked"  # not a valid object key: no clash with a listed object
        with zipfile.ZipFile(path) as z:
            z.extractall(episode_dir)  # members were checked: relative, no '..', stored
        path.unlink()
        _check_episode(episode_dir, m, row, reasons)


def _fetch_objects(store: ObjectStore, m: Manifest, row: dict[str, Any], into: Path) -> None:
    """Each listed object to ``into/<key>``, streamed, sized and hashed against the manifest."""
    total = 0
    for o in m.objects:
        key = m.prefix + o.key
        info = store.head(key)
        if info is None:
            raise ManifestError(f"manifest lies: it lists {o.key!r}, which is not in the store")
        if info.size < o.size:
            raise ManifestError(f"truncated object: {o.key} is {info.size} bytes, the manifest says {o.size}")
        if info.size > o.size or info.size > MAX_ARCHIVE_BYTES:
            raise ManifestError(f"manifest lies: {o.key} is {info.size} bytes, the manifest says {o.size}")
        dest = into / o.key
        dest.parent.mkdir(parents=True, exist_ok=True)
        n, digest = store.download(key, dest, limit=o.size)
        if n < o.size:
            raise ManifestError(f"truncated object: {o.key} read back {n} bytes of {o.size}")
        if n > o.size:
            raise ManifestError(f"manifest lies: {o.key} holds more than the {o.size} bytes listed")
        if digest != o.sha256:
            raise ManifestError(f"manifest lies: {o.key} has SHA-256 {digest[:16]}..., the manifest says "
                                f"{o.sha256[:16]}...")
        total += n
    row["bytes"] = total


def _check_archive(path: Path) -> None:
    """A zip of plain stored files with relative names: nothing to unpack outside, no bomb."""
    with zipfile.ZipFile(path) as z:
        total = 0
        for info in z.infolist():
            try:
                check_key(info.filename.rstrip("/"))
            except BadKeyError:
                raise ManifestError(f"path outside the prefix: archive member {info.filename[:80]!r}") from None
            if info.compress_type != zipfile.ZIP_STORED:
                raise ManifestError(f"schema: archive member {info.filename!r} is compressed; the uploader stores")
            total += info.file_size
        if total > path.stat().st_size:
            raise ManifestError("schema: the archive's members claim more bytes than it holds")


def _check_episode(path: Path, m: Manifest, row: dict[str, Any], reasons: list[str]) -> None:
    import zarr

    from recorder.compact import camera_frame_count  # what a camera holds, JPEG frames or video

    g = zarr.open_group(str(path), mode="r")
    attrs = dict(g.attrs)
    if attrs.get("status") != "complete":
        reasons.append(f"schema: the episode's status is {attrs.get('status')!r}, not 'complete'")
    fleet = attrs.get("fleet") or {}
    if fleet.get("episode_uuid") not in (None, m.episode_uuid) or fleet.get("contractor") not in (
            None, m.contractor):
        reasons.append("manifest lies: the archive belongs to another episode or contractor")
    streams = dict(g["streams"].groups()) if "streams" in g else {}
    cameras = dict(g["cameras"].groups()) if "cameras" in g else {}
    if not streams:
        reasons.append("schema: no streams")
        return
    lo, hi = None, None
    drop = 0.0
    max_gap = 0.0
    for name, sub in sorted(streams.items()):
        arrays = dict(sub.arrays())
        if "t_ns" not in arrays:
            reasons.append(f"schema: stream {name} has no t_ns")
            continue
        t = arrays["t_ns"][:]
        if any(a.shape[0] != t.shape[0] for a in arrays.values()):
            reasons.append(f"schema: stream {name} has arrays of different lengths")
        if t.size < 2:
            reasons.append(f"duration: stream {name} has {t.size} rows")
            continue
        lo = t.min() if lo is None else min(lo, t.min())
        hi = t.max() if hi is None else max(hi, t.max())
        d = np.diff(t)
        back = int(np.count_nonzero(d <= 0))
        if back:
            reasons.append(f"non-monotonic: stream {name} time stamps step back {back} time(s)")
        rate = float(sub.attrs.get("rate_hz") or 0.0)
        span = (int(t[-1]) - int(t[0])) / 1e9
        if name == "gripper" or "seq" in arrays:
            row["gripper_rate_hz"] = (t.size - 1) / span if span > 0 else math.nan
        gap = float(d.max()) / 1e9
        max_gap = max(max_gap, gap)
        stall_limit = max(0.5, 20.0 / rate) if rate > 0 else 0.5
        if gap > stall_limit:
            at = (int(t[int(np.argmax(d))]) - int(t[0])) / 1e9
            reasons.append(f"stall: no {name} data for {gap:.2f} s at {at:.1f} s (limit {stall_limit:.2f} s)")
        if "seq" in arrays:
            seq = arrays["seq"][:].astype(np.int64)
            expected = int(seq[-1] - seq[0]) + 1
            drop = max(drop, 1.0 - t.size / expected if expected > 0 else 0.0)
            if expected != t.size and expected > 0 and 1.0 - t.size / expected > MAX_DROP_FRACTION:
                reasons.append(f"drops: stream {name} lost {100 * (1 - t.size / expected):.0f}% of its samples "
                               f"(sequence gaps)")
        if "t_device_us" in arrays:
            dev = arrays["t_device_us"][:].astype(np.float64)
            host = t.astype(np.float64)
            a = np.vstack([dev - dev[0], np.ones_like(dev)]).T
            coef, *_ = np.linalg.lstsq(a, host - host[0], rcond=None)
            resid_ms = float(np.percentile(np.abs(host - host[0] - a @ coef), 99)) / 1e6
            row["clock_residual_ms"] = resid_ms
            if resid_ms > MAX_CLOCK_RESIDUAL_MS:
                reasons.append(f"clock: {name} device-to-host residual {resid_ms:.1f} ms (p99), limit "
                               f"{MAX_CLOCK_RESIDUAL_MS:.0f} ms")
    frames_total = 0
    for name, sub in sorted(cameras.items()):
        t = sub["t_ns"][:]
        n_frames = camera_frame_count(path, name)
        if n_frames != t.size:
            reasons.append(f"schema: camera {name} has {n_frames} frames for {t.size} time stamps")
        frames_total += int(t.size)
        if t.size:
            lo = t.min() if lo is None else min(lo, t.min())
            hi = t.max() if hi is None else max(hi, t.max())
        if t.size >= 2:
            d = np.diff(t)
            back = int(np.count_nonzero(d <= 0))
            if back:
                reasons.append(f"non-monotonic: camera {name} time stamps step back {back} time(s)")
            span = (int(t[-1]) - int(t[0])) / 1e9
            row["camera_fps"] = (t.size - 1) / span if span > 0 else math.nan
            fps = float(sub.attrs.get("fps") or 0.0)
            gap = float(d.max()) / 1e9
            max_gap = max(max_gap, gap)
            limit = max(0.5, 20.0 / fps) if fps > 0 else 0.5
            if gap > limit:
                reasons.append(f"stall: no {name} frame for {gap:.2f} s (limit {limit:.2f} s)")
        idx = sub["index"][:]
        if idx.size >= 2:
            expected = int(idx[-1] - idx[0]) + 1
            lost = 1.0 - idx.size / expected if expected > 0 else 0.0
            drop = max(drop, lost)
            if lost > MAX_DROP_FRACTION:
                reasons.append(f"drops: camera {name} lost {100 * lost:.0f}% of its frames (index gaps)")
    row["frames"] = frames_total
    row["drop_fraction"] = drop
    row["max_gap_s"] = max_gap
    duration = (int(hi) - int(lo)) / 1e9 if lo is not None else 0.0
    row["duration_s"] = duration
    if duration < MIN_DURATION_S:
        reasons.append(f"duration: {duration:.2f} s, under the {MIN_DURATION_S:.1f} s minimum")
    elif duration > MAX_DURATION_S:
        reasons.append(f"duration: {duration / 3600:.1f} h, over the {MAX_DURATION_S / 3600:.0f} h maximum")
    claimed = row["claimed_duration_s"]
    if not math.isnan(claimed) and abs(claimed - duration) > max(0.5, 0.1 * duration):
        reasons.append(f"manifest lies: it says {claimed:.1f} s, the data holds {duration:.1f} s")
    counts = (m.episode.get("counts") or {}).get("cameras") or {}
    for name, n in counts.items():
        if name in cameras and n != cameras[name]["t_ns"].shape[0]:
            reasons.append(f"manifest lies: it says {n} {name} frames, the data holds "
                           f"{cameras[name]['t_ns'].shape[0]}")
    if not str(attrs.get("task") or "").strip():
        reasons.append("labels: no task")
    rate_short = 0.0
    if not math.isnan(row["gripper_rate_hz"]):
        nominal = float(streams["gripper"].attrs.get("rate_hz") or 0) if "gripper" in streams else 0.0
        rate_short = max(0.0, 1.0 - row["gripper_rate_hz"] / nominal) if nominal else 0.0
    resid = 0.0 if math.isnan(row["clock_residual_ms"]) else row["clock_residual_ms"]
    row["quality"] = float(np.clip(1.0 - 5 * drop - 0.5 * rate_short - min(0.3, resid / 10)
                                   - (0.2 if max_gap > 0.25 else 0.0), 0.0, 1.0))


def list_manifests(store: ObjectStore, prefix: str = "") -> list[str]:
    return sorted(o.key for o in store.list(prefix) if o.key.endswith("/" + MANIFEST) or o.key == MANIFEST)


def worker_tmpdir() -> str | None:
    return os.environ.get("RIG_INGEST_TMP")
