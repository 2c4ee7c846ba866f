"""Who is writing: this process's identity (pid, host, boot) and whether another one still lives.

Shared by the episode writer (it stamps episodes with its identity), the dataset (it asks whether
a ``recording`` episode's writer is gone) and the dataset lock (it names the holder).
"""

from __future__ import annotations

import os
import socket
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Episode directories that a writer in this process still has open (str(path) -> EpisodeWriter).
active_writers: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def software_version() -> str:
    try:
        from importlib.metadata import version

        return version("rig")
    except Exception:
        return "unknown"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def identity() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "boot_id": boot_id()}


def process_alive(who: Mapping[str, Any]) -> bool | None:
    """Whether the process ``who`` names still runs: None when it is on another host (unknowable)."""
    pid = who.get("pid")
    if not pid or who.get("host") != socket.gethostname():
        return None
    if who.get("boot_id", "") != boot_id():
        return False  # this machine rebooted since
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def writer_alive(attrs: Mapping[str, Any], path: Path) -> bool:
    """Whether the writer of the ``recording`` episode at ``path`` is still at work."""
    if str(path) in active_writers:
        return True
    w = attrs.get("writer") or {}
    if w.get("pid") == os.getpid() and w.get("host") == socket.gethostname():
        return False  # our own process holds no writer for it (checked above)
    return bool(process_alive(w))
