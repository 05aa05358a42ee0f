"""``python -m synthetic_scene --out synthetic_kitti``: the command line of the generator."""

import argparse
import os

from synthetic_scene.constants import (DEFAULT_NUM_DRIVES, DEFAULT_NUM_FRAMES, DEFAULT_ODOM_FRAMES,
                                       DEFAULT_SEED, DEFAULT_STEP)
from synthetic_scene.kitti_writer import _reuse_freed_memory, generate


def parser():
    p = argparse.ArgumentParser(
        prog="python -m synthetic_scene",
        description="Write a synthetic street scene in KITTI's raw (and optionally odometry) "
                    "format, deterministic by seed, plus its split lists.")
    p.add_argument("--out", default="synthetic_kitti",
                   help="output folder, used as --data_path for training/evaluation "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help="generator seed; same parameters give byte-identical files "
                        "(default: %(default)s)")
    p.add_argument("--num_drives", type=int, default=DEFAULT_NUM_DRIVES,
                   help="raw drives 9001, 9002, ...; the last is the test drive "
                        "(default: %(default)s)")
    p.add_argument("--num_frames", type=int, default=DEFAULT_NUM_FRAMES,
                   help="frames per raw drive (default: %(default)s)")
    p.add_argument("--step", type=float, default=DEFAULT_STEP,
                   help="metres the camera moves per frame; ~1 m did not train from scratch, "
                        "0.4-0.6 m did (default: %(default)s)")
    p.add_argument("--png", action="store_true",
                   help="also write .png images next to the .jpg ones (for training with --png)")
    p.add_argument("--odometry", action="store_true",
                   help="also write KITTI-odometry sequences 09 and 10 (sequences/XX, "
                        "poses/XX.txt) in the same folder, for pose evaluation")
    p.add_argument("--odom_frames", type=int, default=DEFAULT_ODOM_FRAMES,
                   help="frames per odometry sequence (default: %(default)s)")
    p.add_argument("--no_gt_depth", action="store_true",
                   help="do not write proj_depth/groundtruth PNGs (needed only for "
                        "eigen_benchmark-style evaluation)")
    p.add_argument("--force", action="store_true",
                   help="regenerate even if the folder already holds a scene with these parameters")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes rendering frames in parallel; the output does not depend on it "
                        "(default: %(default)s)")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    v = p.add_argument_group("a drive as a video (for prepare_video.py) instead of the KITTI scene")
    v.add_argument("--video", metavar="MP4",
                   help="write one drive (--seed, --num_frames scene frames, --step) as this mp4 "
                        "plus <name>.json (fx fy cx cy of its frames, what was rendered)")
    v.add_argument("--rate", type=int, default=3,
                   help="video frames per scene frame (the camera moves --step / rate per video "
                        "frame; default: %(default)s)")
    v.add_argument("--static", metavar="AFTER:COUNT", action="append", default=[],
                   help="after rendered frame AFTER (counted without repeats) repeat it COUNT "
                        "more times (the camera stands still); may be given several times")
    v.add_argument("--video_scale", type=float, default=2 / 3,
                   help="frame size relative to the camera's 1242x375 (default 2/3: 828x250)")
    return p


def write_video_from_args(args):
    """``--video``: render the drive, write the mp4 and its JSON, say what was written."""
    from synthetic_scene.video import write_video
    try:
        static = [tuple(int(x) for x in item.split(":")) for item in args.static]
    except ValueError:
        static = [()]
    if any(len(pair) != 2 or min(pair) < 0 for pair in static) or args.rate < 1:
        parser().error("--static takes AFTER:COUNT (non-negative integers); --rate at least 1")
    record = write_video(args.video, seed=args.seed, scene_frames=args.num_frames,
                         rate=args.rate, static=static, scale=args.video_scale, step=args.step)
    print(f"wrote {args.video}: {len(record['pose_of_frame'])} frames of {record['width']}x"
          f"{record['height']} ({args.rate} per scene frame, {record['static_inserted']} "
          f"repeated), intrinsics in {os.path.splitext(args.video)[0]}.json")


def main(argv=None):
    args = parser().parse_args(argv)
    _reuse_freed_memory()  # this process is ours: trade a little memory for speed
    if args.video:
        return write_video_from_args(args)
    result = generate(args.out, seed=args.seed, num_drives=args.num_drives,
                      num_frames=args.num_frames, step=args.step, png=args.png,
                      odometry=args.odometry, odom_frames=args.odom_frames,
                      gt_depth=not args.no_gt_depth, force=args.force,
                      progress=not args.no_progress, workers=args.workers)
    root = os.path.abspath(result["root"])
    if result["skipped"]:
        print(f"{root} already holds the synthetic scene with these parameters "
              "(use --force to rewrite)"
              + (f"; added the {result['labels_added']} label maps it lacked"
                 if result.get("labels_added") else ""))
    else:
        print(f"wrote the synthetic KITTI scene to {root} in {result['seconds']:.1f} s")
    defaults = (args.num_drives, args.num_frames) == (DEFAULT_NUM_DRIVES, DEFAULT_NUM_FRAMES)
    if defaults:
        print(f"train / evaluate with: --data_path {root} --split synthetic "
              "(evaluation: --eval_split synthetic)")
    else:
        print("non-default drives/frames: the repo's splits/synthetic lists do not match; copy "
              f"{os.path.join(root, 'splits', 'synthetic')} to splits/<name>/ and use "
              "--split <name>")
    if args.odometry:
        print(f"odometry: --data_path {root} with the lists in splits/synthetic_odom "
              "(test_files_09.txt, test_files_10.txt)")
