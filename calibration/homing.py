"""Homing Offset arithmetic that never overflows the register.

An X-series servo reports ``sign * physical + homing_offset`` (sign -1 with Drive Mode bit 0).
The register takes only ±1,044,479 (255 turns); a multi-turn servo that has spun far, or an offset
left by another tool, can ask for more. Whole turns that do not fit stay out of the register and
are carried by the calibration file's zero instead, so no value is ever truncated.
"""

from __future__ import annotations

from dataclasses import dataclass

HOMING_LIMIT = 1_044_479
TICKS_PER_TURN = 4096
POSITION_WINDOW = (0, 4095)  # goal positions a servo takes in position mode
EXTENDED_WINDOW = (-1_048_575, 1_048_575)  # ... in extended position (multi-turn) mode
WINDOW_MARGIN = 40  # ticks (~3.5 deg) kept clear of a window's edge


def fit_homing_offset(wanted: int) -> tuple[int, int]:
    """(register value, leftover): ``register + leftover == wanted``, the register in range.

    The leftover is a whole number of turns: it moves readings by full turns only, which the
    calibration's zero absorbs.
    """
    wanted = int(wanted)
    if -HOMING_LIMIT <= wanted <= HOMING_LIMIT:
        return wanted, 0
    fitted = wanted - TICKS_PER_TURN * round(wanted / TICKS_PER_TURN)  # within half a turn of 0
    return fitted, wanted - fitted


def window_for(operating_mode: int) -> tuple[int, int]:
    return EXTENDED_WINDOW if operating_mode == 4 else POSITION_WINDOW


def needs_recentre(lo: float, hi: float, operating_mode: int, margin: int = WINDOW_MARGIN) -> bool:
    """Whether readings ``lo..hi`` leave the goal window of the servo's mode (goals there are refused)."""
    a, b = window_for(operating_mode)
    return lo < a + margin or hi > b - margin


@dataclass(frozen=True)
class HomingChange:
    """A new Homing Offset for one servo, and how far its readings move because of it."""

    id: int
    old: int
    new: int
    leftover: int  # whole turns that did not fit the register

    @property
    def shift(self) -> int:
        """Readings after the change minus readings before (same shaft position)."""
        return self.new - self.old


def recentre(servo_id: int, old_offset: int, mid_reading: float, target: int = 2048) -> HomingChange:
    """The offset that brings ``mid_reading`` (a reading under ``old_offset``) to ``target``."""
    wanted = int(old_offset) + int(round(target - mid_reading))
    new, leftover = fit_homing_offset(wanted)
    return HomingChange(servo_id, int(old_offset), new, leftover)


def follow(change: HomingChange, servo_id: int, old_offset: int) -> HomingChange:
    """The same reading shift for a shadow servo, so it keeps answering its primary's angle."""
    new, leftover = fit_homing_offset(int(old_offset) + change.shift)
    if leftover:
        from calibration.arm import CalibrationError
        raise CalibrationError(
            f"servo {servo_id} (shadow of servo {change.id}): its Homing Offset {old_offset} cannot move by "
            f"{change.shift} within ±{HOMING_LIMIT}; reset it to 0 (torque off, register 20) and calibrate again")
    return HomingChange(servo_id, int(old_offset), new, 0)
