"""--amp: the networks run in half precision, the geometry and the losses in float32.

Under a whole-forward autocast the matrix products of back-projection and projection run in
bfloat16, and an identity warp at 192 px lands pixels off by more than a pixel; these tests pin
that the warp under --amp is the float32 warp of the (half-precision) depth, that the networks
did run in bfloat16, and that the loss terms and gradients stay those of float32 training.
"""

import pytest
import torch

from batch_helpers import add_intrinsics
from layers import BackprojectDepth, Project3D
from options import SRDOptions
from srd import SRDModel, Teacher, amp_dtype, to_float32

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
    assert amp_dtype(_opt("--amp"), "cpu") is torch.bfloat16
    assert amp_dtype(_opt("--amp"), "cuda") is torch.float16
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
