"""The prepared-video folder (written by ``prepare_video.py``, read by ``datasets.VideoDataset``)
and the motion measurement that chooses its frames. Torch-free.

Layout of a prepared folder ``DIR``::

    DIR/prepare.json                  the report: inputs, options, per sequence what was kept
    DIR/train_files.txt               split lines "<sequence> <frame index>" (mono: no side column)
    DIR/val_files.txt
    DIR/<sequence>/intrinsics.json    {"K": normalised [3,3], "width": W, "height": H, ...}
    DIR/<sequence>/000000.jpg ...     the kept frames, consecutive: frames i-1, i, i+1 are the
                                      training triplet of target i

Motion is measured as the median magnitude of dense optical flow (OpenCV Farneback) between
grey frames downscaled to ``MOTION_WIDTH`` pixels wide, expressed as a **fraction of the image
width**, a unit that does not depend on the video's resolution.
"""

import json
import math
import os

import cv2
import numpy as np

PREPARE_FILE = "prepare.json"
INTRINSICS_FILE = "intrinsics.json"
FRAME_EXT = ".jpg"
FORMAT_VERSION = 1

MOTION_WIDTH = 192
# Target motion between consecutive training frames: the synthetic scene's camera at 0.5 m per
# frame (which trains from scratch; 1 m per frame did not) gives a median flow of 0.69-0.81 % of
# the image width at MOTION_WIDTH (README "Train on your own video"); its camera is KITTI's.
TARGET_MOTION = 0.0075
# A frame whose median flow against the last kept frame is below this (0.05 % of the width: 0.1 px
# at MOTION_WIDTH, a tenth of a pixel; about 1/15 of the target) shows a camera that stands still.
STATIC_MOTION = 0.0005


def frame_name(index):
    """File name of kept frame ``index`` of a sequence."""
    return f"{index:06d}{FRAME_EXT}"


def normalised_intrinsics(fx, fy, cx, cy, width, height):
    """[4,4] float64 intrinsics normalised by the image size (row 0 / width, row 1 / height): the
    repo's convention (``MonoDataset``: K_pixels = K_norm with row 0 × W, row 1 × H)."""
    K = np.eye(4)
    K[0, 0], K[0, 2] = fx / width, cx / width
    K[1, 1], K[1, 2] = fy / height, cy / height
    return K


def intrinsics_problem(fx, fy, cx, cy, width, height):
    """Why pixel intrinsics cannot be those of a ``width`` × ``height`` image, or None."""
    values = np.array([fx, fy, cx, cy], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        return f"intrinsics {values.tolist()} are not finite numbers"
    if fx <= 0 or fy <= 0:
        return f"focal lengths fx {fx:g}, fy {fy:g} must be positive"
    if not (0 < cx < width and 0 < cy < height):
        return (f"principal point ({cx:g}, {cy:g}) lies outside the {width}x{height} image "
                "(intrinsics are in pixels of the source frames)")
    return None


def write_intrinsics(path, K_pixels, width, height, origin, guess):
    """Write a sequence's ``intrinsics.json``: normalised K (3×3), the stored frame size, the
    pixel K, where it came from and whether it is a guess (``--fov``)."""
    from utils import atomic_write
    fx, fy, cx, cy = K_pixels[0, 0], K_pixels[1, 1], K_pixels[0, 2], K_pixels[1, 2]
    K = normalised_intrinsics(fx, fy, cx, cy, width, height)
    record = {"K": K[:3, :3].tolist(), "width": int(width), "height": int(height),
              "K_pixels": np.asarray(K_pixels, np.float64)[:3, :3].tolist(),
              "source": origin, "guess": bool(guess)}
    with atomic_write(path, "w") as f:
        json.dump(record, f, indent=2)


def read_intrinsics(path):
    """Normalised [4,4] float32 K of a sequence's ``intrinsics.json``.

    Raises:
        FileNotFoundError: naming the file and the tool that writes it.
        ValueError: naming the file, when it is unreadable or K is not a plausible camera.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"intrinsics file {path} does not exist: a --dataset video folder "
                                "is written by `python prepare_video.py INPUT... --out DIR`")
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        K3 = np.asarray(record["K"], dtype=np.float64)
        if K3.shape != (3, 3):
            raise ValueError(f"K has shape {K3.shape}, expected 3x3")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"intrinsics file {path} is not readable: {exc}") from None
    problem = intrinsics_problem(K3[0, 0], K3[1, 1], K3[0, 2], K3[1, 2], 1.0, 1.0)
    if problem is not None:
        raise ValueError(f"intrinsics file {path}: {problem} (normalised)")
    K = np.eye(4, dtype=np.float32)
    K[:3, :3] = K3
    return K


# --- motion ---------------------------------------------------------------------------------------

def motion_image(bgr):
    """The grey image motion is measured on: ``bgr`` [H,W,3] uint8 → [h, MOTION_WIDTH] uint8
    (area-averaged, aspect kept)."""
    height, width = bgr.shape[:2]
    small_h = max(8, int(round(height * MOTION_WIDTH / width)))
    small = cv2.resize(bgr, (MOTION_WIDTH, small_h), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)


def median_flow(a, b):
    """Median optical-flow magnitude from grey image ``a`` to ``b`` (same [h,w]), as a fraction of
    the width w."""
    flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    return float(np.median(np.hypot(flow[..., 0], flow[..., 1]))) / a.shape[1]


def drop_static(images, static=STATIC_MOTION):
    """Keep the frames where the camera moved.

    Each frame is compared with the last kept one (the first frame is kept), so that a slow drift
    adds up instead of being dropped frame by frame.

    Args:
        images: sequence of grey [h,w] uint8 images (``motion_image``), in time order.
        static: motion (fraction of the width) below which a frame counts as static.

    Returns:
        (kept indices, motions): ``motions[j]`` is the median flow from kept frame j to j + 1.
    """
    kept, motions = [0], []
    for index in range(1, len(images)):
        motion = median_flow(images[kept[-1]], images[index])
        if motion >= static:
            kept.append(index)
            motions.append(motion)
    return kept, motions


def choose_step(motions, target=TARGET_MOTION):
    """Frames apart (≥ 1) that give consecutive training frames about ``target`` motion.

    ``ratio`` = target / the median motion between consecutive moving frames; of the two whole
    steps around it, the one whose motion ``step · median`` is nearer the target by *ratio* (the
    error of a motion is a factor, not a difference): step s is kept up to a ratio of
    sqrt(s (s + 1)), e.g. up to 2.45 for step 2 (at a ratio of 2.5, step 3 gives 1.2x the target
    and step 2 0.8x; 1.2 is the nearer factor).
    """
    if not motions:
        return 1
    ratio = target / float(np.median(motions))
    low = max(1, int(math.floor(ratio)))
    return low if ratio <= math.sqrt(low * (low + 1)) else low + 1
