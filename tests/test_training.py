"""Trainer: every option trains, exact resume, clean stop on a non-finite loss, checkpoint layout."""

import hashlib
import math
import os
import subprocess
import sys

import pytest
import torch

from options import SRDOptions, apply_resume_options
from trainer import NonFiniteLossError, Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_opt(scene, tmp_path, *extra, name="run"):
    data_path, split_dir = scene
    args = ["--data_path", data_path, "--split_dir", split_dir, "--split", "mini",
            "--log_dir", str(tmp_path / "logs"), "--model_name", name,
            "--height", "64", "--width", "192", "--batch_size", "2", "--num_epochs", "2",
            "--num_workers", "0", "--weights_init", "scratch", "--depth_decoder", "unet",
            "--log_frequency", "1", "--no_progress", *extra]
    return SRDOptions().parse(args)


ABLATIONS = [
    [],
    ["--depth_decoder", "hr"],
    ["--no_dor"],
    ["--no_distill"],
    ["--v1_multiscale"],
    ["--avg_reprojection"],
    ["--disable_automasking"],
    ["--predictive_mask", "--disable_automasking", "--no_dor"],
    ["--no_ssim"],
    ["--pose_model_type", "shared"],
    ["--pose_model_type", "posecnn"],
    ["--pose_model_input", "all"],
    ["--pose_model_type", "posecnn", "--pose_model_input", "all"],
    ["--use_stereo", "--frame_ids", "0"],
    ["--use_stereo"],
    ["--optimizer", "adam", "--scheduler", "step", "--scheduler_step_size", "1"],
    ["--amp"],
    ["--channels_last"],
]


@pytest.mark.parametrize("extra", ABLATIONS, ids=lambda a: " ".join(a) or "default")
def test_every_option_trains_two_steps_with_finite_losses(mini_split, tmp_path, extra):
    scene = mini_split()
    trainer = Trainer(make_opt(scene, tmp_path, *extra))
    before = {k: v.clone() for k, v in trainer.model.depth.state_dict().items()}
    trainer.train()
    assert [r["step"] for r in trainer.history] == [0, 1]
    for record in trainer.history:
        assert all(math.isfinite(v) for v in record.values()), record
    changed = any(not torch.equal(before[k], v) for k, v in trainer.model.depth.state_dict().items())
    assert changed, "the optimizer did not update the depth decoder"
    distilled = "--no_distill" not in extra
    assert ("distillation" in trainer.history[0]) is False       # epoch 0: no teacher yet
    assert ("distillation" in trainer.history[1]) is distilled   # epoch 1: teacher active
    if distilled:
        assert trainer.history[1]["distillation"] >= 0
        assert 0 < trainer.history[1]["keep_ratio"] <= 1


def test_scheduler_steps_once_per_epoch_after_the_optimizer(mini_split, tmp_path):
    scene = mini_split()
    trainer = Trainer(make_opt(scene, tmp_path, "--num_epochs", "3"))
    trainer.train()
    lrs = [g["lr"] for g in trainer.optimizer.param_groups]
    assert lrs == pytest.approx([1e-4 * 0.9 ** 3] * 2)
    assert trainer.optimizer.state_dict()["state"]  # the optimizer stepped
    assert trainer.scheduler.last_epoch == 3


def test_checkpoint_layout_and_opt_json(mini_split, tmp_path):
    scene = mini_split()
    trainer = Trainer(make_opt(scene, tmp_path))
    trainer.train()
    models = tmp_path / "logs" / "run" / "models"
    assert (models / "opt.json").is_file() and (models / "environment.json").is_file()
    for epoch in (0, 1):  # the resumable state only in the newest folder (--keep_training_states)
        names = sorted(p.name for p in (models / f"weights_{epoch}").iterdir())
        assert names == ["depth.pth", "encoder.pth", "pose.pth", "pose_encoder.pth"] + \
            (["training_state.pt"] if epoch == 1 else [])
    enc = torch.load(models / "weights_1" / "encoder.pth", weights_only=True)
    assert (enc["height"], enc["width"]) == (64, 192)
    assert not list(models.glob("*.partial"))


def _weights_digest(folder):
    h = hashlib.sha256()
    for name in ("encoder.pth", "depth.pth", "pose_encoder.pth", "pose.pth"):
        sd = torch.load(os.path.join(folder, name), weights_only=True)
        for k in sorted(sd):
            if torch.is_tensor(sd[k]):
                h.update(k.encode())
                h.update(sd[k].numpy().tobytes())
    return h.hexdigest()


def test_resume_after_an_epoch_ends_with_the_same_weights(mini_split, tmp_path):
    scene = mini_split(4)   # two steps per epoch
    small = ("--height", "64", "--width", "96")  # 12 steps in all: half the pixels
    full = Trainer(make_opt(scene, tmp_path, "--num_epochs", "3", *small, name="full"))
    full.train()
    part = Trainer(make_opt(scene, tmp_path, "--num_epochs", "1", *small, name="part"))
    part.train()
    run = str(tmp_path / "logs" / "part")
    argv = ["--resume", run, "--num_epochs", "3"]
    options = SRDOptions()
    opt = apply_resume_options(options, options.parse(argv), argv)
    resumed = Trainer(opt)
    assert resumed.start_epoch == 1 and resumed.teacher is not None
    resumed.train()
    a = full.model.state_dict()
    b = resumed.model.state_dict()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=0), k


def test_non_finite_loss_stops_cleanly_and_keeps_last_checkpoint(mini_split, tmp_path):
    scene = mini_split()
    Trainer(make_opt(scene, tmp_path, "--num_epochs", "1")).train()
    weights_0 = tmp_path / "logs" / "run" / "models" / "weights_0"
    digest = _weights_digest(weights_0)
    argv = ["--resume", str(tmp_path / "logs" / "run"), "--num_epochs", "2",
            "--disparity_smoothness", "nan"]
    options = SRDOptions()
    opt = apply_resume_options(options, options.parse(argv), argv)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 1 in term\(s\) smoothness"):
        Trainer(opt).train()
    assert _weights_digest(weights_0) == digest
    assert not (weights_0.parent / "weights_1").exists()


def test_train_cli_reports_non_finite_loss_in_one_line(mini_split, tmp_path):
    data_path, split_dir = mini_split()
    out = subprocess.run(
        [sys.executable, "train.py", "--data_path", data_path, "--split_dir", split_dir, "--split",
         "mini", "--log_dir", str(tmp_path / "logs"), "--model_name", "nan", "--height", "64",
         "--width", "192", "--batch_size", "2", "--num_epochs", "1", "--num_workers", "0",
         "--weights_init", "scratch", "--depth_decoder", "unet", "--no_progress",
         "--disparity_smoothness", "nan"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: non-finite loss at step 0 in term(s) smoothness")
    assert not (tmp_path / "logs" / "nan" / "models" / "weights_0").exists()


@pytest.mark.parametrize("args, message", [
    (["--data_path", "/nonexistent/kitti"], "--data_path /nonexistent/kitti does not exist"),
    (["--split", "eigen_zhou"], "python splits/download_splits.py"),
    (["--split", "nosuchsplit"], "split 'nosuchsplit' has no train_files.txt"),
])
def test_train_cli_bad_input_exits_2(small_scene, tmp_path, args, message):
    data_path, split_dir = small_scene
    base = ["--data_path", data_path, "--split_dir", split_dir, "--log_dir", str(tmp_path),
            "--weights_init", "scratch", "--num_workers", "0"]
    out = subprocess.run([sys.executable, "train.py", *base, *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    err = out.stderr.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and message in err, err


def test_warm_start_from_a_weights_folder(mini_split, tmp_path):
    scene = mini_split()
    first = Trainer(make_opt(scene, tmp_path, "--num_epochs", "1", name="first"))
    first.train()
    folder = str(tmp_path / "logs" / "first" / "models" / "weights_0")
    second = Trainer(make_opt(scene, tmp_path, "--load_weights_folder", folder,
                              "--models_to_load", "encoder", "pose", name="second"))
    for k, v in first.model.encoder.state_dict().items():
        assert torch.equal(v, second.model.encoder.state_dict()[k])
    for k, v in first.model.pose.state_dict().items():
        assert torch.equal(v, second.model.pose.state_dict()[k])
    assert not all(torch.equal(v, second.model.depth.state_dict()[k])
                   for k, v in first.model.depth.state_dict().items())
