"""Upload kept episodes to an object store: resumable, idempotent, verified, manifest last.

Per complete episode (``status == complete``):
1. the episode's zarr tree is packed into one deterministic, uncompressed zip (same bytes on every
   run, so a resumed upload's finished parts stay valid); the uploaded copy's root metadata also
   carries the rig's contractor and device ids;
2. the zip goes up whole or, above ``multipart_threshold``, in parts. The store is the memory of
   a resume: its unfinished multipart upload of that key lists the parts it already holds, and a
   part whose size and checksum match the local bytes is not sent again;
3. each object's size and the store's own checksum (SHA-256, or S3's composite of the parts) are
   checked against the local bytes; an object that does not match is deleted and the run fails;
4. the manifest goes up last. An episode whose manifest is in the store is done: a rerun sends nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recorder import Dataset
from recorder.layout import Status, episode_path
from rig.fleet.identity import Identity
from rig.fleet.manifest import ARCHIVE, FORMAT, MANIFEST, VERSION, episode_prefix
from rig.fleet.store import (
    Body,
    MiB,
    ObjectInfo,
    ObjectStore,
    PartInfo,
    StoreError,
    Throttle,
    TransientStoreError,
    composite_b64,
    sha256_b64,
)

STAGING = ".upload"  # inside the dataset: staged archives, removed once their episode is up
_NS = uuid.UUID("5b0c1f0e-2d7e-4c55-9a51-6f1e0d7c9a11")  # episode uuids are uuid5 in this namespace
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class UploadOptions:
    part_size: int = 8 * MiB  # S3 needs >= 5 MiB for every part but the last
    multipart_threshold: int = 16 * MiB
    bwlimit: float | None = None  # bytes per second across the whole run
    retries: int = 6  # per request, on dropped connections / timeouts / 5xx, with backoff
    progress: bool = True

    def __post_init__(self) -> None:
        if self.part_size < 5 * MiB:
            raise StoreError(f"part size {self.part_size} is under S3's 5 MiB minimum")


@dataclass
class UploadReport:
    episodes_sent: int = 0
    episodes_already_up: int = 0
    objects_sent: int = 0
    bytes_sent: int = 0
    bytes_resumed: int = 0  # parts or objects the store already held
    retries: int = 0
    seconds: float = 0.0
    episodes: list[str] = field(default_factory=list)  # prefixes sent this run


@dataclass(frozen=True)
class LocalEpisode:
    index: int
    path: Path
    episode_uuid: str
    prefix: str
    attrs: dict[str, Any]


def dataset_name(path: Path) -> str:
    name = Path(path).resolve().name
    name = name[:-5] if name.endswith(".zarr") else name
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name).strip(".-") or "dataset"
    return name[:64]


def episode_uuid(ident: Identity, attrs: dict[str, Any], index: int) -> str:
    """Stable across runs and moves of the dataset: the device, the take's start time and index."""
    return str(uuid.uuid5(_NS, f"{ident.device}/{attrs.get('start_wall', '')}/{index}"))


def kept_episodes(ds: Dataset, ident: Identity) -> list[LocalEpisode]:
    name = dataset_name(ds.path)
    out = []
    for i in ds.indices():
        ep = ds.episode(i)
        attrs = ep.attrs
        if attrs.get("status") != Status.COMPLETE.value:
            continue  # recording, discarded or recovered takes stay home
        u = episode_uuid(ident, attrs, i)
        out.append(LocalEpisode(i, episode_path(ds.path, i), u, episode_prefix(ident.contractor, name, u), attrs))
    return out


# ---- the archive ---------------------------------------------------------------------------------
def _tree(path: Path) -> list[Path]:
    files = [p for p in path.rglob("*") if p.is_file() and not p.name.endswith(".partial")]
    return sorted(files, key=lambda p: p.relative_to(path).as_posix())


def _signature(ep: LocalEpisode, ident: Identity) -> str:
    h = hashlib.sha256(f"{ident}|{ep.prefix}".encode())
    for p in _tree(ep.path):
        st = p.stat()
        h.update(f"{p.relative_to(ep.path).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def stage_archive(ds_path: Path, ep: LocalEpisode, ident: Identity) -> Path:
    """The episode as a deterministic zip under DATASET/.upload/ (reused while the episode is unchanged)."""
    staging = ds_path / STAGING
    staging.mkdir(exist_ok=True)
    out = staging / f"{ep.episode_uuid}.zip"
    sig_path = out.with_suffix(".sig")
    sig = _signature(ep, ident)
    if out.exists() and sig_path.exists() and sig_path.read_text() == sig:
        return out
    tmp = out.with_suffix(".zip.partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        for p in _tree(ep.path):
            rel = p.relative_to(ep.path).as_posix()
            data = p.read_bytes()
            if rel == "zarr.json":  # the uploaded copy says who recorded it, on which device
                meta = json.loads(data)
                meta.setdefault("attributes", {})["fleet"] = {
                    "contractor": ident.contractor, "device": ident.device,
                    "episode_uuid": ep.episode_uuid, "dataset": ep.prefix.split("/")[1]}
                data = json.dumps(meta, sort_keys=True, indent=1).encode()
            info = zipfile.ZipInfo(rel, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out)
    sig_path.write_text(sig)
    return out


@dataclass(frozen=True)
class LocalObject:
    path: Path
    size: int
    sha256_hex: str
    sha256_b64: str
    part_size: int
    parts: tuple[tuple[str, str], ...]  # per part: (sha256 b64, md5 hex) -- empty if sent whole

    @property
    def expected_checksum(self) -> str:
        return composite_b64([s for s, _ in self.parts]) if self.parts else self.sha256_b64


def hash_local(path: Path, part_size: int, multipart: bool) -> LocalObject:
    full = hashlib.sha256()
    parts = []
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(part_size):
            full.update(chunk)
            size += len(chunk)
            if multipart:
                parts.append((sha256_b64(chunk), hashlib.md5(chunk, usedforsecurity=False).hexdigest()))
    return LocalObject(path, size, full.hexdigest(), base64.b64encode(full.digest()).decode(), part_size,
                       tuple(parts))


def checksums_match(store_value: str | None, expected: str) -> bool:
    """Compare the store's checksum with ours; S3 writes a composite as "<b64>-N", some servers omit -N."""
    if store_value is None:
        return False
    a, _, an = store_value.partition("-")
    b, _, bn = expected.partition("-")
    return a == b and (not an or not bn or an == bn)


# ---- the uploader --------------------------------------------------------------------------------
class Uploader:
    def __init__(self, store: ObjectStore, ident: Identity, options: UploadOptions | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.ident = ident
        self.opts = options or UploadOptions()
        self.throttle = Throttle(self.opts.bwlimit)
        self.report = UploadReport()
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self._bar: Any = None

    # retries with backoff: the store turns dropped connections, timeouts and 5xx into TransientStoreError
    def _retry(self, what: str, fn: Callable[[], Any]) -> Any:
        delay = 0.1
        for attempt in range(self.opts.retries + 1):
            try:
                return fn()
            except TransientStoreError as e:
                if attempt == self.opts.retries:
                    raise StoreError(f"{what}: still failing after {attempt + 1} tries ({e}); check the "
                                     f"connection and rerun, finished parts are kept") from None
                self.report.retries += 1
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    def _progress(self, n: int) -> None:
        self.report.bytes_sent += n
        if self._bar is not None:
            self._bar.update(n)

    def _skip(self, n: int) -> None:
        self.report.bytes_resumed += n
        if self._bar is not None:
            self._bar.update(n)

    def done_prefixes(self, dataset: str) -> set[str]:
        prefix = f"{self.ident.contractor}/{dataset}/"
        return {o.key[: -len(MANIFEST)] for o in self.store.list(prefix) if o.key.endswith("/" + MANIFEST)}

    def send_object(self, key: str, local: LocalObject) -> ObjectInfo:
        have = self.store.head(key)
        if have is not None and have.size == local.size and checksums_match(have.checksum, local.expected_checksum):
            self._skip(local.size)
            return have
        if not local.parts:
            with Body(local.path, 0, local.size, self._progress, self.throttle) as body:
                self._retry(f"put {key}", lambda: self.store.put(key, body, local.sha256_b64))
        else:
            self._send_multipart(key, local)
        self.report.objects_sent += 1
        return self._verify(key, local)

    def _send_multipart(self, key: str, local: LocalObject) -> None:
        held: dict[int, PartInfo] | None = None
        uploads = self._retry(f"list uploads of {key}", lambda: self.store.open_uploads(key))
        upload_id = None
        for uid in reversed(uploads):  # the newest unfinished upload of this key is the one to resume
            held = self._retry(f"list parts of {key}", lambda uid=uid: self.store.list_parts(key, uid))
            if held is not None:
                upload_id = uid
                break
        for stale in uploads:
            if stale != upload_id:
                self.store.abort_multipart(key, stale)
        if upload_id is None:
            upload_id = self._retry(f"start {key}", lambda: self.store.start_multipart(key))
            held = {}
        assert held is not None
        done: list[PartInfo] = []
        for n, (sha, md5) in enumerate(local.parts, start=1):
            off = (n - 1) * local.part_size
            length = min(local.part_size, local.size - off)
            p = held.get(n)
            if p is not None and p.size == length and (p.checksum == sha if p.checksum else p.etag == md5):
                self._skip(length)
                done.append(PartInfo(n, length, p.etag, sha))
                continue
            with Body(local.path, off, length, self._progress, self.throttle) as body:
                part = self._retry(f"part {n} of {key}",
                                   lambda n=n, body=body, sha=sha: self.store.upload_part(key, upload_id, n, body, sha))
            # what the store says it kept: its SHA-256 of the part where it answers one (S3), else its
            # ETag, which is the part's MD5 on stores without server-side KMS encryption
            if part.checksum is not None and part.checksum != sha or part.checksum is None and part.etag != md5:
                raise StoreError(f"part {n} of {key} arrived altered (store: {part.checksum or part.etag}); rerun")
            done.append(PartInfo(n, length, part.etag, sha))
        self._retry(f"complete {key}", lambda: self.store.complete_multipart(key, upload_id, done))

    def _verify(self, key: str, local: LocalObject) -> ObjectInfo:
        info = self._retry(f"head {key}", lambda: self.store.head(key))
        if info is not None and info.checksum is None and info.size == local.size:
            # a store that keeps no checksum: read the object back and hash it
            data = self._retry(f"read back {key}", lambda: self.store.get(key))
            if hashlib.sha256(data).hexdigest() == local.sha256_hex:
                return info
        elif info is not None and info.size == local.size and checksums_match(info.checksum,
                                                                            local.expected_checksum):
            return info
        got = "nothing" if info is None else f"{info.size} bytes, checksum {info.checksum}"
        if info is not None:
            self.store.delete(key)
        raise StoreError(f"{self.store.url}{key}: the store holds {got}, expected {local.size} bytes, checksum "
                         f"{local.expected_checksum}; the object was removed, rerun to send it again")

    def upload_episode(self, ds_path: Path, ep: LocalEpisode) -> None:
        archive = stage_archive(ds_path, ep, self.ident)
        size = archive.stat().st_size
        if self._bar is not None:  # the bar was sized from the episode's files; the zip adds its headers
            self._bar.total += size - _tree_size(ep.path)
        local = hash_local(archive, self.opts.part_size, size > self.opts.multipart_threshold)
        info = self.send_object(ep.prefix + ARCHIVE, local)
        a = ep.attrs
        manifest = {
            "format": FORMAT, "version": VERSION,
            "contractor": self.ident.contractor, "device": self.ident.device,
            "dataset": ep.prefix.split("/")[1], "episode_uuid": ep.episode_uuid, "episode_index": ep.index,
            "created": datetime.now(UTC).isoformat(), "software_version": a.get("software_version", ""),
            "episode": {
                "task": a.get("task", ""), "success": a.get("success"), "status": a.get("status"),
                "operator": a.get("operator", ""), "start_wall": a.get("start_wall", ""),
                "duration_s": a.get("duration_s"), "counts": a.get("counts", {}), "rig": a.get("rig", ""),
                "compacted": bool(a.get("compacted")),
            },
            "objects": [{"key": ARCHIVE, "size": local.size, "sha256": local.sha256_hex,
                         "store_checksum": info.checksum}],
        }
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        self._retry(f"put {ep.prefix}{MANIFEST}", lambda: self.store.put(ep.prefix + MANIFEST, data, sha256_b64(data)))
        self.report.objects_sent += 1
        m = self.store.head(ep.prefix + MANIFEST)
        if m is None or m.size != len(data):
            raise StoreError(f"{ep.prefix}{MANIFEST} did not land; rerun")
        archive.unlink(missing_ok=True)
        archive.with_suffix(".sig").unlink(missing_ok=True)
        self.report.episodes_sent += 1
        self.report.episodes.append(ep.prefix)

    def upload_dataset(self, ds_path: Path) -> UploadReport:
        t0 = time.monotonic()
        ds = Dataset(ds_path)
        eps = kept_episodes(ds, self.ident)
        done = self.done_prefixes(dataset_name(ds.path))
        todo = [e for e in eps if e.prefix not in done]
        self.report.episodes_already_up = len(eps) - len(todo)
        if not todo:
            self.log(f"nothing to upload: {len(eps)} kept episode(s) already in {self.store.url}")
            self.report.seconds = time.monotonic() - t0
            return self.report
        total = sum(_tree_size(e.path) for e in todo)
        if self.opts.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="upload",
                             file=sys.stderr, mininterval=0.5, dynamic_ncols=True)
        try:
            for e in todo:
                self.upload_episode(ds.path, e)
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        self.report.seconds = time.monotonic() - t0
        return self.report


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in _tree(path))


@dataclass(frozen=True)
class EpisodeStatus:
    index: int
    prefix: str
    state: str  # "uploaded" | "partial" | "pending"
    local_bytes: int
    stored_bytes: int


def upload_status(ds_path: Path, store: ObjectStore, ident: Identity) -> list[EpisodeStatus]:
    """Where each kept episode stands: in the store (manifest there), partly sent, or not started."""
    ds = Dataset(ds_path)
    eps = kept_episodes(ds, ident)
    up = Uploader(store, ident, UploadOptions(progress=False))
    done = up.done_prefixes(dataset_name(ds.path))
    out = []
    for e in eps:
        local = _tree_size(e.path)
        if e.prefix in done:
            out.append(EpisodeStatus(e.index, e.prefix, "uploaded", local, local))
            continue
        stored = 0
        key = e.prefix + ARCHIVE
        head = store.head(key)
        if head is not None:
            stored = head.size
        else:
            for uid in store.open_uploads(key):
                stored = max(stored, sum(p.size for p in (store.list_parts(key, uid) or {}).values()))
        out.append(EpisodeStatus(e.index, e.prefix, "partial" if stored else "pending", local, stored))
    return out
