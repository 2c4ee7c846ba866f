"""The control loop's tick with the quick policy driving, beside teleop's tick, in one run.

On the simulated ALOHA (MuJoCo world, 4 arms on emulated buses with wire timing, the three sim
cameras rendering), one control loop runs throughout; its source is switched in alternating
blocks, as the app switches it:

- teleop: the leaders (the world's scripted operator moves them);
- quick policy, worker: the quick policy through ``PolicySource`` as `p` runs it, its chunks
  predicted on the worker thread (the JPEG round trip of the top camera, the locator, three MLPs);
- quick policy, inline: the same with ``worker=False``, prediction inside the tick (how it ran
  before), for scale;
- with ``--ensemble M``, both again with ACT's temporal ensembling: a prediction every tick, so the
  worker is never idle and competes with the loop for the cores and the interpreter.

Each block's ticks are read from the loop's own figures (tick CPU time is the loop thread's CPU
time, ``time.thread_time_ns``), leaving out the first second after a switch. Reported: tick CPU
p50/p99, period error p99, overruns, and the ratio of the policy's tick CPU p50 to teleop's (the
target: <= 1.5x).

The policy: ``--policy PATH`` (a policy file, e.g. from `rig train --save`), or by default two
takes recorded now (`rig record`, 4 s each) and a quick policy of the default size trained on
them for a few steps: its skill does not matter here, only what predicting costs.

    python benchmarks/bench_policy_tick.py [--seconds 60] [--rounds 3] [--policy PATH] [--ensemble 0.01] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETTLE_S = 1.0  # left out after each switch (the engage blend, the first chunk)


def quick_policy_file(out: Path) -> Path:
    """Two takes on the simulated rig and a default-size quick policy trained a few steps on them."""
    from rig.sim.reference import capture_reference
    from rig.train.policy_file import save_policy
    from rig.train.quick import QuickConfig, load_quick_episodes, train_quick

    ds = out / "takes.zarr"
    r = subprocess.run([sys.executable, "-m", "rig", "record", "--episodes", "2", "--seconds", "4",
                        "--reset-seconds", "1", "--dataset", str(ds)], capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"recording the takes failed:\n{r.stdout}{r.stderr}")
    eps = load_quick_episodes(ds, None)
    ref = capture_reference("transfer_cube", "top", start_q=np.median([e.q[0] for e in eps], 0))
    policy = train_quick(eps, "transfer_cube", QuickConfig(steps=10), reference=ref)
    return save_policy(policy, out / "quick.policy.pt", dataset=ds)


def block(loop, seconds: float) -> dict:
    """Run ``seconds`` (the first SETTLE_S left out) and read this block's ticks from the loop's ring."""
    time.sleep(SETTLE_S)
    s = loop.stats
    t0, o0 = s.ticks, s.overruns
    time.sleep(seconds)
    t1 = s.ticks
    idx = np.arange(t0, t1) % len(s._cpu)
    return {"cpu_ms": s._cpu[idx] / 1e6, "err_ms": s._err[idx] / 1e6, "overruns": s.overruns - o0,
            "ticks": t1 - t0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds of ticks per source, over all rounds")
    ap.add_argument("--rounds", type=int, default=3, help="alternating blocks of each source")
    ap.add_argument("--policy", type=Path, default=None, help="a policy file (default: train a quick one now)")
    ap.add_argument("--ensemble", type=float, default=None, metavar="M",
                    help="also run the policy with ACT's ensembling (a prediction every tick), worker and inline")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from rig.config import load_config
    from rig.session import RigSession
    from rig.sources import PolicySource, Pose
    from rig.train.policy_file import load_policy
    from rig.trials import preload_torch

    preload_torch()  # one torch thread, imported before the loop runs (as the app does)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.policy or quick_policy_file(Path(tmp))
        policy = load_policy(path)  # the one loader, as `p` loads it
    kind = policy.file_meta["kind"]
    cfg = load_config("sim-aloha")
    per = args.seconds / args.rounds
    variants = [("quick policy, worker", True, None), ("quick policy, inline", False, None)]
    if args.ensemble:  # a prediction every tick: the worker is never idle
        variants += [("quick, ensembling, worker", True, args.ensemble),
                     ("quick, ensembling, inline", False, args.ensemble)]
    runs: dict[str, list[dict]] = {"teleop": [], **{v[0]: [] for v in variants}}
    chunks: dict[str, int] = {k: 0 for k in runs}
    with RigSession(cfg, cameras=True) as s:
        loop = s.teleop
        cams = [s.cameras[c] for c in policy.cfg.cameras]
        s.start(None)
        try:
            time.sleep(3.0)  # engaged on the leaders
            for _ in range(args.rounds):
                s.world.set_operator(True, True)
                loop.reengage()
                runs["teleop"].append(block(loop, per))
                for name, worker, ensemble in variants:
                    s.world.set_operator(False)  # hands off the leaders: no takeover
                    if policy.start_q is not None:
                        loop.use(Pose(np.asarray(policy.start_q, float)))
                        time.sleep(cfg.safety.engage_seconds + 0.5)
                    if hasattr(policy, "reset"):
                        policy.reset(0)
                    source = PolicySource(policy, cams, ensemble=ensemble, worker=worker)
                    loop.use(source, engage_s=0.0)
                    runs[name].append(block(loop, per))
                    chunks[name] += source.chunks_predicted
                    if source.failure is not None:
                        raise SystemExit(f"{name}: {source.failure}")
                    if loop.fault is not None or loop.error is not None:
                        raise SystemExit(f"{name}: the loop stopped: {loop.fault or loop.error}")
        finally:
            loop.stop()
            loop.join(timeout=5)
    results = {}
    for name, blocks in runs.items():
        cpu = np.concatenate([b["cpu_ms"] for b in blocks])
        err = np.concatenate([b["err_ms"] for b in blocks])
        results[name] = {"ticks": int(sum(b["ticks"] for b in blocks)), "tick_cpu_ms_p50": float(np.median(cpu)),
                         "tick_cpu_ms_p99": float(np.percentile(cpu, 99)),
                         "period_error_ms_p99": float(np.percentile(err, 99)),
                         "overruns": int(sum(b["overruns"] for b in blocks)), "chunks": chunks[name]}
    base = results["teleop"]["tick_cpu_ms_p50"]
    for r in results.values():
        r["ratio_p50_to_teleop"] = r["tick_cpu_ms_p50"] / base
    print(f"policy: {kind}, {policy.cfg.cameras}, K={policy.cfg.k}, a chunk every {PolicySource(policy).execute} "
          f"ticks; {args.rounds} rounds of {per:.0f} s per source, 50 Hz, sim cameras on")
    print("| source | ticks | tick CPU p50 ms | tick CPU p99 ms | x teleop (p50) | period err p99 ms | overruns | "
          "chunks |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['ticks']} | {r['tick_cpu_ms_p50']:.3f} | {r['tick_cpu_ms_p99']:.3f} | "
              f"{r['ratio_p50_to_teleop']:.2f} | {r['period_error_ms_p99']:.3f} | {r['overruns']} | {r['chunks']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
