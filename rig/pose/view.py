"""The stored pose as terminal plots (plotext): the trajectory seen from above and from the side."""

from __future__ import annotations

import numpy as np


def trajectory_plot(ep, width: int = 100, height: int = 22) -> str:
    import plotext as plt

    from rig.pose.episode import POSE_STREAM

    if POSE_STREAM not in ep.streams:
        return f"episode {ep.index}: no pose stream; compute it with `rig pose DATASET {ep.index}`"
    s = ep.read_stream(POSE_STREAM)
    pos, src = s["position"], s["source"]
    ok = np.isfinite(pos).all(axis=1)
    if not ok.any():
        return f"episode {ep.index}: the pose stream has no trusted sample"
    out = []
    for title, a, b, la, lb in (("top view (board frame, m)", 0, 1, "x", "y"),
                                ("side view (board frame, m; up is -z)", 0, 2, "x", "height")):
        plt.clear_figure()
        plt.plotsize(width, height)
        plt.theme("clear")
        for code, name, color in ((1, "vision", "blue"), (2, "fused", "green"), (3, "imu-only", "orange")):
            m = ok & (src == code)
            if m.any():
                yb = -pos[m, b] if b == 2 else pos[m, b]
                plt.scatter(pos[m, a].tolist(), yb.tolist(), label=name, color=color, marker="dot")
        plt.title(f"episode {ep.index}: {title}")
        plt.xlabel(la)
        plt.ylabel(lb)
        out.append(plt.build())
    gaps = int((~ok).sum())
    out.append(f"{ok.mean():.0%} of samples have a pose; {gaps} sample(s) in unbridged gaps have none")
    return "\n".join(out)
