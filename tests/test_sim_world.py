"""The simulated world process, seen from the host: servo ports through dynamixel-sdk, camera rings."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mujoco")
pytest.importorskip("gym_aloha")

from dynamixel_sdk import COMM_SUCCESS, GroupSyncRead, PacketHandler, PortHandler  # noqa: E402

from drivers.cameras.shm import FrameRingError, FrameRingReader  # noqa: E402
from rig.sim import hardware as hw  # noqa: E402
from rig.sim.launch import WorldError, start_world  # noqa: E402
from rig.sim.world import CameraSpec  # noqa: E402
from tests import system  # noqa: E402

pytestmark = pytest.mark.sim

ADDR_TORQUE, ADDR_GOAL, ADDR_PRESENT = 64, 116, 132


def wait_for(predicate, timeout: float, period: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(period)
    return predicate()


@pytest.fixture(scope="module")
def world():
    system.require("render")  # its cameras
    prefix = f"rig-test-{uuid.uuid4().hex[:6]}-"
    h = start_world(task="transfer_cube", seed=0, ring_prefix=prefix,
                    cameras=[CameraSpec("top", 160, 120, 10.0), CameraSpec("left_wrist", 160, 120, 10.0)])
    yield h
    h.close()


@pytest.fixture(scope="module")
def ports(world):
    opened = {}
    for name, path in world.ports.items():
        port = PortHandler(path)
        assert port.openPort() and port.setBaudRate(1_000_000)
        opened[name] = port
    yield opened
    for port in opened.values():
        port.closePort()


PKT = PacketHandler(2.0)
# The sim shares two cores with the host (and, in CI, with other tests): under load a reply can miss
# the SDK's ~30 ms timeout. Tests check behaviour, not latency (that is bench_sim_render's job), so
# each call is retried for up to RETRY_S.
RETRY_S = 3.0


def txrx(call, *args):
    """An SDK call retried until it gets through (or RETRY_S passes); returns its result tuple."""
    deadline = time.monotonic() + RETRY_S
    while True:
        result = call(*args)
        if result[-2] == COMM_SUCCESS or time.monotonic() > deadline:
            return result


def read_pos(port, servo_id: int) -> int:
    value, comm, err = txrx(PKT.read4ByteTxRx, port, servo_id, ADDR_PRESENT)
    assert comm == COMM_SUCCESS and err == 0, PKT.getTxRxResult(comm)
    return value - (1 << 32) if value >= 1 << 31 else value


def test_every_arm_answers_with_its_servo_models(ports):
    for name, port in ports.items():
        models = hw.FOLLOWER_MODELS if "follower" in name else hw.LEADER_MODELS
        numbers = {"xm540-w270": 1120, "xm430-w350": 1020, "xl430-w250": 1060, "xc430-w150": 1070}
        for servo_id in range(1, 10):
            model, comm, err = txrx(PKT.ping, port, servo_id)
            assert comm == COMM_SUCCESS and err == 0, f"{name} ID {servo_id}: {PKT.getTxRxResult(comm)}"
            assert model == numbers[models[servo_id]], f"{name} ID {servo_id}"


def test_followers_start_in_the_start_pose_and_shadows_read_like_their_primary(world, ports):
    port = ports["right_follower"]
    pos = {i: read_pos(port, i) for i in range(1, 10)}
    # (within a few degrees: the arm settles under gravity on its position servos)
    assert pos[1] == pytest.approx(2048, abs=20)  # waist 0 rad
    assert pos[2] == pytest.approx(hw.ticks_from_angle(-0.96), abs=40)
    assert pos[4] == pytest.approx(hw.ticks_from_angle(1.16), abs=40)
    assert abs(pos[3] - pos[2]) <= 1 and abs(pos[5] - pos[4]) <= 1
    # the shadow's own shaft turns the other way (Drive Mode bit 0 reverse)
    value, comm, _ = txrx(PKT.read1ByteTxRx, port, 3, 10)
    assert comm == COMM_SUCCESS and value & 1


def test_goal_position_moves_the_mujoco_joint_and_present_follows(world, ports):
    port = ports["left_follower"]
    for servo_id in (1, 2, 4, 6, 7, 8, 9):  # shadows take the primary's torque through Secondary ID
        assert txrx(PKT.write1ByteTxRx, port, servo_id, ADDR_TORQUE, 1)[0] == COMM_SUCCESS
    target = 0.3
    comm, err = txrx(PKT.write4ByteTxRx, port, 1, ADDR_GOAL, hw.ticks_from_angle(target))
    assert comm == COMM_SUCCESS and err == 0
    assert wait_for(lambda: abs(world.arm_qpos()["left"][0] - target) < 0.01, 3.0)
    assert read_pos(port, 1) == pytest.approx(hw.ticks_from_angle(target), abs=12)
    # the gripper goal drives the fingers
    txrx(PKT.write4ByteTxRx, port, 9, ADDR_GOAL, hw.FOLLOWER_GRIPPER_OPEN_TICKS)
    assert wait_for(lambda: world.arm_qpos()["left"][6] > hw.FINGER_OPEN_M - 0.001, 3.0)
    assert wait_for(lambda: abs(read_pos(port, 9) - hw.FOLLOWER_GRIPPER_OPEN_TICKS) < 30, 2.0)
    # torque off: the arm goes limp and sags under gravity from where it was held
    world.reset(seed=0)
    for servo_id in (1, 2, 4, 6, 7, 8, 9):
        txrx(PKT.write1ByteTxRx, port, servo_id, ADDR_TORQUE, 0)
    before = world.arm_qpos()["left"][:6]
    moved = wait_for(lambda: np.abs(np.array(world.arm_qpos()["left"][:6]) - before).max() > 0.05, 3.0)
    assert moved


def test_operator_moves_the_leaders(world, ports):
    world.reset(seed=0)
    world.set_operator(True)
    sync = GroupSyncRead(ports["right_leader"], PKT, ADDR_PRESENT, 4)
    for servo_id in range(1, 10):
        sync.addParam(servo_id)

    def sample():
        assert txrx(lambda: (sync.txRxPacket(), 0))[0] == COMM_SUCCESS
        return np.array([sync.getData(i, ADDR_PRESENT, 4) for i in range(1, 10)])

    first = sample()
    assert wait_for(lambda: np.abs(sample() - first).max() > 40, 4.0), "the right leader did not move"
    status = world.operator_status()
    assert status["enabled"] and 0 < status["t"] < status["duration"]
    world.set_operator(False)
    held = sample()
    time.sleep(0.3)
    assert np.abs(sample() - held).max() <= 2  # nobody moves them now
    # switched on again, the operator restarts its plan but eases the leaders back, no jump
    restarted = world.set_operator(True)
    jump = np.abs(sample() - held).max()
    assert jump < 0.5 * np.abs(first - held).max()
    assert restarted["t"] < 0.1


def test_camera_frames_arrive_in_shared_memory_with_increasing_indices(world):
    assert set(world.cameras) == {"top", "left_wrist"}
    for name, cam in world.cameras.items():
        with FrameRingReader(cam["ring"]) as ring:
            assert (ring.width, ring.height) == (160, 120)
            first = ring.wait_newer(-1, 10.0)
            assert first is not None, f"no frame from {name}"
            second = ring.wait_newer(first[0], 2.0)
            assert second is not None and second[0] > first[0] and second[1] > first[1]
            assert second[2].shape == (120, 160, 3) and second[2].std() > 5  # a real image, not blank
    assert wait_for(lambda: world.stats()["rtf"] > 0, 3.0)  # measured each second (its value: see the benchmark)
    stats = world.stats()
    assert all(n > 0 for n in stats["frames"].values())


def test_camera_delay_shifts_frame_stamps(world):
    ring = FrameRingReader(world.cameras["top"]["ring"])
    try:
        world.set_camera_delay("top", 0.3)
        time.sleep(0.5)
        got = ring.wait_newer(ring.read_latest()[0], 2.0)
        assert got is not None
        # a frame shows the world 0.3 s before it is stamped; stamps still increase
        assert time.monotonic_ns() - got[1] < 0.25e9
        with pytest.raises(WorldError, match="no camera 'angle'"):
            world.set_camera_delay("angle", 0.1)
    finally:
        world.set_camera_delay("top", 0.0)
        ring.close()


def test_world_reset_rejects_another_task(world):
    with pytest.raises(WorldError, match="start a new world"):
        world.reset(task="insertion", seed=1)


@pytest.mark.system("render")  # the simulated cameras
def test_close_releases_ports_and_rings():
    prefix = f"rig-test-{uuid.uuid4().hex[:6]}-"
    h = start_world(seed=1, ring_prefix=prefix, cameras=[CameraSpec("top", 64, 48, 5.0)])
    ring = h.cameras["top"]["ring"]
    FrameRingReader(ring).close()
    h.close()
    assert not h.alive
    with pytest.raises(FrameRingError):
        FrameRingReader(ring)
    with pytest.raises(WorldError, match="closed"):
        h.success()


def test_world_exits_when_its_parent_dies(tmp_path):
    root = str(Path(__file__).resolve().parents[1])
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {root!r})
        from rig.sim.launch import start_world
        if __name__ == "__main__":
            h = start_world(cameras=())
            print(h.pid, flush=True)
            time.sleep(60)
    """)
    path = tmp_path / "parent.py"
    path.write_text(script)
    parent = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        world_pid = int(parent.stdout.readline())
        parent.kill()
        parent.wait(5)

        def gone():
            try:
                os.kill(world_pid, 0)
            except ProcessLookupError:
                return True
            # a zombie (exited, not yet reaped by init) counts as gone
            with open(f"/proc/{world_pid}/stat") as f:
                return f.read().split()[2] == "Z"

        assert wait_for(gone, 5.0), "the world outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.stdout.close()


def test_rig_sim_command_prints_ports_and_stops_on_ctrl_c():
    import signal

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "rig", "sim", "--seed", "1", "--cameras", "none"],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(lines)
        for arm in ("left_leader", "right_leader", "left_follower", "right_follower"):
            path = next(line.split()[1] for line in lines if line.strip().startswith(arm))
            assert os.path.exists(path), text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


def test_start_without_the_sim_extra_names_the_install_command(monkeypatch):
    from rig.sim.scene import SimUnavailable

    monkeypatch.setitem(sys.modules, "gym_aloha", None)  # as if gym-aloha were not installed
    with pytest.raises(SimUnavailable, match=r"pip install -e '\.\[sim\]'"):
        start_world(cameras=())


def test_a_leader_can_be_held_at_a_known_pose():
    from drivers.dynamixel.bus import DynamixelBus
    from rig.sim.hardware import LEADER_GRIPPER_CLOSED_TICKS, LEADER_GRIPPER_OPEN_TICKS
    from rig.sim.launch import start_world

    with start_world(cameras=(), operator=False) as world:
        pose = [0.3, -0.4, 0.5, 0.1, -0.2, 0.25, 0.5]
        world.set_leader_pose("left_leader", pose)
        with DynamixelBus(world.ports["left_leader"]) as bus:
            got = bus.sync_read([1, 2, 4, 6, 7, 8, 9], "present_position")
        want = [2048 + v * 4096 / (2 * np.pi) for v in pose[:6]]
        for sid, w in zip((1, 2, 4, 6, 7, 8), want, strict=True):
            assert abs(got[sid]["present_position"] - w) <= 1
        mid = (LEADER_GRIPPER_OPEN_TICKS + LEADER_GRIPPER_CLOSED_TICKS) / 2
        assert abs(got[9]["present_position"] - mid) <= 1
        world.set_operator(True)
        with pytest.raises(Exception, match="set_operator\\(False\\) first"):
            world.set_leader_pose("left_leader", pose)
