"""Argument types for numbers a command cannot work with otherwise: argparse turns the error into
one line naming the option and the value (nan and inf are numbers to float(), not durations)."""

from __future__ import annotations

import argparse
import math


def _number(text: str, kind: type) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a duration, a rate)."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (a pause, a timeout where 0 means none)."""
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (a count, a rate in rows per second)."""
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {text}")
    return value


def nonnegative_int(text: str) -> int:
    """A whole number >= 0 (a count where 0 means none)."""
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def int_range(lo: int, hi: int):
    """A whole number from ``lo`` to ``hi`` (a video crf, a servo count)."""
    def check(text: str) -> int:
        value = int(_number(text, int))
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo} to {hi}, not {text}")
        return value
    check.__name__ = f"int from {lo} to {hi}"
    return check
