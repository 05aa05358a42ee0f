"""Evaluate depth checkpoints on KITTI (Eigen, improved ground truth, benchmark) and Make3D.

    python evaluate_depth.py --load_weights_folder ~/tmp/mono_srd/models/weights_19 --eval_mono
    python evaluate_depth.py --load_weights_folder ~/tmp/mono_srd/models --eval_mono   # every epoch

The protocol is the Monodepth2 family's (see ``eval_utils``): ``splits/<eval_split>/test_files.txt``
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
import re
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import eval_utils as E
from options import SRDOptions, chosen_split_dir
from utils import CLIError, SPLITS_DIR, readlines, run_cli, split_file_path

POSE_SPLITS = ("odom_9", "odom_10")
EVAL_BATCH_SIZE = 16
WEIGHTS_DIR_RE = re.compile(r"^weights_(\d+)$")


# --------------------------------------------------------------------------------------------
# What to evaluate
# --------------------------------------------------------------------------------------------
def weights_epoch(folder):
    """Epoch number of a ``weights_<epoch>`` folder, or None for another name."""
    match = WEIGHTS_DIR_RE.match(os.path.basename(os.path.normpath(folder)))
    return int(match.group(1)) if match else None


def find_weights_folders(path):
    """The weights folders to evaluate for ``--load_weights_folder path``.

    Returns ``(folders, models_dir)``: one folder when ``path`` holds ``encoder.pth`` (models_dir
    None), else every ``weights_<epoch>`` of ``path`` (a run's ``models/``) or of ``path/models``
    (a run folder), sorted by epoch, with the folder that holds them.
    """
    path = os.path.expanduser(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--load_weights_folder {path} does not exist (expected a "
                                "weights_<epoch> folder or a run's models/ folder)")
    if os.path.isfile(os.path.join(path, "encoder.pth")):
        return [path], None
    for models_dir in (path, os.path.join(path, "models")):
        if not os.path.isdir(models_dir):
            continue
        epochs = sorted((weights_epoch(d), d) for d in os.listdir(models_dir)
                        if weights_epoch(d) is not None
                        and os.path.isfile(os.path.join(models_dir, d, "encoder.pth")))
        if epochs:
            return [os.path.join(models_dir, d) for _, d in epochs], models_dir
    raise FileNotFoundError(f"--load_weights_folder {path} has no encoder.pth and no "
                            "weights_<epoch>/encoder.pth folders")


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


def pick_device(no_cuda):
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


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
class ImageListDataset(Dataset):
    """Images named by split lines ``<folder> <index>`` as ``<data_path>/<folder>/<index:010d>.<ext>``.

    The KITTI benchmark test split (lines ``image 0`` ...) with ``--data_path`` pointing at
    ``depth_selection/test_depth_prediction_anonymous``. Items: ``{("color", 0, 0): [3,H,W]}``.
    """

    def __init__(self, data_path, filenames, height, width, exts=(".png", ".jpg")):
        self.paths = [self._find(data_path, line, exts) for line in filenames]
        self.height, self.width = height, width

    @staticmethod
    def _find(data_path, line, exts):
        parts = line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            raise ValueError(f"split line '{line}' is not '<folder> <index>'")
        stem = os.path.join(data_path, parts[0], f"{int(parts[1]):010d}")
        for ext in exts:
            if os.path.isfile(stem + ext):
                return stem + ext
        raise FileNotFoundError(f"image {stem}{exts[0]} (split line '{line}') does not exist")

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        rgb = E.load_rgb(self.paths[index])
        return {("color", 0, 0): E.image_to_input(rgb, self.height, self.width)[0]}


def build_dataset(opt, split, filenames, height, width):
    """The dataset that feeds ``split``'s test images at the model's resolution."""
    if split == "benchmark":
        return ImageListDataset(opt.data_path, filenames, height, width)
    from datasets import check_dataset_files
    from datasets.kitti_dataset import KITTIRAWDataset, check_data_path
    check_data_path(opt.data_path)
    dataset = KITTIRAWDataset(opt.data_path, filenames, height, width, [0], 1, is_train=False,
                              img_ext=".png" if opt.png else ".jpg", load_depth=False,
                              use_calib_file=opt.use_calib_file,
                              image_cache=getattr(opt, "image_cache", None))
    check_dataset_files(dataset, f"split '{split}'", opt.data_path)
    return dataset


def predict_split(opt, weights_folder, split, splits_dir, device):
    """Scaled disparities [N,h,w] of a weights folder on ``split``'s test_files.txt."""
    from checkpointing import load_depth_model
    filenames = readlines(split_file_path(split, "test_files.txt", splits_dir))
    encoder, decoder, meta = load_depth_model(weights_folder, device)
    encoder.eval()
    decoder.eval()
    dataset = build_dataset(opt, split, filenames, meta.height, meta.width)
    loader = DataLoader(dataset, EVAL_BATCH_SIZE, shuffle=False, drop_last=False,
                        num_workers=min(opt.num_workers, os.cpu_count() or 1),
                        pin_memory=device.type == "cuda")
    print(f"-> Predicting {len(dataset)} images of split '{split}' at {meta.width}x"
          f"{meta.height} with {weights_folder} on {device}")
    disps = []
    for batch in tqdm(loader, desc="predict", disable=opt.no_progress, leave=False):
        images = batch[("color", 0, 0)].to(device)
        disps.append(E.predict_disparity(encoder, decoder, images, meta.min_depth,
                                         meta.max_depth, opt.post_process))
    return np.concatenate(disps), meta


def load_ext_disps(path):
    """Disparities [N,h,w] from --ext_disp_to_eval."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--ext_disp_to_eval {path} does not exist")
    disps = np.load(path)
    if disps.ndim != 3:
        raise ValueError(f"--ext_disp_to_eval {path} must hold N x h x w disparities, got shape "
                         f"{disps.shape}")
    return disps


def load_gt_depths(split, splits_dir, data_path):
    """The list of ground-truth depth maps [H_i,W_i] of ``splits/<split>/gt_depths.npz``."""
    path = os.path.join(splits_dir, split, "gt_depths.npz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ground truth {path} is missing: make it with `python "
                                f"export_gt_depth.py --data_path {data_path} --split {split}`")
    with np.load(path, fix_imports=True, encoding="latin1", allow_pickle=True) as npz:
        return list(npz["data"])


def check_length(disps, expected, what, source):
    if len(disps) != expected:
        raise ValueError(f"{source} has {len(disps)} disparities but {what} has {expected}: "
                         "predictions must be in the order of the split's test_files.txt")


# --------------------------------------------------------------------------------------------
# One weights folder (or one external prediction file)
# --------------------------------------------------------------------------------------------
def get_disparities(opt, weights_folder, pred_split, splits_dir, device):
    """(disparities for pred_split, model meta or None); the model's or --ext_disp_to_eval's."""
    if opt.ext_disp_to_eval:
        disps = load_ext_disps(opt.ext_disp_to_eval)
        list_path = os.path.join(splits_dir, pred_split, "test_files.txt")
        if os.path.isfile(list_path):
            check_length(disps, len(readlines(list_path)), f"split '{pred_split}' ({list_path})",
                         f"--ext_disp_to_eval {opt.ext_disp_to_eval}")
        print(f"-> Loaded {len(disps)} predictions from {opt.ext_disp_to_eval}")
        return disps, None
    return predict_split(opt, weights_folder, pred_split, splits_dir, device)


def check_split_files(opt, pred_split, splits_dir):
    """Fail early (naming the download command) when a split list the evaluation reads is missing."""
    if opt.eval_split == "make3d":
        for name in ("test_img_list.txt", "test_depth_list.txt"):
            split_file_path("make3d", name, splits_dir)
    elif not opt.ext_disp_to_eval:
        split_file_path(pred_split, "test_files.txt", splits_dir)
    if opt.eval_eigen_to_benchmark:
        split_file_path("benchmark", "eigen_to_benchmark_ids.npy", splits_dir)


def needs_gt(opt):
    """Whether this evaluation scores against a gt_depths.npz."""
    return not opt.no_eval and opt.eval_split not in ("benchmark", "make3d")


def score(opt, disps, score_split, gt_depths, source):
    """Metrics of disparities against the ground-truth maps of ``score_split``; prints the table."""
    check_length(disps, len(gt_depths), f"the ground truth of '{score_split}'", source)
    median_scaling = not (opt.disable_median_scaling or opt.eval_stereo)
    scale_factor = opt.pred_depth_scale_factor
    if opt.eval_stereo:
        print(f"   Stereo evaluation - disabling median scaling, scaling by {E.STEREO_SCALE_FACTOR}")
        scale_factor = E.STEREO_SCALE_FACTOR
    else:
        print("   Mono evaluation - " + ("using median scaling" if median_scaling
                                          else "median scaling disabled"))
    result = E.evaluate_disparities(disps, gt_depths, score_split, median_scaling, scale_factor)
    ratio_summary = None
    if result["ratios"]:
        med, std = E.ratio_stats(result["ratios"])
        ratio_summary = {"median": med, "std": std}
        print(f" Scaling ratios | med: {med:0.3f} | std: {std:0.3f}")
    values = [result["metrics"][k] for k in E.DEPTH_METRIC_NAMES]
    print("\n  " + E.format_metrics_header())
    print(E.format_metrics_row(values))
    return {"metrics": result["metrics"], "num_images": result["num_images"],
            "median_scaling": median_scaling, "pred_depth_scale_factor": scale_factor,
            "scaling_ratios": ratio_summary}


def score_make3d(opt, weights_folder, splits_dir, device):
    """Make3D protocol on ``--data_path``; returns the metrics record and prints the table."""
    from checkpointing import load_depth_model
    images = readlines(split_file_path("make3d", "test_img_list.txt", splits_dir))
    depths = readlines(split_file_path("make3d", "test_depth_list.txt", splits_dir))
    if len(images) != len(depths):
        raise ValueError(f"splits/make3d lists {len(images)} images but {len(depths)} depth files")
    encoder, decoder, meta = load_depth_model(weights_folder, device)
    encoder.eval()
    decoder.eval()
    median_scaling = not opt.disable_median_scaling
    per_image, ratios = [], []
    for img_name, depth_name in tqdm(list(zip(images, depths)), desc="make3d",
                                     disable=opt.no_progress, leave=False):
        image = E.load_rgb(os.path.join(opt.data_path, img_name))
        batch = E.image_to_input(E.make3d_crop_image(image), meta.height, meta.width).to(device)
        disp = E.predict_disparity(encoder, decoder, batch, meta.min_depth, meta.max_depth,
                                   opt.post_process)[0]
        gt = E.make3d_crop_depth(E.load_make3d_depth(os.path.join(opt.data_path, depth_name)),
                                 image.shape[0], image.shape[1])
        errors, ratio = E.evaluate_make3d_depth(disp, gt, median_scaling,
                                                opt.pred_depth_scale_factor)
        per_image.append(errors)
        if ratio is not None:
            ratios.append(ratio)
    metrics = {k: float(np.mean([e[k] for e in per_image])) for k in E.MAKE3D_METRIC_NAMES}
    ratio_summary = None
    if ratios:
        med, std = E.ratio_stats(ratios)
        ratio_summary = {"median": med, "std": std}
        print(f" Scaling ratios | med: {med:0.3f} | std: {std:0.3f}")
    print("\n  " + E.format_metrics_header(E.MAKE3D_METRIC_NAMES))
    print(E.format_metrics_row([metrics[k] for k in E.MAKE3D_METRIC_NAMES]))
    return {"metrics": metrics, "num_images": len(per_image), "median_scaling": median_scaling,
            "pred_depth_scale_factor": opt.pred_depth_scale_factor, "scaling_ratios": ratio_summary}, meta


def evaluate_folder(opt, weights_folder, splits_dir, device, gt_depths=None):
    """Evaluate one weights folder (or --ext_disp_to_eval); returns the metrics record or None.

    ``gt_depths``: the scoring split's ground truth when already loaded (read here otherwise).
    """
    pred_split, score_split = plan_splits(opt)
    check_split_files(opt, pred_split, splits_dir)
    if gt_depths is None and needs_gt(opt):  # fail before predicting when it is missing
        gt_depths = load_gt_depths(score_split, splits_dir, opt.data_path)
    out_dir = output_dir(opt, weights_folder)
    if opt.eval_split == "make3d":
        if opt.ext_disp_to_eval:
            raise CLIError("--ext_disp_to_eval is not supported with --eval_split make3d")
        record, meta = score_make3d(opt, weights_folder, splits_dir, device)
    else:
        disps, meta = get_disparities(opt, weights_folder, pred_split, splits_dir, device)
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
        source = opt.ext_disp_to_eval or weights_folder
        record = score(opt, disps, score_split, gt_depths, source)
    record.update(describe_run(opt, weights_folder, score_split, meta))
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


def describe_run(opt, weights_folder, score_split, meta):
    """The options that matter for a metrics.json record."""
    model = None
    if meta is not None:
        model = meta.to_dict()
    return {
        "split": score_split,
        "eval_split": opt.eval_split,
        "weights_folder": os.path.abspath(weights_folder) if weights_folder else None,
        "epoch": weights_epoch(weights_folder) if weights_folder else None,
        "mode": "stereo" if opt.eval_stereo else "mono",
        "post_process": bool(opt.post_process),
        "eval_eigen_to_benchmark": bool(opt.eval_eigen_to_benchmark),
        "ext_disp_to_eval": os.path.abspath(opt.ext_disp_to_eval) if opt.ext_disp_to_eval else None,
        "data_path": os.path.abspath(opt.data_path),
        "model": model,
    }


# --------------------------------------------------------------------------------------------
# Every epoch of a run
# --------------------------------------------------------------------------------------------
def summarize_epochs(records, models_dir, metric_names):
    """Print one row per epoch with the best abs_rel marked; write models/metrics_all.json."""
    scored = [(folder, r) for folder, r in records if r is not None]
    if not scored:
        return None
    best_folder, best = min(scored, key=lambda fr: fr[1]["metrics"]["abs_rel"])
    print(f"\n-> All epochs ({len(scored)}), best abs_rel marked with *")
    print("  epoch | " + E.format_metrics_header(metric_names))
    for folder, record in scored:
        mark = "*" if folder == best_folder else " "
        row = E.format_metrics_row([record["metrics"][k] for k in metric_names])
        print(f"{mark} {weights_epoch(folder)!s:>5} {row}")
    summary = {
        "split": best["split"],
        "best_epoch": weights_epoch(best_folder),
        "best_weights_folder": os.path.abspath(best_folder),
        "best_abs_rel": best["metrics"]["abs_rel"],
        "epochs": [{"epoch": weights_epoch(f), "weights_folder": os.path.abspath(f),
                    "metrics": r["metrics"], "num_images": r["num_images"]} for f, r in scored],
    }
    path = os.path.join(models_dir, "metrics_all.json")
    E.write_json_atomic(path, summary)
    print(f"-> Wrote {path}")
    return summary


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
    names = E.MAKE3D_METRIC_NAMES if opt.eval_split == "make3d" else E.DEPTH_METRIC_NAMES
    return summarize_epochs(records, models_dir, names)


def main(argv=None, splits_dir=SPLITS_DIR):
    opt = SRDOptions("Evaluate depth checkpoints (KITTI Eigen / improved ground truth / benchmark, "
                     "the Eigen-style synthetic split with the Garg crop, Make3D)").parse(argv, mode="eval")
    return evaluate(opt, chosen_split_dir(opt, argv, splits_dir))


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
