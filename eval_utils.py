"""The testable pieces of evaluation: masks, scaling, post-processing, writers, Make3D, ATE, tables.

Everything here is a pure function on NumPy arrays (or a small file writer), so that
``evaluate_depth.py``, ``evaluate_pose.py`` and ``test_simple.py`` stay thin and every number they
print can be checked by a unit test. The protocol is the one of the Monodepth2 family:

* KITTI depth (``evaluate_disparities``): predicted disparity resized to the ground truth's size
  (bilinear), depth = 1 / disparity, the Garg crop and the 1e-3..80 m range for Eigen-style splits
  (only ``gt > 0`` for ``eigen_benchmark``), per-image median scaling for mono models or x5.4 for
  stereo models, predictions clipped to [1e-3, 80] m, metrics from ``layers.compute_depth_errors``
  (the one metrics function of the repo), averaged over images.
* Make3D (``evaluate_make3d_depth``): central 2:1 crop, ground truth below 70 m, median scaling,
  abs_rel / sq_rel / rmse / log10.
* Pose (``compute_ate``): absolute trajectory error of 5-frame snippets with the first frames aligned
  and a least-squares scale, exactly as Monodepth2's ``evaluate_pose.py`` computes it.
"""

import json
import os

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from layers import DEPTH_METRIC_NAMES, compute_depth_errors, disp_to_depth

MIN_DEPTH = 1e-3
MAX_DEPTH = 80.0
STEREO_SCALE_FACTOR = 5.4  # KITTI's 0.54 m baseline / the 0.1 baseline used in training

# Garg et al.'s crop as fractions of the ground truth's (height, height, width, width).
GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)

# Splits scored with the Garg crop and the MIN/MAX_DEPTH range. Monodepth2 applies this to `eigen`
# only; the repo's synthetic split is Eigen-style (velodyne ground truth) and is scored the same way.
CROPPED_SPLITS = ("eigen", "synthetic")

MAKE3D_METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "log10")

# KITTI depth-prediction benchmark: predictions are 16-bit PNGs of depth * 256 at 1216 x 352.
BENCHMARK_SIZE = (1216, 352)  # (width, height)

# Make3D: images are 1704 wide x 2272 high; the evaluation uses a central crop of 2:1 (width:height),
# i.e. the central 852 rows; the 55 x 305 laser grid is cropped to its central 21 rows accordingly.
MAKE3D_IMAGE_SIZE = (1704, 2272)  # (width, height)
MAKE3D_MAX_DEPTH = 70.0


# --------------------------------------------------------------------------------------------
# KITTI depth
# --------------------------------------------------------------------------------------------
def garg_crop_mask(height, width):
    """Boolean mask [H,W] that is True inside Garg et al.'s crop of an image of this size."""
    crop = np.array([GARG_CROP[0] * height, GARG_CROP[1] * height,
                     GARG_CROP[2] * width, GARG_CROP[3] * width]).astype(np.int32)
    mask = np.zeros((height, width), dtype=bool)
    mask[crop[0]:crop[1], crop[2]:crop[3]] = True
    return mask


def eval_mask(gt_depth, split):
    """Valid-pixel mask [H,W] of one ground-truth depth map [H,W] for ``split``.

    Eigen-style splits (``CROPPED_SPLITS``): MIN_DEPTH < gt < MAX_DEPTH inside the Garg crop.
    Other splits (``eigen_benchmark``): gt > 0, as Monodepth2 does.
    """
    if gt_depth.ndim != 2:
        raise ValueError(f"ground-truth depth must be [H,W], got shape {gt_depth.shape}")
    if split in CROPPED_SPLITS:
        in_range = np.logical_and(gt_depth > MIN_DEPTH, gt_depth < MAX_DEPTH)
        return np.logical_and(in_range, garg_crop_mask(*gt_depth.shape))
    return gt_depth > 0


def resize_disp(disp, height, width):
    """Resize a disparity map [h,w] to [height,width] with cv2's bilinear interpolation."""
    return cv2.resize(np.ascontiguousarray(disp, dtype=np.float32), (width, height),
                      interpolation=cv2.INTER_LINEAR)


def scale_and_clip(pred_depth, gt_depth, median_scaling=True, scale_factor=1.0,
                   min_depth=MIN_DEPTH, max_depth=MAX_DEPTH):
    """Scale valid predicted depths [N] like the protocol does; returns (scaled pred [N], ratio).

    ``pred *= scale_factor``; with ``median_scaling`` also ``pred *= median(gt) / median(pred)``
    (that ratio is returned, else None); finally clip to [min_depth, max_depth].
    """
    pred = np.asarray(pred_depth, dtype=np.float64) * scale_factor
    ratio = None
    if median_scaling:
        ratio = float(np.median(gt_depth) / np.median(pred))
        pred = pred * ratio
    return np.clip(pred, min_depth, max_depth), ratio


def depth_errors(gt, pred):
    """Metrics of valid pixels ``gt``/``pred`` [N] as a dict of floats (via layers.compute_depth_errors)."""
    errors = compute_depth_errors(np.asarray(gt, dtype=np.float64), np.asarray(pred, dtype=np.float64))
    return {name: float(errors[name]) for name in DEPTH_METRIC_NAMES}


def evaluate_disparities(pred_disps, gt_depths, split, median_scaling=True, scale_factor=1.0,
                         regions=None):
    """Score predicted disparities against ground-truth depths with the KITTI protocol.

    Args:
        pred_disps: [N,h,w] disparities (the scaled disparity of ``disp_to_depth``, depth = 1/disp).
        gt_depths: sequence of N ground-truth depth maps, each [H_i,W_i] in metres (0 = no data).
        split: evaluation split name; decides the mask (``eval_mask``).
        median_scaling: per-image median scaling (mono) or none (stereo / --disable_median_scaling).
        scale_factor: multiplies predicted depths before scaling (5.4 for stereo models).
        regions: optional {region name: N boolean masks [H_i,W_i]} (e.g. the pixels of cars):
            metrics over the valid pixels of each region, with each image scaled exactly as for
            the whole-image metrics (its median ratio over the whole mask), pooled over the
            region's pixels of all images.

    Returns:
        dict with ``metrics`` (name -> mean over images), ``per_image`` (list of dicts), ``ratios``
        (list of per-image median ratios, empty without median scaling) and ``num_images``; with
        ``regions`` also ``regions``: {name: {``metrics`` (None without a valid pixel),
        ``num_pixels``, ``num_images`` (images with at least one)}}.
    """
    if len(pred_disps) != len(gt_depths):
        raise ValueError(f"{len(pred_disps)} predictions but {len(gt_depths)} ground-truth maps")
    per_image, ratios = [], []
    pooled = {name: ([], []) for name in regions or {}}
    for i, (pred_disp, gt_depth) in enumerate(zip(pred_disps, gt_depths)):
        gt_depth = np.asarray(gt_depth)
        gt_h, gt_w = gt_depth.shape[:2]
        pred_depth = 1.0 / resize_disp(pred_disp, gt_h, gt_w)
        mask = eval_mask(gt_depth, split)
        if not mask.any():
            raise ValueError("a ground-truth depth map has no valid pixel inside the evaluation mask")
        pred, ratio = scale_and_clip(pred_depth[mask], gt_depth[mask], median_scaling, scale_factor)
        if ratio is not None:
            ratios.append(ratio)
        per_image.append(depth_errors(gt_depth[mask], pred))
        for name, (gts, preds) in pooled.items():
            inside = np.asarray(regions[name][i], dtype=bool)[mask]
            if inside.any():
                gts.append(gt_depth[mask][inside])
                preds.append(pred[inside])
    metrics = {name: float(np.mean([e[name] for e in per_image])) for name in DEPTH_METRIC_NAMES}
    out = {"metrics": metrics, "per_image": per_image, "ratios": ratios,
           "num_images": len(per_image)}
    if regions is not None:
        out["regions"] = {name: {"metrics": depth_errors(np.concatenate(gts), np.concatenate(preds))
                                 if gts else None,
                                 "num_pixels": int(sum(len(g) for g in gts)),
                                 "num_images": len(gts)} for name, (gts, preds) in pooled.items()}
    return out


def batch_depth_metrics(disp, depth_gt, min_depth, max_depth):
    """Eigen-protocol metrics of a batch: disp [B,1,h,w] -> gt size, Garg crop, median scaling.

    The same steps as ``evaluate_depth.py`` (:func:`eval_mask`, :func:`scale_and_clip`,
    :func:`depth_errors`): the training validation's metrics. Returns name -> float, or {} without gt.
    """
    _, depth = disp_to_depth(disp, min_depth, max_depth)
    H, W = depth_gt.shape[-2:]
    depth = F.interpolate(depth, [H, W], mode="bilinear", align_corners=False)
    per_image = []
    for pred, gt in zip(depth[:, 0].cpu().numpy(), depth_gt[:, 0].cpu().numpy()):
        valid = eval_mask(gt, "eigen")
        if valid.any():
            scaled, _ = scale_and_clip(pred[valid], gt[valid])
            per_image.append(depth_errors(gt[valid], scaled))
    return {k: float(np.mean([m[k] for m in per_image])) for k in per_image[0]} if per_image else {}


def ratio_stats(ratios):
    """(median, std of ratios / median) of the median-scaling ratios, as Monodepth2 prints them."""
    ratios = np.asarray(ratios, dtype=np.float64)
    med = float(np.median(ratios))
    return med, float(np.std(ratios / med))


def batch_post_process_disparity(l_disp, r_disp):
    """Blend the disparity of an image with that of its mirror (Monodepth's post-processing).

    Args:
        l_disp: [N,H,W] disparity of the images.
        r_disp: [N,H,W] disparity of the mirrored images, already flipped back.
    Returns:
        [N,H,W]: the mean of both in the middle; near the left border ``r_disp`` and near the right
        border ``l_disp`` (each image's disoccluded border is taken from the other prediction),
        with linear ramps over the outer 5% of the width.
    """
    if l_disp.shape != r_disp.shape or l_disp.ndim != 3:
        raise ValueError(f"need two [N,H,W] arrays of one shape, got {l_disp.shape}, {r_disp.shape}")
    _, h, w = l_disp.shape
    mean_disp = 0.5 * (l_disp + r_disp)
    x, _ = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    l_mask = (1.0 - np.clip(20 * (x - 0.05), 0, 1))[None, ...]  # 1 at the left border -> 0 at 5%
    r_mask = l_mask[:, :, ::-1]
    return r_mask * l_disp + l_mask * r_disp + (1.0 - l_mask - r_mask) * mean_disp


# --------------------------------------------------------------------------------------------
# Running a depth model
# --------------------------------------------------------------------------------------------
def load_rgb(path):
    """Decode an image file to [H,W,3] uint8 RGB (the datasets' decoder: clear errors for a missing
    or corrupt file)."""
    from utils import load_rgb as _load_rgb
    return _load_rgb(path)


def image_to_input(rgb, height, width):
    """[h,w,3] uint8 RGB -> network input [1,3,height,width] float32 in [0,1], resized exactly as the
    datasets resize (``datasets.mono_dataset.image_to_tensor``: area averaging)."""
    from datasets.mono_dataset import image_to_tensor
    return image_to_tensor(np.asarray(rgb), width, height)[None]


@torch.no_grad()
def predict_disparity(encoder, decoder, images, min_depth, max_depth, post_process=False):
    """Scaled disparity (depth = 1/disp) of a batch of images; returns a NumPy array [B,H,W].

    Args:
        encoder, decoder: the depth networks (already on the images' device, in eval mode).
        images: [B,3,H,W] in [0,1].
        min_depth, max_depth: the model's ``disp_to_depth`` range.
        post_process: also predict the mirrored images and blend (``batch_post_process_disparity``).
    """
    if post_process:
        images = torch.cat((images, torch.flip(images, [3])), 0)
    disp = decoder(encoder(images))[("disp", 0)]
    scaled_disp, _ = disp_to_depth(disp, min_depth, max_depth)
    scaled_disp = scaled_disp[:, 0].float().cpu().numpy()
    if post_process:
        n = scaled_disp.shape[0] // 2
        scaled_disp = batch_post_process_disparity(scaled_disp[:n], scaled_disp[n:, :, ::-1])
    return scaled_disp.astype(np.float32)


# --------------------------------------------------------------------------------------------
# KITTI benchmark writer
# --------------------------------------------------------------------------------------------
def write_benchmark_predictions(pred_disps, out_dir, scale_factor=STEREO_SCALE_FACTOR,
                                size=BENCHMARK_SIZE):
    """Write disparities [N,h,w] as KITTI benchmark depth PNGs; returns the list of paths.

    Each disparity is resized (bilinear) to ``size`` (width, height), turned into depth
    ``scale_factor / disp`` clipped to [0, 80] m, and saved as a 16-bit PNG of depth * 256 named
    ``%010d.png`` by index (the benchmark's naming). Files are written to a temp name then renamed.
    """
    os.makedirs(out_dir, exist_ok=True)
    width, height = size
    paths = []
    for idx, disp in enumerate(pred_disps):
        depth = scale_factor / resize_disp(disp, height, width)
        depth = np.clip(depth, 0, MAX_DEPTH)
        png = np.uint16(depth * 256)
        path = os.path.join(out_dir, f"{idx:010d}.png")
        tmp = os.path.join(out_dir, f".{idx:010d}.tmp.png")
        if not cv2.imwrite(tmp, png):
            raise OSError(f"could not write {tmp}")
        os.replace(tmp, path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# Make3D
# --------------------------------------------------------------------------------------------
def make3d_crop_rows(height, crop_height):
    """(top, bottom) row indices of the central ``crop_height`` rows of ``height`` rows."""
    return (height - crop_height) // 2, (height + crop_height) // 2


def make3d_crop_image(image):
    """Central 2:1 (width:height) crop of a Make3D image [H,W,...] (1704 x 2272 -> 1704 x 852)."""
    height, width = image.shape[:2]
    if height < width // 2:
        raise ValueError(f"a Make3D image is portrait (1704 wide x 2272 high); got {width}x{height}")
    top, bottom = make3d_crop_rows(height, width // 2)
    return image[top:bottom]


def make3d_crop_depth(depth, image_height=MAKE3D_IMAGE_SIZE[1], image_width=MAKE3D_IMAGE_SIZE[0]):
    """Crop a Make3D laser depth grid [h,w] (55 x 305) to the rows of the image crop (21 rows).

    The grid covers the whole image, so it keeps the same fraction of rows as
    ``make3d_crop_image`` keeps of the image: round(h * (W/2) / H), centred (rows 17..37 of 55).
    """
    h = depth.shape[0]
    crop_h = int(round(h * (image_width // 2) / image_height))
    top, bottom = make3d_crop_rows(h, crop_h)
    return depth[top:bottom]


def load_make3d_depth(path):
    """Depth [55,305] in metres from a Make3D ``.mat`` file (``Position3DGrid[..., 3]``)."""
    from scipy.io import loadmat
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Make3D depth file {path} does not exist")
    mat = loadmat(path)
    if "Position3DGrid" not in mat:
        raise ValueError(f"{path} has no 'Position3DGrid' (is it a Make3D depth .mat file?)")
    return np.asarray(mat["Position3DGrid"][..., 3], dtype=np.float64)


def make3d_errors(gt, pred):
    """abs_rel, sq_rel, rmse and log10 (mean |log10 gt - log10 pred|) of valid pixels [N]."""
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    return {
        "abs_rel": float(np.mean(np.abs(gt - pred) / gt)),
        "sq_rel": float(np.mean((gt - pred) ** 2 / gt)),
        "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))),
        "log10": float(np.mean(np.abs(np.log10(gt) - np.log10(pred)))),
    }


def evaluate_make3d_depth(pred_disp, gt_depth, median_scaling=True, scale_factor=1.0):
    """Score one prediction of a cropped Make3D image against its cropped laser depth.

    Args:
        pred_disp: [h,w] scaled disparity of the cropped image (depth = 1/disp).
        gt_depth: [H,W] cropped ground-truth depth (``make3d_crop_depth``), metres.
        median_scaling: scale the prediction by median(gt) / median(pred) (the standard protocol).
        scale_factor: multiplies predicted depths first (--pred_depth_scale_factor).
    Returns: (metrics dict, median ratio or None). Pixels with 0 < gt < 70 m are scored; the
    predicted depth is resized to the ground truth's grid with nearest-neighbour interpolation.
    """
    gt_h, gt_w = gt_depth.shape
    pred_depth = cv2.resize(1.0 / np.asarray(pred_disp, dtype=np.float32), (gt_w, gt_h),
                            interpolation=cv2.INTER_NEAREST).astype(np.float64) * scale_factor
    mask = np.logical_and(gt_depth > 0, gt_depth < MAKE3D_MAX_DEPTH)
    if not mask.any():
        raise ValueError("a Make3D depth map has no pixel between 0 and 70 m")
    gt, pred = gt_depth[mask], pred_depth[mask]
    ratio = None
    if median_scaling:
        ratio = float(np.median(gt) / np.median(pred))
        pred = pred * ratio
    return make3d_errors(gt, pred), ratio


# --------------------------------------------------------------------------------------------
# Pose: absolute trajectory error on snippets
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------
def format_metrics_header(names=DEPTH_METRIC_NAMES):
    """Header line ``  abs_rel |   sq_rel | ...`` of the metrics table."""
    return ("{:>8} | " * len(names)).format(*names)


def format_metrics_row(values):
    """The ampersand-separated line for papers: ``&   0.115  &   0.903  ... \\\\``."""
    return ("&{: 8.3f}  " * len(values)).format(*values) + "\\\\"


def write_json_atomic(path, obj):
    """Write ``obj`` as indented JSON to ``path`` through a temp file in the same folder."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def save_npy_atomic(path, array):
    """``np.save`` through a temp file in the same folder."""
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.save(tmp, array)
    os.replace(tmp, path)
