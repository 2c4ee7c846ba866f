"""The teleop loop: read every arm, mirror leaders onto followers, hand a record on. 50 Hz.

Rules of the tick: no disk, no UI, no log formatting, no large allocation. Tick k is due at
t0 + k·period (absolute deadlines, no drift); a late tick is counted as an overrun and missed
deadlines are skipped rather than bunched. Buses are read in parallel, one thread each.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from drivers.dynamixel.errors import DynamixelError, HardwareAlert, PortLost
from drivers.errors import RigError
from rig.arms import Arm, Follower, Leader
from rig.config import RigConfig
from rig.ticks import TickRecord, TickSink

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


class BusWorker:
    """Owns one arm's bus on its own thread, so separate buses are read at the same time."""

    def __init__(self, arm: Arm):
        self.arm = arm
        self.error: RigError | None = None
        self.crashed = False
        self._go = threading.Event()
        self._done = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"bus-{arm.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._go.wait()
            self._go.clear()
            if self._stop:
                return
            try:
                self.arm.read()
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
    max_period_error_ns: int = 0
    bus_errors: dict[str, int] = field(default_factory=dict)
    glitches: dict[str, int] = field(default_factory=dict)  # implausible leader readings held
    dropped_records: int = 0
    started_ns: int = 0
    _err: np.ndarray = field(default=None, repr=False)
    _cpu: np.ndarray = field(default=None, repr=False)

    def __post_init__(self):
        n = max(1, int(self.rate_hz * 60))
        self._err = np.zeros(n, dtype=np.int64)
        self._cpu = np.zeros(n, dtype=np.int64)

    def add(self, period_error_ns: int, cpu_ns: int) -> None:
        i = self.ticks % len(self._err)
        self._err[i] = period_error_ns
        self._cpu[i] = cpu_ns
        self.ticks += 1
        if period_error_ns > self.max_period_error_ns:
            self.max_period_error_ns = period_error_ns

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
            "bus_errors": dict(self.bus_errors),
            "glitches": dict(self.glitches),
            "tick_cpu_ms": {"p50": pct(cpu, 50), "p99": pct(cpu, 99)},
            "dropped_records": self.dropped_records,
            "duration_s": elapsed,
        }


@dataclass(frozen=True)
class Pair:
    leader: Leader
    follower: Follower
    sl: slice  # this pair's span in the rig-wide vectors
    bits: int  # the leader's and the follower's bits in a tick's missed-read mask


class Teleop:
    """Mirrors each leader onto its follower. Build with opened arms; call run() or run_for()."""

    def __init__(self, config: RigConfig, leaders: list[Leader], followers: list[Follower],
                 sink: TickSink | None = None):
        self.config = config
        self.safety = config.safety
        self.period_ns = int(round(1e9 / config.rate_hz))
        self.leaders, self.followers = leaders, followers
        by_name = {a.name: a for a in leaders}
        pairs, start = [], 0
        for i, f in enumerate(followers):
            n = f.cfg.n_values
            lead = by_name[f.cfg.leader]
            bits = 1 << leaders.index(lead) | 1 << (len(leaders) + i)
            pairs.append(Pair(lead, f, slice(start, start + n), bits))
            start += n
        self.pairs = pairs
        self.n = start
        self.sink = sink
        self.workers = [BusWorker(a) for a in (*leaders, *followers)]
        self.stats = LoopStats(config.rate_hz)
        self.stop_event = threading.Event()
        self.fault: TeleopFault | None = None
        self.engage_s = max(self.safety.engage_seconds, 0.0)
        # Preallocated rig-wide vectors.
        self.leader_q = np.zeros(self.n)
        self.follower_q = np.zeros(self.n)
        self.follower_dq = np.zeros(self.n)
        self.follower_current = np.zeros(self.n)
        self.target = np.zeros(self.n)
        self.start_pose = np.zeros(self.n)
        self.lower = np.concatenate([p.follower.lower for p in pairs]) if pairs else np.zeros(0)
        self.upper = np.concatenate([p.follower.upper for p in pairs]) if pairs else np.zeros(0)
        step = []
        for p in pairs:
            step += [self.safety.max_step_rad] * p.follower.n_joints
            if p.follower.cfg.gripper is not None:
                step.append(self.safety.max_gripper_step)
        self.max_step = np.array(step)
        self._scratch = np.zeros(self.n)
        self._suspect = np.full(self.n, np.inf)
        self._leader_bits = sum(1 << i for i in range(len(leaders)))
        self.t0_ns = 0
        self._engage_from_ns = 0
        self._replay: np.ndarray | None = None
        self.replay_tick = 0
        self.engaged = False

    # ---- setup and teardown ------------------------------------------------------------------

    def prepare(self) -> None:
        for a in self.leaders:
            a.prepare()
        for f in self.followers:
            f.prepare()
        self._read_all()
        for p in self.pairs:
            self.start_pose[p.sl] = p.follower.q
            self.leader_q[p.sl] = p.leader.q  # the glitch guard compares each reading with the last
        self.target[:] = np.clip(self.start_pose, self.lower, self.upper)

    def shutdown(self) -> dict[str, str]:
        """Followers stop and go limp (or hold, if configured); leaders are left limp."""
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
                self._count_miss(w)
                if w.crashed:
                    self.fault = TeleopFault(str(w.error))
            else:
                w.arm.consecutive_misses = 0
        return missed

    def _count_miss(self, w: BusWorker) -> None:
        arm = w.arm
        arm.misses += 1
        arm.consecutive_misses += 1
        self.stats.bus_errors[arm.name] = self.stats.bus_errors.get(arm.name, 0) + 1
        err = w.error
        if isinstance(err, PortLost):
            self.fault = TeleopFault(f"arm {arm.name}: {err}")
        elif arm.consecutive_misses >= self.safety.missed_reads_to_stop:
            self.fault = TeleopFault(
                f"arm {arm.name}: {arm.consecutive_misses} reads in a row failed; stopped safely. Last error: "
                f"{err or 'no reply within the tick'}")

    def _glitch(self, p: Pair) -> bool:
        """A leader reading that jumps further in one tick than a hand can move, once, is a glitch
        (a late or mangled reply): hold the pair. The same jump on the next read is real."""
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
        for f in self.followers:
            if f.tripped:
                self.fault = TeleopFault(
                    f"arm {f.name}: servo(s) {', '.join(map(str, f.tripped))} stopped on their bus watchdog: no "
                    f"instruction reached them for {f.watchdog_ms:g} ms (the machine stalled?). Restart; if it "
                    "repeats, raise [safety] watchdog_ms")
                return
        for f in (*self.followers, *self.leaders):
            if f.bus is not None and f.bus.alerts:
                sid = next(iter(f.bus.alerts))
                try:
                    bits = f.bus.hardware_error(sid)
                except DynamixelError:
                    bits = 0
                alert = HardwareAlert(bits, port=f.bus.port_name, servo_id=sid)
                self.fault = TeleopFault(f"arm {f.name}: {alert}")
                return

    def tick(self, k: int, deadline_ns: int) -> None:
        t_start = time.monotonic_ns()
        cpu0 = time.thread_time_ns()
        missed = self._read_all()
        elapsed_s = (t_start - self._engage_from_ns) / 1e9
        alpha = 1.0 if self.engage_s <= 0 else min(1.0, elapsed_s / self.engage_s)
        blend = alpha * alpha * (3 - 2 * alpha)  # smoothstep: no jerk at either end
        for p in self.pairs:
            if not missed & p.bits and self._glitch(p):
                missed |= p.bits & self._leader_bits
            if missed & p.bits:
                continue  # this pair's last values stand
            sl = p.sl
            self.leader_q[sl] = p.leader.q
            self.follower_q[sl] = p.follower.q
            self.follower_dq[sl] = p.follower.dq
            self.follower_current[sl] = p.follower.current
        # Target: the leader pose (or the replayed action), blended in from the start pose while
        # engaging, then clamped to the joint limits and to the largest step per tick.
        source = self.leader_q
        replay = self._replay
        if replay is not None:
            i = self.replay_tick
            if i < len(replay):
                source = replay[i]
                self.replay_tick = i + 1
            else:
                self._replay = None
                self.reengage()
        want = self._scratch
        np.subtract(source, self.start_pose, out=want)
        want *= blend
        want += self.start_pose
        np.clip(want, self.lower, self.upper, out=want)
        want -= self.target
        np.clip(want, -self.max_step, self.max_step, out=want)
        self.target += want
        for p in self.pairs:
            if missed & p.bits:
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
                action=self.target.astype(np.float32), missed=missed, engage=alpha))
        self.stats.add(t_start - deadline_ns, time.thread_time_ns() - cpu0)

    def _poll_health(self, k: int) -> None:
        """Once a second, one arm (round robin) reads its torque, voltage and temperature."""
        per = max(1, int(self.config.rate_hz))
        if k % per:
            return
        arms = self.followers + self.leaders
        if arms:
            arms[(k // per) % len(arms)].read_health()

    # ---- modes ---------------------------------------------------------------------------------

    def reengage(self) -> None:
        """Blend from where the followers are now to the leaders over engage_seconds."""
        self.start_pose[:] = self.target
        self._engage_from_ns = time.monotonic_ns()

    def replay(self, actions: np.ndarray) -> None:
        """Drive the followers through recorded actions (T, n), one row per tick, then re-engage
        on the leaders. The same limits and step clamps apply; called from any thread."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != self.n:
            raise RigError(f"replay needs actions of shape (T, {self.n}); got {actions.shape}")
        self.start_pose[:] = self.target
        self._engage_from_ns = time.monotonic_ns()
        self.replay_tick = 0
        self._replay = actions

    @property
    def replaying(self) -> bool:
        return self._replay is not None

    def run(self, duration_s: float | None = None) -> dict:
        """Run until stop(), a fault, or ``duration_s``; returns the stats summary."""
        for f in self.followers:  # from here the loop drives them: they stop on their own if it dies
            f.arm_watchdog(self.safety.watchdog_ms)
        for a in (*self.leaders, *self.followers):
            a.go_hot()
        self.t0_ns = time.monotonic_ns()
        self._engage_from_ns = self.t0_ns
        self.stats.started_ns = self.t0_ns
        end_ns = None if duration_s is None else self.t0_ns + int(duration_s * 1e9)
        k = 0
        while not self.stop_event.is_set() and self.fault is None:
            deadline = self.t0_ns + k * self.period_ns
            if end_ns is not None and deadline >= end_ns:
                break
            sleep_until(deadline)
            self.tick(k, deadline)
            now = time.monotonic_ns()
            next_k = k + 1
            if now > self.t0_ns + next_k * self.period_ns:
                self.stats.overruns += 1
                behind = (now - self.t0_ns) // self.period_ns + 1
                self.stats.skipped += int(behind - next_k)
                next_k = int(behind)  # skip missed deadlines instead of bunching ticks
            k = next_k
        if self.sink is not None and hasattr(self.sink, "dropped"):
            self.stats.dropped_records = self.sink.dropped
        return self.stats.summary()

    def stop(self) -> None:
        self.stop_event.set()
