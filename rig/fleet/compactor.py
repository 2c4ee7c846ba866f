"""Compaction in the background: `rig fleet compact` in a separate, niced process that the take
lifecycle stops while a take is recorded (the transcoding itself is recorder/compact.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from recorder.compact import CompactOptions


class BackgroundCompactor:
    """Compaction in a separate, niced process, stopped (SIGSTOP) while a take is recorded.

    The take lifecycle calls ``pause()`` when a take begins and ``resume()`` when it ends, so no
    encoding runs while recording; ``start()`` after a take is kept picks up every kept episode
    not yet compacted. The process may be killed at any time: the JPEG form stays whole.
    """

    def __init__(self, dataset: Path, options: CompactOptions | None = None, nice: int = 10,
                 watch_s: float | None = None) -> None:
        self.dataset = Path(dataset)
        self.options = options or CompactOptions()
        self.nice = nice
        self.watch_s = watch_s
        self.proc: subprocess.Popen | None = None
        self.paused = False

    def start(self) -> None:
        if self.running:
            return
        o = self.options
        cmd = [sys.executable, "-m", "rig", "fleet", "compact", str(self.dataset), "--codec", o.codec,
               "--gop-s", str(o.gop_s), "--threads", str(o.threads), "--min-psnr", str(o.min_psnr_db)]
        if o.crf is not None:
            cmd += ["--crf", str(o.crf)]
        if self.watch_s:
            cmd += ["--watch", str(self.watch_s)]
        nice = self.nice
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     preexec_fn=lambda: os.nice(nice))
        if self.paused:
            self.pause()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pause(self) -> None:
        self.paused = True
        if self.running:
            os.kill(self.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]

    def resume(self) -> None:
        self.paused = False
        if self.running:
            os.kill(self.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.running:
            self.proc.terminate()  # type: ignore[union-attr]
            os.kill(self.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
            self.proc.wait(10)  # type: ignore[union-attr]
