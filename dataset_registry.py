"""The one registry of dataset sources: a name (``--dataset``) → the class that reads it and the
facts the tools need about it. ``options.py`` takes its ``--dataset`` choices from here, the
datasets package (``datasets.dataset_class``, ``build_dataset``), ``prepare_cache.py`` and the
evaluation library build their datasets through it.

Adding a source: one module under ``datasets/`` with a ``MonoDataset`` subclass, and one entry
below. This module is torch-free and imports nothing of the repo's (layer 0), so the option
parser and the torch-free tools can read it.
"""

import os
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class DatasetSource:
    """One registered dataset source.

    Attributes:
        module: the module that defines the dataset class (imported on first use).
        class_name: the ``MonoDataset`` subclass in ``module``.
        help: one line for ``--help``.
        stereo: whether the source has a stereo partner (``--use_stereo``, split lines with a side
            column ``l``/``r``); a mono source's split lines are ``<folder> <frame index>``.
        split_in_data_path: the split lists (``train_files.txt``, ``val_files.txt``) live in the
            data folder itself (written by its preparation tool) rather than in ``splits/<split>/``;
            ``--split`` given explicitly still names a folder of ``--split_dir``.
        fixed_ext: the image extension the source always has (None: ``--png`` chooses).
        calib_files: ``--use_calib_file`` applies (KITTI calibration files per drive/sequence).
        photometric_validation: the source has no ground truth, so the training's validation
            batches load the source frames too and report the photometric loss.
    """
    module: str
    class_name: str
    help: str
    stereo: bool = True
    split_in_data_path: bool = False
    fixed_ext: Optional[str] = None
    calib_files: bool = True
    photometric_validation: bool = False


# the training split of a source whose lists live in splits/ (``--split``'s default)
DEFAULT_SPLIT = "eigen_zhou"

DATASETS = {
    "kitti": DatasetSource("datasets.kitti_dataset", "KITTIRAWDataset",
                           "KITTI raw (image_02/03, Velodyne ground truth)"),
    "kitti_odom": DatasetSource("datasets.kitti_dataset", "KITTIOdomDataset",
                                "KITTI odometry (sequences/NN/image_2/3; no ground truth)"),
    "kitti_depth": DatasetSource("datasets.kitti_dataset", "KITTIDepthDataset",
                                 "KITTI raw images, the depth benchmark's improved ground truth"),
    "video": DatasetSource("datasets.video_dataset", "VideoDataset",
                           "a folder written by prepare_video.py (mono, per-sequence intrinsics, "
                           "its own train/val lists)",
                           stereo=False, split_in_data_path=True, fixed_ext=".jpg",
                           calib_files=False, photometric_validation=True),
}


def source(name: str) -> DatasetSource:
    """The registry entry of ``name``; ValueError naming ``--dataset`` and the choices otherwise."""
    if name not in DATASETS:
        raise ValueError(f"--dataset {name} is not known; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def choices_help() -> str:
    """``name: help`` of every source, for ``--dataset``'s help text."""
    return "; ".join(f"{name}: {entry.help}" for name, entry in DATASETS.items())


def own_split(dataset: str, data_path: str) -> Optional[str]:
    """The split a run on ``dataset`` uses when ``--split`` is not given: the absolute data folder
    for a source whose lists live there (``split_in_data_path``; ``os.path.join(split_dir, split)``
    then keeps it as is), else None (the ``--split`` default applies)."""
    if source(dataset).split_in_data_path:
        return os.path.abspath(os.path.expanduser(data_path))
    return None
