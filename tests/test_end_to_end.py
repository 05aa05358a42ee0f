"""End to end on the synthetic scene: export ground truth -> train SRD briefly on the CPU -> the
model must actually learn depth; then the evaluation and inference CLIs on the trained run.

One training run (about 5 minutes on 2 cores with the scene generation) serves every test here but
the --amp one, which trains the same configuration once more with bfloat16 networks (about 3
minutes; at 192x64 the convolutions are too small for bfloat16 to save much) where the CPU computes
bfloat16 natively, and is skipped elsewhere.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

import checkpointing
import demo
import evaluate_depth
import export_gt_depth
from datasets import build_dataset
from options import SRDOptions
from srd import cpu_bf16_is_native
from trainer import Trainer

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KITTI_FRAME = os.path.join(ROOT, "..", "shared", "assets", "kitti_frame_638x235.jpg")

# The learning run is the demo's (demo.DEMO_TRAIN_FLAGS: U-Net decoder + DOR + SRD from epoch 1,
# ResNet-18 from scratch, auto-masking after its one-epoch warm-up), shortened to 6 epochs with
# checkpoints at epochs 4 and 5 (the demo's 10 end near abs_rel 0.25; 6 keep the whole suite under
# 25 minutes, with the same bar);
# argparse keeps the last value of a repeated flag.
NUM_EPOCHS = 6
LAST_WEIGHTS = f"weights_{NUM_EPOCHS - 1}"
TRAIN_FLAGS = demo.DEMO_TRAIN_FLAGS + ["--num_epochs", str(NUM_EPOCHS), "--save_frequency", "5",
                                       "--log_frequency", "5", "--no_progress"]


def _eval_opt(data_path, split_dir):
    return SRDOptions().parse(["--eval_mono", "--eval_split", "synthetic", "--data_path",
                               data_path, "--split_dir", split_dir, "--num_workers", "0",
                               "--no_progress"], mode="eval")


def _train_and_evaluate(demo_scene, tmp_path_factory, name, extra=()):
    """Train TRAIN_FLAGS + extra on the demo scene; metrics of the untrained and the last epoch."""
    data_path, split_dir = demo_scene
    export_gt_depth.main(["--data_path", data_path, "--split", "synthetic",
                          "--split_dir", split_dir])
    log_dir = str(tmp_path_factory.mktemp(f"{name}_runs"))
    opt = SRDOptions().parse(TRAIN_FLAGS + ["--data_path", data_path, "--split_dir", split_dir,
                                            "--log_dir", log_dir, "--model_name", name, *extra])
    trainer = Trainer(opt)
    init = trainer.weights_folder("init")
    checkpointing.save_weights_folder(init, trainer.model.networks(), trainer.model.spec)
    trainer.train()
    eval_opt = _eval_opt(data_path, split_dir)
    gt = evaluate_depth.load_gt_depths("synthetic", split_dir, data_path)
    device = evaluate_depth.pick_device(True)
    before = evaluate_depth.evaluate_folder(eval_opt, init, split_dir, device, gt)["metrics"]
    after = evaluate_depth.evaluate_folder(eval_opt, trainer.weights_folder(opt.num_epochs - 1),
                                           split_dir, device, gt)["metrics"]
    print(f"\n{name} untrained: {before}\n{name} trained:   {after}")
    return {"trainer": trainer, "before": before, "after": after, "data_path": data_path,
            "split_dir": split_dir, "models": os.path.join(trainer.log_path, "models")}


@pytest.fixture(scope="module")
def trained_run(demo_scene, tmp_path_factory):
    return _train_and_evaluate(demo_scene, tmp_path_factory, "e2e")


def _assert_learned(run):
    before, after = run["before"], run["after"]
    assert after["abs_rel"] <= 0.75 * before["abs_rel"], (before, after)
    assert after["a1"] >= before["a1"] + 0.10, (before, after)


def test_srd_training_learns_depth(trained_run):
    _assert_learned(trained_run)


@pytest.mark.skipif(not cpu_bf16_is_native(),
                    reason="bfloat16 is emulated on this CPU (no AVX-512 BF16 / AMX): the full --amp "
                           "run would take about 10x the float32 run; test_amp.py shows in a few "
                           "steps that bfloat16 learns like float32")
def test_srd_training_with_amp_learns_depth(demo_scene, tmp_path_factory):
    """--amp (bfloat16 networks on the CPU) learns as well: same run, same bar. Only where the CPU
    computes bfloat16 natively (on others --amp trains in float32 and says so)."""
    run = _train_and_evaluate(demo_scene, tmp_path_factory, "e2e_amp", ["--amp"])
    assert run["trainer"].model.amp_dtype is torch.bfloat16
    _assert_learned(run)
    later = [r for r in run["trainer"].history if r["epoch"] >= 1]
    assert later and all(r["distillation"] > 0 for r in later)


def test_the_pose_network_learned_the_forward_motion_of_the_camera(trained_run):
    """The synthetic camera moves ~0.5 m per frame along its +z axis, so T_src_from_tgt of frame +1
    translates by -z and that of frame -1 by +z (Monodepth2's frame convention). A pose network stuck
    in a wrong minimum (e.g. a sideways motion that explains only half of each image) fails this."""
    trainer = trained_run["trainer"]
    opt, model = trainer.opt, trainer.model
    val_files = os.path.join(opt.split_dir, opt.split, "val_files.txt")
    dataset = build_dataset(opt, val_files, is_train=False, frame_ids=[0, -1, 1], load_depth=False)
    inputs = default_collate([dataset[i] for i in range(min(8, len(dataset)))])
    model.eval()
    with torch.no_grad():
        outputs, _ = model(inputs)
    model.train()
    for f, forward in ((1, -1.0), (-1, 1.0)):
        t = outputs[("cam_T_cam", 0, f)][:, :3, 3]
        cosine = forward * t[:, 2] / t.norm(dim=1)
        assert (cosine > 0.95).all(), (f, t)


def test_the_camera_motion_is_forward_by_the_end_of_epoch_1_and_no_collapse_is_reported(trained_run):
    """Auto-masking is on from epoch 1 (after the warm-up of a run from scratch): the pose network
    must already move the camera along +z in epoch 1 and stay there, and the collapse warning of a
    run stuck sideways must stay silent."""
    trainer = trained_run["trainer"]
    history = trainer.epoch_history
    assert [e["automask_in_loss"] for e in history[:2]] == [False, True]
    for e in history[1:]:
        assert e["motion_z"] > 0.9 and e["forward_share"] > 0.95, e
        assert 0.3 < e["automask_share"] < 1.0, e
    assert not trainer.warned_collapse


def test_distillation_is_logged_positive_from_epoch_1_and_keep_ratio_is_sane(trained_run):
    history = trained_run["trainer"].history
    assert all("distillation" not in r for r in history if r["epoch"] == 0)
    later = [r for r in history if r["epoch"] >= 1]
    assert later and all(r["distillation"] > 0 for r in later)
    ratios = [r["keep_ratio"] for r in later]
    assert all(0.2 <= k <= 0.95 for k in ratios), ratios
    assert all(math.isfinite(r["photometric"]) for r in history)
    assert any("val_abs_rel" in r for r in history)  # validation metrics from the velodyne gt


def test_evaluate_depth_cli_on_the_run_and_every_epoch(trained_run, tmp_path):
    weights = os.path.join(trained_run["models"], LAST_WEIGHTS)
    base = [sys.executable, "evaluate_depth.py", "--eval_mono", "--eval_split", "synthetic",
            "--data_path", trained_run["data_path"], "--split_dir", trained_run["split_dir"],
            "--num_workers", "0", "--no_progress"]
    out = subprocess.run(base + ["--load_weights_folder", weights], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "abs_rel |   sq_rel |     rmse | rmse_log |       a1 |       a2 |       a3" in out.stdout
    record = json.load(open(os.path.join(weights, "metrics.json")))
    assert record["metrics"]["abs_rel"] == pytest.approx(trained_run["after"]["abs_rel"], abs=1e-6)
    out = subprocess.run(base + ["--load_weights_folder", trained_run["models"]], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    summary = json.load(open(os.path.join(trained_run["models"], "metrics_all.json")))
    assert "weights_4" in json.dumps(summary) and LAST_WEIGHTS in json.dumps(summary)


@pytest.mark.skipif(not os.path.isfile(KITTI_FRAME), reason="shared KITTI frame not present")
def test_simple_on_a_real_kitti_frame_with_the_trained_model(trained_run, tmp_path):
    weights = os.path.join(trained_run["models"], LAST_WEIGHTS)
    out = subprocess.run([sys.executable, "test_simple.py", "--image_path", KITTI_FRAME,
                          "--model_path", weights, "--output_dir", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    stem = os.path.splitext(os.path.basename(KITTI_FRAME))[0]
    image = Image.open(tmp_path / f"{stem}_disp.jpeg")
    assert image.size == (638, 235)
    disp = np.load(tmp_path / f"{stem}_disp.npy")
    assert disp.shape == (235, 638) and np.isfinite(disp).all() and disp.std() > 0
