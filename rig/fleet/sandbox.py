"""Validation in a child process with a memory cap and a time limit: one upload cannot stop the ingest.

The metadata checks of ``rig.fleet.validate`` bound everything an upload declares. What they
cannot see (a compressed chunk that inflates far past its declared shape, a decoder that crashes)
is bounded here: each ingest worker keeps one child process, ``python -m rig.fleet.sandbox``, whose
address space is capped (``RLIMIT_AS``, ``VALIDATION_MEMORY``) and whose every episode has
``VALIDATION_TIMEOUT_S``. A child that runs out of memory, dies or overruns is replaced. An
episode whose child died or overran gets one retry in a fresh child (a crash or a slow store may
pass); one that hit the memory cap does not (the same bytes would hit it again). Then it is
rejected "validation exceeded its limits" and the worker goes on with the next one. Each attempt works in its own temp folder, removed by the
parent whatever happened to the child.

Protocol: one JSON request a line on the child's stdin (``source``, ``key``, ``workdir``), one JSON
catalog row a line on its reply pipe.
"""

from __future__ import annotations

import json
import os
import resource
import select
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from rig.fleet.validate import empty_row, reject

VALIDATION_MEMORY = 1 << 30  # address space of one validation process (RLIMIT_AS)
VALIDATION_TIMEOUT_S = 600.0  # one attempt at one episode (a 4 h take is ~6 GB to download and check)
ATTEMPTS = 2  # one retry in a fresh process (not after the memory cap)
EXCEEDED = "validation exceeded its limits"
MEMORY = "memory cap"
# fewer threads and malloc arenas: less address space reserved that the cap would count
CHILD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2",
             "ZARR_THREADING__MAX_WORKERS": "1"}


def peak_rss_mib(pid: int | str = "self") -> float:
    """The peak resident memory of a process (this one by default), in MiB: its VmHWM. Not
    ru_maxrss: Linux carries that across fork and exec, so a child of a large process (a test
    suite with torch loaded) would report its parent's peak as its own."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 if pid == "self" else 0.0


class Sandbox:
    """One validation child at a time, restarted when it fails; ``validate`` never raises."""

    def __init__(self, memory: int = VALIDATION_MEMORY, timeout_s: float = VALIDATION_TIMEOUT_S) -> None:
        self.memory = memory
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_mib = 0.0  # the largest peak RSS a child reported or left behind
        self.failures: list[str] = []  # what happened to each failed attempt (for tests and logs)

    def _start(self) -> subprocess.Popen[bytes]:
        if self.proc is None or self.proc.poll() is not None:
            env = {**os.environ, **CHILD_ENV}
            self.proc = subprocess.Popen([sys.executable, "-m", "rig.fleet.sandbox", str(self.memory)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        return self.proc

    def _stop(self) -> str:
        """End the child (killed if still running); what became of it, in words."""
        p, self.proc = self.proc, None
        if p is None:
            return "no process"
        if p.poll() is None:
            self.peak_mib = max(self.peak_mib, peak_rss_mib(p.pid))  # its own peak, read before it goes
            p.kill()
        rc = p.wait()
        for f in (p.stdin, p.stdout):
            if f is not None:
                f.close()
        return f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"

    def close(self) -> None:
        self._stop()

    def _attempt(self, source: str, key: str, workdir: str) -> dict[str, Any] | str:
        p = self._start()
        assert p.stdin is not None and p.stdout is not None
        try:
            p.stdin.write(json.dumps({"source": source, "key": key, "workdir": workdir}).encode() + b"\n")
            p.stdin.flush()
        except (BrokenPipeError, OSError):
            return f"the validation process was gone ({self._stop()})"
        ready, _, _ = select.select([p.stdout], [], [], self.timeout_s)
        if not ready:
            return f"no answer in {self.timeout_s:.0f} s ({self._stop()})"
        line = p.stdout.readline()
        if not line:
            return f"the validation process died ({self._stop()})"
        reply = json.loads(line)
        if reply.get("error"):  # out of memory: the child says so and exits
            return f"{MEMORY}: {reply['error']} ({self._stop()})"
        self.peak_mib = max(self.peak_mib, float(reply.pop("peak_rss_mib", 0.0)))
        return reply

    def validate(self, source: str, key: str, tmp_root: str | None = None) -> dict[str, Any]:
        why: list[str] = []
        for _ in range(ATTEMPTS):
            if why and why[-1].startswith(MEMORY):
                break
            work = tempfile.mkdtemp(prefix="rig-validate-", dir=tmp_root)
            try:
                got = self._attempt(source, key, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)  # whatever the child left, on every path
            if isinstance(got, dict):
                return got
            why.append(got)
            self.failures.append(f"{key}: {got}")
        return reject(empty_row(key), [f"{EXCEEDED}: {len(why)} attempt(s), each capped at {self.memory >> 20} MiB "
                                       f"and {self.timeout_s:.0f} s ({'; '.join(why)})"])


def _serve(memory: int) -> None:
    from rig.fleet.store import open_store
    from rig.fleet.validate import validate_episode

    out = os.fdopen(os.dup(1), "wb")  # replies go here; stray prints from libraries go to stderr
    os.dup2(2, 1)
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))  # after the imports: the cap is for the data
    stores: dict[str, Any] = {}
    for line in sys.stdin.buffer:
        req = json.loads(line)
        try:
            store = stores.get(req["source"])
            if store is None:
                store = stores[req["source"]] = open_store(req["source"], create=False)
            reply = validate_episode(store, req["key"], req["workdir"])
        except MemoryError:
            reply = {"error": f"over the {memory >> 20} MiB memory cap"}
        reply["peak_rss_mib"] = peak_rss_mib()
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()
        if "error" in reply:
            return  # a process that hit the cap may be in any state: a fresh one takes the next episode


if __name__ == "__main__":
    _serve(int(sys.argv[1]) if len(sys.argv) > 1 else VALIDATION_MEMORY)
