"""Datasets of the repo: the batch-dict contract (``MonoDataset``), the registered sources
(``dataset_registry.DATASETS``: the KITTI datasets, the prepared-video folder of
``prepare_video.py``; ``dataset_class(name)`` imports one), KITTI file utilities
(``datasets.kitti_utils``), the prepared-video folder's files and motion measurement
(``datasets.video_io``), the training-size image cache (``datasets.image_cache``, built by
``prepare_cache.py``), the device-side finish of training batches (``finish_batch``:
lower scales and colour augmentation, ``datasets.finish``). The synthetic KITTI-format scene that
the tests and the demo read is written by the ``synthetic_scene`` package, outside this one.

The dataset classes are imported on first use, so the torch-free tools (``export_gt_depth.py``,
``prepare_cache.py``) start without importing torch.
"""

import importlib

_LAZY = {
    "MonoDataset": ".mono_dataset",
    "KITTIDataset": ".kitti_dataset",
    "KITTIRAWDataset": ".kitti_dataset",
    "KITTIOdomDataset": ".kitti_dataset",
    "KITTIDepthDataset": ".kitti_dataset",
    "KITTI_AVERAGE_K": ".kitti_dataset",
    "VideoDataset": ".video_dataset",
    "check_data_path": ".kitti_utils",
    "ImageCache": ".image_cache",
    "finish_batch": ".finish",
}

__all__ = sorted(_LAZY) + ["dataset_class", "build_dataset", "check_dataset_files"]


def dataset_class(name):
    """The ``MonoDataset`` subclass registered as ``name`` in ``dataset_registry.DATASETS``
    (imported on first use). Raises CLIError naming ``--dataset`` and the choices."""
    import dataset_registry
    from utils import CLIError
    try:
        entry = dataset_registry.source(name)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    return getattr(importlib.import_module(entry.module), entry.class_name)


def __getattr__(name):
    """Import a dataset class on first access and keep it here."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def build_dataset(opt, filenames, is_train, frame_ids=None, load_depth=None, num_scales=4,
                  finish_on_device=None):
    """Build the dataset selected by ``opt.dataset`` with the options' size and image format.

    Args:
        opt: parsed options (uses ``dataset``, ``data_path``, ``height``, ``width``, ``png``,
            ``use_calib_file``, ``image_cache`` when present (None: no cache) and, unless
            ``frame_ids`` is given, ``frame_ids``).
        filenames: list of split lines, or the path of a split file to read them from.
        is_train: training augmentation on/off.
        frame_ids: frames to load (default ``opt.frame_ids``; add ``"s"`` for stereo).
        load_depth: see ``MonoDataset`` (None = only for evaluation when ground truth exists).
        num_scales: scales of the batch dict (4 in the Monodepth2 family).
        finish_on_device: see ``MonoDataset``; None = ``is_train``: training samples carry scale 0
            and their augmentation parameters, and ``finish_batch`` (``Trainer.run_step``, after
            the transfer to the device) builds the lower scales and the colour augmentation.

    Raises:
        CLIError: unknown ``opt.dataset`` or missing ``opt.data_path``.
    """
    import dataset_registry
    from utils import readlines

    from .kitti_utils import check_data_path

    cls = dataset_class(opt.dataset)
    ext = dataset_registry.source(opt.dataset).fixed_ext
    check_data_path(opt.data_path)
    if isinstance(filenames, str):
        filenames = readlines(filenames)
    return cls(
        opt.data_path, filenames, opt.height, opt.width,
        list(opt.frame_ids) if frame_ids is None else list(frame_ids), num_scales,
        is_train=is_train, img_ext=ext or (".png" if getattr(opt, "png", False) else ".jpg"),
        load_depth=load_depth, use_calib_file=getattr(opt, "use_calib_file", False),
        image_cache=getattr(opt, "image_cache", None),
        finish_on_device=is_train if finish_on_device is None else finish_on_device)


def check_dataset_files(dataset, split_file, data_path, shown=3):
    """Raise ``CLIError`` when a file that ``dataset`` will read is missing (stat only, before any
    model is built): the count, the first ``shown`` paths with their split lines, and what to do."""
    from utils import CLIError

    checked, missing = dataset.missing_files()
    if not missing:
        return checked
    first = "; ".join(f"{path} (line {line})" for path, line in missing[:shown])
    more = f"; ... and {len(missing) - shown} more" if len(missing) > shown else ""
    raise CLIError(f"{len(missing)} of the {checked} files that {split_file} needs are missing under "
                   f"--data_path {data_path}: {first}{more}; restore them (re-extract KITTI or "
                   "regenerate the scene) or remove those lines from the split")
