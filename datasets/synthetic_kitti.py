"""A synthetic street scene written in KITTI's raw and odometry formats, deterministic by seed.

KITTI cannot be downloaded here, so the data pipeline, the evaluation tools and a short training
demo run on this scene instead. Everything is written exactly as KITTI lays it out, so the same
code reads it and real KITTI::

    <root>/<date>/calib_cam_to_cam.txt, calib_velo_to_cam.txt, calib_imu_to_velo.txt
    <root>/<date>/<date>_drive_<NNNN>_sync/image_02/data/%010d.jpg   (image_03; .png if png=True)
    <root>/<date>/<date>_drive_<NNNN>_sync/velodyne_points/data/%010d.bin
    <root>/<date>/<date>_drive_<NNNN>_sync/proj_depth/groundtruth/image_02/%010d.png
    <root>/<date>/<date>_drive_<NNNN>_sync/scene.json                 (everything to re-render)
    <root>/<date>/<date>_drive_<NNNN>_sync/semantic_synthetic/image_02/%010d.png  (labels, below)
    <root>/sequences/{09,10}/image_2|image_3/%06d.jpg, calib.txt, times.txt   (odometry=True)
    <root>/poses/{09,10}.txt
    <root>/splits/synthetic*/...                                       (split lists for this scene)
    <root>/.synthetic_complete.json                                   (parameters; cache marker)

The scene: a straight street in a world frame with x right, y down, z forward and the road at
y = 0. Camera 0 rides 1.65 m above the road, moving ``step`` metres per frame (default 0.5 m: the
project's notes found that ~1 m per frame did not train from scratch on CPU and 0.4–0.6 m did)
with a slow smooth yaw of a few degrees and tiny pitch/roll noise. Building facades (boxes with a
setback of 6–15 m, heights of 4–15 m, some gaps), parked cars (a body box and a cabin box) along
both kerbs, poles, and far backdrop walls (~80 m ahead, 42 m to the sides, 80 m behind) with a
skyline; sky above (no depth, no Velodyne return). Every surface carries a multi-octave,
non-repeating procedural texture fixed in world coordinates (road markings, paving tiles, bricks,
windows, panels), sampled with trilinear mip-mapping so that distant surfaces do not alias, and
mild Lambertian shading (no shadows, no specular: the images are view-consistent). Depths of a
frame span about 3–92 m. Rendering is vectorised ray casting (ray–plane and windowed ray–box
slab tests for all pixels at once); a frame (both cameras + Velodyne scan) costs about 0.3 s of
CPU, and ``generate(..., workers=2)`` renders frames in parallel processes.

Geometry and calibration (KITTI-like; ``R_rect_00`` = identity so rectified = camera-0 frame):

- Rectified intrinsics: the KITTI-average normalised K at 1242×375 (fx = 0.58·1242,
  fy = 1.92·375, cx = 621, cy = 187.5), so the fixed-K and calibration-file modes agree.
- Camera centres along the rectified x axis: camera 2 at −0.06 m, camera 3 at +0.48 m (0.54 m
  stereo baseline), camera 1 at +0.54 m; ``P_rect_0x = K [I | −C_x]``.
- Velodyne: x forward, y left, z up; ``T_cam0_from_velo`` is the axis swap with
  T = (0, −0.08, −0.27), i.e. 1.73 m above the road and 0.27 m behind the cameras. 64 rings from
  +2° to −24.8°, 2250 azimuth steps (0.16°), full 360°, returns up to 120 m, no noise.
- Pixel convention: pixel (column c, row r) is the ray through u = c, v = r of ``P_rect``
  (0-based, OpenCV's). Note that the published ``generate_depth_map`` stores a point projecting to
  (u, v) at pixel (round(u) − 1, round(v) − 1) (the KITTI devkit's 1-based indexing), i.e. one
  pixel up-left of where this renderer (and Monodepth2's network geometry) sees it.

Label maps (not a KITTI folder; no code that reads real KITTI needs them): for every raw frame,
``semantic_synthetic/image_02/%010d.png`` holds, per pixel of the left image (same ray as the
image and ``render_frame``'s depth), the material id + 1 of the surface it sees (0 = sky):
1 ground, 2–4 facades, 5 car body, 6 car cabin (glass), 7 pole, 8 backdrop (``MATERIALS``).
``class_mask(labels, "car" | "pole")`` selects a class. ``generate`` on a folder that already
holds the scene writes the label maps it lacks (a scene made before they existed), so a cached
scene never goes without them.

Public API: ``generate``, ``write_splits``, ``split_lines``, ``make_scene``, ``load_scene``,
``render_frame``, ``render_labels``, ``read_labels``, ``class_mask``, ``gt_class_mask``,
``render_velodyne``, ``camera_pose``, ``velodyne_pose``, and the CLI
``python -m datasets.synthetic_kitti --out synthetic_kitti``.
"""

import argparse
import functools
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time

import cv2
import numpy as np

FORMAT_VERSION = 1

IMAGE_WIDTH, IMAGE_HEIGHT = 1242, 375
FX, FY = 0.58 * IMAGE_WIDTH, 1.92 * IMAGE_HEIGHT
CX, CY = 0.5 * IMAGE_WIDTH, 0.5 * IMAGE_HEIGHT
CAMERA_HEIGHT = 1.65
CAMERA_CENTRE_X = {0: 0.0, 1: 0.54, 2: -0.06, 3: 0.48}
STEREO_BASELINE = CAMERA_CENTRE_X[3] - CAMERA_CENTRE_X[2]

R_CAM_FROM_VELO = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
T_CAM_FROM_VELO = np.array([0.0, -0.08, -0.27])
R_VELO_FROM_IMU = np.eye(3)
T_VELO_FROM_IMU = np.array([-0.81, 0.32, -0.80])

VELO_ELEVATIONS_DEG = np.linspace(2.0, -24.8, 64)
VELO_AZIMUTH_STEPS = 2250
VELO_MAX_RANGE = 120.0
GT_DENSITY = 0.3

DEFAULT_DATE = "2011_09_26"
DEFAULT_SEED = 0
DEFAULT_NUM_DRIVES = 3
DEFAULT_NUM_FRAMES = 48
DEFAULT_STEP = 0.5
DEFAULT_ODOM_FRAMES = 40
FIRST_DRIVE = 9001
ODOM_SEQUENCES = (9, 10)
COMPLETE_MARKER = ".synthetic_complete.json"

JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 92,
               cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]

# Materials: texture name per material id (see _build_textures).
MATERIALS = ("ground", "facade_brick", "facade_plaster", "facade_panel", "car_body", "glass",
             "pole", "backdrop")
MAT = {name: i for i, name in enumerate(MATERIALS)}
# Label maps (``<drive>/semantic_synthetic/image_02/%010d.png``, uint8): material id + 1, 0 = sky.
LABEL_DIR = "semantic_synthetic/image_02"
LABEL_CLASSES = {"car": ("car_body", "glass"), "pole": ("pole",)}  # glass: the car cabins
SUN_DIR = np.array([-0.45, -0.8, -0.4]) / np.linalg.norm([-0.45, -0.8, -0.4])  # towards the sun
AMBIENT, DIFFUSE = 0.6, 0.45
GROUND_TEX_X0 = 12.8   # metres added to world x before looking up the ground texture
GROUND_TEX_Z0 = 10.0   # metres added to world z (the 102.4 m period wraps beyond the backdrop)


# --------------------------------------------------------------------------------------------
# scene description (a JSON-able dict)
# --------------------------------------------------------------------------------------------

def _rot_x(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _smooth_noise(rng, n, sigma):
    """[n] zero-mean noise with unit max-abs, smoothed over ~sigma frames."""
    raw = rng.standard_normal(n + 8 * int(sigma) + 2)
    k = np.arange(-3 * sigma, 3 * sigma + 1)
    kernel = np.exp(-0.5 * (k / sigma) ** 2)
    smooth = np.convolve(raw, kernel / kernel.sum(), mode="same")[4 * int(sigma):][:n]
    smooth = smooth - smooth.mean()
    return smooth / max(np.abs(smooth).max(), 1e-9)


def _trajectory(rng, num_frames, step):
    """[num_frames,4,4] T_world_from_cam0: constant speed, smooth yaw, tiny pitch/roll."""
    i = np.arange(num_frames)
    span = max(num_frames - 1, 1)
    yaw_amp = math.radians(rng.uniform(1.5, 3.0))
    cycles = rng.uniform(0.5, 1.0)
    phase = rng.uniform(0.0, 2.0 * math.pi)
    yaw = yaw_amp * np.sin(2.0 * math.pi * cycles * i / span + phase)
    yaw = yaw - yaw[0] * 0.5  # start roughly along the street
    pitch = math.radians(0.25) * _smooth_noise(rng, num_frames, 3.0)
    roll = math.radians(0.2) * _smooth_noise(rng, num_frames, 3.0)
    position = np.array([rng.uniform(-0.4, 0.4), -CAMERA_HEIGHT, 0.0])
    poses = []
    for k in range(num_frames):
        if k > 0:
            heading = 0.5 * (yaw[k - 1] + yaw[k])
            position = position + step * np.array([math.sin(heading), 0.0, math.cos(heading)])
        T = np.eye(4)
        T[:3, :3] = _rot_y(yaw[k]) @ _rot_x(pitch[k]) @ _rot_z(roll[k])
        T[:3, 3] = position
        poses.append(T)
    return np.stack(poses)


def _skyline(rng, lo, hi, min_h, max_h):
    """Piecewise-constant skyline over [lo, hi]: sorted break positions and one height per
    segment (``heights[i]`` for coordinates in [breaks[i−1], breaks[i])); no wall outside."""
    breaks = [lo]
    while breaks[-1] < hi:
        breaks.append(breaks[-1] + rng.uniform(6.0, 30.0))
    breaks[-1] = hi
    heights = rng.uniform(min_h, max_h, size=len(breaks) + 1)
    heights[0] = heights[-1] = 0.0
    return {"breaks": [float(b) for b in breaks], "heights": [float(h) for h in heights]}


def _add_box(boxes, lo, hi, material, tint, offset):
    boxes.append({"min": [float(v) for v in lo], "max": [float(v) for v in hi],
                  "material": MAT[material], "tint": [float(v) for v in tint],
                  "offset": [float(v) for v in offset]})


def _buildings(rng, boxes, side, z_lo, z_hi):
    """Facade boxes along one side (side = −1 left, +1 right) between z_lo and z_hi."""
    z = z_lo + rng.uniform(0.0, 5.0)
    while z < z_hi:
        length = min(rng.uniform(8.0, 25.0), z_hi - z)
        setback = rng.uniform(6.0, 15.0)
        depth = rng.uniform(8.0, 14.0)
        height = rng.uniform(4.0, 15.0)
        x_near, x_far = side * setback, side * (setback + depth)
        material = ("facade_brick", "facade_plaster", "facade_panel")[rng.integers(3)]
        tint = np.clip(rng.uniform(0.8, 1.15) * (1.0 + rng.uniform(-0.12, 0.12, 3)), 0.6, 1.3)
        offset = (3.2 * rng.integers(0, 16), 0.0)  # whole window periods: windows start at the edge
        _add_box(boxes, (min(x_near, x_far), -height, z), (max(x_near, x_far), 0.0, z + length),
                 material, tint, offset)
        z += length + (0.0 if rng.uniform() < 0.55 else rng.uniform(2.0, 10.0))


CAR_COLOURS = ((0.95, 0.95, 0.95), (0.24, 0.24, 0.26), (0.65, 0.67, 0.70), (0.75, 0.12, 0.10),
               (0.12, 0.25, 0.65), (0.15, 0.40, 0.22), (0.90, 0.75, 0.15), (0.45, 0.30, 0.20))


def _parked_cars(rng, boxes, side, z_lo, z_hi):
    z = z_lo + rng.uniform(0.0, 8.0)
    while z < z_hi:
        length, width = rng.uniform(3.8, 4.8), rng.uniform(1.6, 1.9)
        body_h, cabin_h = rng.uniform(0.75, 0.95), rng.uniform(0.45, 0.6)
        x_centre = side * rng.uniform(3.9, 4.5)
        colour = np.array(CAR_COLOURS[rng.integers(len(CAR_COLOURS))])
        colour = np.clip(colour * rng.uniform(0.9, 1.1, 3), 0.05, 1.2)
        offset = rng.uniform(0.0, 5.12, 2)
        _add_box(boxes, (x_centre - width / 2, -body_h, z), (x_centre + width / 2, 0.0, z + length),
                 "car_body", colour, offset)
        c_len = length * rng.uniform(0.5, 0.62)
        c_z = z + length * rng.uniform(0.25, 0.35)
        _add_box(boxes, (x_centre - width / 2 + 0.12, -body_h - cabin_h, c_z),
                 (x_centre + width / 2 - 0.12, -body_h, c_z + c_len), "glass",
                 rng.uniform(0.8, 1.2, 3), rng.uniform(0.0, 5.12, 2))
        z += length + (rng.uniform(1.0, 6.0) if rng.uniform() < 0.7 else rng.uniform(8.0, 25.0))


def _poles(rng, boxes, side, z_lo, z_hi):
    z = z_lo + rng.uniform(0.0, 10.0)
    while z < z_hi:
        x = side * rng.uniform(5.65, 5.85)
        height = rng.uniform(4.0, 8.0)
        _add_box(boxes, (x - 0.08, -height, z), (x + 0.08, 0.0, z + 0.16), "pole",
                 rng.uniform(0.85, 1.15, 3), rng.uniform(0.0, 2.56, 2))
        z += rng.uniform(8.0, 22.0)


SIDE_WALL_X = 42.0
REAR_WALL_Z = -80.0


def _wall(rng, axis, pos, sign, skyline):
    """A backdrop wall: plane ``P[axis] = pos`` seen by rays with ``sign·d[axis] > 0``."""
    return {"axis": axis, "pos": float(pos), "sign": sign, "skyline": skyline,
            "tint": [float(v) for v in rng.uniform(0.9, 1.1, 3)],
            "offset": float(rng.uniform(0, 300))}


def make_scene(seed, tag, num_frames, step=DEFAULT_STEP, name=None):
    """Describe one drive: trajectory, boxes and backdrop, as a JSON-able dict.

    Args:
        seed: the generator seed (textures are shared by all drives of one seed).
        tag: integer that makes this drive's layout differ from the others (the drive number for
            raw drives, 100000 + sequence for odometry sequences).
        num_frames: number of frames (≥ 2).
        step: metres the camera moves per frame.
        name: free text stored in the scene (e.g. the drive folder).

    Returns:
        dict with ``version``, ``seed``, ``tag``, ``name``, ``num_frames``, ``step``,
        ``poses_world_from_cam0`` ([num_frames][16], row-major 4×4, world: x right, y down,
        z forward, road at y = 0), ``boxes`` (list of {min, max, material, tint, offset}),
        ``backdrops`` (walls with skylines) and ``ground_offset``.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(tag)]))
    poses = _trajectory(rng, num_frames, step)
    travel = float(np.linalg.norm(poses[-1, :3, 3] - poses[0, :3, 3]))
    front_z = travel / 2.0 + 80.0
    boxes = []
    for side in (-1, 1):
        _buildings(rng, boxes, side, -45.0, front_z - 2.0)
        _parked_cars(rng, boxes, side, -25.0, front_z - 10.0)
        _poles(rng, boxes, side, -25.0, front_z - 10.0)
    backdrops = [
        # axis of the wall normal (0 = x, 2 = z), wall position, sign a ray's direction must have
        _wall(rng, 2, front_z, 1, _skyline(rng, -SIDE_WALL_X, SIDE_WALL_X, 4.0, 14.0)),
        _wall(rng, 2, REAR_WALL_Z, -1, _skyline(rng, -SIDE_WALL_X, SIDE_WALL_X, 4.0, 14.0)),
        _wall(rng, 0, -SIDE_WALL_X, -1, _skyline(rng, REAR_WALL_Z, front_z, 6.0, 20.0)),
        _wall(rng, 0, SIDE_WALL_X, 1, _skyline(rng, REAR_WALL_Z, front_z, 6.0, 20.0)),
    ]
    scene = {
        "version": FORMAT_VERSION, "seed": int(seed), "tag": int(tag), "name": name,
        "num_frames": int(num_frames), "step": float(step),
        "poses_world_from_cam0": [[float(v) for v in T.ravel()] for T in poses],
        "boxes": boxes, "backdrops": backdrops,
        "ground_offset": [GROUND_TEX_X0, GROUND_TEX_Z0 + float(rng.uniform(0.0, 5.0))],
    }
    return json.loads(json.dumps(scene))  # exactly what a scene.json round trip gives


def load_scene(drive):
    """Return the scene dict of ``drive``: a dict (returned as is), a ``scene.json`` path, or a
    drive / sequence folder holding ``scene.json``."""
    if isinstance(drive, dict):
        return drive
    path = os.fspath(drive)
    if os.path.isdir(path):
        path = os.path.join(path, "scene.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"scene file {path} does not exist; generate the scene with "
                                "`python -m datasets.synthetic_kitti --out <folder>`")
    with open(path, "r", encoding="utf-8") as f:
        scene = json.load(f)
    if scene.get("version") != FORMAT_VERSION:
        raise ValueError(f"scene file {path} has format version {scene.get('version')}, this code "
                         f"reads version {FORMAT_VERSION}; regenerate the scene")
    return scene


def camera_pose(scene, frame_index, cam=0):
    """[4,4] float64 T_world_from_cam of rectified camera ``cam`` ∈ {0,1,2,3} at a frame."""
    scene = load_scene(scene)
    if cam not in CAMERA_CENTRE_X:
        raise ValueError(f"cam must be one of {sorted(CAMERA_CENTRE_X)}, got {cam!r}")
    if not 0 <= frame_index < scene["num_frames"]:
        raise ValueError(f"frame_index {frame_index} is outside 0..{scene['num_frames'] - 1}")
    T = np.array(scene["poses_world_from_cam0"][frame_index], dtype=np.float64).reshape(4, 4)
    T_cam0_from_cam = np.eye(4)
    T_cam0_from_cam[0, 3] = CAMERA_CENTRE_X[cam]
    return T @ T_cam0_from_cam


def velodyne_pose(scene, frame_index):
    """[4,4] float64 T_world_from_velo at ``frame_index``."""
    T_cam0_from_velo = np.eye(4)
    T_cam0_from_velo[:3, :3] = R_CAM_FROM_VELO
    T_cam0_from_velo[:3, 3] = T_CAM_FROM_VELO
    return camera_pose(scene, frame_index, 0) @ T_cam0_from_velo


class _Geometry:
    """The scene dict as arrays for ray casting, plus per-surface lookup tables for shading.

    Hit ids: −1 sky, 0 ground, 1..len(backdrops) backdrop walls, ``box0 + k`` box k. A hit's
    *code* is ``3·id + face axis`` (the axis is 0 except for boxes). Per code, ``table`` holds the
    columns named in ``_TABLE_COLUMNS``: the surface coordinates in metres are
    ``s = P·(s_x, 0, s_z) + s_off`` and ``u = P·(0, u_y, u_z) + u_off`` for the hit point P; the
    normal lies along the unit axis e = (e_x, e_y, e_z) with a fixed sign, or (boxes) facing the
    ray; ``shade_if_dn_pos`` / ``_neg`` are the Lambert shading for rays with d·e > 0 / ≤ 0; plus
    the material id and the RGB tint.
    """

    _COLUMNS = ("s_x", "s_z", "s_off", "u_y", "u_z", "u_off", "e_x", "e_y", "e_z",
                "shade_if_dn_pos", "shade_if_dn_neg", "material", "tint_r", "tint_g", "tint_b")

    def __init__(self, scene):
        boxes = scene["boxes"]
        self.lo = np.array([b["min"] for b in boxes], np.float64).reshape(-1, 3)
        self.hi = np.array([b["max"] for b in boxes], np.float64).reshape(-1, 3)
        self.backdrops = scene["backdrops"]
        self.box0 = 1 + len(self.backdrops)
        self.seed = scene["seed"]
        self.table = np.zeros((len(self._COLUMNS), 3 * (self.box0 + len(boxes))), np.float32)
        gx, gz = scene["ground_offset"]
        self._set(0, ("x", 1.0, gx), ("z", 1.0, gz), (1, -1.0), MAT["ground"], (1.0, 1.0, 1.0))
        for i, wall in enumerate(self.backdrops, start=1):
            a, sign = wall["axis"], wall["sign"]
            along = ("z", 1.0, wall["offset"]) if a == 0 else ("x", -float(sign), wall["offset"])
            self._set(i, along, ("y", -1.0, 0.0), (a, -float(sign)), MAT["backdrop"], wall["tint"])
        for k, b in enumerate(boxes):
            lo, (o_s, o_u) = b["min"], b["offset"]
            faces = {0: (("z", 1.0, o_s - lo[2]), ("y", -1.0, o_u)),         # x faces: along z, up
                     1: (("x", 1.0, o_s - lo[0]), ("z", 1.0, o_u - lo[2])),  # top / bottom
                     2: (("x", 1.0, o_s - lo[0]), ("y", -1.0, o_u))}         # z faces: along x, up
            for ax, (s_def, u_def) in faces.items():
                self._set(self.box0 + k, s_def, u_def, (ax, 0.0), b["material"], b["tint"], ax)
        self.material = self.table[self._COLUMNS.index("material")].astype(np.int8)
        self.table_rows = np.ascontiguousarray(self.table.T)

    def _set(self, hit_id, s_def, u_def, n_def, material, tint, axis=None):
        codes = [3 * hit_id + axis] if axis is not None else [3 * hit_id + a for a in range(3)]
        col = {name: i for i, name in enumerate(self._COLUMNS)}
        for c in codes:
            (s_ax, s_sign, s_off), (u_ax, u_sign, u_off), (n_ax, n_sign) = s_def, u_def, n_def
            self.table[col["s_" + s_ax], c] = s_sign
            self.table[col["s_off"], c] = s_off
            self.table[col["u_" + u_ax], c] = u_sign
            self.table[col["u_off"], c] = u_off
            self.table[col["e_" + "xyz"[n_ax]], c] = 1.0
            # Lambert shading; the normal faces the ray (sign −sign(d·e)) unless n_sign is fixed
            for name, facing in (("shade_if_dn_pos", -1.0), ("shade_if_dn_neg", 1.0)):
                light = (n_sign or facing) * SUN_DIR[n_ax]
                self.table[col[name], c] = AMBIENT + DIFFUSE * max(light, 0.0)
            self.table[col["material"], c] = material
            self.table[col["tint_r"]:col["tint_b"] + 1, c] = tint


# --------------------------------------------------------------------------------------------
# textures (uint8 RGB albedo mip pyramids; rows = second surface coordinate, cols = first)
# --------------------------------------------------------------------------------------------

def _periodic_upsample(grid, factor):
    """Cubic upsampling of a periodic [h,w] grid by an integer factor; the result stays periodic."""
    gh, gw = grid.shape
    pad = np.pad(grid, 2, mode="wrap")
    up = cv2.resize(pad, ((gw + 4) * factor, (gh + 4) * factor), interpolation=cv2.INTER_CUBIC)
    return up[2 * factor:(gh + 2) * factor, 2 * factor:(gw + 2) * factor]


def _fbm(rng, h, w, cells, exponent=0.5):
    """[h,w] float32 multi-octave value noise, periodic, zero mean, unit std.

    Octaves have feature sizes ``cells`` (powers of two, in texels) and amplitudes ∝
    cell^exponent. Built coarse to fine (upsample ×2, add the next octave), so the cost is a few
    passes over the output whatever the number of octaves.
    """
    cells = sorted(cells, reverse=True)
    cell = cells[0]
    grid = rng.standard_normal((max(h // cell, 1), max(w // cell, 1)), dtype=np.float32)
    grid *= np.float32(cell ** exponent)
    while cell > cells[-1]:
        grid = _periodic_upsample(grid, 2)
        cell //= 2
        if cell in cells:
            grid += rng.standard_normal(grid.shape, dtype=np.float32) * np.float32(cell ** exponent)
    if cell > 1:
        grid = _periodic_upsample(grid, cell)
    grid = grid[:h, :w]
    return (grid - grid.mean()) / max(float(grid.std()), 1e-6)


def _cell_values(rng, ix, iy, lo, hi):
    """Per-cell random values for integer cell indices (periodic table of 257×263 entries)."""
    table = rng.uniform(lo, hi, size=(257, 263)).astype(np.float32)
    return table[np.mod(iy, 257), np.mod(ix, 263)]


def _coords(h, w, texel):
    """Texel-centre coordinates in metres: rows [h,1], cols [1,w]."""
    return ((np.arange(h, dtype=np.float32) + 0.5) * texel)[:, None], \
        ((np.arange(w, dtype=np.float32) + 0.5) * texel)[None, :]


def _colourise(gray, classes, colours):
    """[h,w,3] float32: gray × the colour of each texel's class (colours [C,3], C ≤ 256)."""
    lut = np.zeros((256, 1, 3), np.float32)
    lut[:len(colours), 0] = colours
    cls = np.ascontiguousarray(np.broadcast_to(classes, gray.shape), dtype=np.uint8)
    return cv2.LUT(cv2.merge([cls, cls, cls]), lut) * gray[..., None]


def _tex_ground(rng, texel=0.025, h=4096, w=1024):
    """Road plane: rows = z + ground_offset[1] (102.4 m period), cols = x + ground_offset[0]
    (25.6 m period: road |x| < 5.5, kerb to 5.7, paving tiles beyond)."""
    z, xs = _coords(h, w, texel)
    x = xs - GROUND_TEX_X0
    ax = np.abs(x)
    fine = _fbm(rng, h, w, [1, 2, 4, 8], 0.3)
    coarse = _fbm(rng, h, w, [32, 64, 128, 256, 512], 0.6)
    speck = rng.random((h, w), dtype=np.float32)
    speck = np.where(speck < 0.02, (speck - 0.01) * 12.0, 0.0).astype(np.float32)
    asphalt = 0.30 + 0.045 * fine + 0.05 * coarse + speck
    tiles_b = _cell_values(rng, np.floor(xs / 0.4).astype(np.int64),
                           np.floor(z / 0.4).astype(np.int64), 0.82, 1.18)
    grout = (np.mod(xs, 0.4) < texel) | (np.mod(z, 0.4) < texel)
    sidewalk = 0.55 * tiles_b * (1.0 + 0.07 * fine + 0.06 * coarse)
    sidewalk = np.where(grout, 0.62 * sidewalk, sidewalk)
    kerb = 0.68 * (1.0 + 0.06 * fine)
    edge_line = (ax >= 5.1) & (ax < 5.25)
    centre_dash = (np.abs(x + 1.75) < 0.075) & (np.mod(z, 10.24) < 3.2)
    road = np.where(edge_line | centre_dash, 0.82 * (0.9 + 0.08 * coarse), asphalt)
    is_road = np.broadcast_to(ax < 5.5, (h, w))
    gray = np.where(is_road, road, np.where(ax < 5.7, kerb, sidewalk))
    return _colourise(gray, (~is_road).astype(np.int64), [[0.95, 0.97, 1.0], [1.0, 0.95, 0.88]])


def _windows(a, hgt, period, x0, x1, y0, y1, min_height=3.2):
    """Masks (glass, frame) of a window grid: windows [x0,x1)×[y0,y1) in each period×period cell
    at heights ≥ min_height, with 8 cm frames."""
    ca, ch = np.mod(a, period), np.mod(hgt, period)
    inside = (ca >= x0) & (ca < x1) & (ch >= y0) & (ch < y1) & (hgt >= min_height)
    frame_w = 0.08
    inner = (ca >= x0 + frame_w) & (ca < x1 - frame_w) & (ch >= y0 + frame_w) & (ch < y1 - frame_w)
    return inside & inner, inside & ~inner


# facade texel classes and their colours per facade kind: wall, mortar/joint, cornice, frame, glass
_FACADE_COLOURS = {
    "brick": [[0.66, 0.38, 0.29], [0.9, 0.88, 0.84], [0.92, 0.9, 0.86], [0.95, 0.95, 0.93],
              [0.8, 0.9, 1.05]],
    "plaster": [[1.0, 0.95, 0.86], [1.0, 0.95, 0.86], [0.92, 0.9, 0.86], [0.95, 0.95, 0.93],
                [0.8, 0.9, 1.05]],
    "panel": [[0.95, 0.96, 1.0], [0.95, 0.96, 1.0], [0.92, 0.9, 0.86], [0.9, 0.92, 0.95],
              [0.8, 0.9, 1.05]],
}


def _tex_facade(rng, kind, texel=0.025, h=1024, w=2048):
    """Facades: rows = height above the road (25.6 m), cols = distance along the facade (51.2 m);
    windows on a 3.2 m grid (shop windows on the ground floor)."""
    hgt, a = _coords(h, w, texel)
    fine = _fbm(rng, h, w, [1, 2, 4, 8], 0.3)
    coarse = _fbm(rng, h, w, [32, 64, 128, 256], 0.6)
    per_window = _cell_values(rng, np.floor(a / 3.2).astype(np.int64),
                              np.floor(hgt / 3.2).astype(np.int64), 0.6, 1.5)
    glass = 0.17 * per_window * (1.0 + 0.35 * _fbm(rng, h, w, [16, 32, 64, 128], 0.7))
    ground_floor = hgt < 3.2
    if kind == "brick":
        row = np.floor(hgt / 0.1).astype(np.int64)
        shifted = a + 0.125 * np.mod(row, 2)
        brick_b = _cell_values(rng, np.floor(shifted / 0.25).astype(np.int64), row, 0.78, 1.22)
        joint = (np.mod(hgt, 0.1) < texel) | (np.mod(shifted, 0.25) < texel)
        wall = np.where(joint, 0.75 * (1 + 0.05 * fine), brick_b * (1 + 0.1 * fine + 0.08 * coarse))
        pane, frame = _windows(a, hgt, 3.2, 0.95, 2.25, 0.9, 2.5)
        shop, shop_frame = _windows(a, hgt, 3.2, 0.3, 2.9, 0.4, 2.7, min_height=0.0)
        cornice = (np.mod(hgt, 3.2) < 0.18) & (hgt > 1.0)
    elif kind == "plaster":
        joint = np.zeros((h, w), bool)
        wall = 0.8 * (1 + 0.05 * fine + 0.12 * coarse)
        pane, frame = _windows(a, hgt, 3.2, 1.1, 2.1, 0.8, 2.7)
        shop, shop_frame = _windows(a, hgt, 3.2, 0.5, 2.7, 0.3, 2.5, min_height=0.0)
        cornice = (np.mod(hgt, 3.2) < 0.25) & (hgt > 1.0)
    else:  # concrete panels with ribbon windows
        panel_b = _cell_values(rng, np.floor(a / 1.6).astype(np.int64),
                               np.floor(hgt / 1.6).astype(np.int64), 0.85, 1.15)
        joint = (np.mod(a, 1.6) < texel) | (np.mod(hgt, 1.6) < texel)
        wall = 0.62 * panel_b * (1 + 0.06 * fine + 0.08 * coarse)
        wall = np.where(joint, 0.55 * wall, wall)
        ch = np.mod(hgt, 3.2)
        mullion = np.mod(a, 1.6) < 0.07
        band = (ch >= 1.0) & (ch < 2.3) & (hgt > 3.0)
        pane, frame = band & ~mullion, band & mullion
        shop_band = (hgt >= 0.3) & (hgt < 2.6)
        shop, shop_frame = shop_band & ~mullion, shop_band & mullion
        cornice = np.zeros((h, w), bool)
    shop &= ground_floor
    shop_frame &= ground_floor
    classes = np.where(joint, 1, 0)
    gray = np.where(cornice, 0.78 * (1 + 0.05 * fine), wall)
    classes = np.where(cornice, 2, classes)
    is_frame = frame | shop_frame
    gray = np.where(is_frame, 0.85 * (1 + 0.04 * fine), gray)
    classes = np.where(is_frame, 3, classes)
    is_glass = pane | shop
    gray = np.where(is_glass, glass, gray)
    classes = np.where(is_glass, 4, classes)
    return _colourise(gray, classes, _FACADE_COLOURS[kind])


def _tex_simple(rng, base, colour, texel, size, line_period=None):
    """Square texture of a nearly uniform material (car paint, glass, metal)."""
    hgt, a = _coords(size, size, texel)
    gray = base * (1.0 + 0.06 * _fbm(rng, size, size, [1, 2, 4], 0.3)
                   + 0.1 * _fbm(rng, size, size, [16, 32, 64], 0.6))
    if line_period is not None:
        gray = np.where(np.mod(a, line_period) < 0.015, 0.6 * gray, gray)
    return _colourise(gray, np.zeros((size, size), np.int64), [colour])


def _tex_backdrop(rng, texel=0.1, h=512, w=4096):
    """Far walls: rows = height (51.2 m), cols = distance along the wall (409.6 m): blocks of
    distant buildings with window dots."""
    hgt, a = _coords(h, w, texel)
    edges = np.cumsum(rng.uniform(4.0, 16.0, size=64))
    block = np.searchsorted(edges, np.mod(a[0], edges[-1]))
    block_b = rng.uniform(0.35, 0.8, size=65).astype(np.float32)[block][None, :]
    dots = (np.mod(a, 1.6) < 0.7) & (np.mod(hgt, 1.8) < 0.9) & (hgt > 1.5)
    gray = block_b * (1.0 + 0.08 * _fbm(rng, h, w, [1, 2, 4], 0.3)
                      + 0.12 * _fbm(rng, h, w, [16, 64, 256], 0.6))
    gray = np.where(dots, 0.65 * gray, gray)
    colours = rng.uniform(0.85, 1.15, size=(65, 3))
    return _colourise(gray, np.broadcast_to(block[None, :], (h, w)), colours)


def _tex_sky(rng, h=256, w=2048):
    """Sky by direction: rows = elevation 0..90°, cols = azimuth −180..180°."""
    el = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]
    horizon = np.float32([0.86, 0.9, 0.94])
    zenith = np.float32([0.45, 0.62, 0.9])
    base = horizon + (zenith - horizon) * np.sqrt(el)[..., None]
    clouds = np.clip(_fbm(rng, h, w, [8, 16, 32, 64, 128], 0.8) - 0.3, 0.0, None)
    clouds = (clouds / max(float(clouds.max()), 1e-6))[..., None]
    return base * (1 - 0.6 * clouds) + 0.97 * 0.6 * clouds


class _MipAtlas:
    """A texture's mip pyramid packed into one uint8 image for ``cv2.remap``.

    Level 0 sits at (0, 0), levels 1.. are stacked in a column to its right. Each level is padded
    with one wrapped row and column, so a bilinear lookup at any coordinate in [0, w_l) × [0, h_l)
    of level l stays inside it and wraps seamlessly. ``texel`` is in metres (level 0).
    """

    def __init__(self, rgb, texel):
        levels = [np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)]
        while min(levels[-1].shape[:2]) > 4:
            top = levels[-1]
            levels.append(cv2.resize(top, (top.shape[1] // 2, top.shape[0] // 2),
                                     interpolation=cv2.INTER_AREA))
        h0, w0 = levels[0].shape[:2]
        column_h = sum(lev.shape[0] + 1 for lev in levels[1:])
        atlas = np.zeros((max(h0 + 1, column_h), w0 + 1 + levels[1].shape[1] + 1, 3), np.uint8)
        xo, yo, y = [], [], 0
        for i, lev in enumerate(levels):
            x0, y0 = (0, 0) if i == 0 else (w0 + 1, y)
            h, w = lev.shape[:2]
            atlas[y0:y0 + h + 1, x0:x0 + w + 1] = np.pad(lev, ((0, 1), (0, 1), (0, 0)), mode="wrap")
            xo.append(x0)
            yo.append(y0)
            if i > 0:
                y += h + 1
        self.atlas = atlas
        self.levels = len(levels)
        self.x_off = np.array(xo, np.float32)
        self.y_off = np.array(yo, np.float32)
        self.width = np.array([lev.shape[1] for lev in levels], np.float32)
        self.height = np.array([lev.shape[0] for lev in levels], np.float32)
        self.texel = texel

    def sample(self, s, u, level):
        """[N,3] float32 albedo (0..255) at surface coordinates s, u (metres; s → columns,
        u → rows) and mip ``level`` [N] (0 = full resolution), blending the two nearest levels."""
        level = np.clip(level, 0.0, self.levels - 1.001).astype(np.float32)
        l0 = level.astype(np.int32)
        frac = (level - l0)[:, None]
        sx = s * np.float32(1.0 / self.texel)
        sy = u * np.float32(1.0 / self.texel)
        out = None
        for lev in (l0, l0 + 1):
            mx = _wrap(np.ldexp(sx, -lev) - np.float32(0.5), self.width[lev]) + self.x_off[lev]
            my = _wrap(np.ldexp(sy, -lev) - np.float32(0.5), self.height[lev]) + self.y_off[lev]
            texels = _remap(self.atlas, mx, my)
            out = texels.astype(np.float32) if out is None else out + (texels - out) * frac
        return out


def _wrap(x, period):
    """x mod period for float32 arrays (faster than np.mod), in [0, period]."""
    return x - np.floor(x / period) * period


@functools.lru_cache(maxsize=2)
def _build_textures(seed):
    """{material name: _MipAtlas} and the sky image (uint8), for one generator seed."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 424242]))
    tex = {
        "ground": _MipAtlas(_tex_ground(rng), 0.025),
        "facade_brick": _MipAtlas(_tex_facade(rng, "brick"), 0.025),
        "facade_plaster": _MipAtlas(_tex_facade(rng, "plaster"), 0.025),
        "facade_panel": _MipAtlas(_tex_facade(rng, "panel"), 0.025),
        "car_body": _MipAtlas(_tex_simple(rng, 0.62, (1, 1, 1), 0.01, 512, line_period=1.28), 0.01),
        "glass": _MipAtlas(_tex_simple(rng, 0.14, (0.85, 0.92, 1.0), 0.02, 256), 0.02),
        "pole": _MipAtlas(_tex_simple(rng, 0.5, (0.95, 0.97, 1.0), 0.01, 256), 0.01),
        "backdrop": _MipAtlas(_tex_backdrop(rng), 0.1),
    }
    sky = np.clip(np.rint(_tex_sky(rng) * 255.0), 0, 255).astype(np.uint8)
    sky = np.pad(sky, ((0, 1), (0, 1), (0, 0)), mode="edge")
    sky[:, -1] = sky[:, 0]
    return tex, sky


def _remap(src, map_x, map_y):
    """Bilinear lookup of ``src`` [h,w,C] uint8 at pixel coordinates [N] (inside the image) →
    [N,C] uint8. (cv2.remap needs maps smaller than 32767 per side, hence the [·,1024] shape.)"""
    n = map_x.shape[0]
    cols = 1024
    rows = max(1, -(-n // cols))
    mx = np.zeros(rows * cols, np.float32)
    my = np.zeros(rows * cols, np.float32)
    mx[:n] = map_x
    my[:n] = map_y
    out = cv2.remap(src, mx.reshape(rows, cols), my.reshape(rows, cols), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(rows * cols, -1)[:n]


# --------------------------------------------------------------------------------------------
# ray casting
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _pixel_rays():
    """[3,H·W] float32 rectified-camera ray directions with z = 1 (so t along them = depth)."""
    u = np.arange(IMAGE_WIDTH, dtype=np.float64)
    v = np.arange(IMAGE_HEIGHT, dtype=np.float64)
    x = np.broadcast_to(((u - CX) / FX)[None, :], (IMAGE_HEIGHT, IMAGE_WIDTH))
    y = np.broadcast_to(((v - CY) / FY)[:, None], (IMAGE_HEIGHT, IMAGE_WIDTH))
    return np.stack([x, y, np.ones_like(x)]).astype(np.float32).reshape(3, -1)


@functools.lru_cache(maxsize=1)
def _pixel_ray_lengths():
    """[H·W] float32 norms of ``_pixel_rays`` (rotation does not change them)."""
    return np.sqrt((_pixel_rays() ** 2).sum(0)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _velodyne_rays():
    """[3,A·64] float32 unit ray directions in the Velodyne frame, azimuth-major
    (grid [A,64]: azimuth −180°..180°, rings +2°..−24.8°), a spinning scanner's firing order."""
    el = np.radians(VELO_ELEVATIONS_DEG)[None, :]
    step = 2 * math.pi / VELO_AZIMUTH_STEPS
    az = (-math.pi + (np.arange(VELO_AZIMUTH_STEPS) + 0.5) * step)[:, None]
    shape = (VELO_AZIMUTH_STEPS, len(VELO_ELEVATIONS_DEG))
    rays = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az),
                     np.broadcast_to(np.sin(el), shape)])
    return rays.astype(np.float32).reshape(3, -1)


_CORNER_BITS = np.array([[(i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], bool)
_EDGES = np.array([(i, j) for i in range(8) for j in range(i + 1, 8) if bin(i ^ j).count("1") == 1])


def _box_corners(geo):
    return np.where(_CORNER_BITS[None], geo.hi[:, None, :], geo.lo[:, None, :])  # [N,8,3]


def _camera_box_windows(geo, T_world_from_cam, near=0.05):
    """Per box, the pixel rectangle (row slice, column slice) that can contain its image.

    The box is clipped to the half-space z ≥ near of the camera; the rectangle bounds the
    projections of the clipped polytope's vertices (box corners in front, edge crossings of the
    near plane), with a one-pixel margin.
    """
    if len(geo.lo) == 0:
        return []
    R, centre = T_world_from_cam[:3, :3], T_world_from_cam[:3, 3]
    pts = (_box_corners(geo) - centre) @ R  # [N,8,3] in the camera frame
    a, b = pts[:, _EDGES[:, 0]], pts[:, _EDGES[:, 1]]
    za, zb = a[..., 2], b[..., 2]
    cross = (za - near) * (zb - near) < 0
    frac = np.where(cross, (near - za) / np.where(cross, zb - za, 1.0), 0.0)
    allpts = np.concatenate([pts, a + frac[..., None] * (b - a)], axis=1)
    valid = np.concatenate([pts[..., 2] >= near, cross], axis=1)
    z = np.where(valid, allpts[..., 2], 1.0)
    u = FX * allpts[..., 0] / z + CX
    v = FY * allpts[..., 1] / z + CY
    big = 1e9
    c0 = np.floor(np.where(valid, u, big).min(1)) - 1
    c1 = np.floor(np.where(valid, u, -big).max(1)) + 2
    r0 = np.floor(np.where(valid, v, big).min(1)) - 1
    r1 = np.floor(np.where(valid, v, -big).max(1)) + 2
    c0, r0 = np.clip(c0, 0, IMAGE_WIDTH), np.clip(r0, 0, IMAGE_HEIGHT)
    c1, r1 = np.clip(c1, 0, IMAGE_WIDTH), np.clip(r1, 0, IMAGE_HEIGHT)
    keep = valid.any(1) & (c0 < c1) & (r0 < r1)
    return [(k, slice(int(r0[k]), int(r1[k])), slice(int(c0[k]), int(c1[k])))
            for k in np.flatnonzero(keep)]


def _velodyne_box_windows(geo, T_world_from_velo):
    """Per box, the azimuth row slices of the [A,64] Velodyne ray grid that can contain it."""
    if len(geo.lo) == 0:
        return []
    R, centre = T_world_from_velo[:3, :3], T_world_from_velo[:3, 3]
    pts = (_box_corners(geo) - centre) @ R
    mid = ((geo.lo + geo.hi) / 2 - centre) @ R
    az_mid = np.arctan2(mid[:, 1], mid[:, 0])
    az = np.arctan2(pts[..., 1], pts[..., 0])
    rel = np.mod(az - az_mid[:, None] + math.pi, 2 * math.pi) - math.pi
    lo, hi = az_mid + rel.min(1), az_mid + rel.max(1)
    inside = ((geo.lo[:, 0] <= centre[0]) & (centre[0] <= geo.hi[:, 0]) &
              (geo.lo[:, 2] <= centre[2]) & (centre[2] <= geo.hi[:, 2]))
    n = VELO_AZIMUTH_STEPS
    delta = 2 * math.pi / n
    rings = slice(0, len(VELO_ELEVATIONS_DEG))
    windows = []
    for k in range(len(geo.lo)):
        j0 = int(math.floor((lo[k] + math.pi) / delta - 0.5)) - 1
        j1 = int(math.floor((hi[k] + math.pi) / delta - 0.5)) + 2
        if inside[k] or hi[k] - lo[k] > 0.9 * math.pi or j1 - j0 >= n:
            windows.append((k, slice(0, n), rings))
            continue
        j0 %= n
        windows.append((k, slice(j0, min(j0 + j1 - j0, n)), rings))
        if j0 + (j1 - j0) > n:
            windows.append((k, slice(0, j0 + (j1 - j0) - n), rings))
    return windows


def _cast(geo, origin, dirs, windows):
    """Nearest hit of the rays ``origin + t·dirs`` (dirs [3,H,W], world frame) with the scene.

    Returns:
        t [H,W] float32 (+inf = sky), hit id [H,W] int32 (see ``_Geometry``), face axis [H,W]
        int32 (0 except for boxes).
    """
    o = origin.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = [np.float32(1.0) / np.where(d == 0, np.float32(1e-30), d) for d in dirs]
        # ground plane y = 0 (the origin is above it: y < 0)
        down = dirs[1] > 1e-6
        best = np.where(down, -o[1] * inv[1], np.float32(np.inf)).astype(np.float32)
        ids = np.where(down, 0, -1).astype(np.int32)
        axis = np.zeros(best.shape, np.int32)
        # boxes: slab test inside each box's window
        for k, rows, cols in windows:
            tn = tf = ax = None
            for a in range(3):
                ia = inv[a][rows, cols]
                t1 = (np.float32(geo.lo[k, a]) - o[a]) * ia
                t2 = (np.float32(geo.hi[k, a]) - o[a]) * ia
                near, far = np.minimum(t1, t2), np.maximum(t1, t2)
                if a == 0:
                    tn, tf, ax = near, far, np.zeros(near.shape, np.int32)
                else:
                    upd = near > tn
                    tn = np.where(upd, near, tn)
                    ax[upd] = a
                    tf = np.minimum(tf, far)
            win_best = best[rows, cols]
            hit = (tn <= tf) & (tn > 1e-4) & (tn < win_best)
            if hit.any():
                win_best[hit] = tn[hit]
                ids[rows, cols][hit] = geo.box0 + k
                axis[rows, cols][hit] = ax[hit]
        # backdrop walls with skylines, only where nothing nearer was hit
        flat_best, flat_ids = best.reshape(-1), ids.reshape(-1)
        flat_dirs = dirs.reshape(3, -1)
        for i, wall in enumerate(geo.backdrops, start=1):
            a, other = wall["axis"], 2 - wall["axis"]
            t = (np.float32(wall["pos"]) - o[a]) * inv[a].reshape(-1)
            cand = np.flatnonzero((wall["sign"] * flat_dirs[a] > 1e-6) & (t < flat_best))
            tc = t[cand]
            height = -(o[1] + tc * flat_dirs[1, cand])
            along = o[other] + tc * flat_dirs[other, cand]
            sky = np.asarray(wall["skyline"]["heights"], np.float32)[
                np.searchsorted(np.asarray(wall["skyline"]["breaks"], np.float32), along)]
            ok = cand[(height >= 0) & (height <= sky)]
            flat_best[ok] = t[ok]
            flat_ids[ok] = i
    best[ids < 0] = np.inf
    return best, ids, axis


def _rotate(R, vectors):
    """[3,M] float32 R·vectors for a 3×3 R (written out: faster than a BLAS call here)."""
    R = R.astype(np.float32)
    return np.stack([R[i, 0] * vectors[0] + R[i, 1] * vectors[1] + R[i, 2] * vectors[2]
                     for i in range(3)])


def _shade_hits(geo, textures, origin, dirs, ray_lengths, t, ids, axis, pixel_angle):
    """Albedo and lighting of every ray that hit a surface.

    Args:
        dirs: [3,M] world ray directions and ray_lengths [M] their norms; t, ids, axis: [M] from
            ``_cast``;
        pixel_angle: angular size of one ray's footprint (radians), for the mip level.

    Returns:
        sel [N] indices of the hit rays (grouped by material), albedo × tint [N,3] (0..255),
        shade [N] (ambient + diffuse Lambert term).
    """
    sel = np.flatnonzero(ids >= 0)
    code = ids[sel] * 3 + axis[sel]
    material = geo.material[code]
    order = np.argsort(material, kind="stable")
    sel, code, material = sel[order], code[order], material[order]
    d = np.take(dirs, sel, axis=1)
    tt = t[sel]
    o = origin.astype(np.float32)
    px, py, pz = d[0] * tt + o[0], d[1] * tt + o[1], d[2] * tt + o[2]
    rows = np.take(geo.table_rows, code, axis=0)  # [N,C]: one row gather beats C column gathers
    tab = {name: rows[:, i] for i, name in enumerate(geo._COLUMNS)}
    s = px * tab["s_x"] + pz * tab["s_z"] + tab["s_off"]
    u = py * tab["u_y"] + pz * tab["u_z"] + tab["u_off"]
    dn = d[0] * tab["e_x"] + d[1] * tab["e_y"] + d[2] * tab["e_z"]  # ray · normal axis
    shade = np.where(dn > 0, tab["shade_if_dn_pos"], tab["shade_if_dn_neg"])
    ray_len = ray_lengths[sel]
    # footprint of one ray on the surface in metres (geometric mean of its two axes)
    cos = np.maximum(np.abs(dn) / ray_len, 0.02)
    footprint = tt * ray_len * np.float32(pixel_angle) / np.sqrt(cos)
    albedo = np.empty((len(sel), 3), np.float32)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(material, minlength=len(MATERIALS)))])
    for m in range(len(MATERIALS)):
        a, b = bounds[m], bounds[m + 1]
        if a == b:
            continue
        atlas = textures[MATERIALS[m]]
        level = np.log2(np.maximum(footprint[a:b] * np.float32(1.0 / atlas.texel), 1e-6))
        albedo[a:b] = atlas.sample(s[a:b], u[a:b], level)
    tint_col = geo._COLUMNS.index("tint_r")
    albedo *= rows[:, tint_col:tint_col + 3]
    return sel, albedo, shade


def _sky_colour(sky, dirs):
    """[M,3] uint8 sky colour for world directions [3,M] (sky image: rows = elevation 0..90°,
    cols = azimuth −180..180°, padded by one column)."""
    norm = np.sqrt((dirs * dirs).sum(0))
    el = np.arcsin(np.clip(-dirs[1] / norm, 0.0, 1.0))
    az = np.arctan2(dirs[0], dirs[2])
    h, w = sky.shape[0] - 1, sky.shape[1] - 1
    return _remap(sky, np.clip((az + math.pi) / (2 * math.pi) * w, 0, w).astype(np.float32),
                  np.clip(el / (math.pi / 2) * h - 0.5, 0, h).astype(np.float32))


def render_frame(drive, frame_index, cam=2):
    """Render one rectified camera image of the scene and its true depth.

    Args:
        drive: drive (or odometry sequence) folder holding ``scene.json``, the json path, or the
            scene dict of ``make_scene``.
        frame_index: 0-based frame.
        cam: rectified camera 0–3 (2 = left colour camera, image_02; 3 = right, image_03).

    Returns:
        rgb [375,1242,3] uint8 (what is written to disk before JPEG compression) and depth
        [375,1242] float32: camera-z depth in metres of the surface seen by each pixel (+inf for
        sky). Pixel (column c, row r) is the ray through u = c, v = r of ``P_rect_0{cam}``.
    """
    rgb, depth, _ = _render(drive, frame_index, cam, shade=True)
    return rgb, depth


def render_labels(drive, frame_index, cam=2):
    """Per-pixel material labels of one rectified camera image (no shading: ~3x cheaper than
    ``render_frame``) and its depth.

    Returns:
        labels [375,1242] uint8 (``material id + 1``, 0 = sky; see ``MATERIALS`` and
        ``LABEL_CLASSES``) and depth [375,1242] float32, pixel for pixel as ``render_frame``.
    """
    _, depth, labels = _render(drive, frame_index, cam, shade=False)
    return labels, depth


def _render(drive, frame_index, cam, shade):
    scene = load_scene(drive)
    geo = _Geometry(scene)
    T = camera_pose(scene, frame_index, cam)
    dirs = _rotate(T[:3, :3], _pixel_rays()).reshape(3, IMAGE_HEIGHT, IMAGE_WIDTH)
    depth, ids, axis = _cast(geo, T[:3, 3], dirs, _camera_box_windows(geo, T))
    hit = ids >= 0
    labels = np.zeros(ids.shape, np.uint8)
    labels[hit] = geo.material[ids[hit] * 3 + axis[hit]] + 1
    if not shade:
        return None, depth, labels
    textures, sky = _build_textures(geo.seed)
    flat_dirs = dirs.reshape(3, -1)
    sel, albedo, shade = _shade_hits(geo, textures, T[:3, 3], flat_dirs, _pixel_ray_lengths(),
                                     depth.reshape(-1), ids.reshape(-1), axis.reshape(-1), 1.0 / FX)
    rgb = np.empty((IMAGE_HEIGHT * IMAGE_WIDTH, 3), np.uint8)
    rgb[sel] = np.clip(albedo * shade[:, None] + 0.5, 0, 255).astype(np.uint8)
    miss = np.flatnonzero(ids.reshape(-1) < 0)
    if len(miss):
        rgb[miss] = _sky_colour(sky, flat_dirs[:, miss])
    return rgb.reshape(IMAGE_HEIGHT, IMAGE_WIDTH, 3), depth, labels


def render_velodyne(drive, frame_index):
    """One HDL-64-like scan.

    Returns:
        [N,4] float32: x, y, z in the Velodyne frame (x forward, y left, z up) and reflectance in
        [0,1] (the surface albedo's luminance); ordered by azimuth, then ring; only surface hits
        up to 120 m (no sky returns), no noise.
    """
    scene = load_scene(drive)
    geo = _Geometry(scene)
    textures, _ = _build_textures(geo.seed)
    T = velodyne_pose(scene, frame_index)
    rays = _velodyne_rays()
    dirs = _rotate(T[:3, :3], rays).reshape(3, VELO_AZIMUTH_STEPS, -1)
    rng_t, ids, axis = _cast(geo, T[:3, 3], dirs, _velodyne_box_windows(geo, T))
    ids = np.where(rng_t <= VELO_MAX_RANGE, ids, -1).reshape(-1)
    sel, albedo, _ = _shade_hits(geo, textures, T[:3, 3], dirs.reshape(3, -1),
                                 np.ones(rng_t.size, np.float32), rng_t.reshape(-1), ids,
                                 axis.reshape(-1), math.radians(0.2))
    reflectance = np.clip(albedo @ np.float32([0.299 / 255, 0.587 / 255, 0.114 / 255]), 0.0, 1.0)
    xyz = rays[:, sel] * rng_t.reshape(-1)[sel]
    return np.concatenate([xyz, reflectance[None]], axis=0).T.astype(np.float32)


# --------------------------------------------------------------------------------------------
# KITTI file formats
# --------------------------------------------------------------------------------------------

def _fmt(values, spec="%.6e"):
    """Space-separated numbers as KITTI writes them (no negative zeros)."""
    return " ".join(spec % v for v in np.asarray(values, np.float64).ravel() + 0.0)


def intrinsics():
    """[3,3] float64 rectified K of every camera."""
    return np.array([[FX, 0.0, CX], [0.0, FY, CY], [0.0, 0.0, 1.0]])


def projection_matrix(cam):
    """[3,4] float64 ``P_rect_0{cam} = K [I | −C_cam]`` in the rectified camera-0 frame."""
    P = np.zeros((3, 4))
    P[:, :3] = intrinsics()
    P[0, 3] = -FX * CAMERA_CENTRE_X[cam]
    return P


def calib_texts():
    """{file name: text} of the three KITTI raw calibration files of a date folder."""
    size = _fmt([IMAGE_WIDTH, IMAGE_HEIGHT])
    lines = ["calib_time: 09-Jan-2012 13:57:47", "corner_dist: 9.950000e-02"]
    for cam in range(4):
        lines += [f"S_0{cam}: {size}", f"K_0{cam}: {_fmt(intrinsics())}",
                  f"D_0{cam}: {_fmt(np.zeros(5))}", f"R_0{cam}: {_fmt(np.eye(3))}",
                  f"T_0{cam}: {_fmt([-CAMERA_CENTRE_X[cam], 0, 0])}",
                  f"S_rect_0{cam}: {size}", f"R_rect_0{cam}: {_fmt(np.eye(3))}",
                  f"P_rect_0{cam}: {_fmt(projection_matrix(cam))}"]
    cam_to_cam = "\n".join(lines) + "\n"
    velo_to_cam = (f"calib_time: 15-Mar-2012 11:37:16\nR: {_fmt(R_CAM_FROM_VELO)}\n"
                   f"T: {_fmt(T_CAM_FROM_VELO)}\n"
                   f"delta_f: {_fmt([0, 0])}\ndelta_c: {_fmt([0, 0])}\n")
    imu_to_velo = (f"calib_time: 25-May-2012 16:47:16\nR: {_fmt(R_VELO_FROM_IMU)}\n"
                   f"T: {_fmt(T_VELO_FROM_IMU)}\n")
    return {"calib_cam_to_cam.txt": cam_to_cam, "calib_velo_to_cam.txt": velo_to_cam,
            "calib_imu_to_velo.txt": imu_to_velo}


def odometry_calib_text():
    """Text of an odometry ``sequences/XX/calib.txt`` (P0..P3, Tr = velo → camera 0)."""
    Tr = np.hstack([R_CAM_FROM_VELO, T_CAM_FROM_VELO[:, None]])
    lines = [f"P{cam}: {_fmt(projection_matrix(cam), '%.12e')}" for cam in range(4)]
    return "\n".join(lines + [f"Tr: {_fmt(Tr, '%.12e')}"]) + "\n"


def odometry_poses_text(scene):
    """Text of ``poses/XX.txt``: per frame the 3×4 T_cam0(frame 0)_from_cam0(frame i)."""
    T0 = camera_pose(scene, 0, 0)
    rows = []
    for i in range(scene["num_frames"]):
        Ti = camera_pose(scene, i, 0)
        rel = np.hstack([T0[:3, :3].T @ Ti[:3, :3], T0[:3, :3].T @ (Ti[:3, 3:] - T0[:3, 3:])])
        rows.append(_fmt(rel, "%.9e"))
    return "\n".join(rows) + "\n"


def _write_bytes(path, data):
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _write_text(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _write_bytes(path, text.encode("utf-8"))


def _encode(ext, image, params=()):
    ok, buf = cv2.imencode(ext, image, list(params))
    if not ok:
        raise ValueError(f"OpenCV could not encode a {ext} image")
    return buf.tobytes()


def _write_rgb(path_no_ext, rgb, png):
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    _write_bytes(path_no_ext + ".jpg", _encode(".jpg", bgr, JPEG_PARAMS))
    if png:
        _write_bytes(path_no_ext + ".png", _encode(".png", bgr))


def _gt_png(depth, rng):
    """uint16 PNG bytes of depth·256 at ~30% of the pixels with a surface ≤ 120 m (0 elsewhere)."""
    keep = np.isfinite(depth) & (depth <= VELO_MAX_RANGE)
    keep &= rng.uniform(size=depth.shape) < GT_DENSITY
    gt = np.where(keep, np.rint(np.where(keep, depth, 0.0) * 256.0), 0).astype(np.uint16)
    return _encode(".png", gt)


# --------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------

def drive_folder(drive, date=DEFAULT_DATE):
    """``<date>/<date>_drive_<NNNN>_sync`` (the folder column of a split line)."""
    return f"{date}/{date}_drive_{drive:04d}_sync"


def split_lines(num_drives=DEFAULT_NUM_DRIVES, num_frames=DEFAULT_NUM_FRAMES,
                odom_frames=DEFAULT_ODOM_FRAMES, date=DEFAULT_DATE, odometry=True):
    """Split lists (Monodepth2 line formats) of the scene generated with these parameters.

    - ``synthetic/train_files.txt``: drives 9001..(9000+num_drives−1) (all drives when there is
      only one), frames 1..num_frames−2 except every 8th, sides ``l`` and ``r``.
    - ``synthetic/val_files.txt``: the every-8th frames of those drives (the middle frame when none
      is a multiple of 8), both sides.
    - ``synthetic/test_files.txt``: the last drive, frames 1, 3, 5, ... ≤ num_frames−2, side l.
    - ``synthetic_odom/test_files_09.txt`` / ``_10.txt``: ``<sequence> <frame> l`` for frames
      0..odom_frames−2 (every frame with a +1 neighbour), as Monodepth2's odometry lists
      (only with ``odometry=True``).

    Returns:
        {relative path: [lines]}.
    """
    if num_drives < 1 or num_frames < 3:
        raise ValueError(f"need --num_drives >= 1 and --num_frames >= 3, got {num_drives} and "
                         f"{num_frames}")
    drives = [FIRST_DRIVE + i for i in range(num_drives)]
    train_drives = drives[:-1] if num_drives > 1 else drives
    inner = list(range(1, num_frames - 1))
    val_frames = [f for f in inner if f % 8 == 0] or [num_frames // 2]
    train_frames = [f for f in inner if f not in val_frames]
    out = {
        "synthetic/train_files.txt": [f"{drive_folder(d, date)} {f} {side}" for d in train_drives
                                      for f in train_frames for side in "lr"],
        "synthetic/val_files.txt": [f"{drive_folder(d, date)} {f} {side}" for d in train_drives
                                    for f in val_frames for side in "lr"],
        "synthetic/test_files.txt": [f"{drive_folder(drives[-1], date)} {f} l"
                                     for f in range(1, num_frames - 1, 2)],
    }
    for seq in ODOM_SEQUENCES if odometry else ():
        out[f"synthetic_odom/test_files_{seq:02d}.txt"] = [f"{seq} {f} l"
                                                            for f in range(odom_frames - 1)]
    return out


def write_splits(split_root, num_drives=DEFAULT_NUM_DRIVES, num_frames=DEFAULT_NUM_FRAMES,
                 odom_frames=DEFAULT_ODOM_FRAMES, date=DEFAULT_DATE, odometry=True):
    """Write the ``split_lines`` files under ``split_root`` (e.g. the repo's ``splits/``).

    Returns:
        list of the written paths.
    """
    paths = []
    for rel, lines in split_lines(num_drives, num_frames, odom_frames, date, odometry).items():
        path = os.path.join(split_root, *rel.split("/"))
        _write_text(path, "".join(line + "\n" for line in lines))
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------------

def _check_writable(root):
    try:
        os.makedirs(root, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".write_probe")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"cannot write to the output folder {root} ({e.strerror or e}); "
                         "choose another --out") from None


def _frame_rng(seed, tag, frame):
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(tag), int(frame), 7]))


def label_path(drive_dir, frame):
    """``<drive>/semantic_synthetic/image_02/%010d.png``: the material labels of a frame's left
    image (not a KITTI folder; nothing that reads real KITTI needs it)."""
    return os.path.join(drive_dir, *LABEL_DIR.split("/"), f"{frame:010d}.png")


def read_labels(drive_dir, frame):
    """[375,1242] uint8 labels of ``label_path`` (``material id + 1``, 0 = sky)."""
    path = label_path(drive_dir, frame)
    labels = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise FileNotFoundError(f"label map {path} is missing or unreadable: run "
                                "`python -m datasets.synthetic_kitti --out <data_path>` again "
                                "(it adds the label maps to an existing scene)")
    return labels


def class_mask(labels, name):
    """Boolean mask of the pixels of class ``name`` (a key of ``LABEL_CLASSES``) in a label map."""
    ids = [MAT[m] + 1 for m in LABEL_CLASSES[name]]
    return np.isin(labels, ids)


def gt_class_mask(labels, name, margin=1):
    """``class_mask`` in the pixel convention of projected-Velodyne ground truth, for scoring.

    KITTI's ``generate_depth_map`` (and ``export_gt_depth.py``) stores a point that projects to
    (u, v) at pixel (round(u) − 1, round(v) − 1), one pixel up-left of the ray that the image and
    the label map show there, so the mask is shifted by one pixel. Pixels within ``margin`` pixels
    of another class are left out: the scanner sits 0.27 m behind the camera and sees an object's
    outline from a slightly different place.
    """
    mask = class_mask(labels, name).astype(np.uint8)
    if margin:
        mask = cv2.erode(mask, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8))
    shifted = np.zeros_like(mask)
    shifted[:-1, :-1] = mask[1:, 1:]
    return shifted.astype(bool)


def _write_labels(drive_dir, frame, labels):
    _write_bytes(label_path(drive_dir, frame), _encode(".png", labels))


def _write_raw_frame(scene, drive_dir, frame, png, gt_depth):
    name = f"{frame:010d}"
    rgb2, depth2, labels2 = _render(scene, frame, 2, shade=True)
    _write_labels(drive_dir, frame, labels2)
    _write_rgb(os.path.join(drive_dir, "image_02", "data", name), rgb2, png)
    rgb3, _ = render_frame(scene, frame, 3)
    _write_rgb(os.path.join(drive_dir, "image_03", "data", name), rgb3, png)
    velo = render_velodyne(scene, frame)
    _write_bytes(os.path.join(drive_dir, "velodyne_points", "data", name + ".bin"), velo.tobytes())
    if gt_depth:
        png_bytes = _gt_png(depth2, _frame_rng(scene["seed"], scene["tag"], frame))
        gt_dir = os.path.join(drive_dir, "proj_depth", "groundtruth", "image_02")
        _write_bytes(os.path.join(gt_dir, name + ".png"), png_bytes)


def _write_odom_frame(scene, seq_dir, frame, png):
    name = f"{frame:06d}"
    for cam, sub in ((2, "image_2"), (3, "image_3")):
        rgb, _ = render_frame(scene, frame, cam)
        _write_rgb(os.path.join(seq_dir, sub, name), rgb, png)


def _validate(num_drives, num_frames, step, odom_frames):
    if not isinstance(num_drives, int) or not 1 <= num_drives <= 999:
        raise ValueError(f"--num_drives must be an integer in 1..999, got {num_drives}")
    if not isinstance(num_frames, int) or num_frames < 3:
        raise ValueError("--num_frames must be an integer >= 3 (frames need -1/+1 neighbours), "
                         f"got {num_frames}")
    if not isinstance(odom_frames, int) or odom_frames < 2:
        raise ValueError(f"--odom_frames must be an integer >= 2, got {odom_frames}")
    if not (isinstance(step, (int, float)) and 0.0 < step <= 3.0):
        raise ValueError(f"--step must be in (0, 3] metres per frame, got {step}")


def generate(root, seed=DEFAULT_SEED, num_drives=DEFAULT_NUM_DRIVES, num_frames=DEFAULT_NUM_FRAMES,
             step=DEFAULT_STEP, png=False, odometry=False, odom_frames=DEFAULT_ODOM_FRAMES,
             gt_depth=True, date=DEFAULT_DATE, force=False, progress=True, workers=1):
    """Write the synthetic scene under ``root`` (layout in the module docstring).

    Args:
        root: output folder (created).
        seed: generator seed; the same parameters give byte-identical files.
        num_drives: raw drives 9001, 9002, ...; the last one is the test drive.
        num_frames: frames per raw drive.
        step: metres the camera moves per frame.
        png: also write ``.png`` images next to the ``.jpg`` ones (for ``--png``).
        odometry: also write odometry sequences 09 and 10 (``odom_frames`` frames each).
        gt_depth: write ``proj_depth/groundtruth/image_02`` PNGs (uint16 depth·256, ~30% density).
        date: the date folder.
        force: regenerate even if ``<root>/.synthetic_complete.json`` records these parameters.
        progress: show a tqdm progress bar.
        workers: processes rendering frames in parallel (the files do not depend on it).

    Returns:
        dict: ``params``, ``skipped`` (True when the cache marker matched), ``seconds``, ``root``.

    Raises:
        ValueError: bad parameters or an output folder that cannot be written.
    """
    _validate(num_drives, num_frames, step, odom_frames)
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers must be a positive integer, got {workers}")
    root = os.fspath(root)
    params = {"version": FORMAT_VERSION, "seed": int(seed), "num_drives": num_drives,
              "num_frames": num_frames, "step": float(step), "png": bool(png),
              "odometry": bool(odometry), "odom_frames": odom_frames if odometry else None,
              "gt_depth": bool(gt_depth), "date": date}
    marker = os.path.join(root, COMPLETE_MARKER)
    if not force and os.path.isfile(marker):
        try:
            with open(marker, "r", encoding="utf-8") as f:
                if json.load(f) == params:
                    start = time.time()
                    added = _add_missing_labels(root, params, workers, progress)
                    return {"params": params, "skipped": True, "seconds": time.time() - start,
                            "root": root, "labels_added": added}
        except (OSError, ValueError):
            pass
    _check_writable(root)
    if os.path.exists(marker):
        os.remove(marker)
    start = time.time()

    jobs = []  # (kind, scene, folder, frame, png, gt_depth)
    date_dir = os.path.join(root, date)
    for fname, text in calib_texts().items():
        _write_text(os.path.join(date_dir, fname), text)
    for i in range(num_drives):
        drive = FIRST_DRIVE + i
        drive_dir = os.path.join(root, *drive_folder(drive, date).split("/"))
        scene = make_scene(seed, drive, num_frames, step, name=drive_folder(drive, date))
        _prepare_raw_drive(drive_dir, scene, png, gt_depth)
        jobs += [("raw", scene, drive_dir, f, png, gt_depth) for f in range(num_frames)]
    if odometry:
        for seq in ODOM_SEQUENCES:
            seq_dir = os.path.join(root, "sequences", f"{seq:02d}")
            scene = make_scene(seed, 100000 + seq, odom_frames, step, name=f"sequences/{seq:02d}")
            _prepare_odom_sequence(root, seq_dir, seq, scene)
            jobs += [("odom", scene, seq_dir, f, png, False) for f in range(odom_frames)]
    write_splits(os.path.join(root, "splits"), num_drives, num_frames, odom_frames, date, odometry)

    _run_jobs(jobs, workers, progress)
    _write_text(marker, json.dumps(params, indent=1, sort_keys=True) + "\n")
    return {"params": params, "skipped": False, "seconds": time.time() - start, "root": root}


def _add_missing_labels(root, params, workers, progress):
    """Write the label maps a complete scene lacks (one made before they existed, or whose
    ``semantic_synthetic`` folder was deleted); returns how many were written."""
    jobs = []
    for i in range(params["num_drives"]):
        drive_dir = os.path.join(root, *drive_folder(FIRST_DRIVE + i, params["date"]).split("/"))
        missing = [f for f in range(params["num_frames"])
                   if not os.path.isfile(label_path(drive_dir, f))]
        if missing:
            scene = load_scene(drive_dir)
            os.makedirs(os.path.join(drive_dir, *LABEL_DIR.split("/")), exist_ok=True)
            jobs += [("labels", scene, drive_dir, f, False, False) for f in missing]
    if jobs:
        _run_jobs(jobs, workers, progress)
    return len(jobs)


def _run_job(job):
    kind, scene, folder, frame, png, gt_depth = job
    if kind == "raw":
        _write_raw_frame(scene, folder, frame, png, gt_depth)
    elif kind == "labels":
        _write_labels(folder, frame, render_labels(scene, frame, 2)[0])
    else:
        _write_odom_frame(scene, folder, frame, png)
    return frame


def _worker_init(seed):
    cv2.setNumThreads(1)  # one process per core instead
    _reuse_freed_memory()
    _build_textures(seed)


def _reuse_freed_memory():
    """Ask glibc to keep freed memory for reuse instead of returning every large temporary array
    to the OS (which costs page faults on the next one): ~20% less time in a worker process."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 256 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 1024 * 1024 * 1024)
    except (OSError, AttributeError):
        pass


def _run_jobs(jobs, workers, progress):
    """Render and write every frame job, in ``workers`` processes.

    Workers are *spawned* (fresh interpreters): forking a process that already runs OpenCV's or
    PyTorch's thread pools can deadlock the children. Each worker builds the textures once.
    """
    bar = _progress(len(jobs), progress)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                _run_job(job)
                bar.update(1)
            return
        ctx = multiprocessing.get_context("spawn")
        seed = jobs[0][1]["seed"]
        with ctx.Pool(workers, initializer=_worker_init, initargs=(seed,)) as pool:
            for _ in pool.imap_unordered(_run_job, jobs, chunksize=1):
                bar.update(1)
    finally:
        bar.close()


def _scene_json(scene):
    return json.dumps(scene, indent=1, sort_keys=True) + "\n"


def _prepare_raw_drive(drive_dir, scene, png, gt_depth):
    subdirs = ["image_02/data", "image_03/data", "velodyne_points/data", LABEL_DIR]
    if gt_depth:
        subdirs.append("proj_depth/groundtruth/image_02")
    for sub in subdirs:
        os.makedirs(os.path.join(drive_dir, *sub.split("/")), exist_ok=True)
    _write_text(os.path.join(drive_dir, "scene.json"), _scene_json(scene))


def _prepare_odom_sequence(root, seq_dir, seq, scene):
    for sub in ("image_2", "image_3"):
        os.makedirs(os.path.join(seq_dir, sub), exist_ok=True)
    _write_text(os.path.join(seq_dir, "scene.json"), _scene_json(scene))
    _write_text(os.path.join(seq_dir, "calib.txt"), odometry_calib_text())
    _write_text(os.path.join(seq_dir, "times.txt"),
                "".join("%.6e\n" % (0.1 * i) for i in range(scene["num_frames"])))
    _write_text(os.path.join(root, "poses", f"{seq:02d}.txt"), odometry_poses_text(scene))


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total, enabled):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc="synthetic KITTI frames", unit="frame")


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------

def _parser():
    p = argparse.ArgumentParser(
        prog="python -m datasets.synthetic_kitti",
        description="Write a synthetic street scene in KITTI's raw (and optionally odometry) "
                    "format, deterministic by seed, plus its split lists.")
    p.add_argument("--out", default="synthetic_kitti",
                   help="output folder, used as --data_path for training/evaluation "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help="generator seed; same parameters give byte-identical files "
                        "(default: %(default)s)")
    p.add_argument("--num_drives", type=int, default=DEFAULT_NUM_DRIVES,
                   help="raw drives 9001, 9002, ...; the last is the test drive "
                        "(default: %(default)s)")
    p.add_argument("--num_frames", type=int, default=DEFAULT_NUM_FRAMES,
                   help="frames per raw drive (default: %(default)s)")
    p.add_argument("--step", type=float, default=DEFAULT_STEP,
                   help="metres the camera moves per frame; ~1 m did not train from scratch, "
                        "0.4-0.6 m did (default: %(default)s)")
    p.add_argument("--png", action="store_true",
                   help="also write .png images next to the .jpg ones (for training with --png)")
    p.add_argument("--odometry", action="store_true",
                   help="also write KITTI-odometry sequences 09 and 10 (sequences/XX, "
                        "poses/XX.txt) in the same folder, for pose evaluation")
    p.add_argument("--odom_frames", type=int, default=DEFAULT_ODOM_FRAMES,
                   help="frames per odometry sequence (default: %(default)s)")
    p.add_argument("--no_gt_depth", action="store_true",
                   help="do not write proj_depth/groundtruth PNGs (needed only for "
                        "eigen_benchmark-style evaluation)")
    p.add_argument("--force", action="store_true",
                   help="regenerate even if the folder already holds a scene with these parameters")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes rendering frames in parallel; the output does not depend on it "
                        "(default: %(default)s)")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    _reuse_freed_memory()  # this process is ours: trade a little memory for speed
    result = generate(args.out, seed=args.seed, num_drives=args.num_drives,
                      num_frames=args.num_frames, step=args.step, png=args.png,
                      odometry=args.odometry, odom_frames=args.odom_frames,
                      gt_depth=not args.no_gt_depth, force=args.force,
                      progress=not args.no_progress, workers=args.workers)
    root = os.path.abspath(result["root"])
    if result["skipped"]:
        print(f"{root} already holds the synthetic scene with these parameters "
              "(use --force to rewrite)"
              + (f"; added the {result['labels_added']} label maps it lacked"
                 if result.get("labels_added") else ""))
    else:
        print(f"wrote the synthetic KITTI scene to {root} in {result['seconds']:.1f} s")
    defaults = (args.num_drives, args.num_frames) == (DEFAULT_NUM_DRIVES, DEFAULT_NUM_FRAMES)
    if defaults:
        print(f"train / evaluate with: --data_path {root} --split synthetic "
              "(evaluation: --eval_split synthetic)")
    else:
        print("non-default drives/frames: the repo's splits/synthetic lists do not match; copy "
              f"{os.path.join(root, 'splits', 'synthetic')} to splits/<name>/ and use "
              "--split <name>")
    if args.odometry:
        print(f"odometry: --data_path {root} with the lists in splits/synthetic_odom "
              "(test_files_09.txt, test_files_10.txt)")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from utils import run_cli
    run_cli(main)
