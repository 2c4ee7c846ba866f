"""Hostile uploads: a contractor who controls every byte of their own upload (and recomputes every
checksum the manifest carries) against the central store. One test per attack, each against a
directory store and moto's S3 server on loopback; then one ingest with several attacks among
honest uploads, which must finish with every upload judged for its own reason."""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from recorder import Dataset
from rig.fleet.identity import Identity, is_id
from rig.fleet.ingest import ingest, read_catalog, reject_duplicates, write_report, write_rows
from rig.fleet.manifest import ARCHIVE, MANIFEST
from rig.fleet.sandbox import EXCEEDED, Sandbox
from rig.fleet.simulator import EpisodeSpec, write_episode
from rig.fleet.store import DirStore, S3Store, sha256_b64
from rig.fleet.upload import Uploader, UploadOptions, kept_episodes
from rig.fleet.validate import validate_episode
from tests.fleet_support import (
    T_NS,
    GiB,
    allocation_bomb,
    blosc_bomb,
    inflation_bomb,
    rewrite,
    stored_zip,
    t_ns_meta,
)

pytest_plugins = ["tests.fleet_support"]

pytestmark = pytest.mark.xdist_group("ray")  # one Ray at a time on this machine (pyproject: -n)

SPEC = EpisodeSpec(seconds=1.5, gripper_hz=100, fps=8, width=32, height=24)


# ---- honest uploads, and the hostile contractor's tools ----------------------------------------------
@pytest.fixture(scope="module")
def takes(tmp_path_factory) -> dict[str, Path]:
    """Small recorded-like datasets, one per honest contractor (alice: 3 takes, bob: 2, carol: 1)."""
    root = tmp_path_factory.mktemp("hostile-takes")
    out = {}
    for c, (name, n) in enumerate((("alice", 3), ("bob", 2), ("carol", 1))):
        ds = Dataset.create(root / name / "rig.zarr")
        for e in range(n):
            write_episode(ds, SPEC, 1000 * c + e, f"pick the cup {e}")
        out[name] = ds.path
    return out


@pytest.fixture(params=["dir", "s3"])
def store(request, tmp_path):
    if request.param == "dir":
        return DirStore(tmp_path / "store")
    s3 = request.getfixturevalue("s3_server")
    return S3Store(s3.new_bucket(), "uploads")


def upload(store, takes, name: str) -> list[str]:
    """``name``'s takes through the real uploader; their manifest keys."""
    ident = Identity(name, f"dev-{name}")
    Uploader(store, ident, UploadOptions(progress=False), log=lambda m: None).upload_dataset(takes[name])
    return [e.prefix + MANIFEST for e in kept_episodes(Dataset(takes[name]), ident)]


def one(store, key) -> dict:
    return validate_episode(store, key)


# ---- bounded validation ------------------------------------------------------------------------------
def test_allocation_bomb_is_refused_from_its_metadata(store, takes):
    (key, *_) = upload(store, takes, "carol")
    row = one(store, allocation_bomb(store, key))
    assert not row["accepted"] and row["category"] == "limits", row["reasons"]
    assert f"t_ns declares {int(2.24 * GiB) // 8} rows, over the" in row["reasons"]


def test_huge_shape_without_chunk_files_is_refused(store, takes):
    (key, *_) = upload(store, takes, "carol")
    meta = json.loads(t_ns_meta(60_000_000, 100))
    meta["codecs"] = [{"name": "bytes", "configuration": {"endian": "little"}}]
    bad = rewrite(store, key, episode_uuid=str(uuid.uuid4()), drop=(T_NS,),
                  members={T_NS + "zarr.json": json.dumps(meta).encode()})
    row = one(store, bad)
    assert not row["accepted"] and row["category"] == "limits"
    assert "declares 60000000 rows" in row["reasons"]


def test_a_hundred_thousand_tiny_chunks_are_refused_before_any_is_read(store, takes):
    (key, *_) = upload(store, takes, "carol")
    members = {T_NS + "zarr.json": t_ns_meta(100_000, 1, [{"name": "bytes", "configuration": {"endian": "little"}}])}
    members.update({f"{T_NS}c/{i}": (1000 + i).to_bytes(8, "little") for i in range(100_000)})
    bad = rewrite(store, key, episode_uuid=str(uuid.uuid4()), drop=(T_NS,), members=members)
    with zipfile.ZipFile(io.BytesIO(store.get(bad[: -len(MANIFEST)] + ARCHIVE))) as z:
        n = len(z.infolist())
    row = one(store, bad)
    assert not row["accepted"] and row["category"] == "limits"
    assert f"the archive lists {n} members" in row["reasons"] and n > 100_000


def test_a_chunk_that_inflates_past_its_declared_size_is_refused_after_reading_that_much(store, takes):
    (key, *_) = upload(store, takes, "carol")
    row = one(store, inflation_bomb(store, key))
    assert not row["accepted"] and row["category"] == "limits", row["reasons"]
    assert "stream gripper array t_ns chunk c/0 inflates past its 1200 bytes" in row["reasons"]


def test_a_chunk_that_allocates_past_the_memory_cap_is_rejected_and_the_worker_goes_on(store, takes, tmp_path):
    keys = upload(store, takes, "bob")
    bomb = blosc_bomb(store, keys[0])
    assert one(store, keys[0])["accepted"]
    box = Sandbox()
    tmp = tmp_path / "work"
    tmp.mkdir()
    try:
        rows = [box.validate(store.url, k, str(tmp)) for k in (bomb, *keys)]
    finally:
        box.close()
    assert not rows[0]["accepted"] and rows[0]["category"] == EXCEEDED, rows[0]["reasons"]
    assert "1 attempt(s)" in rows[0]["reasons"] and "over the 1024 MiB memory cap" in rows[0]["reasons"]
    assert all(r["accepted"] for r in rows[1:]), [r["reasons"] for r in rows[1:]]  # a fresh child took over
    assert list(tmp.iterdir()) == []  # every attempt's temp folder removed
    assert box.peak_mib < 1024


def test_a_worker_that_never_answers_gets_one_retry_then_the_episode_is_rejected(store, takes, tmp_path):
    (key, *_) = upload(store, takes, "carol")
    box = Sandbox(timeout_s=0.05)  # the child cannot even start in time: killed, retried once, killed
    tmp = tmp_path / "work"
    tmp.mkdir()
    try:
        row = box.validate(store.url, key, str(tmp))
    finally:
        box.close()
    assert not row["accepted"] and row["reasons"].startswith(f"{EXCEEDED}: 2 attempt(s)")
    assert len(box.failures) == 2 and all("killed by signal 9" in f for f in box.failures)
    assert list(tmp.iterdir()) == []


# ---- checked values ------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value,expected", [
    ("duration_s", float("nan"), "schema: episode.'duration_s' is nan"),
    ("duration_s", 3.6e12, "schema: episode.'duration_s' is 3600000000000.0"),
    ("version", -1, "schema: version -1 is not one this ingest reads"),
    ("counts", {"streams": {"gripper": 10**12}}, "schema: episode.counts.streams.gripper is 1000000000000"),
    ("task", "x" * 500_000, "schema: episode.'task' is 500000 characters, over the 1000 limit"),
])
def test_manifest_values_have_types_and_ranges(store, takes, field, value, expected):
    (key, *_) = upload(store, takes, "carol")

    def edit(doc):
        (doc if field == "version" else doc["episode"])[field] = value

    row = one(store, rewrite(store, key, episode_uuid=str(uuid.uuid4()), edit=edit))
    assert not row["accepted"] and row["reasons"].startswith(expected), row["reasons"]


def test_a_500_kb_task_in_the_archive_is_refused(store, takes):
    (key, *_) = upload(store, takes, "carol")
    row = one(store, rewrite(store, key, episode_uuid=str(uuid.uuid4()), attrs={"task": "x" * 500_000}))
    assert not row["accepted"] and row["category"] == "limits" and "zarr.json" in row["reasons"]


def test_a_claimed_3_6e12_s_puts_no_hours_on_the_report(store, takes, tmp_path):
    keys = upload(store, takes, "bob")
    bad = rewrite(store, keys[0], episode_uuid=str(uuid.uuid4()),
                  edit=lambda d: d["episode"].update(duration_s=3.6e12))
    rows = [one(store, k) for k in (*keys, bad)]
    write_rows(tmp_path, rows)
    line = next(x for x in write_report(tmp_path).splitlines() if x.startswith("bob "))
    accepted_h = sum(r["duration_s"] for r in rows if r["accepted"]) / 3600
    assert line.split()[1:5] == ["3", "2", "1", f"{accepted_h:.4f}"]  # episodes, accepted, rejected, hours


def test_the_catalog_task_and_flags_come_from_the_archive(store, takes):
    (key, *_) = upload(store, takes, "carol")
    lie = rewrite(store, key, episode_uuid=str(uuid.uuid4()),
                  edit=lambda d: d["episode"].update(task="INJECTED: never validated", compacted=True))
    row = one(store, lie)
    assert row["accepted"], row["reasons"]
    assert row["task"] == "pick the cup 0" and row["compacted"] is False


# ---- identity -------------------------------------------------------------------------------------------
def test_a_copy_into_another_contractors_prefix_is_refused_by_its_binding(store, takes):
    (mallory, *_) = upload(store, takes, "carol")  # stands for mallory's own take
    forged = rewrite(store, mallory, contractor="alice", device="dev-alice", episode_uuid=str(uuid.uuid4()),
                     bind=False)
    row = one(store, forged)
    assert not row["accepted"] and row["category"] == "identity"
    assert "bound to contractor 'carol'" in row["reasons"]
    nobind = rewrite(store, mallory, episode_uuid=str(uuid.uuid4()), attrs={"fleet": None})
    assert one(store, nobind)["reasons"].startswith("identity: the archive carries no fleet binding")
    device = rewrite(store, mallory, episode_uuid=str(uuid.uuid4()), bind=False,
                     edit=lambda d: d.update(device="dev-other"))
    assert "bound to device 'dev-carol'" in one(store, device)["reasons"]


@pytest.mark.parametrize("lookalike", ["ali\u0441e", "alice\u200b", "\uff41lice"])
def test_look_alike_ids_are_refused_and_printed_escaped(store, takes, tmp_path, lookalike):
    keys = upload(store, takes, "alice")
    fake = rewrite(store, keys[0], contractor=lookalike, episode_uuid=str(uuid.uuid4()))
    rows = [one(store, k) for k in (*keys, fake)]
    assert [r["accepted"] for r in rows] == [True, True, True, False]
    assert rows[-1]["category"] == "identity" and ascii(lookalike) in rows[-1]["reasons"]
    write_rows(tmp_path, rows)
    report = write_report(tmp_path)
    assert lookalike not in report and ascii(lookalike) in report
    assert not is_id("alice\n") and not is_id("") and is_id("alice")  # the whole id, nothing after it


def test_contractors_write_only_under_their_own_prefix(s3_server, takes):
    """Per-contractor credentials on the S3 server: moto enforces IAM user policies (not bucket
    policies), so each contractor's key may write only under its own prefix."""
    import boto3
    from botocore.exceptions import ClientError

    bucket = s3_server.new_bucket()
    iam = boto3.client("iam", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    creds = {}
    for name in ("alice", "mallory"):
        user = f"{name}-{uuid.uuid4().hex[:6]}"
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="own-prefix", PolicyDocument=json.dumps(
            prefix_policy(bucket, "uploads", name)))
        k = iam.create_access_key(UserName=user)["AccessKey"]
        creds[name] = (k["AccessKeyId"], k["SecretAccessKey"])
    import requests

    requests.post(f"{s3_server.endpoint}/moto-api/reset-auth", data=b"0", timeout=10)  # from now on: signed
    try:
        def put(who, key):
            c = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                             aws_access_key_id=creds[who][0], aws_secret_access_key=creds[who][1])
            c.put_object(Bucket=bucket, Key=f"uploads/{key}", Body=b"{}")

        put("alice", "alice/rig/x/manifest.json")
        put("mallory", "mallory/rig/x/manifest.json")
        for key in ("alice/rig/x/manifest.json", "alice/rig/y/episode.zip", "uploads-alice/x", "bob/rig/x/a"):
            with pytest.raises(ClientError, match="AccessDenied"):
                put("mallory", key)
    finally:
        requests.post(f"{s3_server.endpoint}/moto-api/reset-auth", data=b"inf", timeout=10)  # the other tests


def prefix_policy(bucket: str, root: str, contractor: str) -> dict:
    """The IAM policy docs/fleet.md gives each contractor's credentials."""
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload",
                                       "s3:ListMultipartUploadParts"],
         "Resource": f"arn:aws:s3:::{bucket}/{root}/{contractor}/*"},
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads"],
         "Resource": f"arn:aws:s3:::{bucket}",
         "Condition": {"StringLike": {"s3:prefix": [f"{root}/{contractor}/*"]}}}]}


# ---- duplicates ---------------------------------------------------------------------------------------
def test_replayed_takes_under_new_ids_are_rejected_as_duplicates_naming_the_first(store, takes):
    keys = upload(store, takes, "alice")
    replays = [rewrite(store, keys[0], episode_uuid=str(uuid.uuid4())) for _ in range(2)]
    replays.append(rewrite(store, keys[0], contractor="bob", device="dev-bob", episode_uuid=str(uuid.uuid4())))
    rows = [one(store, k) for k in (*keys, *replays)]
    assert all(r["accepted"] for r in rows)  # each alone is a fine take
    reject_duplicates(rows, Path("/nonexistent-catalog"))
    assert [r["accepted"] for r in rows] == [True] * 3 + [False] * 3
    for r in rows[3:]:
        assert r["reasons"] == f"duplicate: the same take's data as {keys[0]}"


def test_one_episode_id_from_two_contractors_is_reported_as_repeated(store, takes):
    (a, *_) = upload(store, takes, "alice")
    b = upload(store, takes, "bob")[0]
    same_id = json.loads(store.get(a))["episode_uuid"]
    dup_id = rewrite(store, b, episode_uuid=same_id)
    rows = [one(store, a), one(store, dup_id)]
    reject_duplicates(rows, Path("/nonexistent-catalog"))
    assert rows[0]["accepted"] and not rows[1]["accepted"]
    assert rows[1]["reasons"] == f"repeated id: episode {same_id} was already uploaded as {a}"


# ---- the export ----------------------------------------------------------------------------------------
def deflate_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z, z.open("zarr.json", "w") as f:
        for _ in range(16):
            f.write(bytes(16 << 20))  # 256 MiB of zeros in ~250 kB
    return buf.getvalue()


@pytest.mark.parametrize("swap", ["injected task", "deflate bomb"])
def test_an_archive_swapped_after_acceptance_is_not_exported(store, takes, ray_local, tmp_path, swap):
    from rig.fleet.emit import emit_lerobot

    keys = upload(store, takes, "bob")
    catalog = tmp_path / "catalog"
    res = ingest(store.url, catalog)
    assert res.accepted == 2
    victim = keys[0][: -len(MANIFEST)]
    if swap == "injected task":
        with zipfile.ZipFile(io.BytesIO(store.get(victim + ARCHIVE))) as z:
            files = {i.filename: z.read(i) for i in z.infolist()}
        root = json.loads(files["zarr.json"])
        root["attributes"]["task"] = "INJECTED: never validated"
        files["zarr.json"] = json.dumps(root).encode()
        blob = stored_zip(files)
    else:
        blob = deflate_bomb()
    store.put(victim + ARCHIVE, blob, sha256_b64(blob))
    logs: list[str] = []
    n = emit_lerobot(store.url, catalog, tmp_path / "lerobot", log=logs.append)
    assert n == 1
    assert any(x.startswith(f"rig: not emitted: {victim}{ARCHIVE}: changed since it was accepted") for x in logs)
    tasks = (tmp_path / "lerobot" / "meta" / "tasks.parquet").read_bytes()
    assert b"INJECTED" not in tasks


# ---- done when: one ingest, several attacks among honest uploads ---------------------------------------
def descendants_peak_rss_mib() -> dict[int, float]:
    """Peak resident memory (VmHWM) of this process and every live process under it (the Ray
    head, its workers and their validation children)."""
    import psutil

    out = {}
    for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            status = Path(f"/proc/{p.pid}/status").read_text()
        except OSError:
            continue
        hwm = next((ln for ln in status.splitlines() if ln.startswith("VmHWM:")), None)
        if hwm:
            out[p.pid] = int(hwm.split()[1]) / 1024
    return out


def test_an_ingest_with_attacks_among_honest_uploads_finishes_and_judges_each(store, takes, ray_local, tmp_path):
    honest = [k for name in ("alice", "bob", "carol") for k in upload(store, takes, name)]
    # S3 stamps LastModified to the second and the ingest keeps the older of two copies of a take
    # (ties by key, which a random uuid decides): let the copies below be visibly later
    time.sleep(1.1)
    hostile = {
        allocation_bomb(store, honest[3]): "limits",
        inflation_bomb(store, honest[4]): "limits",
        blosc_bomb(store, honest[3]): EXCEEDED,
        rewrite(store, honest[0], contractor="mallory", device="dev-mallory",
                episode_uuid=str(uuid.uuid4())): "duplicate",
        rewrite(store, honest[1], episode_uuid=str(uuid.uuid4())): "duplicate",
        rewrite(store, honest[5], contractor="ali\u0441e", episode_uuid=str(uuid.uuid4())): "identity",
    }
    swapped = rewrite(store, honest[2], contractor="mallory", device="dev-mallory", episode_uuid=str(uuid.uuid4()))
    size = json.loads(store.get(swapped))["objects"][0]["size"]
    blob = stored_zip({"zarr.json": b"{}", "pad": bytes(size)})
    store.put(swapped[: -len(MANIFEST)] + ARCHIVE, blob, sha256_b64(blob))  # swapped under its manifest
    hostile[swapped] = "manifest lies"
    temp_before = set(Path(tempfile.gettempdir()).glob("rig-validate-*"))
    res = ingest(store.url, tmp_path / "catalog", workers=2)
    rows = {r["manifest_key"]: r for r in read_catalog(tmp_path / "catalog").to_pylist()}
    assert len(rows) == len(honest) + len(hostile) == res.new
    for k in honest:
        assert rows[k]["accepted"], (k, rows[k]["reasons"])
    for k, cat in hostile.items():
        assert not rows[k]["accepted"] and rows[k]["category"] == cat, (k, rows[k]["reasons"])
    first = {rows[k]["reasons"] for k, c in hostile.items() if c == "duplicate"}
    assert first == {f"duplicate: the same take's data as {honest[0]}",
                     f"duplicate: the same take's data as {honest[1]}"}
    # memory: every validation child, Ray worker and the driver stayed under 1 GiB
    assert max(r["peak_rss_mib"] for r in res.rows) < 1024
    peaks = descendants_peak_rss_mib()
    peaks.pop(os.getpid())  # the test process itself holds whatever other tests of the session made
    assert peaks and max(peaks.values()) < 1024, sorted(peaks.values())[-3:]
    assert set(Path(tempfile.gettempdir()).glob("rig-validate-*")) <= temp_before  # no temp folder left
