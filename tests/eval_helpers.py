"""Test helpers of the evaluation tests: tiny checkpoints in the Trainer's layout, tiny KITTI-format
image folders and split folders (in a temp dir, never in the repo's splits/)."""

import json
import os
import sys

import numpy as np
import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


DRIVE = "2011_09_26/2011_09_26_drive_0001_sync"


def make_checkpoint(models_dir, epochs=(0,), depth_decoder="unet", use_dor=True, height=64,
                    width=192, use_stereo=False, seed=0, write_opt_json=True):
    """Write ``models_dir/opt.json`` and ``models_dir/weights_<e>/{encoder,depth,pose_encoder,pose}.pth``
    (+ ``training_state.pt``) of an untrained ResNet-18 SRD model through the Trainer's own save path
    (``checkpointing.save_weights_folder``), different random weights per epoch. Returns the weights
    folders."""
    from checkpointing import save_weights_folder
    from options import SRDOptions
    from srd import SRDModel

    os.makedirs(models_dir, exist_ok=True)
    argv = ["--height", str(height), "--width", str(width), "--num_layers", "18",
            "--depth_decoder", depth_decoder, "--weights_init", "scratch"]
    argv += [] if use_dor else ["--no_dor"]
    argv += ["--use_stereo"] if use_stereo else []
    opt = SRDOptions().parse(argv)
    if write_opt_json:
        record = {"height": height, "width": width, "num_layers": 18, "depth_decoder": depth_decoder,
                  "no_dor": not use_dor, "min_depth": opt.min_depth, "max_depth": opt.max_depth,
                  "scales": list(opt.scales), "use_stereo": use_stereo,
                  "pose_model_type": opt.pose_model_type, "pose_model_input": opt.pose_model_input,
                  "frame_ids": list(opt.frame_ids)}
        with open(os.path.join(models_dir, "opt.json"), "w") as f:
            json.dump(record, f)
    folders = []
    for i, epoch in enumerate(epochs):
        torch.manual_seed(seed + i)
        model = SRDModel(opt)
        folder = os.path.join(models_dir, f"weights_{epoch}")
        save_weights_folder(folder, model.networks(), model.spec, {"epoch": epoch})
        folders.append(folder)
    return folders


def random_image(path, width, height, seed):
    """Write a random textured RGB image (smooth colour blobs plus noise) to ``path``."""
    rng = np.random.default_rng(seed)
    base = rng.random((max(height // 8, 1), max(width // 8, 1), 3))
    img = np.asarray(Image.fromarray((base * 255).astype(np.uint8)).resize((width, height),
                                                                             Image.BILINEAR))
    img = np.clip(img.astype(np.int16) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def make_kitti_split(root, splits_dir, split, num_images, gt_size=(60, 200), seed=0,
                     image_size=(240, 72)):
    """KITTI-raw-format images ``root/DRIVE/image_02/data/%010d.jpg``, the split list
    ``splits_dir/split/test_files.txt`` and a random ``gt_depths.npz`` (each map [H,W] with depths in
    1..60 m on every pixel). Returns the list of ground-truth maps."""
    rng = np.random.default_rng(seed)
    lines, gts = [], []
    for i in range(num_images):
        random_image(os.path.join(root, DRIVE, "image_02", "data", f"{i:010d}.jpg"), *image_size,
                     seed + i)
        lines.append(f"{DRIVE} {i} l")
        gts.append(rng.uniform(1.0, 60.0, gt_size).astype(np.float32))
    os.makedirs(os.path.join(splits_dir, split), exist_ok=True)
    with open(os.path.join(splits_dir, split, "test_files.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    write_gt(splits_dir, split, gts)
    return gts


def write_gt(splits_dir, split, gts):
    """``splits_dir/split/gt_depths.npz`` in export_gt_depth.py's format (object array ``data``)."""
    os.makedirs(os.path.join(splits_dir, split), exist_ok=True)
    data = np.empty(len(gts), dtype=object)
    for i, gt in enumerate(gts):
        data[i] = gt
    np.savez_compressed(os.path.join(splits_dir, split, "gt_depths.npz"), data=data)
