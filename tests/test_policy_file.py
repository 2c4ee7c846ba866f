"""One policy file format, one loader by kind: what `rig train --save` and the app's trainer write
is what `rig collect --policy`, `p` and trials load; an old or a foreign file is one line.

The policies are real (the quick MLP and the visuomotor CNN), trained for a few steps on small
synthetic takes of a leader/follower pair (three joints and a gripper, one camera): what matters
here is that a loaded policy predicts exactly what the saved one did."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

from rig.train.data import EpisodeData, JointInfo  # noqa: E402
from rig.train.latest import latest_policy_path, load_latest, save_latest  # noqa: E402
from rig.train.policy_file import (  # noqa: E402
    FORMAT,
    VERSION,
    PolicyFileError,
    load_policy,
    policy_digest,
    read_policy_file,
    save_policy,
)
from rig.train.quick import QuickConfig, QuickEpisode, QuickPolicy, train_quick  # noqa: E402
from rig.train.trainer import TrainConfig, TrainedPolicy, train_policy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
JOINTS = JointInfo(("waist", "shoulder", "elbow", "gripper"), (False, False, False, True))
HW = (60, 80)


def _take(i: int, T: int = 80) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A take's q, dq and actions: the waist sweeps, the gripper closes half way."""
    t = np.arange(T) / 50.0
    q = np.zeros((T, 4), np.float32)
    q[:, 0] = 0.3 * np.sin(t + i)
    q[:, 1] = 0.1 * i
    q[:, 3] = np.where(t < t[-1] / 2, 1.0, 0.2)
    action = np.roll(q, -2, axis=0)
    action[-2:] = q[-1]
    return q, np.gradient(q, axis=0) * 50, action


def _frames(i: int, n: int) -> np.ndarray:
    """A synthetic camera: a grey table with a bright square that moves from take to take."""
    f = np.full((n, *HW, 3), 90, np.uint8)
    x = 10 + 12 * i
    f[:, 20:30, x:x + 10] = (220, 40, 40)
    return f


def visuomotor_policy() -> TrainedPolicy:
    eps = []
    for i in range(2):
        q, dq, action = _take(i)
        T = len(q)
        frames = _frames(i, T // 5 + 1)
        eps.append(EpisodeData(i, "pick", None, True, 50.0, q, dq, action, np.arange(T) / 50.0,
                               {"wrist": frames}, {"wrist": np.arange(T) // 5}, JOINTS))
    return train_policy(eps, TrainConfig(steps=3, k=10, batch=8, width=8, hidden=32))


def quick_policy() -> QuickPolicy:
    eps = []
    for i in range(3):
        q, dq, action = _take(i)
        eps.append(QuickEpisode(i, None, True, q, dq, action, np.arange(len(q)) / 50.0, _frames(i, 1)[0], JOINTS,
                                "pick"))
    reference = np.full((*HW, 3), 90, np.uint8)  # the empty table: the square is what differs
    p = train_quick(eps, "pick", QuickConfig(steps=3, hidden=32, layers=1, members=1, k=10, camera="wrist"),
                    reference=reference)
    assert p.reference is not None
    return p


@pytest.fixture(scope="module")
def policies() -> dict[str, object]:
    return {"visuomotor": visuomotor_policy(), "quick": quick_policy()}


def _predict(policy, image: np.ndarray, q: np.ndarray) -> np.ndarray:
    if hasattr(policy, "clock"):
        policy.clock = lambda: 0.5
    if hasattr(policy, "reset"):
        policy.reset()
    return policy.predict_chunk(image[None], q, np.zeros_like(q))


@pytest.mark.parametrize("kind", ["quick", "visuomotor"])
def test_both_kinds_round_trip_through_the_one_loader(policies, kind, tmp_path):
    policy = policies[kind]
    path = save_policy(policy, tmp_path / "runs" / "p.pt", dataset=tmp_path / "takes.zarr")
    assert not list(path.parent.glob(".*.tmp"))  # written atomically: no temporary left behind
    payload = read_policy_file(path)
    assert payload["format"] == FORMAT and payload["version"] == VERSION and payload["kind"] == kind
    meta = payload["meta"]
    assert meta["cameras"] == ["wrist"] and meta["n"] == 4 and meta["k"] == 10 and meta["rate_hz"] == 50.0
    assert meta["dataset"] == str(tmp_path / "takes.zarr") and meta["steps"] == 3 and meta["created"].endswith("+00:00")
    assert meta["episodes"] == list(policy.episodes) and meta["task"] == getattr(policy, "task", "")

    again = load_policy(path)
    assert type(again) is type(policy) and again.file_meta["kind"] == kind
    image = _frames(1, 1)[0]
    q = _take(1)[0][20]
    assert np.allclose(_predict(policy, image, q), _predict(again, image, q), atol=1e-6)
    if kind == "quick":  # the empty-scene frame its locator compares against travels with it
        assert np.array_equal(again.reference, policy.reference)

    # the digest trials record names these exact bytes
    digest = policy_digest(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() and len(digest) == 64
    copy = tmp_path / "copy.pt"
    copy.write_bytes(path.read_bytes())
    assert policy_digest(copy) == digest
    other = next(p for k, p in policies.items() if k != kind)
    assert policy_digest(save_policy(other, path)) != digest


def test_a_quick_policy_trained_where_nothing_renders_carries_its_takes_reference(tmp_path):
    """Hardware: no empty-scene render. The takes' own median first frame is the reference; it
    travels in the file, so the loaded policy locates the object as training did."""
    eps = []
    for i in range(6):  # the square on each pixel in one take of six: table in the median, never masked
        q, dq, action = _take(i)
        eps.append(QuickEpisode(i, None, True, q, dq, action, np.arange(len(q)) / 50.0, _frames(i, 1)[0], JOINTS,
                                "pick the cup"))
    p = train_quick(eps, "pick the cup", QuickConfig(steps=3, hidden=32, layers=1, members=1, k=10, camera="wrist"))
    assert p.reference is not None and p.reference.source == "median of the takes' first frames"
    assert p.locator_info["reference"] == "median of the takes' first frames"
    assert np.all(p.reference.frame[25, 70] == 90)  # the square moves from take to take: the median is table
    again = load_policy(save_policy(p, tmp_path / "p.pt"))
    assert again.needs_reference and again.reference.source == p.reference.source
    assert np.array_equal(again.reference.frame, p.reference.frame)
    assert np.array_equal(again.reference.arm_mask, p.reference.arm_mask)
    image = _frames(1, 1)[0]
    q = _take(1)[0][20]
    assert np.allclose(_predict(p, image, q), _predict(again, image, q), atol=1e-6)
    assert again.located[-1] == p.located[-1] and again.located[-1]["area"][0] > 0  # the square, found


def test_the_latest_policy_beside_a_dataset_is_the_same_format(policies, tmp_path):
    ds = tmp_path / "takes.zarr"
    assert save_latest(policies["quick"], ds) == latest_policy_path(ds) == tmp_path / "takes.zarr.policy.pt"
    assert isinstance(load_latest(ds), QuickPolicy)
    save_latest(policies["visuomotor"], ds)  # the app's trainer replaces it, whichever recipe it ran
    assert isinstance(load_latest(ds), TrainedPolicy)
    with pytest.raises(Exception, match="no trained policy at .*other.zarr.policy.pt"):
        load_latest(tmp_path / "other.zarr")


def _refusal(path: Path) -> str:
    with pytest.raises(PolicyFileError) as exc:
        load_policy(path)
    line = str(exc.value)
    assert "\n" not in line and str(path) in line
    return line


def test_old_and_foreign_files_are_one_line_naming_what_they_are(policies, tmp_path):
    old_v = tmp_path / "old_visuomotor.pt"
    state = policies["visuomotor"].state()
    state.pop("kind")  # as `rig train --save` wrote it before policy files
    torch.save(state, old_v)
    assert "a visuomotor policy in the format before rig-policy files; retrain it" in _refusal(old_v)
    old_q = tmp_path / "old_quick.pt"
    torch.save(policies["quick"].state(), old_q)
    assert "a quick policy in the format before rig-policy files; retrain it" in _refusal(old_q)

    weights = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(2, 2)}, weights)
    assert "a torch file but not a rig policy (no rig-policy header)" in _refusal(weights)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    assert "a torch file holding a Tensor, not a rig policy" in _refusal(tensor)
    pickled = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a whole module: code, never loaded
    assert "is a torch file but not a rig policy (UnpicklingError" in _refusal(pickled)
    text = tmp_path / "notes.txt"
    text.write_text("not a policy\n")
    assert "is not a policy file (not a torch file at all)" in _refusal(text)
    assert "is a directory, not a policy file" in _refusal(tmp_path)
    assert "no policy file at" in _refusal(tmp_path / "missing.pt")

    future = tmp_path / "future.pt"
    payload = read_policy_file(save_policy(policies["quick"], tmp_path / "q.pt"))
    torch.save({**payload, "version": VERSION + 1}, future)
    assert f"version {VERSION + 1}, and this rig reads version {VERSION}" in _refusal(future)
    alien = tmp_path / "diffusion.pt"
    torch.save({**payload, "kind": "diffusion"}, alien)
    assert "of kind 'diffusion', which this rig cannot run" in _refusal(alien)


def test_a_new_kind_registers_one_loader_that_every_reader_uses(tmp_path):
    from rig.train import policy_file

    class Still:
        """A policy that holds where it is: a kind of its own."""

        def __init__(self, n: int):
            from rig.train.model import PolicyConfig

            self.cfg = PolicyConfig(n=n, k=4, cameras=())

        def state(self) -> dict:
            return {"kind": "still", "n": self.cfg.n}

        def predict_chunk(self, images, q, dq):
            return np.repeat(q[None], self.cfg.k, 0)

    with pytest.raises(PolicyFileError, match="has no policy file kind"):
        save_policy(Still(4), tmp_path / "still.pt")
    policy_file.register_kind("still", lambda st, device: Still(st["n"]))
    try:
        save_latest(Still(4), tmp_path / "takes.zarr")
        loaded = load_latest(tmp_path / "takes.zarr")
        assert isinstance(loaded, Still) and loaded.cfg.n == 4
    finally:
        policy_file.KINDS.pop("still")


def test_rig_collect_with_a_bad_policy_file_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "weights.pt"
    torch.save({"conv1.weight": torch.zeros(2)}, bad)
    r = subprocess.run([sys.executable, "-m", "rig", "collect", "--policy", str(bad), "--dataset",
                        str(tmp_path / "takes.zarr")], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rig: ") and str(bad) in lines[0], r.stderr
    assert "not a rig policy" in lines[0] and "rig train" in lines[0]
    assert not (tmp_path / "takes.zarr").exists()  # refused before anything started
