"""Fleet benchmark: compaction, upload, ingest, catalog queries, and a projection to 270,000 hours.

    python benchmarks/bench_fleet.py [--sections compact,upload,ingest,hostile,catalog,project] [--episodes 24]

1. compaction, measured against the stored JPEG frames (what the recorder keeps, q90):
   a. the simulated rig's rendered frames (MuJoCo, the sim-aloha scene with moving arms);
   b. noisy camera-like frames, where JPEG q90 itself is ~36 dB from the original: size vs PSNR;
   c. one 640x480 camera at 30 fps through `compact_camera` on one thread: CPU per frame, incl.
      the decode-back check (real time = 33.3 ms a frame).
2. upload throughput to moto's loopback S3 server: clean, and through a proxy that resets every
   3rd connection after 1 MiB (parts retried); the directory store for comparison.
3. ingest throughput (episodes/s) on Ray Data with 1 and 2 workers, and the ratio;
   3b. (section ``hostile``) the same honest uploads alone and with 10 % hostile ones beside them
   (allocation bombs, a blosc header that allocates past the sandbox's memory cap, gzip inflation
   bombs, replayed takes, look-alike ids), 2 workers.
4. catalog query time over 10,000 episodes (Parquet, pyarrow).
5. the projection to 270,000 hours, from the figures above.
Prints markdown. Medians of --repeat runs where a figure is timed. Numbers depend on machine load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")

RESULTS: dict[str, float] = {}


def med(xs):
    return statistics.median(xs)


# ---- 1. compaction --------------------------------------------------------------------------------
def rendered_frames(n: int, h: int, w: int, camera: str = "angle") -> list[np.ndarray]:
    import mujoco

    from rig.sim.scene import SimScene

    scene = SimScene("transfer_cube")
    scene.reset(0)
    m, d = scene.model, scene.data
    m.vis.global_.offwidth, m.vis.global_.offheight = max(640, w), max(480, h)
    r = mujoco.Renderer(m, h, w)
    lo, hi = m.actuator_ctrlrange[:, 0], m.actuator_ctrlrange[:, 1]
    mid = d.ctrl.copy() if d.ctrl.any() else (lo + hi) / 2
    out = []
    steps = max(1, int(round(1 / 30 / m.opt.timestep)))
    for i in range(n):
        d.ctrl[:] = np.clip(mid + 0.25 * (hi - lo) * np.sin(i / 15 + np.arange(m.nu)), lo, hi)
        for _ in range(steps):
            mujoco.mj_step(m, d)
        r.update_scene(d, camera)
        out.append(r.render().copy())
    return out


def noisy_frames(n: int, h: int = 480, w: int = 640) -> list[np.ndarray]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_recorder

    bench_recorder.H, bench_recorder.W = h, w
    frames = bench_recorder.realistic_frames(n)
    rng = np.random.default_rng(1)
    return [np.clip(f.astype(np.int16) + rng.normal(0, 6, f.shape), 0, 255).astype(np.uint8) for f in frames]


def encode_cost(frames, fps, codec, crf, preset, refs):
    """Encode ``frames``; bytes, PSNR of the decoded video against each of ``refs``, CPU ms a frame."""
    from recorder.video import VideoOptions, encode_video, psnr, read_frames

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.mp4"
        c0 = time.process_time()
        encode_video(path, [frames], fps, VideoOptions(codec=codec, crf=crf, preset=preset, gop=int(fps), threads=1))
        cpu = time.process_time() - c0
        size = path.stat().st_size
        back = read_frames(path)
    return size, [psnr(back, np.stack(r)) for r in refs], cpu / len(frames) * 1e3


def bench_compact(args) -> None:
    from recorder.codec import decode_jpeg, encode_jpeg
    from recorder.video import psnr

    print("\n## 1. Compaction (sizes against the stored JPEG q90 frames; PSNR of the video against them)\n")
    sets = []
    try:
        for h, w in ((240, 320), (480, 640)):
            sets.append((f"sim rendered {w}x{h}", rendered_frames(args.frames, h, w)))
    except Exception as e:  # no MuJoCo/EGL here
        print(f"(simulated rig frames skipped: {type(e).__name__}: {e})")
    sets.append(("noisy camera-like 640x480", noisy_frames(args.frames)))
    print("| frames | form | bytes/frame | x smaller than JPEG | PSNR vs JPEG dB | PSNR vs original dB | CPU ms/frame |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, frames in sets:
        jpegs = [encode_jpeg(f, 90) for f in frames]
        ref = [decode_jpeg(j) for j in jpegs]
        jb = sum(map(len, jpegs))
        print(f"| {name} | JPEG q90 (stored) | {jb / len(frames):,.0f} | 1.0 | - | "
              f"{psnr(np.stack(ref), np.stack(frames)):.1f} | - |")
        # AV1 crf 30 is LeRobot's default; AV1 38 and H.264 22 are compaction's defaults
        configs = [("av1", 30, 10), ("av1", 38, 10), ("av1", 42, 10), ("h264", 18, "veryfast"),
                   ("h264", 22, "veryfast"), ("h264", 26, "veryfast")]
        if name.startswith("noisy"):
            configs = [("av1", 24, 10), ("av1", 30, 10), ("av1", 38, 10), ("h264", 18, "veryfast"),
                       ("h264", 22, "veryfast"), ("h264", 28, "veryfast")]
        for codec, crf, preset in configs:
            size, (p_jpeg, p_orig), cpu = encode_cost(ref, 30, codec, crf, preset, (ref, frames))
            tag = f"{codec} crf {crf} preset {preset}"
            print(f"| {name} | {tag} | {size / len(frames):,.0f} | {jb / size:.1f} | {p_jpeg:.1f} | {p_orig:.1f} | "
                  f"{cpu:.1f} |")
            RESULTS[f"compact {name} {codec} {crf} ratio"] = jb / size
            RESULTS[f"compact {name} {codec} {crf} bytes_per_frame"] = size / len(frames)
    # 1c. real compaction of one 640x480 camera at 30 fps, one thread, with the decode-back check
    from recorder import Dataset
    from recorder.compact import CompactOptions, compact_camera
    from rig.fleet.simulator import EpisodeSpec, write_episode

    print("\n1c. `compact_camera`, one 640x480 camera at 30 fps, encoder on 1 thread (real time = 33.3 ms/frame):\n")
    print("| codec | frames | CPU ms/frame (encode + decode-back check) | wall ms/frame | x real time |")
    print("|---|---:|---:|---:|---:|")
    for codec in ("av1", "h264"):
        cpus, walls = [], []
        for rep in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                ds = Dataset.create(Path(tmp) / "c.zarr")
                write_episode(ds, EpisodeSpec(seconds=args.frames / 30, fps=30, width=640, height=480, noisy=True),
                              rep, "pick the cup")
                c = compact_camera(ds.episode(0).path, "wrist", CompactOptions(codec=codec, threads=1))
                cpus.append(c.cpu_seconds / c.frames * 1e3)
                walls.append(c.seconds / c.frames * 1e3)
        print(f"| {codec} | {c.frames} | {med(cpus):.1f} | {med(walls):.1f} | {33.33 / med(cpus):.1f} |")
        RESULTS[f"compact cpu ms {codec}"] = med(cpus)


# ---- 2. upload -------------------------------------------------------------------------------------
def _moto():
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
    return srv, host, port


def bench_upload(args, work: Path) -> None:
    import boto3

    from recorder import Dataset
    from rig.fleet.identity import Identity
    from rig.fleet.lossy import DroppingProxy
    from rig.fleet.simulator import EpisodeSpec, write_episode
    from rig.fleet.store import DirStore, S3Store
    from rig.fleet.upload import Uploader, UploadOptions

    print("\n## 2. Upload throughput (moto's S3 server on loopback; 8 MiB parts)\n")
    ds = Dataset.create(work / "up.zarr")
    for i in range(3):
        write_episode(ds, EpisodeSpec(seconds=4, fps=30, width=640, height=480, noisy=True), i, "pick the cup")
    size = sum(p.stat().st_size for p in (ds.path / "episodes").rglob("*") if p.is_file())
    srv, host, port = _moto()
    ident = Identity("bench", "dev-bench")
    print(f"{size / 1e6:.1f} MB in 3 episodes.\n")
    print("| destination | MB/s (median) | retries | connections reset |")
    print("|---|---:|---:|---:|")
    try:
        for label in ("s3 (moto), clean", "s3 (moto), every 3rd connection reset after 1 MiB", "directory store"):
            rates, retries, resets = [], [], []
            for _ in range(args.repeat):
                proxy = None
                if label.startswith("directory"):
                    store = DirStore(work / f"dir-{time.monotonic_ns()}")
                else:
                    bucket = f"bench-{time.monotonic_ns()}"
                    boto3.client("s3").create_bucket(Bucket=bucket)
                    client = None
                    if "reset" in label:
                        proxy = DroppingProxy((host, port), drop_every=3, drop_after=1 << 20).start()
                        client = boto3.client("s3", endpoint_url=proxy.endpoint)
                    store = S3Store(bucket, "fleet", client=client)
                shutil.rmtree(ds.path / ".upload", ignore_errors=True)
                rep = Uploader(store, ident, UploadOptions(progress=False), log=lambda m: None).upload_dataset(ds.path)
                rates.append(rep.bytes_sent / rep.seconds / 1e6)
                retries.append(rep.retries)
                if proxy is not None:
                    resets.append(proxy.dropped)
                    proxy.stop()
            print(f"| {label} | {med(rates):.1f} | {med(retries):.0f} | {med(resets) if resets else '-'} |")
            RESULTS[f"upload {label}"] = med(rates)
    finally:
        srv.stop()
    print("\n(botocore retries a reset request itself first; 'retries' counts the uploader's own on top.)")


# ---- 3. ingest -------------------------------------------------------------------------------------
def bench_ingest(args, work: Path) -> None:
    import ray

    from rig.fleet.ingest import ingest, start_ray
    from rig.fleet.simulator import EpisodeSpec, simulate_fleet
    from rig.fleet.store import DirStore

    print(f"\n## 3. Ingest throughput on Ray Data ({args.episodes} episodes, directory store)\n")
    spec = EpisodeSpec(seconds=3.0, fps=15, width=160, height=120)
    store_dir = work / "ingest-store"
    t0 = time.monotonic()
    truth = simulate_fleet(work / "ingest-work", DirStore(store_dir), contractors=4,
                           episodes=max(1, args.episodes // 4), bad_fraction=0.25, spec=spec)
    nbytes = sum(p.stat().st_size for p in store_dir.rglob("episode.zip"))
    print(f"{len(truth.faults)} episodes ({nbytes / len(truth.faults) / 1e3:.0f} kB each) simulated and uploaded in "
          f"{time.monotonic() - t0:.1f} s.\n")
    print("| workers | episodes/s (median) | MB/s |")
    print("|---:|---:|---:|")
    rates = {}
    for workers in (1, 2):
        start_ray(None, workers)
        ingest(str(store_dir), work / f"warm-{workers}", workers=workers)  # workers started, imports done
        runs = []
        for r in range(args.repeat):
            res = ingest(str(store_dir), work / f"cat-{workers}-{r}", workers=workers)
            runs.append(res.new / res.seconds)
        ray.shutdown()
        rates[workers] = med(runs)
        print(f"| {workers} | {rates[workers]:.2f} | {rates[workers] * nbytes / len(truth.faults) / 1e6:.2f} |")
    print(f"\nscaling 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x (on a {os.cpu_count()}-core machine)")
    RESULTS["ingest eps/s 1"] = rates[1]
    RESULTS["ingest eps/s 2"] = rates[2]
    RESULTS["ingest MB/s per worker"] = rates[1] * nbytes / len(truth.faults) / 1e6


def bench_hostile(args, work: Path) -> None:
    """Honest uploads alone, then with 10 % hostile ones among them: what the hostile ones cost."""
    import ray

    from rig.fleet.ingest import ingest, start_ray
    from rig.fleet.simulator import EpisodeSpec, simulate_fleet
    from rig.fleet.store import DirStore
    from rig.fleet.validate import list_manifests
    from tests.fleet_support import allocation_bomb, blosc_bomb, inflation_bomb, rewrite

    print(f"\n## 3b. Ingest with 10 % hostile uploads ({args.episodes} honest episodes, directory store, 2 workers)\n")
    spec = EpisodeSpec(seconds=3.0, fps=15, width=160, height=120)
    store_dir = work / "hostile-store"
    store = DirStore(store_dir)
    simulate_fleet(work / "hostile-work", store, contractors=4, episodes=max(1, args.episodes // 4),
                   bad_fraction=0.0, spec=spec)
    honest = list_manifests(store)
    n_bad = max(1, round(len(honest) / 9))  # 10 % of all uploads
    kinds = [lambda k: allocation_bomb(store, k), lambda k: blosc_bomb(store, k), lambda k: inflation_bomb(store, k),
             lambda k: rewrite(store, k, contractor="mallory", device="dev-mallory", episode_uuid=str(uuid.uuid4())),
             lambda k: rewrite(store, k, contractor="ali\u0441e", episode_uuid=str(uuid.uuid4()))]
    hostile_store = DirStore(work / "hostile-store-2")
    shutil.copytree(store_dir, hostile_store.root, dirs_exist_ok=True)
    store = hostile_store
    for i in range(n_bad):
        kinds[i % len(kinds)](honest[i])
    start_ray(None, 2)
    ingest(str(store_dir), work / "hostile-warm", workers=2)
    rates = {}
    for label, src in (("honest only", store_dir), ("with 10 % hostile", hostile_store.root)):
        runs = []
        for r in range(args.repeat):
            res = ingest(str(src), work / f"hostile-cat-{label[:4]}-{r}", workers=2)
            runs.append(res.new / res.seconds)
        rates[label] = (med(runs), res.new, res.accepted)
    ray.shutdown()
    print("| uploads | episodes | accepted | episodes/s (median) |")
    print("|---|---:|---:|---:|")
    for label, (rate, n, acc) in rates.items():
        print(f"| {label} | {n} | {acc} | {rate:.2f} |")
    RESULTS["hostile eps/s"] = rates["with 10 % hostile"][0]


# ---- 4. catalog ------------------------------------------------------------------------------------
def bench_catalog(args, work: Path) -> None:
    import pyarrow.compute as pc

    from rig.fleet.ingest import contractor_report, read_catalog, write_rows
    from rig.fleet.validate import empty_row

    print("\n## 4. Catalog queries over 10,000 episodes\n")
    rng = np.random.default_rng(0)
    cat = work / "catalog10k"
    reasons = ["", "", "", "", "stall: no gripper data for 1.5 s", "drops: camera wrist lost 20%",
               "truncated object: episode.zip", "labels: no task"]
    for _part in range(10):
        rows = []
        for _ in range(1000):
            c = f"contractor-{rng.integers(0, 300):04d}"
            u = str(uuid.UUID(bytes=rng.bytes(16), version=5))  # random like real episode uuids
            key = f"{c}/rig/{u}/manifest.json"
            r = empty_row(key)
            reason = reasons[rng.integers(0, len(reasons))]
            r.update(contractor=c, device=f"dev-{c}", dataset="rig", episode_uuid=u, task="pick the cup",
                     accepted=not reason, gripper_rate_hz=float(rng.normal(200, 2)), camera_fps=float(rng.normal(30, 0.3)),
                     drop_fraction=float(rng.random() * 0.01), max_gap_s=float(rng.random() * 0.1),
                     clock_residual_ms=float(rng.random()), compacted=True,
                     reasons=reason, category=reason.split(":")[0], quality=float(rng.random()),
                     duration_s=float(rng.uniform(60, 900)), claimed_duration_s=float(rng.uniform(60, 900)),
                     frames=int(rng.integers(1000, 20000)), bytes=int(rng.integers(1e6, 1e8)))
            rows.append(r)
        write_rows(cat, rows)
    size = sum(p.stat().st_size for p in (cat / "episodes").glob("*.parquet"))
    queries = {
        "read the whole catalog": lambda: read_catalog(cat),
        "accepted hours of one contractor": lambda: pc.sum(read_catalog(
            cat, ["duration_s"], (pc.field("contractor") == "contractor-0042") & pc.field("accepted"))
            .column("duration_s")),
        "rejected episodes with reasons": lambda: read_catalog(cat, ["manifest_key", "reasons"],
                                                               ~pc.field("accepted")),
        "known manifest keys (a rerun's first step)": lambda: set(
            read_catalog(cat, ["manifest_key"]).column("manifest_key").to_pylist()),
        "per-contractor report": lambda: contractor_report(cat),
    }
    print(f"{size / 1e6:.2f} MB of Parquet in 10 parts ({size / 10000:.0f} bytes an episode).\n")
    print("| query | ms (median of 5) |")
    print("|---|---:|")
    for q, fn in queries.items():
        fn()
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t) * 1e3)
        print(f"| {q} | {med(ts):.1f} |")
    RESULTS["catalog bytes per episode"] = size / 10000


# ---- 5. projection ---------------------------------------------------------------------------------
def project(args) -> None:
    hours = 270_000
    ep_min = args.episode_minutes
    episodes = hours * 60 / ep_min
    # Video bytes an hour of one 640x480 camera at 30 fps. The synthetic frames here compress far
    # better than a real camera's, so the projection uses the measurement of LeRobot's AV1
    # on real frames (96 MB a minute for 4 cameras = 24 MB a minute a camera) unless told otherwise.
    video_h = args.video_mb_per_min * 1e6 * 60
    gripper_h = 200 * 3600 * 64  # 200 Hz rows of ~64 bytes (before zarr's compression)
    per_hour = video_h + gripper_h
    total = per_hour * hours
    cat_row = RESULTS.get("catalog bytes per episode", 80.0)
    day_hours = args.day_hours
    day_bytes = day_hours * per_hour
    mbps_worker = args.ingest_mbps or RESULTS.get("ingest MB/s per worker", 1.0)
    workers = day_bytes / 1e6 / (mbps_worker * 86400)
    cores = int(np.ceil(workers * 2))
    print("\n## 5. Projection to 270,000 hours (handheld rigs: one 640x480 camera at 30 fps + gripper at 200 Hz)\n")
    print(f"- episodes: {episodes:,.0f} of {ep_min:g} min; objects: {2 * episodes:,.0f} (archive + manifest each). "
          f"Unpacked, an episode's zarr tree holds ~15 chunk files per recorded second (11 gripper arrays + 4 "
          f"camera arrays, 1 s chunks): {hours * 3600 * 15:,.0f} objects, which is why episodes travel as one zip.")
    print(f"- bytes: {per_hour / 1e9:.2f} GB an hour ({video_h / 1e9:.2f} GB video at {args.video_mb_per_min:g} MB a "
          f"minute + {gripper_h / 1e9:.2f} GB gripper) -> {total / 1e12:,.0f} TB in all. As JPEG q90 (the recorder's "
          f"form, ~124 MB a minute a camera by the issue's figure) it would be ~{124 * 60e6 * hours / 1e12:,.0f} TB.")
    print(f"- catalog: {episodes * cat_row / 1e6:,.0f} MB of Parquet ({cat_row:.0f} B an episode): fits one "
          "machine's memory; no database needed.")
    print(f"- one day's uploads ({day_hours:,} h: e.g. 3,000 contractors x 4 h) = {day_bytes / 1e12:.1f} TB, "
          f"{day_hours * 60 / ep_min:,.0f} episodes. At {mbps_worker:.1f} MB/s per ingest worker (measured here on "
          f"small episodes, so per-episode overhead weighs more than it would) that is {workers:,.0f} worker-days: "
          f"{cores:,} CPU cores with 2x headroom, e.g. {int(np.ceil(cores / 32))} nodes of 32 cores "
          f"(`rig fleet ingest --address` on a Ray cluster), reading {day_bytes / 86400 / 1e6 * 8:,.0f} Mbit/s from "
          "the store on average.")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sections", default="compact,upload,ingest,hostile,catalog,project")
    p.add_argument("--frames", type=int, default=90, help="frames per compaction measurement")
    p.add_argument("--episodes", type=int, default=24, help="episodes for the ingest measurement")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--episode-minutes", type=float, default=5.0)
    p.add_argument("--day-hours", type=int, default=12_000)
    p.add_argument("--video-mb-per-min", type=float, default=24.0, help="compacted video, one camera")
    p.add_argument("--ingest-mbps", type=float, default=None, help="per-worker ingest MB/s (default: measured)")
    args = p.parse_args()
    sections = args.sections.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench_fleet-"))
    try:
        if "compact" in sections:
            bench_compact(args)
        if "upload" in sections:
            bench_upload(args, work)
        if "ingest" in sections:
            bench_ingest(args, work)
        if "hostile" in sections:
            bench_hostile(args, work)
        if "catalog" in sections:
            bench_catalog(args, work)
        if "project" in sections:
            project(args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
