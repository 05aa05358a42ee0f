"""KITTI file formats: calibration text files, Velodyne scans, odometry poses, and the
Velodyne → depth-map projection of the published evaluation protocol.

Frames used here (KITTI raw):
- Velodyne: x forward, y left, z up (metres).
- Camera 0 (unrectified reference camera): x right, y down, z forward.
- Rectified camera ``cam`` (2 = left colour, 3 = right colour): camera 0 rotated by ``R_rect_00``;
  ``P_rect_0{cam}`` projects rectified camera-0 coordinates to pixels of camera ``cam``.

Projection of a Velodyne point ``X_velo`` (homogeneous, [4]) to pixels of camera ``cam``::

    [u·z, v·z, z]ᵀ = P_rect_0{cam} · R_rect_00 (4×4) · T_cam0_from_velo (4×4) · X_velo
"""

import os

import numpy as np
import PIL.Image

from utils import CLIError


def check_data_path(data_path):
    """Raise ``CLIError`` with the download / synthetic-scene instructions when ``data_path`` is
    not a folder."""
    if not os.path.isdir(data_path):
        raise CLIError(
            f"--data_path {data_path} does not exist: download KITTI (see README 'KITTI "
            "preparation') or generate the synthetic demo scene with "
            f"`python -m synthetic_scene --out {data_path}`")


# Calibration keys are written like "P_rect_02: 7.2e+02 0.0 ..."; values that do not parse as
# floats (e.g. "calib_time: 09-Jan-2012 13:57:47") are skipped.


def read_calib_file(path):
    """Read a KITTI calibration text file (``key: v1 v2 ...`` per line).

    Args:
        path: e.g. ``<date>/calib_cam_to_cam.txt``, ``calib_velo_to_cam.txt`` or an odometry
            ``calib.txt``.

    Returns:
        dict mapping each key to a float64 array of its values ([n]); keys whose values are not
        all numbers (such as ``calib_time``) are left out.

    Raises:
        FileNotFoundError: naming ``path`` when it does not exist.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"calibration file {path} does not exist")
    data = {}
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            key, sep, value = line.partition(":")
            if not sep:
                continue
            try:
                data[key.strip()] = np.array([float(v) for v in value.split()], dtype=np.float64)
            except ValueError:
                pass
    return data


def _calib_entry(calib, key, size, path):
    """Return ``calib[key]`` checked to hold ``size`` numbers, with an error naming the file."""
    if key not in calib:
        raise ValueError(f"calibration file {path} has no '{key}' entry")
    value = calib[key]
    if value.size != size:
        raise ValueError(f"calibration file {path}: '{key}' has {value.size} numbers, expected {size}")
    return value


def load_velodyne_points(path):
    """Load a KITTI Velodyne scan (``.bin``: float32 x, y, z, reflectance per point).

    Returns:
        [N,4] float32 array of homogeneous Velodyne points: x, y, z and a last column of 1
        (the reflectance is replaced so the rows can be multiplied by 4×4 transforms).

    Raises:
        FileNotFoundError: naming ``path``; ValueError if its size is not a multiple of 16 bytes.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"velodyne file {path} does not exist")
    points = np.fromfile(path, dtype=np.float32)
    if points.size % 4:
        raise ValueError(f"velodyne file {path} is corrupt: {points.size} floats is not a multiple "
                         "of 4 (x, y, z, reflectance)")
    points = points.reshape(-1, 4)
    points[:, 3] = 1.0
    return points


def sub2ind(matrix_size, row_sub, col_sub):
    """Duplicate-detection key of the published KITTI depth-map code: ``row·(W−1) + col − 1``.

    This is not a true linear index: besides identical (row, col) pairs it also gives the same key
    to (row, W−1) and (row+1, 0). ``generate_depth_map(..., duplicates="closest")`` uses it as the
    published code does, so exported ground truth matches it bit for bit.

    Args:
        matrix_size: (H, W) of the depth map.
        row_sub, col_sub: 0-based integer (or integral float) row and column arrays.
    """
    _, width = matrix_size
    return row_sub * (width - 1) + col_sub - 1


def image_shape_from_calib(cam_to_cam, path="calib_cam_to_cam.txt"):
    """(H, W) of the rectified images, from ``S_rect_02`` (which the published code uses for both
    colour cameras; they have the same size)."""
    width, height = _calib_entry(cam_to_cam, "S_rect_02", 2, path)
    return int(height), int(width)


def velo_to_image_matrix(calib_dir, cam=2):
    """The 3×4 matrix ``P_rect_0{cam} · R_rect_00 · T_cam0_from_velo`` and the image shape.

    Args:
        calib_dir: folder holding ``calib_cam_to_cam.txt`` and ``calib_velo_to_cam.txt``
            (the date folder of KITTI raw, e.g. ``kitti_data/2011_09_26``).
        cam: 2 (left colour camera) or 3 (right).

    Returns:
        (P_im_from_velo [3,4] float64, (H, W)).
    """
    cam_path = os.path.join(calib_dir, "calib_cam_to_cam.txt")
    velo_path = os.path.join(calib_dir, "calib_velo_to_cam.txt")
    cam_to_cam = read_calib_file(cam_path)
    velo_to_cam = read_calib_file(velo_path)

    T_cam0_from_velo = np.eye(4)
    T_cam0_from_velo[:3, :3] = _calib_entry(velo_to_cam, "R", 9, velo_path).reshape(3, 3)
    T_cam0_from_velo[:3, 3] = _calib_entry(velo_to_cam, "T", 3, velo_path)

    R_rect = np.eye(4)
    R_rect[:3, :3] = _calib_entry(cam_to_cam, "R_rect_00", 9, cam_path).reshape(3, 3)
    P_rect = _calib_entry(cam_to_cam, f"P_rect_0{cam}", 12, cam_path).reshape(3, 4)

    return P_rect @ R_rect @ T_cam0_from_velo, image_shape_from_calib(cam_to_cam, cam_path)


def project_velodyne_to_depth(velo, P_im_from_velo, im_shape, vel_depth=False, duplicates="closest"):
    """Rasterise Velodyne points into a sparse depth map (the core of ``generate_depth_map``).

    Args:
        velo: [N,4] homogeneous Velodyne points (x forward, y left, z up, 1).
        P_im_from_velo: [3,4] projection from Velodyne coordinates to pixels.
        im_shape: (H, W) of the output map.
        vel_depth: if True the depth of a point is its Velodyne x (forward distance from the
            Velodyne), as in the published Eigen ground truth; else its z in the camera frame.
        duplicates: which depth a pixel hit by several points keeps:
            ``"closest"`` — the smallest depth, exactly as the published code (including its
            ``sub2ind`` key, see there; the minimum is written at the pixel of the first point of
            the group in file order); ``"last"`` — the last point in file order.

    Returns:
        [H,W] float32 depth in metres, 0 where no point landed.

    Points with Velodyne x < 0 are dropped; pixel coordinates are ``round(u) − 1`` and
    ``round(v) − 1`` (NumPy's round-half-to-even), matching the KITTI MATLAB devkit's 1-based
    pixel indices; points outside the image are dropped; negative depths become 0.
    """
    if duplicates not in ("closest", "last"):
        raise ValueError(f"duplicates must be 'closest' or 'last', got {duplicates!r}")
    height, width = im_shape
    velo = velo[velo[:, 0] >= 0]
    pts = (np.asarray(P_im_from_velo, dtype=np.float64) @ velo.T.astype(np.float64)).T  # [N,3]
    pts[:, :2] = pts[:, :2] / pts[:, 2:3]
    if vel_depth:
        pts[:, 2] = velo[:, 0]

    cols = np.round(pts[:, 0]) - 1
    rows = np.round(pts[:, 1]) - 1
    inside = (cols >= 0) & (rows >= 0) & (cols < width) & (rows < height)
    cols = cols[inside].astype(np.int64)
    rows = rows[inside].astype(np.int64)
    z = pts[inside, 2]

    depth = np.zeros((height, width), dtype=np.float64)
    if duplicates == "last":
        # the last occurrence of each pixel = the first occurrence in the reversed order
        _, first_in_reversed = np.unique((rows * width + cols)[::-1], return_index=True)
        keep = len(z) - 1 - first_in_reversed
        depth[rows[keep], cols[keep]] = z[keep]
    else:
        depth[rows, cols] = z
        keys = sub2ind(depth.shape, rows, cols)
        _, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True,
                                              return_counts=True)
        group_min = np.full(len(first), np.inf)
        np.minimum.at(group_min, inverse, z)
        dup = counts > 1
        depth[rows[first[dup]], cols[first[dup]]] = group_min[dup]
    depth[depth < 0] = 0
    return depth.astype(np.float32)


def generate_depth_map(calib_dir, velo_filename, cam=2, vel_depth=False, duplicates="closest"):
    """Sparse depth map of one Velodyne scan in rectified camera ``cam`` (KITTI protocol).

    Args:
        calib_dir: the date folder holding ``calib_cam_to_cam.txt`` and ``calib_velo_to_cam.txt``.
        velo_filename: ``<drive>/velodyne_points/data/%010d.bin``.
        cam: 2 (left) or 3 (right colour camera).
        vel_depth: True → depth = Velodyne x (the Eigen ground truth of the published protocol:
            ``generate_depth_map(calib_dir, velo, 2, True)``); False → camera z (Monodepth2's
            training-time ``depth_gt``). The two differ by the Velodyne→camera offset along the
            optical axis (≈0.27 m on KITTI).
        duplicates: ``"closest"`` (the published rule) or ``"last"``; see
            ``project_velodyne_to_depth``.

    Returns:
        [H,W] float32 depth in metres (0 = no data), H and W from ``S_rect_02`` of the calibration.
    """
    P_im_from_velo, im_shape = velo_to_image_matrix(calib_dir, cam)
    velo = load_velodyne_points(velo_filename)
    return project_velodyne_to_depth(velo, P_im_from_velo, im_shape, vel_depth, duplicates)


def normalized_intrinsics(cam_to_cam, cam, path="calib_cam_to_cam.txt"):
    """The 4×4 intrinsics of rectified camera ``cam`` normalised by its image size.

    Row 0 of ``P_rect_0{cam}`` is divided by the width and row 1 by the height of
    ``S_rect_0{cam}``, so scaling by (W', H') gives the intrinsics at any resolution.

    Returns:
        [4,4] float32 ``[[fx/W, 0, cx/W, 0], [0, fy/H, cy/H, 0], [0, 0, 1, 0], [0, 0, 0, 1]]``.
    """
    P = _calib_entry(cam_to_cam, f"P_rect_0{cam}", 12, path).reshape(3, 4)
    width, height = _calib_entry(cam_to_cam, f"S_rect_0{cam}", 2, path)
    return normalize_projection(P, width, height)


def normalize_projection(P, width, height):
    """[4,4] float32 normalised intrinsics from a [3,4] (or [3,3]) projection matrix and image size."""
    K = np.eye(4, dtype=np.float64)
    K[:3, :3] = np.asarray(P, dtype=np.float64).reshape(3, -1)[:, :3]
    K[0, :] /= width
    K[1, :] /= height
    return K.astype(np.float32)


def read_odometry_poses(path):
    """Read a KITTI odometry pose file (``poses/XX.txt``: 12 numbers per line, a row-major 3×4
    camera-to-world matrix of the left camera per frame).

    Returns:
        [N,4,4] float64 array of ``T_world_from_cam`` per frame.

    Raises:
        FileNotFoundError naming the file; ValueError naming the file and line if a line does not
        hold 12 numbers.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pose file {path} does not exist")
    poses = []
    with open(path, "r", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                values = np.array([float(v) for v in line.split()], dtype=np.float64)
            except ValueError:
                values = np.empty(0)
            if values.size != 12:
                raise ValueError(f"pose file {path} line {number}: expected 12 numbers, "
                                 f"got {line.strip()!r}")
            pose = np.eye(4)
            pose[:3, :] = values.reshape(3, 4)
            poses.append(pose)
    return np.stack(poses) if poses else np.zeros((0, 4, 4))


def read_png_depth(path):
    """KITTI depth PNG (uint16, depth × 256, 0 = no data) → [H,W] float32 metres.

    Raises FileNotFoundError / ValueError naming ``path``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"depth file {path} does not exist")
    try:
        with PIL.Image.open(path) as img:
            depth = np.array(img)
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"depth file {path} is corrupt or not an image ({e})") from None
    if depth.ndim != 2 or depth.dtype not in (np.uint16, np.int32, np.uint8):
        raise ValueError(f"depth file {path} is not a single-channel 16-bit PNG "
                         f"(got {depth.dtype} {depth.shape})")
    return depth.astype(np.float32) / 256.0
