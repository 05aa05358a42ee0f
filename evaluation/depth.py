"""KITTI depth evaluation (the Monodepth2 family's protocol) and running a depth model on images.

Predicted disparity resized to the ground truth's size (bilinear), depth = 1 / disparity, the Garg
crop and the 1e-3..80 m range for Eigen-style splits (only ``gt > 0`` for ``eigen_benchmark``),
per-image median scaling for mono models or x5.4 for stereo models, predictions clipped to
[1e-3, 80] m, metrics from ``layers.compute_depth_errors`` (the one metrics function of the repo),
averaged over images. The training validation (:func:`batch_depth_metrics`) uses the same steps.
Pure functions on NumPy arrays (and a batch predictor), with no options object.
"""

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
