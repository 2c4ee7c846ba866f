"""Typed failures of the recorder; every one is a RigError a person can act on."""

from __future__ import annotations

from drivers.errors import RigError


class RecorderError(RigError):
    """Something about recording or reading episodes went wrong."""


class DiskFullError(RecorderError):
    """The disk filled up while recording; what was flushed before is kept."""


class EpisodeNotFoundError(RecorderError):
    """An episode index or name that the dataset does not hold."""
