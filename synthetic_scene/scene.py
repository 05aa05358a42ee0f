"""The street: trajectory, facades, parked cars, poles, backdrop walls; camera and Velodyne
poses."""

import json
import math
import os

import numpy as np

from synthetic_scene.constants import (AMBIENT, CAMERA_CENTRE_X, CAMERA_HEIGHT, DEFAULT_STEP,
                                       DIFFUSE, FORMAT_VERSION, GROUND_TEX_X0, GROUND_TEX_Z0, MAT,
                                       R_CAM_FROM_VELO, SUN_DIR, T_CAM_FROM_VELO)


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
                                "`python -m synthetic_scene --out <folder>`")
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
