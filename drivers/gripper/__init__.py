"""Handheld (UMI-style) gripper: wire protocol, clock sync and the host driver."""

from drivers.gripper.clock import ClockFit, ClockSync
from drivers.gripper.driver import (
    GripperConfig,
    GripperError,
    GripperInfo,
    GripperSample,
    GripperStats,
    HandheldGripper,
    ImuReading,
)
from drivers.gripper.protocol import LedMode, ProtocolError, ProtocolVersionError

__all__ = [
    "ClockFit",
    "ClockSync",
    "GripperConfig",
    "GripperError",
    "GripperInfo",
    "GripperSample",
    "GripperStats",
    "HandheldGripper",
    "ImuReading",
    "LedMode",
    "ProtocolError",
    "ProtocolVersionError",
]
