"""The empty-scene reference of a fixed camera, captured on the simulated rig.

An object locator that knows no colour finds the task's objects as what differs from the scene
without them. On hardware the operator captures that frame (objects off the table, arms at the
start pose: a calibration step); here the world's own model is rendered the way its camera
process renders it, with the task's objects moved out of view and the arms at the pose a trial
starts from. The frame then takes the same JPEG round trip and down-scaling as every recorded
and live frame. The arms' pixels come with it (MuJoCo's segmentation), so a locator can mask
them: arms at the start pose render a little differently from take to take.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .hardware import (
    FOLLOWER_GRIPPER_CLOSED_TICKS,
    FOLLOWER_GRIPPER_OPEN_TICKS,
    angle_from_ticks,
    finger_from_follower_gripper,
)
from .scene import SIDES, SimScene

OUT_OF_VIEW = (0.0, 0.0, -5.0)  # under the floor: no camera sees it
ARM_PREFIX = "vx300s_"


@dataclass
class Reference:
    """An empty-scene frame of one camera and where the arms are in it (both at ``image_hw``)."""

    camera: str
    frame: np.ndarray  # (H, W, 3) uint8, after the JPEG round trip
    arm_mask: np.ndarray  # (H, W) bool: arm pixels (dilated by a pixel)
    source: str = "sim-render"


def finger_from_normalized(g: float) -> float:
    """A follower gripper value in rig units (0 closed .. 1 open) -> the sim's finger slide (m)."""
    ticks = FOLLOWER_GRIPPER_CLOSED_TICKS + float(g) * (FOLLOWER_GRIPPER_OPEN_TICKS - FOLLOWER_GRIPPER_CLOSED_TICKS)
    return finger_from_follower_gripper(angle_from_ticks(ticks))


def pose_scene(scene: SimScene, q: np.ndarray | None) -> None:
    """Put both arms at ``q`` (the rig's 14 follower values: 6 joints + gripper per arm)."""
    if q is None:
        return
    d = scene.data
    for k, side in enumerate(SIDES):
        row = np.asarray(q[7 * k: 7 * k + 7], float)
        d.qpos[scene.qpos_adr[side][:6]] = row[:6]
        f = finger_from_normalized(row[6])
        d.qpos[scene.qpos_adr[side][6]] = f
        d.qpos[scene.qpos_adr[side][7]] = -f


_RENDER_POOL = None


def in_render_process(fn, *args):
    """Run ``fn(*args)`` in a spawned child with an OpenGL backend chosen before MuJoCo loads (as the
    world's camera process does: the calling process may have imported MuJoCo without one).

    The child is kept for the next call: its imports (torch, MuJoCo) and scenes stay warm, which
    takes tens of seconds off each quick-train pass of the app's background trainer."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    global _RENDER_POOL
    if _RENDER_POOL is None:
        _RENDER_POOL = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=_render_env)
    try:
        return _RENDER_POOL.submit(fn, *args).result()
    except BrokenProcessPool:
        _RENDER_POOL = None  # the child died (a crash in the renderer): the next call starts another
        raise


def _render_env() -> None:
    import os

    os.environ["MUJOCO_GL"] = os.environ.get("RIG_RENDER_GL") or os.environ.get("MUJOCO_GL") or "egl"
    os.environ.setdefault("LP_NUM_THREADS", "1")


def capture_reference(task: str, camera: str = "top", width: int = 320, height: int = 240,
                      image_hw: tuple[int, int] = (240, 320), start_q: np.ndarray | None = None) -> Reference:
    """Render ``camera`` of ``task``'s scene with no objects, the arms at ``start_q`` (in a child
    process with its own OpenGL context)."""
    q = None if start_q is None else np.asarray(start_q, float)
    return in_render_process(capture_reference_here, task, camera, width, height, tuple(image_hw), q)


def capture_reference_here(task: str, camera: str, width: int, height: int, image_hw: tuple[int, int],
             start_q: np.ndarray | None) -> Reference:
    """:func:`capture_reference` in this process (it must have an OpenGL backend: MUJOCO_GL)."""
    import cv2

    from recorder.codec import encode_jpeg
    from rig.downscale import decode_small, reduction

    scene = SimScene(task)
    mj, m, d = scene.mujoco, scene.model, scene.data
    scene.reset(0)
    for name in _object_bodies(m):
        adr = int(m.joint(m.body(name).jntadr[0]).qposadr[0])
        d.qpos[adr:adr + 3] = OUT_OF_VIEW
    pose_scene(scene, start_q)
    rgb, seg = _render(scene, camera, width, height, segmentation=True)
    frame = decode_small(encode_jpeg(rgb), image_hw, reduction(width, height, image_hw))
    arm_geoms = np.array([m.body(m.geom_bodyid[g]).name.startswith(ARM_PREFIX) for g in range(m.ngeom)] + [False])
    ids = seg[..., 0].astype(np.int64)
    is_geom = seg[..., 1] == int(mj.mjtObj.mjOBJ_GEOM)
    full = is_geom & arm_geoms[np.where((ids >= 0) & (ids < m.ngeom), ids, m.ngeom)]
    small = cv2.resize(full.astype(np.uint8), (image_hw[1], image_hw[0]), interpolation=cv2.INTER_AREA) > 0
    mask = cv2.dilate(small.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    return Reference(camera, frame, mask)


def _render(scene: SimScene, camera: str, width: int, height: int,
            segmentation: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """One frame of ``camera`` as the world's camera process renders it (no shadows or
    reflections), and its segmentation when asked."""
    mj, m, d = scene.mujoco, scene.model, scene.data
    mj.mj_forward(m, d)
    m.vis.global_.offwidth = max(m.vis.global_.offwidth, width)
    m.vis.global_.offheight = max(m.vis.global_.offheight, height)
    r = mj.Renderer(m, height, width)
    try:
        r.scene.flags[mj.mjtRndFlag.mjRND_SHADOW] = False
        r.scene.flags[mj.mjtRndFlag.mjRND_REFLECTION] = False
        r.update_scene(d, camera=camera)
        rgb = r.render().copy()
        seg = None
        if segmentation:
            r.enable_segmentation_rendering()
            r.update_scene(d, camera=camera)
            seg = r.render().copy()
    finally:
        r.close()
    return rgb, seg


def _object_bodies(m) -> list[str]:
    """Bodies with a free joint: the task's movable objects."""
    import mujoco

    out = []
    for b in range(m.nbody):
        j = int(m.body_jntadr[b])
        if j >= 0 and int(m.jnt_type[j]) == int(mujoco.mjtJoint.mjJNT_FREE):
            out.append(m.body(b).name)
    return out


def render_take_start_here(task: str, seed: int, camera: str = "top", width: int = 320, height: int = 240,
                           image_hw: tuple[int, int] = (240, 320), start_q: np.ndarray | None = None,
                           object_rgba: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """The first frame of a take of ``seed`` as the camera records it (JPEG round trip included):
    objects placed by the seed, arms at ``start_q``. ``object_rgba`` repaints the objects (a test
    that a locator does not rely on their colour). Needs an OpenGL backend in this process."""
    from recorder.codec import encode_jpeg
    from rig.downscale import decode_small, reduction

    scene = SimScene(task)
    m = scene.model
    scene.reset(seed)
    if object_rgba is not None:
        objs = set(_object_bodies(m))
        for g in range(m.ngeom):
            if m.body(m.geom_bodyid[g]).name in objs:
                m.geom_rgba[g] = object_rgba
                m.geom_matid[g] = -1
    pose_scene(scene, start_q)
    rgb, _ = _render(scene, camera, width, height)
    return decode_small(encode_jpeg(rgb), image_hw, reduction(width, height, image_hw))


def render_take_starts(task: str, seeds: list[int], **kw) -> tuple[Reference, list[np.ndarray]]:
    """The live reference and the first frame of a take of each seed, rendered in one child process."""
    return in_render_process(_render_many, task, list(seeds), kw)


def _render_many(task: str, seeds: list[int], kw: dict) -> tuple[Reference, list[np.ndarray]]:
    ref_kw = {k: kw[k] for k in ("camera", "width", "height", "image_hw", "start_q") if k in kw}
    ref = capture_reference_here(task, ref_kw.get("camera", "top"), ref_kw.get("width", 320),
                                 ref_kw.get("height", 240), tuple(ref_kw.get("image_hw", (240, 320))),
                                 ref_kw.get("start_q"))
    return ref, [render_take_start_here(task, s, **kw) for s in seeds]
