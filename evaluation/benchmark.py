"""KITTI depth-prediction benchmark: predictions written as the benchmark's 16-bit PNGs."""

import os

import cv2
import numpy as np

from evaluation.depth import MAX_DEPTH, STEREO_SCALE_FACTOR, resize_disp
from utils import atomic_path

# predictions are 16-bit PNGs of depth * 256 at 1216 x 352
BENCHMARK_SIZE = (1216, 352)  # (width, height)


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
        with atomic_path(path) as tmp:
            ok, encoded = cv2.imencode(".png", png)
            if not ok:
                raise OSError(f"could not encode {path}")
            with open(tmp, "wb") as f:
                f.write(encoded.tobytes())
        paths.append(path)
    return paths
