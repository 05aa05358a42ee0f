"""Export the ground-truth depth maps of an evaluation split to ``splits/<split>/gt_depths.npz``.

    python export_gt_depth.py --data_path kitti_data --split eigen
    python export_gt_depth.py --data_path kitti_data --split eigen_benchmark

- ``eigen`` (and any other split folder with a ``test_files.txt``): the Velodyne scan of each
  frame projected into the camera of the line's side (``l`` → image_02, the only side the
  published lists use) with ``generate_depth_map(calib_dir, velo_file, cam, vel_depth=True)`` —
  depth is the Velodyne's forward coordinate, the published Eigen protocol.
- ``eigen_benchmark``: the improved ground truth ``<drive>/proj_depth/groundtruth/image_02/%010d.png``
  (uint16 / 256).

The npz holds one key, ``"data"``: an object array of [H,W] float32 maps in metres (0 = no data),
one per line of ``test_files.txt``, in order, at each drive's native size — the layout of the
Monodepth2 family, so it loads with ``np.load(path, allow_pickle=True)["data"]``. The file is
written to a temporary name and renamed, so it is complete or absent.
"""

import argparse
import os
import sys

import numpy as np
from tqdm import tqdm

from datasets.kitti_utils import check_data_path, generate_depth_map, read_png_depth
from utils import SPLITS_DIR, CLIError, DOWNLOAD_COMMAND, atomic_write, readlines, run_cli

SIDE_TO_CAM = {"l": 2, "r": 3, "2": 2, "3": 3}
PUBLISHED_EVAL_SPLITS = ("eigen", "eigen_benchmark")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Export ground-truth depth maps of an evaluation split to "
                    "<split_dir>/<split>/gt_depths.npz")
    parser.add_argument("--data_path", type=str, required=True,
                        help="KITTI raw root (date folders with calib files and drives), or a "
                             "synthetic scene from `python -m synthetic_scene`")
    parser.add_argument("--split", type=str, required=True,
                        help="'eigen' (Velodyne projection), 'eigen_benchmark' (improved ground-truth "
                             "PNGs), or any split folder with a test_files.txt (Velodyne projection)")
    parser.add_argument("--split_dir", type=str, default=SPLITS_DIR,
                        help="folder holding the split folders; test_files.txt is read from and "
                             "gt_depths.npz written to <split_dir>/<split>/ (default: the repo's "
                             "splits/)")
    return parser.parse_args(argv)


def read_test_lines(split_dir, split):
    """Lines of ``<split_dir>/<split>/test_files.txt``, or CLIError listing the known splits."""
    path = os.path.join(split_dir, split, "test_files.txt")
    if os.path.isfile(path):
        return path, readlines(path)
    present = sorted(d for d in os.listdir(split_dir)
                     if os.path.isfile(os.path.join(split_dir, d, "test_files.txt"))) \
        if os.path.isdir(split_dir) else []
    if split in PUBLISHED_EVAL_SPLITS:
        raise CLIError(f"{path} is missing: fetch the KITTI split lists with `{DOWNLOAD_COMMAND}`")
    raise CLIError(f"unknown split '{split}': no {path}; known: "
                   f"{', '.join(sorted(set(PUBLISHED_EVAL_SPLITS) | set(present)))} (the KITTI "
                   f"lists are fetched with `{DOWNLOAD_COMMAND}`)")


def parse_test_line(line, number):
    """``'<folder> <frame> <side>'`` → (folder, frame_index, cam), CLIError naming the line."""
    fields = line.split()
    if len(fields) != 3 or fields[2] not in SIDE_TO_CAM or not fields[1].isdigit():
        raise CLIError(f"test_files.txt line {number} ({line!r}): expected "
                       "'<date>/<drive folder> <frame index> <l|r>'")
    return fields[0], int(fields[1]), SIDE_TO_CAM[fields[2]]


def input_files(data_path, split, folder, frame_index, cam):
    """The files one ground-truth map is made from (to check before the long loop)."""
    if split == "eigen_benchmark":
        return [benchmark_png_path(data_path, folder, frame_index, cam)]
    calib_dir = os.path.join(data_path, folder.split("/")[0])
    return [os.path.join(calib_dir, "calib_cam_to_cam.txt"),
            os.path.join(calib_dir, "calib_velo_to_cam.txt"),
            velodyne_path(data_path, folder, frame_index)]


def velodyne_path(data_path, folder, frame_index):
    return os.path.join(data_path, folder, "velodyne_points", "data", f"{frame_index:010d}.bin")


def benchmark_png_path(data_path, folder, frame_index, cam):
    return os.path.join(data_path, folder, "proj_depth", "groundtruth", f"image_0{cam}",
                        f"{frame_index:010d}.png")


def export_depth(data_path, split, folder, frame_index, cam):
    """[H,W] float32 ground-truth depth of one test line."""
    if split == "eigen_benchmark":
        return read_png_depth(benchmark_png_path(data_path, folder, frame_index, cam))
    calib_dir = os.path.join(data_path, folder.split("/")[0])
    return generate_depth_map(calib_dir, velodyne_path(data_path, folder, frame_index), cam,
                              vel_depth=True)


def main(argv=None):
    opt = parse_args(argv)
    check_data_path(opt.data_path)
    list_path, lines = read_test_lines(opt.split_dir, opt.split)
    entries = [parse_test_line(line, n) for n, line in enumerate(lines, start=1)]

    for n, (line, entry) in enumerate(zip(lines, entries), start=1):
        for path in input_files(opt.data_path, opt.split, *entry):
            if not os.path.isfile(path):
                raise CLIError(f"{path} does not exist (test_files.txt line {n}: {line!r})")

    source = "improved ground-truth PNGs" if opt.split == "eigen_benchmark" else "Velodyne scans"
    print(f"Exporting {len(entries)} ground-truth depth maps of split '{opt.split}' from {source}")
    gt_depths = np.empty(len(entries), dtype=object)
    for i, entry in enumerate(tqdm(entries, unit="frame", file=sys.stderr)):
        try:
            gt_depths[i] = export_depth(opt.data_path, opt.split, *entry).astype(np.float32)
        except (FileNotFoundError, ValueError) as e:
            raise CLIError(f"{e} (test_files.txt line {i + 1}: {lines[i]!r})") from None

    output_path = os.path.join(os.path.dirname(list_path), "gt_depths.npz")
    with atomic_write(output_path) as f:
        np.savez_compressed(f, data=gt_depths)
    print(f"Saved {output_path}")


if __name__ == "__main__":
    run_cli(main)
