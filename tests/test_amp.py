"""--amp: the networks run in half precision, the geometry and the losses in float32.

Under a whole-forward autocast the matrix products of back-projection and projection run in
bfloat16, and an identity warp at 192 px lands pixels off by more than a pixel; these tests pin
that the warp under --amp is the float32 warp of the (half-precision) depth, that the networks
did run in bfloat16, and that the loss terms and gradients stay those of float32 training.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from batch_helpers import add_intrinsics
from layers import BackprojectDepth, Project3D
from options import SRDOptions
from srd import SRDModel, Teacher, amp_dtype, cpu_bf16_is_native, to_float32

H, W, B = 64, 192, 2


def _opt(*extra):
    return SRDOptions().parse(["--height", str(H), "--width", str(W), "--weights_init", "scratch",
                               "--depth_decoder", "unet", "--batch_size", str(B), *extra])


def _batch(seed=0):
    """Frames 0, -1, +1 at 4 scales; frame +-1 is frame 0 shifted by 2 px (a learnable warp)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(B, 3, H, W + 8, generator=g)
    inputs = {}
    for f, shift in ((0, 4), (-1, 2), (1, 6)):
        full = base[..., shift:shift + W]
        for s in range(4):
            x = torch.nn.functional.interpolate(full, (H // 2 ** s, W // 2 ** s), mode="area")
            inputs[("color", f, s)] = inputs[("color_aug", f, s)] = x
    return add_intrinsics(inputs, B, H, W)


def _model(dtype, *extra):
    torch.manual_seed(0)
    opt = _opt(*extra)
    model = SRDModel(opt, amp_dtype=dtype)
    model.train()
    for m in model.modules():  # running statistics: the fp32 and amp forwards see the same weights
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    return model, Teacher(model.encoder, model.depth)


def _conv_output_dtypes(modules):
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
             for net in modules for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    return seen, hooks


def test_amp_dtype_convention():
    assert amp_dtype(_opt(), "cpu") is None
    assert amp_dtype(_opt(), "cpu", bf16_native=True) is None
    assert amp_dtype(_opt("--amp"), "cpu", bf16_native=True) is torch.bfloat16
    assert amp_dtype(_opt("--amp"), "cpu", bf16_native=False) is None  # emulated: float32
    assert amp_dtype(_opt("--amp", "--force_amp"), "cpu", bf16_native=False) is torch.bfloat16
    assert amp_dtype(_opt("--amp"), "cuda") is torch.float16
    assert amp_dtype(_opt("--amp"), "cuda", bf16_native=False) is torch.float16
    out = to_float32({"a": torch.ones(1, dtype=torch.bfloat16), "b": [torch.ones(1).double()],
                      "c": (torch.ones(1, dtype=torch.float16), torch.ones(1, dtype=torch.long))})
    assert out["a"].dtype == torch.float32 and out["b"][0].dtype == torch.float64
    assert out["c"][0].dtype == torch.float32 and out["c"][1].dtype == torch.long


def test_amp_networks_run_in_bfloat16_and_outputs_are_float32():
    model, teacher = _model(torch.bfloat16)
    seen, hooks = _conv_output_dtypes([model.encoder, model.depth, model.pose_encoder, model.pose,
                                       teacher])
    outputs, terms = model(_batch(), teacher)
    for h in hooks:
        h.remove()
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for net in (model.encoder, model.depth,
                                                             model.pose_encoder, model.pose)
                  for m in net.modules())
    assert len(seen) > n_convs  # student, pose and teacher convolutions all ran ...
    assert set(seen) == {torch.bfloat16}  # ... in bfloat16
    assert {v.dtype for v in terms.values()} == {torch.float32}
    assert set(terms) == {"photometric", "smoothness", "distillation"}
    for key in [("disp", 0), ("depth", 0, 0), ("sample", 1, 0), ("color", 1, 0),
                ("cam_T_cam", 0, 1), "teacher_depth"]:
        assert outputs[key].dtype == torch.float32, key


def test_amp_no_op_outside_the_networks_makes_a_bfloat16_tensor():
    """Every op of a training step's forward that runs outside the networks (warp geometry, SSIM,
    photometric, smoothness, multiview check, distillation) produces float32 tensors: a loss
    computed in bfloat16 from float32 outputs (e.g. the images cast down before SSIM) shows here even
    when its value is within bfloat16's precision of the float32 loss."""
    from torch.utils._pytree import tree_leaves
    from torch.utils._python_dispatch import TorchDispatchMode
    model, teacher = _model(torch.bfloat16)
    inside = [0]
    nets = [model.encoder, model.depth, model.pose_encoder, model.pose, teacher]
    hooks = [h for net in nets for h in (
        net.register_forward_pre_hook(lambda *_: inside.__setitem__(0, inside[0] + 1)),
        net.register_forward_hook(lambda *_: inside.__setitem__(0, inside[0] - 1)))]
    outside = []

    class RecordDtypes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if inside[0] == 0:
                outside.extend(str(func) for t in tree_leaves(out)
                               if torch.is_tensor(t) and t.dtype == torch.bfloat16)
            return out

    inputs = _batch()
    seen, conv_hooks = _conv_output_dtypes(nets)
    with RecordDtypes():
        _, terms = model(inputs, teacher)
    for h in hooks + conv_hooks:
        h.remove()
    assert set(seen) == {torch.bfloat16} and "distillation" in terms
    assert outside == [], sorted(set(outside))


@pytest.mark.parametrize("scale", [0, 3])
def test_amp_warp_is_the_float32_warp_of_the_predicted_depth(scale):
    model, _ = _model(torch.bfloat16)
    inputs = _batch()
    outputs, _ = model(inputs)
    depth = outputs[("depth", 0, scale)]  # full resolution (no --v1_multiscale)
    points = BackprojectDepth(H, W)(depth, inputs[("inv_K", 0)])
    for f in (-1, 1):
        expected = Project3D(H, W)(points, inputs[("K", 0)], outputs[("cam_T_cam", 0, f)])
        # normalised grid units; 1e-5 is 1e-3 px at 192 px (bfloat16 geometry is off by > 1 px)
        torch.testing.assert_close(outputs[("sample", f, scale)], expected, atol=1e-5, rtol=0)


def test_amp_loss_terms_and_gradients_match_float32():
    inputs = _batch()
    results = {}
    for name, dtype in (("fp32", None), ("amp", torch.bfloat16)):
        model, _ = _model(dtype)
        torch.manual_seed(1)  # a teacher that differs from the student: distillation well above 0
        other = SRDModel(_opt()).eval()
        teacher = Teacher(other.encoder, other.depth)
        torch.manual_seed(2)  # the automasking tie-break noise
        _, terms = model(inputs, teacher)
        sum(terms.values()).backward()
        grad = torch.cat([p.grad.flatten() for p in model.depth.parameters() if p.grad is not None])
        results[name] = ({k: float(v.detach()) for k, v in terms.items()}, grad)
    (t32, g32), (tamp, gamp) = results["fp32"], results["amp"]
    assert t32["distillation"] > 1e-4
    for k in ("photometric", "smoothness", "distillation"):
        assert tamp[k] == pytest.approx(t32[k], rel=0.02), (k, t32, tamp)
    assert gamp.dtype == torch.float32 and torch.isfinite(gamp).all()
    cosine = torch.nn.functional.cosine_similarity(g32, gamp, dim=0)
    assert cosine > 0.98, float(cosine)


def test_amp_predictive_mask_bce_runs_in_float32():
    # binary_cross_entropy is refused under CUDA autocast; outside the networks it runs in float32
    model, _ = _model(torch.bfloat16, "--predictive_mask", "--disable_automasking", "--no_dor")
    outputs, terms = model(_batch())
    assert outputs[("predictive_mask", 0)].dtype == torch.float32
    assert terms["mask_reg"].dtype == torch.float32 and torch.isfinite(terms["mask_reg"])


# bfloat16 keeps 8 significant bits: one rounding is off by at most 2**-9 relative. The networks'
# outputs go through some hundred roundings whose errors mostly average out; the loss terms at the
# first step agree within 2 % (test above). After a few optimiser steps from the same weights on the
# same batch, the bfloat16 run's loss may trail the float32 run's by at most 4 * 2**-8 relative
# (1.6 %; measured: it ends 0.1 % below it), and must have dropped like it.
BF16_LOSS_RTOL = 4 * 2.0 ** -8
LEARN_STEPS = 2  # the first step lowers the loss most; each bfloat16 step is slow where emulated


def _few_steps(dtype, inputs):
    """LEARN_STEPS Adam steps on one batch with a fixed (different) teacher: the total loss at every
    step and the distillation term at the last."""
    model, _ = _model(dtype)
    torch.manual_seed(1)
    other = SRDModel(_opt()).eval()
    teacher = Teacher(other.encoder, other.depth)
    optim = torch.optim.Adam(model.parameters(), lr=1e-4)
    totals = []
    for step in range(LEARN_STEPS + 1):
        torch.manual_seed(2)  # the same automasking tie-break noise every step, in both runs
        _, terms = model(inputs, teacher)
        loss = sum(terms.values())
        totals.append(float(loss.detach()))
        if step < LEARN_STEPS:
            optim.zero_grad()
            loss.backward()
            assert all(torch.isfinite(p.grad).all() for p in model.parameters()
                       if p.grad is not None), step
            optim.step()
    return totals, float(terms["distillation"].detach())


def test_amp_learns_like_float32_in_a_few_steps_on_the_same_batch():
    """What the end-to-end --amp run shows, in LEARN_STEPS steps: bfloat16 networks lower the loss
    (distillation active) as far as float32 does, within bfloat16's precision."""
    inputs = _batch()
    fp32, distill32 = _few_steps(None, inputs)
    amp, distill_amp = _few_steps(torch.bfloat16, inputs)
    assert distill32 > 1e-4 and distill_amp > 1e-4
    drop32 = fp32[0] - fp32[-1]
    assert drop32 > 2 * BF16_LOSS_RTOL * fp32[0], fp32  # float32 learned, well above the tolerance
    assert amp[-1] <= fp32[-1] * (1 + BF16_LOSS_RTOL), (fp32, amp)
    assert fp32[0] - amp[-1] >= drop32 - BF16_LOSS_RTOL * fp32[0], (fp32, amp)


# ------------------------------------------------------------------ CPUs that emulate bfloat16
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_onednn_capped_below_bf16_counts_as_emulated(monkeypatch):
    for cap in ("AVX2", "avx512_core", "SSE41"):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert cpu_bf16_is_native() is False, cap
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if " avx512_bf16" in flags or " amx_bf16" in flags:
        assert cpu_bf16_is_native() is True
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
        assert cpu_bf16_is_native() is True


def test_train_amp_on_a_cpu_that_emulates_bfloat16_says_so_once_and_trains_in_float32(
        mini_split, tmp_path):
    """train.py --amp --no_cuda with oneDNN capped at AVX2 (bfloat16 emulated on any CPU)."""
    data_path, split_dir = mini_split()
    logs = tmp_path / "logs"
    cmd = [sys.executable, "train.py", "--data_path", data_path, "--split_dir", split_dir,
           "--split", "mini", "--log_dir", str(logs), "--model_name", "emulated", "--height", "64",
           "--width", "192", "--batch_size", "2", "--num_epochs", "1", "--num_workers", "0",
           "--weights_init", "scratch", "--depth_decoder", "unet", "--no_progress", "--amp",
           "--no_cuda"]
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    said = [line for line in (out.stdout + out.stderr).splitlines() if "bfloat16 is emulated" in line]
    assert len(said) == 1, out.stdout
    assert "about 10x slower" in said[0] and "training in float32" in said[0], said
    assert "--force_amp" in said[0], said
    models = logs / "emulated" / "models"
    assert json.loads((models / "environment.json").read_text())["autocast_dtype"] is None
    assert json.loads((models / "opt.json").read_text())["amp"] is True
    assert (models / "weights_0" / "depth.pth").is_file()


def test_trainer_amp_on_a_native_bf16_cpu_is_unchanged_and_silent(mini_split, tmp_path, capsys,
                                                                  monkeypatch):
    import srd
    from trainer import build_model
    monkeypatch.setattr(srd, "cpu_bf16_is_native", lambda: True)
    data_path, split_dir = mini_split()
    opt = SRDOptions().parse(["--data_path", data_path, "--split_dir", split_dir, "--amp",
                              "--height", str(H), "--width", str(W), "--weights_init", "scratch",
                              "--depth_decoder", "unet"])
    said = []
    assert build_model(opt, torch.device("cpu"), said.append).amp_dtype is torch.bfloat16
    assert said == []
    monkeypatch.setattr(srd, "cpu_bf16_is_native", lambda: False)
    assert build_model(opt, torch.device("cpu"), said.append).amp_dtype is None
    assert len(said) == 1 and "bfloat16 is emulated" in said[0]
    forced = SRDOptions().parse(["--data_path", data_path, "--split_dir", split_dir, "--amp",
                                 "--force_amp", "--height", str(H), "--width", str(W),
                                 "--weights_init", "scratch", "--depth_decoder", "unet"])
    assert build_model(forced, torch.device("cpu"), said.append).amp_dtype is torch.bfloat16
    assert len(said) == 1
