"""Tests of layers.py: geometry conventions, round trips, gradients, losses and metrics."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layers import (DEPTH_METRIC_NAMES, SSIM, BackprojectDepth, Conv3x3, ConvBlock, Project3D,
                    box_mean3, compute_depth_errors, elu, depth_to_disp, disp_to_depth, get_smooth_loss,
                    get_translation_matrix, rot_from_axisangle, transformation_from_parameters,
                    upsample)


def _intrinsics(batch, height, width, dtype=torch.float32):
    K = torch.tensor([[0.58 * width, 0.0, 0.5 * width, 0.0],
                      [0.0, 1.92 * height, 0.5 * height, 0.0],
                      [0.0, 0.0, 1.0, 0.0],
                      [0.0, 0.0, 0.0, 1.0]], dtype=dtype)
    K = K.expand(batch, 4, 4).clone()
    return K, torch.linalg.inv(K)


# ---------------------------------------------------------------------------------------------
# Disparity <-> depth
# ---------------------------------------------------------------------------------------------
def test_disp_to_depth_endpoints():
    disp = torch.tensor([0.0, 1.0])
    scaled, depth = disp_to_depth(disp, 0.1, 100.0)
    assert torch.allclose(depth, torch.tensor([100.0, 0.1]))
    assert torch.allclose(scaled, torch.tensor([0.01, 10.0]))


def test_depth_to_disp_round_trip():
    disp = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    _, depth = disp_to_depth(disp, 0.1, 100.0)
    assert torch.allclose(depth_to_disp(depth, 0.1, 100.0), disp, atol=1e-12)
    assert torch.allclose(depth_to_disp(torch.tensor([100.0, 0.1], dtype=torch.float64), 0.1, 100.0),
                          torch.tensor([0.0, 1.0], dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# Rigid transforms
# ---------------------------------------------------------------------------------------------
def test_axisangle_is_radians_right_handed():
    # pi/2 about +z: x -> y, y -> -x (right-hand rule), z unchanged.
    rot = rot_from_axisangle(torch.tensor([[[0.0, 0.0, math.pi / 2]]], dtype=torch.float64))
    assert rot.shape == (1, 4, 4)
    expected = torch.tensor([[0.0, -1.0, 0.0, 0.0],
                             [1.0, 0.0, 0.0, 0.0],
                             [0.0, 0.0, 1.0, 0.0],
                             [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(rot[0], expected, atol=1e-12)
    x_axis = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    assert torch.allclose(rot[0] @ x_axis, torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64),
                          atol=1e-12)


def test_axisangle_small_angle_and_zero():
    tiny = torch.tensor([[[1e-6, -2e-6, 3e-6]]], dtype=torch.float64)
    rot = rot_from_axisangle(tiny)[0, :3, :3]
    first_order = torch.eye(3, dtype=torch.float64) + torch.tensor(
        [[0.0, -3e-6, -2e-6], [3e-6, 0.0, -1e-6], [2e-6, 1e-6, 0.0]], dtype=torch.float64)
    assert torch.allclose(rot, first_order, atol=1e-11)
    zero = torch.zeros(2, 1, 3, dtype=torch.float64, requires_grad=True)
    rot0 = rot_from_axisangle(zero)
    assert torch.equal(rot0, torch.eye(4, dtype=torch.float64).expand(2, 4, 4))
    rot0.sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_translation_matrix():
    mat = get_translation_matrix(torch.tensor([[[1.0, -2.0, 3.0]]]))
    point = torch.tensor([1.0, 1.0, 1.0, 1.0])
    assert torch.allclose(mat[0] @ point, torch.tensor([2.0, -1.0, 4.0, 1.0]))


def test_transformation_invert_is_inverse():
    torch.manual_seed(0)
    axisangle = 0.5 * torch.randn(3, 1, 3, dtype=torch.float64)
    translation = torch.randn(3, 1, 3, dtype=torch.float64)
    forward = transformation_from_parameters(axisangle, translation, invert=False)
    inverse = transformation_from_parameters(axisangle, translation, invert=True)
    eye = torch.eye(4, dtype=torch.float64).expand(3, 4, 4)
    assert torch.allclose(inverse @ forward, eye, atol=1e-12)
    assert torch.allclose(forward @ inverse, eye, atol=1e-12)
    # forward = T(t) R: p -> R p + t
    point = torch.tensor([0.3, -0.2, 2.0, 1.0], dtype=torch.float64)
    rot = rot_from_axisangle(axisangle)
    assert torch.allclose(forward[0] @ point, rot[0] @ point + torch.cat([translation[0, 0],
                                                                          point.new_zeros(1)]))


# ---------------------------------------------------------------------------------------------
# Back-projection / projection / warp
# ---------------------------------------------------------------------------------------------
def test_backproject_project_identity_returns_pixel_grid_any_batch():
    height, width = 6, 8
    backproject = BackprojectDepth(height, width)
    project = Project3D(height, width)
    xs = torch.arange(width, dtype=torch.float32)
    ys = torch.arange(height, dtype=torch.float32)
    expected = torch.stack([2 * xs[None, :].expand(height, width) / (width - 1) - 1,
                            2 * ys[:, None].expand(height, width) / (height - 1) - 1], dim=-1)
    for batch in (1, 3):
        K, inv_K = _intrinsics(batch, height, width)
        depth = 1.0 + 10.0 * torch.rand(batch, 1, height, width)
        points = backproject(depth, inv_K)
        assert points.shape == (batch, 4, height * width)
        assert torch.allclose(points[:, 2], depth.view(batch, -1), atol=1e-5)
        eye = torch.eye(4).expand(batch, 4, 4)
        pix = project(points, K, eye)
        assert pix.shape == (batch, height, width, 2)
        assert torch.allclose(pix, expected.expand_as(pix), atol=1e-5)
    assert "pix_coords" not in backproject.state_dict()


def test_project_known_translation_shifts_by_hand_computed_pixels():
    # fx = 10, depth 2, camera moved so points shift by +0.4 m in x -> 10*0.4/2 = 2 px to the right.
    height, width = 4, 9
    K = torch.tensor([[[10.0, 0, 4, 0], [0, 10, 1.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]]])
    depth = torch.full((1, 1, height, width), 2.0)
    T = get_translation_matrix(torch.tensor([[[0.4, 0.0, 0.0]]]))
    pix = Project3D(height, width)(BackprojectDepth(height, width)(depth, torch.linalg.inv(K)), K, T)
    x_pixels = (pix[..., 0] + 1) * (width - 1) / 2
    assert torch.allclose(x_pixels, torch.arange(width, dtype=torch.float32) + 2.0, atol=1e-4)


def test_warp_path_gradcheck_float64():
    torch.manual_seed(0)
    height, width = 6, 8
    backproject = BackprojectDepth(height, width).double()
    project = Project3D(height, width).double()
    K, inv_K = _intrinsics(1, height, width, dtype=torch.float64)
    source = torch.rand(1, 3, height, width, dtype=torch.float64)
    depth = (2.0 + torch.rand(1, 1, height, width, dtype=torch.float64)).requires_grad_()
    axisangle = torch.tensor([[[0.01, -0.02, 0.015]]], dtype=torch.float64, requires_grad=True)
    translation = torch.tensor([[[0.03, 0.01, -0.05]]], dtype=torch.float64, requires_grad=True)

    def warp(depth, axisangle, translation):
        T = transformation_from_parameters(axisangle, translation)
        grid = project(backproject(depth, inv_K), K, T)
        return F.grid_sample(source, grid, mode="bilinear", padding_mode="border",
                             align_corners=True)

    assert torch.autograd.gradcheck(warp, (depth, axisangle, translation), eps=1e-6, atol=1e-5)
    # the same with invert=True (the past-frame branch)
    assert torch.autograd.gradcheck(
        lambda a, t: transformation_from_parameters(a, t, invert=True), (axisangle, translation))


# ---------------------------------------------------------------------------------------------
# Conv blocks
# ---------------------------------------------------------------------------------------------
def test_conv_blocks_and_upsample():
    x = torch.arange(4.0).view(1, 1, 2, 2)
    up = upsample(x)
    assert torch.equal(up, torch.tensor([[[[0.0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]]]))
    conv = Conv3x3(1, 1)
    assert set(conv.state_dict()) == {"conv.weight", "conv.bias"}
    with torch.no_grad():
        conv.conv.weight.zero_()
        conv.conv.weight[0, 0, 1, 0] = 1.0  # output(x) = input(x - 1): reflection gives column 1 at x=0
        conv.conv.bias.zero_()
    rows = torch.tensor([0.0, 1.0, 2.0, 3.0]).expand(1, 1, 2, 4)
    assert torch.equal(conv(rows), torch.tensor([1.0, 0.0, 1.0, 2.0]).expand(1, 1, 2, 4))
    block = ConvBlock(2, 5)
    assert set(block.state_dict()) == {"conv.conv.weight", "conv.conv.bias"}
    assert block(torch.randn(2, 2, 6, 7)).shape == (2, 5, 6, 7)


def test_elu_equals_torch_elu_values_and_gradients():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(4000) * 3, torch.tensor([0.0, -1e-8, 1e-8, -30.0, 30.0])])
    x32 = x.clone().requires_grad_(True)
    ref = x.clone().requires_grad_(True)
    y, y_ref = elu(x32), F.elu(ref)
    torch.testing.assert_close(y, y_ref, atol=2e-7, rtol=1e-6)
    g = torch.randn_like(x)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(x32.grad, ref.grad, atol=2e-7, rtol=1e-6)
    # bfloat16 in, bfloat16 out, computed in float32: the correctly rounded ELU, exactly
    xb = torch.randn(4000).bfloat16()
    assert elu(xb).dtype == torch.bfloat16
    assert torch.equal(elu(xb), F.elu(xb.float()).bfloat16())
    assert torch.equal(elu(torch.tensor([-1.0, 0.0, 2.0])), torch.tensor([math.exp(-1) - 1, 0, 2]))


def test_elu_gradcheck_float64():
    x = torch.randn(3, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    x = x + torch.sign(x.detach()) * 1e-3  # away from the kink at 0
    torch.autograd.gradcheck(elu, (x.detach().requires_grad_(True),))


def test_box_mean3_equals_avg_pool_and_gradcheck():
    x = torch.rand(2, 3, 7, 9, dtype=torch.float64)
    torch.testing.assert_close(box_mean3(x), F.avg_pool2d(x, 3, stride=1), atol=1e-14, rtol=0)
    by_hand = torch.arange(9.0, dtype=torch.float64).view(1, 1, 3, 3)
    assert box_mean3(by_hand).item() == pytest.approx(4.0)  # mean of 0..8
    torch.autograd.gradcheck(box_mean3, (x.requires_grad_(True),))
    with pytest.raises(ValueError, match="at least 3x3"):
        box_mean3(torch.zeros(1, 1, 2, 5))


# ---------------------------------------------------------------------------------------------
# SSIM and smoothness
# ---------------------------------------------------------------------------------------------
def test_ssim_against_float64_avg_pool_formulation():
    """The SSIM (separable box means) against a direct float64 formulation with avg_pool2d."""
    torch.manual_seed(1)
    x, y = torch.rand(2, 3, 24, 40), torch.rand(2, 3, 24, 40)
    xp = F.pad(x.double(), (1, 1, 1, 1), mode="reflect")
    yp = F.pad(y.double(), (1, 1, 1, 1), mode="reflect")
    mean = lambda t: F.avg_pool2d(t, 3, stride=1)  # noqa: E731
    mx, my = mean(xp), mean(yp)
    sx, sy, sxy = mean(xp * xp) - mx ** 2, mean(yp * yp) - my ** 2, mean(xp * yp) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = (2 * mx * my + c1) * (2 * sxy + c2) / ((mx ** 2 + my ** 2 + c1) * (sx + sy + c2))
    expected = ((1 - ssim) / 2).clamp(0, 1)
    torch.testing.assert_close(SSIM()(x, y).double(), expected, atol=1e-5, rtol=0)


def test_ssim_zero_for_identical_and_grows_with_noise():
    torch.manual_seed(0)
    ssim = SSIM()
    img = torch.rand(2, 3, 16, 20)
    same = ssim(img, img)
    assert same.shape == img.shape
    assert same.abs().max() < 1e-5
    noise = torch.randn_like(img)
    losses = [ssim(img, (img + sigma * noise).clamp(0, 1)).mean().item() for sigma in (0.02, 0.1, 0.3)]
    assert 0 < losses[0] < losses[1] < losses[2] <= 1


def test_smoothness_constant_is_zero_and_ramp_positive():
    img = torch.rand(1, 3, 8, 10)
    constant = torch.full((1, 1, 8, 10), 0.3)
    assert get_smooth_loss(constant, img).item() == 0.0
    # ramp along x on a flat image: normalised disp = x / mean(x) = x / 4.5, |dx| = 1/4.5, dy = 0
    flat = torch.zeros(1, 3, 8, 10)
    ramp = torch.arange(10.0).view(1, 1, 1, 10).expand(1, 1, 8, 10)
    assert get_smooth_loss(ramp, flat).item() == pytest.approx(1 / 4.5, rel=1e-5)
    # scale invariance through the mean normalisation
    assert get_smooth_loss(3 * ramp, flat).item() == pytest.approx(1 / 4.5, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
def test_compute_depth_errors_hand_computed():
    gt = np.array([1.0, 2.0, 4.0, 8.0])
    pred = np.array([1.0, 3.0, 4.0, 4.0])
    # |gt-pred| = 0,1,0,4; ratios max(gt/pred, pred/gt) = 1, 1.5, 1, 2
    expected = {
        "abs_rel": (0 + 1 / 2 + 0 + 4 / 8) / 4,              # 0.25
        "sq_rel": (0 + 1 / 2 + 0 + 16 / 8) / 4,              # 0.625
        "rmse": math.sqrt((0 + 1 + 0 + 16) / 4),             # 2.0615528
        "rmse_log": math.sqrt((math.log(1.5) ** 2 + math.log(2.0) ** 2) / 4),  # 0.4015143
        "a1": 2 / 4,   # 1, 1 < 1.25
        "a2": 3 / 4,   # 1.5 < 1.5625
        "a3": 3 / 4,   # 2 >= 1.953125
    }
    errors = compute_depth_errors(gt, pred)
    assert tuple(errors) == DEPTH_METRIC_NAMES
    for name, value in expected.items():
        assert errors[name].dim() == 0 and errors[name].dtype == torch.float64
        assert errors[name].item() == pytest.approx(value, abs=1e-12), name
    assert errors["rmse"].item() == pytest.approx(2.0615528, abs=1e-7)
    assert errors["rmse_log"].item() == pytest.approx(0.4015143, abs=1e-7)
    # torch input of another shape gives the same numbers
    torch_errors = compute_depth_errors(torch.tensor(gt, dtype=torch.float32).view(2, 2),
                                        torch.tensor(pred, dtype=torch.float32).view(2, 2))
    for name, value in expected.items():
        assert torch_errors[name].item() == pytest.approx(value, abs=1e-6), name


def test_compute_depth_errors_thresholds_are_strict():
    # ratios exactly 1.25 and 1.25^2 (both exact in binary) do not count as within the threshold
    errors = compute_depth_errors(np.array([1.25, 1.5625]), np.array([1.0, 1.0]))
    assert (errors["a1"].item(), errors["a2"].item(), errors["a3"].item()) == (0.0, 0.5, 1.0)


def test_compute_depth_errors_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        compute_depth_errors(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="no valid pixels"):
        compute_depth_errors(np.ones(0), np.ones(0))
