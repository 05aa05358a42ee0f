"""Depth evaluation of weights folders as a library: find the folders, predict a split, score it
(KITTI protocol or Make3D) and summarise epochs, returning plain records. No printing of tables, no
result files and no options object: ``evaluate_depth.py`` parses, prints and writes; the demo and
the benches call these directly.
"""

import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from evaluation.depth import evaluate_disparities, image_to_input, predict_disparity, ratio_stats
from evaluation.make3d import (MAKE3D_METRIC_NAMES, evaluate_make3d_depth, load_make3d_depth,
                               make3d_crop_depth, make3d_crop_image)
from utils import load_rgb, readlines, split_file_path

EVAL_BATCH_SIZE = 16
WEIGHTS_DIR_RE = re.compile(r"^weights_(\d+)$")


@dataclass(frozen=True)
class DepthEvalSettings:
    """How to read the test images and score the predictions.

    Attributes:
        data_path: the dataset root (KITTI raw, the benchmark's test folder, or Make3D).
        dataset: the registered source (``dataset_registry.DATASETS``) whose layout the test
            split's lines follow (not used by the benchmark and Make3D splits).
        img_ext: ".jpg" or ".png" (KITTI raw).
        use_calib_file: intrinsics from each drive's calibration (only matters for the datasets).
        image_cache: a ``prepare_cache.py`` folder to read resized images from, or None.
        num_workers: DataLoader workers for prediction.
        progress: show progress bars.
        post_process: predict the mirrored image too and blend (Monodepth2's post-processing).
        median_scaling: per-image median scaling (mono); off for stereo models.
        scale_factor: multiplies predicted depth before scaling (5.4 for stereo models).
    """
    data_path: str
    dataset: str = "kitti"
    img_ext: str = ".jpg"
    use_calib_file: bool = False
    image_cache: Optional[str] = None
    num_workers: int = 0
    progress: bool = True
    post_process: bool = False
    median_scaling: bool = True
    scale_factor: float = 1.0


# --------------------------------------------------------------------------------------------
# What to evaluate
# --------------------------------------------------------------------------------------------
def weights_epoch(folder: Optional[str]) -> Optional[int]:
    """Epoch number of a ``weights_<epoch>`` folder, or None for another name."""
    if not folder:
        return None
    match = WEIGHTS_DIR_RE.match(os.path.basename(os.path.normpath(folder)))
    return int(match.group(1)) if match else None


def find_weights_folders(path: str) -> Tuple[List[str], Optional[str]]:
    """The weights folders under ``path``: ``(folders, models_dir)``.

    One folder when ``path`` holds ``encoder.pth`` (models_dir None), else every ``weights_<epoch>``
    of ``path`` (a run's ``models/``) or of ``path/models`` (a run folder), sorted by epoch, with the
    folder that holds them.
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


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
class ImageListDataset(Dataset):
    """Images named by split lines ``<folder> <index>`` as ``<data_path>/<folder>/<index:010d>.<ext>``.

    The KITTI benchmark test split (lines ``image 0`` ...) with ``data_path`` pointing at
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
        return {("color", 0, 0): image_to_input(load_rgb(self.paths[index]), self.height,
                                                self.width)[0]}


def build_test_dataset(split: str, filenames: Sequence[str], height: int, width: int,
                       settings: DepthEvalSettings) -> Dataset:
    """The dataset that feeds ``split``'s test images at the model's resolution (every file checked
    to exist first)."""
    if split == "benchmark":
        return ImageListDataset(settings.data_path, filenames, height, width)
    from datasets import check_data_path, check_dataset_files, dataset_class
    check_data_path(settings.data_path)
    dataset = dataset_class(settings.dataset)(
        settings.data_path, filenames, height, width, [0], 1, is_train=False,
        img_ext=settings.img_ext, load_depth=False, use_calib_file=settings.use_calib_file,
        image_cache=settings.image_cache)
    check_dataset_files(dataset, f"split '{split}'", settings.data_path)
    return dataset


def predict_split(weights_folder: str, split: str, splits_dir: str, device: torch.device,
                  settings: DepthEvalSettings, log=print):
    """Scaled disparities ``[N,h,w]`` of a weights folder on ``split``'s test_files.txt, and the
    model's :class:`~networks.spec.ModelSpec`."""
    from checkpointing import load_depth_model
    filenames = readlines(split_file_path(split, "test_files.txt", splits_dir))
    encoder, decoder, spec = load_depth_model(weights_folder, device, log=log)
    dataset = build_test_dataset(split, filenames, spec.height, spec.width, settings)
    loader = DataLoader(dataset, EVAL_BATCH_SIZE, shuffle=False, drop_last=False,
                        num_workers=min(settings.num_workers, os.cpu_count() or 1),
                        pin_memory=device.type == "cuda")
    if log is not None:
        log(f"-> Predicting {len(dataset)} images of split '{split}' at {spec.width}x{spec.height} "
            f"with {weights_folder} on {device}")
    disps = []
    for batch in tqdm(loader, desc="predict", disable=not settings.progress, leave=False):
        images = batch[("color", 0, 0)].to(device)
        disps.append(predict_disparity(encoder, decoder, images, spec.min_depth, spec.max_depth,
                                       settings.post_process))
    return np.concatenate(disps), spec


def load_ext_disps(path: str) -> np.ndarray:
    """Disparities ``[N,h,w]`` from a ``.npy`` file (``--ext_disp_to_eval``)."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--ext_disp_to_eval {path} does not exist")
    disps = np.load(path)
    if disps.ndim != 3:
        raise ValueError(f"--ext_disp_to_eval {path} must hold N x h x w disparities, got shape "
                         f"{disps.shape}")
    return disps


def load_gt_depths(split: str, splits_dir: str, data_path: str) -> List[np.ndarray]:
    """The list of ground-truth depth maps ``[H_i,W_i]`` of ``splits/<split>/gt_depths.npz``."""
    path = os.path.join(splits_dir, split, "gt_depths.npz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ground truth {path} is missing: make it with `python "
                                f"export_gt_depth.py --data_path {data_path} --split {split}`")
    with np.load(path, fix_imports=True, encoding="latin1", allow_pickle=True) as npz:
        return list(npz["data"])


def check_length(disps, expected: int, what: str, source: str) -> None:
    if len(disps) != expected:
        raise ValueError(f"{source} has {len(disps)} disparities but {what} has {expected}: "
                         "predictions must be in the order of the split's test_files.txt")


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------
def _ratio_summary(ratios):
    if not ratios:
        return None
    med, std = ratio_stats(ratios)
    return {"median": med, "std": std}


def score_disparities(disps: np.ndarray, gt_depths: Sequence[np.ndarray], split: str,
                      settings: DepthEvalSettings, source: str, regions=None) -> Dict:
    """KITTI-protocol record of disparities against ``split``'s ground truth: ``metrics``,
    ``num_images``, ``median_scaling``, ``pred_depth_scale_factor``, ``scaling_ratios`` (median and
    std of the per-image ratios, or None) and, with ``regions``, the per-region metrics."""
    check_length(disps, len(gt_depths), f"the ground truth of '{split}'", source)
    result = evaluate_disparities(disps, gt_depths, split, settings.median_scaling,
                                  settings.scale_factor, regions=regions)
    record = {"metrics": result["metrics"], "num_images": result["num_images"],
              "median_scaling": settings.median_scaling,
              "pred_depth_scale_factor": settings.scale_factor,
              "scaling_ratios": _ratio_summary(result["ratios"])}
    if regions is not None:
        record["regions"] = result["regions"]
    return record


def score_make3d(weights_folder: str, splits_dir: str, device: torch.device,
                 settings: DepthEvalSettings, log=print):
    """Make3D protocol on ``settings.data_path``: ``(record, spec)``."""
    from checkpointing import load_depth_model
    images = readlines(split_file_path("make3d", "test_img_list.txt", splits_dir))
    depths = readlines(split_file_path("make3d", "test_depth_list.txt", splits_dir))
    if len(images) != len(depths):
        raise ValueError(f"splits/make3d lists {len(images)} images but {len(depths)} depth files")
    encoder, decoder, spec = load_depth_model(weights_folder, device, log=log)
    per_image, ratios = [], []
    for img_name, depth_name in tqdm(list(zip(images, depths)), desc="make3d",
                                     disable=not settings.progress, leave=False):
        image = load_rgb(os.path.join(settings.data_path, img_name))
        batch = image_to_input(make3d_crop_image(image), spec.height, spec.width).to(device)
        disp = predict_disparity(encoder, decoder, batch, spec.min_depth, spec.max_depth,
                                 settings.post_process)[0]
        gt = make3d_crop_depth(load_make3d_depth(os.path.join(settings.data_path, depth_name)),
                               image.shape[0], image.shape[1])
        errors, ratio = evaluate_make3d_depth(disp, gt, settings.median_scaling,
                                              settings.scale_factor)
        per_image.append(errors)
        if ratio is not None:
            ratios.append(ratio)
    metrics = {k: float(np.mean([e[k] for e in per_image])) for k in MAKE3D_METRIC_NAMES}
    return {"metrics": metrics, "num_images": len(per_image),
            "median_scaling": settings.median_scaling,
            "pred_depth_scale_factor": settings.scale_factor,
            "scaling_ratios": _ratio_summary(ratios)}, spec


def summarize_epochs(records: Sequence[Tuple[str, Optional[Dict]]]) -> Optional[Dict]:
    """The best epoch (lowest abs_rel) of ``[(weights folder, record or None), ...]`` and every
    epoch's metrics, or None when nothing was scored."""
    scored = [(folder, r) for folder, r in records if r is not None]
    if not scored:
        return None
    best_folder, best = min(scored, key=lambda fr: fr[1]["metrics"]["abs_rel"])
    return {
        "split": best["split"],
        "best_epoch": weights_epoch(best_folder),
        "best_weights_folder": os.path.abspath(best_folder),
        "best_abs_rel": best["metrics"]["abs_rel"],
        "epochs": [{"epoch": weights_epoch(f), "weights_folder": os.path.abspath(f),
                    "metrics": r["metrics"], "num_images": r["num_images"]} for f, r in scored],
    }
