"""`rig upload`: takes recorded on the sim-handheld rig go to a loopback S3 server (moto) or a
directory through one code path; kill -9 halfway and a rerun leave no duplicate, no corrupt object."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import ZipStore

from recorder import Dataset
from rig.fleet.identity import IdentityError, set_identity
from rig.fleet.lossy import DroppingProxy
from rig.fleet.manifest import ARCHIVE, MANIFEST
from rig.fleet.simulator import EpisodeSpec, write_episode
from rig.fleet.store import BadKeyError, DirStore, S3Store, StoreError, composite_b64, sha256_b64
from rig.fleet.upload import Uploader, UploadOptions, kept_episodes

pytest_plugins = ["tests.fleet_support"]
ROOT = Path(__file__).resolve().parents[1]

MiB = 1 << 20


def rig(args, env=None, timeout=180):
    e = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "rig", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=e)


def all_objects(client, bucket):
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            out[o["Key"]] = o
    return out


def check_store_complete(client, bucket, prefix, n_episodes):
    """Every manifest's objects exist with the listed size and SHA-256; nothing else lies there."""
    objs = all_objects(client, bucket)
    manifests = [k for k in objs if k.endswith("/" + MANIFEST)]
    assert len(manifests) == n_episodes
    expected = set(manifests)
    for mk in manifests:
        m = json.loads(client.get_object(Bucket=bucket, Key=mk)["Body"].read())
        ep_prefix = mk[: -len(MANIFEST)]
        assert ep_prefix == f"{prefix}{m['contractor']}/{m['dataset']}/{m['episode_uuid']}/"
        for o in m["objects"]:
            key = ep_prefix + o["key"]
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            assert len(body) == o["size"] and hashlib.sha256(body).hexdigest() == o["sha256"]
            expected.add(key)
    assert set(objs) == expected  # no duplicate, no stray object
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    return objs


def test_takes_recorded_on_the_handheld_rig_go_to_s3_once(s3_server, identity, recorded_takes, tmp_path):
    bucket = s3_server.new_bucket()
    dest = f"s3://{bucket}/fleet"
    ds = tmp_path / "takes.zarr"
    shutil.copytree(recorded_takes, ds)
    out = rig(["upload", ds, dest, "--status"], env={"RIG_IDENTITY": os.environ["RIG_IDENTITY"]})
    assert out.returncode == 0, out.stderr
    assert "0 uploaded, 2 pending" in out.stdout
    out = rig(["upload", ds, dest], env={"RIG_IDENTITY": os.environ["RIG_IDENTITY"]})
    assert out.returncode == 0, out.stderr
    assert "uploaded 2 episode(s)" in out.stdout
    assert re.search(r"upload: 100%.*B", out.stderr)  # the progress bar counts bytes
    client = s3_server.client()
    objs = check_store_complete(client, bucket, "fleet/", 2)
    # the uploaded episode is the recorded one, readable with plain zarr straight from the zip
    ep = kept_episodes(Dataset(ds), identity)[0]
    body = client.get_object(Bucket=bucket, Key="fleet/" + ep.prefix + ARCHIVE)["Body"].read()
    (tmp_path / "ep.zip").write_bytes(body)
    g = zarr.open_group(store=ZipStore(tmp_path / "ep.zip", mode="r"), mode="r")
    assert g.attrs["fleet"] == {"contractor": "alice", "device": "dev-test-0001",
                                "episode_uuid": ep.episode_uuid, "dataset": "takes"}
    local = Dataset(ds).episode(ep.index).read_stream("gripper")
    np.testing.assert_array_equal(g["streams/gripper/jaw"][:], local["jaw"])
    np.testing.assert_array_equal(g["streams/gripper/t_ns"][:], local["t_ns"])
    assert not (ds / ".upload" / f"{ep.episode_uuid}.zip").exists()  # staging removed once up
    # a second run sends nothing
    out = rig(["upload", ds, dest], env={"RIG_IDENTITY": os.environ["RIG_IDENTITY"]})
    assert out.returncode == 0 and "nothing to upload: 2 kept episode(s) already" in out.stderr
    after = all_objects(client, bucket)
    assert {k: v["LastModified"] for k, v in after.items()} == {k: v["LastModified"] for k, v in objs.items()}


def _wait_for_a_part(client, bucket, proc, timeout=60.0) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "the upload finished before it could be killed; slow it down"
        for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            parts = client.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts", [])
            if parts:
                return len(parts)
        time.sleep(0.05)
    raise AssertionError("no part reached the store")


def test_kill_9_halfway_then_rerun_completes_with_no_duplicate_and_no_corrupt_object(
        s3_server, identity, recorded_takes, tmp_path):
    # two recorded takes plus one generated take big enough for several 5 MiB parts (recording
    # 20 s of 640x480 camera here would take a minute; the generator writes through the same writer)
    ds = tmp_path / "takes.zarr"
    shutil.copytree(recorded_takes, ds)
    write_episode(Dataset(ds), EpisodeSpec(seconds=4, fps=30, width=640, height=480, noisy=True), 7, "pick the cup")
    bucket = s3_server.new_bucket()
    dest = f"s3://{bucket}/fleet"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "rig", "upload", str(ds), dest, "--part-size", "5M", "--no-progress"]
    proc = subprocess.Popen([*args, "--bwlimit", "4M"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    client = s3_server.client()
    try:
        _wait_for_a_part(client, bucket, proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # halfway: an unfinished multipart upload, and no manifest for that episode
    ups = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert len(ups) == 1
    big_prefix = ups[0]["Key"][: -len(ARCHIVE)]
    assert big_prefix + MANIFEST not in all_objects(client, bucket)
    archive_size = (ds / ".upload" / (big_prefix.split("/")[-2] + ".zip")).stat().st_size
    assert archive_size > 2 * 5 * MiB
    status = subprocess.run([*args[:6], "--status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert re.search(r"episode 2: partial .*MB in the store", status.stdout), status.stdout
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    resumed = float(re.search(r"([\d.]+) MB resumed", out.stdout).group(1))
    assert resumed >= 5 * MiB / 1e6 - 0.1  # the finished part was not sent again
    objs = check_store_complete(client, bucket, "fleet/", 3)
    assert objs[big_prefix + ARCHIVE]["Size"] == archive_size
    assert not list((ds / ".upload").glob("*.zip"))


def test_directory_store_is_the_same_code_path(identity, recorded_takes, tmp_path):
    ds = tmp_path / "takes.zarr"
    shutil.copytree(recorded_takes, ds)
    dest = tmp_path / "central"
    out = rig(["upload", ds, dest, "--no-progress"], env={"RIG_IDENTITY": os.environ["RIG_IDENTITY"]})
    assert out.returncode == 0, out.stderr
    store = DirStore(dest)
    for ep in kept_episodes(Dataset(ds), identity):
        m = json.loads((dest / ep.prefix / MANIFEST).read_text())
        data = (dest / ep.prefix / ARCHIVE).read_bytes()
        assert m["objects"] == [{"key": ARCHIVE, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                 "store_checksum": sha256_b64(data)}]
        assert store.head(ep.prefix + ARCHIVE).checksum == sha256_b64(data)
        with zipfile.ZipFile(dest / ep.prefix / ARCHIVE) as z:
            assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
    out = rig(["upload", ds, dest, "--status"], env={"RIG_IDENTITY": os.environ["RIG_IDENTITY"]})
    assert "2 uploaded, 0 pending (0.0 MB to send)" in out.stdout


def test_directory_store_resumes_a_multipart_upload_and_checks_digests(identity, tmp_path):
    ds = Dataset.create(tmp_path / "big.zarr")
    write_episode(ds, EpisodeSpec(seconds=3, fps=30, width=640, height=480, noisy=True), 3, "wipe the table")
    store = DirStore(tmp_path / "central")
    opts = UploadOptions(part_size=5 * MiB, multipart_threshold=5 * MiB, progress=False)

    class CutAfterOnePart(DirStore):  # the process dies right after the store kept one part
        def upload_part(self, *a, **kw):
            if any(self.list_parts(a[0], a[1]) or {}):
                raise KeyboardInterrupt
            return super().upload_part(*a, **kw)

    with pytest.raises(KeyboardInterrupt):
        Uploader(CutAfterOnePart(store.root), identity, opts).upload_dataset(ds.path)
    rep = Uploader(store, identity, opts).upload_dataset(ds.path)
    assert rep.episodes_sent == 1 and rep.bytes_resumed == 5 * MiB
    ep = kept_episodes(ds, identity)[0]
    data = store.get(ep.prefix + ARCHIVE)
    m = json.loads(store.get(ep.prefix + MANIFEST))
    assert hashlib.sha256(data).hexdigest() == m["objects"][0]["sha256"]
    parts = [sha256_b64(data[i:i + 5 * MiB]) for i in range(0, len(data), 5 * MiB)]
    assert store.head(ep.prefix + ARCHIVE).checksum == composite_b64(parts)
    assert not list((store.root / ".rig-store" / "multipart").rglob("0000*"))
    with pytest.raises(StoreError, match="BadDigest"):
        store.put("x/y", b"hello", sha256_b64(b"hellO"))
    for bad in ("../escape", "/abs", "a//b", "a/./b"):
        with pytest.raises(BadKeyError):
            store.put(bad, b"x", sha256_b64(b"x"))


def test_dropped_connections_are_retried_and_the_upload_completes(s3_server, identity, tmp_path):
    ds = Dataset.create(tmp_path / "drop.zarr")
    write_episode(ds, EpisodeSpec(seconds=3, fps=30, width=640, height=480, noisy=True), 5, "open the drawer")
    bucket = s3_server.new_bucket()
    host, port = s3_server.endpoint.removeprefix("http://").split(":")
    with DroppingProxy((host, int(port)), drop_every=2, drop_after=2 * MiB) as proxy:
        import boto3

        client = boto3.client("s3", endpoint_url=proxy.endpoint)
        store = S3Store(bucket, "fleet", client=client)
        rep = Uploader(store, identity, UploadOptions(part_size=5 * MiB, multipart_threshold=5 * MiB,
                                                      progress=False)).upload_dataset(ds.path)
    assert proxy.dropped >= 1
    assert rep.episodes_sent == 1
    check_store_complete(s3_server.client(), bucket, "fleet/", 1)


def test_identity_is_set_once_and_required(tmp_path, monkeypatch, recorded_takes):
    monkeypatch.setenv("RIG_IDENTITY", str(tmp_path / "id.toml"))
    env = {"RIG_IDENTITY": str(tmp_path / "id.toml")}
    out = rig(["upload", recorded_takes, tmp_path / "central"], env=env)
    assert out.returncode == 2 and "rig upload --set-identity --contractor" in out.stderr
    assert "Traceback" not in out.stderr
    out = rig(["upload", "--set-identity", "--contractor", "bob"], env=env)
    assert out.returncode == 0 and "contractor bob" in out.stdout
    with pytest.raises(IdentityError, match="set once per rig"):
        set_identity("mallory")
    with pytest.raises(IdentityError, match="letters, digits"):
        set_identity("../bob", force=True)
    out = rig(["upload", recorded_takes, "ftp://host/x"], env=env)
    assert out.returncode == 2 and "only s3://bucket/prefix or a plain directory" in out.stderr


def test_bandwidth_limit_holds_the_average_rate(identity, tmp_path):
    ds = Dataset.create(tmp_path / "bw.zarr")
    write_episode(ds, EpisodeSpec(seconds=2, fps=15, width=640, height=480, noisy=True), 4, "pick the cup")
    size = sum(p.stat().st_size for p in (ds.path / "episodes").rglob("*") if p.is_file())
    limit = 1 * MiB
    rep = Uploader(DirStore(tmp_path / "central"), identity, UploadOptions(bwlimit=limit, progress=False),
                   log=lambda m: None).upload_dataset(ds.path)
    assert rep.bytes_sent >= size
    # a lower bound only: a loaded machine can make it slower, never faster (0.25 s burst allowed)
    assert rep.seconds >= rep.bytes_sent / limit - 0.3


def test_rig_fleet_simulate_uploads_a_fleet(tmp_path, capsys):
    from rig.cli import main

    assert main(["fleet", "simulate", str(tmp_path / "store"), "--work", str(tmp_path / "work"), "--contractors",
                 "2", "--episodes", "2", "--bad", "0", "--seconds", "1.5"]) == 0
    assert "4 episode(s) from 2 contractor(s)" in capsys.readouterr().out
    manifests = sorted((tmp_path / "store").glob("contractor-*/rig/*/manifest.json"))
    assert len(manifests) == 4
    assert {json.loads(m.read_text())["device"] for m in manifests} == {"dev-0000", "dev-0001"}
    # an ingest pointed at a store that is not there says so (and makes nothing)
    assert main(["fleet", "ingest", str(tmp_path / "elsewhere"), "--catalog", str(tmp_path / "cat")]) == 2
    assert "no such directory store" in capsys.readouterr().err and not (tmp_path / "elsewhere").exists()


def test_episodes_recorded_on_a_rig_with_an_identity_carry_its_ids(tmp_path):
    env = {"RIG_IDENTITY": str(tmp_path / "id.toml")}
    out = rig(["upload", "--set-identity", "--contractor", "carol", "--device", "gripper-07"], env=env)
    assert out.returncode == 0, out.stderr
    ds = tmp_path / "hand.zarr"
    out = rig(["record", "--config", "sim-handheld", "--episodes", "1", "--seconds", "1", "--reset-seconds", "0.3",
               "--dataset", ds], env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    attrs = dict(zarr.open_group(str(Dataset(ds).episode(0).path), mode="r").attrs)  # as on disk
    assert (attrs["contractor"], attrs["device"]) == ("carol", "gripper-07")
    assert attrs["status"] == "complete"
    # a rig without an identity (a lab's ALOHA) records them as unset
    w = Dataset.create(tmp_path / "lab.zarr").new_episode(task="t")
    w.start()
    w.stop()
    lab = zarr.open_group(str(w.path), mode="r").attrs
    assert lab["contractor"] is None and lab["device"] is None
