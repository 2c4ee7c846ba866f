"""The episode manifest: the last object of an uploaded episode, listing every other one.

Objects of one episode live under ``<contractor>/<dataset>/<episode-uuid>/``; the manifest is
``manifest.json`` there. An episode prefix without a manifest is incomplete and the ingest skips it.

    {"format": "rig-fleet-manifest", "version": 1,
     "contractor": "alice", "device": "dev-...", "dataset": "rig", "episode_uuid": "...",
     "episode_index": 3, "created": "<UTC ISO time>", "software_version": "...",
     "episode": {"task": ..., "success": ..., "status": "complete", "start_wall": ..., "duration_s": ...,
                 "counts": {"streams": {...}, "cameras": {...}}, "rig": ..., "compacted": false},
     "objects": [{"key": "episode.zip", "size": N, "sha256": "<hex>", "store_checksum": "<b64 or b64-N>"}]}

Object keys are relative to the episode prefix. ``parse_manifest`` is what the ingest trusts: it
refuses anything that is not this shape, and any key that would leave the prefix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from drivers.errors import RigError
from rig.fleet.store import BadKeyError, check_key

MANIFEST = "manifest.json"
FORMAT = "rig-fleet-manifest"
VERSION = 1
ARCHIVE = "episode.zip"  # the episode's zarr tree, stored uncompressed: plain zarr opens it as a ZipStore
MAX_MANIFEST_BYTES = 1 << 20
MAX_OBJECTS = 64  # an episode is a handful of objects; a manifest listing thousands is hostile
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class ManifestError(RigError):
    """The manifest is not something the ingest can trust; the message is the rejection reason."""


def episode_prefix(contractor: str, dataset: str, episode_uuid: str) -> str:
    return f"{contractor}/{dataset}/{episode_uuid}/"


@dataclass(frozen=True)
class ManifestObject:
    key: str  # relative to the episode prefix
    size: int
    sha256: str  # hex


@dataclass(frozen=True)
class Manifest:
    key: str  # the manifest's own key in the store
    prefix: str
    contractor: str
    device: str
    dataset: str
    episode_uuid: str
    episode: dict[str, Any]
    objects: tuple[ManifestObject, ...]
    raw: dict[str, Any]


def _need(d: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in d:
        raise ManifestError(f"schema: no {name!r}")
    v = d[name]
    if not isinstance(v, kind) or isinstance(v, bool) and kind is int:
        raise ManifestError(f"schema: {name!r} is {type(v).__name__}, not {getattr(kind, '__name__', kind)}")
    return v


def parse_manifest(manifest_key: str, data: bytes) -> Manifest:
    """Check a manifest read from ``manifest_key``; every failure is one ManifestError reason."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest is {len(data)} bytes, over the {MAX_MANIFEST_BYTES} limit")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ManifestError(f"bad JSON: {str(e)[:120]}") from None
    if not isinstance(doc, dict):
        raise ManifestError("bad JSON: the manifest is not an object")
    if doc.get("format") != FORMAT:
        raise ManifestError(f"schema: format is {str(doc.get('format'))[:40]!r}, not {FORMAT!r}")
    if _need(doc, "version", int) > VERSION:
        raise ManifestError(f"schema: version {doc['version']} is newer than this ingest reads ({VERSION})")
    contractor = _need(doc, "contractor", str)
    device = _need(doc, "device", str)
    dataset = _need(doc, "dataset", str)
    ep_uuid = _need(doc, "episode_uuid", str)
    if not _UUID.match(ep_uuid):
        raise ManifestError(f"schema: episode_uuid {ep_uuid[:40]!r} is not a UUID")
    prefix = episode_prefix(contractor, dataset, ep_uuid)
    if manifest_key.rsplit("/", 1)[0] + "/" != prefix or manifest_key.rsplit("/", 1)[-1] != MANIFEST:
        raise ManifestError(f"path outside the prefix: the manifest at {manifest_key!r} claims prefix {prefix!r}")
    episode = _need(doc, "episode", dict)
    objects = []
    seen = set()
    listed = _need(doc, "objects", list)
    if len(listed) > MAX_OBJECTS:
        raise ManifestError(f"schema: {len(listed)} objects listed, over the {MAX_OBJECTS} limit")
    for i, o in enumerate(listed):
        if not isinstance(o, dict):
            raise ManifestError(f"schema: objects[{i}] is not an object")
        key = _need(o, "key", str)
        try:
            full = check_key(prefix + key)
        except BadKeyError:
            raise ManifestError(f"path outside the prefix: object key {key[:80]!r}") from None
        if not full.startswith(prefix) or key == MANIFEST:
            raise ManifestError(f"path outside the prefix: object key {key[:80]!r}")
        if key in seen:
            raise ManifestError(f"schema: object {key!r} is listed twice")
        seen.add(key)
        size = _need(o, "size", int)
        sha = _need(o, "sha256", str)
        if size < 0 or not _HEX64.match(sha):
            raise ManifestError(f"schema: object {key!r} has size {size} / sha256 {sha[:70]!r}")
        objects.append(ManifestObject(key, size, sha))
    if ARCHIVE not in seen:
        raise ManifestError(f"schema: no {ARCHIVE!r} among the objects")
    return Manifest(manifest_key, prefix, contractor, device, dataset, ep_uuid, episode, tuple(objects), doc)
