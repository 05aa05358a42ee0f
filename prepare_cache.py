"""Build the training-size image cache of a split (``--image_cache DIR`` of train.py /
evaluate_depth.py): every image the split lists need, decoded and resized once to --width x
--height, stored as the exact uint8 pixels the loader would compute (one ``.npy`` per image, memory
mappable) with a manifest (source path, size, mtime, target size, resize method). See
``datasets/image_cache.py``.

    python prepare_cache.py --data_path kitti_data --cache_dir kitti_cache_640x192
    python prepare_cache.py --data_path kitti_data --cache_dir DIR --split eigen_zhou \\
        --eval_split eigen --use_stereo --workers 8

Parallel (``--workers``), resumable (entries whose source is unchanged and whose file exists are
skipped; the manifest is saved every few seconds and on interruption), atomic per file (temp file +
``os.replace``). Disk: width x height x 3 bytes per image (369 KB at 640x192).
"""

import argparse
import os
import sys
import time

import dataset_registry
from utils import CLIError, positive_int, run_cli

FILE_DIR = os.path.dirname(os.path.abspath(__file__))
CHECKPOINT_SECONDS = 10.0


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_path", type=str, default=os.path.join(FILE_DIR, "kitti_data"),
                   help="root of the KITTI raw data (or of the synthetic scene); default: the "
                        "repo's kitti_data/")
    p.add_argument("--cache_dir", type=str, required=True,
                   help="folder to write the cache to (created; an existing cache there is "
                        "resumed); pass it to train.py / evaluate_depth.py as --image_cache")
    p.add_argument("--split", type=str, default=None,
                   help="training split folder of --split_dir: its train_files.txt (every frame of "
                        "--frame_ids) and val_files.txt (frame 0) are cached; 'none' to skip; "
                        "default: eigen_zhou, or with --dataset video the lists in --data_path")
    p.add_argument("--eval_split", type=str, default=None,
                   help="also cache frame 0 of <split_dir>/<eval_split>/test_files.txt (e.g. "
                        "eigen); evaluation reads them at the model's size, so this helps when "
                        "that is --width x --height")
    p.add_argument("--split_files", type=str, nargs="+", default=[],
                   help="further split list files (every frame of --frame_ids of each line)")
    p.add_argument("--split_dir", type=str, default=os.path.join(FILE_DIR, "splits"),
                   help="folder holding the split folders (default: the repo's splits/)")
    p.add_argument("--dataset", type=str, default="kitti", choices=list(dataset_registry.DATASETS),
                   help="dataset source whose file layout the split lines follow (as train.py's "
                        "--dataset): " + dataset_registry.choices_help())
    p.add_argument("--png", action="store_true", help="the images are .png (as train.py --png)")
    p.add_argument("--height", type=positive_int, default=192,
                   help="training input height, the cached size (default 192)")
    p.add_argument("--width", type=positive_int, default=640,
                   help="training input width, the cached size (default 640)")
    p.add_argument("--frame_ids", type=int, nargs="+", default=[0, -1, 1],
                   help="frames of each training line to cache, as train.py's --frame_ids "
                        "(default 0 -1 1)")
    p.add_argument("--use_stereo", action="store_true",
                   help="also cache each training line's stereo partner (train.py --use_stereo)")
    p.add_argument("--workers", type=positive_int, default=min(8, os.cpu_count() or 1),
                   help="parallel worker processes (default: min(8, CPU cores))")
    p.add_argument("--force", action="store_true",
                   help="rebuild every entry, also over a cache of another size or version")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def list_images(args):
    """[(list file, [source image paths])] of every list the cache covers."""
    import datasets
    from datasets.kitti_utils import check_data_path
    from utils import readlines, split_file_path
    check_data_path(args.data_path)
    cls = datasets.dataset_class(args.dataset)
    source = dataset_registry.source(args.dataset)
    if args.use_stereo and not source.stereo:
        raise CLIError(f"--use_stereo needs a stereo source; --dataset {args.dataset} is mono")
    if args.split is None:
        args.split = (dataset_registry.own_split(args.dataset, args.data_path)
                      or dataset_registry.DEFAULT_SPLIT)
    img_ext = source.fixed_ext or (".png" if args.png else ".jpg")
    train_ids = list(args.frame_ids) + (["s"] if args.use_stereo else [])
    lists = []
    if args.split != "none":
        lists.append((split_file_path(args.split, "train_files.txt", args.split_dir), train_ids))
        val = os.path.join(args.split_dir, args.split, "val_files.txt")
        if os.path.isfile(val):
            lists.append((val, [0]))
    if args.eval_split:
        lists.append((split_file_path(args.eval_split, "test_files.txt", args.split_dir), [0]))
    for path in args.split_files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--split_files {path} does not exist")
        lists.append((path, train_ids))
    if not lists:
        raise CLIError("nothing to cache: --split none and no --eval_split / --split_files")
    out = []
    for path, frame_ids in lists:
        ds = cls(args.data_path, readlines(path), args.height, args.width, frame_ids, 1,
                 is_train=False, img_ext=img_ext, load_depth=False)
        checked, missing = ds.missing_files()
        if missing:
            first = "; ".join(f"{p} (line {n})" for p, n in missing[:3])
            raise CLIError(f"{len(missing)} of the {checked} images that {path} needs are missing "
                           f"under --data_path {args.data_path}: {first}; restore them or remove "
                           "those lines from the list")
        out.append((path, list(ds.image_files())))
    return out


def open_manifest(args, cache_dir):
    """The manifest to extend: the existing one when it fits (resume), else a new one."""
    from datasets import image_cache as C
    fresh = C.new_manifest(args.data_path, args.width, args.height)
    if not os.path.exists(os.path.join(cache_dir, C.MANIFEST)):
        if os.path.isdir(cache_dir) and os.listdir(cache_dir) and not args.force:
            raise CLIError(f"--cache_dir {cache_dir} is not empty and holds no image cache "
                           f"({C.MANIFEST} missing): choose an empty or new folder (or --force)")
        return fresh
    try:
        manifest = C.read_manifest(cache_dir)
    except ValueError:
        if not args.force:
            raise
        return fresh
    problem = C.manifest_problem(manifest, args.width, args.height)
    if problem is not None and not args.force:
        raise CLIError(f"--cache_dir {cache_dir} holds another cache: {problem[1]}; use another "
                       "--cache_dir, or --force to rebuild it")
    if problem is not None or args.force:
        return fresh
    fresh["entries"] = manifest["entries"]
    return fresh


def main(argv=None):
    args = build_parser().parse_args(argv)
    from datasets import image_cache as C
    t0 = time.time()
    lists = list_images(args)
    cache_dir = os.path.abspath(os.path.expanduser(args.cache_dir))
    manifest = open_manifest(args, cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    root = os.path.join(os.path.abspath(os.path.expanduser(args.data_path)), "")
    entries = manifest["entries"]

    seen, tasks, valid = set(), [], 0
    for _, paths in lists:
        for path in paths:
            path = os.path.abspath(path)
            if path in seen:
                continue
            seen.add(path)
            rel = path[len(root):].replace(os.sep, "/") if path.startswith(root) else None
            if rel is None:
                raise CLIError(f"image {path} is outside --data_path {args.data_path}")
            entry = entries.get(rel)
            if entry is not None and not args.force and \
                    C.entry_is_valid(cache_dir, entry, path, args.width, args.height):
                valid += 1
                continue
            entries.pop(rel, None)  # stale or missing: out of the manifest until rewritten
            tasks.append((path, rel, cache_dir, args.width, args.height))
    print(f"-> {len(seen)} images in {len(lists)} list(s): {valid} already cached, "
          f"{len(tasks)} to write to {cache_dir} at {args.width}x{args.height} with "
          f"{args.workers} worker(s)", flush=True)

    errors = []
    last_save = [time.time()]

    def on_result(rel, entry, error):
        if error is not None:
            errors.append(error)
            return
        entries[rel] = entry
        if time.time() - last_save[0] > CHECKPOINT_SECONDS:
            C.write_manifest(cache_dir, manifest)
            last_save[0] = time.time()

    try:
        C.build_entries(tasks, args.workers, progress=not args.no_progress, on_result=on_result)
    finally:
        C.write_manifest(cache_dir, manifest)  # also on Ctrl-C: the next run resumes
    if errors:
        raise CLIError(f"{len(errors)} of {len(tasks)} images could not be cached: {errors[0]}"
                       f"{'; ...' if len(errors) > 1 else ''} (the others were; fix or remove "
                       "those and run again to resume)")
    size = len(seen) * args.width * args.height * 3 / 2 ** 20
    print(f"-> image cache complete: {len(seen)} images ({size:.0f} MiB) in {time.time() - t0:.1f} s;"
          f" train / evaluate with --image_cache {cache_dir} --width {args.width} "
          f"--height {args.height}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
