"""docs/first-day.md runs as written: every ```bash block, in order, in an empty directory, with
`rig` the command of this checkout; then what each step made is checked against the dataset.

Takes about two minutes (two 15 s takes on the simulated rig, a LeRobot export, an upload, a
Ray ingest). The rig's identity goes to a temp config directory, never the user's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recorder import Dataset

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "first-day.md"
pytestmark = [pytest.mark.sim, pytest.mark.system("render"), pytest.mark.timeout(900),
              pytest.mark.xdist_group("ray")]  # its ingest starts a Ray: one at a time


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", PAGE.read_text(), re.MULTILINE | re.DOTALL)


def test_the_install_line_names_real_extras():
    (install,) = blocks("sh")
    m = re.fullmatch(r"pip install -e '\.\[([\w,]+)\]'\n", install)
    assert m, install
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(m.group(1).split(",")) <= set(extras)


def test_the_first_day_runs_as_written(tmp_path):
    pytest.importorskip("mujoco")
    pytest.importorskip("ray")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "rig"  # `rig` as typed: this checkout's, on this interpreter
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m rig "$@"\n')
    shim.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RIG_IDENTITY"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(ROOT),
               XDG_CONFIG_HOME=str(tmp_path / "config"), RIG_CALIBRATION_DIR=str(tmp_path / "calibration"))
    outputs = []
    for block in blocks("bash"):
        out = subprocess.run(["bash", "-e", "-c", block], cwd=work, env=env, capture_output=True, text=True,
                             timeout=600, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, f"{block}\n{out.stdout}\n{out.stderr}"
        assert "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
        outputs.append(out.stdout)
    assert len(outputs) == 5, "the page's steps changed: update this test's checks below"

    # 1. two kept takes, each labelled by the world
    ds = Dataset(work / "data" / "first.zarr")
    infos = ds.episodes()
    assert [i.status for i in infos] == ["complete", "complete"]
    assert all(i.success is not None for i in infos)
    # 2. the review lists both and finds no damage
    assert re.search(r"^0\s+complete", outputs[1], re.MULTILINE) and re.search(r"^1\s+complete", outputs[1],
                                                                                 re.MULTILINE)
    # 3. the LeRobot export holds the kept takes not labelled failed, as the page says
    wanted = [i.index for i in infos if i.success is not False]
    assert f"exported {len(wanted)} episode(s)" in outputs[2]
    if wanted:  # both takes labelled failed (a machine too busy for the operator): nothing to write
        info = json.loads((work / "export" / "first" / "meta" / "info.json").read_text())
        assert info["total_episodes"] == len(wanted)
    # 4. the upload sent every kept take, failed ones too
    assert f"uploaded {len(infos)} episode(s)" in outputs[3]
    assert (tmp_path / "config" / "rig" / "identity.toml").exists()
    # 5. the catalog has one row per uploaded take, accepted or rejected with reasons
    rows = pq.read_table(work / "catalog" / "episodes").to_pylist()
    assert len(rows) == len(infos)
    assert all(r["accepted"] or r["reasons"] for r in rows)
    assert (work / "catalog" / "report.txt").read_text().startswith("contractor")
