"""Validate one uploaded episode, independently of every other: the unit of work of the ingest.

``validate_episode(store, manifest_key)`` never raises: whatever an upload holds (bad JSON, keys
leaving the prefix, a manifest that lies, a truncated or hostile archive), it returns one catalog
row, accepted or rejected with reasons. Each reason starts with its category, so reports can count
them: ``bad JSON``, ``schema``, ``identity``, ``path outside the prefix``, ``manifest lies``,
``truncated object``, ``limits``, ``unreadable``, ``non-monotonic``, ``drops``, ``stall``, ``clock``,
``duration``, ``labels``.

Nothing of untrusted size is read before it is bounded. The manifest's duration (itself checked:
finite, at most 4 h) and the rig's fastest rates give each upload its limits (``Limits``): the
archive's bytes and members, every array's rows, values per row, chunk count and decoded chunk
size, checked on the metadata before any chunk is decoded; arrays are then read a few chunks at a
time. What metadata cannot bound (a compressed chunk that inflates past its declared shape) is
bounded by the process: see ``rig.fleet.sandbox``.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rig.fleet.manifest import (
    ARCHIVE,
    MANIFEST,
    MAX_DURATION_S,
    MAX_TEXT,
    Manifest,
    ManifestError,
    parse_manifest,
)
from rig.fleet.store import BadKeyError, ObjectInfo, ObjectStore, check_key

MIN_DURATION_S = 1.0
MAX_DROP_FRACTION = 0.02
MAX_CLOCK_RESIDUAL_MS = 5.0
MAX_ARCHIVE_BYTES = 64 << 30

# ---- the limits an upload is held to, from its manifest's duration and the rig's rates ----------------
HEADROOM = 1.5  # on the claimed duration (which must match the data within 10 % anyway)
DURATION_SLACK_S = 10.0  # added after the headroom: short takes get room for stamps past the claim
MAX_STREAM_HZ = 1000.0  # the fastest stream a rig records (the gripper runs at 200 Hz, the arms at 50 Hz)
MAX_CAMERA_FPS = 120.0  # the fastest camera
MAX_BYTES_PER_S = 32 << 20  # archive bytes a second (4 cameras of noisy 640x480 JPEG q90 are ~12 MB/s)
ARCHIVE_SLACK_BYTES = 16 << 20
MIN_CHUNK_S = 0.25  # the recorder writes 1 s chunks; more, shorter chunks than this are refused
MAX_ROW_VALUES = 64  # values in one row of an array (the gripper's widest field has 3)
MAX_CHUNK_BYTES = 16 << 20  # one decoded chunk (1 s of the widest stream at 1 kHz is 0.5 MB)
MAX_CHUNK_FILE = MAX_CHUNK_BYTES + (64 << 10)  # one stored chunk (compression can add a little)
MAX_NODES = 256  # zarr groups and arrays in one episode
MAX_MEMBER_NAME = 256  # characters of an archive member's name
MAX_META_BYTES = 64 << 10  # one zarr.json
READ_BYTES = 16 << 20  # arrays are read this many decoded bytes at a time
DECODED = frozenset({"t_ns", "seq", "t_device_us", "index"})  # the arrays validation reads; the rest: shapes only
CODECS = frozenset({"bytes", "zstd", "gzip", "blosc", "crc32c", "vlen-bytes", "vlen-utf8", "transpose"})


@dataclass(frozen=True)
class Limits:
    """What one upload may hold, from the duration its manifest claims."""

    seconds: float  # the span the limits allow for: claimed x HEADROOM + DURATION_SLACK_S
    stream_rows: int
    camera_rows: int
    chunks: int  # per array
    members: int  # archive members
    archive_bytes: int


def limits_for(claimed_s: float) -> Limits:
    s = min(float(claimed_s), MAX_DURATION_S) * HEADROOM + DURATION_SLACK_S
    chunks = math.ceil(s / MIN_CHUNK_S) + 2
    return Limits(s, math.ceil(s * MAX_STREAM_HZ), math.ceil(s * MAX_CAMERA_FPS), chunks,
                  MAX_NODES * (chunks + 1), min(MAX_ARCHIVE_BYTES, int(s * MAX_BYTES_PER_S) + ARCHIVE_SLACK_BYTES))


# one catalog row: these columns, these types, every time (Parquet and Ray Data need one schema)
COLUMNS: dict[str, type] = {
    "manifest_key": str, "prefix": str, "contractor": str, "device": str, "dataset": str, "episode_uuid": str,
    "task": str, "accepted": bool, "reasons": str, "category": str, "quality": float, "duration_s": float,
    "claimed_duration_s": float, "gripper_rate_hz": float, "camera_fps": float, "frames": int,
    "drop_fraction": float, "max_gap_s": float, "clock_residual_ms": float, "bytes": int, "compacted": bool,
    "ingested_at": str, "archive_sha256": str, "data_sha256": str,
}


def empty_row(manifest_key: str) -> dict[str, Any]:
    parts = manifest_key.split("/")
    row: dict[str, Any] = {k: (t() if t is not float else math.nan) for k, t in COLUMNS.items()}
    row.update(manifest_key=manifest_key, prefix=manifest_key[: -len(MANIFEST)],
               contractor=parts[-4] if len(parts) >= 4 else (parts[0] if parts else ""),
               ingested_at=datetime.now(UTC).isoformat())
    return row


def category(reason: str) -> str:
    return reason.split(":", 1)[0]


def reject(row: dict[str, Any], reasons: list[str]) -> dict[str, Any]:
    row["accepted"] = not reasons
    row["reasons"] = "; ".join(reasons)
    row["category"] = category(reasons[0]) if reasons else ""
    if reasons:
        row["quality"] = 0.0
    return row


def validate_episode(store: ObjectStore, manifest_key: str, workdir: str | None = None) -> dict[str, Any]:
    row = empty_row(manifest_key)
    reasons: list[str] = []
    try:
        _validate(store, manifest_key, row, reasons, workdir)
    except ManifestError as e:
        reasons.append(str(e))
    except MemoryError:
        raise  # the sandbox turns this into "validation exceeded its limits"
    except Exception as e:  # a hostile upload must never take the job down
        reasons.append(f"unreadable: {type(e).__name__}: {str(e)[:160]}")
    return reject(row, reasons)


def _validate(store: ObjectStore, key: str, row: dict[str, Any], reasons: list[str], workdir: str | None) -> None:
    head = store.head(key)
    if head is None:
        raise ManifestError("unreadable: the manifest vanished")
    m = parse_manifest(key, store.get(key, 0, min(head.size, 1 << 20) + 1))
    row.update(contractor=m.contractor, device=m.device, dataset=m.dataset, episode_uuid=m.episode_uuid)
    row["claimed_duration_s"] = float(m.episode["duration_s"])
    lim = limits_for(row["claimed_duration_s"])
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / ARCHIVE
        _fetch_objects(store, m, row, Path(tmp), lim)
        episode_dir = Path(tmp) / ".unpacked"  # not a valid object key: no clash with a listed object
        row["data_sha256"] = unpack_archive(path, episode_dir, lim)
        path.unlink()
        _check_episode(episode_dir, m, row, reasons, lim)


def _fetch_objects(store: ObjectStore, m: Manifest, row: dict[str, Any], into: Path, lim: Limits) -> None:
    """Each listed object to ``into/<key>``, streamed, sized and hashed against the manifest."""
    total = 0
    for o in m.objects:
        key = m.prefix + o.key
        if o.size > lim.archive_bytes:
            raise ManifestError(f"limits: {o.key} is {o.size} bytes, over the {lim.archive_bytes} that "
                                f"{row['claimed_duration_s']:.1f} s allow")
        info = store.head(key)
        if info is None:
            raise ManifestError(f"manifest lies: it lists {o.key!r}, which is not in the store")
        if info.size < o.size:
            raise ManifestError(f"truncated object: {o.key} is {info.size} bytes, the manifest says {o.size}")
        if info.size > o.size:
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
        if o.key == ARCHIVE:
            row["archive_sha256"] = digest
        total += n
    row["bytes"] = total


def unpack_archive(path: Path, dest: Path, lim: Limits) -> str:
    """Check the zip and unpack it into ``dest``: plain stored files with relative names, as many
    and as large as ``lim`` allow (counted from the end record, before the member list is read).
    Returns the SHA-256 of the take's data: every member but the root ``zarr.json`` (which carries
    the ids and labels), so the same take uploaded again under other ids has the same digest."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        end = zipfile._EndRecData(f)  # type: ignore[attr-defined]  # the stdlib's own end-record reader
    if end is None:
        raise ManifestError("schema: the archive is not a zip file")
    entries, cd_size = int(end[zipfile._ECD_ENTRIES_TOTAL]), int(end[zipfile._ECD_SIZE])  # type: ignore[attr-defined]
    if entries > lim.members or cd_size > entries * (64 + MAX_MEMBER_NAME) + 4096:
        raise ManifestError(f"limits: the archive lists {entries} members ({cd_size} bytes of directory), over "
                            f"the {lim.members} its duration allows")
    h = hashlib.sha256()
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        total = 0
        names = set()
        for info in infos:
            name = info.filename
            try:
                check_key(name.rstrip("/"))
            except BadKeyError:
                raise ManifestError(f"path outside the prefix: archive member {ascii(name)[:80]}") from None
            if info.compress_type != zipfile.ZIP_STORED:
                raise ManifestError(f"schema: archive member {ascii(name)[:80]} is compressed; the uploader stores")
            if len(name) > MAX_MEMBER_NAME or name in names:
                raise ManifestError(f"schema: archive member {ascii(name)[:80]} is too long or listed twice")
            names.add(name)
            if info.file_size != info.compress_size:
                raise ManifestError(f"schema: stored archive member {ascii(name)[:80]} claims {info.file_size} "
                                    f"bytes in {info.compress_size}")
            if name.rsplit("/", 1)[-1] == "zarr.json" and info.file_size > MAX_META_BYTES:
                raise ManifestError(f"limits: {ascii(name)[:80]} is {info.file_size} bytes, over {MAX_META_BYTES}")
            total += info.file_size
        if total > size:
            raise ManifestError("schema: the archive's members claim more bytes than it holds")
        if sum(1 for n in names if n.rsplit("/", 1)[-1] == "zarr.json") > MAX_NODES:
            raise ManifestError(f"limits: the archive holds over {MAX_NODES} zarr groups and arrays")
        dest.mkdir(parents=True, exist_ok=True)
        for info in sorted(infos, key=lambda i: i.filename):
            out = dest / info.filename
            if info.filename.endswith("/"):
                out.mkdir(parents=True, exist_ok=True)
                continue
            data_member = info.filename != "zarr.json"
            if data_member:
                h.update(f"{info.filename}\0{info.file_size}\0".encode())
            out.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(out, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
                    if data_member:
                        h.update(chunk)
    return h.hexdigest()


def _check_array(a: Any, where: str, max_rows: int, lim: Limits) -> str | None:
    """The reason an array's metadata is out of bounds, or None: rows, values per row, chunk count,
    decoded chunk size, codecs. Nothing is decoded."""
    shape = tuple(int(x) for x in a.shape)
    try:
        chunks = tuple(int(x) for x in a.chunks)
    except Exception:
        return f"limits: {where} has no regular chunk grid"
    names = [c.to_dict().get("name") for c in getattr(a.metadata, "codecs", ())]
    odd = [n for n in names if n not in CODECS]
    if odd or not names:
        return f"schema: {where} uses codec {ascii(odd[:1])[:60]}; allowed: {', '.join(sorted(CODECS))}"
    if not shape or len(shape) != len(chunks) or min(chunks) < 1:
        return f"schema: {where} has shape {shape} and chunks {chunks}"
    if shape[0] > max_rows:
        return (f"limits: {where} declares {shape[0]} rows, over the {max_rows} that {lim.seconds:.0f} s allow "
                f"(claimed duration x {HEADROOM} + {DURATION_SLACK_S:.0f} s)")
    per_row = math.prod(shape[1:])
    if per_row > MAX_ROW_VALUES:
        return f"limits: {where} has {per_row} values a row, over {MAX_ROW_VALUES}"
    n_chunks = math.prod(math.ceil(s / c) for s, c in zip(shape, chunks, strict=True))
    if n_chunks > lim.chunks:
        return f"limits: {where} has {n_chunks} chunks, over the {lim.chunks} that {lim.seconds:.0f} s allow"
    chunk_bytes = math.prod(chunks) * np.dtype(a.dtype).itemsize
    if chunk_bytes > MAX_CHUNK_BYTES:
        return f"limits: {where} decodes {chunk_bytes} bytes a chunk, over {MAX_CHUNK_BYTES}"
    return None


def _inflated_size(data: bytes, limit: int) -> int:
    """Bytes the gzip members at the start of ``data`` inflate to, counting no further than ``limit`` + 1."""
    total = 0
    while data[:2] == b"\x1f\x8b" and total <= limit:
        d = zlib.decompressobj(31)
        buf = data
        while buf and total <= limit and not d.eof:
            total += len(d.decompress(buf, limit + 1 - total))  # max_length >= 1: never "unlimited"
            buf = d.unconsumed_tail
        if not d.eof:
            break
        data = d.unused_data
    return total


def check_chunk_files(a: Any, array_dir: Path, where: str) -> str | None:
    """The reason the stored chunks of an array that will be decoded are out of bounds, or None:
    each file at most ``MAX_CHUNK_FILE`` bytes, and a gzip chunk inflating to no more than its
    declared decoded size (a compressed chunk can claim any size; this reads at most that much).
    Codecs that declare their decoded size in a header (zstd, blosc) allocate it at once, which
    the validation process's memory cap bounds."""
    names = [c.to_dict().get("name") for c in a.metadata.codecs]
    chunk_bytes = math.prod(int(x) for x in a.chunks) * np.dtype(a.dtype).itemsize
    root = array_dir / "c"
    files = sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else []
    for f in files:
        size = f.stat().st_size
        if size > MAX_CHUNK_FILE:
            return f"limits: {where} chunk {f.relative_to(array_dir)} is {size} bytes, over {MAX_CHUNK_FILE}"
        if "gzip" in names and _inflated_size(f.read_bytes(), chunk_bytes) > chunk_bytes:
            return f"limits: {where} chunk {f.relative_to(array_dir)} inflates past its {chunk_bytes} bytes"
    return None


def read_bounded(a: Any) -> np.ndarray:
    """A whole array whose shape was checked, read a few chunks at a time."""
    out = np.empty(a.shape, a.dtype)
    chunk = int(a.chunks[0])
    row_bytes = max(1, math.prod(a.shape[1:]) * np.dtype(a.dtype).itemsize)
    step = max(chunk, READ_BYTES // row_bytes // chunk * chunk)
    for i in range(0, a.shape[0], step):
        out[i:i + step] = a[i:i + step]
    return out


def _check_binding(attrs: dict[str, Any], m: Manifest) -> str | None:
    fleet = attrs.get("fleet")
    want = {"contractor": m.contractor, "device": m.device, "dataset": m.dataset, "episode_uuid": m.episode_uuid}
    if not isinstance(fleet, dict):
        return "identity: the archive carries no fleet binding (contractor, device, dataset, episode)"
    for k, v in want.items():
        if fleet.get(k) != v:
            return (f"identity: the archive is bound to {k} {ascii(fleet.get(k))[:80]}, the manifest and key say "
                    f"{v!r}")
    return None


def _check_episode(path: Path, m: Manifest, row: dict[str, Any], reasons: list[str], lim: Limits) -> None:
    import zarr

    from recorder.compact import camera_frame_count  # what a camera holds, JPEG frames or video

    g = zarr.open_group(str(path), mode="r", zarr_format=3)
    attrs = dict(g.attrs)
    if attrs.get("status") != "complete":
        reasons.append(f"schema: the episode's status is {ascii(attrs.get('status'))[:40]}, not 'complete'")
    bad = _check_binding(attrs, m)
    if bad:
        reasons.append(bad)
    task = attrs.get("task")
    if task is not None and not isinstance(task, str) or isinstance(task, str) and len(task) > MAX_TEXT:
        raise ManifestError(f"schema: the episode's task is not text of at most {MAX_TEXT} characters")
    row.update(task=task or "", compacted=attrs.get("compacted") is True)  # the catalog's labels: the archive's
    streams = dict(g["streams"].groups()) if "streams" in g else {}
    cameras = dict(g["cameras"].groups()) if "cameras" in g else {}
    if not streams:
        reasons.append("schema: no streams")
        return
    arrays_of: dict[str, dict[str, Any]] = {}
    for kind, groups, max_rows in (("stream", streams, lim.stream_rows), ("camera", cameras, lim.camera_rows)):
        for name, sub in sorted(groups.items()):
            arrays = dict(sub.arrays())
            for aname, arr in sorted(arrays.items()):
                where = f"{kind} {name} array {aname}"
                why = _check_array(arr, where, max_rows, lim)
                if why is None and aname in DECODED:
                    why = check_chunk_files(arr, path / f"{kind}s" / name / aname, where)
                if why:
                    raise ManifestError(why)
            arrays_of[f"{kind}/{name}"] = arrays
    lo, hi = None, None
    drop = 0.0
    max_gap = 0.0
    for name, sub in sorted(streams.items()):
        arrays = arrays_of[f"stream/{name}"]
        if "t_ns" not in arrays:
            reasons.append(f"schema: stream {name} has no t_ns")
            continue
        t = read_bounded(arrays["t_ns"])
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
        rate = _rate(sub.attrs.get("rate_hz"))
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
            seq = read_bounded(arrays["seq"]).astype(np.int64)
            expected = int(seq[-1] - seq[0]) + 1
            drop = max(drop, 1.0 - t.size / expected if expected > 0 else 0.0)
            if expected != t.size and expected > 0 and 1.0 - t.size / expected > MAX_DROP_FRACTION:
                reasons.append(f"drops: stream {name} lost {100 * (1 - t.size / expected):.0f}% of its samples "
                               f"(sequence gaps)")
        if "t_device_us" in arrays:
            dev = read_bounded(arrays["t_device_us"]).astype(np.float64)
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
        arrays = arrays_of[f"camera/{name}"]
        if "t_ns" not in arrays or "index" not in arrays:
            reasons.append(f"schema: camera {name} has no t_ns or index")
            continue
        t = read_bounded(arrays["t_ns"])
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
            fps = _rate(sub.attrs.get("fps"))
            gap = float(d.max()) / 1e9
            max_gap = max(max_gap, gap)
            limit = max(0.5, 20.0 / fps) if fps > 0 else 0.5
            if gap > limit:
                reasons.append(f"stall: no {name} frame for {gap:.2f} s (limit {limit:.2f} s)")
        idx = read_bounded(arrays["index"])
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
        held = arrays_of.get(f"camera/{name}", {}).get("t_ns")
        if held is not None and n != held.shape[0]:
            reasons.append(f"manifest lies: it says {n} {name} frames, the data holds {held.shape[0]}")
    if not row["task"].strip():
        reasons.append("labels: no task")
    rate_short = 0.0
    if not math.isnan(row["gripper_rate_hz"]):
        nominal = _rate(streams["gripper"].attrs.get("rate_hz")) if "gripper" in streams else 0.0
        rate_short = max(0.0, 1.0 - row["gripper_rate_hz"] / nominal) if nominal else 0.0
    resid = 0.0 if math.isnan(row["clock_residual_ms"]) else row["clock_residual_ms"]
    row["quality"] = float(np.clip(1.0 - 5 * drop - 0.5 * rate_short - min(0.3, resid / 10)
                                   - (0.2 if max_gap > 0.25 else 0.0), 0.0, 1.0))


def _rate(v: Any) -> float:
    """A rate from the archive's attributes: a finite number within the rig's, else 0 (unknown)."""
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and 0 < v <= MAX_STREAM_HZ:
        return float(v)
    return 0.0


def manifest_objects(store: ObjectStore, prefix: str = "") -> list[ObjectInfo]:
    """The manifests under ``prefix``, oldest first (then by key): the order that decides which of
    two uploads of one take came first."""
    found = [o for o in store.list(prefix) if o.key.endswith("/" + MANIFEST) or o.key == MANIFEST]
    return sorted(found, key=lambda o: (o.modified, o.key))


def list_manifests(store: ObjectStore, prefix: str = "") -> list[str]:
    return sorted(o.key for o in manifest_objects(store, prefix))


def worker_tmpdir() -> str | None:
    return os.environ.get("RIG_INGEST_TMP")
