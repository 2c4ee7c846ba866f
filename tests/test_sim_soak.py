"""A longer run of the simulated world under a teleop-like load: it must keep serving the buses
and the cameras, episode after episode. Short by default; RIG_SOAK_SECONDS sets the length."""

from __future__ import annotations

import os
import time
import uuid

import pytest

pytest.importorskip("mujoco")
pytest.importorskip("gym_aloha")

from dynamixel_sdk import COMM_SUCCESS, GroupSyncRead, GroupSyncWrite, PacketHandler, PortHandler  # noqa: E402

from drivers.cameras.shm import FrameRingReader  # noqa: E402
from rig.sim import hardware as hw  # noqa: E402
from rig.sim.launch import start_world  # noqa: E402
from rig.sim.world import CameraSpec  # noqa: E402

pytestmark = [pytest.mark.sim, pytest.mark.soak]
PRIMARIES = (1, 2, 4, 6, 7, 8, 9)


@pytest.mark.system("render")  # the simulated cameras
def test_world_keeps_serving_buses_and_cameras_across_resets():
    seconds = float(os.environ.get("RIG_SOAK_SECONDS", "4"))
    world = start_world(seed=0, ring_prefix=f"rig-soak-{uuid.uuid4().hex[:6]}-",
                        cameras=[CameraSpec("top", 160, 120, 10.0)])
    pkt = PacketHandler(2.0)
    ports = []
    try:
        leader, follower = PortHandler(world.ports["right_leader"]), PortHandler(world.ports["right_follower"])
        for p in (leader, follower):
            assert p.openPort() and p.setBaudRate(1_000_000)
            ports.append(p)
        read = GroupSyncRead(leader, pkt, 132, 4)
        for i in PRIMARIES:
            read.addParam(i)
        write = GroupSyncWrite(follower, pkt, 116, 4)
        for i in PRIMARIES:
            pkt.write1ByteTxRx(follower, i, 64, 1)
        ring = FrameRingReader(world.cameras["top"]["ring"])
        first_frame = ring.wait_newer(-1, 10.0)
        assert first_frame is not None
        reads = ok = resets = 0
        end = time.monotonic() + seconds
        next_reset = time.monotonic() + 1.5
        while time.monotonic() < end:
            reads += 1
            if read.txRxPacket() == COMM_SUCCESS:
                ok += 1
                write.clearParam()
                for i in PRIMARIES:
                    ticks = read.getData(i, 132, 4)
                    if i == 9:
                        ticks = hw.follower_gripper_ticks_from_leader_ticks(ticks)
                    write.addParam(i, int(ticks).to_bytes(4, "little"))
                write.txPacket()
            if time.monotonic() > next_reset:
                resets += 1
                world.reset(seed=resets)
                next_reset = time.monotonic() + 1.5
            time.sleep(0.02)
        assert world.alive
        assert ok > reads / 2, f"only {ok} of {reads} leader reads got through"
        last = ring.wait_newer(first_frame[0], 5.0)
        assert last is not None and last[0] > first_frame[0]
        stats = world.stats()
        assert stats["steps"] > 0 and stats["frames"]["top"] > 1
        ring.close()
    finally:
        for p in ports:
            p.closePort()
        world.close()
