"""Real-time scheduling for the loop, checked through the real system calls in child processes.

Each case runs in a fresh interpreter so its rlimits, user and scheduling class cannot leak into the
test process. The fallback cases drop CAP_SYS_NICE the way an ordinary user lacks it: the child
lowers its rlimits and then switches to the unprivileged `nobody` user.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from rig.realtime import RealtimeSettingError, parse_setting

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="needs Linux scheduling calls")

NOBODY = 65534
# Raising a hard limit needs CAP_SYS_RESOURCE, which some sandboxes withhold even from root.
LIMIT = """
def limit(which, value):
    try:
        resource.setrlimit(which, (value, value))
    except ValueError:
        print("SKIP this sandbox may not raise rlimits (no CAP_SYS_RESOURCE)"); sys.exit(0)
"""


def child(body: str, *, rtprio: int | None = None, nice_limit: int | None = None, user: int | None = None) -> dict:
    """Run ``body`` in a child after setting limits and user; it must print one JSON line."""
    # Everything is imported before the user switch: `nobody` may not read the interpreter's files.
    lines = ["import json, os, resource, sys, threading, time", "from rig import realtime", LIMIT]
    if rtprio is not None:
        lines.append(f"limit(resource.RLIMIT_RTPRIO, {rtprio})")
    if nice_limit is not None:
        lines.append(f"limit(resource.RLIMIT_NICE, {nice_limit})")
    if user is not None:
        lines.append(f"os.setgroups([]); os.setgid({user}); os.setuid({user})")
    prelude = "\n".join(lines) + "\n"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(body)], capture_output=True, text=True,
                         timeout=60, env=env, cwd="/")
    assert out.returncode == 0, out.stderr
    if out.stdout.startswith("SKIP "):
        pytest.skip(out.stdout[5:].strip())
    lines = out.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    result["stderr"] = out.stderr
    return result


def needs_fifo():
    try:
        r = child("""
            s = realtime.request(20)
            print(json.dumps({"policy": s.policy}))
        """)
    except AssertionError:
        pytest.skip("this machine's kernel refuses SCHED_FIFO even to root")
    if r["policy"] != "fifo":
        pytest.skip("this machine's kernel refuses SCHED_FIFO even to root (a container without an RT budget)")


def needs_root():
    if os.geteuid() != 0:
        pytest.skip("the fallback cases switch to the `nobody` user, which needs root")


def test_the_loop_thread_gets_fifo_and_threads_it_starts_do_not():
    needs_root()
    needs_fifo()
    r = child("""
        s = realtime.request("auto")
        seen = {}
        def later():
            seen["child"] = realtime.thread_policy()
        t = threading.Thread(target=later); t.start(); t.join()
        main = realtime.thread_policy()
        print(json.dumps({"policy": s.policy, "prio": s.priority, "label": s.label(), "kernel": main,
                          "child": seen["child"], "note": s.note()}))
    """)
    assert r["policy"] == "fifo" and r["prio"] == 20
    assert r["kernel"] == ["fifo", 20]  # read back from the kernel, not our own record
    assert r["child"] == ["normal", 0]  # SCHED_RESET_ON_FORK: writers and encoders stay normal
    assert r["label"] == "SCHED_FIFO 20"
    assert r["note"] is None and r["stderr"] == ""


def test_a_configured_priority_is_used():
    needs_root()
    needs_fifo()
    r = child("""
        s = realtime.request(35)
        print(json.dumps({"kernel": realtime.thread_policy()}))
    """)
    assert r["kernel"] == ["fifo", 35]


def test_without_permission_the_loop_falls_back_and_says_so_once():
    needs_root()
    r = child("""
        got = []
        def loop_thread():
            s = realtime.request("auto")
            realtime.say_once(s)
            got.append(s)
        ts = [threading.Thread(target=loop_thread) for _ in range(3)]  # the loop and two bus workers
        for t in ts: t.start()
        for t in ts: t.join()
        s = got[0]
        print(json.dumps({"policy": s.policy, "label": s.label(), "note": s.note(),
                          "kernel": realtime.thread_policy()}))
    """, rtprio=0, nice_limit=0, user=NOBODY)
    assert r["policy"] == "normal"
    assert r["kernel"] == ["normal", 0]
    assert "RLIMIT_RTPRIO is 0" in r["note"] and "rtprio" in r["note"] and "limits.d" in r["note"]
    lines = [ln for ln in r["stderr"].splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("rig: the control loop runs at normal priority")


def test_an_rtprio_limit_alone_allows_fifo():
    needs_root()
    needs_fifo()
    r = child("""
        s = realtime.request("auto")
        print(json.dumps({"policy": s.policy, "kernel": realtime.thread_policy()}))
    """, rtprio=30, user=NOBODY)
    assert r["policy"] == "fifo" and r["kernel"] == ["fifo", 20]
    # ... but not above it
    r = child("""
        s = realtime.request(40)
        print(json.dumps({"policy": s.policy, "note": s.note()}))
    """, rtprio=30, nice_limit=0, user=NOBODY)
    assert r["policy"] == "normal" and "RLIMIT_RTPRIO is 30" in r["note"]


def test_the_fallback_takes_the_best_nice_level_allowed():
    needs_root()
    r = child("""
        s = realtime.request("auto")
        tid = threading.get_native_id()
        print(json.dumps({"policy": s.policy, "nice": s.nice, "kernel_nice": os.getpriority(os.PRIO_PROCESS, tid),
                          "label": s.label()}))
    """, rtprio=0, nice_limit=25, user=NOBODY)  # RLIMIT_NICE 25 allows nice down to -5
    assert r["policy"] == "nice" and r["nice"] == -5 and r["kernel_nice"] == -5
    assert r["label"] == "normal, nice -5"


def test_off_asks_for_nothing():
    r = child("""
        s = realtime.request("off")
        print(json.dumps({"policy": s.policy, "note": s.note(), "kernel": realtime.thread_policy()}))
    """)
    assert r == {"policy": "normal", "note": None, "kernel": ["normal", 0], "stderr": ""}


def test_doctor_reports_availability_and_how_to_enable():
    needs_root()
    ok = child("""
        print(json.dumps(dict(zip(("ok", "line"), realtime.availability("auto")))))
    """)
    assert ok["ok"] is True and "SCHED_FIFO 20" in ok["line"]
    no = child("""
        print(json.dumps(dict(zip(("ok", "line"), realtime.availability("auto")))))
    """, rtprio=0, nice_limit=0, user=NOBODY)
    assert no["ok"] is False and "NOT available" in no["line"] and "/etc/security/limits.d/rig.conf" in no["line"]


def test_a_runaway_thread_is_dropped_back_to_normal():
    needs_root()
    needs_fifo()
    r = child("""
        s = realtime.request("auto")
        guard = realtime.RunawayGuard(limit=0.5, every_s=0.2)
        tripped = False
        end = time.monotonic() + 5
        while time.monotonic() < end and not tripped:  # a bug: a tick that never sleeps
            tripped = guard.check()
        print(json.dumps({"tripped": tripped, "kernel": realtime.thread_policy()}))
    """)
    assert r["tripped"] is True and r["kernel"] == ["normal", 0]


@pytest.mark.parametrize("value,expected", [("auto", "auto"), ("off", "off"), (20, 20), (98, 98)])
def test_settings(value, expected):
    assert parse_setting(value) == expected


@pytest.mark.parametrize("value", ["fast", 0, 99, -1, True, 2.5, None])
def test_bad_settings_name_the_choices(value):
    with pytest.raises(RealtimeSettingError, match="auto"):
        parse_setting(value)


def test_config_reads_the_loop_table(tmp_path):
    from drivers.errors import RigError
    from rig.config import load_config, parse_config

    base = load_config("sim-aloha").raw
    assert load_config("sim-aloha").loop.realtime == "auto"
    cfg = parse_config({**base, "loop": {"realtime": 30}}, "test.toml")
    assert cfg.loop.realtime == 30
    with pytest.raises(RigError, match=r"loop\.realtime"):
        parse_config({**base, "loop": {"realtime": "fast"}}, "test.toml")
    json.dumps(cfg.loop.realtime)


def test_a_teleop_run_puts_the_loop_and_its_bus_workers_on_fifo_and_nothing_else(emulated, tmp_path):
    """Through a real run on emulated servos: the kernel reports SCHED_FIFO for the loop thread and
    the bus workers while they run, normal for the emulated servos' threads (they stand in for
    hardware here, in-process), and the loop thread is normal again after run() returns."""
    needs_root()
    needs_fifo()
    from rig import realtime
    from rig.session import RigSession, wait_until
    from tests.rigs import pair_buses, pair_config

    leader, follower = pair_buses(emulated)
    cfg = pair_config(tmp_path, leader, follower, engage_seconds=0.2)
    seen: dict[str, tuple[str, int]] = {}
    with RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}) as s:
        loop = s.teleop
        s.start(1.5)
        assert wait_until(lambda: loop.stats.ticks > 10, 10)
        seen["loop"] = realtime.thread_policy(loop._thread.native_id)
        for w in loop.workers:
            seen[w.arm.name] = realtime.thread_policy(w._thread.native_id)
        seen["emulator"] = realtime.thread_policy(follower._thread.native_id)
        summary = s.wait()
    assert seen["loop"] == ("fifo", 20)
    assert seen["leader"] == ("fifo", 20) and seen["follower"] == ("fifo", 20)
    assert seen["emulator"] == ("normal", 0)
    assert summary["scheduling"] == "SCHED_FIFO 20"


def test_realtime_off_in_the_config_keeps_the_loop_normal(emulated, tmp_path):
    import dataclasses

    from rig import realtime
    from rig.config import LoopConfig
    from rig.session import RigSession, wait_until
    from tests.rigs import pair_buses, pair_config

    leader, follower = pair_buses(emulated)
    cfg = dataclasses.replace(pair_config(tmp_path, leader, follower, engage_seconds=0.2), loop=LoopConfig("off"))
    with RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}) as s:
        loop = s.teleop
        s.start(1.0)
        assert wait_until(lambda: loop.stats.ticks > 5, 10)
        policy = realtime.thread_policy(loop._thread.native_id)
        summary = s.wait()
    assert policy == ("normal", 0) and summary["scheduling"] == "normal"
