"""Baud rates as termios encodes them, for reading a pty's speed from its master side."""

from __future__ import annotations

import termios

# termios speed constant -> bits/s, for every rate this platform defines.
_SPEEDS: dict[int, int] = {
    getattr(termios, name): int(name[1:])
    for name in dir(termios)
    if name.startswith("B") and name[1:].isdigit() and int(name[1:]) > 0
}


def pty_baud(fd: int) -> int | None:
    """The output speed last set on the pty (by whoever holds the slave), or None if unknown.

    A pty carries no signal, but Linux keeps one termios for the pair, so the speed the host
    configured on the slave is visible here: the emulator uses it to decide whether a servo,
    which only decodes bytes at its own baud, hears the host at all.
    """
    try:
        speed = termios.tcgetattr(fd)[5]
    except termios.error:
        return None
    return _SPEEDS.get(speed)
