"""Quick-train on a small dataset recorded on the simulated rig: loss, determinism, held-out episodes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")


pytestmark = pytest.mark.usefixtures("one_torch_thread")

from rig.train.data import EpisodeCache, action_chunks, build_samples  # noqa: E402
from rig.train.pipeline import run_pipeline  # noqa: E402
from rig.train.trainer import TrainConfig, evaluate, split_episodes, train_policy  # noqa: E402

STEPS = 50


@pytest.fixture(scope="module")
def episodes(sim_dataset):
    return EpisodeCache().load(sim_dataset)


def test_reader_maps_frames_and_state_to_the_next_k_actions(episodes, sim_dataset):
    from recorder import Dataset

    assert [e.index for e in episodes] == Dataset(sim_dataset).indices()  # all four takes were kept
    e = episodes[0]
    assert set(e.frames) == {"top", "left_wrist", "right_wrist"}
    assert e.frames["top"].shape[1:] == (60, 80, 3) and e.frames["top"].dtype == np.uint8
    assert e.q.shape == e.action.shape == (e.ticks, 14)
    # one sample per tick of time: a tick the loaded loop skipped repeats the row before it
    ep = Dataset(sim_dataset).episode(e.index)
    joints = ep.read_stream("joints")
    assert e.ticks == joints["tick"][-1] - joints["tick"][0] + 1
    assert e.t_s[-1] == pytest.approx((e.ticks - 1) / 50, abs=1e-6)
    # each tick sees the latest frame at or before it, never one from the future
    cam_t = ep.frame_times("top")["t_ns"]
    rows = e.frame_of_tick["top"]
    ok = rows >= 0
    tick_t = e.t0_ns + np.round(e.t_s * 1e9).astype(np.int64)
    assert ok.mean() > 0.9 and np.all(cam_t[rows[ok]] <= tick_t[ok])
    r, tt = rows[ok], tick_t[ok]
    nxt = r + 1 < len(cam_t)
    assert np.all(cam_t[r[nxt] + 1] > tt[nxt])  # ...and the latest one
    chunks = action_chunks(e.action, 20)
    assert np.array_equal(chunks[5], e.action[5:25])
    assert np.array_equal(chunks[-1], np.repeat(e.action[-1:], 20, axis=0))  # the arm holds past the end
    s = build_samples(episodes, 20)
    assert len(s) == sum(int(x.valid.sum()) for x in episodes)


def test_validation_holds_out_whole_episodes():
    train, val = split_episodes(range(10), seed=0)
    assert len(val) == 2 and not set(train) & set(val) and sorted(train + val) == list(range(10))
    # stable as episodes arrive: most earlier episodes keep their side
    train2, val2 = split_episodes(range(12), seed=0)
    assert len(set(val) & set(val2)) >= 1
    assert len({tuple(split_episodes(range(10), seed=s)[1]) for s in range(6)}) > 1  # the seed picks them


def test_loss_falls_well_below_predicting_the_mean_action(episodes):
    cfg = TrainConfig(steps=STEPS, seed=0)
    report, policy = run_pipeline("sim", cfg=cfg, curve=False, episodes=episodes)
    v = report.val
    assert set(report.val_episodes).isdisjoint(report.train_episodes)
    assert v["loss"] < 0.25 * v["mean_action_loss"], v
    assert v["joint_error"] < 0.25 * v["baseline_joint_error"], v
    first, last = policy.losses[0][1], policy.losses[-1][1]
    assert last < 0.85 * first, policy.losses  # it learned, not only the offset parametrisation
    assert set(v["per_joint"]) == {f"{side}_{j}_deg" for side in ("left", "right") for j in
                                   ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")} | {
        "left_gripper_pct", "right_gripper_pct"}
    assert all(np.isfinite(x) and x >= 0 for x in v["per_joint"].values())


def test_training_is_deterministic_from_a_seed(episodes):
    train = episodes[:2]
    val = build_samples(episodes[2:], 20)
    mean = np.concatenate([e.action for e in train]).mean(0)
    runs = [train_policy(train, TrainConfig(steps=15, seed=s)) for s in (3, 3, 4)]
    errs = [evaluate(p, val, mean).per_joint for p in runs]
    assert errs[0] == errs[1]
    w = [p.model.state_dict() for p in runs]
    assert all(np.array_equal(w[0][k].numpy(), w[1][k].numpy()) for k in w[0])
    assert errs[0] != errs[2]


def test_a_policy_predicts_a_chunk_from_one_observation(episodes):
    p = train_policy(episodes[:1], TrainConfig(steps=3))
    e = episodes[0]
    t = int(np.flatnonzero(e.valid)[10])
    imgs = np.stack([e.frames[c][e.frame_of_tick[c][t]] for c in p.cfg.cameras])
    chunk = p.predict_chunk(imgs, e.q[t], e.dq[t])
    assert chunk.shape == (20, 14) and np.all(np.isfinite(chunk))
    # and it can be saved and loaded
    from rig.train.trainer import TrainedPolicy

    again = TrainedPolicy.from_state(p.state())
    assert np.allclose(again.predict_chunk(imgs, e.q[t], e.dq[t]), chunk, atol=1e-5)


def test_random_shift_moves_whole_images_and_replicates_edges():
    import torch

    from rig.train.trainer import _shift

    imgs = torch.arange(2 * 3 * 5 * 4, dtype=torch.int64).reshape(1, 2, 3, 5, 4).repeat(2, 1, 1, 1, 1)
    out = _shift(imgs, np.array([0, 2]), np.array([0, -1]))
    assert torch.equal(out[0], imgs[0])  # no shift
    # sample 1: content moved up by 2 rows and right by 1 column, the edges repeated
    assert torch.equal(out[1, :, :, :3, 1:], imgs[1, :, :, 2:, :3])
    assert torch.equal(out[1, :, :, 3:, 1:], imgs[1, :, :, 4:5, :3].expand(-1, -1, 2, -1))
    assert torch.equal(out[1, :, :, :3, 0], imgs[1, :, :, 2:, 0])


def test_a_policy_remembers_where_the_takes_start(episodes):
    from rig.train.trainer import TrainedPolicy

    p = train_policy(episodes[:3], TrainConfig(steps=2))
    firsts = np.stack([e.q[np.flatnonzero(e.valid)[0]] for e in episodes[:3]])
    # closed-loop trials ramp the followers here first (the gripper included), as teleop engages
    assert np.allclose(p.start_q, np.median(firsts, axis=0))
    assert np.allclose(TrainedPolicy.from_state(p.state()).start_q, p.start_q)


def test_a_keypoint_follows_a_small_object_to_a_fraction_of_a_pixel():
    import torch

    from rig.train.model import Keypoints

    kp = Keypoints(1, (60, 80))
    with torch.no_grad():  # a "red" detector: red up, green and blue down
        kp.weight.copy_(torch.tensor([[4.0, -4.0, -4.0]]))
        kp.bias.zero_()

    def at(row: int, col: float) -> np.ndarray:
        img = torch.full((1, 3, 60, 80), 0.0)  # grey table (normalized pixels)
        c0 = int(col)
        frac = col - c0  # a 1-pixel cube straddling two pixels: partly red in each
        img[0, :, row, c0] = torch.tensor([2.0 * (1 - frac), -2.0 * (1 - frac), -2.0 * (1 - frac)])
        img[0, :, row, c0 + 1] = torch.tensor([2.0 * frac, -2.0 * frac, -2.0 * frac])
        with torch.no_grad():
            return kp(img)[0].numpy()

    x, y, peak = at(20, 60.0)
    assert x == pytest.approx(-1 + 2 * 60 / 79, abs=0.01) and y == pytest.approx(-1 + 2 * 20 / 59, abs=0.01)
    assert peak > 10  # a sharp blob, not a flat map
    # half a pixel to the right moves the keypoint by about half a pixel: finer than the grid
    x_half = at(20, 60.5)[0]
    assert 0.3 * (2 / 79) < x_half - x < 0.7 * (2 / 79)


def test_keypoints_train_save_and_leave_their_camera_unshifted(episodes):
    import torch

    from rig.train.model import Normalizer
    from rig.train.trainer import TrainedPolicy, _Batches

    cfg = TrainConfig(steps=3, keypoints=4, keypoint_cameras=("top",), velocity=False)
    p = train_policy(episodes[:1], cfg)
    assert p.cfg.keypoints == 4 and p.model.keypoints is not None and not p.cfg.velocity
    e = episodes[0]
    t = int(np.flatnonzero(e.valid)[10])
    imgs = np.stack([e.frames[c][e.frame_of_tick[c][t]] for c in p.cfg.cameras])
    chunk = p.predict_chunk(imgs, e.q[t], e.dq[t])
    # the keypoints' normalization statistics are saved with the weights
    assert np.allclose(TrainedPolicy.from_state(p.state()).predict_chunk(imgs, e.q[t], e.dq[t]), chunk, atol=1e-5)
    s = build_samples(episodes[:1], 20)
    b = _Batches(s, Normalizer.fit(s.q, s.dq, s.chunk), "cpu", still=("top",))
    plain, _, _ = b.get(np.arange(4))
    shifted, _, _ = b.get(np.arange(4), (np.full(4, 3), np.full(4, -2)))
    top = s.cameras.index("top")
    assert torch.equal(shifted[:, top], plain[:, top])  # the scene camera is where it was
    others = [i for i in range(len(s.cameras)) if i != top]
    assert not torch.equal(shifted[:, others], plain[:, others])


def test_keypoints_on_a_camera_the_episodes_lack_is_a_clear_error(episodes):
    from rig.train import TrainError

    with pytest.raises(TrainError, match=r"keypoints asked for on cameras \['overhead'\].*--keypoint-cameras"):
        train_policy(episodes[:1], TrainConfig(steps=1, keypoints=2, keypoint_cameras=("overhead",)))


def test_temporal_ensembling_weights_the_older_chunks_heavier():
    from rig.sources import _ensembled

    old = np.zeros((4, 2))
    new = np.ones((4, 2))
    # tick 2: the chunk from tick 0 (its row 2) and the one from tick 1 (its row 1) cover it
    a = _ensembled([(0, old), (1, new)], 2, 0.5)
    w_old, w_new = 1.0, np.exp(-0.5)
    assert np.allclose(a, w_new / (w_old + w_new))
    assert np.allclose(_ensembled([(0, old), (1, new)], 4, 0.5), 1.0)  # past the old chunk's end: the new one only
