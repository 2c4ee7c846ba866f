"""LeRobot export benchmark, in one run: 4 cameras 640x480 at 30 fps and 50 Hz ticks, recorded at
real-time pace by the rig, then exported with `rig export --format lerobot`.

    python benchmarks/bench_export.py [--seconds 20] [--cams 4] [--no-lerobot] [--out DIR]

Prints markdown tables:
  1. export speed (recorded seconds per wall second, CPU) at the tick rate (one row per tick) and at 30 fps
  2. size per recorded hour: the recorder's JPEG episodes next to the LeRobot export
  3. decode speed for training: sequential and random access, rig JPEG vs the export's video,
     and LeRobot's own loader (torchcodec) on the export
  4. writers side by side on the same frames: the rig recorder; the rig recorder then the export;
     LeRobot's own writer (lerobot-dataset 0.4.4 in .venv-lerobot; skipped when that venv is absent)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_recorder as br  # noqa: E402  (the realistic frames and the real-time camera/tick threads)

from recorder import Dataset, WriterOptions  # noqa: E402
from recorder.export_lerobot import LeRobotExportOptions, export_lerobot  # noqa: E402
from recorder.video import iter_frames, probe, read_frames  # noqa: E402
from rig.recording import joint_fields  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VENV_PY = Path(os.environ.get("RIG_LEROBOT_VENV", ROOT / ".venv-lerobot")) / "bin" / "python"
CAM_FPS, RATE, N = 30, 50, 14


def record_rig(root: Path, frames, seconds: float, n_cams: int) -> tuple[Dataset, dict]:
    """One take at real-time pace through the recorder, as `rig record` takes it."""
    br.FPS, br.RATE = CAM_FPS, RATE
    ds = Dataset.create(root / "rig")
    w = ds.new_episode(task="bench", config={"name": "bench"}, extra={"rig": "bench"},
                       options=WriterOptions(encoder_threads=2))
    w.add_stream("joints", joint_fields(N), rate_hz=RATE)
    for c in range(n_cams):
        w.add_camera(f"cam{c}", fps=CAM_FPS)
    w.start()
    sent = [0]

    def sink(f) -> None:
        sent[0] += 1
        w.add_frame(f)

    def joints(t, q, i, due) -> None:
        v = np.sin(np.arange(N) + i / 25).astype(np.float32)
        w.append("joints", t, tick=i, t_deadline_ns=due, t_end_ns=t, leader_q=v, follower_q=v, follower_dq=v,
                 follower_current=v, action=v, missed=0, engage=1.0)

    cpu0 = time.process_time()
    r = br.run_cameras(n_cams, frames, seconds, sink, joints)
    t = time.perf_counter()
    stats = w.stop(success=True)
    r["stop_s"] = time.perf_counter() - t
    r["cpu"] = time.process_time() - cpu0
    r["sent"] = sent[0]
    r["kept"] = sum(c["written"] for c in stats["cameras"].values())
    r["bytes"] = br.dir_bytes(ds.path)
    r["recorded_s"] = ds.info(w.index).duration_s
    return ds, r


def export_speed(ds: Dataset, out: Path, fps: int | None) -> dict:
    cpu0, t0 = time.process_time(), time.perf_counter()
    rep = export_lerobot(ds, out, LeRobotExportOptions(fps=fps), log=lambda _: None)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"wall": wall, "cpu": cpu, "recorded_s": rep.recorded_s, "rows": rep.frames,
            "bytes": br.dir_bytes(out), "video_bytes": br.dir_bytes(out / "videos")}


def decode_rates(ds: Dataset, out: Path, samples: int) -> list[tuple[str, float]]:
    ep = ds.episode(0)
    rng = np.random.default_rng(0)
    n = ep.num_frames("cam0")
    t = time.perf_counter()
    seq = ep.read_frames("cam0", 0, min(n, 300))
    rows = [("rig JPEG, sequential (2 threads)", len(seq) / (time.perf_counter() - t))]
    idx = rng.integers(0, n, samples)
    t = time.perf_counter()
    for i in idx:
        ep.read_frame("cam0", int(i))
    rows.append(("rig JPEG, random frame", samples / (time.perf_counter() - t)))
    mp4 = next((out / "videos/observation.images.cam0").rglob("*.mp4"))
    total = probe(mp4).frames
    t = time.perf_counter()
    seq = read_frames(mp4, 0, min(total, 300))
    rows.append((f"export video ({probe(mp4).codec}), sequential", len(seq) / (time.perf_counter() - t)))
    idx = rng.integers(0, total, samples)
    t = time.perf_counter()
    for i in idx:
        next(iter_frames(mp4, int(i), int(i) + 1))
    rows.append(("export video, random frame (seek + decode, PyAV)", samples / (time.perf_counter() - t)))
    return rows


def lerobot(args: list[str], tmp: Path, timeout: float = 900) -> dict | None:
    env = {**os.environ, "HF_HOME": str(tmp / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    r = subprocess.run([str(VENV_PY), str(Path(__file__).with_name("lerobot_writer.py")), *args],
                       capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode:
        print(f"<!-- LeRobot run failed: {r.stderr.strip().splitlines()[-1:]} -->")
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def mb(b: float) -> str:
    return f"{b / 1e6:,.1f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("RIG_BENCH_SECONDS", 20)))
    ap.add_argument("--cams", type=int, default=4)
    ap.add_argument("--samples", type=int, default=100, help="random-access decode samples")
    ap.add_argument("--no-lerobot", action="store_true", help="skip LeRobot's own writer and loader")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    tmp = Path(args.out or tempfile.mkdtemp(prefix="bench_export_"))
    tmp.mkdir(parents=True, exist_ok=True)
    frames = br.realistic_frames(60)
    print(f"# rig export --format lerobot: {args.cams} cameras {br.W}x{br.H} at {CAM_FPS} fps, ticks at {RATE} Hz, "
          f"{args.seconds:g} s at real-time pace; {os.cpu_count()} CPUs\n")
    ds, rig = record_rig(tmp, frames, args.seconds, args.cams)
    rec_s = rig["recorded_s"]

    print("## Export speed\n\n| export | rows | wall | CPU | recorded s per wall s |\n|---|---|---|---|---|")
    exports = {}
    for label, fps in (("one row per tick (50 Hz)", None), ("30 fps", 30)):
        out = tmp / f"lerobot_{fps or 'ticks'}"
        e = exports[label] = export_speed(ds, out, fps)
        e["out"] = out
        print(f"| {label} | {e['rows']} | {e['wall']:.1f} s | {e['cpu']:.1f} s | {e['recorded_s'] / e['wall']:.2f} |")

    print("\n## Size per recorded hour\n\n| storage | per recorded hour | vs recorder JPEG |\n|---|---|---|")
    per_h = rig["bytes"] / rec_s * 3600
    print(f"| rig recorder (JPEG q90 in zarr) | {per_h / 1e9:.1f} GB | 1.00 |")
    for label, e in exports.items():
        h = e["bytes"] / e["recorded_s"] * 3600
        print(f"| LeRobot export, {label} | {h / 1e9:.2f} GB | {h / per_h:.3f} |")

    print("\n## Decode speed for training (one camera unless said)\n\n| reader | frames/s |\n|---|---|")
    main_out = exports["one row per tick (50 Hz)"]["out"]
    for label, rate in decode_rates(ds, main_out, args.samples):
        print(f"| {label} | {rate:.0f} |")
    have_lerobot = VENV_PY.exists() and not args.no_lerobot
    if have_lerobot and (r := lerobot(["read", str(main_out), str(args.samples)], tmp)):
        print(f"| LeRobot's loader (torchcodec), random sample of all {r['cams']} cameras | "
              f"{r['frames_per_s']:.0f} ({r['samples_per_s']:.1f} samples/s) |")

    print("\n## Writers side by side, same frames\n\n| writer | frames kept | CPU | stop → readable | size |\n"
          "|---|---|---|---|---|")
    print(f"| rig | {rig['kept']:,} / {rig['sent']:,} | {rig['cpu']:.1f} s | {rig['stop_s']:.2f} s | {mb(rig['bytes'])} |")
    for label, e in exports.items():
        print(f"| rig, then `rig export --format lerobot`, {label} | {rig['kept']:,} / {rig['sent']:,} | "
              f"{rig['cpu'] + e['cpu']:.1f} s | {rig['stop_s']:.2f} s (LeRobot files: +{e['wall']:.1f} s) | "
              f"{mb(rig['bytes'])} + {mb(e['bytes'])} |")
    if have_lerobot:
        np.save(tmp / "frames.npy", np.stack(frames))
        r = lerobot(["write", str(tmp / "frames.npy"), str(tmp / "lerobot_writer"), str(args.seconds),
                     str(args.cams), str(CAM_FPS)], tmp)
        if r:
            print(f"| LeRobot 0.4.4 default (PNG, then AV1 at save_episode) | {r['kept']:,} / {r['sent']:,}, "
                  f"{r['late_ticks']} of {r['ticks']} ticks late | {r['cpu_s']:.1f} s | "
                  f"{r['stop_to_readable_s']:.1f} s | {mb(r['bytes'])} |")
    else:
        print("| LeRobot's writer | not run: build .venv-lerobot with `bash tests/lerobot_venv.sh` | | | |")
    if args.out is None:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
