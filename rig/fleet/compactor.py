"""Compaction in the background: `rig fleet compact` in a separate, niced process that the take
lifecycle stops while a take is recorded (the transcoding itself is recorder/compact.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from recorder.compact import CompactOptions

LOG_NAME = ".compact.log"  # in the dataset: what the take lifecycle's compactor did
WATCH_S = 2.0  # the take lifecycle's compactor looks for newly kept takes this often (between takes)


def compactor_for(config, dataset: Path) -> BackgroundCompactor | None:
    """The take lifecycle's compactor, as the rig config's ``[recording] compact`` asks (None: off).

    It watches the dataset, so every take kept while it runs is picked up; its output goes to
    ``DATASET/.compact.log``."""
    codec = config.recording.compact
    if codec == "off":
        return None
    dataset = Path(dataset)
    return BackgroundCompactor(dataset, CompactOptions(codec=codec), watch_s=WATCH_S, log=dataset / LOG_NAME)


def _cpu_s(pid: int) -> float:
    """CPU time (user + system, all threads) the process has used so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stopped(pid: int) -> bool:
    """Every thread of the process is stopped (or it is gone)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        return all(Path(f"/proc/{pid}/task/{t}/stat").read_text().rsplit(")", 1)[1].split()[0] in "TtZX"
                   for t in tasks)
    except OSError:
        return True


class BackgroundCompactor:
    """Compaction in a separate, niced process, stopped (SIGSTOP) while a take is recorded.

    The take lifecycle calls ``pause()`` when a take begins and ``resume()`` when it ends, so no
    encoding runs while recording; ``start()`` after a take is kept picks up every kept episode
    not yet compacted. The process may be killed at any time: the JPEG form stays whole.
    """

    def __init__(self, dataset: Path, options: CompactOptions | None = None, nice: int = 10,
                 watch_s: float | None = None, log: Path | None = None) -> None:
        self.dataset = Path(dataset)
        self.options = options or CompactOptions()
        self.nice = nice
        self.watch_s = watch_s
        self.log = log  # None: output discarded (errors kept on a pipe)
        self.proc: subprocess.Popen | None = None
        self.paused = False
        # Measured by the kernel, not assumed: takes it was stopped for, and the CPU time it used
        # between pause() and resume() (0 when SIGSTOP held).
        self.pauses = 0
        self.cpu_while_paused_s = 0.0
        self._cpu_at_pause: float | None = None

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
        # Niced from here, not with preexec_fn: that can deadlock the child of a threaded process
        # (the rig's loop, pump and cameras run while takes are recorded).
        if self.log is not None:
            with open(self.log, "ab") as out:
                self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        else:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, self.proc.pid, os.getpriority(os.PRIO_PROCESS, 0) + self.nice)
        if self.paused:
            self.pause()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pause(self, settle_s: float = 1.0) -> None:
        """Stop the process; returns once every thread of it has stopped (``settle_s`` at most:
        one in the middle of a disk write stops when the write returns)."""
        self.paused = True
        if self.running and self._cpu_at_pause is None:
            pid = self.proc.pid  # type: ignore[union-attr]
            os.kill(pid, signal.SIGSTOP)
            end = time.monotonic() + settle_s
            while not _stopped(pid) and time.monotonic() < end:
                time.sleep(0.002)
            self._cpu_at_pause = _cpu_s(pid)
            self.pauses += 1

    def resume(self) -> None:
        self.paused = False
        if self.running:
            pid = self.proc.pid  # type: ignore[union-attr]
            if self._cpu_at_pause is not None:
                self.cpu_while_paused_s += max(0.0, _cpu_s(pid) - self._cpu_at_pause)
            os.kill(pid, signal.SIGCONT)
        self._cpu_at_pause = None

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.running:
            self.proc.terminate()  # type: ignore[union-attr]
            os.kill(self.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
            self.proc.wait(10)  # type: ignore[union-attr]
        self._cpu_at_pause = None

    def finish(self, timeout: float | None = None) -> int:
        """Stop a watcher and compact what is left in one last pass, waiting for it (its exit
        status). Interrupted, the pass is stopped: the JPEG form stays whole, a rerun finishes."""
        self.stop()
        last = BackgroundCompactor(self.dataset, self.options, self.nice, log=self.log)
        last.start()
        try:
            return last.wait(timeout)
        except BaseException:
            last.stop()
            raise
