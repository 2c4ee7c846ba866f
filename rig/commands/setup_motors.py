"""`rig setup-motors PORT`: give each motor its ID and baud, one motor at a time."""

from __future__ import annotations

import sys

from drivers.dynamixel.setup import SetupError, assign


def register(sub) -> None:
    p = sub.add_parser("setup-motors", help="assign ID and baud to motors, one at a time, with prompts")
    p.add_argument("port")
    p.add_argument("--baud", type=int, default=1_000_000, help="baud to give every motor (default 1000000)")
    p.add_argument("--ids", type=str, default=None,
                   help="IDs to assign in order, e.g. 1-9 or 1,2,3 (default: ask for each motor)")
    p.add_argument("--yes", action="store_true", help="do not wait for Enter before each motor")
    p.add_argument("--scan-baud", type=int, action="append",
                   help="only look for the motor at this baud (repeatable; default: every standard rate)")
    p.set_defaults(func=run)


def parse_ids(text: str) -> list[int]:
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            ids += list(range(int(a), int(b) + 1))
        elif part:
            ids.append(int(part))
    return ids


def _ask(prompt: str) -> str:
    """The answer typed at the prompt; with no terminal to type at (stdin closed or at its end),
    one line saying how to run without prompts."""
    try:
        if sys.stdin is None:  # started with its standard input closed
            raise EOFError
        return input(prompt)
    except EOFError:
        print()
        raise SetupError("no answer: standard input is closed or at its end; run it in a terminal, or give "
                         "the IDs up front with --ids 1-9 --yes") from None


def run(args) -> int:
    try:
        planned = parse_ids(args.ids) if args.ids else None
    except ValueError:
        raise SetupError(f"--ids {args.ids!r} is not a list like 1-9 or 1,2,5") from None
    if planned is not None and not planned:
        raise SetupError(f"--ids {args.ids!r} names no ID (a range runs low to high, as in 1-9)")
    i = 0
    while True:
        if planned is not None and i >= len(planned):
            break
        if planned is None:
            answer = _ask(f"Connect ONE motor to {args.port}; new ID for it (empty to finish): ").strip()
            if not answer:
                break
            try:
                new_id = int(answer)
            except ValueError:
                print(f"{answer!r} is not a number; type an ID from 0 to 252.")
                continue
        else:
            new_id = planned[i]
            if not args.yes:
                _ask(f"Connect ONLY the motor that gets ID {new_id} to {args.port}, then press Enter ")
        servo = assign(args.port, new_id, args.baud, bauds=args.scan_baud)
        print(f"ok: {servo.model_name} now ID {servo.id} at {servo.baud} baud, return delay 0")
        i += 1
    return 0
