"""What each ablation flag changes, and SRDModel's loss terms against an independent formulation.

Model level (``SRDModel`` on one small fixed batch, no Trainer), so every comparison is on the same
inputs and the same initial weights:

* each Monodepth2 / SRD ablation flag changes what it should (loss value, auto-mask, outputs,
  networks) against the default, not only "stays finite";
* with a known depth (a stub decoder) and a known pose (a stub pose decoder), the photometric,
  smoothness and distillation terms equal a formulation written here from the papers' definitions;
* pose evaluation: a known trajectory with a known error gives that ATE through evaluate_pose.py.
"""

import math
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from batch_helpers import add_intrinsics  # noqa: E402
import eval_helpers as H  # noqa: E402

import evaluate_pose  # noqa: E402
from networks.spec import ModelSpec  # noqa: E402
from options import SRDOptions  # noqa: E402
from srd import SRDModel  # noqa: E402

B, HEIGHT, WIDTH = 2, 64, 96
BASE = ["--height", str(HEIGHT), "--width", str(WIDTH), "--weights_init", "scratch",
        "--depth_decoder", "unet"]


def _opt(*extra):
    return SRDOptions().parse(BASE + list(extra))


def _batch(frames=(0, -1, 1), stereo=False, seed=0):
    """Smooth random images (so SSIM and warps are meaningful), intrinsics, and stereo_T."""
    g = torch.Generator().manual_seed(seed)
    inputs = {}
    for f in list(frames) + (["s"] if stereo else []):
        base = torch.rand(B, 3, HEIGHT // 8, WIDTH // 8, generator=g)
        full = F.interpolate(base, (HEIGHT, WIDTH), mode="bilinear", align_corners=False)
        full = full + 0.05 * torch.rand(B, 3, HEIGHT, WIDTH, generator=g)
        for s in range(4):
            x = F.interpolate(full, (HEIGHT // 2 ** s, WIDTH // 2 ** s), mode="bilinear",
                              align_corners=False, antialias=True) if s else full
            inputs[("color", f, s)] = inputs[("color_aug", f, s)] = x
    if stereo:
        T = torch.eye(4).repeat(B, 1, 1)
        T[:, 0, 3] = 0.1
        inputs["stereo_T"] = T
    return add_intrinsics(inputs, B, HEIGHT, WIDTH)


def _run(*extra, teacher=None, seed=0):
    opt = _opt(*extra)
    torch.manual_seed(seed)
    model = SRDModel(opt).eval()  # eval: BatchNorm running statistics, the same for every flag
    inputs = _batch(frames=opt.frame_ids, stereo=opt.use_stereo)
    torch.manual_seed(123)  # the auto-masking tie-break noise
    with torch.no_grad():
        outputs, terms = model(inputs, teacher)
    return model, outputs, terms


@pytest.fixture(scope="module")
def default():
    return _run()


def _close(a, b):
    return torch.allclose(a, b, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------- ablations
def test_default_has_automask_all_scales_full_resolution_warps(default):
    model, outputs, terms = default
    assert set(terms) == {"photometric", "smoothness"}
    for s in range(4):
        assert outputs[("color", 1, s)].shape[-2:] == (HEIGHT, WIDTH)
        assert ("automask", s) in outputs
        keep = outputs[("automask", s)].mean()
        assert 0 < keep < 1
    assert set(model.networks()) == {"encoder", "depth", "pose_encoder", "pose"}
    assert ("delta", 0) in outputs  # DOR


def test_v1_multiscale_warps_at_each_scale(default):
    _, out_d, terms_d = default
    _, out, terms = _run("--v1_multiscale")
    for s in range(1, 4):
        assert out[("color", 1, s)].shape[-2:] == (HEIGHT // 2 ** s, WIDTH // 2 ** s)
        assert out[("depth", 0, s)].shape[-2:] == (HEIGHT // 2 ** s, WIDTH // 2 ** s)
    assert _close(out[("color", 1, 0)], out_d[("color", 1, 0)])  # scale 0 is the same warp
    assert not _close(terms["photometric"], terms_d["photometric"])
    assert _close(terms["smoothness"], terms_d["smoothness"])


def test_avg_reprojection_averages_instead_of_minimum(default):
    _, out_d, terms_d = default
    _, out, terms = _run("--avg_reprojection", "--disable_automasking")
    _, _, terms_min = _run("--disable_automasking")
    # the mean over sources is >= their per-pixel minimum everywhere, strictly somewhere
    assert terms["photometric"] > terms_min["photometric"]
    assert _close(out[("color", 1, 0)], out_d[("color", 1, 0)])
    _, _, terms_avg_masked = _run("--avg_reprojection")
    assert not _close(terms_avg_masked["photometric"], terms_d["photometric"])


def test_disable_automasking_removes_the_mask_and_raises_the_loss(default):
    _, _, terms_d = default
    _, out, terms = _run("--disable_automasking")
    assert not any(isinstance(k, tuple) and k[0] == "automask" for k in out)
    # auto-masking takes min(identity, reprojection) per pixel: never above the plain minimum
    assert terms["photometric"] > terms_d["photometric"] + 1e-4
    assert _close(terms["smoothness"], terms_d["smoothness"])


def test_predictive_mask_adds_mask_decoder_outputs_and_regulariser():
    model, out, terms = _run("--predictive_mask", "--disable_automasking", "--no_dor")
    _, _, terms_plain = _run("--disable_automasking", "--no_dor")
    assert "mask" in model.networks() and set(terms) == {"photometric", "smoothness", "mask_reg"}
    for s in range(4):
        m = out[("predictive_mask", s)]
        assert m.shape == (B, 2, HEIGHT // 2 ** s, WIDTH // 2 ** s)  # one channel per source
        assert 0 < float(m.min()) and float(m.max()) < 1
    assert terms["mask_reg"] > 0
    # the mask weights the reprojection loss (< 1 everywhere), so the loss drops
    assert terms["photometric"] < terms_plain["photometric"]


def test_no_ssim_is_the_l1_loss(default):
    model, out, terms = _run("--no_ssim", "--disable_automasking")
    assert model.ssim is None
    expected = 0.0
    for s in range(4):
        l1 = torch.cat([(out[("color", f, s)] - _batch()[("color", 0, 0)]).abs().mean(1, True)
                        for f in (-1, 1)], 1)
        expected = expected + l1.min(1)[0].mean()
    assert torch.allclose(terms["photometric"], expected / 4, rtol=1e-5)
    _, _, terms_ssim = _run("--disable_automasking")
    assert not _close(terms["photometric"], terms_ssim["photometric"])


def test_no_dor_drops_the_offsets_and_changes_the_disparity(default):
    _, out_d, _ = default
    model, out, _ = _run("--no_dor")
    assert not any(isinstance(k, tuple) and k[0] == "delta" for k in out)
    n_params = sum(p.numel() for p in model.depth.parameters())
    assert n_params < sum(p.numel() for p in default[0].depth.parameters())  # no refinement heads
    assert out[("disp", 3)].shape == out_d[("disp", 3)].shape
    assert not _close(out[("disp", 0)], out_d[("disp", 0)])


class _FixedTeacher(nn.Module):
    """Teacher stand-in: frame 0 gets ``disp``, the source frame ``disp`` shifted; any scale."""

    def __init__(self, disp0, disp1):
        super().__init__()
        self.disp0, self.disp1 = disp0, disp1

    def forward(self, images):
        assert images.shape[0] == 2 * B
        out = {}
        for s in range(4):
            size = (HEIGHT // 2 ** s, WIDTH // 2 ** s)
            d = torch.cat([self.disp0, self.disp1])
            out[("disp", s)] = F.interpolate(d, size, mode="bilinear", align_corners=False)
        return out


def _teacher_disps():
    ys = torch.linspace(0.05, 0.4, HEIGHT).view(1, 1, HEIGHT, 1).expand(B, 1, HEIGHT, WIDTH)
    return ys.contiguous(), (ys * 1.02).contiguous()


def test_distillation_only_with_a_teacher_and_no_distill_trains_without(default):
    """--no_distill means the Trainer passes no teacher (tests/test_training.py checks that
    gating); here: with a teacher the term appears and is positive, without it is absent and the
    other terms are unchanged."""
    _, out_d, terms_d = default
    _, out, terms = _run(teacher=_FixedTeacher(*_teacher_disps()))
    assert set(terms) == {"photometric", "smoothness", "distillation"}
    assert terms["distillation"] > 0
    assert 0 < float(out["mv_mask"].mean()) <= 1
    assert _close(terms["photometric"], terms_d["photometric"])
    assert "distillation" not in terms_d and "mv_mask" not in out_d
    opt = _opt("--no_distill")
    assert opt.no_distill


@pytest.mark.parametrize("kind,inp,pose_nets,in_ch", [
    ("separate_resnet", "pairs", {"pose_encoder", "pose"}, 6),
    ("separate_resnet", "all", {"pose_encoder", "pose"}, 9),
    ("shared", "pairs", {"pose"}, None),
    ("posecnn", "pairs", {"pose"}, 6),
    ("posecnn", "all", {"pose"}, 9),
])
def test_pose_model_type_and_input(default, kind, inp, pose_nets, in_ch):
    _, out_d, terms_d = default
    model, out, terms = _run("--pose_model_type", kind, "--pose_model_input", inp)
    nets = set(model.networks())
    assert nets == {"encoder", "depth"} | pose_nets
    if kind == "separate_resnet":
        assert model.pose_encoder.encoder.conv1.in_channels == in_ch
        assert model.pose.num_frames_to_predict_for == 2  # pairs: 2 outputs, [:, 0] used; all: -1, +1
    elif kind == "posecnn":
        first = next(m for m in model.pose.modules() if isinstance(m, nn.Conv2d))
        assert first.in_channels == in_ch
    else:  # shared: the pose decoder reads the depth encoder's features of two frames
        assert model.pose.num_input_features == 2
        assert model.pose.net[0].in_channels == model.encoder.num_ch_enc[-1]
    for f in (-1, 1):
        assert out[("cam_T_cam", 0, f)].shape == (B, 4, 4)
    if (kind, inp) != ("separate_resnet", "pairs"):
        assert not _close(out[("cam_T_cam", 0, 1)], out_d[("cam_T_cam", 0, 1)])
        assert not _close(terms["photometric"], terms_d["photometric"])


def test_use_stereo_adds_the_stereo_partner_warped_with_stereo_T(default):
    _, out_d, terms_d = default
    model, out, terms = _run("--use_stereo")
    assert ("color", "s", 0) in out and ("cam_T_cam", 0, 1) in out
    assert _close(out[("color", 1, 0)], out_d[("color", 1, 0)])
    assert not _close(terms["photometric"], terms_d["photometric"])
    # the stereo sample grid is the projection with the batch's stereo_T: a pure x baseline moves
    # pixels along rows only
    grid = out[("sample", "s", 0)]
    ys = torch.linspace(-1, 1, HEIGHT).view(1, HEIGHT, 1).expand(B, HEIGHT, WIDTH)
    assert torch.allclose(grid[..., 1], ys, atol=1e-5)
    assert not torch.allclose(grid[..., 0], torch.linspace(-1, 1, WIDTH).expand(B, HEIGHT, WIDTH),
                              atol=1e-3)


def test_stereo_only_has_no_pose_network():
    model, out, terms = _run("--use_stereo", "--frame_ids", "0")
    assert set(model.networks()) == {"encoder", "depth"}
    assert not any(isinstance(k, tuple) and k[0] == "cam_T_cam" for k in out)
    assert ("color", "s", 0) in out and ("color", 1, 0) not in out
    assert terms["photometric"] > 0


# ------------------------------------------------------- independent loss formulation
class _FixedDepth(nn.Module):
    def __init__(self, disps):
        super().__init__()
        self.disps = disps

    def forward(self, features):
        return {("disp", s): d for s, d in self.disps.items()}


class _FixedPose(nn.Module):
    def __init__(self, axisangle, translation):
        super().__init__()
        self.axisangle, self.translation = axisangle, translation

    def forward(self, features):
        shape = (B, 2, 1, 3)
        return self.axisangle.expand(shape), self.translation.expand(shape)


def _known_disps():
    g = torch.Generator().manual_seed(5)
    disps = {}
    for s in range(4):
        h, w = HEIGHT // 2 ** s, WIDTH // 2 ** s
        ramp = torch.linspace(0.02, 0.3, h).view(1, 1, h, 1).expand(B, 1, h, w)
        disps[s] = (ramp + 0.02 * torch.rand(B, 1, h, w, generator=g)).contiguous()
    return disps


AXISANGLE = torch.tensor([0.0, 0.01, 0.0]).view(1, 1, 1, 3)
TRANSLATION = torch.tensor([0.01, 0.0, 0.12]).view(1, 1, 1, 3)


def _rigid(axisangle, t):
    """[4,4] p_b = R p_a + t with R from the axis-angle (Rodrigues)."""
    v = axisangle.double().view(3)
    theta = float(v.norm())
    k = (v / theta).tolist()
    K = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=torch.float64)
    R = torch.eye(3, dtype=torch.float64) + math.sin(theta) * K + (1 - math.cos(theta)) * K @ K
    M = torch.eye(4, dtype=torch.float64)
    M[:3, :3], M[:3, 3] = R, t.double().view(3)
    return M


def _ssim_dissimilarity(x, y):
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mean = lambda z: F.avg_pool2d(z, 3, 1)  # noqa: E731
    mx, my = mean(x), mean(y)
    vx, vy, cxy = mean(x * x) - mx ** 2, mean(y * y) - my ** 2, mean(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return ((1 - ssim) / 2).clamp(0, 1)


def _photo(a, b, use_ssim):
    l1 = (a - b).abs().mean(1, keepdim=True)
    if not use_ssim:
        return l1
    return 0.85 * _ssim_dissimilarity(a, b).mean(1, keepdim=True) + 0.15 * l1


def _warp(source, depth, K, T):
    """Sample ``source`` at the projection of every target pixel (x, y) with depth d:
    p = K (R d K^-1 [x y 1] + t); explicit per-pixel geometry in float64."""
    _, _, h, w = depth.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing="ij")
    out = []
    for b in range(B):
        K3 = K[b, :3, :3].double()
        rays = torch.linalg.inv(K3) @ torch.stack([xs.flatten(), ys.flatten(), torch.ones(h * w,
                                                   dtype=torch.float64)])
        X = rays * depth[b].double().flatten()
        Xs = T[b, :3, :3] @ X + T[b, :3, 3:]
        p = K3 @ Xs
        u, v = p[0] / p[2], p[1] / p[2]
        grid = torch.stack([2 * u / (w - 1) - 1, 2 * v / (h - 1) - 1], -1).view(1, h, w, 2)
        out.append(F.grid_sample(source[b:b + 1].double(), grid, padding_mode="border",
                                 align_corners=True))
    return torch.cat(out).float()


def _independent_terms(opt, inputs, disps, teacher_depth=None, mv_mask=None):
    M = _rigid(AXISANGLE, TRANSLATION).expand(B, 4, 4)
    T = {1: M, -1: torch.linalg.inv(M)}  # pairs (0, 1) and (-1, 0) inverted: T_src_from_target
    photometric, smoothness, distill = 0.0, 0.0, 0.0
    use_ssim = not opt.no_ssim
    for s in range(4):
        src_scale = s if opt.v1_multiscale else 0
        disp = disps[s] if opt.v1_multiscale else F.interpolate(
            disps[s], (HEIGHT, WIDTH), mode="bilinear", align_corners=False)
        lo, hi = 1 / opt.max_depth, 1 / opt.min_depth
        depth = 1 / (lo + (hi - lo) * disp)
        target = inputs[("color", 0, src_scale)]
        reproj = torch.cat([_photo(_warp(inputs[("color", f, src_scale)], depth,
                                         inputs[("K", src_scale)], T[f]), target, use_ssim)
                            for f in (-1, 1)], 1)
        if opt.avg_reprojection:
            per_pixel = reproj.mean(1, keepdim=True)
        else:
            per_pixel = reproj.min(1, keepdim=True)[0]
        if not opt.disable_automasking:
            identity = torch.cat([_photo(inputs[("color", f, src_scale)], target, use_ssim)
                                  for f in (-1, 1)], 1)
            identity = identity.mean(1, True) if opt.avg_reprojection else identity.min(1, True)[0]
            per_pixel = torch.minimum(per_pixel, identity)  # auto-mask: keep where warping helps
        photometric = photometric + per_pixel.mean()
        # edge-aware smoothness of the mean-normalised disparity at this scale, weight / 2^s
        d = disps[s] / (disps[s].mean((2, 3), keepdim=True) + 1e-7)
        img = inputs[("color", 0, s)]
        wx = torch.exp(-(img[..., :-1] - img[..., 1:]).abs().mean(1, True))
        wy = torch.exp(-(img[..., :-1, :] - img[..., 1:, :]).abs().mean(1, True))
        smooth = ((d[..., :-1] - d[..., 1:]).abs() * wx).mean() + \
            ((d[..., :-1, :] - d[..., 1:, :]).abs() * wy).mean()
        smoothness = smoothness + opt.disparity_smoothness * smooth / 2 ** s
        if teacher_depth is not None:
            full = F.interpolate(disps[s], (HEIGHT, WIDTH), mode="bilinear", align_corners=False)
            student = 1 / (lo + (hi - lo) * full)
            mask = mv_mask[s * B:(s + 1) * B]
            distill = distill + 0.1 * ((student - teacher_depth[s]).abs() * mask).mean()
    terms = {"photometric": photometric / 4, "smoothness": smoothness / 4}
    if teacher_depth is not None:
        terms["distillation"] = distill / 4
    return terms


@pytest.mark.parametrize("extra", [
    [], ["--disable_automasking"], ["--avg_reprojection"], ["--no_ssim"], ["--v1_multiscale"],
])
def test_loss_terms_match_an_independent_formulation(extra):
    opt = _opt(*extra)
    torch.manual_seed(0)
    model = SRDModel(opt).eval()
    disps = _known_disps()
    model.depth = _FixedDepth(disps)
    model.pose = _FixedPose(AXISANGLE, TRANSLATION)
    inputs = _batch()
    teacher = _FixedTeacher(*_teacher_disps())
    with torch.no_grad():
        outputs, terms = model(inputs, teacher)
    # the model used the known pose
    expected_T = _rigid(AXISANGLE, TRANSLATION).float()
    assert torch.allclose(outputs[("cam_T_cam", 0, 1)][0], expected_T, atol=1e-6)
    lo, hi = 1 / opt.max_depth, 1 / opt.min_depth
    t_disp = teacher(torch.zeros(2 * B, 3, HEIGHT, WIDTH))
    teacher_depth = [1 / (lo + (hi - lo) * F.interpolate(t_disp[("disp", s)][:B], (HEIGHT, WIDTH),
                                                         mode="bilinear", align_corners=False))
                     for s in range(4)]
    mv_mask = outputs["mv_mask"]
    assert 0.2 < float(mv_mask.mean()) < 1.0  # the check keeps most, not all, teacher pixels
    expected = _independent_terms(opt, inputs, disps, teacher_depth, mv_mask)
    assert set(terms) == set(expected)
    for name in expected:
        # 2e-5: the auto-masking tie-break adds noise of std 1e-5 to the identity losses
        assert torch.allclose(terms[name], expected[name].float(), rtol=2e-4, atol=2e-6), (
            name, float(terms[name]), float(expected[name]))


# ----------------------------------------------------------------------------------- pose ATE
def test_pose_evaluation_reports_the_ate_of_a_known_trajectory(tmp_path, monkeypatch, capsys):
    """Ground truth drives straight ahead 1 m per frame; the 'network' drives 1 m ahead and 0.75 m
    sideways per frame. After the first-frame and least-squares scale alignment, the error of the
    i-th position of a snippet is i * sin(angle) = 0.6 i (sin of the angle between (0, 0, 1) and
    (0.75, 0, 1) is 0.75 / 1.25), so a snippet of M positions has ATE 0.6 sqrt(sum i^2) / M."""
    n = 7
    root = tmp_path / "data"
    for i in range(n):
        H.random_image(str(root / "sequences" / "09" / "image_2" / f"{i:06d}.jpg"), 96, 32, i)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 2, 3] = np.arange(n)
    (root / "poses").mkdir()
    np.savetxt(root / "poses" / "09.txt", poses[:, :3, :].reshape(-1, 12))
    splits = tmp_path / "splits"
    (splits / "odom").mkdir(parents=True)
    (splits / "odom" / "test_files_09.txt").write_text("".join(f"9 {i} l\n" for i in range(n - 1)))
    weights = tmp_path / "weights"
    weights.mkdir()

    pred = np.tile(np.eye(4), (n - 1, 1, 1))
    pred[:, :3, 3] = [0.75, 0.0, -1.0]  # gt local poses are (0, 0, -1): points move back
    served = []

    def fake_setup(opt, folder, device, explicit=None):
        def relative_pose(images0, images1):
            k = len(served)
            served.extend(range(images0.shape[0]))
            return torch.from_numpy(pred[k:k + images0.shape[0]])
        return relative_pose, ModelSpec(height=32, width=96)

    monkeypatch.setattr(evaluate_pose, "pose_setup", fake_setup)
    record = evaluate_pose.main(["--data_path", str(root), "--eval_split", "odom_9",
                                 "--load_weights_folder", str(weights), "--num_workers", "0",
                                 "--no_progress", "--no_cuda", "--weights_init", "scratch"],
                                splits_dir=str(splits))
    lengths = [5, 5, 5, 4, 3, 2]  # snippets of up to 5 positions from each of the 6 frame pairs
    ates = [0.6 * math.sqrt(sum(i * i for i in range(m))) / m for m in lengths]
    assert len(served) == n - 1
    assert record["num_snippets"] == 6
    assert record["ate_mean"] == pytest.approx(np.mean(ates), abs=1e-9)
    assert record["ate_std"] == pytest.approx(np.std(ates), abs=1e-9)
    assert f"Trajectory error: {np.mean(ates):0.3f}" in capsys.readouterr().out
