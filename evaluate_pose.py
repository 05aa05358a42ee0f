"""Evaluate a pose network on KITTI odometry sequences 09 / 10 (Monodepth2's protocol).

    python evaluate_pose.py --eval_split odom_9 --load_weights_folder ~/tmp/mono_odom/models/weights_19 \\
        --data_path kitti_odom

``--data_path`` is the KITTI odometry root (``sequences/09/image_2/*.jpg`` and ``poses/09.txt``).
The frames of ``splits/odom/test_files_09.txt`` are fed as consecutive pairs (0, 1) to the pose
network (``pose_encoder.pth`` + ``pose.pth``, pose_model_input "pairs"); the relative poses are
chained into local trajectories of 5-frame snippets, and each snippet's absolute trajectory error is
computed after aligning the first frames and a least-squares scale (``evaluation.pose.compute_ate``).
Prints mean ± std and writes ``metrics_pose.json`` (beside the weights, or in ``--eval_out_dir``;
named apart from the depth evaluation's ``metrics.json`` so neither overwrites the other).

The split folder is taken from ``--eval_split <folder>_<sequence>``: ``odom_9`` reads
``splits/odom/test_files_09.txt``; the synthetic odometry scene's ``synthetic_odom_9`` reads
``splits/synthetic_odom/test_files_09.txt``.
"""

import os
import re
import sys
from typing import Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import evaluation as E
from layers import transformation_from_parameters
from checkpointing import load_pose_model
from networks import PairPose, ModelSpec, check_pair_pose
from options import SRDOptions, chosen_split_dir, explicit_flags
from utils import CLIError, SPLITS_DIR, readlines, run_cli, split_file_path

POSE_SPLIT_RE = re.compile(r"^(.*odom)_(\d+)$")
TRACK_LENGTH = 5
EVAL_BATCH_SIZE = 16


def parse_pose_split(eval_split: str) -> Tuple[str, int]:
    """``odom_9`` -> ("odom", 9); ``synthetic_odom_10`` -> ("synthetic_odom", 10)."""
    match = POSE_SPLIT_RE.match(eval_split)
    if not match:
        raise CLIError(f"--eval_split {eval_split} is not a pose split: use odom_9 or odom_10 "
                       "(or <folder>_<sequence> for splits/<folder>/test_files_<NN>.txt)")
    return match.group(1), int(match.group(2))


def pose_setup(opt, weights_folder, device, explicit=None):
    """Load the pose network of a weights folder.

    Returns ``(relative_pose, spec)``: ``relative_pose(images0, images1)`` -> ``[B,4,4]`` (points of
    frame 0 into frame 1) and the :class:`~networks.spec.ModelSpec` (defaults < the run's opt.json
    < encoder.pth < ``explicit``, the model flags given on the command line).
    """
    pose_encoder, pose, depth_encoder, spec = load_pose_model(weights_folder, device, explicit)
    check_pair_pose(spec, "evaluate_pose.py")
    net = PairPose(spec.pose_model_type, pose_encoder, pose, depth_encoder).to(device).eval()

    @torch.no_grad()
    def relative_pose(images0, images1):
        return transformation_from_parameters(*net(images0, images1))
    return relative_pose, spec


def predict_poses(opt, relative_pose, spec, filenames, device):
    """Relative poses [N,4,4] (points of frame i into frame i+1) for every line of the split."""
    from datasets.kitti_dataset import KITTIOdomDataset, check_data_path
    check_data_path(opt.data_path)
    dataset = KITTIOdomDataset(opt.data_path, filenames, spec.height, spec.width, [0, 1], 1,
                               is_train=False, img_ext=".png" if opt.png else ".jpg",
                               load_depth=False, use_calib_file=opt.use_calib_file)
    loader = DataLoader(dataset, EVAL_BATCH_SIZE, shuffle=False, drop_last=False,
                        num_workers=min(opt.num_workers, os.cpu_count() or 1),
                        pin_memory=device.type == "cuda")
    poses = []
    for batch in tqdm(loader, desc="pose", disable=opt.no_progress, leave=False):
        T = relative_pose(batch[("color", 0, 0)].to(device), batch[("color", 1, 0)].to(device))
        poses.append(T.double().cpu().numpy())
    return np.concatenate(poses)


def evaluate(opt, splits_dir=SPLITS_DIR, explicit=None):
    """Run the evaluation; returns the metrics record written to metrics.json."""
    folder_name, sequence = parse_pose_split(opt.eval_split)
    if not opt.load_weights_folder:
        raise CLIError("give --load_weights_folder <run>/models/weights_<epoch>")
    weights_folder = os.path.expanduser(opt.load_weights_folder)
    if not os.path.isdir(weights_folder):
        raise FileNotFoundError(f"--load_weights_folder {weights_folder} does not exist")
    filenames = readlines(split_file_path(folder_name, f"test_files_{sequence:02d}.txt", splits_dir))
    gt_global = E.read_kitti_poses(os.path.join(opt.data_path, "poses", f"{sequence:02d}.txt"))
    gt_local = E.local_from_global_poses(gt_global)
    if len(gt_local) != len(filenames):
        raise ValueError(f"{len(filenames)} frame pairs in the split but {len(gt_global)} poses in "
                         f"poses/{sequence:02d}.txt (expected one more pose than split lines)")

    device = torch.device("cuda" if torch.cuda.is_available() and not opt.no_cuda else "cpu")
    relative_pose, spec = pose_setup(opt, weights_folder, device, explicit)
    print(f"-> Predicting {len(filenames)} relative poses of sequence {sequence:02d} at "
          f"{spec.width}x{spec.height} on {device}")
    pred_local = predict_poses(opt, relative_pose, spec, filenames, device)

    ates = E.snippet_ates(pred_local, gt_local, TRACK_LENGTH)
    mean, std = float(np.mean(ates)), float(np.std(ates))
    print(f"\n   Trajectory error: {mean:0.3f}, std: {std:0.3f}\n")
    record = {"split": opt.eval_split, "sequence": sequence, "ate_mean": mean, "ate_std": std,
              "num_snippets": len(ates), "track_length": TRACK_LENGTH,
              "weights_folder": os.path.abspath(weights_folder),
              "data_path": os.path.abspath(opt.data_path), "model": spec.to_dict()}
    out_dir = os.path.expanduser(opt.eval_out_dir) if opt.eval_out_dir else weights_folder
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "metrics_pose.json")
    E.write_json_atomic(path, record)
    print(f"-> Wrote {path}")
    return record


def main(argv=None, splits_dir=SPLITS_DIR):
    # Pose evaluation has no --eval_mono/--eval_stereo choice: validate as for training.
    options = SRDOptions("Evaluate a pose network on KITTI odometry (absolute trajectory error of "
                         "5-frame snippets)", script="evaluate_pose")
    opt = options.parse(argv, mode="train")
    given = explicit_flags(options.parser, sys.argv[1:] if argv is None else argv)
    explicit = {k: getattr(opt, k) for k in given if k in ModelSpec.__dataclass_fields__}
    return evaluate(opt, chosen_split_dir(opt, argv, splits_dir), explicit)


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
