"""Real-time scheduling for the control loop's threads.

The loop thread and the bus workers it waits on ask the kernel for SCHED_FIFO at a configured
priority, so a busy laptop (a browser, the simulated world's renderer, quick-train, video
compaction) cannot push a tick past its deadline. Everything else (renderers, encoders, the
recorder's writer, the trainer, the UI) keeps normal scheduling: the request is made per thread,
with SCHED_RESET_ON_FORK so threads and processes started later from a real-time thread do not
inherit it.

Why this cannot starve the machine: a loop thread sleeps between ticks and spins at most
``rig.loop``'s bounded spin (under half a millisecond) before a deadline; bus workers block in
select(); the kernel's RT throttling (sched_rt_runtime_us, 95 % by default) keeps a share for
everyone else; and :class:`RunawayGuard` drops a thread back to normal scheduling if it ever
keeps a core busy for most of a second.

Where real-time scheduling is not allowed (no CAP_SYS_NICE, RLIMIT_RTPRIO too low), the thread
takes the highest priority nice level RLIMIT_NICE lets it have, and says once, in one line, what
it got and how to allow more — the limits.conf line that audio software documents.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from dataclasses import dataclass

DEFAULT_PRIORITY = 20  # under the kernel's threaded IRQ handlers (50) and audio servers' usual 70-88
MAX_PRIORITY = 98  # 99 is the kernel's own watchdog territory
CAP_SYS_NICE = 23
LIMITS_HINT = ("to allow it, add `@rig - rtprio 50` and `@rig - nice -10` to /etc/security/limits.d/rig.conf, "
               "add yourself to the group (`sudo groupadd -f rig && sudo usermod -aG rig $USER`), and log in again")

Setting = str | int  # "auto", "off", or a SCHED_FIFO priority 1..98


class RealtimeSettingError(ValueError):
    pass


def parse_setting(value: object) -> Setting:
    """The config's `[loop] realtime`: "auto" (the default priority when allowed), "off", or a priority."""
    if isinstance(value, bool):
        raise RealtimeSettingError('must be "auto", "off" or a priority from 1 to 98')
    if isinstance(value, int):
        if not 1 <= value <= MAX_PRIORITY:
            raise RealtimeSettingError(f'priority {value} is out of range: use "auto", "off" or 1 to {MAX_PRIORITY}')
        return value
    if value in ("auto", "off"):
        return str(value)
    raise RealtimeSettingError(f'{value!r} is not "auto", "off" or a priority from 1 to {MAX_PRIORITY}')


@dataclass(frozen=True)
class Scheduling:
    """What one thread got."""

    policy: str  # "fifo", "nice" or "normal"
    priority: int | None = None  # SCHED_FIFO priority
    nice: int | None = None
    wanted: Setting = "auto"
    reason: str = ""  # why it is not real-time, when it is not

    @property
    def realtime(self) -> bool:
        return self.policy == "fifo"

    def label(self) -> str:
        if self.policy == "fifo":
            return f"SCHED_FIFO {self.priority}"
        if self.policy == "nice":
            return f"normal, nice {self.nice}"
        return "normal" if self.wanted == "off" else "normal (real-time not allowed)"

    def note(self) -> str | None:
        """The one line a person should read, or None when they got what they asked for."""
        if self.realtime or self.wanted == "off":
            return None
        got = f"nice {self.nice}" if self.policy == "nice" else "normal priority"
        return f"the control loop runs at {got}, not real-time ({self.reason}); {LIMITS_HINT}"


def _has_cap_sys_nice() -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_NICE & 1)
    except OSError:
        pass
    return False


def rt_limit() -> int:
    """The highest SCHED_FIFO priority this process may take: 99 with CAP_SYS_NICE, else RLIMIT_RTPRIO."""
    if _has_cap_sys_nice():
        return 99
    soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
    return 99 if soft == resource.RLIM_INFINITY else int(soft)


def best_nice() -> int:
    """The lowest (highest priority) nice value this process may set: 20 - RLIMIT_NICE, or -20 with
    CAP_SYS_NICE; never above the present one."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if _has_cap_sys_nice():
        return -20
    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    if soft == resource.RLIM_INFINITY:
        return -20
    return min(current, max(-20, 20 - int(soft)))


def _wanted_priority(setting: Setting) -> int | None:
    if setting == "off":
        return None
    return DEFAULT_PRIORITY if setting == "auto" else int(setting)


def request(setting: Setting = "auto", *, inherit: bool = False) -> Scheduling:
    """Ask for real-time scheduling for the calling thread (only it); fall back to the best nice level.

    ``inherit``: threads and processes it starts later get the same class (the simulated world's
    servo threads, which stand in for hardware that has its own CPU); by default they do not."""
    prio = _wanted_priority(setting)
    if prio is None:
        return Scheduling("normal", wanted=setting)
    if not hasattr(os, "sched_setscheduler"):
        return Scheduling("normal", wanted=setting, reason=f"{sys.platform} has no SCHED_FIFO")
    try:
        # pid 0 is the calling thread; RESET_ON_FORK keeps threads and processes it starts normal
        flags = 0 if inherit else os.SCHED_RESET_ON_FORK
        os.sched_setscheduler(0, os.SCHED_FIFO | flags, os.sched_param(prio))
        return Scheduling("fifo", priority=prio, wanted=setting)
    except PermissionError:
        limit = rt_limit()
        reason = (f"RLIMIT_RTPRIO is {limit} and the process lacks CAP_SYS_NICE" if limit < prio
                  else "the kernel refused SCHED_FIFO")
    except OSError as exc:  # e.g. a container whose cgroup has no real-time budget
        reason = f"the kernel refused SCHED_FIFO: {exc.strerror}"
    tid = threading.get_native_id()
    target = best_nice()
    try:
        if target < os.getpriority(os.PRIO_PROCESS, tid):
            os.setpriority(os.PRIO_PROCESS, tid, target)  # on Linux a thread id sets that thread only
    except OSError:
        pass
    nice = os.getpriority(os.PRIO_PROCESS, tid)
    return Scheduling("nice" if nice < 0 else "normal", nice=nice if nice < 0 else None, wanted=setting,
                      reason=reason)


def demote() -> None:
    """Back to normal scheduling for the calling thread."""
    if hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass


_said = threading.Lock()
_said_once: set[str] = set()


def say_once(s: Scheduling, write=None) -> None:
    """Print the fallback line once per process, however many threads fell back."""
    line = s.note()
    if line is None:
        return
    with _said:
        if line in _said_once:
            return
        _said_once.add(line)
    (write or (lambda t: print(f"rig: {t}", file=sys.stderr)))(line)


class RunawayGuard:
    """Drops a real-time thread back to normal if it kept its core busy for most of a second.

    A loop that sleeps between ticks uses a few percent of a core; only a bug (a tick that never
    returns to sleep) could spin, and this keeps such a bug from freezing the machine. Checked
    once a second from the thread itself: two clock reads, no allocation.
    """

    def __init__(self, limit: float = 0.8, every_s: float = 1.0):
        self.limit = limit
        self.every_ns = int(every_s * 1e9)
        self.tripped = False
        self._wall = time.monotonic_ns()
        self._cpu = time.thread_time_ns()

    def check(self) -> bool:
        now = time.monotonic_ns()
        if now - self._wall < self.every_ns:
            return False
        cpu = time.thread_time_ns()
        busy = (cpu - self._cpu) / (now - self._wall)
        self._wall, self._cpu = now, cpu
        if busy > self.limit and not self.tripped:
            demote()
            self.tripped = True
            return True
        return False


def availability(setting: Setting = "auto") -> tuple[bool, str]:
    """For `rig doctor`: can the loop get what the config asks for, and how to allow it if not."""
    prio = _wanted_priority(setting)
    if prio is None:
        return True, 'real-time scheduling is off in the config ([loop] realtime = "off")'
    if not hasattr(os, "sched_setscheduler"):
        return False, f"{sys.platform} has no SCHED_FIFO; the loop runs at normal priority"
    limit = rt_limit()
    how = "CAP_SYS_NICE" if _has_cap_sys_nice() else f"RLIMIT_RTPRIO {limit}"
    if limit >= prio:
        return True, f"real-time scheduling available: the loop will run SCHED_FIFO {prio} ({how})"
    nice = best_nice()
    got = f"nice {nice}" if nice < 0 else "normal priority"
    return False, (f"real-time scheduling NOT available (RLIMIT_RTPRIO {limit} < priority {prio}, no CAP_SYS_NICE): "
                   f"the loop will run at {got}; {LIMITS_HINT}")


def thread_policy(tid: int | None = None) -> tuple[str, int]:
    """The scheduling class and priority of a thread (by native id), read back from the kernel."""
    tid = tid or threading.get_native_id()
    pol = os.sched_getscheduler(tid) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)
    names = {os.SCHED_OTHER: "normal", os.SCHED_FIFO: "fifo", os.SCHED_RR: "rr"}
    return names.get(pol, str(pol)), os.sched_getparam(tid).sched_priority
