"""Recorder benchmark: sustained 640x480 cameras at 50 fps plus a 50 Hz joint stream.

    python benchmarks/bench_recorder.py [--seconds 10] [--max-cams 6] [--out DIR]

Prints markdown tables:
  1. codecs on one realistic 640x480 frame: bytes and CPU ms per frame
  2. rig recorder, 1..N cameras: frames dropped, CPU, bytes per hour, append cost, stop->readable
  3. the same frames the ALOHA way (kept in memory, raw, h5py per-frame chunks, written at the end)
LeRobot's writer is not measured: `pip install lerobot` would replace this environment's numpy,
OpenCV and torch (CUDA build, several GB), so it is left out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from drivers.cameras.frame import Frame
from recorder import Dataset, WriterOptions
from recorder.codec import encode_jpeg, jpeg_backend

H, W, FPS, RATE = 480, 640, 50, 50


def realistic_frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """Camera-like frames: smooth lighting, textured objects, moving shapes, sensor noise.

    (drivers.cameras.synthetic's colour bars compress ~10x better than real scenes, which would
    flatter every size figure here.)"""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    base = np.stack([90 + 60 * xx / W, 80 + 50 * yy / H, 70 + 40 * (xx + yy) / (W + H)], -1)
    tex = cv2.resize(rng.normal(0, 25, (H // 8, W // 8, 3)).astype(np.float32), (W, H))
    out = []
    for i in range(n):
        img = base + tex
        cx, cy = int(200 + 150 * np.sin(i / 8)), int(240 + 100 * np.cos(i / 11))
        cv2.circle(img, (cx, cy), 60, (200, 40, 40), -1)
        cv2.rectangle(img, (400 - i % 40, 100), (520 - i % 40, 300), (30, 160, 60), -1)
        img += rng.normal(0, 4, img.shape).astype(np.float32)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def cpu_per_call(fn, n: int = 40) -> tuple[float, int]:
    t = time.process_time()
    r = None
    for _ in range(n):
        r = fn()
    return (time.process_time() - t) / n * 1e3, len(r)


def codec_table(img: np.ndarray) -> list[str]:
    import numcodecs

    rows = []
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    cases = [
        (f"JPEG q90 ({jpeg_backend()}, the recorder)", lambda: encode_jpeg(img, 90)),
        (
            "JPEG q90 (OpenCV, incl. RGB->BGR)",
            lambda: cv2.imencode(
                ".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
            )[1],
        ),
        ("PNG level 1 (lossless)", lambda: cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1]),
        ("PNG level 3 (lossless)", lambda: cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])[1]),
        ("raw + blosc lz4 shuffle", lambda: numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE).encode(img)),
        (
            "raw + blosc zstd-3 bitshuffle",
            lambda: numcodecs.Blosc("zstd", 3, numcodecs.Blosc.BITSHUFFLE).encode(img),
        ),
        ("raw (ALOHA)", lambda: img.tobytes()),
    ]
    try:
        import simplejpeg

        cases.insert(1, ("JPEG q90 (simplejpeg)", lambda: simplejpeg.encode_jpeg(img, 90, "RGB", "420")))
    except ImportError:
        pass
    rows.append("| codec | bytes/frame | CPU ms/frame | cores for 4 cams x 50 fps |")
    rows.append("|---|---:|---:|---:|")
    for name, fn in cases:
        ms, size = cpu_per_call(fn, 10 if "PNG" in name or "zstd" in name else 40)
        rows.append(f"| {name} | {size:,} | {ms:.2f} | {ms * 200 / 1000:.2f} |")
    return rows


def run_cameras(n_cams: int, frames: list[np.ndarray], seconds: float, sink, joints_sink) -> dict:
    """Camera threads at FPS each and a RATE Hz tick loop feeding ``sink(frame)``/``joints_sink(t)``."""
    stop = threading.Event()
    late = [0] * n_cams
    append_ns: list[int] = []

    def camera(c: int) -> None:
        name = f"cam{c}"
        t0 = time.monotonic_ns()
        k = 0
        while not stop.is_set():
            due = t0 + k * 1_000_000_000 // FPS
            now = time.monotonic_ns()
            if due > now:
                time.sleep((due - now) / 1e9)
            elif now - due > 2 * 1_000_000_000 // FPS:
                late[c] += 1  # the source itself fell behind (CPU starved): not a recorder drop
            sink(Frame(name, k, time.monotonic_ns(), frames[(k + 7 * c) % len(frames)]))
            k += 1

    def ticks() -> None:
        t0 = time.monotonic_ns()
        i = 0
        q = np.zeros(14, np.float32)
        while not stop.is_set():
            due = t0 + i * 1_000_000_000 // RATE
            now = time.monotonic_ns()
            if due > now:
                time.sleep((due - now) / 1e9)
            q[:] = i
            a = time.perf_counter_ns()
            joints_sink(time.monotonic_ns(), q, i, due)
            append_ns.append(time.perf_counter_ns() - a)
            i += 1

    threads = [threading.Thread(target=camera, args=(c,)) for c in range(n_cams)]
    threads.append(threading.Thread(target=ticks))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return {
        "cpu": time.process_time() - cpu0,
        "wall": time.perf_counter() - wall0,
        "source_late": sum(late),
        "append_us_p99": float(np.percentile(append_ns, 99)) / 1e3 if append_ns else 0.0,
        "append_us_max": max(append_ns) / 1e3 if append_ns else 0.0,
    }


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_rig(n_cams: int, frames, seconds: float, root: Path, threads: int, flush_s: float = 0.5) -> dict:
    ds = Dataset.create(root / f"rig_{n_cams}_{flush_s}")
    ep = ds.new_episode(
        task="bench", options=WriterOptions(encoder_threads=threads, flush_interval_s=flush_s)
    )
    ep.add_stream(
        "joints",
        {
            "leader_q": ((14,), "f4"),
            "follower_q": ((14,), "f4"),
            "action": ((14,), "f4"),
            "tick": ((), "i8"),
            "deadline_ns": ((), "i8"),
        },
        rate_hz=RATE,
    )
    for c in range(n_cams):
        ep.add_camera(f"cam{c}", fps=FPS)
    ep.start()
    sent = [0]

    def sink(f: Frame) -> None:
        sent[0] += 1
        ep.add_frame(f)

    def joints(t, q, i, due) -> None:
        ep.append("joints", t, leader_q=q, follower_q=q, action=q, tick=i, deadline_ns=due)

    cpu_start = time.process_time()
    r = run_cameras(n_cams, frames, seconds, sink, joints)
    t_stop = time.perf_counter()
    stats = ep.stop()
    stop_s = time.perf_counter() - t_stop
    r["cpu"] = time.process_time() - cpu_start  # including the drain in stop()
    t_read = time.perf_counter()
    e = Dataset(ds.path).episode(ep.index)
    e.read_frame("cam0", 0)
    first_frame_s = time.perf_counter() - t_read
    written = sum(c["written"] for c in stats["cameras"].values())
    size = dir_bytes(ds.path)
    r.update(
        cams=n_cams,
        sent=sent[0],
        written=written,
        dropped=sent[0] - written,
        bytes_per_hour=size / r["wall"] * 3600,
        stop_s=stop_s,
        first_frame_s=first_frame_s,
        flush_s=stats["flush_seconds"],
    )
    shutil.rmtree(ds.path)
    return r


def bench_aloha(n_cams: int, frames, seconds: float, root: Path) -> dict:
    """ALOHA's way: every frame kept in RAM (a copy, as a ROS callback would hand over), then at
    the end one HDF5 file with (T, 480, 640, 3) uint8 per camera in per-frame chunks, no compression."""
    import h5py

    images: dict[str, list[np.ndarray]] = {f"cam{c}": [] for c in range(n_cams)}
    qpos: list[np.ndarray] = []
    lock = threading.Lock()

    def sink(f: Frame) -> None:
        with lock:
            images[f.camera].append(f.data.copy())

    def joints(t, q, i, due) -> None:
        qpos.append(q.copy())

    cpu_start = time.process_time()
    r = run_cameras(n_cams, frames, seconds, sink, joints)
    t_stop = time.perf_counter()
    path = root / f"aloha_{n_cams}.hdf5"
    with h5py.File(path, "w", rdcc_nbytes=1024**2 * 2) as root_:
        root_.attrs["sim"] = False
        obs = root_.create_group("observations")
        img = obs.create_group("images")
        for cam, lst in images.items():
            d = img.create_dataset(cam, (len(lst), H, W, 3), dtype="uint8", chunks=(1, H, W, 3))
            for i, frame in enumerate(lst):
                d[i] = frame
        obs.create_dataset("qpos", data=np.array(qpos))
        root_.create_dataset("action", data=np.array(qpos))
    stop_s = time.perf_counter() - t_stop
    r["cpu"] = time.process_time() - cpu_start
    sent = sum(len(v) for v in images.values())
    r.update(
        cams=n_cams,
        sent=sent,
        written=sent,
        dropped=0,
        bytes_per_hour=path.stat().st_size / r["wall"] * 3600,
        stop_s=stop_s,
        first_frame_s=float("nan"),
        flush_s=0.0,
        ram_gb=sent * H * W * 3 / 1e9,
    )
    path.unlink()
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("RIG_BENCH_SECONDS", 10)))
    ap.add_argument("--max-cams", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2, help="JPEG encoder threads")
    ap.add_argument("--out", type=Path, default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args()
    frames = realistic_frames(50)
    print(
        f"# recorder benchmark: {os.cpu_count()} cores, {W}x{H} @ {FPS} fps, {args.seconds:.0f} s per run, "
        f"JPEG backend {jpeg_backend()}\n"
    )
    print("## Codecs (one frame)\n")
    print("\n".join(codec_table(frames[0])))
    root = args.out or Path(tempfile.mkdtemp(prefix="rig-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    print("\n## Sustained recording\n")
    print(
        "| writer | cams | frames sent | dropped | source late | CPU (cores) | GB/hour | append p99/max us "
        "| writer busy s (wall) | stop s | first frame after stop s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    best = 0
    for n in range(1, args.max_cams + 1):
        r = bench_rig(n, frames, args.seconds, root, args.threads)
        if r["dropped"] == 0 and r["source_late"] == 0:
            best = n
        print(
            f"| rig zarr | {n} | {r['sent']} | {r['dropped']} | {r['source_late']} | {r['cpu'] / r['wall']:.2f} "
            f"| {r['bytes_per_hour'] / 1e9:.1f} | {r['append_us_p99']:.0f}/{r['append_us_max']:.0f} "
            f"| {r['flush_s']:.2f} | {r['stop_s']:.3f} | {r['first_frame_s']:.3f} |",
            flush=True,
        )
    for n in (1, 4):
        r = bench_aloha(n, frames, args.seconds, root)
        print(
            f"| ALOHA h5py in RAM ({r['ram_gb']:.1f} GB held) | {n} | {r['sent']} | {r['dropped']} "
            f"| {r['source_late']} | {r['cpu'] / r['wall']:.2f} | {r['bytes_per_hour'] / 1e9:.1f} "
            f"| {r['append_us_p99']:.0f}/{r['append_us_max']:.0f} | - | {r['stop_s']:.3f} | after stop |",
            flush=True,
        )
    print(
        "| LeRobot | - | not measured: `pip install lerobot` would replace numpy/OpenCV/torch here | | | | | | | | |"
    )
    print(f"\nmost cameras with zero dropped frames (rig): {best}")
    print("\n## Cost of the time-based partial flush (4 cameras)\n")
    print("| flush interval s (= data at risk) | CPU (cores) | writer busy s (wall) | dropped |")
    print("|---:|---:|---:|---:|")
    for flush_s in (1.0, 0.5, 0.25):
        r = bench_rig(4, frames, args.seconds, root, args.threads, flush_s)
        print(f"| {flush_s} | {r['cpu'] / r['wall']:.2f} | {r['flush_s']:.2f} | {r['dropped']} |", flush=True)
    if args.out is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
