"""Unit tests of the evaluation library: masks, metrics, scaling, post-processing, writers, Make3D, ATE, tables."""

import json
import math
import os
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eval_helpers  # noqa: E402,F401  (puts the repo on sys.path)
import evaluation as E  # noqa: E402


# ------------------------------------------------------------------------------------------------
# masks
# ------------------------------------------------------------------------------------------------
def test_garg_crop_of_kitti_size_is_the_published_box():
    mask = E.garg_crop_mask(375, 1242)
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    # int(0.40810811*375)=153, int(0.99189189*375)=371, int(0.03594771*1242)=44, int(0.96405229*1242)=1197
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (153, 371, 44, 1197)
    assert mask.sum() == (371 - 153) * (1197 - 44)


def test_eval_mask_eigen_style_crops_and_caps_benchmark_keeps_all_positive():
    gt = np.full((375, 1242), 10.0)
    gt[300, 600] = 80.0   # at the cap: excluded
    gt[300, 601] = 1e-3   # at the floor: excluded
    gt[300, 602] = 0.0
    gt[0, 0] = 5.0        # outside the crop
    for split in ("eigen", "synthetic"):
        mask = E.eval_mask(gt, split)
        assert not mask[300, 600] and not mask[300, 601] and not mask[300, 602] and not mask[0, 0]
        assert mask.sum() == E.garg_crop_mask(375, 1242).sum() - 3
    bench = E.eval_mask(gt, "eigen_benchmark")
    assert bench[0, 0] and bench[300, 600] and bench[300, 601] and not bench[300, 602]
    assert bench.sum() == gt.size - 1


# ------------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------------
def test_depth_errors_hand_computed():
    gt = np.array([1.0, 2.0, 4.0])
    pred = np.array([2.0, 2.0, 2.0])
    e = E.depth_errors(gt, pred)
    assert e["abs_rel"] == pytest.approx((1 / 1 + 0 + 2 / 4) / 3)
    assert e["sq_rel"] == pytest.approx((1 / 1 + 0 + 4 / 4) / 3)
    assert e["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert e["rmse_log"] == pytest.approx(math.log(2) * math.sqrt(2 / 3))
    # ratios max(gt/pred, pred/gt) = 2, 1, 2: only the middle pixel is under 1.25, 1.5625, 1.953
    assert (e["a1"], e["a2"], e["a3"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert list(e) == list(E.DEPTH_METRIC_NAMES)


def _gts(n=3, shape=(40, 120), lo=1.0, hi=39.0, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(lo, hi, shape) for _ in range(n)]


def test_ground_truth_against_itself_is_perfect():
    gts = _gts()
    disps = np.stack([1.0 / g for g in gts])
    for median in (True, False):
        out = E.evaluate_disparities(disps, gts, "synthetic", median_scaling=median)
        m = out["metrics"]
        assert m["abs_rel"] == pytest.approx(0, abs=1e-6)
        assert m["rmse"] == pytest.approx(0, abs=1e-4)
        assert (m["a1"], m["a2"], m["a3"]) == (1.0, 1.0, 1.0)
        assert out["num_images"] == 3


def test_constant_scale_error_with_and_without_median_scaling():
    gts = _gts(shape=(30, 90))  # depths < 40 m, so 2*gt stays under the 80 m clip
    disps = np.stack([1.0 / (2.0 * g) for g in gts])  # predicted depth = 2 * gt everywhere
    scaled = E.evaluate_disparities(disps, gts, "eigen_benchmark", median_scaling=True)
    assert scaled["metrics"]["abs_rel"] == pytest.approx(0, abs=1e-6)
    assert scaled["metrics"]["a1"] == 1.0
    assert scaled["ratios"] == pytest.approx([0.5, 0.5, 0.5], rel=1e-6)

    raw = E.evaluate_disparities(disps, gts, "eigen_benchmark", median_scaling=False)["metrics"]
    # |gt - 2gt| / gt = 1; (gt)^2 / gt = gt; rmse = sqrt(mean gt^2); |log 2gt - log gt| = log 2
    assert raw["abs_rel"] == pytest.approx(1.0, rel=1e-6)
    assert raw["sq_rel"] == pytest.approx(np.mean([g.mean() for g in gts]), rel=1e-5)
    assert raw["rmse"] == pytest.approx(np.mean([np.sqrt((g ** 2).mean()) for g in gts]), rel=1e-5)
    assert raw["rmse_log"] == pytest.approx(math.log(2), rel=1e-5)
    assert (raw["a1"], raw["a2"], raw["a3"]) == (0.0, 0.0, 0.0)  # ratio 2 > 1.25^3 = 1.953

    # the stereo path: depth x scale_factor, no median scaling
    stereo = E.evaluate_disparities(disps, gts, "eigen_benchmark", median_scaling=False,
                                    scale_factor=0.5)["metrics"]
    assert stereo["abs_rel"] == pytest.approx(0, abs=1e-6)


def test_predictions_are_clipped_to_80m_and_resized_to_gt():
    gt = np.full((20, 60), 70.0)
    disp = np.full((5, 15), 1.0 / 200.0)  # 200 m, at a lower resolution
    m = E.evaluate_disparities(disp[None], [gt], "eigen_benchmark", median_scaling=False)["metrics"]
    assert m["abs_rel"] == pytest.approx(10 / 70, rel=1e-6)  # clipped to 80 m


def test_length_mismatch_and_empty_mask_raise():
    with pytest.raises(ValueError, match="2 predictions but 1"):
        E.evaluate_disparities(np.ones((2, 4, 4)), [np.ones((4, 4))], "eigen")
    with pytest.raises(ValueError, match="no valid pixel"):
        E.evaluate_disparities(np.ones((1, 4, 4)), [np.zeros((4, 4))], "eigen_benchmark")


def test_ratio_stats_like_monodepth2():
    med, std = E.ratio_stats([1.0, 2.0, 3.0])
    assert med == 2.0
    assert std == pytest.approx(np.std([0.5, 1.0, 1.5]))


# ------------------------------------------------------------------------------------------------
# post-processing
# ------------------------------------------------------------------------------------------------
def test_post_processing_of_symmetric_prediction_is_identity():
    rng = np.random.default_rng(1)
    half = rng.random((2, 7, 10))
    disp = np.concatenate([half, half[:, :, ::-1]], axis=2)  # left-right symmetric, [2,7,20]
    np.testing.assert_allclose(E.batch_post_process_disparity(disp, disp[:, :, ::-1].copy()), disp,
                               atol=1e-12)


def test_post_processing_ramps():
    w = 101
    left = np.full((1, 3, w), 1.0)
    right = np.full((1, 3, w), 3.0)
    out = E.batch_post_process_disparity(left, right)
    assert out[0, 0, 0] == pytest.approx(3.0)        # left border: the mirrored prediction
    assert out[0, 0, -1] == pytest.approx(1.0)       # right border: the image's own prediction
    assert out[0, 0, 50] == pytest.approx(2.0)       # middle: the mean
    x = np.linspace(0, 1, w)
    l_mask = 1 - np.clip(20 * (x - 0.05), 0, 1)
    np.testing.assert_allclose(out[0, 0], l_mask[::-1] * 1 + l_mask * 3 + (1 - l_mask - l_mask[::-1]) * 2)


class _FirstChannel(nn.Module):
    """A stand-in depth 'decoder' whose disparity is the image's red channel."""

    def forward(self, features):
        return {("disp", 0): features[:, :1]}


class _FixedRamp(nn.Module):
    """A 'decoder' that ignores its input and predicts a left-to-right ramp (not mirror-equivariant)."""

    def forward(self, features):
        b, _, h, w = features.shape
        return {("disp", 0): torch.linspace(0.1, 0.9, w).expand(b, 1, h, w)}


def test_predict_disparity_post_process_keeps_symmetric_and_blends_the_flipped_back_mirror():
    enc, dec = nn.Identity(), _FirstChannel()
    half = torch.rand(1, 3, 8, 6)
    sym = torch.cat([half, half.flip(3)], 3)
    plain = E.predict_disparity(enc, dec, sym, 0.1, 100)
    pp = E.predict_disparity(enc, dec, sym, 0.1, 100, post_process=True)
    assert plain.shape == (1, 8, 12)
    np.testing.assert_allclose(pp, plain, atol=1e-6)
    # scaled disparity of disp_to_depth: 1/100 + (1/0.1 - 1/100) * red
    np.testing.assert_allclose(plain[0], (0.01 + 9.99 * sym[0, 0]).numpy(), rtol=1e-6)

    images = torch.rand(2, 3, 8, 40)
    own = E.predict_disparity(enc, _FixedRamp(), images, 0.1, 100)
    pp = E.predict_disparity(enc, _FixedRamp(), images, 0.1, 100, post_process=True)
    # the mirror's prediction is the same ramp; flipped back it runs right-to-left
    np.testing.assert_allclose(pp, E.batch_post_process_disparity(own, own[:, :, ::-1]), rtol=1e-6)
    assert not np.allclose(pp, own)


# ------------------------------------------------------------------------------------------------
# benchmark writer
# ------------------------------------------------------------------------------------------------
def test_benchmark_writer_writes_16bit_pngs_of_benchmark_size(tmp_path):
    disps = np.stack([np.full((12, 40), 0.54), np.full((12, 40), 0.01)]).astype(np.float32)
    paths = E.write_benchmark_predictions(disps, str(tmp_path / "bench"))
    assert [os.path.basename(p) for p in paths] == ["0000000000.png", "0000000001.png"]
    assert sorted(os.listdir(tmp_path / "bench")) == ["0000000000.png", "0000000001.png"]
    first = cv2.imread(paths[0], cv2.IMREAD_UNCHANGED)
    assert first.dtype == np.uint16 and first.shape == (352, 1216)
    # float32 as the writer computes it (5.4 / a float32 map), on numpy 1.x and 2.x alike
    assert np.all(first == int(np.float32(5.4) / np.float32(0.54) * np.float32(256)))  # 10 m
    second = cv2.imread(paths[1], cv2.IMREAD_UNCHANGED)
    assert np.all(second == 80 * 256)  # 540 m clipped to 80 m


# ------------------------------------------------------------------------------------------------
# Make3D
# ------------------------------------------------------------------------------------------------
def test_make3d_image_crop_is_central_2_to_1():
    image = np.arange(2272)[:, None, None] * np.ones((1, 1704, 3), dtype=np.int64)
    crop = E.make3d_crop_image(image)
    assert crop.shape == (852, 1704, 3)
    assert crop[0, 0, 0] == (2272 - 852) // 2 and crop[-1, 0, 0] == (2272 + 852) // 2 - 1


def test_make3d_mat_crop_cap_and_metrics(tmp_path):
    from scipy.io import savemat
    rng = np.random.default_rng(3)
    grid = np.zeros((55, 305, 4))
    depth = rng.uniform(2.0, 60.0, (55, 305))
    depth[20, :10] = 81.0  # beyond the 70 m cap: ignored
    grid[..., 3] = depth
    path = str(tmp_path / "depth_sph_corr-test.mat")
    savemat(path, {"Position3DGrid": grid})

    loaded = E.load_make3d_depth(path)
    np.testing.assert_array_equal(loaded, depth)
    gt = E.make3d_crop_depth(loaded)
    assert gt.shape == (21, 305)
    np.testing.assert_array_equal(gt, depth[17:38])

    truth = np.where(gt < 70, gt, 1.0)
    wrong_far = np.where(gt < 70, gt, 1000.0)  # only the capped pixels differ
    perfect, ratio = E.evaluate_make3d_depth(1.0 / truth, gt)
    assert ratio == pytest.approx(1.0)
    assert perfect == pytest.approx({"abs_rel": 0, "sq_rel": 0, "rmse": 0, "log10": 0}, abs=1e-5)
    assert E.evaluate_make3d_depth(1.0 / wrong_far, gt)[0] == pytest.approx(perfect, abs=1e-5)

    doubled, ratio = E.evaluate_make3d_depth(1.0 / (2 * truth), gt, median_scaling=False)
    kept = gt[gt < 70]
    assert ratio is None
    assert doubled["abs_rel"] == pytest.approx(1.0, rel=1e-5)
    assert doubled["log10"] == pytest.approx(math.log10(2), rel=1e-5)
    assert doubled["rmse"] == pytest.approx(np.sqrt((kept ** 2).mean()), rel=1e-5)
    rescaled, ratio = E.evaluate_make3d_depth(1.0 / (2 * truth), gt)
    assert ratio == pytest.approx(0.5, rel=1e-6) and rescaled["abs_rel"] < 1e-5


def test_make3d_errors_hand_computed_and_bad_mat(tmp_path):
    e = E.make3d_errors(np.array([1.0, 10.0]), np.array([10.0, 10.0]))
    assert e == pytest.approx({"abs_rel": 4.5, "sq_rel": 40.5, "rmse": math.sqrt(40.5),
                               "log10": 0.5})
    from scipy.io import savemat
    savemat(str(tmp_path / "x.mat"), {"other": np.zeros(3)})
    with pytest.raises(ValueError, match="Position3DGrid"):
        E.load_make3d_depth(str(tmp_path / "x.mat"))
    with pytest.raises(FileNotFoundError, match="missing.mat"):
        E.load_make3d_depth(str(tmp_path / "missing.mat"))


# ------------------------------------------------------------------------------------------------
# ATE
# ------------------------------------------------------------------------------------------------
def test_ate_of_trajectory_against_itself_and_scaled_copy_is_zero():
    rng = np.random.default_rng(0)
    gt = np.cumsum(rng.normal(size=(5, 3)), 0)
    assert E.compute_ate(gt, gt) == pytest.approx(0, abs=1e-12)
    shifted_scaled = (gt - gt[0]) * 0.37 + np.array([5.0, -2.0, 1.0])
    assert E.compute_ate(gt - gt[0], shifted_scaled) == pytest.approx(0, abs=1e-12)


def test_ate_hand_examples():
    # offset aligns the first frames, then the least-squares scale is 2: perfect
    assert E.compute_ate([[0, 0, 0], [2, 0, 0]], [[1, 1, 1], [2, 1, 1]]) == pytest.approx(0)
    # orthogonal prediction: scale 0, error = |gt| = 1 -> sqrt(1) / 2 frames
    assert E.compute_ate([[0, 0, 0], [1, 0, 0]], [[0, 0, 0], [0, 1, 0]]) == pytest.approx(0.5)
    # scale = (1 + 2) / (1 + 2) = 1, one frame off by (-1, 1, 0): sqrt(2) / 3
    gt = [[0, 0, 0], [1, 0, 0], [2, 0, 0]]
    pred = [[0, 0, 0], [1, 0, 0], [1, 1, 0]]
    assert E.compute_ate(gt, pred) == pytest.approx(math.sqrt(2) / 3)


def _translation(t):
    T = np.eye(4)
    T[:3, 3] = t
    return T


def test_local_poses_and_chaining_convention(tmp_path):
    positions = np.array([[0, 0, 0], [0.1, 0, 1], [0.2, 0, 2.1], [0.2, 0.1, 3.0]])
    global_poses = np.stack([_translation(p) for p in positions])
    local = E.local_from_global_poses(global_poses)
    assert local.shape == (3, 4, 4)
    # each local pose maps points of frame i-1 into frame i: for pure translations, -(t_i - t_{i-1})
    np.testing.assert_allclose(local[:, :3, 3], -(positions[1:] - positions[:-1]))
    # chaining them gives the trajectory in Monodepth2's (mirrored) convention
    np.testing.assert_allclose(E.dump_xyz(local), -positions, atol=1e-12)

    path = tmp_path / "09.txt"
    np.savetxt(path, global_poses[:, :3, :].reshape(-1, 12))
    np.testing.assert_allclose(E.read_kitti_poses(str(path)), global_poses)

    ates = E.snippet_ates(local, local, track_length=5)
    assert len(ates) == 3 and max(ates) == pytest.approx(0, abs=1e-12)
    rotated = local.copy()
    rotated[:, :3, 3] *= 3.0  # a scaled trajectory: zero after per-snippet scale alignment
    assert max(E.snippet_ates(rotated, local)) == pytest.approx(0, abs=1e-12)
    noisy = local.copy()
    noisy[1, :3, 3] += [0.5, 0, 0]
    assert max(E.snippet_ates(noisy, local)) > 0.01
    with pytest.raises(ValueError, match="2 predicted relative poses but 3"):
        E.snippet_ates(local[:2], local)


def test_read_kitti_poses_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="poses"):
        E.read_kitti_poses(str(tmp_path / "09.txt"))
    (tmp_path / "bad.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError, match="12 numbers"):
        E.read_kitti_poses(str(tmp_path / "bad.txt"))


# ------------------------------------------------------------------------------------------------
# output
# ------------------------------------------------------------------------------------------------
def test_table_format_is_monodepth2s():
    assert E.format_metrics_header() == ("{:>8} | " * 7).format(*E.DEPTH_METRIC_NAMES)
    row = E.format_metrics_row([0.1154, 0.903, 4.863, 0.193, 0.877, 0.959, 0.981])
    assert row == ("&   0.115  &   0.903  &   4.863  &   0.193  &   0.877  &   0.959  &   0.981  "
                   "\\\\")


def test_json_writer_is_atomic_round_trip(tmp_path):
    path = str(tmp_path / "metrics.json")
    E.write_json_atomic(path, {"a": 1.5, "b": [1, 2]})
    E.write_json_atomic(path, {"a": 2.5})
    assert json.load(open(path)) == {"a": 2.5}
    assert os.listdir(tmp_path) == ["metrics.json"]
