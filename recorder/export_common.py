"""What every exporter shares: skip a bad episode with one line and go on, write each output under
a temp name and rename it into place, refuse a disk without room before writing, and on a rerun
keep what a previous run already finished.

An exporter (ALOHA HDF5, LeRobot, ...) uses it like this::

    report = ExportReport()
    clean_leftovers(out_dir)
    for info in episodes:
        if not wanted(info, statuses, include_failed):    # kept episodes, failed ones if asked
            continue
        with report.episode(info.index):                  # RecorderError -> one "skipped" line
            if not is_done(final, key):                    # a rerun keeps finished outputs
                check_free_space(out_dir, need, what)      # DiskFullError before any byte
                write_then_rename(final, lambda tmp: write(tmp))

A full disk or a read-only output stops the whole export (every later episode would fail the
same way); damaged, empty or unmappable episodes are skipped one by one (``skipping``, which
``ExportReport.episode`` wraps, for an exporter with its own report).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recorder.errors import DiskFullError, ReadOnlyDatasetError, RecorderError, fs_error

TEMP_SUFFIX = ".rig-tmp"
LEFTOVER_GLOBS = ("*" + TEMP_SUFFIX, "*.partial")  # ours, and the .partial of older rig versions
HEADROOM = 1 << 20  # bytes kept free beyond an output's estimated size (filesystem metadata)


@dataclass
class ExportReport:
    """What an export did: outputs (in order, written now or kept from a previous run) and skips."""

    paths: list[Path] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one line per skipped episode
    say: Callable[[str], None] | None = None

    @contextlib.contextmanager
    def episode(self, index: int) -> Iterator[None]:
        """Run one episode's export; a RecorderError about the episode becomes a skip line."""
        with skipping(index, self.skip):
            yield

    def skip(self, line: str) -> None:
        self.skipped.append(f"skipped {line}")
        if self.say is not None:
            self.say(f"skipped {line}")

    def add(self, path: Path, written: bool) -> None:
        self.paths.append(path)
        (self.written if written else self.kept).append(path)


def wanted(info: Any, statuses: Collection[str], include_failed: bool = False) -> bool:
    """An episode the export takes: its status is one of ``statuses`` (kept ones: complete, and
    recovered when asked) and it is not labelled a failure unless ``include_failed``."""
    return info.status in statuses and (info.success is not False or include_failed)


def is_disk_full(exc: BaseException | None) -> bool:
    """The failure (or one it came from) is a full disk or quota, whatever library raised it."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left" in str(exc) or "Disk quota" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def skipping(index: int, skip: Callable[[str], None], problem: type[Exception] = RecorderError,
             unreadable: bool = False) -> Iterator[None]:
    """One episode's part of an export. A full or read-only output disk is raised: every later
    episode would fail the same way. A ``problem`` with the episode becomes one line for ``skip``
    (naming the episode) and the export goes on; with ``unreadable``, so does any other failure
    while reading it (a damage no check foresaw), unless the disk is full."""
    try:
        yield
    except (DiskFullError, ReadOnlyDatasetError):
        raise
    except problem as exc:
        text = str(exc)
        skip(text if text.startswith(f"episode {index}") else f"episode {index}: {text}")
    except Exception as exc:
        if not unreadable or is_disk_full(exc):
            raise
        skip(f"episode {index} cannot be read ({type(exc).__name__}: {exc}); skipped")


def clean_leftovers(out_dir: Path) -> list[Path]:
    """Remove temp files an interrupted export left behind (kill -9, power cut)."""
    removed = []
    if out_dir.is_dir():
        for pattern in LEFTOVER_GLOBS:
            for p in out_dir.rglob(pattern):
                with contextlib.suppress(OSError):
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
                    removed.append(p)
    return removed


def check_out_dir(out: Path, what: str = "the export") -> None:
    """One line, before any episode is read, when ``out`` cannot take the export: a file is there,
    or the directory cannot be made or written (read-only, no permission, a parent that is a file)."""
    if out.exists() and not out.is_dir():
        raise RecorderError(f"{out} is a file, not a directory; choose a new directory for {what}")
    probe = out / f".rig-write-check{TEMP_SUFFIX}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(f"the disk holding {out} is full; free space and run the same export again") from e
        if e.errno == errno.EROFS:
            raise ReadOnlyDatasetError(f"cannot write to {out}: it is on a read-only filesystem; choose a "
                                       f"directory on a writable disk") from e
        raise RecorderError(f"cannot write to {out} ({e.strerror or e}); choose a directory you can write to "
                            f"or fix its permissions") from e


def check_free_space(out_dir: Path, need_bytes: int, what: str) -> None:
    """DiskFullError, before anything is written, when ``out_dir`` has no room for ``need_bytes``."""
    free = shutil.disk_usage(out_dir).free
    if free < need_bytes + HEADROOM:
        raise DiskFullError(
            f"disk full: {what} needs about {need_bytes / 1e6:.1f} MB and {out_dir} has {free / 1e6:.1f} MB free; "
            f"nothing partial was left. Free space and run the same export again: it keeps what is done."
        )


def write_then_rename(final: Path, write: Callable[[Path], None], raw_os_errors: bool = False) -> Path:
    """``write(tmp)`` a temp file next to ``final``, then rename it into place; on any failure the
    temp file is removed, so only finished outputs ever carry their final name. An OSError
    becomes one line (``fs_error``), or with ``raw_os_errors`` is raised as is for the caller to word."""
    tmp = final.with_name(final.name + TEMP_SUFFIX)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, final)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if raw_os_errors:
            raise
        raise fs_error(e, f"writing {final.name}", final.parent) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return final
