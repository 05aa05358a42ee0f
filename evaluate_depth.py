"""Evaluate depth checkpoints on KITTI (Eigen, improved ground truth, benchmark) and Make3D.

    python evaluate_depth.py --load_weights_folder ~/tmp/mono_srd/models/weights_19 --eval_mono
    python evaluate_depth.py --load_weights_folder ~/tmp/mono_srd/models --eval_mono   # every epoch

The protocol is the Monodepth2 family's (see ``evaluation``): ``splits/<eval_split>/test_files.txt``
is predicted at the model's own resolution, disparities are resized to each ground-truth map of
``splits/<eval_split>/gt_depths.npz`` (made by ``export_gt_depth.py``), ``eigen`` and the Eigen-style
``synthetic`` split are scored inside the Garg crop between 1e-3 and 80 m (``eigen_benchmark``: every
pixel with ground truth), with per-image median scaling (``--eval_mono``) or x5.4 (``--eval_stereo``).
The table is printed and written to ``metrics.json`` beside the weights (or in ``--eval_out_dir``).

Given a run's ``models/`` folder (or the run folder) instead of one ``weights_<epoch>``, every epoch
is evaluated in order; a summary table marks the best abs_rel and ``metrics_all.json`` is written
in ``models/``.

``--eval_split benchmark`` writes KITTI-benchmark PNGs instead of scoring; ``make3d`` runs the
Make3D protocol on ``--data_path`` (the Make3D root holding the folders named in
``splits/make3d/test_img_list.txt`` and ``test_depth_list.txt``); ``odom_9``/``odom_10`` are pose
evaluations (``evaluate_pose.py``).
"""

import os
import sys

import numpy as np
import torch

import evaluation as E
from evaluation.protocol import (DepthEvalSettings, check_length, find_weights_folders,
                                 load_ext_disps, load_gt_depths, predict_split, score_disparities,
                                 score_make3d, summarize_epochs, weights_epoch)
from options import SRDOptions, chosen_split_dir
from utils import CLIError, SPLITS_DIR, readlines, run_cli, split_file_path

POSE_SPLITS = ("odom_9", "odom_10")

__all__ = ["main", "evaluate", "evaluate_folder", "settings_from_options", "get_disparities",
           "find_weights_folders", "load_gt_depths", "pick_device"]


# --------------------------------------------------------------------------------------------
# Options -> what to evaluate and how
# --------------------------------------------------------------------------------------------
def settings_from_options(opt) -> DepthEvalSettings:
    """The evaluation library's settings from the parsed options (stereo: x5.4, no median scaling)."""
    scale_factor = E.STEREO_SCALE_FACTOR if opt.eval_stereo else opt.pred_depth_scale_factor
    return DepthEvalSettings(
        data_path=opt.data_path, dataset=opt.dataset, img_ext=".png" if opt.png else ".jpg",
        use_calib_file=opt.use_calib_file, image_cache=getattr(opt, "image_cache", None),
        num_workers=opt.num_workers, progress=not opt.no_progress, post_process=opt.post_process,
        median_scaling=not (opt.disable_median_scaling or opt.eval_stereo),
        scale_factor=scale_factor)


def plan_splits(opt):
    """(prediction split, scoring split) for the options; rejects pose splits with a pointer."""
    if opt.eval_split in POSE_SPLITS:
        raise CLIError(f"--eval_split {opt.eval_split} is a pose evaluation: run `python "
                       f"evaluate_pose.py --eval_split {opt.eval_split} --load_weights_folder <weights> "
                       "--data_path <KITTI odometry root>`")
    if opt.eval_eigen_to_benchmark:
        if opt.eval_split not in ("eigen", "eigen_benchmark"):
            raise CLIError("--eval_eigen_to_benchmark scores Eigen-split predictions on "
                           f"eigen_benchmark; it does not apply to --eval_split {opt.eval_split}")
        return "eigen", "eigen_benchmark"
    return opt.eval_split, opt.eval_split


def pick_device(no_cuda: bool) -> torch.device:
    """CUDA when available unless ``no_cuda``, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() and not no_cuda else "cpu")


def output_dir(opt, weights_folder):
    """Where predictions and metrics.json go: --eval_out_dir, else the weights folder, else the
    folder of --ext_disp_to_eval."""
    if opt.eval_out_dir:
        folder = os.path.expanduser(opt.eval_out_dir)
    elif weights_folder:
        folder = weights_folder
    else:
        folder = os.path.dirname(os.path.abspath(opt.ext_disp_to_eval))
    os.makedirs(folder, exist_ok=True)
    return folder


def check_split_files(opt, pred_split, splits_dir):
    """Fail early (naming the download command) when a split list the evaluation reads is missing."""
    if opt.eval_split == "make3d":
        for name in ("test_img_list.txt", "test_depth_list.txt"):
            split_file_path("make3d", name, splits_dir)
    elif not opt.ext_disp_to_eval:
        split_file_path(pred_split, "test_files.txt", splits_dir)
    if opt.eval_eigen_to_benchmark:
        split_file_path("benchmark", "eigen_to_benchmark_ids.npy", splits_dir)


def needs_gt(opt) -> bool:
    """Whether this evaluation scores against a gt_depths.npz."""
    return not opt.no_eval and opt.eval_split not in ("benchmark", "make3d")


def get_disparities(opt, weights_folder, pred_split, splits_dir, device):
    """(disparities for pred_split, model spec or None); the model's or --ext_disp_to_eval's."""
    if opt.ext_disp_to_eval:
        disps = load_ext_disps(opt.ext_disp_to_eval)
        list_path = os.path.join(splits_dir, pred_split, "test_files.txt")
        if os.path.isfile(list_path):
            check_length(disps, len(readlines(list_path)), f"split '{pred_split}' ({list_path})",
                         f"--ext_disp_to_eval {opt.ext_disp_to_eval}")
        print(f"-> Loaded {len(disps)} predictions from {opt.ext_disp_to_eval}")
        return disps, None
    return predict_split(weights_folder, pred_split, splits_dir, device, settings_from_options(opt))


# --------------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------------
def print_scores(record, metric_names, stereo):
    """The protocol line, the scaling ratios and the metrics table of a scored record."""
    if stereo:
        print(f"   Stereo evaluation - disabling median scaling, scaling by "
              f"{E.STEREO_SCALE_FACTOR}")
    elif metric_names is E.DEPTH_METRIC_NAMES:
        print("   Mono evaluation - " + ("using median scaling" if record["median_scaling"]
                                          else "median scaling disabled"))
    if record["scaling_ratios"]:
        ratios = record["scaling_ratios"]
        print(f" Scaling ratios | med: {ratios['median']:0.3f} | std: {ratios['std']:0.3f}")
    print("\n  " + E.format_metrics_header(metric_names))
    print(E.format_metrics_row([record["metrics"][k] for k in metric_names]))


def print_summary(summary, records, metric_names):
    """One row per epoch with the best abs_rel marked."""
    print(f"\n-> All epochs ({len(summary['epochs'])}), best abs_rel marked with *")
    print("  epoch | " + E.format_metrics_header(metric_names))
    for folder, record in records:
        if record is None:
            continue
        mark = "*" if os.path.abspath(folder) == summary["best_weights_folder"] else " "
        row = E.format_metrics_row([record["metrics"][k] for k in metric_names])
        print(f"{mark} {weights_epoch(folder)!s:>5} {row}")


# --------------------------------------------------------------------------------------------
# One weights folder (or one external prediction file)
# --------------------------------------------------------------------------------------------
def evaluate_folder(opt, weights_folder, splits_dir, device, gt_depths=None):
    """Evaluate one weights folder (or --ext_disp_to_eval); prints, writes metrics.json and returns
    the record (None for the benchmark split and --no_eval).

    ``gt_depths``: the scoring split's ground truth when already loaded (read here otherwise).
    """
    pred_split, score_split = plan_splits(opt)
    check_split_files(opt, pred_split, splits_dir)
    if gt_depths is None and needs_gt(opt):  # fail before predicting when it is missing
        gt_depths = load_gt_depths(score_split, splits_dir, opt.data_path)
    out_dir = output_dir(opt, weights_folder)
    settings = settings_from_options(opt)
    if opt.eval_split == "make3d":
        if opt.ext_disp_to_eval:
            raise CLIError("--ext_disp_to_eval is not supported with --eval_split make3d")
        record, spec = score_make3d(weights_folder, splits_dir, device, settings)
        print_scores(record, E.MAKE3D_METRIC_NAMES, stereo=False)
    else:
        disps, spec = get_disparities(opt, weights_folder, pred_split, splits_dir, device)
        if opt.save_pred_disps:
            path = os.path.join(out_dir, f"disps_{pred_split}_split.npy")
            E.save_npy_atomic(path, disps)
            print(f"-> Saved predicted disparities to {path}")
        if opt.eval_eigen_to_benchmark:
            ids = np.load(split_file_path("benchmark", "eigen_to_benchmark_ids.npy", splits_dir))
            if disps.shape[0] <= ids.max():
                raise ValueError(f"{disps.shape[0]} Eigen predictions, but "
                                 f"eigen_to_benchmark_ids.npy needs index {ids.max()}")
            disps = disps[ids]
        if opt.eval_split == "benchmark":
            return write_benchmark(opt, disps, out_dir)
        if opt.no_eval:
            print("-> Evaluation disabled. Done.")
            return None
        record = score_disparities(disps, gt_depths, score_split, settings,
                                   opt.ext_disp_to_eval or weights_folder)
        print_scores(record, E.DEPTH_METRIC_NAMES, stereo=opt.eval_stereo)
    record.update(describe_run(opt, weights_folder, score_split, spec))
    path = os.path.join(out_dir, "metrics.json")
    E.write_json_atomic(path, record)
    print(f"-> Wrote {path}")
    return record


def write_benchmark(opt, disps, out_dir):
    """--eval_split benchmark: KITTI benchmark PNGs in <out_dir>/benchmark_predictions."""
    save_dir = os.path.join(out_dir, "benchmark_predictions")
    factor = E.STEREO_SCALE_FACTOR * opt.pred_depth_scale_factor
    if opt.eval_mono:
        print(f"   warning: the benchmark needs metric depth; a mono model has no metric scale, "
              f"depth is written as {factor:g} / disparity")
    paths = E.write_benchmark_predictions(disps, save_dir, scale_factor=factor)
    print(f"-> Wrote {len(paths)} benchmark predictions to {save_dir}; no ground truth is "
          "available for the KITTI benchmark, so not evaluating.")
    return None


def describe_run(opt, weights_folder, score_split, spec):
    """The options that matter for a metrics.json record."""
    return {
        "split": score_split,
        "eval_split": opt.eval_split,
        "weights_folder": os.path.abspath(weights_folder) if weights_folder else None,
        "epoch": weights_epoch(weights_folder),
        "mode": "stereo" if opt.eval_stereo else "mono",
        "post_process": bool(opt.post_process),
        "eval_eigen_to_benchmark": bool(opt.eval_eigen_to_benchmark),
        "ext_disp_to_eval": os.path.abspath(opt.ext_disp_to_eval) if opt.ext_disp_to_eval else None,
        "data_path": os.path.abspath(opt.data_path),
        "model": None if spec is None else spec.to_dict(),
    }


# --------------------------------------------------------------------------------------------
# Every epoch of a run
# --------------------------------------------------------------------------------------------
def evaluate(opt, splits_dir=SPLITS_DIR):
    """Evaluate as the options say; returns the metrics record (one folder) or the summary (run)."""
    device = pick_device(opt.no_cuda)
    if opt.ext_disp_to_eval:
        if opt.load_weights_folder and not os.path.isdir(os.path.expanduser(opt.load_weights_folder)):
            raise FileNotFoundError(f"--load_weights_folder {opt.load_weights_folder} does not exist")
        return evaluate_folder(opt, None, splits_dir, device)
    if not opt.load_weights_folder:
        raise CLIError("give --load_weights_folder (a weights_<epoch> folder or a run's models/ "
                       "folder) or --ext_disp_to_eval")
    folders, models_dir = find_weights_folders(opt.load_weights_folder)
    if models_dir is None:
        return evaluate_folder(opt, folders[0], splits_dir, device)
    if opt.eval_out_dir:
        raise CLIError("--eval_out_dir takes one weights folder; with a run's models/ folder each "
                       "epoch's results are written into its own weights_<epoch> folder")
    print(f"-> Evaluating {len(folders)} epochs of {models_dir}")
    gt_depths = None
    if needs_gt(opt):
        pred_split, score_split = plan_splits(opt)
        check_split_files(opt, pred_split, splits_dir)
        gt_depths = load_gt_depths(score_split, splits_dir, opt.data_path)
    records = []
    for folder in folders:
        print(f"\n=== epoch {weights_epoch(folder)}: {folder}")
        records.append((folder, evaluate_folder(opt, folder, splits_dir, device, gt_depths)))
    summary = summarize_epochs(records)
    if summary is None:
        return None
    names = E.MAKE3D_METRIC_NAMES if opt.eval_split == "make3d" else E.DEPTH_METRIC_NAMES
    print_summary(summary, records, names)
    path = os.path.join(models_dir, "metrics_all.json")
    E.write_json_atomic(path, summary)
    print(f"-> Wrote {path}")
    return summary


def main(argv=None, splits_dir=SPLITS_DIR):
    opt = SRDOptions("Evaluate depth checkpoints (KITTI Eigen / improved ground truth / benchmark, "
                     "the Eigen-style synthetic split with the Garg crop, Make3D)",
                     script="evaluate_depth").parse(argv, mode="eval")
    return evaluate(opt, chosen_split_dir(opt, argv, splits_dir))


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
