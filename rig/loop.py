"""The control loop: read every arm, move the followers towards the command source's targets,
hand a record on. One per rig; every tick happens in :meth:`ControlLoop.tick`.

The source (rig/sources.py: the leaders, a recorded take, a policy) only proposes targets; all
else is shared: parallel bus reads (one BusWorker thread per arm), the glitch guard on leader
readings, the engage blend after every switch of source, joint limits, the per-tick step clamp,
servo alert checks, stats and tick records. The source can be switched from any thread
(:meth:`ControlLoop.use`); while a policy drives, moving a leader away takes over (the leaders
drive at once, and the ticks are flagged "takeover").

A source that cannot drive (a policy that raised, a camera it needs with no frames) says why
in ``source.failure``: the followers hold where their targets are, the loop goes on ticking, and
the reason is in ``source_failure`` (and the stats) for the app and the CLI.

Rules of the tick: no disk, no UI, no log formatting, no large allocation. Tick k is due at
t0 + k·period (absolute deadlines, no drift); a late tick is counted as an overrun and missed
deadlines are skipped rather than bunched.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from drivers.dynamixel.errors import DynamixelError, PortLost
from drivers.errors import RigError
from rig import realtime
from rig.arms import Arm, Follower
from rig.config import RigConfig
from rig.shaping import shape_target, step_limits
from rig.sources import CommandSource, Hold, Leaders, Replay
from rig.ticks import SOURCE_CODES, TickRecord, TickSink

_SPIN_NS = 400_000
_WEDGED_S = 2.0  # sleep until this close to the deadline, then spin: keeps p99 period error < 1 ms


class TeleopFault(RigError):
    """The loop stopped to keep the followers safe; the message says what failed and what to do."""


def sleep_until(deadline_ns: int) -> None:
    remaining = deadline_ns - time.monotonic_ns()
    if remaining > _SPIN_NS:
        time.sleep((remaining - _SPIN_NS) / 1e9)
    while time.monotonic_ns() < deadline_ns:
        pass


def retry_setup(fn: Callable[[], None], tries: int = 5, pause_s: float = 1.0) -> None:
    """Setup is not time-critical: ride out a machine busy enough to drop a reply (a port that
    is gone fails at once)."""
    for i in range(tries):
        try:
            return fn()
        except PortLost:
            raise
        except DynamixelError:
            if i == tries - 1:
                raise
            time.sleep(pause_s)


class BusWorker:
    """Owns one arm's reads on its own thread, so separate buses are read at the same time."""

    def __init__(self, arm: Arm, realtime_setting: realtime.Setting = "off"):
        self.arm = arm
        self.realtime_setting = realtime_setting
        self.scheduling: realtime.Scheduling | None = None
        self.error: RigError | None = None
        self.crashed = False
        self._go = threading.Event()
        self._done = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._thread_main, name=f"bus-{arm.name}", daemon=True)
        self._thread.start()

    def _thread_main(self) -> None:
        """The bus thread's body: everything it runs starts here."""
        self.scheduling = realtime.request(self.realtime_setting)  # the loop waits on this thread
        while True:
            self._go.wait()
            self._go.clear()
            if self._stop:
                return
            try:
                self.arm.read()  # the arm counts its reads and misses
                self.error = None
            except RigError as exc:  # a bus failure, or a handheld gripper that stopped streaming
                self.error = exc
            except Exception as exc:  # a bug must stop the loop with its message, not hang it
                self.error = RigError(f"arm {self.arm.name}: unexpected {type(exc).__name__}: {exc}")
                self.crashed = True
            self._done.set()

    def start_read(self) -> None:
        self._done.clear()
        self._go.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    def stop(self) -> None:
        self._stop = True
        self._go.set()
        self._thread.join(timeout=1)


@dataclass
class LoopStats:
    """Live figures of the loop; the ring holds the last minute of period errors."""

    rate_hz: float
    ticks: int = 0
    overruns: int = 0
    skipped: int = 0
    late: int = 0  # ticks that started more than 10 % of a period late
    max_period_error_ns: int = 0
    bus_errors: dict[str, int] = field(default_factory=dict)
    glitches: dict[str, int] = field(default_factory=dict)  # implausible leader readings held
    dropped_records: int = 0
    takeovers: int = 0  # times an operator took over from a policy by moving a leader
    takeover_tick: int | None = None  # the tick of the last takeover
    source: str = "leaders"  # who drives now
    source_failure: str | None = None  # why the source driving now cannot (a policy that failed: the followers hold)
    scheduling: str = "normal"  # what the loop thread got from the kernel (rig/realtime.py)
    started_ns: int = 0
    _err: np.ndarray = field(default=None, repr=False)
    _cpu: np.ndarray = field(default=None, repr=False)

    def __post_init__(self):
        n = max(1, int(self.rate_hz * 60))
        self._err = np.zeros(n, dtype=np.int64)
        self._cpu = np.zeros(n, dtype=np.int64)
        self._late_ns = int(1e9 / self.rate_hz / 10)

    def add(self, period_error_ns: int, cpu_ns: int) -> None:
        i = self.ticks % len(self._err)
        self._err[i] = period_error_ns
        self._cpu[i] = cpu_ns
        self.ticks += 1
        if period_error_ns > self._late_ns:
            self.late += 1
        if period_error_ns > self.max_period_error_ns:
            self.max_period_error_ns = period_error_ns

    def period_errors_ns(self) -> np.ndarray:
        """The period errors held in the ring (the last minute), a copy."""
        return self._err[:min(self.ticks, len(self._err))].copy()

    def summary(self, now_ns: int | None = None) -> dict:
        n = min(self.ticks, len(self._err))
        err = self._err[:n] / 1e6
        cpu = self._cpu[:n] / 1e6
        now_ns = now_ns or time.monotonic_ns()
        elapsed = (now_ns - self.started_ns) / 1e9 if self.started_ns else 0.0

        def pct(a: np.ndarray, q: float) -> float:
            return float(np.percentile(a, q)) if len(a) else 0.0
        return {
            "target_rate_hz": self.rate_hz,
            "achieved_rate_hz": self.ticks / elapsed if elapsed > 0 else 0.0,
            "ticks": self.ticks,
            "period_error_ms": {"p50": pct(err, 50), "p99": pct(err, 99), "max": self.max_period_error_ns / 1e6},
            "overruns": self.overruns,
            "skipped_ticks": self.skipped,
            "late_ticks": self.late,
            "bus_errors": dict(self.bus_errors),
            "glitches": dict(self.glitches),
            "tick_cpu_ms": {"p50": pct(cpu, 50), "p99": pct(cpu, 99)},
            "dropped_records": self.dropped_records,
            "source": self.source,
            "source_failure": self.source_failure,
            "takeovers": self.takeovers,
            "takeover_tick": self.takeover_tick,
            "scheduling": self.scheduling,
            "duration_s": elapsed,
        }


@dataclass(frozen=True)
class Pair:
    leader: Arm | None  # None: a follower driven only by replays and policies
    follower: Follower
    sl: slice  # this pair's span in the rig-wide vectors
    bits: int  # the leader's and the follower's bits in a tick's missed-read mask
    fbit: int  # the follower's bit alone


class ControlLoop:
    """Drives the followers from a command source (default: their leaders). Build with opened
    arms, call prepare(), then start() (its own thread) or run()."""

    def __init__(self, config: RigConfig, leaders: list[Arm], followers: list[Follower],
                 sink: TickSink | None = None, source: CommandSource | None = None):
        self.config = config
        self.safety = config.safety
        self.period_ns = int(round(1e9 / config.rate_hz))
        self.leaders, self.followers = leaders, followers
        by_name = {a.name: a for a in leaders}
        pairs, start = [], 0
        for i, f in enumerate(followers):
            n = f.cfg.n_values
            lead = by_name.get(f.cfg.leader)
            fbit = 1 << (len(leaders) + i)
            bits = fbit | (1 << leaders.index(lead) if lead is not None else 0)
            pairs.append(Pair(lead, f, slice(start, start + n), bits, fbit))
            start += n
        self.pairs = pairs
        self.n = start
        self.sink = sink
        self.workers = [BusWorker(a, config.loop.realtime) for a in (*leaders, *followers)]
        self.stats = LoopStats(config.rate_hz)
        self.stop_event = threading.Event()
        self.fault: TeleopFault | None = None
        self.error: BaseException | None = None  # a crash of the loop thread (a bug)
        self.result: dict | None = None
        self._thread: threading.Thread | None = None
        # Preallocated rig-wide vectors.
        self.leader_q = np.zeros(self.n)
        self.follower_q = np.zeros(self.n)
        self.follower_dq = np.zeros(self.n)
        self.follower_current = np.zeros(self.n)
        self.target = np.zeros(self.n)
        self.start_pose = np.zeros(self.n)
        self.lower = np.concatenate([p.follower.lower for p in pairs]) if pairs else np.zeros(0)
        self.upper = np.concatenate([p.follower.upper for p in pairs]) if pairs else np.zeros(0)
        self.max_step = (np.concatenate([step_limits(p.follower.cfg, self.safety) for p in pairs]) if pairs
                         else np.zeros(0))
        self._scratch = np.zeros(self.n)
        self._moved = np.zeros(self.n)
        self._suspect = np.full(self.n, np.inf)
        self._leader_bits = sum(1 << i for i in range(len(leaders)))
        self._has_leaders = any(p.leader is not None for p in pairs)
        self.t0_ns = 0
        # The command source, and the blend from the targets at its switch.
        self.source: CommandSource = self._fallback()
        self._pending: tuple[CommandSource, float | None] | None = None
        self._source_code = SOURCE_CODES[self.source.name]
        self.engage_s = max(self.safety.engage_seconds, 0.0)
        self._engage_s = self.engage_s
        self._engage_from_ns = 0
        self._engage_at_start = True  # the first run blends in from the followers' pose
        self.engaged = False
        self._takeover_ref: np.ndarray | None = None  # the leaders' pose when a policy began
        if source is not None:
            self.use(source)

    # ---- setup and teardown ------------------------------------------------------------------

    def prepare(self) -> None:
        """Leaders limp, followers torque on where they are, then read everything (sync)."""
        for a in self.leaders:
            retry_setup(a.prepare)
        for f in self.followers:
            retry_setup(f.prepare)
        self.sync()

    def sync(self, tries: int = 40) -> None:
        """Read every arm (retrying misses) and start from where the followers are: a missed read
        here would leave zeros as a pose, and the first command would swing the arm there."""
        pending = list(self.workers)
        for _ in range(tries):
            for w in pending:
                w.start_read()
            pending = [w for w in pending if not w.wait(_WEDGED_S) or w.error is not None]
            if not pending:
                break
            time.sleep(0.05)
        if pending:
            w = pending[0]
            raise TeleopFault(f"arm {w.arm.name}: no reading in {tries} tries ({w.error or 'no reply'}); "
                              "check its cable and power, then restart")
        for p in self.pairs:
            self.start_pose[p.sl] = p.follower.q
            self.follower_q[p.sl] = p.follower.q
            self.follower_dq[p.sl] = p.follower.dq
            self.follower_current[p.sl] = p.follower.current
            if p.leader is not None:
                self.leader_q[p.sl] = p.leader.q  # the glitch guard compares each reading with the last
        self._suspect[:] = np.inf
        self.target[:] = np.clip(self.start_pose, self.lower, self.upper)
        self.start_pose[:] = self.target
        self._engage_at_start = True

    def shutdown(self) -> dict[str, str]:
        """Followers stop and go limp (or hold, if configured); leaders are left limp."""
        self.stop()
        self.join(timeout=2 * _WEDGED_S + 1)  # no tick may use a bus while the followers are made safe
        self.source.end()
        pending = self._pending
        if pending is not None:
            pending[0].end()
        for w in self.workers:
            w.stop()
        for a in (*self.leaders, *self.followers):
            a.go_cold()
        hold = self.safety.on_exit == "hold"
        report = {f.name: f.make_safe(hold) for f in self.followers}
        for a in self.leaders:
            with contextlib.suppress(DynamixelError):
                a.torque_off()
        return report

    # ---- command sources -----------------------------------------------------------------------

    def use(self, source: CommandSource, engage_s: float | None = None) -> None:
        """Switch the command source at the next tick, blending from the targets then over
        ``engage_s`` (default: the safety config's engage_seconds). Any thread may call it."""
        source.attach(self)  # a source that does not fit is refused here, not in a tick
        self._pending = (source, engage_s)

    def replay(self, actions: np.ndarray) -> None:
        """Drive the followers through recorded actions (T, n), one row per tick, then re-engage
        on the leaders. The same limits and step clamps apply; called from any thread."""
        self.use(Replay(actions))

    def reengage(self) -> None:
        """Blend from where the followers are now to the leaders over engage_seconds."""
        self.use(self._fallback())

    @property
    def source_failure(self) -> str | None:
        """Why the source driving now cannot (one line), e.g. a policy that raised: the followers
        hold, the loop goes on."""
        return self.source.failure

    @property
    def replaying(self) -> bool:
        pending = self._pending
        return isinstance(pending[0] if pending is not None else self.source, Replay)

    @property
    def replay_tick(self) -> int:
        src = self.source
        return src.i if isinstance(src, Replay) else 0

    def _fallback(self) -> CommandSource:
        """Who drives when a source ends: the leaders, else nobody (the targets hold)."""
        return Leaders() if self._has_leaders else Hold()

    def _switch(self, source: CommandSource, engage_s: float | None, k: int, now_ns: int) -> None:
        if source is not self.source:
            self.source.end()  # e.g. a policy's worker thread stops
        self.source = source
        self._source_code = SOURCE_CODES[source.name]
        self.stats.source = source.name
        self._engage_s = self.engage_s if engage_s is None else max(engage_s, 0.0)
        self.start_pose[:] = self.target
        self._engage_from_ns = now_ns
        # A policy can be taken over by moving a leader away from where it is now.
        self._takeover_ref = (self.leader_q.copy() if source.name == "policy" and self._has_leaders
                              and self.safety.takeover_rad > 0 else None)
        source.begin(self, k)

    def _taken_over(self) -> bool:
        moved = self._moved
        np.subtract(self.leader_q, self._takeover_ref, out=moved)
        np.abs(moved, out=moved)
        return bool(moved.max(initial=0.0) > self.safety.takeover_rad)

    # ---- the loop ----------------------------------------------------------------------------

    def _read_all(self) -> int:
        """Read every bus in parallel; returns the bitmask of arms whose read failed.

        Each bus bounds its own wait (packet timeout x tries), so a worker is never abandoned
        mid-transaction; the cap here only guards against a wedged driver.
        """
        for w in self.workers:
            w.start_read()
        missed = 0
        for i, w in enumerate(self.workers):
            if not w.wait(_WEDGED_S):
                self.fault = TeleopFault(f"arm {w.arm.name}: its bus did not return within {_WEDGED_S:g} s; "
                                         "stopped safely. Unplug and replug the adapter, then restart")
                missed |= 1 << i
            elif w.error is not None:
                missed |= 1 << i
                self._on_miss(w)
        return missed

    def _on_miss(self, w: BusWorker) -> None:
        arm, err = w.arm, w.error
        self.stats.bus_errors[arm.name] = self.stats.bus_errors.get(arm.name, 0) + 1
        if w.crashed:
            self.fault = TeleopFault(str(err))
        elif isinstance(err, PortLost):
            self.fault = TeleopFault(f"arm {arm.name}: {err}")
        elif arm.consecutive_misses >= self.safety.missed_reads_to_stop:
            self.fault = TeleopFault(
                f"arm {arm.name}: {arm.consecutive_misses} reads in a row failed; stopped safely. Last error: "
                f"{err or 'no reply within the tick'}")

    def _glitch(self, p: Pair) -> bool:
        """A leader reading that jumps further in one tick than a hand can move, once, is a glitch
        (a late or mangled reply): hold it. The same jump on the next read is real."""
        nj = p.leader.n_joints
        if not nj:
            return False
        q = p.leader.q[:nj]
        last = self.leader_q[p.sl][:nj]
        if np.abs(q - last).max() <= self.safety.max_leader_jump_rad:
            return False
        suspect = self._suspect[p.sl][:nj]  # a view: compare before it is overwritten
        repeated = np.abs(q - suspect).max() <= self.safety.max_leader_jump_rad
        suspect[:] = q
        if repeated:
            return False  # it stayed there: the arm really is at the new pose
        self.stats.glitches[p.leader.name] = self.stats.glitches.get(p.leader.name, 0) + 1
        return True

    def _check_alerts(self) -> None:
        for arm in (*self.followers, *self.leaders):
            alert = arm.alert()
            if alert is not None:
                self.fault = TeleopFault(f"arm {arm.name}: {alert}")
                return

    def tick(self, k: int, deadline_ns: int) -> None:
        """One tick: read, pick the source's target, blend, limit, clamp, command, check, record."""
        t_start = time.monotonic_ns()
        cpu0 = time.thread_time_ns()
        pending = self._pending
        if pending is not None:
            self._pending = None
            self._switch(*pending, k, t_start)
        missed = self._read_all()
        for p in self.pairs:
            sl = p.sl
            if p.leader is not None and not missed & p.bits & self._leader_bits:
                if self._glitch(p):
                    missed |= p.bits & self._leader_bits
                else:
                    self.leader_q[sl] = p.leader.q
            if not missed & p.fbit:
                self.follower_q[sl] = p.follower.q
                self.follower_dq[sl] = p.follower.dq
                self.follower_current[sl] = p.follower.current
        if self._takeover_ref is not None and self._taken_over():
            self._switch(Leaders(takeover=True), None, k, t_start)  # the operator drives, at once
            self.stats.takeovers += 1
            self.stats.takeover_tick = k
        source = self.source
        wanted = source.target(self, k)
        if wanted is None:  # the source is done (a replay's end): back to the leaders
            self._switch(self._fallback(), None, k, t_start)
            source = self.source
            wanted = source.target(self, k)
        failure = self.stats.source_failure = source.failure  # a failed policy holds; the app and CLI say why
        # Target: the source's, blended in from the targets at the switch while engaging, then
        # clamped to the joint limits and to the largest step per tick.
        elapsed_s = (t_start - self._engage_from_ns) / 1e9
        alpha = 1.0 if self._engage_s <= 0 else min(1.0, elapsed_s / self._engage_s)
        blend = alpha * alpha * (3 - 2 * alpha) if failure is None else 1.0  # smoothstep; a failed source holds
        want = self._scratch
        np.subtract(wanted, self.start_pose, out=want)
        want *= blend
        want += self.start_pose
        shape_target(want, self.target, self.lower, self.upper, self.max_step)
        hold = missed if source.uses_leaders else missed & ~self._leader_bits
        for p in self.pairs:
            if hold & p.bits:
                self.target[p.sl] -= want[p.sl]  # hold this arm's last target
                continue
            try:
                p.follower.command(self.target[p.sl])
            except DynamixelError as exc:
                self.fault = TeleopFault(f"arm {p.follower.name}: {exc}")
        self._check_alerts()
        self._poll_health(k)
        t_end = time.monotonic_ns()
        self.engaged = alpha >= 1.0
        if self.sink is not None:
            self.sink.put(TickRecord(
                tick=k, t_deadline_ns=deadline_ns, t_start_ns=t_start, t_end_ns=t_end,
                leader_q=self.leader_q.astype(np.float32), follower_q=self.follower_q.astype(np.float32),
                follower_dq=self.follower_dq.astype(np.float32),
                follower_current=self.follower_current.astype(np.float32),
                action=self.target.astype(np.float32), missed=missed, engage=alpha, source=self._source_code))
        self.stats.add(t_start - deadline_ns, time.thread_time_ns() - cpu0)

    def _poll_health(self, k: int) -> None:
        """Once a second, one arm (round robin) reads its torque, voltage and temperature."""
        per = max(1, int(self.config.rate_hz))
        if k % per:
            return
        arms = self.followers + self.leaders
        if arms:
            arms[(k // per) % len(arms)].read_health()

    # ---- running -------------------------------------------------------------------------------

    def start(self, duration_s: float | None = None, until: threading.Event | None = None) -> None:
        """Run on the loop's own thread (the caller stays free for signals and UI)."""
        self.error, self.result = None, None
        self._thread = threading.Thread(target=self._thread_main, args=(duration_s, until), name="control-loop",
                                        daemon=True)
        self._thread.start()

    def _thread_main(self, duration_s: float | None, until: threading.Event | None) -> None:
        """The loop thread's body: everything it runs starts here."""
        try:
            self.result = self.run(duration_s, until)
        except BaseException as exc:  # a crash in the loop still ends in a safe shutdown
            self.error = exc

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the loop thread; True once it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self, duration_s: float | None = None, until: threading.Event | None = None) -> dict:
        """Run until stop(), a fault, ``until`` is set, or ``duration_s``; returns the stats summary."""
        for f in self.followers:  # from here the loop drives them: they stop on their own if it dies
            f.arm_watchdog(self.safety.watchdog_ms)
        for a in (*self.leaders, *self.followers):
            a.go_hot()
        sched = realtime.request(self.config.loop.realtime)
        realtime.say_once(sched)
        self.stats.scheduling = sched.label()
        guard = realtime.RunawayGuard()
        self.t0_ns = time.monotonic_ns()
        if self._engage_at_start:  # later runs go on from where the last one left the targets
            self._engage_from_ns, self._engage_at_start = self.t0_ns, False
        self.stats.started_ns = self.t0_ns
        end_ns = None if duration_s is None else self.t0_ns + int(duration_s * 1e9)
        k = 0
        try:
            while not self.stop_event.is_set() and self.fault is None and not (until is not None and until.is_set()):
                deadline = self.t0_ns + k * self.period_ns
                if end_ns is not None and deadline >= end_ns:
                    break
                sleep_until(deadline)
                self.tick(k, deadline)
                guard.check()
                now = time.monotonic_ns()
                next_k = k + 1
                if now > self.t0_ns + next_k * self.period_ns:
                    self.stats.overruns += 1
                    behind = (now - self.t0_ns) // self.period_ns + 1
                    self.stats.skipped += int(behind - next_k)
                    next_k = int(behind)  # skip missed deadlines instead of bunching ticks
                k = next_k
        finally:
            for a in (*self.leaders, *self.followers):
                a.go_cold()
            if sched.realtime:
                realtime.demote()  # run() may be on a caller's thread that goes on with other work
        if self.sink is not None and hasattr(self.sink, "dropped"):
            self.stats.dropped_records = self.sink.dropped
        return self.stats.summary()

    def stop(self) -> None:
        self.stop_event.set()


Teleop = ControlLoop  # the name callers knew the loop by when it only mirrored leaders
