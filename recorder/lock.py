"""The dataset's writer lock: one recorder per dataset, named when a second one tries.

``fcntl.flock`` on ``DATASET/.rig-writer.lock``: the kernel holds the lock and drops it when
the holding process dies (kill -9 and power cuts included), so a dead recorder can never keep
a dataset locked. The file itself says who holds it (pid, host, boot id, since when), so the
second recorder gets a line naming the holder, and a recorder that takes the lock over from a
dead one says whose it was. filelock's UnixFileLock makes the same flock call; owning the file
here lets the holder's identity live in the locked file itself.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recorder.errors import DatasetLockedError, fs_error
from recorder.identity import identity, process_alive

LOCK_FILE = ".rig-writer.lock"

_held: dict[str, tuple[int, int]] = {}  # realpath of the dataset -> (pid, fd) held by this process
_guard = threading.Lock()


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}


def _describe(who: dict[str, Any]) -> str:
    if not who.get("pid"):
        return "another process"
    since = f" since {who['since']}" if who.get("since") else ""
    return f"pid {who['pid']} on host {who.get('host', '?')}{since}"


def acquire(root: Path) -> str | None:
    """Hold the writer lock of the dataset at ``root`` for the rest of this process (or ``release``).

    Returns a note when it took the lock over from a process that died holding it; raises
    DatasetLockedError naming the live holder, or a filesystem error (read-only, full disk).
    """
    key = os.path.realpath(root)
    with _guard:
        held = _held.get(key)
        if held is not None and held[0] == os.getpid():
            return None
        path = Path(key) / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise fs_error(e, "taking the dataset's writer lock", path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            who = _read_holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DatasetLockedError(
                    f"{root} is being recorded by {_describe(who)}; one recorder per dataset: stop that one or "
                    f"record to another dataset"
                ) from None
            raise fs_error(e, "taking the dataset's writer lock", path) from None
        before = _read_holder(fd)
        me = {**identity(), "since": datetime.now(UTC).isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        except OSError as e:
            os.close(fd)
            raise fs_error(e, "taking the dataset's writer lock", path) from None
        _held[key] = (os.getpid(), fd)
    if before.get("pid") and (before.get("pid"), before.get("host")) != (me["pid"], me["host"]):
        state = {False: "that process is gone", None: "on another host; its lock was free"}.get(
            process_alive(before), "its lock was free"
        )
        return f"took over the writer lock of {root} left by {_describe(before)} ({state})"
    return None


def release(root: Path) -> None:
    key = os.path.realpath(root)
    with _guard:
        held = _held.pop(key, None)
        if held is None or held[0] != os.getpid():
            return
        try:
            os.ftruncate(held[1], 0)
        except OSError:
            pass  # read-only or full: the flock still goes with the close
        os.close(held[1])


def holder(root: Path) -> dict[str, Any] | None:
    """Who holds the writer lock now (None when nobody does)."""
    path = Path(root) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_holder(fd) or {"pid": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
