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
import math
import re
from dataclasses import dataclass
from typing import Any

from drivers.errors import RigError
from rig.fleet.identity import ID_FORMAT, is_id
from rig.fleet.store import BadKeyError, check_key

MANIFEST = "manifest.json"
FORMAT = "rig-fleet-manifest"
VERSION = 1
ARCHIVE = "episode.zip"  # the episode's zarr tree, stored uncompressed: plain zarr opens it as a ZipStore
MAX_MANIFEST_BYTES = 1 << 20
MAX_OBJECTS = 64  # an episode is a handful of objects; a manifest listing thousands is hostile
KNOWN_VERSIONS = (1,)
MAX_DURATION_S = 4 * 3600.0  # the longest take the ingest accepts
MAX_TEXT = 1000  # task, operator, rig: characters
MAX_SHORT = 64  # times and version strings
MAX_COUNT = 10**8  # rows or frames of one stream or camera (4 h at 1 kHz is 1.44e7)
MAX_NAMES = 32  # streams or cameras counted in the manifest
MAX_INDEX = 10**7  # an episode's index in its dataset
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


def _text(d: dict[str, Any], name: str, limit: int, where: str = "") -> str:
    v = d.get(name, "")
    if v is None:
        v = ""
    if not isinstance(v, str):
        raise ManifestError(f"schema: {where}{name!r} is {type(v).__name__}, not str")
    if len(v) > limit:
        raise ManifestError(f"schema: {where}{name!r} is {len(v)} characters, over the {limit} limit")
    return v


def _int(d: dict[str, Any], name: str, lo: int, hi: int, where: str = "") -> int:
    v = _need(d, name, int)
    if not lo <= v <= hi:
        raise ManifestError(f"schema: {where}{name!r} is {str(v)[:24]}, outside [{lo}, {hi}]")
    return v


def _only(d: dict[str, Any], known: frozenset[str], where: str) -> None:
    extra = sorted(set(d) - known)
    if extra:
        raise ManifestError(f"schema: unknown field {ascii(extra[0])[:60]} in {where}")


_TOP = frozenset({"format", "version", "contractor", "device", "dataset", "episode_uuid", "episode_index",
                  "created", "software_version", "episode", "objects"})
_EPISODE = frozenset({"task", "success", "status", "operator", "start_wall", "duration_s", "counts", "rig",
                      "compacted"})
_OBJECT = frozenset({"key", "size", "sha256", "store_checksum"})


def _check_episode_fields(ep: dict[str, Any]) -> None:
    """Every field of the episode summary: its type and range (the catalog's own columns come from
    the validated archive; these are checked so nothing unbounded or non-finite passes)."""
    _only(ep, _EPISODE, "episode")
    for name in ("task", "operator", "rig"):
        _text(ep, name, MAX_TEXT, "episode.")
    for name in ("status", "start_wall"):
        _text(ep, name, MAX_SHORT, "episode.")
    if ep.get("success") is not None and not isinstance(ep["success"], bool):
        raise ManifestError("schema: episode.'success' is not true, false or null")
    if not isinstance(ep.get("compacted", False), bool):
        raise ManifestError("schema: episode.'compacted' is not true or false")
    d = ep.get("duration_s")
    if not isinstance(d, int | float) or isinstance(d, bool) or not math.isfinite(d) or not 0 < d <= MAX_DURATION_S:
        raise ManifestError(f"schema: episode.'duration_s' is {str(d)[:24]}, not a number of seconds in "
                            f"(0, {MAX_DURATION_S:.0f}]")
    counts = ep.get("counts", {})
    if not isinstance(counts, dict):
        raise ManifestError("schema: episode.'counts' is not an object")
    _only(counts, frozenset({"streams", "cameras"}), "episode.counts")
    for kind, per in counts.items():
        if not isinstance(per, dict) or len(per) > MAX_NAMES:
            raise ManifestError(f"schema: episode.counts.{kind} is not an object of at most {MAX_NAMES} names")
        for name, n in per.items():
            if not is_id(name):
                raise ManifestError(f"schema: episode.counts.{kind} name {ascii(name)[:60]} is not {ID_FORMAT}")
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_COUNT:
                raise ManifestError(f"schema: episode.counts.{kind}.{name} is {str(n)[:24]}, outside [0, {MAX_COUNT}]")


def parse_manifest(manifest_key: str, data: bytes) -> Manifest:
    """Check a manifest read from ``manifest_key``; every failure is one ManifestError reason.
    Every field has a type and a range; an unknown field is refused."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"bad JSON: the manifest is {len(data)} bytes, over the {MAX_MANIFEST_BYTES} limit")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ManifestError(f"bad JSON: {str(e)[:120]}") from None
    if not isinstance(doc, dict):
        raise ManifestError("bad JSON: the manifest is not an object")
    if doc.get("format") != FORMAT:
        raise ManifestError(f"schema: format is {ascii(doc.get('format'))[:40]}, not {FORMAT!r}")
    version = _need(doc, "version", int)
    if version not in KNOWN_VERSIONS:
        raise ManifestError(f"schema: version {str(version)[:24]} is not one this ingest reads {KNOWN_VERSIONS}")
    _only(doc, _TOP, "the manifest")
    ids = {}
    for name in ("contractor", "device", "dataset"):
        v = _need(doc, name, str)
        if not is_id(v):
            raise ManifestError(f"identity: {name} id {ascii(v)[:80]} is not {ID_FORMAT}")
        ids[name] = v
    contractor, device, dataset = ids["contractor"], ids["device"], ids["dataset"]
    ep_uuid = _need(doc, "episode_uuid", str)
    if not _UUID.fullmatch(ep_uuid):
        raise ManifestError(f"schema: episode_uuid {ascii(ep_uuid)[:40]} is not a UUID")
    prefix = episode_prefix(contractor, dataset, ep_uuid)
    if manifest_key.rsplit("/", 1)[0] + "/" != prefix or manifest_key.rsplit("/", 1)[-1] != MANIFEST:
        raise ManifestError(f"path outside the prefix: the manifest at {ascii(manifest_key)[:120]} claims prefix "
                            f"{prefix!r}")
    _int(doc, "episode_index", 0, MAX_INDEX)
    _text(doc, "created", MAX_SHORT)
    _text(doc, "software_version", MAX_SHORT)
    episode = _need(doc, "episode", dict)
    _check_episode_fields(episode)
    objects = []
    seen = set()
    listed = _need(doc, "objects", list)
    if len(listed) > MAX_OBJECTS:
        raise ManifestError(f"schema: {len(listed)} objects listed, over the {MAX_OBJECTS} limit")
    for i, o in enumerate(listed):
        if not isinstance(o, dict):
            raise ManifestError(f"schema: objects[{i}] is not an object")
        _only(o, _OBJECT, f"objects[{i}]")
        key = _need(o, "key", str)
        try:
            full = check_key(prefix + key)
        except BadKeyError:
            raise ManifestError(f"path outside the prefix: object key {ascii(key)[:80]}") from None
        if not full.startswith(prefix) or key == MANIFEST:
            raise ManifestError(f"path outside the prefix: object key {ascii(key)[:80]}")
        if key in seen:
            raise ManifestError(f"schema: object {ascii(key)[:80]} is listed twice")
        seen.add(key)
        size = _need(o, "size", int)
        sha = _need(o, "sha256", str)
        if size < 0 or not _HEX64.fullmatch(sha):
            raise ManifestError(f"schema: object {ascii(key)[:80]} has size {str(size)[:24]} / sha256 "
                                f"{ascii(sha)[:70]}")
        _text(o, "store_checksum", MAX_SHORT * 2, f"objects[{i}].")
        objects.append(ManifestObject(key, size, sha))
    if ARCHIVE not in seen:
        raise ManifestError(f"schema: no {ARCHIVE!r} among the objects")
    return Manifest(manifest_key, prefix, contractor, device, dataset, ep_uuid, episode, tuple(objects), doc)
