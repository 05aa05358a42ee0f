"""Synthetic drives as video files: what a phone or dash-cam would record, with known answers.

``write_video`` renders one drive of the scene (``make_scene``) at ``rate`` times KITTI's frame
rate by rendering intermediate camera poses (translation linear, rotation slerp between the
scene's frames), inserts static stretches (a frame repeated: the camera stands still), shrinks the
frames by ``scale`` and writes an mp4 (OpenCV) plus ``<video>.json``: the pixel intrinsics of the
written frames (``fx fy cx cy``, the keys ``prepare_video.py`` reads) and what was rendered
(``rate``, the static frames inserted, the source-frame → scene-pose map) for the tests.
"""

import json
import os

import cv2
import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from synthetic_scene.constants import CX, CY, DEFAULT_STEP, FX, FY, IMAGE_HEIGHT, IMAGE_WIDTH
from synthetic_scene.raycast import render_frame
from synthetic_scene.scene import make_scene
from utils import atomic_write


def fine_poses(poses, rate):
    """[(N−1)·rate + 1, 4, 4] T_world_from_cam0: ``rate`` poses per scene frame interval
    (translation linear, rotation slerp), the scene's own poses at multiples of ``rate``."""
    poses = np.asarray(poses, np.float64).reshape(-1, 4, 4)
    out = []
    for k in range(len(poses) - 1):
        slerp = Slerp([0.0, 1.0], Rotation.from_matrix(poses[k:k + 2, :3, :3]))
        for j in range(rate):
            a = j / rate
            T = np.eye(4)
            T[:3, :3] = slerp(a).as_matrix()
            T[:3, 3] = (1 - a) * poses[k, :3, 3] + a * poses[k + 1, :3, 3]
            out.append(T)
    out.append(poses[-1])
    return np.stack(out)


def fine_scene(seed, tag, scene_frames, rate, step=DEFAULT_STEP):
    """The scene dict of ``make_scene(seed, tag, scene_frames, step)`` with its poses replaced by
    ``fine_poses(..., rate)``: ``render_frame(fine_scene(...), k)`` renders video pose k."""
    scene = make_scene(seed, tag, scene_frames, step=step)
    poses = fine_poses(scene["poses_world_from_cam0"], rate)
    return dict(scene, num_frames=len(poses),
                poses_world_from_cam0=[[float(v) for v in T.ravel()] for T in poses])


def scaled_intrinsics(scale):
    """(fx, fy, cx, cy) in pixels of frames shrunk by ``scale`` (pixel centres: u' = (u+0.5)s−0.5)."""
    width, height = frame_size(scale)
    sx, sy = width / IMAGE_WIDTH, height / IMAGE_HEIGHT
    return FX * sx, FY * sy, (CX + 0.5) * sx - 0.5, (CY + 0.5) * sy - 0.5


def frame_size(scale):
    """(width, height) of the written frames."""
    return int(round(IMAGE_WIDTH * scale)), int(round(IMAGE_HEIGHT * scale))


def write_video(path, seed=0, tag=9101, scene_frames=14, rate=3, static=(), scale=2 / 3,
                step=DEFAULT_STEP, fps=30.0):
    """Render a drive and write it as an mp4 with its intrinsics JSON beside it.

    Args:
        path: the .mp4 to write; ``<path without .mp4>.json`` is written next to it.
        seed, tag: the scene's generator seed and drive tag (``make_scene``).
        scene_frames: frames of the drive at the scene's own rate (``step`` metres apart).
        rate: video frames per scene frame (the camera moves ``step / rate`` per video frame).
        static: ``(after, count)`` pairs: after rendered frame ``after``, repeat it ``count``
            more times (a stretch where the camera stands still).
        scale: size of the written frames relative to the renderer's 1242×375.
        step: metres per scene frame.
        fps: frame rate written into the file (informational).

    Returns:
        the JSON record (also written): fx, fy, cx, cy, width, height, rate, step,
        static_inserted, scene (seed, tag, scene_frames), and ``pose_of_frame``: per video frame,
        the index of its pose in ``fine_poses`` (repeats inside static stretches).
    """
    fine = fine_scene(seed, tag, scene_frames, rate, step)
    repeats = {int(after): int(count) for after, count in static}
    size = frame_size(scale)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = os.path.splitext(path)[0] + ".partial.mp4"  # OpenCV picks the container by name
    writer = cv2.VideoWriter(partial, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise ValueError(f"OpenCV cannot write an mp4 to {path}")
    pose_of_frame = []
    try:
        for k in range(fine["num_frames"]):
            rgb, _ = render_frame(fine, k)
            bgr = cv2.resize(rgb[..., ::-1], size, interpolation=cv2.INTER_AREA)
            for _ in range(1 + repeats.get(k, 0)):
                writer.write(np.ascontiguousarray(bgr))
                pose_of_frame.append(k)
        writer.release()
        os.replace(partial, path)
    finally:
        writer.release()
        if os.path.exists(partial):
            os.remove(partial)
    fx, fy, cx, cy = scaled_intrinsics(scale)
    record = {"fx": fx, "fy": fy, "cx": cx, "cy": cy, "width": size[0], "height": size[1],
              "rate": rate, "step": step, "static_inserted": sum(repeats.values()),
              "scene": {"seed": seed, "tag": tag, "scene_frames": scene_frames},
              "pose_of_frame": pose_of_frame}
    with atomic_write(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump(record, f, indent=1)
    return record
