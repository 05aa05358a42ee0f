"""Tests of the synthetic KITTI-format scene generator (the synthetic_scene package).

One small scene (1 drive × 6 frames, jpg + png, odometry sequences of 4 frames) is generated per
module; the checks compare the files with the generator's own truth (``render_frame``) and with
the KITTI readers of ``datasets.kitti_utils``.
"""

import json
import os

import cv2
import numpy as np
import pytest

import synthetic_scene as sk
from datasets.kitti_utils import (generate_depth_map, normalized_intrinsics, read_calib_file,
                                  read_odometry_poses)
from utils import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_FRAMES = 6
ODOM_FRAMES = 4
PARAMS = dict(seed=0, num_drives=1, num_frames=NUM_FRAMES, png=True, odometry=True,
              odom_frames=ODOM_FRAMES, progress=False)
DATE = sk.DEFAULT_DATE
DRIVE = sk.drive_folder(sk.FIRST_DRIVE)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic_kitti")
    result = sk.generate(out, **PARAMS)
    assert not result["skipped"]
    return str(out)


def drive_dir(root):
    return os.path.join(root, *DRIVE.split("/"))


def image_path(root, frame, cam=2, ext=".jpg"):
    return os.path.join(drive_dir(root), f"image_0{cam}", "data", f"{frame:010d}{ext}")


def velo_path(root, frame):
    return os.path.join(drive_dir(root), "velodyne_points", "data", f"{frame:010d}.bin")


def read_rgb(path):
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    assert image is not None, path
    return image[..., ::-1]


def parse_calib(path):
    """Independent minimal reader of a KITTI calibration file (not datasets.kitti_utils)."""
    out = {}
    with open(path) as f:
        for line in f:
            key, value = line.split(":", 1)
            if key != "calib_time":
                out[key] = np.array(value.split(), dtype=np.float64)
    return out


# --- calibration and formats ---------------------------------------------------------------

def test_calibration_is_kitti_average_intrinsics_and_stereo_rig(root):
    date_dir = os.path.join(root, DATE)
    cam_to_cam = read_calib_file(os.path.join(date_dir, "calib_cam_to_cam.txt"))
    expected = np.array([[0.58, 0, 0.5, 0], [0, 1.92, 0.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
                        np.float32)
    for cam in (2, 3):
        np.testing.assert_allclose(normalized_intrinsics(cam_to_cam, cam), expected, atol=1e-7)
    P2 = cam_to_cam["P_rect_02"].reshape(3, 4)
    P3 = cam_to_cam["P_rect_03"].reshape(3, 4)
    assert P2[0, 3] == pytest.approx(0.06 * P2[0, 0])
    assert (P2[0, 3] - P3[0, 3]) / P2[0, 0] == pytest.approx(0.54)
    np.testing.assert_array_equal(cam_to_cam["R_rect_00"].reshape(3, 3), np.eye(3))
    keys = [f"{k}_0{c}" for c in range(4)
            for k in ("S", "K", "D", "R", "T", "S_rect", "R_rect", "P_rect")]
    assert set(keys) <= set(cam_to_cam) and "corner_dist" in cam_to_cam
    velo_to_cam = read_calib_file(os.path.join(date_dir, "calib_velo_to_cam.txt"))
    # Velodyne x forward, y left, z up → camera x right, y down, z forward
    R = velo_to_cam["R"].reshape(3, 3)
    np.testing.assert_array_equal(R @ [1, 0, 0], [0, 0, 1])
    np.testing.assert_array_equal(R @ [0, 1, 0], [-1, 0, 0])
    np.testing.assert_array_equal(R @ [0, 0, 1], [0, -1, 0])
    np.testing.assert_allclose(velo_to_cam["T"], [0, -0.08, -0.27])
    assert {"delta_f", "delta_c"} <= set(velo_to_cam)
    imu_to_velo = read_calib_file(os.path.join(date_dir, "calib_imu_to_velo.txt"))
    assert imu_to_velo["R"].size == 9 and imu_to_velo["T"].size == 3
    with open(os.path.join(date_dir, "calib_cam_to_cam.txt")) as f:
        assert f.readline().startswith("calib_time: ")
        assert "-0.000000e+00" not in f.read()


def jpeg_sampling_factors(path):
    """(h, v) sampling factors of each component from the JPEG's SOF0 header."""
    data = open(path, "rb").read()
    i = data.index(b"\xff\xc0")
    n = data[i + 9]
    return [(data[i + 11 + 3 * k] >> 4, data[i + 11 + 3 * k] & 15) for k in range(n)]


def test_images_are_the_render_jpeg_420_and_lossless_png(root):
    rgb, _ = sk.render_frame(drive_dir(root), 3, cam=2)
    assert rgb.shape == (375, 1242, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(read_rgb(image_path(root, 3, ext=".png")), rgb)
    jpg = read_rgb(image_path(root, 3)).astype(np.float64)
    psnr = 10 * np.log10(255.0 ** 2 / np.mean((jpg - rgb) ** 2))
    assert psnr > 32, psnr
    assert jpeg_sampling_factors(image_path(root, 3)) == [(2, 2), (1, 1), (1, 1)]  # 4:2:0


def test_velodyne_scan_format_and_geometry(root):
    raw = np.fromfile(velo_path(root, 2), dtype=np.float32).reshape(-1, 4)
    assert len(raw) > 60000
    rng_m = np.linalg.norm(raw[:, :3], axis=1)
    assert rng_m.max() <= sk.VELO_MAX_RANGE + 1e-3
    assert 0.0 <= raw[:, 3].min() and raw[:, 3].max() <= 1.0 and raw[:, 3].std() > 0.02
    elevation = np.degrees(np.arcsin(raw[:, 2] / rng_m))
    assert elevation.min() > -24.8 - 0.5 and elevation.max() < 2.0 + 0.5
    # road returns lie on a plane 1.73 m below the sensor (the vehicle pitches by < 0.5°)
    ground = raw[(rng_m < 15) & (raw[:, 2] < -1.5)]
    assert len(ground) > 1000
    assert np.median(ground[:, 2]) == pytest.approx(-1.73, abs=0.05)


def test_velodyne_projection_agrees_with_rendered_depth(root):
    """generate_depth_map (the evaluation protocol) vs. the generator's own depth."""
    date_dir = os.path.join(root, DATE)
    for frame in (0, NUM_FRAMES - 1):
        _, depth = sk.render_frame(drive_dir(root), frame, cam=2)
        gt = generate_depth_map(date_dir, velo_path(root, frame), cam=2, vel_depth=False)
        valid = gt > 0
        assert valid.sum() > 10000
        rel = np.abs(gt[valid] - depth[valid]) / depth[valid]
        assert np.median(rel) < 0.01, np.median(rel)
        # vel_depth=True stores the Velodyne x, which is camera z + 0.27 m on this rig
        gt_vel = generate_depth_map(date_dir, velo_path(root, frame), cam=2, vel_depth=True)
        np.testing.assert_array_equal(gt_vel > 0, valid)
        np.testing.assert_allclose(gt_vel[valid] - gt[valid], 0.27, atol=1e-4)


def test_velodyne_points_project_exactly_onto_rendered_surfaces(root):
    """Independent projection with the calibration files and no protocol pixel shift: each point
    lands on the pixel whose rendered depth is the point's camera z."""
    cam_to_cam = parse_calib(os.path.join(root, DATE, "calib_cam_to_cam.txt"))
    velo_to_cam = parse_calib(os.path.join(root, DATE, "calib_velo_to_cam.txt"))
    T = np.eye(4)
    T[:3, :3] = velo_to_cam["R"].reshape(3, 3)
    T[:3, 3] = velo_to_cam["T"]
    R_rect = np.eye(4)
    R_rect[:3, :3] = cam_to_cam["R_rect_00"].reshape(3, 3)
    P = cam_to_cam["P_rect_02"].reshape(3, 4) @ R_rect @ T
    width, height = cam_to_cam["S_rect_02"].astype(int)
    points = np.fromfile(velo_path(root, 1), dtype=np.float32).reshape(-1, 4).astype(np.float64)
    points = points[points[:, 0] > 0]
    points[:, 3] = 1.0
    uvz = points @ P.T
    u = np.round(uvz[:, 0] / uvz[:, 2]).astype(int)
    v = np.round(uvz[:, 1] / uvz[:, 2]).astype(int)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    _, depth = sk.render_frame(drive_dir(root), 1, cam=2)
    z = uvz[inside, 2]
    rel = np.abs(depth[v[inside], u[inside]] - z) / z
    assert np.median(rel) < 0.002, np.median(rel)
    assert np.percentile(rel, 90) < 0.01


def test_ground_truth_pngs_hold_the_rendered_depth(root):
    path = os.path.join(drive_dir(root), "proj_depth", "groundtruth", "image_02", "0000000002.png")
    gt = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert gt.dtype == np.uint16 and gt.shape == (375, 1242)
    _, depth = sk.render_frame(drive_dir(root), 2, cam=2)
    valid = gt > 0
    assert 0.25 < valid.sum() / np.isfinite(depth).sum() < 0.35
    assert np.all(np.isfinite(depth[valid]))
    np.testing.assert_allclose(gt[valid] / 256.0, depth[valid], atol=0.5 / 256 + 1e-4)


# --- the scene -------------------------------------------------------------------------------

def test_depth_range_and_texture_signal(root):
    rgb, depth = sk.render_frame(drive_dir(root), 0, cam=2)
    finite = depth[np.isfinite(depth)]
    assert finite.min() < 5.0 and finite.max() > 60.0
    sky = ~np.isfinite(depth)
    assert 0.005 < sky.mean() < 0.4 and sky[-100:].sum() == 0  # sky only above the horizon
    small = cv2.resize(rgb, (1242 // 4, 375 // 4), interpolation=cv2.INTER_AREA).astype(np.float32)
    gray = small.mean(axis=2)
    assert gray.std() > 25
    assert np.abs(np.diff(gray, axis=1)).mean() > 4 and np.abs(np.diff(gray, axis=0)).mean() > 4
    # texture everywhere below the horizon: every 31×31 block of the 1/4 image has signal
    lower = gray[gray.shape[0] // 2:]
    for r in range(0, lower.shape[0] - 15, 15):
        for c in range(0, lower.shape[1] - 31, 31):
            assert lower[r:r + 15, c:c + 31].std() > 1.5, (r, c)


def warp_right_into_left(right, depth_left, baseline):
    """Sample the right image at u − fx·B/z (rectified stereo), [H,W,C] float32."""
    h, w = depth_left.shape
    disparity = sk.FX * baseline / np.where(np.isfinite(depth_left), depth_left, 1e9)
    map_x = (np.arange(w)[None, :] - disparity).astype(np.float32)
    map_y = np.repeat(np.arange(h, dtype=np.float32)[:, None], w, axis=1)
    return cv2.remap(right, map_x, map_y, cv2.INTER_LINEAR), map_x


def test_stereo_pair_is_consistent_with_calibration_and_depth(root):
    cam_to_cam = read_calib_file(os.path.join(root, DATE, "calib_cam_to_cam.txt"))
    P2, P3 = cam_to_cam["P_rect_02"], cam_to_cam["P_rect_03"]
    baseline = (P2[3] - P3[3]) / P2[0]
    left = read_rgb(image_path(root, 2, cam=2)).astype(np.float32)
    right = read_rgb(image_path(root, 2, cam=3)).astype(np.float32)
    _, depth_left = sk.render_frame(drive_dir(root), 2, cam=2)
    _, depth_right = sk.render_frame(drive_dir(root), 2, cam=3)
    warped, map_x = warp_right_into_left(right, depth_left, baseline)
    depth_right = np.where(np.isfinite(depth_right), depth_right, 1e4).astype(np.float32)
    depth_seen, _ = warp_right_into_left(depth_right, depth_left, baseline)
    visible = (np.isfinite(depth_left) & (map_x >= 0) & (map_x <= 1241)
               & (np.abs(depth_seen - depth_left) < 0.01 * depth_left))
    assert visible.mean() > 0.8
    error = np.abs(warped - left)[visible].mean()
    wrong, _ = warp_right_into_left(right, depth_left, 0.8 * baseline)
    assert error < 3.0, error
    assert error < 0.4 * np.abs(wrong - left)[visible].mean()


def test_trajectory_and_odometry_poses(root):
    scene = sk.load_scene(drive_dir(root))
    centres = np.array([sk.camera_pose(scene, i, 0)[:3, 3] for i in range(NUM_FRAMES)])
    np.testing.assert_allclose(np.linalg.norm(np.diff(centres, axis=0), axis=1), 0.5, rtol=1e-9)
    np.testing.assert_allclose(centres[:, 1], -sk.CAMERA_HEIGHT)
    for seq in sk.ODOM_SEQUENCES:
        poses = read_odometry_poses(os.path.join(root, "poses", f"{seq:02d}.txt"))
        assert poses.shape == (ODOM_FRAMES, 4, 4)
        np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-12)
        steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
        np.testing.assert_allclose(steps, 0.5, atol=1e-6)
        for T in poses:
            np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-8)
        # KITTI convention: camera 0 (x right, y down, z forward) of frame i in frame 0's camera
        assert poses[-1, 2, 3] > 0.45 * (ODOM_FRAMES - 1) and abs(poses[-1, 1, 3]) < 0.05
        seq_scene = sk.load_scene(os.path.join(root, "sequences", f"{seq:02d}"))
        T0, T2 = sk.camera_pose(seq_scene, 0, 0), sk.camera_pose(seq_scene, 2, 0)
        np.testing.assert_allclose(poses[2], np.linalg.inv(T0) @ T2, atol=1e-8)
        calib = read_calib_file(os.path.join(root, "sequences", f"{seq:02d}", "calib.txt"))
        assert {"P0", "P1", "P2", "P3", "Tr"} <= set(calib)
        np.testing.assert_allclose(calib["P2"], cam_to_cam_p(root, 2), rtol=1e-9)
        image = read_rgb(os.path.join(root, "sequences", f"{seq:02d}", "image_3", "000001.jpg"))
        assert image.shape == (375, 1242, 3)


def cam_to_cam_p(root, cam):
    return read_calib_file(os.path.join(root, DATE, "calib_cam_to_cam.txt"))[f"P_rect_0{cam}"]


# --- determinism, cache, splits -------------------------------------------------------------

def test_same_seed_gives_identical_files_with_any_worker_count(root, tmp_path):
    """A second run (2 worker processes, no png/odometry) rewrites the same bytes."""
    other = str(tmp_path / "again")
    sk.generate(other, **dict(PARAMS, png=False, odometry=False, workers=2))
    compared = 0
    for folder, _, files in os.walk(other):
        for name in files:
            rel = os.path.relpath(os.path.join(folder, name), other)
            if name == sk.COMPLETE_MARKER:
                continue
            compared += 1
            with open(os.path.join(root, rel), "rb") as a:
                with open(os.path.join(other, rel), "rb") as b:
                    assert a.read() == b.read(), rel
    # 2 images, scan, gt, label map per frame; calib; scene; splits
    assert compared == 5 * NUM_FRAMES + 3 + 1 + 3


def test_different_seed_gives_a_different_scene(root):
    scene0 = sk.load_scene(drive_dir(root))
    scene1 = sk.make_scene(1, sk.FIRST_DRIVE, NUM_FRAMES, name=DRIVE)
    assert scene1["boxes"] != scene0["boxes"]
    rgb0, _ = sk.render_frame(scene0, 0)
    rgb1, _ = sk.render_frame(scene1, 0)
    assert np.abs(rgb0.astype(int) - rgb1).mean() > 10
    assert sk.make_scene(0, sk.FIRST_DRIVE, NUM_FRAMES, name=DRIVE) == scene0


def test_cache_marker_skips_identical_parameters(root):
    with open(os.path.join(root, sk.COMPLETE_MARKER)) as f:
        marker = json.load(f)
    assert marker["seed"] == 0 and marker["num_frames"] == NUM_FRAMES and marker["png"] is True
    before = os.path.getmtime(image_path(root, 0))
    assert sk.generate(root, **PARAMS)["skipped"]
    assert os.path.getmtime(image_path(root, 0)) == before


def test_regenerating_with_other_parameters_leaves_no_stale_file(tmp_path):
    """Fewer frames, no odometry and no png the second time: the frames, sequences and poses of the
    first scene are gone, and a file that is not the generator's stays."""
    out = tmp_path / "scene"
    sk.generate(out, **dict(PARAMS, num_frames=4, png=True, odometry=True, workers=1))
    (out / "my_notes.txt").write_text("mine")
    sk.generate(out, **dict(PARAMS, num_frames=3, png=False, odometry=False, workers=1))

    def files():
        return sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out)
                      for f in fs)
    fresh = tmp_path / "fresh"
    sk.generate(fresh, **dict(PARAMS, num_frames=3, png=False, odometry=False, workers=1))
    expected = sorted(os.path.relpath(os.path.join(d, f), fresh) for d, _, fs in os.walk(fresh)
                      for f in fs)
    assert files() == sorted(expected + ["my_notes.txt"])


def test_committed_split_files_equal_the_generated_ones(tmp_path):
    written = sk.write_splits(tmp_path)
    assert len(written) == 5
    for path in written:
        rel = os.path.relpath(path, tmp_path)
        with open(path) as a, open(os.path.join(REPO, "splits", rel)) as b:
            assert a.read() == b.read(), rel
    lines = sk.split_lines()
    assert len(lines["synthetic/test_files.txt"]) == 23
    assert lines["synthetic/train_files.txt"][0] == "2011_09_26/2011_09_26_drive_9001_sync 1 l"
    assert "2011_09_26/2011_09_26_drive_9002_sync 8 r" in lines["synthetic/val_files.txt"]
    assert lines["synthetic_odom/test_files_09.txt"][:2] == ["9 0 l", "9 1 l"]


def test_every_split_line_has_its_frame_and_neighbours(root):
    lines = sk.split_lines(num_drives=1, num_frames=NUM_FRAMES, odom_frames=ODOM_FRAMES)
    for name in ("train", "val", "test"):
        entries = lines[f"synthetic/{name}_files.txt"]
        assert entries
        for line in entries:
            folder, frame, side = line.split()
            for f in (int(frame) - 1, int(frame), int(frame) + 1):
                for cam in (2, 3):
                    assert os.path.isfile(os.path.join(root, folder, f"image_0{cam}", "data",
                                                       f"{f:010d}.jpg")), line
            assert os.path.isfile(os.path.join(root, folder, "velodyne_points", "data",
                                               f"{int(frame):010d}.bin")), line
            assert side in "lr" and (side == "l" or name != "test")
    for seq in sk.ODOM_SEQUENCES:
        for line in lines[f"synthetic_odom/test_files_{seq:02d}.txt"]:
            s, frame, side = line.split()
            for f in (int(frame), int(frame) + 1):
                assert os.path.isfile(os.path.join(root, "sequences", f"{int(s):02d}", "image_2",
                                                   f"{f:06d}.jpg")), line
    copied = os.path.join(root, "splits", "synthetic", "train_files.txt")
    assert open(copied).read().splitlines() == lines["synthetic/train_files.txt"]


# --- errors and CLI -------------------------------------------------------------------------

def test_unwritable_output_folder_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(sk.main, ["--out", str(blocker / "scene"), "--no_progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write to the output folder") and err.count("\n") == 1
    assert "--out" in err


@pytest.mark.parametrize("args, flag", [(["--step", "0"], "--step"),
                                        (["--num_frames", "2"], "--num_frames"),
                                        (["--workers", "0"], "--workers")])
def test_bad_parameters_are_one_line_errors(tmp_path, capsys, args, flag):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(sk.main, ["--out", str(tmp_path / "x"), "--no_progress"] + args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and flag in err and err.count("\n") == 1
    assert not os.path.exists(tmp_path / "x")


def test_cli_help_documents_every_flag():
    parser = sk.parser()
    for action in parser._actions:
        assert action.help, action.dest
    text = parser.format_help()
    for flag in ("--out", "--seed", "--num_drives", "--num_frames", "--step", "--png",
                 "--odometry", "--workers"):
        assert flag in text


def test_cli_reports_where_it_wrote_and_which_split(root, capsys):
    run_cli(sk.main, ["--out", root, "--num_drives", "1", "--num_frames", str(NUM_FRAMES), "--png",
                      "--odometry", "--odom_frames", str(ODOM_FRAMES), "--no_progress"])
    out = capsys.readouterr().out
    assert "already holds" in out and "splits/synthetic" in out and "synthetic_odom" in out


def test_missing_scene_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="scene.json"):
        sk.render_frame(str(tmp_path), 0)


# --- label maps (semantic_synthetic/image_02, not a KITTI folder) --------------------------------

def _ray_box_depth(ray_world, origin, lo, hi):
    """Camera-z depth (ray with z = 1 in the camera frame) of the slab-test entry of one box."""
    with np.errstate(divide="ignore"):
        t1, t2 = (lo - origin) / ray_world, (hi - origin) / ray_world
    near, far = np.minimum(t1, t2).max(), np.maximum(t1, t2).min()
    return near if 0 < near <= far else np.inf


def test_label_maps_are_written_and_match_the_render(root):
    scene = sk.load_scene(drive_dir(root))
    for frame in range(NUM_FRAMES):
        labels = sk.read_labels(drive_dir(root), frame)
        assert labels.shape == (sk.IMAGE_HEIGHT, sk.IMAGE_WIDTH) and labels.dtype == np.uint8
    labels = sk.read_labels(drive_dir(root), 2)
    rendered, depth = sk.render_labels(scene, 2)
    np.testing.assert_array_equal(labels, rendered)
    np.testing.assert_array_equal(depth, sk.render_frame(scene, 2)[1])
    assert np.array_equal(labels == 0, ~np.isfinite(depth))  # 0 = sky, exactly where no surface
    assert sk.class_mask(labels, "car").any() and sk.class_mask(labels, "pole").any()
    # the real-KITTI layout is untouched: the labels live in their own folder
    assert os.path.isfile(os.path.join(drive_dir(root), "semantic_synthetic", "image_02",
                                       f"{2:010d}.png"))


def test_a_pixel_labelled_car_or_pole_sees_a_box_of_that_class_at_its_depth(root):
    scene = sk.load_scene(drive_dir(root))
    labels, depth = sk.render_labels(scene, 3)
    T = sk.camera_pose(scene, 3, 2)
    boxes = scene["boxes"]
    rng = np.random.default_rng(0)
    for name in ("car", "pole"):
        ids = {sk.MAT[m] for m in sk.LABEL_CLASSES[name]}
        own = [b for b in boxes if b["material"] in ids]
        rows, cols = np.nonzero(sk.class_mask(labels, name))
        for k in rng.choice(len(rows), 20, replace=False):
            r, c = rows[k], cols[k]
            ray = T[:3, :3] @ np.array([(c - sk.CX) / sk.FX, (r - sk.CY) / sk.FY, 1.0])
            nearest = min(_ray_box_depth(ray, T[:3, 3], np.array(b["min"]), np.array(b["max"]))
                          for b in own)
            assert nearest == pytest.approx(depth[r, c], rel=1e-4), (name, r, c)


def test_gt_class_mask_follows_the_velodyne_ground_truth_convention(root):
    labels = sk.read_labels(drive_dir(root), 3)
    gt = generate_depth_map(os.path.join(root, DATE), velo_path(root, 3), 2, True)
    _, depth = sk.render_labels(drive_dir(root), 3)
    # GT pixel (r, c) holds a point seen by the ray of pixel (r + 1, c + 1)
    seen = np.full_like(depth, np.inf)
    seen[:-1, :-1] = depth[1:, 1:]
    for name in ("car", "pole"):
        mask = sk.gt_class_mask(labels, name) & (gt > 0)
        assert mask.sum() > 20, name
        # Velodyne depth = camera z + 0.27 m; the scanner's other viewpoint spoils a few pixels
        rel = np.abs(gt[mask] - (seen[mask] + 0.27)) / gt[mask]
        assert np.median(rel) < 0.01 and np.mean(rel < 0.05) > 0.75, name


def test_a_cached_scene_without_label_maps_gets_them(tmp_path):
    import shutil
    params = dict(seed=1, num_drives=1, num_frames=3, progress=False)
    sk.generate(tmp_path, **params)
    drive = os.path.join(tmp_path, *DRIVE.split("/"))
    expected = sk.read_labels(drive, 1)
    shutil.rmtree(os.path.join(drive, "semantic_synthetic"))
    result = sk.generate(tmp_path, **params)
    assert result["skipped"] and result["labels_added"] == 3
    np.testing.assert_array_equal(sk.read_labels(drive, 1), expected)
    assert sk.generate(tmp_path, **params)["labels_added"] == 0
    os.remove(sk.label_path(drive, 2))
    with pytest.raises(FileNotFoundError, match="semantic_synthetic"):
        sk.read_labels(drive, 2)
