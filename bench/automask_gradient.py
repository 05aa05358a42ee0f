"""Why auto-masking holds a from-scratch pose network in a wrong ego-motion: the figures of the README
section "Auto-masking warm-up".

For an untrained depth network (ResNet-18 + U-Net, seed 3407) on 8 frames of the synthetic scene, the
camera motion of frames -1 / +1 is set by hand to a translation ``t`` (no pose network) and the
photometric loss of one step is evaluated with and without auto-masking, with its gradient. Printed
per ``t``: the loss and the unit descent direction ``-dL/dt / |dL/dt|`` (x right, y down, z forward).
With ``--mismatch`` the warp samples with ``align_corners=False`` on coordinates normalised for
``True`` (Monodepth2 as it runs on PyTorch >= 1.3).

    python bench/automask_gradient.py [--data_path synthetic_kitti] [--mismatch]

About 30 s on 2 CPU cores once the scene exists (``python -m synthetic_scene`` makes it).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import default_collate  # noqa: E402

import srd  # noqa: E402
from datasets import build_dataset  # noqa: E402
from layers import transformation_from_parameters  # noqa: E402
from options import SRDOptions  # noqa: E402
from utils import CLIError, run_cli  # noqa: E402

MOTIONS = [(0.0, 0.0, 0.0), (0.02, 0.0, 0.0), (-0.02, 0.0, 0.0), (0.0, 0.0, 0.02)]


def loss_and_descent(data_path, t_motion, automask, mismatch, seed=3407, n=8):
    """(photometric loss, unit descent direction of the camera motion) at camera motion t_motion."""
    split_dir = os.path.join(data_path, "splits")
    opt = SRDOptions().parse(["--height", "64", "--width", "192", "--weights_init", "scratch",
                              "--depth_decoder", "unet", "--no_dor", "--no_distill",
                              "--data_path", data_path, "--split_dir", split_dir,
                              "--split", "synthetic"] + ([] if automask else ["--disable_automasking"]))
    torch.manual_seed(seed)
    model = srd.SRDModel(opt)
    data = build_dataset(opt, os.path.join(split_dir, "synthetic", "train_files.txt"),
                         is_train=False, frame_ids=[0, -1, 1], load_depth=False)
    batch = default_collate([data[i * 17 % len(data)] for i in range(n)])
    grid_sample = F.grid_sample
    if mismatch:
        srd.F.grid_sample = lambda *a, **k: grid_sample(*a, **{**k, "align_corners": False})
    try:
        outputs, _ = model._predict_depth(batch)
        t = torch.tensor(t_motion, requires_grad=True)
        for f in (-1, 1):  # the camera moves by t from frame 0 to +1: T_src_from_tgt(+1) moves points by -t
            trans = (-t if f == 1 else t).expand(n, 3)[:, None]
            outputs[("cam_T_cam", 0, f)] = transformation_from_parameters(torch.zeros(n, 1, 3), trans)
        model._warp_sources(batch, outputs)
        loss = model._photometric_and_smoothness(batch, outputs, automask)["photometric"]
        loss.backward()
    finally:
        srd.F.grid_sample = grid_sample
    return float(loss.detach()), (-t.grad / t.grad.norm()).tolist()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_path", default="synthetic_kitti", help="the synthetic scene")
    p.add_argument("--mismatch", action="store_true",
                   help="sample with align_corners=False on align_corners=True coordinates")
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(args.data_path, "splits", "synthetic", "train_files.txt")):
        raise CLIError(f"--data_path {args.data_path}: no synthetic scene there; make it with "
                       f"python -m synthetic_scene --out {args.data_path}")
    print(f"{'camera motion t':>22} | auto-mask | photometric | descent direction (x, y, z)")
    for motion in MOTIONS:
        for automask in (True, False):
            loss, d = loss_and_descent(args.data_path, motion, automask, args.mismatch)
            print(f"{str(motion):>22} | {'on' if automask else 'off':>9} | {loss:11.4f} | "
                  f"({d[0]:+.2f}, {d[1]:+.2f}, {d[2]:+.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
