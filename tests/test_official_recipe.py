"""The official SRD optimiser and teacher semantics behind flags: --lr_decoder, --teacher_mode."""

import copy

import pytest
import torch

from batch_helpers import add_intrinsics
from options import SRDOptions
from srd import SRDModel, Teacher
from tests.test_training import make_opt
from trainer import Trainer


def _opt(*extra):
    return SRDOptions().parse(["--height", "64", "--width", "96", "--weights_init", "scratch",
                               "--depth_decoder", "unet", *extra])


def test_lr_decoder_sets_the_second_group_only_and_both_follow_the_schedule(mini_split, tmp_path):
    trainer = Trainer(make_opt(mini_split(), tmp_path, "--learning_rate", "5e-5",
                               "--lr_decoder", "1e-4", "--num_epochs", "2"))
    enc_group, rest_group = trainer.optimizer.param_groups
    encoder_params = {id(p) for p in trainer.model.encoder.parameters()}
    assert {id(p) for p in enc_group["params"]} <= encoder_params
    assert not {id(p) for p in rest_group["params"]} & encoder_params
    pose_params = {id(p) for p in trainer.model.pose.parameters()}
    depth_params = {id(p) for p in trainer.model.depth.parameters()}
    assert pose_params | depth_params <= {id(p) for p in rest_group["params"]}
    assert (enc_group["lr"], rest_group["lr"]) == (5e-5, 1e-4)
    trainer.train()
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx(
        [5e-5 * 0.9 ** 2, 1e-4 * 0.9 ** 2])


def test_without_lr_decoder_every_group_uses_learning_rate(mini_split, tmp_path):
    trainer = Trainer(make_opt(mini_split(), tmp_path, "--learning_rate", "3e-4"))
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [3e-4, 3e-4]


def test_a_non_positive_lr_decoder_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        _opt("--lr_decoder", "0")
    assert exc.value.code == 2
    assert "--lr_decoder 0.0 must be positive" in capsys.readouterr().err


def _images(B=2, H=64, W=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2 * B, 3, H, W, generator=g)


def test_eval_teacher_uses_running_statistics_and_is_deterministic():
    torch.manual_seed(0)
    model = SRDModel(_opt())
    teacher = Teacher(model.encoder, model.depth, "eval")
    teacher.train()  # the trainer's .train() calls must not change a teacher's mode
    assert not any(m.training for m in teacher.modules())
    x = _images()
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        expected = reference.depth(reference.encoder(x))[("disp", 0)]
    assert torch.allclose(teacher(x)[("disp", 0)], expected, atol=1e-6)


def test_train_teacher_normalises_each_frame_with_its_own_batch_statistics():
    """Official semantics: BatchNorm in train mode, frame 0 and the source frame as separate
    batches. Independent formulation: a train-mode copy of the student run on each half."""
    torch.manual_seed(0)
    model = SRDModel(_opt())
    teacher = Teacher(model.encoder, model.depth, "train")
    teacher.eval()  # ignored: the mode is fixed at construction
    assert all(m.training for m in teacher.modules())
    x = _images()
    out = teacher(x)[("disp", 0)]
    student = copy.deepcopy(model).train()
    with torch.no_grad():
        halves = [student.depth(student.encoder(h))[("disp", 0)] for h in torch.chunk(x, 2)]
        whole = student.depth(student.encoder(x))[("disp", 0)]
    assert torch.allclose(out, torch.cat(halves), atol=1e-5)
    assert not torch.allclose(out, whole, atol=1e-4)  # one batch of both frames would differ
    eval_out = Teacher(model.encoder, model.depth, "eval")(x)[("disp", 0)]
    assert not torch.allclose(out, eval_out, atol=1e-4)


def test_a_train_mode_teacher_is_used_from_epoch_1(mini_split, tmp_path):
    trainer = Trainer(make_opt(mini_split(), tmp_path, "--teacher_mode", "train"))
    trainer.train()
    assert trainer.teacher.mode == "train" and trainer.teacher.encoder.training
    assert "distillation" in trainer.history[1] and trainer.history[1]["distillation"] >= 0
