"""Evaluation as a library: metrics and protocols that return records; the CLIs print and write.

- :mod:`evaluation.depth`: the KITTI depth protocol (masks, scaling, metrics, the training
  validation's batch metrics) and running a depth model on images;
- :mod:`evaluation.protocol`: weights folders -> predictions -> scored records (KITTI, Make3D),
  epoch summaries (``DepthEvalSettings`` instead of an options object);
- :mod:`evaluation.make3d`, :mod:`evaluation.pose` (ATE of snippets), :mod:`evaluation.benchmark`
  (KITTI benchmark PNGs), :mod:`evaluation.report` (table rows, atomic JSON / npy).

``import evaluation as E`` gives every public name of these modules.
"""

from layers import DEPTH_METRIC_NAMES
from utils import load_rgb
from evaluation.depth import (CROPPED_SPLITS, GARG_CROP, MAX_DEPTH, MIN_DEPTH, STEREO_SCALE_FACTOR,
                              batch_depth_metrics, batch_post_process_disparity, depth_errors,
                              eval_mask, evaluate_disparities, garg_crop_mask, image_to_input,
                              predict_disparity, ratio_stats, resize_disp, scale_and_clip)
from evaluation.benchmark import BENCHMARK_SIZE, write_benchmark_predictions
from evaluation.make3d import (MAKE3D_IMAGE_SIZE, MAKE3D_MAX_DEPTH, MAKE3D_METRIC_NAMES,
                               evaluate_make3d_depth, load_make3d_depth, make3d_crop_depth,
                               make3d_crop_image, make3d_crop_rows, make3d_errors)
from evaluation.pose import (compute_ate, dump_xyz, local_from_global_poses, read_kitti_poses,
                             snippet_ates)
from evaluation.report import (format_metrics_header, format_metrics_row, save_npy_atomic,
                               write_json_atomic)

__all__ = [
    "DEPTH_METRIC_NAMES", "load_rgb",
    "CROPPED_SPLITS", "GARG_CROP", "MAX_DEPTH", "MIN_DEPTH", "STEREO_SCALE_FACTOR",
    "batch_depth_metrics", "batch_post_process_disparity", "depth_errors", "eval_mask",
    "evaluate_disparities", "garg_crop_mask", "image_to_input", "predict_disparity", "ratio_stats",
    "resize_disp", "scale_and_clip",
    "BENCHMARK_SIZE", "write_benchmark_predictions",
    "MAKE3D_IMAGE_SIZE", "MAKE3D_MAX_DEPTH", "MAKE3D_METRIC_NAMES", "evaluate_make3d_depth",
    "load_make3d_depth", "make3d_crop_depth", "make3d_crop_image", "make3d_crop_rows",
    "make3d_errors",
    "compute_ate", "dump_xyz", "local_from_global_poses", "read_kitti_poses", "snippet_ates",
    "format_metrics_header", "format_metrics_row", "save_npy_atomic", "write_json_atomic",
]
