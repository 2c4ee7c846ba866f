"""Typed failures of the recorder; every one is a RigError a person can act on."""

from __future__ import annotations

from drivers.errors import RigError


class RecorderError(RigError):
    """Something about recording or reading episodes went wrong."""


class DiskFullError(RecorderError):
    """The disk filled up while recording; what was flushed before is kept."""


class EpisodeNotFoundError(RecorderError):
    """An episode index or name that the dataset does not hold."""


class ReadOnlyDatasetError(RecorderError):
    """The dataset cannot be written (read-only filesystem or no permission); reads still work."""


class DatasetLockedError(RecorderError):
    """Another live recorder holds the dataset's writer lock."""


def fs_error(exc: OSError, doing: str, path: object) -> RecorderError:
    """One line for a filesystem failure, saying what it is (full, read-only, a file) and what to do."""
    import errno
    import os

    code = exc.errno
    if code == errno.ENOSPC or code == errno.EDQUOT:
        return DiskFullError(
            f"disk full while {doing} ({path}): nothing already recorded was lost. Free space, or use "
            f"another disk."
        )
    if code == errno.EROFS:
        return ReadOnlyDatasetError(
            f"cannot write while {doing}: {path} is on a read-only filesystem. Reading works; remount it "
            f"read-write or copy the dataset to change it."
        )
    if code in (errno.EACCES, errno.EPERM):
        return ReadOnlyDatasetError(
            f"cannot write while {doing}: permission denied on {path}. Reading works; fix its permissions or "
            f"run as its owner."
        )
    if code == errno.ENOTDIR:
        return RecorderError(f"{path} is a file, not a dataset directory; pass a directory for the dataset")
    name = errno.errorcode.get(code or 0, "error")
    return RecorderError(f"{doing} failed ({name}: {os.strerror(code) if code else exc}) at {path}")
