"""The printed pose board: its definition, printing, measured size and a check from photos.

The pose board is a ChArUco board (OpenCV ``cv2.aruco``) that lies on the table during a handheld
take; every wrist frame that sees it gives the camera's pose in the board frame. Its marker IDs
start at :data:`POSE_FIRST_MARKER`, past the intrinsics board's, so the two are never mistaken
for each other.

Board frame (OpenCV's): origin at the board's top-left corner as printed, x along the printed
columns, y down the printed rows, z into the table.

Printers scale: the operator measures the printed board (the outer edge of the squares, the
long side) and the size is stored in ``<calibration dir>/boards/<name>.toml``; the check then
compares photos of the board with that size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calibration.arm import CalibrationError

# Paper in mm (portrait) and a printer's safe margin.
PAPER_MM = {"a4": (210.0, 297.0), "letter": (215.9, 279.4)}
PRINT_MARGIN_MM = 12.0
PRINT_DPI = 300
POSE_FIRST_MARKER = 50  # DICT_5X5_100's ids 0..17 belong to the intrinsics board
BOARD_FORMAT = "rig-pose-board"


class BoardError(CalibrationError):
    """The pose board is missing, of another size, or another board."""


@dataclass(frozen=True)
class PoseBoard:
    squares_x: int = 7
    squares_y: int = 5
    square_m: float = 0.036  # as printed and measured; 7 x 36 mm = 252 mm fits A4 and Letter landscape
    marker_m: float = 0.027
    dictionary: str = "DICT_5X5_100"
    first_marker: int = POSE_FIRST_MARKER
    name: str = "pose"

    @property
    def size_m(self) -> tuple[float, float]:
        return self.squares_x * self.square_m, self.squares_y * self.square_m

    @property
    def marker_ids(self) -> np.ndarray:
        n = (self.squares_x * self.squares_y) // 2
        return np.arange(self.first_marker, self.first_marker + n, dtype=np.int32)

    def dictionary_obj(self):
        import cv2

        try:
            return cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        except AttributeError:
            raise BoardError(f"unknown ArUco dictionary {self.dictionary!r}; use e.g. DICT_5X5_100") from None

    def board(self):
        import cv2

        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_m, self.marker_m,
                                      self.dictionary_obj(), self.marker_ids)

    def scaled(self, square_m: float) -> PoseBoard:
        """The same board printed at another scale (the measured size)."""
        k = square_m / self.square_m
        return PoseBoard(self.squares_x, self.squares_y, square_m, self.marker_m * k, self.dictionary,
                         self.first_marker, self.name)

    def image(self, px_per_m: float = 4000.0, margin_px: int = 0) -> np.ndarray:
        """The board as a grey image at ``px_per_m`` (white margin ``margin_px`` around the squares)."""
        w = int(round(self.size_m[0] * px_per_m)) + 2 * margin_px
        h = int(round(self.size_m[1] * px_per_m)) + 2 * margin_px
        return self.board().generateImage((w, h), marginSize=margin_px)

    def corners_3d(self) -> np.ndarray:
        """Every ChArUco corner in the board frame (id order)."""
        return np.asarray(self.board().getChessboardCorners(), dtype=np.float64).reshape(-1, 3)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PoseBoard:
        keys = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in keys})


# ---- printing ---------------------------------------------------------------------------------------

def page_image(board: PoseBoard, paper: str = "a4", dpi: int = PRINT_DPI) -> np.ndarray:
    """A landscape page with the board at its nominal size, centred, and a caption line."""
    import cv2

    if paper not in PAPER_MM:
        raise BoardError(f"unknown paper {paper!r}; choose one of: {', '.join(PAPER_MM)}")
    short, long_ = PAPER_MM[paper]
    px_per_mm = dpi / 25.4
    page_w, page_h = int(round(long_ * px_per_mm)), int(round(short * px_per_mm))
    bw, bh = (s * 1000 for s in board.size_m)
    if bw > long_ - 2 * PRINT_MARGIN_MM or bh > short - 2 * PRINT_MARGIN_MM:
        raise BoardError(f"a {bw:.0f}x{bh:.0f} mm board does not fit {paper} with {PRINT_MARGIN_MM:.0f} mm "
                         "margins; use smaller squares")
    img = board.image(px_per_m=px_per_mm * 1000)
    page = np.full((page_h, page_w), 255, np.uint8)
    y0, x0 = (page_h - img.shape[0]) // 2, (page_w - img.shape[1]) // 2
    page[y0:y0 + img.shape[0], x0:x0 + img.shape[1]] = img
    caption = (f"rig pose board {board.squares_x}x{board.squares_y}, squares {board.square_m * 1000:.1f} mm "
               f"({board.dictionary} from id {board.first_marker}). Print at 100% and measure the long side "
               f"(nominal {bw:.1f} mm).")
    cv2.putText(page, caption, (int(PRINT_MARGIN_MM * px_per_mm), page_h - int(5 * px_per_mm)),
                cv2.FONT_HERSHEY_SIMPLEX, 0.9, 0, 2, cv2.LINE_AA)
    return page


def write_print(board: PoseBoard, out: Path, paper: str = "a4", dpi: int = PRINT_DPI) -> list[Path]:
    """Write ``out`` as PNG and PDF (same page, sized for ``paper`` at ``dpi``)."""
    from PIL import Image

    page = Image.fromarray(page_image(board, paper, dpi))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = out.with_suffix(".png"), out.with_suffix(".pdf")
    page.save(png, dpi=(dpi, dpi))
    page.convert("RGB").save(pdf, "PDF", resolution=float(dpi))
    return [png, pdf]


# ---- storing ----------------------------------------------------------------------------------------

def board_file(name: str = "pose", directory: Path | None = None) -> Path:
    from calibration.store import calibration_dir

    return (directory or calibration_dir()) / "boards" / f"{name}.toml"


def save_board(board: PoseBoard, measured_long_mm: float, directory: Path | None = None) -> Path:
    """Store the board with the measured long side (mm): the square size it implies is used."""
    from calibration.store import FORMAT_VERSION, now_iso, write_toml

    nominal = board.size_m[0] * 1000
    if not 0.8 * nominal <= measured_long_mm <= 1.2 * nominal:
        raise BoardError(f"measured {measured_long_mm:.1f} mm but the board's long side is {nominal:.1f} mm as "
                         "designed; measure the outer edge of the squares (not the paper), in millimetres")
    scaled = board.scaled(measured_long_mm / 1000 / board.squares_x)
    data = {"format": BOARD_FORMAT, "version": FORMAT_VERSION, "created": now_iso(),
            "measured_long_mm": float(measured_long_mm), "board": scaled.to_dict()}
    return write_toml(board_file(board.name, directory), data)


def load_board(name: str = "pose", directory: Path | None = None) -> PoseBoard | None:
    from calibration.store import read_toml

    path = board_file(name, directory)
    if not path.exists():
        return None
    data = read_toml(path)
    if data.get("format") != BOARD_FORMAT:
        raise BoardError(f"{path}: not a rig pose board file; run `rig calibrate board` again")
    return PoseBoard.from_dict(data["board"])


# ---- detection --------------------------------------------------------------------------------------

@dataclass
class BoardView:
    """What one image shows of the board."""

    ids: np.ndarray  # ChArUco corner ids
    obj: np.ndarray  # (n, 3) board frame, m
    img: np.ndarray  # (n, 2) px
    markers: int  # this board's markers found
    foreign: int  # markers found that belong to no part of this board


class BoardDetector:
    def __init__(self, board: PoseBoard):
        import cv2

        self.cv2 = cv2
        self.spec = board
        self.board = board.board()
        params = cv2.aruco.DetectorParameters()
        params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_NONE  # the ChArUco corners are refined instead
        self.detector = cv2.aruco.CharucoDetector(self.board, detectorParams=params)
        self._ids = set(board.marker_ids.tolist())

    def detect(self, image: np.ndarray, roi: tuple[int, int, int, int] | None = None) -> BoardView:
        """The board in ``image`` (RGB or grey); ``roi`` (x0, y0, x1, y1) limits the search to
        where the board was a moment ago, which is most of the cost saved."""
        cv2 = self.cv2
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        x0 = y0 = 0
        if roi is not None:
            x0, y0, x1, y1 = roi
            grey = grey[y0:y1, x0:x1]
        cc, ci, mc, mi = self.detector.detectBoard(grey)
        if cc is not None and (x0 or y0):
            cc = np.asarray(cc) + np.array([x0, y0], np.float32)
        # detectBoard returns every marker of the dictionary it found: those not this board's are
        # another board in view
        seen = np.zeros(0, np.int32) if mi is None else np.ravel(mi)
        mine = int(np.isin(seen, list(self._ids)).sum())
        foreign = len(seen) - mine
        if cc is None or ci is None or len(ci) == 0:
            return BoardView(np.zeros(0, np.int32), np.zeros((0, 3)), np.zeros((0, 2)), mine, foreign)
        ids = np.asarray(ci).reshape(-1).astype(np.int32)
        obj = self.spec.corners_3d()[ids]
        return BoardView(ids, obj, np.asarray(cc, np.float64).reshape(-1, 2), mine, foreign)


# ---- checking the measured size from photos --------------------------------------------------------------

@dataclass
class BoardCheck:
    photos: int
    used: int
    aspect: float  # fitted ratio of the printed rows' to columns' scale (1.0 = printed square)
    rms_px: float
    ok: bool
    message: str


def check_board(board: PoseBoard, intrinsics, images: list[np.ndarray], tolerance: float = 0.01,
                max_rms_px: float = 1.0) -> BoardCheck:
    """Check the printed board from photos taken by a camera with known intrinsics.

    One camera cannot see a board's absolute size (twice as big at twice the distance looks the
    same), so the measured size is the operator's, and a take checks it against the IMU's
    accelerometer (rig.pose.fusion). What photos do show: that this is the board (no foreign
    markers), that it lies flat (reprojection error), and that the printer kept it square: a
    page scaled differently along its two axes breaks the perspective of a tilted view, so each
    photo's pose is solved for a range of aspect ratios and the best one is kept.
    """
    import cv2

    det = BoardDetector(board)
    k, dist = intrinsics.camera_matrix(), np.asarray(intrinsics.dist, np.float64)
    aspects, rms = [], []
    foreign = 0
    grid = np.linspace(0.9, 1.1, 81)
    for image in images:
        v = det.detect(image)
        foreign += v.foreign
        if len(v.ids) < 8:
            continue
        errs = []
        for a in grid:
            obj = v.obj * np.array([1.0, a, 1.0])
            ok, rvec, tvec = cv2.solvePnP(obj, v.img, k, dist, flags=cv2.SOLVEPNP_ITERATIVE)
            proj, _ = cv2.projectPoints(obj, rvec, tvec, k, dist)
            errs.append(float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - v.img) ** 2, axis=1)))))
        i = int(np.argmin(errs))
        aspects.append(grid[i])
        rms.append(errs[i])
    if not aspects:
        msg = ("no photo shows the board; photograph it whole, from 30-60 cm, tilted" if not foreign else
               f"the photos show {foreign} marker(s) of another board and none of this one; print "
               "`rig calibrate board` again")
        return BoardCheck(len(images), 0, float("nan"), float("nan"), False, msg)
    aspect, err = float(np.median(aspects)), float(np.median(rms))
    if abs(aspect - 1) > tolerance:
        ok, msg = False, (f"the print is stretched: rows are {aspect:.3f}x the columns' scale; print again at "
                          "100% with no fit-to-page")
    elif err > max_rms_px:
        ok, msg = False, f"the board does not lie flat ({err:.2f} px reprojection error); tape it down flat"
    else:
        ok, msg = True, (f"board checked from {len(aspects)} photo(s): square print (aspect {aspect:.3f}), "
                         f"flat ({err:.2f} px)")
    return BoardCheck(len(images), len(aspects), aspect, err, ok, msg)
