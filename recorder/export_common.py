"""What every exporter shares: skip a bad episode with one line and go on, write each output under
a temp name and rename it into place, refuse a disk without room before writing, and on a rerun
keep what a previous run already finished.

An exporter (ALOHA HDF5, LeRobot, ...) uses it like this::

    report = ExportReport()
    clean_leftovers(out_dir)
    for info in episodes:
        with report.episode(info.index):                  # RecorderError -> one "skipped" line
            if not is_done(final, key):                    # a rerun keeps finished outputs
                check_free_space(out_dir, need, what)      # DiskFullError before any byte
                write_then_rename(final, lambda tmp: write(tmp))
    report.raise_if_stopped()

A full disk or a read-only output stops the whole export (every later episode would fail the
same way); damaged, empty or unmappable episodes are skipped one by one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

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
        try:
            yield
        except (DiskFullError, ReadOnlyDatasetError):
            raise  # the output side is broken: no later episode can succeed either
        except RecorderError as exc:
            text = str(exc)
            line = text if text.startswith(f"episode {index}") else f"episode {index}: {text}"
            self.skipped.append(f"skipped {line}")
            if self.say is not None:
                self.say(f"skipped {line}")

    def add(self, path: Path, written: bool) -> None:
        self.paths.append(path)
        (self.written if written else self.kept).append(path)


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


def check_free_space(out_dir: Path, need_bytes: int, what: str) -> None:
    """DiskFullError, before anything is written, when ``out_dir`` has no room for ``need_bytes``."""
    free = shutil.disk_usage(out_dir).free
    if free < need_bytes + HEADROOM:
        raise DiskFullError(
            f"disk full: {what} needs about {need_bytes / 1e6:.1f} MB and {out_dir} has {free / 1e6:.1f} MB free; "
            f"nothing partial was left. Free space and run the same export again: it keeps what is done."
        )


def write_then_rename(final: Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` a temp file next to ``final``, then rename it into place; on any failure the
    temp file is removed, so only finished outputs ever carry their final name."""
    tmp = final.with_name(final.name + TEMP_SUFFIX)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, final)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise fs_error(e, f"writing {final.name}", final.parent) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return final
