"""Reliability figures for the data path: each fault of issue 15 (its data half) through the real
`rig` CLI in its own process, and what the checksums cost.

    python benchmarks/bench_integrity.py [--repeats 3] [--seconds 4]

Prints two markdown tables:
  1. faults tried: the command, its exit status, its first line, tracebacks and crashes, and the
     episodes lost (an episode the fault did not target whose bytes changed or no longer verify)
  2. the cost of CRC-32C: writer-thread time and bytes with and without the codec (same
     recording), `rig verify` throughput, and a checked read against a plain zarr read
Full and read-only disks need `mount` (root): without it those rows say "skipped".
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import zarr

from drivers.cameras.frame import Frame
from recorder import Dataset, WriterOptions
from recorder.dataset import verify_episode_dir

MS = 1_000_000
FIELDS = {n: ((14,), "f4") for n in ("leader_q", "follower_q", "follower_dq", "follower_current", "action")}


def record(ds: Dataset, n_ticks: int = 100, cams: tuple[str, ...] = ("cam_high", "cam_low"), hw=(48, 64)) -> int:
    ep = ds.new_episode(task="bench")
    ep.add_stream("joints", {**FIELDS, "tick": ((), "i8")}, rate_hz=50)
    for c in cams:
        ep.add_camera(c, fps=25)
    ep.start()
    base = time.monotonic_ns()
    rng = np.random.default_rng(ep.index)
    for i in range(n_ticks):
        q = (rng.standard_normal(14) * 0.1).astype(np.float32)
        ep.append("joints", base + i * 20 * MS, leader_q=q, follower_q=q, follower_dq=q, follower_current=q,
                  action=q, tick=i)
        if i % 2 == 0:
            for c in cams:
                img = rng.integers(0, 255, (*hw, 3), dtype=np.uint8)
                ep.add_frame(Frame(c, i // 2, base + i * 20 * MS + 5 * MS, img))
    ep.stop(success=True)
    return ep.index


def fingerprint(ep_dir: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in ep_dir.rglob("*") if p.is_file()):
        h.update(f.relative_to(ep_dir).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.rows: list[dict] = []
        self.base = work / "base"
        ds = Dataset.create(self.base)
        for _ in range(4):
            record(ds)
        ds.close()
        self.prints = {i: fingerprint(ds.episode(i).path) for i in ds.indices()}
        self.can_mount = self._try_mount()

    def _try_mount(self) -> bool:
        probe = self.work / "probe"
        probe.mkdir()
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)])
        return ok

    @contextlib.contextmanager
    def tmpfs(self, size: str):
        mnt = Path(tempfile.mkdtemp(dir=self.work))
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True)
        try:
            yield mnt
        finally:
            subprocess.run(["umount", "-l", str(mnt)])

    def copy(self, where: Path | None = None) -> Path:
        dst = Path(tempfile.mkdtemp(dir=where or self.work)) / "ds"
        shutil.copytree(self.base, dst, ignore=shutil.ignore_patterns(".rig-writer.lock"))
        return dst

    def lost(self, ds_path: Path, targeted: set[int]) -> int:
        """Episodes not targeted by the fault that changed or no longer verify."""
        n = 0
        for i, fp in self.prints.items():
            if i in targeted:
                continue
            ep_dir = ds_path / "episodes" / f"{i:06d}"
            try:  # straight from the episode's files: a damaged dataset root loses no episode
                same = fingerprint(ep_dir) == fp and verify_episode_dir(ep_dir, i) == []
            except Exception:
                same = False
            n += not same
        return n

    def cli(self, fault: str, argv: list, expect: int, ds_path: Path | None = None, targeted: set[int] = frozenset(),
            script: str | None = None) -> None:
        cmd = [sys.executable, "-W", "ignore"] + (["-c", script] if script else ["-m", "rig"]) + [str(a) for a in argv]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        lines = [s for s in r.stderr.splitlines() if s.strip()]
        self.rows.append({
            "fault": fault, "command": " ".join(["rig"] + [Path(str(a)).name if "/" in str(a) else str(a)
                                                           for a in argv]) if not script else "python script",
            "exit": r.returncode, "ok": r.returncode == expect and r.returncode >= 0,
            "line": (lines[0] if lines else (r.stdout.splitlines() or [""])[0])[:110],
            "lines": len(lines), "traceback": int("Traceback" in r.stderr + r.stdout),
            "crash": int(r.returncode < 0), "lost": self.lost(ds_path, set(targeted)) if ds_path else 0,
            "s": time.perf_counter() - t0,
        })

    def skipped(self, fault: str, why: str) -> None:
        self.rows.append({"fault": fault, "command": "-", "exit": "-", "ok": None, "line": f"skipped: {why}",
                          "lines": 0, "traceback": 0, "crash": 0, "lost": 0, "s": 0.0})


HOLD = "import sys,time\nfrom recorder import Dataset\nDataset(sys.argv[1]).new_episode()\nprint('READY',flush=True)\n" \
       "time.sleep(60)"
START = textwrap.dedent("""
    import sys
    from drivers.errors import RigError
    from recorder import Dataset
    try:
        ds = Dataset(sys.argv[1])
        ep = ds.new_episode()
        ep.add_stream("joints", {"q": ((14,), "f4")})
        ep.add_camera("high")
        ep.start()
        ep.stop()
        print("NEW", ep.index)
        print(ds.lock_note or "", file=sys.stderr)
    except RigError as e:
        print(f"rig: {e}", file=sys.stderr)
        sys.exit(2)
""")
RACE = textwrap.dedent("""
    import sys
    import recorder.export_hdf5 as e
    e.check_free_space = lambda *a: None  # as if another process filled the disk after the check
    from rig.cli import main
    sys.exit(main(["export", sys.argv[1], sys.argv[2]]))
""")


def faults(b: Bench) -> None:
    # 1. a flipped byte in every chunk file of one episode, one at a time
    d = b.copy()
    ep_dir = d / "episodes/000000"
    chunks = sorted(p for p in ep_dir.rglob("*") if p.is_file() and "/c/" in p.relative_to(ep_dir).as_posix())
    named = 0
    for f in chunks:
        raw = f.read_bytes()
        f.write_bytes(raw[: len(raw) // 2] + bytes([raw[len(raw) // 2] ^ 0x01]) + raw[len(raw) // 2 + 1:])
        array, key = f.relative_to(ep_dir).as_posix().split("/c/")
        damage = Dataset(d).verify(0)
        named += [(x.array, x.chunk) for x in damage] == [(array, int(key.split("/")[0]))]
        f.write_bytes(raw)
    b.rows.append({"fault": f"one flipped byte, each of the {len(chunks)} chunk files in turn", "command":
                   "Dataset.verify (= rig verify)", "exit": "-", "ok": named == len(chunks),
                   "line": f"named the array and chunk {named} of {len(chunks)} times", "lines": 1,
                   "traceback": 0, "crash": 0, "lost": b.lost(d, {0}), "s": 0.0})
    f = chunks[len(chunks) // 2]
    raw = f.read_bytes()
    f.write_bytes(raw[:8] + bytes(x ^ 0xFF for x in raw[8:16]) + raw[16:])
    b.cli("8 flipped bytes in a chunk", ["verify", d], 2, d, {0})

    # 2. a deleted follower_q chunk: every reader names it, export and train skip the episode
    d = b.copy()
    (d / "episodes/000001/streams/joints/follower_q/c/1/0").unlink()
    for argv in (["episodes", d], ["inspect", d], ["verify", d], ["export", d, b.work / "out-deleted"]):
        b.cli("deleted follower_q chunk", argv, 2, d, {1})

    # 3. corrupt zarr.json at the root, an episode, an array
    for level, rel in (("root", "zarr.json"), ("episode", "episodes/000002/zarr.json"),
                       ("array", "episodes/000002/streams/joints/follower_q/zarr.json")):
        d = b.copy()
        p = d / rel
        p.write_bytes(p.read_bytes()[:25])
        b.cli(f"corrupt zarr.json ({level})", ["episodes", d], 2, d, set() if level == "root" else {2})
        if level != "root":
            b.cli(f"corrupt zarr.json ({level})", ["verify", d], 2, d, {2})

    # 4. a file where the dataset should be; a link out of the dataset; --recover on a complete take
    f = b.work / "a-file"
    f.write_text("not a dataset")
    b.cli("a file as the dataset", ["episodes", f], 2)
    b.cli("a file as the dataset", ["record", "--dataset", f, "--seconds", "1"], 2)
    d = b.copy()
    outside = b.copy() / "episodes/000000"
    (d / "episodes/000004").symlink_to(outside)
    b.cli("episode dir linked out of the dataset", ["episodes", d, "--recover", 4], 2, d)
    b.cli("--recover on a complete episode", ["episodes", d, "--recover", 0], 2, d)

    # 5. the lock: a second recorder, and a recorder killed with the lock held
    d = b.copy()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(d)], stdout=subprocess.PIPE, text=True)
    holder.stdout.readline()
    b.cli("second recorder on a dataset", [d], 2, d, script=START)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    b.cli("recorder killed holding the lock (stale lock)", [d], 0, d, {4}, script=START)

    # 6. an export that meets an empty take, and one killed halfway then run again
    d = b.copy()
    ds = Dataset(d)
    ep = ds.new_episode()
    ep.add_stream("joints", {**FIELDS})
    ep.start()
    ep.stop(status="recovered")
    ds.close()
    b.cli("zero-row recovered take in an export", ["export", d, b.work / "out-empty"], 2, d, {4})
    out = b.work / "out-killed"
    p = subprocess.Popen([sys.executable, "-W", "ignore", "-m", "rig", "export", str(d), str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while p.poll() is None and not list(out.glob("*.rig-tmp")):
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    p.wait()
    b.cli("export killed -9 mid-file, run again", ["export", d, out], 2, d, {4})
    b.rows[-1]["ok"] = b.rows[-1]["ok"] and sorted(x.name for x in out.iterdir()) == [
        f"episode_{i}.hdf5" for i in range(4)]

    if not b.can_mount:
        for fault in ("read-only dataset", "full disk at start", "export to a full disk"):
            b.skipped(fault, "mount is not permitted here (needs root / CAP_SYS_ADMIN)")
        return
    # 7. read-only dataset: reads work, every write says read-only
    with b.tmpfs("8m") as mnt:
        d = b.copy(mnt)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        b.cli("read-only dataset", ["episodes", d], 0, d)
        for argv in (["--discard", 0], ["--success", 0, "no"], ["--recover", 0], ["--keep", 1]):
            b.cli("read-only dataset", ["episodes", d, *argv], 2, d)
        b.cli("read-only dataset", [d], 2, d, script=START)
    # 8. full disk at start of a take
    with b.tmpfs("8m") as mnt:
        d = b.copy(mnt)
        st = os.statvfs(mnt)
        (mnt / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize))
        b.cli("full disk at start", [d], 2, d, script=START)
        b.rows[-1]["ok"] = b.rows[-1]["ok"] and Dataset(d).indices() == [0, 1, 2, 3]
    # 9. export to a full disk: refused before writing, and a disk that fills during the write
    with b.tmpfs("1500k") as mnt:
        b.cli("export to a full disk", ["export", b.base, mnt], 2, None)
        b.rows[-1]["ok"] = b.rows[-1]["ok"] and not list(mnt.glob("*.rig-tmp"))
        for x in mnt.iterdir():
            x.unlink()
        b.cli("export, disk fills during the write", [b.base, mnt], 2, None, script=RACE)
        b.rows[-1]["ok"] = b.rows[-1]["ok"] and not list(mnt.iterdir())
        subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], check=True)
        b.cli("export after freeing space (rerun)", ["export", b.base, mnt], 0, None)
        b.rows[-1]["ok"] = b.rows[-1]["ok"] and len(list(mnt.glob("episode_*.hdf5"))) == 4


def costs(work: Path, repeats: int, seconds: float) -> list[tuple[str, str, str, str]]:
    """Writer time and bytes with and without CRC-32C on one recording; verify and read speed."""
    import recorder.writer as writer
    from recorder.integrity import checksum_codecs

    def one(crc: bool) -> tuple[float, int, float]:
        if not crc:
            writer.checksum_codecs = lambda compress=True: checksum_codecs(compress)[:-1]
        try:
            path = Path(tempfile.mkdtemp(dir=work)) / "ds"
            ds = Dataset.create(path)
            ep = ds.new_episode(options=WriterOptions(flush_interval_s=0.5))
            ep.add_stream("joints", {**FIELDS, "tick": ((), "i8")}, rate_hz=50)
            ep.add_camera("high", fps=30)
            ep.start()
            rng = np.random.default_rng(0)
            yy, xx = np.mgrid[0:480, 0:640]
            img = np.clip(np.stack([xx / 3, yy / 2, (xx + yy) / 5], -1) + rng.normal(0, 4, (480, 640, 3)), 0, 255)
            img = img.astype(np.uint8)  # camera-like: smooth light plus sensor noise (~60 kB as JPEG)
            jpeg = np.frombuffer(__import__("recorder.codec", fromlist=["x"]).encode_jpeg(img), np.uint8)
            t0 = time.monotonic()
            i = 0
            while time.monotonic() - t0 < seconds:
                q = np.full(14, i, np.float32)
                ep.append("joints", time.monotonic_ns(), leader_q=q, follower_q=q, follower_dq=q,
                          follower_current=q, action=q, tick=i)
                if i % 5 < 3:
                    ep.add_frame(Frame("high", i, time.monotonic_ns(), jpeg, encoding="jpeg"))
                i += 1
                time.sleep(0.02)
            stats = ep.stop()
            ds.close()
            files = [f for f in path.rglob("*") if f.is_file()]
            n_chunks = sum("/c/" in f.relative_to(path).as_posix() for f in files)
            size = sum(f.stat().st_size for f in files)
            return stats["flush_seconds"] / max(1, stats["flushes"]) * 1e3, size, 4 * n_chunks / size
        finally:
            writer.checksum_codecs = checksum_codecs

    with_crc, without = [], []
    for _ in range(repeats):
        without.append(one(False))
        with_crc.append(one(True))
    ms_on = statistics.median(x[0] for x in with_crc)
    ms_off = statistics.median(x[0] for x in without)
    share = statistics.median(x[2] for x in with_crc)
    rows = [("writer-thread ms per flush (50 Hz x 6 fields + 30 fps 640x480 JPEG)", f"{ms_on:.2f}",
             f"{ms_off:.2f}", f"{ms_on / ms_off:.2f}x"),
            ("checksum bytes (4 per chunk) / bytes on disk", f"{share * 100:.4f} %", "0", "-")]
    # verify throughput and checked vs plain reads on the last with-CRC recording's sibling
    path = Path(tempfile.mkdtemp(dir=work)) / "ds"
    ds = Dataset.create(path)
    for _ in range(3):
        record(ds, n_ticks=500, cams=("a", "b"), hw=(240, 320))
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        assert all(ds.verify(i) == [] for i in ds.indices())
        times.append(time.perf_counter() - t0)
    rows.append(("`rig verify` (every chunk, 3 episodes)", f"{size / 1e6 / statistics.median(times):.0f} MB/s",
                 "-", "-"))
    checked, plain = [], []
    ep = ds.episode(0)
    for _ in range(repeats * 5):
        t0 = time.perf_counter()
        ep.read_stream("joints")
        checked.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        g = zarr.open_group(str(ep.path / "streams/joints"), mode="r")
        {k: a[:] for k, a in g.arrays()}
        plain.append(time.perf_counter() - t0)
    c, p = statistics.median(checked) * 1e3, statistics.median(plain) * 1e3
    rows.append(("read_stream (500 ticks, 7 arrays): checked vs plain zarr, ms", f"{c:.2f}", f"{p:.2f}",
                 f"{c / p:.2f}x"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each recording in the cost table")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rig-bench-integrity-"))
    try:
        b = Bench(work)
        t0 = time.perf_counter()
        faults(b)
        tried = [r for r in b.rows if r["ok"] is not None]
        print(f"## Faults tried ({len(tried)} runs, {time.perf_counter() - t0:.0f} s)\n")
        print("| fault | command | exit | as expected | first line | tracebacks | crashes | episodes lost |")
        print("|---|---|---|---|---|---|---|---|")
        for r in b.rows:
            ok = "-" if r["ok"] is None else ("yes" if r["ok"] else "NO")
            print(f"| {r['fault']} | `{r['command']}` | {r['exit']} | {ok} | {r['line'].replace('|', '/')} | "
                  f"{r['traceback']} | {r['crash']} | {r['lost']} |")
        print(f"\n**totals:** {len(tried)} fault runs, {sum(bool(r['ok']) for r in tried)} as expected, "
              f"tracebacks {sum(r['traceback'] for r in b.rows)}, crashes {sum(r['crash'] for r in b.rows)}, "
              f"episodes lost {sum(r['lost'] for r in b.rows)}\n")
        print(f"## What the checksums cost (medians of {args.repeats})\n")
        print("| measure | with CRC-32C | without | ratio |")
        print("|---|---|---|---|")
        for row in costs(work, args.repeats, args.seconds):
            print("| " + " | ".join(row) + " |")
    finally:
        for m in work.iterdir():
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
