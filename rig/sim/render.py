"""The sim's camera process: renders the world's cameras into shared-memory frame rings.

It runs apart from the physics process because rendering holds the GIL for long stretches,
which would stall the emulated buses' replies. The physics publishes its state (qpos) into a
small shared-memory block guarded by a seqlock; this process renders each camera at its own rate
from the latest state and writes frames with ``drivers.cameras.shm.FrameRingWriter``.

Started by the world with ``python -m rig.sim.render '<json>'``; prints ``ready`` (or
``error: ...``) on stdout once its rings exist; exits when the world process goes away.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from multiprocessing import resource_tracker, shared_memory

import numpy as np

# state block: [seq, t_capture_ns, qpos...]; stats block per camera: [frames, render_s, delay_s, 0]
STATE_HEADER = 2
STATS_FIELDS = 4


def attach(name: str) -> shared_memory.SharedMemory:
    """Attach to a block the world owns, without letting this process's exit unlink it."""
    shm = shared_memory.SharedMemory(name=name)
    with contextlib.suppress(Exception):
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    return shm


class StateBlock:
    """The world's physics state for the renderer (the world writes, the renderer reads)."""

    def __init__(self, nq: int, name: str | None = None, create: bool = False):
        size = (STATE_HEADER + nq) * 8
        self.shm = shared_memory.SharedMemory(name=name, create=True, size=size) if create else attach(name or "")
        self.words = np.ndarray((STATE_HEADER + nq,), dtype=np.float64, buffer=self.shm.buf)
        self.name = self.shm.name

    def write(self, qpos: np.ndarray, t_ns: int) -> None:
        w = self.words
        w[0] += 1  # odd: being written
        w[1] = t_ns
        w[STATE_HEADER:] = qpos
        w[0] += 1

    def read(self, out: np.ndarray) -> int | None:
        seq = self.words[0]
        if int(seq) & 1:
            return None
        t_ns = int(self.words[1])
        out[:] = self.words[STATE_HEADER:]
        return t_ns if self.words[0] == seq else None

    def close(self, unlink: bool = False) -> None:
        del self.words
        self.shm.close()
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                self.shm.unlink()


def _parent_alive(pid: int) -> bool:
    return os.getppid() == pid


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    # Servo replies and physics come first: cameras may drop frames, buses must not miss replies.
    # The world may run real-time (inherited by this process): rendering never does.
    from rig.realtime import demote

    demote()
    with contextlib.suppress(OSError):
        os.nice(int(cfg.get("nice", 10)))
    # SIGTERM (the world stopping us) only raises a flag: the loop then ends and the rings are
    # unlinked, and no exception lands inside a GL call.
    stop: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the world stops us
    rings: dict = {}
    renderers: dict = {}
    try:
        return _run(cfg, stop, rings, renderers)
    finally:
        for ring in rings.values():
            with contextlib.suppress(Exception):
                ring.close()
        for r in renderers.values():
            with contextlib.suppress(Exception):
                r.close()


def _run(cfg: dict, stop: list[bool], rings: dict, renderers: dict) -> int:
    try:
        import mujoco

        from drivers.cameras.shm import FrameRingWriter

        from .scene import load_model

        model = load_model(cfg["task"])
        cams = cfg["cameras"]
        model.vis.global_.offwidth = max([model.vis.global_.offwidth] + [c["width"] for c in cams])
        model.vis.global_.offheight = max([model.vis.global_.offheight] + [c["height"] for c in cams])
        data = mujoco.MjData(model)
        state = StateBlock(model.nq, cfg["state"])
        stats_shm = attach(cfg["stats"])
        stats = np.ndarray((len(cams), STATS_FIELDS), dtype=np.float64, buffer=stats_shm.buf)
        for c in cams:
            key = (c["height"], c["width"])
            if key not in renderers:
                r = mujoco.Renderer(model, c["height"], c["width"])
                r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = bool(cfg["shadows"])
                r.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = bool(cfg["shadows"])
                renderers[key] = r
            rings[c["name"]] = FrameRingWriter(c["ring"], c["width"], c["height"])
    except Exception as e:
        print(f"error: {type(e).__name__}: {e}", flush=True)
        return 1
    print("ready", flush=True)
    parent = int(cfg["parent_pid"])
    qpos = np.zeros(model.nq)
    now = time.monotonic_ns()
    due = [now] * len(cams)
    pending: list[tuple[int, int, int, np.ndarray]] = []  # (visible_at_ns, cam, index, rgb)
    last_check = 0
    while not stop:
        now = time.monotonic_ns()
        if now - last_check > 200_000_000:
            last_check = now
            if not _parent_alive(parent):
                return 0
        if pending:
            pending.sort(key=lambda p: p[0])
            while pending and pending[0][0] <= now:
                _, k, index, rgb = pending.pop(0)
                rings[cams[k]["name"]].write(rgb, now, index)
        ready = [k for k in range(len(cams)) if due[k] <= now]
        if not ready:
            nxt = min(due + [p[0] for p in pending])
            time.sleep(max(0.0, min(0.005, (nxt - now) / 1e9)))
            continue
        t_cap = state.read(qpos)
        if t_cap is None:
            continue
        data.qpos[:] = qpos
        mujoco.mj_forward(model, data)
        for k in ready:
            c = cams[k]
            period = int(1e9 / c["fps"])
            due[k] += period
            if due[k] < now:  # fell behind: skip frames rather than pile them up
                due[k] = now + period
            r = renderers[(c["height"], c["width"])]
            t = time.perf_counter()
            r.update_scene(data, camera=c["name"])
            rgb = r.render()
            spent = time.perf_counter() - t
            index = int(stats[k, 0])
            stats[k, 1] = spent if index == 0 else stats[k, 1] + 0.05 * (spent - stats[k, 1])
            stats[k, 0] = index + 1
            delay = float(stats[k, 2])
            if delay <= 0:
                rings[c["name"]].write(rgb, t_cap, index)
            else:
                pending.append((t_cap + int(delay * 1e9), k, index, rgb.copy()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
