"""Vectorised ray casting of a camera frame: colour, depth and the per-pixel material labels."""

import functools
import math

import numpy as np

from synthetic_scene.constants import CX, CY, FX, FY, IMAGE_HEIGHT, IMAGE_WIDTH, MATERIALS
from synthetic_scene.scene import _Geometry, camera_pose, load_scene
from synthetic_scene.textures import _build_textures, _remap


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
