"""Fixtures for the fleet tests: moto's S3 server on loopback, a rig identity, recorded takes; and the
hostile contractor's tools (forged uploads), shared by tests/test_fleet_hostile.py and bench_fleet."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from rig.fleet.manifest import ARCHIVE, MANIFEST
from rig.fleet.store import sha256_b64

ROOT = Path(__file__).resolve().parents[1]
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3Server:
    endpoint: str

    @property
    def env(self) -> dict[str, str]:
        """What a subprocess needs to reach this server, the standard AWS way."""
        return {**S3_ENV, "AWS_ENDPOINT_URL": self.endpoint}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, **{
            "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"], "region_name": "us-east-1"})

    def new_bucket(self) -> str:
        name = f"fleet-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server():
    """moto's standalone S3 server on 127.0.0.1 (a real HTTP server; boto3 talks to it over TCP)."""
    pytest.importorskip("moto.server", reason="pip install 'rig[fleet,test]' (moto[server])")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise

    saved = {k: os.environ.get(k) for k in (*S3_ENV, "AWS_ENDPOINT_URL")}
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = S3Server(f"http://{host}:{port}")
    os.environ.update(s3.env)  # the uploader in this process finds the endpoint like any AWS tool
    yield s3
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def identity(tmp_path, monkeypatch):
    """This rig's identity, in a file of the test's own."""
    from rig.fleet.identity import set_identity

    monkeypatch.setenv("RIG_IDENTITY", str(tmp_path / "identity.toml"))
    return set_identity("alice", "dev-test-0001")


@pytest.fixture(scope="session")
def recorded_takes(tmp_path_factory) -> Path:
    """Two takes recorded on the sim-handheld rig (firmware host build + the simulated home's wrist camera)."""
    ds = tmp_path_factory.mktemp("takes") / "hand.zarr"
    out = subprocess.run([sys.executable, "-m", "rig", "record", "--config", "sim-handheld", "--episodes", "2",
                          "--seconds", "2.5", "--reset-seconds", "0.3", "--dataset", str(ds)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    return ds


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """One local Ray for the whole session: 2 CPUs, no dashboard (workers reach moto like the driver)."""
    ray = pytest.importorskip("ray", reason="pip install 'rig[fleet]' (ray[data])")
    env = {**s3_server.env, "PYTHONPATH": str(ROOT)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()


# ---- the hostile contractor: forged uploads, every size and SHA-256 recomputed -----------------------
GiB = 1 << 30
T_NS = "streams/gripper/t_ns/"


def stored_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name in sorted(files):
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), files[name])
    return buf.getvalue()


def rewrite(store, key: str, *, contractor=None, device=None, dataset=None, episode_uuid=None, bind=True,
            attrs=None, members=None, drop=(), edit=None, blob=None) -> str:
    """Upload a forged episode made from the one at ``key``: other ids (in the manifest, the key and,
    with ``bind``, the archive's binding), other archive members or attributes, an edited manifest;
    every size and SHA-256 recomputed as a hostile uploader would. Returns the new manifest key."""
    prefix = key[: -len(MANIFEST)]
    doc = json.loads(store.get(key))
    ids = {"contractor": contractor or doc["contractor"], "device": device or doc["device"],
           "dataset": dataset or doc["dataset"], "episode_uuid": episode_uuid or doc["episode_uuid"]}
    if blob is None:
        with zipfile.ZipFile(io.BytesIO(store.get(prefix + ARCHIVE))) as z:
            files = {i.filename: z.read(i) for i in z.infolist()}
        root = json.loads(files["zarr.json"])
        if bind:
            root["attributes"]["fleet"] = dict(ids)
        root["attributes"].update(attrs or {})
        files["zarr.json"] = json.dumps(root).encode()
        for name in drop:
            files = {k: v for k, v in files.items() if not k.startswith(name)}
        files.update(members or {})
        blob = stored_zip(files)
    doc.update(ids)
    doc["objects"] = [{"key": ARCHIVE, "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}]
    if edit:
        edit(doc)
    new = f"{ids['contractor']}/{ids['dataset']}/{ids['episode_uuid']}/"
    store.put(new + ARCHIVE, blob, sha256_b64(blob))
    data = json.dumps(doc).encode()
    store.put(new + MANIFEST, data, sha256_b64(data))
    return new + MANIFEST


def t_ns_meta(rows: int, chunk: int, codecs=None) -> bytes:
    return json.dumps({
        "shape": [rows], "data_type": "int64", "zarr_format": 3, "node_type": "array", "fill_value": 0,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [chunk]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "codecs": codecs or [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "gzip",
                                                                                     "configuration": {"level": 9}}],
        "attributes": {}, "storage_transformers": []}).encode()


def gzip_zeros(n_bytes: int) -> bytes:
    """A gzip stream that inflates to ``n_bytes`` zeros: 64 MiB members, compressed once, repeated."""
    one = gzip.compress(bytes(64 << 20), 9)
    return one * max(1, n_bytes // (64 << 20))


T_NS = "streams/gripper/t_ns/"


def allocation_bomb(store, key):
    """2.5 MB that declares (and inflates to) a 2.24 GiB t_ns array in one gzip chunk."""
    rows = int(2.24 * GiB) // 8
    return rewrite(store, key, contractor="mallory", device="dev-mallory", episode_uuid=str(uuid.uuid4()),
                   drop=(T_NS,), members={T_NS + "zarr.json": t_ns_meta(rows, rows),
                                          T_NS + "c/0": gzip_zeros(rows * 8)})


def inflation_bomb(store, key):
    """A t_ns array of 150 rows whose one gzip chunk inflates to 1.5 GiB: no metadata shows it."""
    return rewrite(store, key, contractor="mallory", device="dev-mallory", episode_uuid=str(uuid.uuid4()),
                   drop=(T_NS,), members={T_NS + "zarr.json": t_ns_meta(150, 150),
                                          T_NS + "c/0": gzip_zeros(int(1.5 * GiB))})




def blosc_bomb(store, key):
    """A t_ns array of 150 rows whose one blosc chunk's header says it decodes to 1.5 GiB: blosc
    allocates that before decoding a byte, and no zarr metadata shows it."""
    import struct

    import numpy as np
    from numcodecs import Blosc

    chunk = bytearray(Blosc(cname="lz4", clevel=5, shuffle=1).encode(np.arange(150, dtype="i8").tobytes()))
    struct.pack_into("<I", chunk, 4, int(1.5 * GiB))  # the header's decoded size
    codecs = [{"name": "bytes", "configuration": {"endian": "little"}},
              {"name": "blosc", "configuration": {"cname": "lz4", "clevel": 5, "shuffle": "shuffle", "typesize": 8,
                                                  "blocksize": 0}}]
    return rewrite(store, key, contractor="mallory", device="dev-mallory", episode_uuid=str(uuid.uuid4()),
                   drop=(T_NS,), members={T_NS + "zarr.json": t_ns_meta(150, 150, codecs), T_NS + "c/0": bytes(chunk)})
