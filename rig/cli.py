"""`rig`: the command line. Each subcommand lives in rig/commands/<name>.py with a register()."""

from __future__ import annotations

import argparse
import importlib
import sys

from drivers.errors import RigError

# Subcommand modules, in the order `rig --help` lists them. A module missing here (an optional
# room not installed) is skipped rather than breaking every other command.
COMMANDS = [
    "collect", "teleop", "record", "trial", "episodes", "inspect", "verify", "export", "import_", "train",
    "calibrate", "gripper", "pose", "sim", "scan", "setup_motors", "doctor", "sim_bus", "upload", "fleet",
]
# `rig` alone starts the main job: the collector's app, or teleop where the app is not installed.
DEFAULT_COMMANDS = ("collect", "teleop")


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line (what was wrong, and where to read the usage), exit status 2:
    the usage block argparse prints first buries the line that matters."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rig", description="Teleoperation and data collection for ALOHA-style and handheld rigs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"rig.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"rig.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv:
        known = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        argv = next(([c] for c in DEFAULT_COMMANDS if c in known), ["--help"])
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RigError as exc:
        print(f"rig: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rig: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
