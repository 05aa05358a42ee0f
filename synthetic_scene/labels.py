"""Per-pixel material label maps (``<drive>/semantic_synthetic/image_02/%010d.png``) and class
masks."""

import os

import cv2
import numpy as np

from synthetic_scene.constants import LABEL_CLASSES, LABEL_DIR, MAT


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
                                "`python -m synthetic_scene --out <data_path>` again "
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
