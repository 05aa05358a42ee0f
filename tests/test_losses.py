"""Losses: the batched multiview check against a per-sample NumPy reference, distillation,
reprojection and auto-masking rules."""

import numpy as np
import pytest
import torch

import losses as L
from layers import SSIM, transformation_from_parameters


def _bilinear_zeros(img, u, v):
    """Bilinear sample of img [H,W] at pixel coords (u, v); neighbours outside count as 0."""
    H, W = img.shape
    x0, y0 = np.floor(u).astype(int), np.floor(v).astype(int)
    out = np.zeros_like(u)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            w = (1 - np.abs(u - xi)) * (1 - np.abs(v - yi))
            inside = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
            out += np.where(inside, w * img[np.clip(yi, 0, H - 1), np.clip(xi, 0, W - 1)], 0.0)
    return out


def reference_multiview_mask(d_ref, d_src, K, T):
    """Straightforward per-sample definition (float64): lift, move, project, sample, lift, move back."""
    H, W = d_ref.shape
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    pix = np.stack([xs.ravel(), ys.ravel(), np.ones(H * W)])
    K3, invK = K[:3, :3], np.linalg.inv(K[:3, :3])
    pts_ref = invK @ pix * d_ref.ravel()
    pts_src = T[:3, :3] @ pts_ref + T[:3, 3:]
    proj = K3 @ pts_src
    z = np.maximum(proj[2], 1e-7)
    u, v = proj[0] / z, proj[1] / z
    ds = _bilinear_zeros(d_src, u, v)
    back = np.linalg.inv(T)
    pts_src2 = invK @ np.stack([u, v, np.ones_like(u)]) * ds
    pts_ref2 = back[:3, :3] @ pts_src2 + back[:3, 3:]
    r = np.abs(pts_ref2[2] - d_ref.ravel()) / d_ref.ravel()
    return (r < r.mean() + L.CONSISTENT_TOL).reshape(H, W), r.reshape(H, W)


def _smooth_depth(rng, B, H, W, lo, hi):
    coarse = torch.from_numpy(rng.uniform(lo, hi, size=(B, 1, 4, 6)).astype(np.float32))
    return torch.nn.functional.interpolate(coarse, (H, W), mode="bilinear", align_corners=True)


def _intrinsics(B, H, W):
    K = torch.eye(4).repeat(B, 1, 1)
    K[:, 0, 0], K[:, 1, 1] = 0.58 * W, 1.92 * H
    K[:, 0, 2], K[:, 1, 2] = 0.5 * W, 0.5 * H
    return K


def test_multiview_check_matches_per_sample_reference():
    rng = np.random.default_rng(0)
    B, S, H, W = 3, 2, 48, 160
    d_ref = _smooth_depth(rng, S * B, H, W, 4.0, 40.0)
    d_src = d_ref * torch.from_numpy(rng.uniform(0.9, 1.1, (S * B, 1, 1, 1)).astype(np.float32)) \
        + _smooth_depth(rng, S * B, H, W, -1.0, 1.0)
    axisangle = torch.from_numpy(rng.normal(0, 0.02, (B, 1, 3)).astype(np.float32))
    translation = torch.from_numpy(np.array([[[0.05, -0.02, -0.5]]] * B, np.float32)
                                   + rng.normal(0, 0.05, (B, 1, 3)).astype(np.float32))
    T = transformation_from_parameters(axisangle, translation)
    K = _intrinsics(B, H, W)
    mask, ratio = L.multiview_check(d_ref, d_src, K, T)
    assert mask.shape == (S * B, 1, H, W)
    for s in range(S):
        for b in range(B):
            i = s * B + b
            ref_mask, ref_r = reference_multiview_mask(d_ref[i, 0].double().numpy(),
                                                       d_src[i, 0].double().numpy(),
                                                       K[b].double().numpy(), T[b].double().numpy())
            got = mask[i, 0].numpy().astype(bool)
            assert (got == ref_mask).mean() >= 0.995
            assert abs(got.mean() - ref_mask.mean()) <= 0.005
            assert 0.05 < ref_mask.mean() < 0.95  # the test case is not degenerate


def test_multiview_check_consistent_plane_keeps_pixels_in_view():
    """Fronto-parallel plane at 20 m, camera moves 1 m forward: in-view pixels agree exactly."""
    B, H, W = 2, 32, 96
    d_ref = torch.full((B, 1, H, W), 20.0)
    d_src = torch.full((B, 1, H, W), 19.0)
    T = transformation_from_parameters(torch.zeros(B, 1, 3), torch.tensor([[[0.0, 0.0, -1.0]]] * B))
    mask, ratio = L.multiview_check(d_ref, d_src, _intrinsics(B, H, W), T)
    in_view = ratio < 1e-3
    assert in_view.float().mean() > 0.85
    assert mask.bool()[in_view].all()           # everything that stays in view is kept
    assert not mask.bool()[ratio > 0.5].any()   # what leaves the image is dropped


def test_distillation_zero_when_teacher_is_student_and_view_is_a_copy():
    rng = np.random.default_rng(1)
    B, H, W = 2, 32, 96
    depth = _smooth_depth(rng, B, H, W, 3.0, 60.0)
    T = torch.eye(4).repeat(B, 1, 1)  # frame +1 is a copy of frame 0
    mask, _ = L.multiview_check(depth, depth.clone(), _intrinsics(B, H, W), T)
    assert mask.mean() > 0.99
    assert L.distillation_loss(depth, depth.clone(), mask) == 0


def test_distillation_value_by_hand():
    s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    t = torch.tensor([[[[2.0, 2.0], [1.0, 8.0]]]])
    m = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    # |s-t|*m = [1, 0, 2, 0] -> mean 0.75
    assert L.distillation_loss(s, t, m).item() == pytest.approx(0.75)


def test_reprojection_loss_zero_for_identical_images_and_l1_by_hand():
    img = torch.rand(2, 3, 16, 20)
    assert L.reprojection_loss(img, img, SSIM()).abs().max() < 1e-6
    a, b = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)
    assert torch.allclose(L.reprojection_loss(a, b), torch.full((1, 1, 4, 4), 0.5))


def test_automask_picks_identity_where_it_is_smaller():
    reproj = torch.tensor([[[[0.3, 0.1]], [[0.2, 0.4]]]])      # [1,2,1,2]
    identity = torch.tensor([[[[0.1, 0.5]], [[0.6, 0.5]]]])
    loss, automask = L.combine_reprojection(reproj, identity, tie_break=0.0)
    assert torch.allclose(loss, torch.tensor([[[[0.1, 0.1]]]]))
    assert automask.tolist() == [[[[False, True]]]]
    avg, _ = L.combine_reprojection(reproj, None, avg=True)
    assert torch.allclose(avg, torch.tensor([[[[0.25, 0.25]]]]))
