"""Pose evaluation: absolute trajectory error of 5-frame snippets with the first frames aligned and
a least-squares scale, exactly as Monodepth2's ``evaluate_pose.py`` computes it."""

import os

import numpy as np


def read_kitti_poses(path):
    """KITTI odometry poses file (N lines of a row-major 3x4 matrix) -> [N,4,4] float64."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ground-truth poses {path} do not exist (KITTI odometry "
                                "'data_odometry_poses.zip' unpacks them into <data_path>/poses/)")
    rows = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if rows.shape[1] != 12:
        raise ValueError(f"{path}: expected 12 numbers per line, got {rows.shape[1]}")
    poses = np.tile(np.eye(4), (rows.shape[0], 1, 1))
    poses[:, :3, :] = rows.reshape(-1, 3, 4)
    return poses


def local_from_global_poses(global_poses):
    """Relative poses [N-1,4,4] ``inv(inv(P_{i-1}) @ P_i)`` of consecutive global poses [N,4,4].

    This is the transform taking points of frame i-1 into frame i, the convention of the pose
    network's output for the pair (i-1, i) and of Monodepth2's evaluation.
    """
    return np.stack([np.linalg.inv(np.linalg.inv(global_poses[i - 1]) @ global_poses[i])
                     for i in range(1, len(global_poses))])


def dump_xyz(local_poses):
    """Positions [len+1,3] of a trajectory built by chaining relative poses [M,4,4] from the identity."""
    cam_to_world = np.eye(4)
    xyzs = [cam_to_world[:3, 3].copy()]
    for pose in local_poses:
        cam_to_world = cam_to_world @ pose
        xyzs.append(cam_to_world[:3, 3].copy())
    return np.array(xyzs)


def compute_ate(gt_xyz, pred_xyz):
    """Absolute trajectory error of one snippet after aligning first frames and scale.

    Args: gt_xyz, pred_xyz: [M,3] positions. The prediction is translated so its first position
    matches the ground truth's, then scaled by ``s = sum(gt * pred) / sum(pred^2)``.
    Returns ``sqrt(sum ||s * pred - gt||^2) / M``: note the division by M outside the square root,
    which is how Monodepth2 (and SfMLearner before it) compute it; kept so numbers are comparable.
    """
    gt_xyz = np.asarray(gt_xyz, dtype=np.float64)
    pred_xyz = np.asarray(pred_xyz, dtype=np.float64)
    if gt_xyz.shape != pred_xyz.shape or gt_xyz.ndim != 2 or gt_xyz.shape[1] != 3:
        raise ValueError(f"need two [M,3] arrays of one shape, got {gt_xyz.shape}, {pred_xyz.shape}")
    pred_xyz = pred_xyz + (gt_xyz[0] - pred_xyz[0])[None, :]
    denom = np.sum(pred_xyz ** 2)
    scale = np.sum(gt_xyz * pred_xyz) / denom if denom > 0 else 0.0
    alignment_error = pred_xyz * scale - gt_xyz
    return float(np.sqrt(np.sum(alignment_error ** 2)) / gt_xyz.shape[0])


def snippet_ates(pred_local_poses, gt_local_poses, track_length=5):
    """ATE of every snippet of ``track_length`` frames starting at each frame (Monodepth2).

    Args: pred_local_poses, gt_local_poses: [N-1,4,4] relative poses between consecutive frames of
    N frames. Snippets near the end are shorter, as in Monodepth2. Returns a list of N-1 floats.
    """
    if len(pred_local_poses) != len(gt_local_poses):
        raise ValueError(f"{len(pred_local_poses)} predicted relative poses but "
                         f"{len(gt_local_poses)} from the ground truth")
    ates = []
    for i in range(len(gt_local_poses)):
        pred_xyz = dump_xyz(pred_local_poses[i:i + track_length - 1])
        gt_xyz = dump_xyz(gt_local_poses[i:i + track_length - 1])
        ates.append(compute_ate(gt_xyz, pred_xyz))
    return ates
