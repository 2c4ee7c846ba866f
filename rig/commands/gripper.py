"""`rig gripper`: handheld gripper monitor and host stand-in."""

from drivers.gripper.tool import register  # noqa: F401
