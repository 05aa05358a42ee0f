"""Auto-masking warm-up and the collapse diagnostics (issue: from scratch with auto-masking the pose
network can settle on a sideways motion; the Trainer must warm up without the mask and say so when a
run is stuck)."""

import math
import os

import pytest
import torch
from torch.utils.data import default_collate

import diagnostics as D
from datasets import build_dataset
from layers import transformation_from_parameters
from options import SRDOptions, automask_warmup_epochs
from trainer import Trainer


def _opt(*args):
    return SRDOptions().parse(list(args))


# ------------------------------------------------------------------ the automatic warm-up rule
@pytest.mark.parametrize("args, epochs", [
    (["--weights_init", "scratch"], 1),
    ([], 0),                                                        # ImageNet weights: KITTI recipe
    (["--weights_init", "scratch", "--load_weights_folder", "w"], 0),  # warm start
    (["--weights_init", "scratch", "--disable_automasking"], 0),
    (["--weights_init", "scratch", "--automask_warmup_epochs", "0"], 0),
    (["--automask_warmup_epochs", "3"], 3),
])
def test_automatic_warmup_applies_only_from_scratch(args, epochs):
    assert automask_warmup_epochs(_opt(*args)) == epochs


def test_a_negative_warmup_below_minus_one_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _opt("--automask_warmup_epochs", "-2")
    assert exit_info.value.code == 2
    assert "--automask_warmup_epochs -2 must be >= 0" in capsys.readouterr().err


# ------------------------------------------------------------------ direction convention
def test_camera_motion_direction_of_a_forward_moving_camera():
    """A camera moving 0.5 m forward between frames: T_src_from_tgt of frame +1 moves points by
    -0.5 z, that of frame -1 by +0.5 z; both read as motion (0, 0, 1)."""
    zero = torch.zeros(1, 1, 3)
    t_next = torch.tensor([[[0.0, 0.0, -0.5]]])
    T_next = transformation_from_parameters(zero, t_next)
    T_prev = transformation_from_parameters(zero, -t_next)
    for T, f in ((T_next, 1), (T_prev, -1)):
        assert D.camera_motion_directions(T, f)[0].tolist() == pytest.approx([0.0, 0.0, 1.0])


def test_epoch_summary_against_hand_computed_values():
    diag = D.EpochDiagnostics([0, -1, 1], "cpu")
    zero = torch.zeros(2, 1, 3)
    # sample 0 moves right (+x), sample 1 moves forward (+z): mean (0.5, 0, 0.5)
    t = torch.tensor([[[-2.0, 0.0, 0.0]], [[0.0, 0.0, -0.1]]])
    outputs = {("cam_T_cam", 0, 1): transformation_from_parameters(zero, t),
               ("automask", 0): torch.tensor([1.0, 0.0, 0.0, 1.0]).view(1, 1, 2, 2)}
    diag.update(outputs, {"photometric": torch.tensor(0.2)})
    outputs[("automask", 0)] = torch.ones(1, 1, 2, 2)
    diag.update(outputs, {"photometric": torch.tensor(0.1)})
    s = diag.summary()
    assert (s["motion_x"], s["motion_y"], s["motion_z"]) == pytest.approx((0.5, 0.0, 0.5))
    assert s["forward_share"] == pytest.approx(1 / math.sqrt(2))
    assert s["automask_share"] == pytest.approx(0.75)
    assert s["photometric"] == pytest.approx(0.15)
    assert diag.summary() == {}  # reset


def _epoch(share, photometric, x=0.9):
    z = share * math.sqrt(x * x / max(1 - share * share, 1e-12))
    return {"motion_x": x, "motion_y": 0.0, "motion_z": z, "forward_share": share,
            "photometric": photometric}


@pytest.mark.parametrize("epochs, fires", [
    ([_epoch(0.1, 0.070), _epoch(0.1, 0.0695)], True),    # sideways twice, loss flat
    ([_epoch(0.1, 0.070), _epoch(0.1, 0.060)], False),    # sideways, but the loss still falls 14%
    ([_epoch(0.9, 0.070), _epoch(0.1, 0.0699)], False),   # only one sideways epoch
    ([_epoch(0.95, 0.050), _epoch(0.97, 0.0499)], False),  # forward and converged: healthy
    ([_epoch(0.1, 0.070)], False),                        # too early to say
])
def test_collapse_warning_rule(epochs, fires):
    message = D.collapse_warning(epochs)
    assert (message is not None) is fires
    if fires:
        assert "--automask_warmup_epochs" in message and "\n" not in message


# ------------------------------------------------------------------ through the Trainer
def _trainer(scene, tmp_path, *extra):
    data_path, split_dir = scene
    return Trainer(SRDOptions().parse([
        "--data_path", data_path, "--split_dir", split_dir, "--split", "mini",
        "--log_dir", str(tmp_path / "logs"), "--model_name", "diag", "--height", "64", "--width",
        "192", "--batch_size", "2", "--num_epochs", "4", "--num_workers", "0", "--weights_init",
        "scratch", "--depth_decoder", "unet", "--no_distill", "--log_frequency", "1000",
        "--no_progress", *extra]))


def _fix_pose(trainer, translation):
    """Freeze the pose decoder to output ``translation`` (T_src_from_tgt of frame +1, for the pair
    (0, +1); the pair (-1, 0) is inverted, so frame -1 gets the opposite motion)."""
    last = trainer.model.pose.net[3]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[3:6] = torch.tensor(translation) / 0.01  # the decoder scales its output by 0.01
    trainer.model.pose.requires_grad_(False)


def _fixed_batch(trainer):
    opt = trainer.opt
    data = build_dataset(opt, os.path.join(opt.split_dir, "mini", "train_files.txt"),
                         is_train=False, frame_ids=trainer.frame_ids, load_depth=False)
    return default_collate([data[i] for i in range(opt.batch_size)])


def _run_epochs(trainer, batch, n):
    """n epochs of 3 steps each on one fixed, unaugmented batch, through the Trainer's step and its
    epoch-end logging."""
    for trainer.epoch in range(n):
        for _ in range(3):
            trainer.run_step(batch)
        trainer.log_epoch()


@pytest.mark.parametrize("translation, warns", [
    ((-0.05, 0.0, 0.0), True),   # camera "moving" sideways: the lateral minimum
    ((0.0, 0.0, -0.05), False),  # camera moving forward: the synthetic scene's true direction
])
def test_the_warning_fires_on_a_run_held_in_a_sideways_motion_only(mini_split, tmp_path, capsys,
                                                                    translation, warns):
    trainer = _trainer(mini_split(), tmp_path, "--learning_rate", "1e-9")  # the loss stalls
    _fix_pose(trainer, translation)
    _run_epochs(trainer, _fixed_batch(trainer), 4)
    history = trainer.epoch_history
    assert [e["epoch"] for e in history] == [0, 1, 2, 3]
    assert [e["automask_in_loss"] for e in history] == [False, True, True, True]  # warm-up epoch 0
    assert all(0 < e["automask_share"] < 1 for e in history)
    expected_z = 0.0 if warns else 1.0
    assert history[-1]["motion_z"] == pytest.approx(expected_z, abs=1e-5)
    out = capsys.readouterr().out
    assert "epoch 3: camera motion (x" in out
    assert trainer.warned_collapse is warns
    assert (out.count("warning: the pose network's camera motion is mostly sideways") == 1) is warns


def test_warmup_epochs_leave_the_mask_out_of_the_loss_and_epoch_1_puts_it_back(mini_split, tmp_path):
    """Same weights, same batch: in the warm-up epoch the photometric term is the unmasked one."""
    trainer = _trainer(mini_split(), tmp_path)
    batch = _fixed_batch(trainer)
    model = trainer.model
    torch.manual_seed(0)
    _, masked = model(batch, automask=True)
    torch.manual_seed(0)
    _, unmasked = model(batch, automask=False)
    trainer.epoch = 0
    assert not trainer.automask_active
    trainer.epoch = 1
    assert trainer.automask_active
    # the auto-masked loss takes the minimum with the identity losses too: never larger
    assert float(masked["photometric"].detach()) < float(unmasked["photometric"].detach())


def _first_losses(scene, tmp_path, name, *extra):
    data_path, split_dir = scene
    trainer = Trainer(SRDOptions().parse([
        "--data_path", data_path, "--split_dir", split_dir, "--split", "mini",
        "--log_dir", str(tmp_path / name), "--model_name", name, "--height", "64", "--width", "192",
        "--batch_size", "2", "--num_epochs", "2", "--num_workers", "0", "--depth_decoder", "unet",
        "--log_frequency", "1", "--no_progress", *extra]))
    trainer.train()
    return [r["photometric"] for r in trainer.history]


def test_the_warm_start_recipe_is_unchanged_by_default(mini_split, tmp_path):
    """Not from scratch (here: warm-started from a weights folder; ImageNet weights are not
    downloadable offline, and follow the same rule): the default run's first steps equal those of the
    run with the warm-up switched off, and differ from a run that forces it on."""
    scene = mini_split()
    seed_run = _trainer(scene, tmp_path)
    from checkpointing import save_weights_folder
    folder = str(tmp_path / "warm")
    save_weights_folder(folder, seed_run.model.networks(), seed_run.model.spec)
    warm = ["--weights_init", "scratch", "--load_weights_folder", folder]
    default = _first_losses(scene, tmp_path, "default", *warm)
    off = _first_losses(scene, tmp_path, "off", *warm, "--automask_warmup_epochs", "0")
    forced = _first_losses(scene, tmp_path, "forced", *warm, "--automask_warmup_epochs", "1")
    assert default == off
    assert forced[0] != default[0]


def test_the_imagenet_recipe_is_unchanged_by_default(mini_split, tmp_path, monkeypatch):
    """The KITTI recipe: ImageNet-initialised encoders (a fake ImageNet file in the torch hub cache
    stands in for the download). The default run's first steps equal those of the run with the
    warm-up switched off."""
    import torchvision
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(),
               checkpoints / "resnet18-f37072fd.pth")
    scene = mini_split()
    imagenet = ["--weights_init", "pretrained"]
    default = _first_losses(scene, tmp_path, "default", *imagenet)
    off = _first_losses(scene, tmp_path, "off", *imagenet, "--automask_warmup_epochs", "0")
    assert default == off
