"""The whole job on a machine without KITTI: ``python demo.py``.

1. generates the synthetic KITTI-format scene (cached in ``--data_path``),
2. exports its ground truth (``export_gt_depth.py --split synthetic``),
3. trains SRD (U-Net decoder with DOR, distillation from epoch 1, auto-masking from epoch 1) on the CPU at
   192x64 for 10 epochs,
4. evaluates the untrained model and every epoch on the synthetic test split (Eigen protocol:
   Garg crop, median scaling) and prints one table row per epoch (the whole table at the end);
   it keeps the weights of the best and the newest epoch only (about 0.5 GB in all),
5. writes a PNG (input | predicted depth | ground truth) and prints its path.

About 7 minutes on 2 CPU cores (including the scene generation). Every training flag of ``train.py`` can be appended to change the run
(e.g. ``python demo.py --num_epochs 20 --depth_decoder hr``).
"""

import argparse
import os
import shutil
import sys
import time

import numpy as np

import checkpointing
import eval_utils as E
import evaluate_depth
import export_gt_depth
from datasets import synthetic_kitti as sk
from options import SRDOptions
from utils import keep_freed_memory, run_cli

# Small enough for a CPU: 192x64, ResNet-18 from scratch, U-Net decoder + DOR, SRD from epoch 1.
# lr 2e-4 with a slower decay (0.95) than the official 1e-4 / 0.9, which is tuned for 20 epochs of KITTI;
# batch 4: twice the updates of batch 8 for the same compute (abs_rel ~0.23 by epoch 5).
# Auto-masking is on, as in the method; from scratch its automatic one-epoch warm-up
# (--automask_warmup_epochs, README "Auto-masking warm-up") keeps the pose network out of the
# sideways-motion minimum that otherwise holds it from the first steps.
DEMO_TRAIN_FLAGS = ["--split", "synthetic", "--height", "64", "--width", "192", "--batch_size", "4",
                    "--num_epochs", "10", "--depth_decoder", "unet", "--weights_init", "scratch",
                    "--num_workers", "2", "--log_frequency", "10",
                    "--learning_rate", "2e-4", "--lr_gamma", "0.95"]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                epilog="Any other flag is passed to the Trainer (see train.py --help).")
    p.add_argument("--data_path", default="synthetic_kitti",
                   help="where the synthetic scene is generated (reused when already there)")
    p.add_argument("--log_dir", default="runs", help="run folder parent: <log_dir>/<model_name>")
    p.add_argument("--model_name", default="demo_srd", help="name of the demo run")
    args, train_flags = p.parse_known_args(argv)
    return args, train_flags


def evaluation_options(data_path, split_dir):
    return SRDOptions().parse(["--eval_mono", "--eval_split", "synthetic", "--data_path", data_path,
                               "--split_dir", split_dir, "--num_workers", "0", "--no_progress"],
                              mode="eval")


def evaluate(weights_folder, eval_opt, split_dir, gt_depths):
    record = evaluate_depth.evaluate_folder(eval_opt, weights_folder, split_dir,
                                            evaluate_depth.pick_device(True), gt_depths)
    return record["metrics"]


def write_picture(weights_folder, data_path, split_dir, gt_depths, path):
    """input | predicted depth (median-scaled) | ground truth, for the first test frame."""
    import cv2
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import cm

    from checkpointing import load_depth_model
    import torch

    line = open(os.path.join(split_dir, "synthetic", "test_files.txt")).readline().split()
    image_path = os.path.join(data_path, line[0], "image_02", "data", f"{int(line[1]):010d}.jpg")
    rgb = E.load_rgb(image_path)
    encoder, decoder, meta = load_depth_model(weights_folder, torch.device("cpu"))
    x = E.image_to_input(rgb, meta.height, meta.width)
    disp = E.predict_disparity(encoder, decoder, x, meta.min_depth, meta.max_depth)[0]
    gt = gt_depths[0]
    h, w = gt.shape
    pred = 1.0 / E.resize_disp(disp, h, w)
    valid = gt > 0
    pred *= np.median(gt[valid]) / np.median(pred[valid])
    vmax = 80.0
    to_rgb = lambda d: (cm.magma_r(np.clip(d / vmax, 0, 1))[..., :3] * 255).astype(np.uint8)
    gt_vis = to_rgb(gt)
    gt_vis[~valid] = 0
    gt_vis = cv2.dilate(gt_vis, np.ones((3, 3), np.uint8))  # sparse LiDAR points, visible
    panel = np.concatenate([cv2.resize(rgb, (w, h)), to_rgb(np.clip(pred, 1e-3, vmax)), gt_vis], 0)
    tmp = path + ".tmp.png"
    cv2.imwrite(tmp, panel[..., ::-1])
    os.replace(tmp, path)


def main(argv=None):
    args, train_flags = parse(sys.argv[1:] if argv is None else argv)
    keep_freed_memory()
    t0 = time.time()
    print(f"[1/4] synthetic scene in {args.data_path}")
    sk.generate(args.data_path, workers=2)
    split_dir = os.path.join(args.data_path, "splits")
    sk.write_splits(split_dir, odometry=False)
    gt_file = os.path.join(split_dir, "synthetic", "gt_depths.npz")
    print("[2/4] ground truth")
    if not os.path.isfile(gt_file):
        export_gt_depth.main(["--data_path", args.data_path, "--split", "synthetic",
                              "--split_dir", split_dir])
    gt_depths = evaluate_depth.load_gt_depths("synthetic", split_dir, args.data_path)

    opt = SRDOptions().parse(DEMO_TRAIN_FLAGS + ["--data_path", args.data_path, "--split_dir",
                                                 split_dir, "--log_dir", args.log_dir,
                                                 "--model_name", args.model_name] + train_flags)
    from trainer import Trainer
    trainer = Trainer(opt)
    eval_opt = evaluation_options(args.data_path, split_dir)
    rows = []
    init_folder = trainer.weights_folder("init")
    checkpointing.save_weights_folder(init_folder, trainer.model.networks(), trainer.model.spec)
    rows.append(("init", evaluate(init_folder, eval_opt, split_dir, gt_depths)))
    shutil.rmtree(init_folder, ignore_errors=True)  # only its table row is needed
    print_table(rows)

    def after_epoch(tr, folder):
        if folder is None:  # --save_frequency > 1: no checkpoint this epoch
            return
        metrics = evaluate(folder, eval_opt, split_dir, gt_depths)
        rows.append((str(tr.epoch), metrics))
        print_row(rows[-1])
        prune_weights(tr, rows)

    print(f"[3/4] training {opt.num_epochs} epochs at {opt.width}x{opt.height} (run folder "
          f"{trainer.log_path})")
    trainer.train(on_epoch_end=after_epoch)
    print("[4/4] results")
    print_table(rows)
    best = min(rows[1:], key=lambda r: r[1]["abs_rel"])
    picture = os.path.join(trainer.log_path, "demo_depth.png")
    write_picture(trainer.weights_folder(int(best[0])), args.data_path, split_dir, gt_depths,
                  picture)
    print(f"best epoch {best[0]}: abs_rel {best[1]['abs_rel']:.3f} (untrained "
          f"{rows[0][1]['abs_rel']:.3f}); picture: {picture}; {time.time() - t0:.0f} s in all; "
          f"kept the weights of epochs {sorted({int(best[0]), opt.num_epochs - 1})} in "
          f"{os.path.join(trainer.log_path, 'models')}")
    return 0


def print_table(rows):
    names = E.DEPTH_METRIC_NAMES
    print("\n epoch | " + " | ".join(f"{n:>8}" for n in names))
    for row in rows:
        print_row(row)


def print_row(row):
    epoch, m = row
    print(f" {epoch:>5} | " + " | ".join(f"{m[n]:8.3f}" for n in E.DEPTH_METRIC_NAMES), flush=True)


def prune_weights(trainer, rows):
    """Keep the weights of the best epoch so far (for the picture) and of the newest (it holds the
    resumable training_state.pt); delete the other weights_<epoch> folders (~110 MB each)."""
    best = min(rows[1:], key=lambda r: r[1]["abs_rel"])[0]
    keep = {trainer.weights_folder(int(best)), trainer.weights_folder(trainer.epoch)}
    for epoch, _ in rows[1:]:
        folder = trainer.weights_folder(int(epoch))
        if folder not in keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(run_cli(main))
