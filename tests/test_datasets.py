"""KITTI file utilities and the batch-dict contract of the KITTI datasets, on hand-made files and on
a tiny synthetic scene written in KITTI's formats."""

import argparse
import os
import random

import numpy as np
import PIL.Image
import pytest
import torch
from torch.utils.data import DataLoader

import synthetic_scene as synthetic_kitti
from datasets import (KITTI_AVERAGE_K, KITTIDepthDataset, KITTIOdomDataset, KITTIRAWDataset,
                      build_dataset, check_data_path)
from datasets.kitti_utils import (generate_depth_map, load_velodyne_points,
                                  project_velodyne_to_depth, read_calib_file,
                                  read_odometry_poses, sub2ind)
from datasets.mono_dataset import (NO_AUGMENTATION, Augmentation, ColorJitterParams,
                                   apply_color_jitter, image_to_tensor)
from utils import CLIError

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

DATE = "2011_09_26"
DRIVE = f"{DATE}/{DATE}_drive_9001_sync"
FRAME_IDS = [0, -1, 1, "s"]
H, W = 192, 640


def raw_dataset(root, lines=(f"{DRIVE} 1 l",), is_train=False, frame_ids=FRAME_IDS, **kwargs):
    return KITTIRAWDataset(root, list(lines), H, W, frame_ids, 4, is_train=is_train, **kwargs)


def color_keys(sample):
    return [k for k in sample if isinstance(k, tuple) and k[0] in ("color", "color_aug")]


# --------------------------------------------------------------------------------------------
# kitti_utils on hand-made files
# --------------------------------------------------------------------------------------------

def write_tiny_calib(folder, cx=3.3, cy=2.2, f=4.0, T_z=-0.25):
    """8×6 image, f = 4 px, velodyne = camera axes swapped, 0.25 m behind the camera."""
    folder.mkdir(parents=True, exist_ok=True)
    P = f"{f} 0 {cx} 0 0 {f} {cy} 0 0 0 1 0"
    (folder / "calib_cam_to_cam.txt").write_text(
        "calib_time: 09-Jan-2012 13:57:47\ncorner_dist: 9.950000e-02\n"
        "S_rect_02: 8.000000e+00 6.000000e+00\nR_rect_00: 1 0 0 0 1 0 0 0 1\n"
        f"P_rect_02: {P}\nP_rect_03: {P}\n")
    (folder / "calib_velo_to_cam.txt").write_text(
        f"calib_time: 15-Mar-2012 11:37:16\nR: 0 -1 0 0 0 -1 1 0 0\nT: 0 0 {T_z}\n")
    return str(folder)


def write_velodyne(path, xyz):
    pts = np.concatenate([np.asarray(xyz, np.float32), np.full((len(xyz), 1), 0.3, np.float32)], 1)
    pts.tofile(path)
    return str(path)


def test_read_calib_file_parses_numbers_and_skips_text(tmp_path):
    calib = read_calib_file(write_tiny_calib(tmp_path) + "/calib_cam_to_cam.txt")
    assert "calib_time" not in calib
    assert calib["corner_dist"].tolist() == [0.0995]
    np.testing.assert_array_equal(calib["S_rect_02"], [8, 6])
    assert calib["P_rect_02"].reshape(3, 4)[0, 2] == 3.3
    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        read_calib_file(str(tmp_path / "nothere.txt"))


def test_load_velodyne_points_homogeneous_and_size_check(tmp_path):
    path = write_velodyne(tmp_path / "a.bin", [[1, 2, 3], [4, 5, 6]])
    pts = load_velodyne_points(path)
    assert pts.dtype == np.float32 and pts.shape == (2, 4)
    np.testing.assert_array_equal(pts, [[1, 2, 3, 1], [4, 5, 6, 1]])
    np.zeros(7, np.float32).tofile(tmp_path / "bad.bin")
    with pytest.raises(ValueError, match="bad.bin"):
        load_velodyne_points(str(tmp_path / "bad.bin"))


def test_generate_depth_map_hand_computed(tmp_path):
    calib_dir = write_tiny_calib(tmp_path / DATE)
    velo = write_velodyne(tmp_path / "v.bin", [
        [10.25, 0, 0],      # cam (0, 0, 10):   u = 3.3, v = 2.2 → pixel (row 1, col 2)
        [5.25, -1.25, 0],   # cam (1.25, 0, 5): u = 4.3, v = 2.2 → pixel (1, 3)
        [-3.0, 0, 0],       # behind the Velodyne: dropped
        [10.25, -30, 0],    # u = 15.3: outside the 8-px-wide image
    ])
    depth = generate_depth_map(calib_dir, velo, cam=2, vel_depth=False)
    expected = np.zeros((6, 8), np.float32)
    expected[1, 2] = 10.0
    expected[1, 3] = 5.0
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, expected, atol=1e-6)
    vel = generate_depth_map(calib_dir, velo, cam=2, vel_depth=True)
    assert vel[1, 2] == pytest.approx(10.25) and vel[1, 3] == pytest.approx(5.25)


def test_generate_depth_map_duplicates_closest_and_last(tmp_path):
    calib_dir = write_tiny_calib(tmp_path / DATE)
    velo = write_velodyne(tmp_path / "v.bin", [
        [10.25, 0, 0],      # pixel (1, 2), z = 10 ...
        [20.25, 0, 0],      # ... then z = 20 at the same pixel (far after near)
        [20.25, 0, -5],     # cam (0, 5, 20): v = 3.2 → pixel (2, 2), z = 20 ...
        [10.25, 0, -2.5],   # ... then z = 10 at the same pixel (near after far)
    ])
    last = generate_depth_map(calib_dir, velo, duplicates="last")
    assert last[1, 2] == pytest.approx(20.0) and last[2, 2] == pytest.approx(10.0)
    closest = generate_depth_map(calib_dir, velo)  # the published rule is the default
    assert closest[1, 2] == pytest.approx(10.0) and closest[2, 2] == pytest.approx(10.0)
    assert np.count_nonzero(last) == np.count_nonzero(closest) == 2
    with pytest.raises(ValueError, match="duplicates"):
        generate_depth_map(calib_dir, velo, duplicates="first")


def test_published_duplicate_key_pairs_row_end_with_next_row_start():
    # sub2ind of the published code: (row, W-1) and (row+1, 0) share a key
    assert sub2ind((6, 8), np.array(1), np.array(7)) == sub2ind((6, 8), np.array(2), np.array(0))
    assert sub2ind((6, 8), np.array(1), np.array(6)) != sub2ind((6, 8), np.array(2), np.array(0))
    # so "closest" writes the smaller depth at the pixel of the first point of such a pair
    P = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]])  # (x, y, z) = (u·d, v·d, d)
    pts = np.array([[8 * 30, 2 * 30, 30, 1],   # u = 8, v = 2 → pixel (1, 7), depth 30, first
                    [1 * 5, 3 * 5, 5, 1]],     # u = 1, v = 3 → pixel (2, 0), depth 5
                   np.float32)
    closest = project_velodyne_to_depth(pts, P, (6, 8))
    assert closest[1, 7] == pytest.approx(5.0) and closest[2, 0] == pytest.approx(5.0)
    last = project_velodyne_to_depth(pts, P, (6, 8), duplicates="last")
    assert last[1, 7] == pytest.approx(30.0) and last[2, 0] == pytest.approx(5.0)


def test_read_odometry_poses(tmp_path):
    path = tmp_path / "09.txt"
    path.write_text("1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0 0.5 0 1 0 -1 0 0 1 2\n")
    poses = read_odometry_poses(str(path))
    assert poses.shape == (2, 4, 4)
    np.testing.assert_array_equal(poses[1, :, 3], [0.5, -1, 2, 1])
    np.testing.assert_array_equal(poses[1, 3], [0, 0, 0, 1])
    path.write_text("1 0 0\n")
    with pytest.raises(ValueError, match="line 1"):
        read_odometry_poses(str(path))


# --------------------------------------------------------------------------------------------
# datasets on the synthetic scene
# --------------------------------------------------------------------------------------------

def test_velodyne_depth_matches_rendered_depth(scene):
    """generate_depth_map (camera z) vs the renderer's depth, with the published one-pixel
    up-left shift of round(u) - 1."""
    velo = os.path.join(scene, DRIVE, "velodyne_points", "data", "0000000001.bin")
    depth = generate_depth_map(os.path.join(scene, DATE), velo, cam=2)
    _, true_depth = synthetic_kitti.render_frame(os.path.join(scene, DRIVE), 1, cam=2)
    valid = depth[:-1, :-1] > 0
    truth = true_depth[1:, 1:][valid]
    assert valid.sum() > 5000 and np.isfinite(truth).all()
    rel = np.abs(depth[:-1, :-1][valid] - truth) / truth
    assert np.median(rel) < 0.01


@pytest.mark.parametrize("is_train", [False, True])
def test_batch_dict_keys_shapes_and_ranges(scene, is_train):
    ds = raw_dataset(scene, is_train=is_train)
    assert ds.load_depth == (not is_train)  # default: ground truth only for evaluation
    sample = ds[0]
    expected = {(kind, i, s) for kind in ("color", "color_aug") for i in FRAME_IDS for s in range(4)}
    expected |= {(kind, s) for kind in ("K", "inv_K") for s in range(4)} | {"stereo_T"}
    if not is_train:
        expected.add("depth_gt")
    assert set(sample) == expected
    for key in color_keys(sample):
        s = key[2]
        assert sample[key].shape == (3, H // 2 ** s, W // 2 ** s)
        assert sample[key].dtype == torch.float32
        assert 0.0 <= sample[key].min() and sample[key].max() <= 1.0
    for s in range(4):
        assert sample[("K", s)].shape == (4, 4) and sample[("K", s)].dtype == torch.float32
        torch.testing.assert_close(sample[("K", s)] @ sample[("inv_K", s)], torch.eye(4))
    assert sample["stereo_T"].shape == (4, 4) and sample["stereo_T"].dtype == torch.float32
    if not is_train:
        assert sample["depth_gt"].shape == (1, 375, 1242)
        assert sample["depth_gt"].dtype == torch.float32
        assert (sample["depth_gt"] > 0).sum() > 5000


def test_dataloader_adds_batch_dim(scene):
    ds = raw_dataset(scene, lines=[f"{DRIVE} 1 l", f"{DRIVE} 1 r"], frame_ids=[0, -1], load_depth=False)
    batch = next(iter(DataLoader(ds, batch_size=2, num_workers=0)))
    assert batch[("color", -1, 3)].shape == (2, 3, H // 8, W // 8)
    assert batch[("K", 2)].shape == (2, 4, 4)


def test_K_matches_calibration_at_every_scale(scene):
    calib = read_calib_file(os.path.join(scene, DATE, "calib_cam_to_cam.txt"))
    P = calib["P_rect_02"].reshape(3, 4)
    width, height = calib["S_rect_02"]
    for use_calib_file in (False, True):
        sample = raw_dataset(scene, use_calib_file=use_calib_file, load_depth=False).get_sample(
            0, NO_AUGMENTATION)
        for s in range(4):
            w, h = W // 2 ** s, H // 2 ** s
            expected = np.eye(4)
            expected[0, :3] = P[0, :3] / width * w
            expected[1, :3] = P[1, :3] / height * h
            np.testing.assert_allclose(sample[("K", s)].numpy(), expected, rtol=1e-5)
    assert np.allclose(KITTI_AVERAGE_K[:2, :3] * [[width], [height]], P[:2, :3])


def test_use_calib_file_reads_the_drive_calibration_and_flips_cx(scene, tmp_path):
    root = tmp_path / "kitti"
    (root / DATE).mkdir(parents=True)
    os.symlink(os.path.join(scene, DRIVE), root / DRIVE)
    text = open(os.path.join(scene, DATE, "calib_cam_to_cam.txt")).read()
    P = read_calib_file(os.path.join(scene, DATE, "calib_cam_to_cam.txt"))["P_rect_02"]
    P_off = P.copy()
    P_off[2] = 600.0  # cx: a non-centred principal point
    line = next(t for t in text.splitlines() if t.startswith("P_rect_02:"))
    (root / DATE / "calib_cam_to_cam.txt").write_text(
        text.replace(line, "P_rect_02: " + " ".join(f"{v:.6e}" for v in P_off)))
    ds = raw_dataset(str(root), use_calib_file=True, frame_ids=[0], load_depth=False)
    plain = ds.get_sample(0, NO_AUGMENTATION)
    flipped = ds.get_sample(0, Augmentation(do_flip=True, color=None))
    for s in range(4):
        w = W // 2 ** s
        assert plain[("K", s)][0, 2].item() == pytest.approx(600.0 / 1242 * w, rel=1e-5)
        assert flipped[("K", s)][0, 2].item() == pytest.approx((1 - 600.0 / 1242) * w, rel=1e-5)
    fixed = raw_dataset(str(root), frame_ids=[0], load_depth=False).get_sample(0, NO_AUGMENTATION)
    assert fixed[("K", 0)][0, 2].item() == pytest.approx(0.5 * W)


def assert_jitter_relation(sample, params):
    """color_aug == jitter(color, params) for every frame and scale."""
    for key in color_keys(sample):
        if key[0] == "color":
            expected = apply_color_jitter(sample[key], params)
            torch.testing.assert_close(sample[("color_aug",) + key[1:]], expected, atol=1e-6, rtol=0)


def test_color_jitter_is_the_same_for_every_frame_and_scale(scene):
    ds = raw_dataset(scene, is_train=True)
    params = ColorJitterParams(brightness=1.13, contrast=0.86, saturation=1.17, hue=0.07)
    sample = ds.get_sample(0, Augmentation(do_flip=False, color=params))
    assert_jitter_relation(sample, params)
    other = ColorJitterParams(brightness=0.9, contrast=1.1, saturation=0.85, hue=-0.05)
    diff = (sample[("color_aug", 1, 2)] - apply_color_jitter(sample[("color", 1, 2)], other)).abs()
    assert diff.mean() > 0.01  # the check can tell different parameters apart


def test_brightness_ratio_is_constant_across_frames_and_scales(scene):
    ds = raw_dataset(scene, is_train=True)
    params = ColorJitterParams(brightness=1.15, contrast=1.0, saturation=1.0, hue=0.0)
    sample = ds.get_sample(0, Augmentation(do_flip=False, color=params))
    for i in FRAME_IDS:
        for s in range(4):
            color, aug = sample[("color", i, s)], sample[("color_aug", i, s)]
            ok = (color > 0.05) & (color * 1.15 < 0.99)
            ratio = aug[ok] / color[ok]
            assert ok.sum() > 100
            assert ratio.min().item() == pytest.approx(1.15, abs=1e-4)
            assert ratio.max().item() == pytest.approx(1.15, abs=1e-4)


def test_getitem_draws_one_augmentation_per_sample(scene):
    ds = raw_dataset(scene, is_train=True, frame_ids=[0, -1, 1], load_depth=False)
    seen = set()
    for seed in range(12):
        random.seed(seed)
        sample = ds[0]
        random.seed(seed)
        aug = ds.draw_augmentation()
        reference = ds.get_sample(0, Augmentation(aug.do_flip, None))
        for key in color_keys(reference):
            if key[0] == "color":
                torch.testing.assert_close(sample[key], reference[key])
        if aug.color is None:
            assert all(sample[("color_aug",) + k[1:]] is sample[k] for k in color_keys(sample)
                       if k[0] == "color")
        else:
            assert_jitter_relation(sample, aug.color)
        seen.add((aug.do_flip, aug.color is not None))
    assert len(seen) == 4  # every combination of flip / colour augmentation was drawn


def test_no_augmentation_when_not_training(scene):
    ds = raw_dataset(scene, is_train=False, frame_ids=[0], load_depth=False)
    random.seed(0)
    assert all(ds.draw_augmentation() == NO_AUGMENTATION for _ in range(10))
    sample = ds[0]
    assert sample[("color_aug", 0, 0)] is sample[("color", 0, 0)]


def test_flip_twice_is_identity(scene):
    ds = raw_dataset(scene, is_train=True, load_depth=True)
    plain = ds.get_sample(0, Augmentation(do_flip=False, color=None))
    flipped = ds.get_sample(0, Augmentation(do_flip=True, color=None))
    for key in color_keys(plain) + ["depth_gt"]:
        assert not torch.equal(flipped[key], plain[key])
        torch.testing.assert_close(torch.flip(flipped[key], dims=[-1]), plain[key], atol=1e-5, rtol=0)
    for s in range(4):  # the centred KITTI-average K is unchanged by a flip
        torch.testing.assert_close(flipped[("K", s)], plain[("K", s)])
    assert flipped["stereo_T"][0, 3] == -plain["stereo_T"][0, 3]


@pytest.mark.parametrize("side,do_flip,expected", [("l", False, -0.1), ("l", True, 0.1),
                                                   ("r", False, 0.1), ("r", True, -0.1)])
def test_stereo_T_sign(scene, side, do_flip, expected):
    ds = raw_dataset(scene, lines=[f"{DRIVE} 1 {side}"], frame_ids=[0, "s"], load_depth=False)
    T = ds.get_sample(0, Augmentation(do_flip, None))["stereo_T"]
    expected_T = torch.eye(4)
    expected_T[0, 3] = expected
    torch.testing.assert_close(T, expected_T)


def test_stereo_partner_is_the_other_camera(scene):
    ds = raw_dataset(scene, lines=[f"{DRIVE} 1 l", f"{DRIVE} 1 r"], frame_ids=[0, "s"],
                     load_depth=False)
    left, right = ds[0], ds[1]
    torch.testing.assert_close(left[("color", "s", 0)], right[("color", 0, 0)])
    torch.testing.assert_close(right[("color", "s", 0)], left[("color", 0, 0)])
    assert (left[("color", 0, 0)] - right[("color", 0, 0)]).abs().mean() > 0.01


def test_jpg_and_png_both_load(scene):
    rgb, _ = synthetic_kitti.render_frame(os.path.join(scene, DRIVE), 1, cam=2)
    truth = image_to_tensor(rgb, W, H)
    png = raw_dataset(scene, img_ext=".png", frame_ids=[0], load_depth=False)[0][("color", 0, 0)]
    jpg = raw_dataset(scene, img_ext=".jpg", frame_ids=[0], load_depth=False)[0][("color", 0, 0)]
    torch.testing.assert_close(png, truth)  # lossless
    assert 0 < (jpg - truth).abs().mean() < 0.02  # lossy but the same picture


def test_missing_frame_names_file_and_split_line(scene):
    ds = raw_dataset(scene, lines=[f"{DRIVE} 1 l", f"{DRIVE} 7 l"], frame_ids=[0])
    with pytest.raises(FileNotFoundError) as info:
        ds[1]
    message = str(info.value)
    assert os.path.join(DRIVE, "image_02", "data", "0000000007.jpg") in message
    assert f"split line 2: '{DRIVE} 7 l'" in message
    neighbour = raw_dataset(scene, lines=[f"{DRIVE} 2 l"], frame_ids=[0, 1], load_depth=False)
    with pytest.raises(FileNotFoundError, match=r"0000000003\.jpg.*split line 1"):
        neighbour[0]


def test_bad_split_line_is_named(scene):
    with pytest.raises(ValueError, match=r"split line 1 .*frame index .one. is not an integer"):
        raw_dataset(scene, lines=[f"{DRIVE} one l"], frame_ids=[0], load_depth=False)[0]
    with pytest.raises(ValueError, match=r"side l\|r"):
        raw_dataset(scene, lines=[f"{DRIVE} 1 x"], frame_ids=[0], load_depth=False)[0]


def test_corrupt_image_raises_value_error_naming_file(scene, tmp_path):
    image_dir = tmp_path / DRIVE / "image_02" / "data"
    image_dir.mkdir(parents=True)
    (image_dir / "0000000000.jpg").write_bytes(b"this is not a jpeg")
    good = open(os.path.join(scene, DRIVE, "image_02", "data", "0000000001.jpg"), "rb").read()
    (image_dir / "0000000001.jpg").write_bytes(good[: len(good) // 3])  # truncated download
    lines = [f"{DRIVE} 0 l", f"{DRIVE} 1 l"]
    ds = raw_dataset(str(tmp_path), lines=lines, frame_ids=[0], load_depth=False)
    for index in range(2):
        with pytest.raises(ValueError, match=rf"{index:010d}\.jpg is corrupt.*split line {index + 1}"):
            ds[index]


def test_depth_dataset_reads_groundtruth_png(scene):
    ds = KITTIDepthDataset(scene, [f"{DRIVE} 1 l"], H, W, [0], 4)
    assert ds.load_depth  # ground truth exists → loaded for evaluation
    png = os.path.join(scene, DRIVE, "proj_depth", "groundtruth", "image_02", "0000000001.png")
    expected = np.array(PIL.Image.open(png)).astype(np.float32) / 256
    sample = ds.get_sample(0, NO_AUGMENTATION)
    np.testing.assert_array_equal(sample["depth_gt"][0].numpy(), expected)
    flipped = ds.get_sample(0, Augmentation(True, None))
    np.testing.assert_array_equal(flipped["depth_gt"][0].numpy(), expected[:, ::-1])


def test_odometry_paths_and_calibration(tmp_path):
    seq = tmp_path / "sequences" / "09"
    (seq / "image_2").mkdir(parents=True)
    PIL.Image.new("RGB", (100, 50), (10, 20, 30)).save(seq / "image_2" / "000000.jpg")
    (seq / "calib.txt").write_text("P0: 1 0 0 0 0 1 0 0 0 0 1 0\n"
                                   "P2: 70 0 40 5 0 60 30 0 0 0 1 0\n")
    ds = KITTIOdomDataset(str(tmp_path), ["9 0 l"], 32, 64, [0], 1, use_calib_file=True)
    assert not ds.load_depth
    assert ds.get_image_path("9", 12, "r") == os.path.join(str(tmp_path), "sequences", "09",
                                                          "image_3", "000012.jpg")
    K = ds[0][("K", 0)].numpy()
    np.testing.assert_allclose(K[:2, :3], [[70 / 100 * 64, 0, 40 / 100 * 64], [0, 60 / 50 * 32, 30 / 50 * 32]],
                               rtol=1e-6)
    np.testing.assert_allclose(ds[0][("color", 0, 0)][:, 0, 0].numpy(), [10 / 255, 20 / 255, 30 / 255],
                               atol=2 / 255)


def test_check_data_path_and_build_dataset(scene, tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(CLIError, match=r"--data_path .*nope does not exist: download KITTI .*"
                                       r"python -m synthetic_scene --out .*nope"):
        check_data_path(missing)
    opt = argparse.Namespace(dataset="kitti", data_path=scene, height=64, width=192, png=True,
                             use_calib_file=False, frame_ids=[0, -1, 1])
    split = tmp_path / "val_files.txt"
    split.write_text(f"{DRIVE} 1 l\n\n")
    ds = build_dataset(opt, str(split), is_train=False, frame_ids=[0], num_scales=1)
    assert isinstance(ds, KITTIRAWDataset) and len(ds) == 1 and ds.img_ext == ".png"
    assert ds[0][("color", 0, 0)].shape == (3, 64, 192)
    with pytest.raises(CLIError, match="--data_path"):
        build_dataset(argparse.Namespace(**{**vars(opt), "data_path": missing}), [], False)
    with pytest.raises(CLIError, match="--dataset nuscenes"):
        build_dataset(argparse.Namespace(**{**vars(opt), "dataset": "nuscenes"}), [], False)
