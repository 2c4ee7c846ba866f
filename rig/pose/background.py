"""The pose of kept handheld takes, computed after each take in the background.

The take lifecycle (rig/takes.py) hands each complete handheld take to ``PoseJobs``; one worker
thread runs them one at a time, each as ``rig pose DATASET EPISODE`` in its own process at a low
priority (nice 10, one thread): it never shares the recorder's interpreter or its cores' first
claim. Nothing is computed while a take records: ``pause()`` (a take begins) holds the queue and
stops a job in flight (SIGSTOP), ``resume()`` (it ended) lets it go on. The result is the
``pose`` stream, recomputable any time with ``rig pose``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

NICE = 10


class PoseJobs:
    """A queue of (dataset, episode) pose computations, run in niced processes one at a time."""

    def __init__(self):
        self._queue: collections.deque[tuple[Path, int]] = collections.deque()
        self._cond = threading.Condition()
        self._paused = False
        self._closing = False
        self._proc: subprocess.Popen[str] | None = None
        self.done: dict[int, str] = {}  # episode -> the last line `rig pose` printed (or why it failed)
        self._thread = threading.Thread(target=self._run, name="pose-jobs", daemon=True)
        self._thread.start()

    def submit(self, dataset: str | os.PathLike[str], index: int) -> None:
        with self._cond:
            self._queue.append((Path(dataset), int(index)))
            self._cond.notify_all()

    def cancel(self, index: int) -> None:
        """The take was discarded: drop it if it has not started (a started one just finishes)."""
        with self._cond:
            self._queue = collections.deque(j for j in self._queue if j[1] != index)

    def pause(self) -> None:
        """A take records: hold the queue, stop the job in flight."""
        with self._cond:
            self._paused = True
            self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._signal(signal.SIGCONT)
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + (self._proc is not None)

    def close(self, wait: bool = True, timeout: float | None = None) -> None:
        """Finish what was handed over (``wait``), or stop the job in flight and drop the rest."""
        with self._cond:
            self._closing = True
            self._paused = False
            self._signal(signal.SIGCONT)
            if not wait:
                self._queue.clear()
                self._signal(signal.SIGTERM)
            self._cond.notify_all()
        self._thread.join(timeout)

    def _signal(self, sig: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)

    def _run(self) -> None:
        while True:
            with self._cond:
                while (self._paused or not self._queue) and not (self._closing and not self._queue):
                    self._cond.wait()
                if not self._queue:
                    return  # closing, nothing left
                dataset, index = self._queue.popleft()
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "rig", "pose", str(dataset), str(index)], stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, text=True, preexec_fn=lambda: os.nice(NICE),
                    env={**os.environ, "OMP_NUM_THREADS": "1"})
            out, _ = self._proc.communicate()
            lines = [ln for ln in out.splitlines() if ln.strip()]
            with self._cond:
                code, self._proc = self._proc.returncode, None
                if code == 0:  # the coverage line, e.g. "pose: 91% of the take trusted (...)"
                    self.done[index] = next((ln.strip() for ln in lines if ln.strip().startswith("pose:")),
                                            lines[-1].strip() if lines else "")
                else:
                    self.done[index] = (f"failed ({code}): {lines[-1].strip() if lines else 'no output'}; "
                                        f"recompute with `rig pose {dataset} {index}`")
