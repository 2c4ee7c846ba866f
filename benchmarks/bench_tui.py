"""The collector's app on the simulated rig: how fast the replay comes, and what the UI costs the loop.

    python benchmarks/bench_tui.py [--seconds 8] [--reps 2] [--json out.json]

1. Stop key to first replay frame: the app (Textual, headless, 160x48) records takes; for each
   the time from the stop key to the replay screen first drawing a camera frame read back from
   disk, and the part of it spent saving (TakeRecorder.end). Goal: <= 1 s.
2. UI cost while recording: the same takes recorded with the app (as `rig collect` runs: the rig
   in its engine process, the app in this one) and without it (the Collector alone in this
   process, as `rig record` runs), alternating A/B runs. Per take, the teleop loop's period error
   (tick start minus its deadline, read back from the episode) p50/p99, its overruns, and the CPU
   per second of the rig's process and of the app's. Goal: p99 unchanged within noise.

Headless Textual composes every frame like a terminal would but skips writing the bytes out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from recorder import Dataset  # noqa: E402
from rig.tui.controller import CollectOptions, Collector, State  # noqa: E402
from rig.tui.engine import CollectorProcess, yield_cpu_to_rig  # noqa: E402

NICED: list[bool] = []

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of another process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def take_figures(dataset: Path, index: int) -> dict:
    j = Dataset(dataset).episode(index).read_stream("joints")
    err_ms = (j["t_ns"].astype(np.int64) - j["t_deadline_ns"].astype(np.int64)) / 1e6
    late = (j["t_end_ns"].astype(np.int64) - j["t_deadline_ns"].astype(np.int64)) > 20_000_000
    return {"ticks": int(len(err_ms)), "p50_ms": float(np.percentile(err_ms, 50)),
            "p99_ms": float(np.percentile(err_ms, 99)), "overruns": int(late.sum()),
            "skipped": int(np.clip(np.diff(j["tick"]) - 1, 0, None).sum())}


def wait(pred, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise TimeoutError("timed out")


def run_without_ui(dataset: Path, seconds: float, takes: int) -> list[dict]:
    c = Collector(CollectOptions(dataset=dataset, seconds=0, reset_seconds=0.2, train=False))
    c.open()
    out = []
    try:
        def ready():
            c.poll()
            if c.state == State.FAULT:
                raise RuntimeError(c.message)
            return c.state == State.READY
        for _ in range(takes):
            wait(ready, 120)
            c.toggle()
            wait(lambda: c.state == State.RECORDING and c.recording, 10)
            cpu0, t0 = time.process_time(), time.monotonic()
            time.sleep(seconds)
            cpu = (time.process_time() - cpu0) / (time.monotonic() - t0)
            c.toggle()
            wait(lambda: c.state == State.REVIEW, 10)
            fig = take_figures(dataset, c.last.index)
            out.append({"ui": False, "cpu_per_s": cpu, "app_cpu_per_s": 0.0, "stop_to_saved_ms": (c.t_saved_ns - c.t_stop_ns) / 1e6, **fig})
            c.keep()
    finally:
        c.close()
    return out


async def _run_with_ui(dataset: Path, seconds: float, takes: int) -> list[dict]:
    from rig.tui.app import CollectorApp

    c = CollectorProcess(CollectOptions(dataset=dataset, seconds=0, reset_seconds=0.2, train=False),
                         log_path=dataset.with_suffix(".log"))
    if not NICED:  # as `rig collect` does; once per process (niceness only goes up)
        yield_cpu_to_rig()
        NICED.append(True)
    app = CollectorApp(c, train=False)
    out = []

    async def until(pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return
            if c.state == State.FAULT:
                raise RuntimeError(c.message)
            await asyncio.sleep(0.02)
        raise TimeoutError(f"timed out in state {c.state}: {c.message}")

    try:
        async with app.run_test(size=(160, 48)) as pilot:
            for _ in range(takes):
                await until(lambda: c.state == State.READY and app.screen is app.live, 120)
                await pilot.press("space")
                await until(lambda: c.state == State.RECORDING and c.recording, 10)
                cpu0, rig0, t0 = time.process_time(), proc_cpu_s(c.process.pid), time.monotonic()
                await asyncio.sleep(seconds)
                dt = time.monotonic() - t0
                cpu, app_cpu = (proc_cpu_s(c.process.pid) - rig0) / dt, (time.process_time() - cpu0) / dt
                app.replay_first_frame_ns = 0  # not the last take's: the engine's view can beat the app's message
                await pilot.press("space")
                await until(lambda: app.replay_first_frame_ns > 0 and c.t_saved_ns > c.t_stop_ns, 10)
                fig = take_figures(dataset, c.last.index)
                out.append({"ui": True, "cpu_per_s": cpu, "app_cpu_per_s": app_cpu,
                            "stop_to_saved_ms": (c.t_saved_ns - c.t_stop_ns) / 1e6,
                            "stop_to_frame_ms": (app.replay_first_frame_ns - c.t_stop_ns) / 1e6, **fig})
                await asyncio.sleep(0.5)
                await pilot.press("enter")
            await pilot.press("q")
            await until(lambda: c.state == State.CLOSED, 30)
    finally:
        c.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each take")
    ap.add_argument("--takes", type=int, default=3, help="takes per run")
    ap.add_argument("--reps", type=int, default=2, help="A/B repetitions (each: a run without, then with the UI)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows: list[dict] = []
    faults: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for ui in (False, True):
                for attempt in range(3):  # a starved simulated bus can fault a run: count it, try again
                    ds = Path(tmp) / f"rep{rep}-{'ui' if ui else 'bare'}-{attempt}.zarr"
                    try:
                        got = (asyncio.run(_run_with_ui(ds, args.seconds, args.takes)) if ui
                               else run_without_ui(ds, args.seconds, args.takes))
                    except (RuntimeError, TimeoutError) as exc:
                        faults.append(f"{'ui' if ui else 'bare'} run {rep}: {exc}")
                        print(f"run faulted, again: {exc}", flush=True)
                        continue
                    rows += got
                    for r in got:
                        print(json.dumps(r), flush=True)
                    break

    def med(key, ui):
        vals = [r[key] for r in rows if r["ui"] is ui and key in r]
        return statistics.median(vals) if vals else float("nan")

    frames = [r["stop_to_frame_ms"] for r in rows if r["ui"]]
    print(f"\n{len(frames)} takes of {args.seconds:g} s with the app")
    print(f"stop key -> first replay frame: median {statistics.median(frames):.0f} ms, max {max(frames):.0f} ms "
          f"(of which saving: median {med('stop_to_saved_ms', True):.0f} ms)")
    print("loop period error during takes (median over takes):")
    print(f"  {'':10s} {'p50 ms':>8s} {'p99 ms':>8s} {'overruns':>9s} {'rig CPU':>8s} {'app CPU':>8s}")
    for ui in (False, True):
        print(f"  {'with UI' if ui else 'no UI':10s} {med('p50_ms', ui):8.3f} {med('p99_ms', ui):8.3f} "
              f"{med('overruns', ui):9.1f} {med('cpu_per_s', ui):8.2f} {med('app_cpu_per_s', ui):8.2f}")
    if faults:
        print(f"{len(faults)} run(s) faulted and were repeated (a loaded machine starves the simulated buses)")
    if args.json:
        args.json.write_text(json.dumps({"takes": rows, "faulted_runs": faults}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
