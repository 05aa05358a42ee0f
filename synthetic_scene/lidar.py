"""The HDL-64-like Velodyne scan of a frame (ray casting from the Velodyne)."""

import functools
import math

import numpy as np

from synthetic_scene.constants import VELO_AZIMUTH_STEPS, VELO_ELEVATIONS_DEG, VELO_MAX_RANGE
from synthetic_scene.raycast import _box_corners, _cast, _rotate, _shade_hits
from synthetic_scene.scene import _Geometry, load_scene, velodyne_pose
from synthetic_scene.textures import _build_textures


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
