"""A fleet on one machine: N contractors x M handheld episodes, some of them bad on purpose.

Episodes are generated through the recorder's own EpisodeWriter with the handheld rig's stream
(the gripper's fields at its rate) and a wrist camera, on a synthetic clock, so they are real
episodes on disk; they can also be mixed with takes recorded on the sim-handheld rig. Each
contractor's dataset is uploaded through the real uploader under its own identity; then a few
uploads are damaged in the store the way a hostile or broken client would.

Faults in the data (the episode uploads fine, the ingest must reject it):
  stall           no gripper sample and no frame for 1.5 s
  non_monotonic   gripper time stamps that step backwards
  drops           a fifth of the camera frames and gripper samples lost (counter gaps)
  short           0.4 s long
  no_task         no task label
  clock           the gripper's clock does not follow the host clock (25 ms residuals)
Faults in the store (after upload):
  bad_json        the manifest is cut in the middle of its JSON
  outside_prefix  the manifest points at another contractor's object ('../../...')
  lying_manifest  the manifest's SHA-256 for the archive is not the archive's
  truncated       the archive object lost its second half
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from drivers.cameras.frame import Frame
from recorder import Dataset, WriterOptions
from recorder.codec import encode_jpeg
from rig.fleet.identity import Identity
from rig.fleet.manifest import ARCHIVE, MANIFEST
from rig.fleet.store import ObjectStore, sha256_b64
from rig.fleet.upload import Uploader, UploadOptions, dataset_name, kept_episodes
from rig.handheld import GRIPPER_FIELDS

DATA_FAULTS = ("stall", "non_monotonic", "drops", "short", "no_task", "clock")
STORE_FAULTS = ("bad_json", "outside_prefix", "lying_manifest", "truncated")
TASKS = ("pick the cup", "open the drawer", "fold the towel", "wipe the table")

# the rejection reason's leading words the ingest gives for each fault
EXPECTED_REASON = {
    "stall": "stall", "non_monotonic": "non-monotonic", "drops": "drops", "short": "duration",
    "no_task": "labels", "clock": "clock", "bad_json": "bad JSON", "outside_prefix": "path outside the prefix",
    "lying_manifest": "manifest lies", "truncated": "truncated object",
}


@dataclass(frozen=True)
class EpisodeSpec:
    seconds: float = 3.0
    gripper_hz: float = 200.0
    fps: float = 15.0
    width: int = 160
    height: int = 120
    noisy: bool = False  # camera-like noise (large JPEGs) instead of a smooth scene


def _frame_image(rng: np.random.Generator, spec: EpisodeSpec, i: int) -> np.ndarray:
    h, w = spec.height, spec.width
    y, x = np.mgrid[0:h, 0:w]
    phase = i / max(spec.fps, 1.0)
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = (128 + 100 * np.sin(x / 17.0 + phase)).astype(np.uint8)
    img[..., 1] = (128 + 100 * np.cos(y / 13.0 - phase)).astype(np.uint8)
    img[..., 2] = ((x + y + i * 3) % 256).astype(np.uint8)
    if spec.noisy:
        img = np.clip(img.astype(np.int16) + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    return img


def write_episode(ds: Dataset, spec: EpisodeSpec, seed: int, task: str, fault: str | None = None,
                  operator: str = "") -> int:
    """One handheld episode through the recorder's writer, on a synthetic clock; returns its index."""
    rng = np.random.default_rng(seed)
    seconds = 0.4 if fault == "short" else spec.seconds
    w = ds.new_episode(task="" if fault == "no_task" else task, operator=operator,
                       extra={"rig": "sim-handheld", "generated": {"seed": seed, "fault": fault}},
                       options=WriterOptions(max_pending_s=max(60.0, seconds * 4)))
    w.add_stream("gripper", GRIPPER_FIELDS, rate_hz=spec.gripper_hz)
    w.add_camera("wrist", fps=spec.fps)
    w.start()
    t0 = time.monotonic_ns()
    n = int(seconds * spec.gripper_hz)
    t = t0 + (np.arange(n) * 1e9 / spec.gripper_hz).astype(np.int64) + rng.integers(0, 200_000, n)
    t.sort()
    seq = np.arange(n, dtype=np.int64) + 1000
    t_dev_us = ((t - t0) // 1000 + 5_000_000).astype(np.int64)
    keep = np.ones(n, bool)
    stall = (0.4 * seconds, 0.4 * seconds + 1.5) if fault == "stall" else None
    if fault == "stall":
        t = np.where(t - t0 > stall[0] * 1e9, t + int(1.5e9), t)
    if fault == "drops":
        keep &= rng.random(n) > 0.2
    if fault == "clock":
        t_dev_us = t_dev_us + rng.normal(0, 25_000, n).astype(np.int64)
    if fault == "non_monotonic":
        for j in rng.choice(np.arange(10, n - 10), 5, replace=False):
            t[j] = t[j - 5]
    jaw = (0.5 + 0.45 * np.sin(np.arange(n) / spec.gripper_hz * 2.0)).astype(np.float32)
    for j in np.flatnonzero(keep):
        w.append("gripper", int(t[j]), seq=int(seq[j]), t_device_us=int(t_dev_us[j]), t_received_ns=int(t[j]),
                 jaw_rad=float(jaw[j]) * 1.2, jaw=float(jaw[j]), trigger=0, buttons=0,
                 accel=np.array([0, 0, 9.81], np.float32) + rng.normal(0, 0.05, 3).astype(np.float32),
                 gyro=rng.normal(0, 0.01, 3).astype(np.float32), flags=0)
    nf = int(seconds * spec.fps)
    for i in range(nf):
        if fault == "drops" and rng.random() < 0.2:
            continue
        tf = t0 + int(i * 1e9 / spec.fps) + 3_000_000
        if stall is not None and (tf - t0) / 1e9 > stall[0]:
            tf += int(1.5e9)
        jpeg = encode_jpeg(_frame_image(rng, spec, i))
        w.add_frame(Frame("wrist", i, tf, np.frombuffer(jpeg, np.uint8), encoding="jpeg", t_device_ns=tf - t0))
    w.stop(success=None)
    # the writer timed the take on the wall clock; the synthetic clock is what the data holds
    span = (int(max(t[keep].max(), t0)) - t0) / 1e9
    zarr.open_group(str(w.path), mode="r+").update_attributes({"duration_s": span})
    return w.index


@dataclass
class FleetTruth:
    """What the simulator did: episode prefix -> fault (None for a good episode)."""

    faults: dict[str, str | None] = field(default_factory=dict)
    contractors: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # prefix -> duration

    def expected_reason(self, prefix: str) -> str | None:
        f = self.faults.get(prefix)
        return None if f is None else EXPECTED_REASON[f]


def corrupt(store: ObjectStore, prefix: str, fault: str, other_prefix: str | None = None) -> None:
    """Damage an uploaded episode in the store the way a broken or hostile client would."""
    key = prefix + MANIFEST
    doc = json.loads(store.get(key))
    if fault == "bad_json":
        data = json.dumps(doc).encode()[:150]
    elif fault == "outside_prefix":
        target = other_prefix or "someone/else/"
        doc["objects"][0]["key"] = "../../../" + target + ARCHIVE
        data = json.dumps(doc).encode()
    elif fault == "lying_manifest":
        doc["objects"][0]["sha256"] = "0" * 64
        data = json.dumps(doc).encode()
    elif fault == "truncated":
        blob = store.get(prefix + ARCHIVE)
        half = blob[: len(blob) // 2]
        store.put(prefix + ARCHIVE, half, sha256_b64(half))
        return
    else:
        raise ValueError(f"unknown store fault {fault!r}; one of {STORE_FAULTS}")
    store.put(key, data, sha256_b64(data))


def simulate_fleet(work: Path, store: ObjectStore, contractors: int = 3, episodes: int = 4,
                   bad_fraction: float = 0.3, seed: int = 0, spec: EpisodeSpec | None = None,
                   datasets: dict[str, Path] | None = None,
                   faults: list[str | None] | None = None) -> FleetTruth:
    """Make ``contractors`` datasets of ``episodes`` episodes under ``work``, upload each under its
    own identity, then damage some uploads. ``datasets`` adds recorded datasets (contractor -> path)
    uploaded as they are (good episodes). ``faults`` fixes the fault of each episode in order
    (contractor by contractor) instead of drawing them with ``bad_fraction``."""
    spec = spec or EpisodeSpec()
    rng = random.Random(seed)
    truth = FleetTruth()
    cycle = list(DATA_FAULTS + STORE_FAULTS)
    rng.shuffle(cycle)
    plan: list[tuple[str, int, str | None]] = []
    k = 0
    for c in range(contractors):
        for e in range(episodes):
            fault = None
            if faults is not None:
                fault = faults[len(plan)] if len(plan) < len(faults) else None
            elif rng.random() < bad_fraction:
                fault = cycle[k % len(cycle)]
                k += 1
            plan.append((f"contractor-{c:03d}", e, fault))
    by_contractor: dict[str, list[tuple[int, str | None]]] = {}
    for name, e, fault in plan:
        by_contractor.setdefault(name, []).append((e, fault))
    store_faults: list[tuple[str, str]] = []
    for c, (name, items) in enumerate(sorted(by_contractor.items())):
        ident = Identity(name, f"dev-{c:04d}")
        path = work / name / "rig.zarr"
        ds = Dataset(path) if (path / "zarr.json").exists() else Dataset.create(path)
        made: dict[int, str | None] = {}
        for e, fault in items:
            data_fault = fault if fault in DATA_FAULTS else None
            idx = write_episode(ds, spec, seed * 100_003 + c * 1000 + e, TASKS[(c + e) % len(TASKS)], data_fault,
                                operator=name)
            made[idx] = fault
        Uploader(store, ident, UploadOptions(progress=False), log=lambda _m: None).upload_dataset(path)
        for ep in kept_episodes(Dataset(path), ident):
            if ep.index in made:
                truth.faults[ep.prefix] = made[ep.index]
                truth.seconds[ep.prefix] = float(ep.attrs.get("duration_s") or 0.0)
                if made[ep.index] in STORE_FAULTS:
                    store_faults.append((ep.prefix, made[ep.index]))
        truth.contractors.append(name)
    for name, path in (datasets or {}).items():
        ident = Identity(name, f"dev-{name}")
        Uploader(store, ident, UploadOptions(progress=False), log=lambda _m: None).upload_dataset(path)
        for ep in kept_episodes(Dataset(path), ident):
            truth.faults[ep.prefix] = None
            truth.seconds[ep.prefix] = float(ep.attrs.get("duration_s") or 0.0)
        truth.contractors.append(name)
    good = [p for p, f in truth.faults.items() if f is None]
    for prefix, fault in store_faults:
        other = next((g for g in good if not g.startswith(prefix.split("/")[0] + "/")), None)
        corrupt(store, prefix, fault, other)
    return truth


__all__ = ["DATA_FAULTS", "STORE_FAULTS", "EpisodeSpec", "FleetTruth", "corrupt", "simulate_fleet", "write_episode",
           "dataset_name"]
