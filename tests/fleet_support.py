"""Fixtures for the fleet tests: moto's S3 server on loopback, a rig identity, recorded takes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

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
