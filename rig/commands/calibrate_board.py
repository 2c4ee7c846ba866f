"""`rig calibrate board`: print the pose board, store its measured size, check it from photos."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(cs) -> None:
    b = cs.add_parser("board", help="the handheld pose board: print it (PNG+PDF), store its measured size, check it")
    b.add_argument("--out", type=Path, default=Path("pose-board"), help="where to write PNG and PDF (default ./pose-board)")
    b.add_argument("--paper", choices=("a4", "letter"), default="a4")
    b.add_argument("--measured", type=float, default=None, metavar="MM",
                   help="the printed board's long side (outer edge of the squares), mm: stores the board")
    b.add_argument("--check", nargs="+", type=Path, default=None, metavar="PHOTO",
                   help="photos of the printed board (from the wrist camera) to check it with")
    b.add_argument("--camera", default="wrist", help="the camera that took the photos (its stored intrinsics)")
    b.add_argument("--dir", type=Path, default=None, help="calibration directory")
    b.set_defaults(func=run_board)


def run_board(args: argparse.Namespace) -> int:
    from calibration.board import BoardError, PoseBoard, check_board, load_board, save_board, write_print

    board = PoseBoard()
    if args.measured is not None:
        path = save_board(board, args.measured, args.dir)
        print(f"stored the pose board ({args.measured:.1f} mm long side) in {path}")
    elif args.check is None:
        for p in write_print(board, args.out, args.paper):
            print(f"wrote {p}")
        w, h = (s * 1000 for s in board.size_m)
        print(f"print it at 100% on {args.paper}, measure the long side of the squares (nominal {w:.0f} mm), "
              f"then: rig calibrate board --measured MM")
    if args.check is not None:
        import cv2

        from calibration.intrinsics import CameraIntrinsics
        from calibration.store import load_camera

        stored = load_board(directory=args.dir)
        if stored is None:
            raise BoardError("no measured board is stored; run `rig calibrate board --measured MM` first")
        intr = load_camera(args.camera, args.dir).get("intrinsics")
        if not intr:
            raise BoardError(f"camera {args.camera!r} has no stored intrinsics; run `rig calibrate camera {args.camera}`")
        images = []
        for p in args.check:
            img = cv2.imread(str(p))
            if img is None:
                raise BoardError(f"{p}: not an image OpenCV can read")
            images.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        res = check_board(stored, CameraIntrinsics.from_dict(intr), images)
        if not res.ok:
            raise BoardError(res.message)
        print(res.message)
    return 0
