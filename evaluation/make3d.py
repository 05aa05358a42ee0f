"""Make3D evaluation: central 2:1 crop, ground truth below 70 m, median scaling, abs_rel / sq_rel /
rmse / log10."""

import os

import cv2
import numpy as np

MAKE3D_METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "log10")

# Make3D: images are 1704 wide x 2272 high; the evaluation uses a central crop of 2:1 (width:height),
# i.e. the central 852 rows; the 55 x 305 laser grid is cropped to its central 21 rows accordingly.
MAKE3D_IMAGE_SIZE = (1704, 2272)  # (width, height)
MAKE3D_MAX_DEPTH = 70.0


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
