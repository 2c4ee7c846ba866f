"""Cameras: one interface (``Camera``) over UVC/OpenCV, RealSense, the simulated world and a test pattern.

Importing this package loads neither OpenCV nor pyrealsense2; ``open_camera`` imports the backend
a config table asks for.
"""

from drivers.cameras.base import (
    Camera,
    CameraDisconnected,
    CameraFault,
    CameraFrozen,
    CameraStats,
    FrameQueue,
)
from drivers.cameras.factory import KINDS, CameraSpec, open_camera
from drivers.cameras.frame import Frame

__all__ = [
    "KINDS",
    "Camera",
    "CameraDisconnected",
    "CameraFault",
    "CameraFrozen",
    "CameraSpec",
    "CameraStats",
    "Frame",
    "FrameQueue",
    "open_camera",
]
