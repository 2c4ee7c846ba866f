"""`rig fleet ingest` on a real Ray cluster: two nodes on this machine (`ray start --head`, then a worker
node with `ray start --address`), with token authentication. The ingest joins it by its GCS address,
runs validation tasks on the worker node, finishes when that node is killed mid-ingest, and its
catalog equals local mode's row for row; local mode itself runs beside the cluster with RAY_ADDRESS
pointing at it. A refused or missing token, an unreachable cluster and the addresses Ray Data cannot
use (ray://) are one line and exit status 2.

Every Ray process of the cluster runs in a session of its own (``setsid``): the test stops exactly
those, never other Ray instances on the machine (no ``ray stop``)."""

from __future__ import annotations

import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from recorder import Dataset
from rig.cli import main
from rig.fleet.identity import Identity
from rig.fleet.ingest import read_catalog
from rig.fleet.simulator import EpisodeSpec, simulate_fleet, write_episode
from rig.fleet.store import S3Store, open_store
from rig.fleet.upload import Uploader, UploadOptions

pytest_plugins = ["tests.fleet_support"]
pytest.importorskip("ray", reason="pip install 'rig[fleet]' (ray[data])")

pytestmark = pytest.mark.xdist_group("ray")  # one Ray at a time on this machine (pyproject: -n)

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
TOKEN = secrets.token_hex(32)
SPEC = EpisodeSpec(seconds=1.5, fps=8, width=64, height=48)
FAULTS = ["stall", "bad_json", "truncated"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Ray address or token of its own, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


TOKEN_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}


class RayNode:
    """One `ray start --block` in a session of its own; ``kill`` ends every process of that session."""

    def __init__(self, args: list[str], temp: Path, log: Path):
        self.log = log
        self.temp = temp
        self.proc = subprocess.Popen(
            ["nice", "-n", "10", RAY, "start", *args, f"--temp-dir={temp}", "--num-cpus=1", "--block",
             "--object-store-memory=100000000", "--disable-usage-stats",
             f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
             f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"],
            env=ray_env(**TOKEN_ENV), stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        self.sid = self.proc.pid  # setsid: the session's id is the leader's pid

    def wait_started(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "Ray runtime started" in self.log.read_text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        pytest.fail(f"ray start did not come up:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
            try:
                if os.getsid(pid) == self.sid:
                    os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait(timeout=30)

    def ran_validation(self) -> bool:
        """A Ray worker on this node ran the ingest's validation (Ray names the task in the worker's log)."""
        return any("Map(_validate_row)" in p.read_text(errors="replace")
                   for p in self.temp.glob("session_*/logs/worker-*.out"))


@pytest.fixture(scope="module")
def cluster():
    base = Path(tempfile.mkdtemp(prefix="rig-ray-", dir="/tmp"))  # short: Ray's unix socket paths
    port = free_port()
    nodes: list[RayNode] = []
    try:
        head = RayNode(["--head", f"--port={port}", "--include-dashboard=false", f"--dashboard-port={free_port()}"],
                       base / "head", base / "head.log")
        nodes.append(head)
        head.wait_started()
        worker = RayNode([f"--address=127.0.0.1:{port}"], base / "worker", base / "worker.log")
        nodes.append(worker)
        worker.wait_started()
        yield f"127.0.0.1:{port}", head, worker
    finally:
        for n in reversed(nodes):
            n.kill()
        shutil.rmtree(base, ignore_errors=True)


def rig(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(["nice", "-n", "10", sys.executable, "-m", "rig", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def run_all(*runs: tuple[list[str], dict[str, str]]) -> list[subprocess.CompletedProcess]:
    """Several ``rig`` commands at once (each mostly waits on its imports and the network)."""
    procs = [subprocess.Popen(["nice", "-n", "10", sys.executable, "-m", "rig", *a], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for a, env in runs]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def one_line(out: subprocess.CompletedProcess, *words: str) -> str:
    """An expected failure: exit status 2, one line on stderr that holds ``words``, no traceback."""
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    (line,) = out.stderr.strip().splitlines()
    for w in words:
        assert w in line, line
    return line


@pytest.fixture(scope="module")
def fleet(s3_server, tmp_path_factory):
    """8 simulated episodes of 2 contractors in moto's S3, some bad on purpose."""
    bucket = s3_server.new_bucket()
    truth = simulate_fleet(tmp_path_factory.mktemp("work"), S3Store(bucket, "fleet"), contractors=2, episodes=4,
                           spec=SPEC, faults=FAULTS)
    return f"s3://{bucket}/fleet", truth


def rows(catalog: Path) -> list[dict]:
    """The catalog, one dict per episode in key order, without the time of the ingest (NaN as None:
    a figure a rejected episode has not got)."""
    table = read_catalog(catalog).drop_columns(["ingested_at"]).sort_by("manifest_key")
    return [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
            for r in table.to_pylist()]


def test_two_node_cluster_ingest_equals_local_mode_and_survives_losing_a_node(cluster, fleet, tmp_path):
    address, head, worker = cluster
    source, truth = fleet
    # local mode beside the running cluster, with RAY_ADDRESS pointing at it: a Ray of its own
    local = rig("fleet", "ingest", source, "--catalog", str(tmp_path / "local"), "--workers", "2",
                env=ray_env(RAY_ADDRESS=address, **TOKEN_ENV))
    assert local.returncode == 0, local.stdout + local.stderr
    assert "validated on local Ray: 2 CPU(s)" in local.stdout
    # the cluster by its GCS address; its worker node is killed once it has begun validating
    proc = subprocess.Popen(["nice", "-n", "10", sys.executable, "-m", "rig", "fleet", "ingest", source,
                             "--catalog", str(tmp_path / "cluster"), "--address", address],
                            env=ray_env(**TOKEN_ENV), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 180
        while not worker.ran_validation() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        ran_on_worker, still_running = worker.ran_validation(), proc.poll() is None
        worker.kill()
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert ran_on_worker, "no validation task ran on the worker node"
    assert still_running, "the ingest ended before the worker node could be killed: nothing was tested"
    assert proc.returncode == 0, out + err
    assert f"validated on Ray cluster at {address}" in out
    assert "8 manifest(s)" in out and "8 new" in out
    # row for row the same catalog, and each bad episode rejected
    got, want = rows(tmp_path / "cluster"), rows(tmp_path / "local")
    assert len(got) == 8 and got == want
    rejected = {r["prefix"] for r in got if not r["accepted"]}
    assert rejected == {p for p, f in truth.faults.items() if f}
    # the cluster requires its token: one line when it is missing or wrong, before any retry loop of Ray's
    missing, wrong, auto = run_all(
        (["fleet", "ingest", source, "--catalog", str(tmp_path / "c2"), "--address", address],
         ray_env(RAY_AUTH_MODE="disabled")),
        (["fleet", "ingest", source, "--catalog", str(tmp_path / "c3"), "--address", address],
         ray_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))),
        (["fleet", "ingest", source, "--catalog", str(tmp_path / "c4"), "--address", "auto"],  # via RAY_ADDRESS
         ray_env(RAY_ADDRESS=address, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))))
    line = one_line(missing, f"the Ray cluster at {address} requires an authentication token", "sent none")
    assert "RAY_AUTH_MODE=token" in line and "RAY_AUTH_TOKEN" in line
    for out in (wrong, auto):
        one_line(out, f"the Ray cluster at {address} refused this machine's authentication token",
                 "ray get-auth-token")
    assert not any((tmp_path / c / "episodes").exists() for c in ("c2", "c3", "c4"))


def refused(capsys, *args: str) -> str:
    """``rig ARGS`` in this process: exit status 2 and one line on stderr (a traceback would raise here)."""
    assert main(list(args)) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def test_addresses_ray_data_cannot_use_and_unreachable_clusters_are_one_line(tmp_path, capsys, monkeypatch):
    store = tmp_path / "store"  # never read: the address is refused first
    cat = str(tmp_path / "cat")
    for address in ("ray://head.example:10001", "ray://10.0.0.5"):
        line = refused(capsys, "fleet", "ingest", str(store), "--catalog", cat, "--address", address)
        for words in ("Ray Data does not run through Ray Client", "ray-project/ray#48682", "--address auto",
                      f"--address {address.removeprefix('ray://').split(':')[0]}:6379"):
            assert words in line, line
    monkeypatch.setenv("RAY_ADDRESS", "ray://head.example:10001")
    line = refused(capsys, "fleet", "ingest", str(store), "--catalog", cat, "--address", "auto")
    assert "RAY_ADDRESS" in line and "ray-project/ray#48682" in line
    for address in ("http://head.example:8265", "head.example", "head.example:http", "head.example:70000"):
        line = refused(capsys, "fleet", "ingest", str(store), "--catalog", cat, "--address", address)
        assert f"--address {address}: give the head's GCS address as HOST:PORT" in line
    # a port nothing listens on, with a manifest to ingest so that the ingest tries to join: the CLI
    ds = Dataset.create(tmp_path / "d.zarr")
    write_episode(ds, SPEC, 1, "pick the cup")
    Uploader(open_store(store), Identity("erin", "dev-erin"), UploadOptions(progress=False),
             log=lambda m: None).upload_dataset(ds.path)
    closed = free_port()
    one_line(rig("fleet", "ingest", str(store), "--catalog", cat, "--address", f"127.0.0.1:{closed}", env=ray_env()),
             f"no Ray cluster answers at 127.0.0.1:{closed}", "connection refused", "6379")
    assert not (tmp_path / "cat" / "episodes").exists()


def test_catalog_of_a_missing_or_foreign_directory_is_one_line(tmp_path, capsys):
    assert "no catalog at" in refused(capsys, "fleet", "catalog", str(tmp_path / "nope"))
    (tmp_path / "other").mkdir()
    assert "is not a catalog" in refused(capsys, "fleet", "catalog", str(tmp_path / "other"))
    # a catalog with no episode yet (an ingest of an empty store) is one: 0 episodes
    (tmp_path / "other" / "report.txt").write_text("")
    assert main(["fleet", "catalog", str(tmp_path / "other")]) == 0
    assert capsys.readouterr().out.startswith("0 episode(s)")
