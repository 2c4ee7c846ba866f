"""Run with .venv-lerobot's python: load a dataset with LeRobot's own LeRobotDataset and dump
what it returns, so a test in the project's environment can compare it with the rig dataset.

    python load_with_lerobot.py DATASET_DIR OUT.npz [--frames I,J,K]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from ledataset.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("out")
    ap.add_argument("--frames", default="", help="global indices whose video frames to decode")
    args = ap.parse_args()
    meta = LeRobotDatasetMetadata("rig/export", root=args.root)
    ds = LeRobotDataset("rig/export", root=args.root)  # its default video backend: torchcodec
    # every row through the loader's own column access (the transform LeRobot applies: torch tensors)
    arrays = {
        key: torch.stack(list(ds.hf_dataset[key])).numpy()
        for key in ("observation.state", "action", "timestamp", "frame_index", "episode_index", "index", "task_index")
    }
    frames = [int(i) for i in args.frames.split(",") if i]
    for cam in meta.video_keys:
        imgs = []
        for i in frames:
            item = ds[i]  # what a training loop gets: (C, H, W) float in [0, 1]
            imgs.append((item[cam].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        arrays[f"frames/{cam}"] = np.stack(imgs) if imgs else np.zeros((0,), np.uint8)
    item = ds[frames[0] if frames else 0]
    summary = {
        "len": len(ds), "num_episodes": ds.num_episodes, "fps": ds.fps, "video_keys": meta.video_keys,
        "task_of_first": item["task"], "tasks": list(meta.tasks.index),
        "episode_lengths": [int(e["length"]) for e in meta.episodes],
        "stats_keys": sorted(meta.stats) if meta.stats else [],
    }
    np.savez(args.out, summary=json.dumps(summary), **arrays)


if __name__ == "__main__":
    main()
