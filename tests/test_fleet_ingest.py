"""`rig fleet ingest` on Ray Data: a fleet's uploads become a Parquet catalog and a contractor
report; every bad episode is rejected for its own reason; a rerun ingests only new manifests."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from recorder import Dataset
from rig.cli import main
from rig.fleet.ingest import contractor_report, ingest, read_catalog
from rig.fleet.simulator import DATA_FAULTS, STORE_FAULTS, EpisodeSpec, simulate_fleet
from rig.fleet.store import S3Store
from rig.fleet.upload import Uploader, UploadOptions, kept_episodes

pytest_plugins = ["tests.fleet_support"]

pytestmark = pytest.mark.xdist_group("ray")  # one Ray at a time on this machine (pyproject: -n)

SPEC = EpisodeSpec(seconds=1.5, fps=8, width=640, height=480)  # the recorded takes' camera size: one export


def test_ingest_catalogs_the_fleet_and_rejects_bad_uploads_for_the_right_reasons(
        s3_server, ray_local, recorded_takes, tmp_path, capsys):
    bucket = s3_server.new_bucket()
    source = f"s3://{bucket}/fleet"
    store = S3Store(bucket, "fleet")
    faults = list(DATA_FAULTS + STORE_FAULTS)  # every fault once, then good episodes
    takes = tmp_path / "takes.zarr"
    shutil.copytree(recorded_takes, takes)
    truth = simulate_fleet(tmp_path / "work", store, contractors=3, episodes=5, spec=SPEC, faults=faults,
                           datasets={"carol": takes})
    assert sorted(f for f in truth.faults.values() if f) == sorted(faults)
    catalog = tmp_path / "catalog"
    lerobot = tmp_path / "lerobot"
    assert main(["fleet", "ingest", source, "--catalog", str(catalog), "--lerobot", str(lerobot)]) == 0
    out = capsys.readouterr().out
    assert "17 manifest(s)" in out and "17 new" in out
    rows = {r["prefix"]: r for r in read_catalog(catalog).to_pylist()}
    assert len(rows) == 17
    recorded = [p for p in truth.faults if p.startswith("carol/")]
    assert len(recorded) == 2
    for prefix, fault in truth.faults.items():
        row = rows[prefix]
        if fault is None and prefix not in recorded:
            assert row["accepted"], (prefix, row["reasons"])
            assert 0.5 < row["quality"] <= 1.0 and row["duration_s"] == pytest.approx(SPEC.seconds, abs=0.1)
        elif fault is not None:
            assert not row["accepted"]
            assert row["reasons"].startswith(truth.expected_reason(prefix)), (fault, row["reasons"])
            assert f"rejected {prefix}manifest.json: {row['reasons']}" in out
    # the takes recorded on the sim-handheld rig: judged on what they hold (a loaded machine may drop frames)
    for prefix in recorded:
        row = rows[prefix]
        local = next(e for e in kept_episodes(Dataset(takes), _ident("carol")) if e.prefix == prefix)
        ep = Dataset(takes).episode(local.index)
        idx = ep.frame_times("wrist")["index"]
        lost = 1 - idx.size / (idx[-1] - idx[0] + 1)
        assert row["frames"] == idx.size and row["drop_fraction"] == pytest.approx(lost, abs=1e-9)
        assert row["accepted"] or row["category"] in ("drops", "stall"), row["reasons"]
        # the span of everything recorded (the gripper, the wrist camera, the home's ground truth, the pose)
        ts = [ep.read_stream(s)["t_ns"] for s in ep.streams] + [ep.frame_times("wrist")["t_ns"]]
        assert row["duration_s"] == pytest.approx(
            (max(int(t[-1]) for t in ts if len(t)) - min(int(t[0]) for t in ts if len(t))) / 1e9, abs=1e-6)
        assert row["clock_residual_ms"] < 5.0
    # (the 'outside the prefix' manifest pointed at a good episode of another contractor: that one
    # was accepted above, untouched.) Per contractor: hours recorded and accepted, and the reasons
    rep = contractor_report(catalog).set_index("contractor")
    assert set(rep.index) == {"carol", "contractor-000", "contractor-001", "contractor-002"}
    table = read_catalog(catalog).to_pandas()
    for c, g in table.groupby("contractor"):
        assert rep.loc[c, "episodes"] == len(g)
        assert rep.loc[c, "hours_accepted"] == pytest.approx(g[g["accepted"]]["duration_s"].sum() / 3600)
    assert rep["accepted"].sum() == table["accepted"].sum()
    assert "stall x1" in " ".join(rep["rejections"]) and "truncated object x1" in " ".join(rep["rejections"])
    assert (catalog / "report.txt").read_text().count("contractor-00") == 3
    assert pq.read_table(catalog / "contractors.parquet").num_rows == 4
    # the accepted episodes, and only those, became LeRobot v3 shards through the exporter
    info = json.loads((lerobot / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == int(table["accepted"].sum())
    assert f"exported {info['total_episodes']} accepted episode(s) as LeRobot v3" in out
    episodes = pq.read_table(lerobot / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pandas()
    assert len(episodes) == info["total_episodes"]
    # a rerun ingests nothing; a new upload is the only new row
    res = ingest(source, catalog)
    assert res.new == 0 and read_catalog(catalog).num_rows == 17
    more = Dataset.create(tmp_path / "dave.zarr")
    from rig.fleet.simulator import write_episode

    write_episode(more, SPEC, 99, "fold the towel")
    Uploader(store, _ident("dave"), UploadOptions(progress=False), log=lambda m: None).upload_dataset(more.path)
    res = ingest(source, catalog)
    assert res.new == 1 and res.accepted == 1 and read_catalog(catalog).num_rows == 18
    assert main(["fleet", "catalog", str(catalog), "--rejected"]) == 0
    listing = capsys.readouterr().out
    assert "18 episode(s)" in listing and listing.count("manifest.json:") == table["accepted"].eq(False).sum()


def _ident(name):
    from rig.fleet.identity import Identity

    return Identity(name, f"dev-{name}")


def test_quality_figures_come_from_the_data(s3_server, ray_local, tmp_path):
    bucket = s3_server.new_bucket()
    store = S3Store(bucket, "")
    ds = Dataset.create(tmp_path / "q.zarr")
    from rig.fleet.simulator import write_episode

    write_episode(ds, EpisodeSpec(seconds=2.0, gripper_hz=100, fps=10, width=64, height=48), 1, "pick the cup")
    Uploader(store, _ident("erin"), UploadOptions(progress=False), log=lambda m: None).upload_dataset(ds.path)
    res = ingest(f"s3://{bucket}", tmp_path / "cat")
    (row,) = res.rows
    g = ds.episode(0).read_stream("gripper")
    assert row["accepted"] and row["frames"] == 20
    assert row["gripper_rate_hz"] == pytest.approx((len(g["t_ns"]) - 1) / ((g["t_ns"][-1] - g["t_ns"][0]) / 1e9))
    assert row["max_gap_s"] == pytest.approx(max(np.diff(g["t_ns"]).max() / 1e9, 0.1), abs=0.01)
    assert row["bytes"] == store.head(row["prefix"] + "episode.zip").size
