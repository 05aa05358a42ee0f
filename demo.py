"""The whole job on a machine without KITTI: ``python demo.py``.

1. generates the synthetic KITTI-format scene (cached in ``--data_path``; a cached scene made
   before the label maps existed gets them added),
2. exports its ground truth (``export_gt_depth.py --split synthetic``),
3. trains SRD (U-Net decoder with DOR, distillation from epoch 1, auto-masking after a one-epoch
   warm-up) on the CPU at 192x64 for 10 epochs,
4. evaluates the untrained model and every epoch on the synthetic test split (Eigen protocol:
   Garg crop, per-image median scaling) and prints one table row per epoch as it ends, then the
   whole table once at the end. Next to the whole-image metrics, ``car/pole`` is the abs_rel over
   the ground-truth pixels of parked cars and poles only (from the scene's label maps; each image
   scaled by its whole-image median ratio). It keeps the weights of the best and the newest epoch
   only (about 0.4 GB in all),
5. writes ``<run>/metrics.json`` (every epoch's metrics, the best epoch's whole-image, car, pole
   and car+pole figures, the wall time) and ``<run>/demo_depth.png``: input | predicted depth |
   true depth at 1242x375, in metres on one colour bar, car and pole outlines drawn.

About 7 minutes on 2 otherwise idle CPU cores (including the scene generation). Every training flag of
``train.py`` can be appended to change the run (e.g. ``python demo.py --num_epochs 20 --depth_decoder hr``).
"""

import argparse
import contextlib
import io
import os
import shutil
import sys
import time

import numpy as np

import checkpointing
import evaluation as E
import evaluate_depth
import export_gt_depth
import synthetic_scene as sk
from options import SRDOptions
from utils import atomic_path, keep_freed_memory, run_cli

# Small enough for a CPU: 192x64, ResNet-18 from scratch, U-Net decoder + DOR, SRD from epoch 1.
# Measured against 288x96 for 5 epochs (about the same compute; a 16 cm pole 10 m away 2.7 pixels
# wide instead of 1.8): per unit of compute 288x96 trailed clearly (whole-image abs_rel 0.346 and
# car/pole 0.479 after 2 of its epochs, where 192x64 had reached about 0.27 and ended at 0.245 /
# 0.359), so the demo stays at 192x64 (README "The demo's car/pole figure"). Batch 2, learning rates
# 3e-4 / 5e-4, adding the stereo pair, a weaker smoothness term, 30 epochs and a more detailed scene
# were measured too (README "What the demo's picture shows"): none sharpens the picture (30 epochs
# neither, at 3.7x the time), and 5e-4 flattens the depth.
# lr 2e-4 with a slower decay (0.95) than the official 1e-4 / 0.9, which is tuned for 20 epochs of KITTI;
# batch 4: twice the updates of batch 8 for the same compute.
# Auto-masking is on, as in the method; from scratch its automatic one-epoch warm-up
# (--automask_warmup_epochs, README "Auto-masking warm-up") keeps the pose network out of the
# sideways-motion minimum that otherwise holds it from the first steps.
DEMO_TRAIN_FLAGS = ["--split", "synthetic", "--height", "64", "--width", "192", "--batch_size", "4",
                    "--num_epochs", "10", "--depth_decoder", "unet", "--weights_init", "scratch",
                    "--num_workers", "2", "--log_frequency", "10",
                    "--learning_rate", "2e-4", "--lr_gamma", "0.95"]

REGIONS = ("car_pole", "car", "pole")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                epilog="Any other flag is passed to the Trainer (see train.py --help).")
    p.add_argument("--data_path", default="synthetic_kitti",
                   help="where the synthetic scene is generated (reused when already there)")
    p.add_argument("--log_dir", default="runs", help="run folder parent: <log_dir>/<model_name>")
    p.add_argument("--model_name", default="demo_srd", help="name of the demo run")
    args, train_flags = p.parse_known_args(argv)
    return args, train_flags


def prepare_scene(data_path, num_drives=sk.DEFAULT_NUM_DRIVES, num_frames=sk.DEFAULT_NUM_FRAMES,
                  progress=True):
    """Steps 1 and 2: the synthetic scene in ``data_path`` (generated, or the cached one), its split
    lists in ``<data_path>/splits`` and the ground truth of its test split (exported once).
    ``bench/ablation.py`` prepares its scenes the same way. Returns the split folder."""
    print(f"[1/4] synthetic scene in {data_path}")
    result = sk.generate(data_path, num_drives=num_drives, num_frames=num_frames, workers=2,
                         progress=progress)
    if result.get("labels_added"):
        print(f"      added {result['labels_added']} label maps to the cached scene")
    split_dir = os.path.join(data_path, "splits")
    sk.write_splits(split_dir, num_drives=num_drives, num_frames=num_frames, odometry=False)
    print("[2/4] ground truth")
    if not os.path.isfile(os.path.join(split_dir, "synthetic", "gt_depths.npz")):
        export_gt_depth.main(["--data_path", data_path, "--split", "synthetic",
                              "--split_dir", split_dir])
    return split_dir


def evaluation_options(data_path, split_dir):
    return SRDOptions().parse(["--eval_mono", "--eval_split", "synthetic", "--data_path", data_path,
                               "--split_dir", split_dir, "--num_workers", "0", "--no_progress"],
                              mode="eval")


def test_lines(split_dir):
    with open(os.path.join(split_dir, "synthetic", "test_files.txt")) as f:
        return [line.split() for line in f if line.strip()]


def region_masks(data_path, split_dir):
    """{"car_pole", "car", "pole": per test frame, the [375,1242] mask of that class's pixels in
    the ground truth's pixel convention} from the scene's label maps (``sk.gt_class_mask``)."""
    masks = {name: [] for name in REGIONS}
    for folder, frame, _ in test_lines(split_dir):
        labels = sk.read_labels(os.path.join(data_path, folder), int(frame))
        car, pole = sk.gt_class_mask(labels, "car"), sk.gt_class_mask(labels, "pole")
        masks["car"].append(car)
        masks["pole"].append(pole)
        masks["car_pole"].append(car | pole)
    return masks


def evaluate(weights_folder, eval_opt, split_dir, gt_depths, regions):
    """Whole-image metrics (Eigen protocol: Garg crop, per-image median scaling, as
    ``evaluate_depth.py``) plus ``<region>_abs_rel`` and ``<region>_pixels`` over each region's
    valid pixels (every image scaled by its whole-image median ratio).

    Returns:
        (metrics dict, disparities [N,h,w], per-image median ratios).
    """
    with contextlib.redirect_stdout(io.StringIO()):  # one table row per epoch, not its log lines
        disps, _ = evaluate_depth.get_disparities(eval_opt, weights_folder, "synthetic", split_dir,
                                                  evaluate_depth.pick_device(True))
    result = E.evaluate_disparities(disps, gt_depths, "synthetic", regions=regions)
    metrics = dict(result["metrics"])
    for name, region in result["regions"].items():
        metrics[f"{name}_abs_rel"] = (region["metrics"]["abs_rel"] if region["metrics"]
                                      else float("nan"))
        metrics[f"{name}_pixels"] = region["num_pixels"]
    return metrics, disps, result["ratios"]


def picture_frame(regions):
    """Index of the test frame with the most pole ground-truth pixels (most car and pole pixels
    when no frame has a pole): chosen from the scene alone, not from any prediction."""
    key = "pole" if any(m.any() for m in regions["pole"]) else "car_pole"
    return int(np.argmax([m.sum() for m in regions[key]]))


def write_picture(path, data_path, split_dir, index, disp, ratio, title):
    """Input | predicted depth | true depth, each at the camera's 1242x375, depth in metres on one
    logarithmic colour scale (2-80 m, near = red, far = blue) with a colour bar; the outlines of
    the cars and poles (from the label map) are drawn in white on both depth panels.

    The prediction is the model's disparity upsampled to 1242x375 (as the evaluation does), turned
    into depth and multiplied by this frame's median ratio ``ratio`` (the Eigen protocol's mono
    scaling). The true depth is the renderer's dense depth of the frame (the metrics score against
    the sparse Velodyne ground truth inside the Garg crop).
    """
    import cv2
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    folder, frame, _ = test_lines(split_dir)[index]
    drive = os.path.join(data_path, folder)
    rgb = E.load_rgb(os.path.join(drive, "image_02", "data", f"{int(frame):010d}.jpg"))
    h, w = rgb.shape[:2]
    pred = np.clip(ratio / E.resize_disp(disp, h, w), E.MIN_DEPTH, E.MAX_DEPTH)
    labels, true_depth = sk.render_labels(drive, int(frame))
    true_depth = np.where(np.isfinite(true_depth), true_depth, np.nan)  # sky: no depth
    outline = np.zeros((h, w), bool)
    for name in ("car", "pole"):
        mask = sk.class_mask(labels, name).astype(np.uint8)
        outline |= cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0

    norm = LogNorm(vmin=2.0, vmax=80.0)
    cmap = matplotlib.colormaps["turbo_r"].with_extremes(bad="black")
    fig, axes = plt.subplots(3, 1, figsize=(13.5, 12.4), dpi=100,
                             gridspec_kw={"left": 0.01, "right": 0.90, "top": 0.94,
                                          "bottom": 0.01, "hspace": 0.12})
    fig.suptitle(title, fontsize=12)
    axes[0].imshow(rgb)
    axes[0].set_title(f"input: {folder} frame {frame} (left camera, {w}x{h})", fontsize=11)
    panels = ((axes[1], pred, "predicted depth (median-scaled, upsampled from the model's "
                              "resolution)"),
              (axes[2], true_depth, "true depth (renderer; sky black)"))
    for ax, depth, name in panels:
        shown = cmap(norm(np.clip(depth, 2.0, 80.0)))
        shown[outline] = (1.0, 1.0, 1.0, 1.0)
        ax.imshow(shown)
        ax.set_title(name + "; white: outlines of cars and poles", fontsize=11)
    for ax in axes:
        ax.set_axis_off()
    fig.canvas.draw()  # the axes' final positions (equal aspect), for the colour bar beside them
    top, bottom = axes[1].get_position(), axes[2].get_position()
    cax = fig.add_axes([bottom.x1 + 0.01, bottom.y0, 0.02, top.y1 - bottom.y0])
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    ticks = [2, 3, 5, 7, 10, 15, 20, 30, 50, 80]
    bar.set_ticks(ticks)
    bar.set_ticklabels([str(t) for t in ticks])
    bar.minorticks_off()
    bar.set_label("depth (m)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main(argv=None):
    args, train_flags = parse(sys.argv[1:] if argv is None else argv)
    keep_freed_memory()
    t0 = time.time()
    split_dir = prepare_scene(args.data_path)
    gt_depths = evaluate_depth.load_gt_depths("synthetic", split_dir, args.data_path)
    regions = region_masks(args.data_path, split_dir)

    opt = SRDOptions().parse(DEMO_TRAIN_FLAGS + ["--data_path", args.data_path, "--split_dir",
                                                 split_dir, "--log_dir", args.log_dir,
                                                 "--model_name", args.model_name] + train_flags)
    from trainer import Trainer
    trainer = Trainer(opt)
    eval_opt = evaluation_options(args.data_path, split_dir)
    rows = []
    init_folder = trainer.weights_folder("init")
    checkpointing.save_weights_folder(init_folder, trainer.model.networks(), trainer.model.spec)
    rows.append(("init", evaluate(init_folder, eval_opt, split_dir, gt_depths, regions)[0]))
    shutil.rmtree(init_folder, ignore_errors=True)  # only its table row is needed
    print_header()
    print_row(rows[-1])

    def after_epoch(tr, folder):
        if folder is None:  # --save_frequency > 1: no checkpoint this epoch
            return
        metrics = evaluate(folder, eval_opt, split_dir, gt_depths, regions)[0]
        rows.append((str(tr.epoch), metrics))
        print_row(rows[-1])
        prune_weights(tr, rows)

    print(f"[3/4] training {opt.num_epochs} epochs at {opt.width}x{opt.height} (run folder "
          f"{trainer.log_path})")
    trainer.train(on_epoch_end=after_epoch)
    print("[4/4] results")
    print_header()
    for row in rows:
        print_row(row)
    best = min(rows[1:], key=lambda r: r[1]["abs_rel"])
    summary = write_results(trainer.log_path, rows, trainer.weights_folder(int(best[0])),
                            (opt.width, opt.height), args.data_path, split_dir, gt_depths, regions,
                            eval_opt, t0)
    print(f"best epoch {best[0]}: abs_rel {summary['whole_image']['abs_rel']:.3f} whole image, "
          f"{summary['car_pole_abs_rel']:.3f} car and pole pixels (car {summary['car_abs_rel']:.3f}, "
          f"pole {summary['pole_abs_rel']:.3f}); untrained {rows[0][1]['abs_rel']:.3f} / "
          f"{rows[0][1]['car_pole_abs_rel']:.3f}")
    print(f"picture: {summary['picture']}; metrics: {os.path.join(trainer.log_path, 'metrics.json')}; "
          f"{summary['seconds']:.0f} s in all; kept the weights of epochs "
          f"{sorted({int(best[0]), opt.num_epochs - 1})} in {os.path.join(trainer.log_path, 'models')}")
    return 0


def write_results(log_path, rows, best_folder, size, data_path, split_dir, gt_depths, regions,
                  eval_opt, t0):
    """The picture and ``<log_path>/metrics.json`` of the best row of ``rows`` ([(epoch, metrics)],
    the untrained model first), whose weights are ``best_folder``; returns the summary written."""
    best = min(rows[1:], key=lambda r: r[1]["abs_rel"])
    m, disps, ratios = evaluate(best_folder, eval_opt, split_dir, gt_depths, regions)
    picture = os.path.join(log_path, "demo_depth.png")
    index = picture_frame(regions)
    write_picture(picture, data_path, split_dir, index, disps[index], ratios[index],
                  f"epoch {best[0]} at {size[0]}x{size[1]}: test abs_rel {m['abs_rel']:.3f} "
                  f"(whole image), {m['car_pole_abs_rel']:.3f} (car and pole pixels)")
    summary = {
        "best_epoch": int(best[0]),
        "whole_image": {k: m[k] for k in E.DEPTH_METRIC_NAMES},
        **{f"{name}_abs_rel": m[f"{name}_abs_rel"] for name in REGIONS},
        **{f"{name}_pixels": m[f"{name}_pixels"] for name in REGIONS},
        "untrained": {"abs_rel": rows[0][1]["abs_rel"],
                      "car_pole_abs_rel": rows[0][1]["car_pole_abs_rel"]},
        "epochs": [{"epoch": epoch, **metrics} for epoch, metrics in rows],
        "protocol": "Eigen: Garg crop, 1e-3 < gt < 80 m, per-image median scaling; <region>_abs_rel "
                    "over the region's valid ground-truth pixels of all test frames, each image "
                    "scaled by its whole-image median ratio",
        "resolution": list(size), "num_epochs": len(rows) - 1,
        "picture": os.path.abspath(picture), "picture_frame": " ".join(test_lines(split_dir)[index]),
        "seconds": round(time.time() - t0, 1),
    }
    E.write_json_atomic(os.path.join(log_path, "metrics.json"), summary)
    return summary


def print_header():
    print("\n epoch | " + " | ".join(f"{n:>8}" for n in E.DEPTH_METRIC_NAMES) + " | car/pole")


def print_row(row):
    epoch, m = row
    print(f" {epoch:>5} | " + " | ".join(f"{m[n]:8.3f}" for n in E.DEPTH_METRIC_NAMES)
          + f" | {m['car_pole_abs_rel']:8.3f}", flush=True)


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
