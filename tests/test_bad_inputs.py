"""Bad input through `rig` as a person types it: every expected failure is one line on stderr that
names the problem, exit status 2, and no traceback. Grow the table whenever a new one is found.

Each case runs `python -m rig ...` (or another documented module) in a subprocess, in a temp
directory, against a tiny dataset written with the recorder directly (no simulator needed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from recorder import Dataset
from tests.test_recorder_export import record

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:The data type \\(VariableLengthBytes")


@dataclass(frozen=True)
class Case:
    """``argv`` after `python -m rig` ({ds}, {tmp}, {file} filled in); ``says``: what stderr's one
    line must contain (case-insensitive); ``stdout_has``/``never``: the report on stdout where the
    command prints one (doctor), and words that would blame the wrong thing."""

    argv: str
    says: str
    stdout_has: str = ""
    never: tuple[str, ...] = ()
    module: str = "rig"
    stdin: str = "eof"  # "eof": at its end at once; "closed": no standard input at all
    wrap: tuple[str, ...] = field(default=())  # a command the run goes through (a read-only mount)


CASES = {
    # --- the issue's cases (#25) ---
    "hdf5 export into a file": Case("export {ds} {file} --format aloha-hdf5", "is a file, not a directory"),
    "hdf5 export under a file": Case("export {ds} {file}/out --format aloha-hdf5", "not a directory"),
    "hdf5 export on a read-only mount": Case("export {ds} {tmp}/ro/new --format aloha-hdf5", "read-only",
                                             wrap=("readonly",)),
    "lerobot export on a read-only mount": Case("export {ds} {tmp}/ro/new --format lerobot", "read-only",
                                                wrap=("readonly",)),
    "setup-motors at end of input": Case("setup-motors /dev/null", "standard input"),
    "setup-motors, stdin closed": Case("setup-motors /dev/null", "standard input", stdin="closed"),
    "doctor, no such port": Case("doctor /dev/rig-no-such-port", "problem(s)", stdout_has="does not exist",
                                 never=("no read/write permission",)),
    "lerobot export --fps -5": Case("export {ds} {tmp}/lr --format lerobot --fps -5", "--fps"),
    "record --seconds nan": Case("record --seconds nan", "--seconds"),
    "record --seconds inf": Case("record --seconds inf", "--seconds"),
    "record --reset-seconds -1": Case("record --reset-seconds -1", "--reset-seconds"),
    "record --reset-seconds nan": Case("record --reset-seconds nan", "--reset-seconds"),
    "python -m recorder.compact, no dataset": Case("{tmp}/missing.zarr", "not a rig dataset",
                                                   module="recorder.compact"),
    "python -m recorder.compact, an option": Case("{ds} --crf 20", "rig fleet compact", module="recorder.compact"),
    # --- configs ---
    "--config: no such file": Case("record --config {tmp}/missing.toml", "no such file"),
    "--config: bad TOML": Case("teleop --config {tmp}/bad.toml", "TOML syntax"),
    "--config: a value of the wrong kind": Case("record --config {tmp}/badtype.toml", "badtype.toml"),
    "--config: unknown built-in": Case("collect --config no-such-rig", "no built-in config"),
    "--config: a directory": Case("calibrate check --config {tmp}", "{tmp}"),
    # --- datasets and episodes ---
    "episodes: no dataset": Case("episodes {tmp}/missing.zarr", "not a rig dataset"),
    "episodes --discard: no such episode": Case("episodes {ds} --discard 99", "episode 99 is not in"),
    "episodes --success: bad word": Case("episodes {ds} --success 0 maybe", "yes, no or unset"),
    "episodes --recover: not cut off": Case("episodes {ds} --recover 0", "not cut off"),
    "inspect: no such episode": Case("inspect {ds} 99", "episode 99 is not in"),
    "inspect: a file for a dataset": Case("inspect {file}", "is a file"),
    "inspect: episode not a number": Case("inspect {ds} first", "invalid int value"),
    "inspect: no such tick stream": Case("inspect {ds} --tick-stream NOSUCH", "has no stream 'NOSUCH'"),
    "export: --cameras names none": Case("export {ds} {tmp}/none --cameras ,", "names no camera"),
    "verify: no such episode": Case("verify {ds} 7", "episode 7 is not in"),
    "verify: an empty directory": Case("verify {tmp}/empty", "not a rig dataset"),
    "pose: no dataset": Case("pose {tmp}/missing.zarr", "not a rig dataset"),
    "train: no dataset": Case("train {tmp}/missing.zarr", "not a dataset"),
    "train --budget 0": Case("train {ds} --budget 0", "--budget"),
    "train --steps -1": Case("train {ds} --policy visuomotor --steps -1", "--steps"),
    "train --eval-trials -3": Case("train {ds} --eval-trials -3", "--eval-trials"),
    "pose --sim-home -1": Case("pose {tmp}/home.zarr --sim-home -1", "--sim-home"),
    # --- export and import ---
    "export: no dataset": Case("export {tmp}/missing.zarr {tmp}/out", "not a rig dataset"),
    "export: unknown format": Case("export {ds} {tmp}/out --format parquet", "--format"),
    "export: unknown camera": Case("export {ds} {tmp}/out --cameras side", "no camera 'side'"),
    "export: unknown field": Case("export {ds} {tmp}/out --qpos q", "no field 'q'"),
    "lerobot export into a file": Case("export {ds} {file} --format lerobot", "is a file"),
    "lerobot export --crf -1": Case("export {ds} {tmp}/lr --format lerobot --crf -1", "--crf"),
    "lerobot export --gop 0": Case("export {ds} {tmp}/lr --format lerobot --gop 0", "--gop"),
    "lerobot export --fps 2.5": Case("export {ds} {tmp}/lr --format lerobot --fps 2.5", "--fps"),
    "lerobot export: unknown codec": Case("export {ds} {tmp}/lr --format lerobot --codec rig-no-codec",
                                          "no encoder"),
    "import: no source": Case("import {tmp}/missing {tmp}/imported.zarr", "does not exist"),
    "import: not a dataset": Case("import {tmp}/empty {tmp}/imported.zarr", "neither a LeRobot"),
    "import --fps 0": Case("import {tmp}/empty {tmp}/imported.zarr --fps 0", "--fps"),
    # --- upload ---
    "upload: no destination": Case("upload {ds}", "rig upload DATASET DEST"),
    "upload: part size under S3's minimum": Case("upload {ds} {tmp}/store --part-size 1K", "5 MiB"),
    "upload: bandwidth not a size": Case("upload {ds} {tmp}/store --bwlimit fast", "'fast'"),
    "upload --set-identity without --contractor": Case("upload --set-identity", "--contractor"),
    # --- ports and buses ---
    "scan: no such port": Case("scan /dev/rig-no-such-port", "no such port"),
    "setup-motors: bad --ids": Case("setup-motors /dev/null --ids one", "--ids"),
    "setup-motors: no such port": Case("setup-motors /dev/rig-no-such-port --ids 1 --yes", "no such port"),
    "gripper monitor: no such port": Case("gripper monitor /dev/rig-no-such-port", "cannot open gripper port"),
    "gripper monitor --rate 0": Case("gripper monitor /dev/null --rate 0", "--rate"),
    "scan: nothing answers": Case("scan /dev/null --baud 1000000", "no servos answered"),
    "setup-motors --ids 5-1": Case("setup-motors /dev/null --ids 5-1 --yes", "names no ID"),
    "sim-bus --servos 0": Case("sim-bus --servos 0", "--servos"),
    "sim --fps 0": Case("sim --fps 0", "--fps"),
    "sim --width -1": Case("sim --width -1", "--width"),
    # --- durations and counts of the live commands ---
    "record --episodes 0": Case("record --episodes 0", "--episodes"),
    "record --seconds abc": Case("record --seconds abc", "--seconds"),
    "teleop --duration nan": Case("teleop --duration nan", "--duration"),
    "teleop --duration -1": Case("teleop --duration -1", "--duration"),
    "collect --seconds nan": Case("collect --seconds nan", "--seconds"),
    "collect --reset-seconds inf": Case("collect --reset-seconds inf", "--reset-seconds"),
    "calibrate latency --seconds -1": Case("calibrate latency --seconds -1", "--seconds"),
    "calibrate arm: no such arm": Case("calibrate arm elbow", "no arm 'elbow'"),
    "calibrate arm: no name": Case("calibrate arm", "name"),
    "unknown command": Case("recrod", "invalid choice"),
}


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    """A temp directory holding a tiny dataset (a kept and a failed take), a file, an empty
    directory, bad configs and this rig's upload identity."""
    tmp = tmp_path_factory.mktemp("bad-inputs")
    ds = Dataset.create(tmp / "ds.zarr")
    record(ds)
    record(ds, success=False)
    (tmp / "a-file").write_text("not a directory\n")
    (tmp / "empty").mkdir()
    (tmp / "ro").mkdir()
    (tmp / "bad.toml").write_text("name = [unclosed\n")
    (tmp / "badtype.toml").write_text('[loop]\nrate_hz = "fast"\n')
    (tmp / "identity.toml").write_text('contractor = "c-test"\ndevice = "d-test"\n')
    return tmp


def readonly_mount_available() -> bool:
    """A real read-only filesystem: a tmpfs mounted read-only in a private mount namespace
    (`unshare -rm`, no privilege needed where user namespaces are allowed)."""
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


def run_case(case: Case, tmp: Path) -> subprocess.CompletedProcess:
    fill = {"ds": str(tmp / "ds.zarr"), "tmp": str(tmp), "file": str(tmp / "a-file")}
    args = [a.format(**fill) for a in case.argv.split()]
    cmd = [sys.executable, "-m", case.module, *args]
    if case.wrap == ("readonly",):
        if not readonly_mount_available():
            pytest.skip("no user namespaces here (unshare -rm) to mount a read-only filesystem")
        ro = tmp / "ro"
        cmd = ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o ro rig-ro "{ro}" && exec "$@"', "sh", *cmd]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RIG_IDENTITY": str(tmp / "identity.toml"),
           "RIG_CALIBRATION_DIR": str(tmp / "calibration")}
    stdin = subprocess.DEVNULL if case.stdin == "eof" else None
    close = (lambda: os.close(0)) if case.stdin == "closed" else None
    return subprocess.run(cmd, cwd=tmp, env=env, stdin=stdin, preexec_fn=close, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def results(place) -> dict[str, subprocess.CompletedProcess | str]:
    """Every case run once, several at a time (each is a process start and an import: the table
    takes seconds rather than a minute); a case that cannot run here holds the reason."""
    def one(case: Case) -> subprocess.CompletedProcess | str:
        try:
            return run_case(case, place)
        except pytest.skip.Exception as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return dict(zip(CASES, pool.map(one, CASES.values()), strict=True))


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_exit_2(name, place, results):
    case = CASES[name]
    out = results[name]
    if isinstance(out, str):
        pytest.skip(out)
    both = out.stdout + out.stderr
    assert "Traceback" not in both, both
    assert out.returncode == 2, both
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, f"stderr is not one line:\n{out.stderr}"
    says = case.says.format(tmp=place)
    assert says.lower() in lines[0].lower(), lines[0]
    if case.stdout_has:
        assert case.stdout_has in out.stdout, out.stdout
    for word in case.never:
        assert word not in both, both


def test_the_table_covers_the_issue_and_twenty_more():
    assert len(CASES) >= 32


def test_python_m_recorder_compact_compacts(place, tmp_path):
    """docs/fleet.md's `python -m recorder.compact DATASET` does what `rig fleet compact` does."""
    ds = tmp_path / "ds.zarr"
    shutil.copytree(place / "ds.zarr", ds)
    out = subprocess.run([sys.executable, "-m", "recorder.compact", str(ds)], cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "4 camera(s) of 2 episode(s) compacted"
    reread = Dataset(ds)
    for info in reread.episodes():
        ep = reread.episode(info.index)
        assert ep.attrs.get("compacted") is True
        assert ep.read_frames("cam_high", 0, 1).shape == (1, 24, 32, 3)
