"""The flat-depth detector of the per-epoch diagnostics (issue: a run whose depth map goes flat,
e.g. ``--learning_rate 5e-4`` from scratch on the synthetic scene, must say so in one line)."""

import math
import os

import pytest
import torch
from torch.utils.data import default_collate

import diagnostics as D
from datasets import build_dataset
from options import SRDOptions
from trainer import Trainer


def test_depth_spread_against_hand_computed_values():
    disp = torch.full((2, 1, 4, 6), 0.3)
    disp[0, :, :2] = 0.075          # half the pixels 4x nearer in disparity: std of log = ln(4)/2
    spread = D.depth_spread(disp)
    assert spread.tolist() == pytest.approx([math.log(4) / 2, 0.0], abs=1e-6)
    assert D.depth_spread(disp * 7).tolist() == pytest.approx(spread.tolist(), abs=1e-6)  # scale-free


def test_the_epoch_summary_averages_the_spread_over_samples():
    diag = D.EpochDiagnostics([0, -1, 1], "cpu")
    disp = torch.full((2, 1, 4, 6), 0.3)
    disp[0, :, :2] = 0.075
    diag.update({("disp", 0): disp}, {})
    diag.update({("disp", 0): torch.full((1, 1, 4, 6), 0.2)}, {})
    assert diag.summary()["depth_spread"] == pytest.approx(math.log(4) / 2 / 3, abs=1e-6)


@pytest.mark.parametrize("epochs, fires", [
    ([{"epoch": 0, "depth_spread": 0.01}], False),                                  # untrained
    ([{"epoch": 0, "depth_spread": 0.3}, {"epoch": 1, "depth_spread": 0.01}], True),
    ([{"epoch": 0, "depth_spread": 0.3}, {"epoch": 1, "depth_spread": 0.6}], False),  # healthy
    ([{"epoch": 2}], False),                                                        # not measured
    # measured on the synthetic scene: the demo's recipe (lr 2e-4), epochs 0-3: silent ...
    ([{"epoch": e, "depth_spread": v} for e, v in enumerate((0.221, 0.359, 0.346, 0.363))], False),
    # ... and at lr 5e-4, whose depth is no better than untrained at epoch 1 (abs_rel 0.446)
    ([{"epoch": 0, "depth_spread": 0.104}, {"epoch": 1, "depth_spread": 0.062}], True),
])
def test_flat_depth_rule(epochs, fires):
    message = D.flat_depth_warning(epochs)
    assert (message is not None) is fires
    if fires:
        assert "\n" not in message and "flat" in message and "--learning_rate" in message
        assert "intrinsics" in message and "frame step" in message


def _trainer(scene, tmp_path):
    data_path, split_dir = scene
    return Trainer(SRDOptions().parse([
        "--data_path", data_path, "--split_dir", split_dir, "--split", "mini",
        "--log_dir", str(tmp_path / "logs"), "--model_name", "flat", "--height", "64", "--width",
        "192", "--batch_size", "2", "--num_epochs", "2", "--num_workers", "0", "--weights_init",
        "scratch", "--depth_decoder", "unet", "--no_dor", "--no_distill", "--log_frequency",
        "1000", "--no_progress", "--learning_rate", "1e-9"]))


def _run_epochs(trainer, n):
    """n epochs of 2 steps on one fixed, unaugmented batch, through the Trainer's step and its
    epoch-end logging."""
    opt = trainer.opt
    data = build_dataset(opt, os.path.join(opt.split_dir, "mini", "train_files.txt"),
                         is_train=False, frame_ids=trainer.frame_ids, load_depth=False)
    batch = default_collate([data[i] for i in range(opt.batch_size)])
    for trainer.epoch in range(n):
        for _ in range(2):
            trainer.run_step(batch)
        trainer.log_epoch()


@pytest.mark.parametrize("flat", [True, False])
def test_the_trainer_warns_on_a_forced_flat_depth_only(mini_split, tmp_path, capsys, flat):
    """Forced flat: the disparity heads' weights zeroed (sigmoid(bias) everywhere). Forced varied:
    the same weights x 30, so that the disparity follows the image features (an untrained
    network's depth is nearly flat, spread 0.02, which is why epoch 0 is exempt). The learning
    rate is too small to move either."""
    trainer = _trainer(mini_split(), tmp_path)
    with torch.no_grad():
        for name, param in trainer.model.depth.named_parameters():
            if "dispconvs" in name and name.endswith("weight"):
                param.mul_(0.0 if flat else 30.0)
    _run_epochs(trainer, 2)
    spreads = [e["depth_spread"] for e in trainer.epoch_history]
    out = capsys.readouterr().out
    assert "epoch 1: camera motion" in out and "depth spread" in out
    if flat:
        assert spreads == pytest.approx([0.0, 0.0], abs=1e-4)
    else:
        assert min(spreads) > D.FLAT_SPREAD
    assert trainer.training_log.warned_flat is flat
    assert (out.count("warning: the predicted depth is flat") == 1) is flat
