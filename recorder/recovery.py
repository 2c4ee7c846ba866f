"""Start-up check for episodes left ``recording`` by a crash: recover, discard or leave them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from recorder.dataset import Dataset

PROMPT = "episode {index} in {path} was cut off ({duration:.1f}s recorded). [r]ecover, [d]iscard or [l]eave? "


def check_incomplete(
    dataset_path: str | Path,
    interactive: bool = False,
    ask: Callable[[str], str] = input,
    out: Callable[[str], None] = print,
) -> dict[int, str]:
    """Find crashed episodes; ask what to do when ``interactive``, else report and leave them.

    Returns ``{episode index: "recovered" | "discarded" | "left"}``. A missing dataset is fine
    (nothing recorded yet). The CLI calls this on start-up with ``interactive=sys.stdin.isatty()``.
    """
    path = Path(dataset_path)
    if not (path / "zarr.json").exists():
        return {}
    ds = Dataset(path)
    result: dict[int, str] = {}
    for info in ds.find_incomplete():
        if not interactive:
            out(
                f"episode {info.index} in {path} was cut off while recording ({info.duration_s:.1f}s on disk); "
                f"run `rig episodes {path} --recover {info.index}` to keep it or `--discard {info.index}`."
            )
            result[info.index] = "left"
            continue
        answer = ""
        while answer not in ("r", "d", "l"):
            answer = (
                (ask(PROMPT.format(index=info.index, path=path, duration=info.duration_s)) or "l")
                .strip()[:1]
                .lower()
            )
        if answer == "r":
            rec = ds.recover(info.index)
            out(f"episode {info.index} recovered: {rec.stream_counts} {rec.camera_counts}")
            result[info.index] = "recovered"
        elif answer == "d":
            ds.discard(info.index)
            out(f"episode {info.index} marked discarded")
            result[info.index] = "discarded"
        else:
            result[info.index] = "left"
    return result
