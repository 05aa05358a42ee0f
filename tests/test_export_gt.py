"""export_gt_depth.py on a synthetic scene in KITTI's formats: the exported maps equal the
generator's truth, and bad input ends with a one-line error and exit code 2."""

import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

import export_gt_depth
import synthetic_scene as synthetic_kitti
from datasets.kitti_utils import read_calib_file
from utils import run_cli

REPO = os.path.dirname(os.path.abspath(export_gt_depth.__file__))
DATE = "2011_09_26"
DRIVE = f"{DATE}/{DATE}_drive_9001_sync"
FRAMES = (0, 1, 2)


@pytest.fixture(scope="module")
def truth(scene):
    """Rendered camera-z depth [375,1242] of image_02 per frame (+inf = sky)."""
    return {f: synthetic_kitti.render_frame(os.path.join(scene, DRIVE), f, cam=2)[1] for f in FRAMES}


def write_split(split_dir, name, lines):
    folder = split_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test_files.txt").write_text("".join(line + "\n" for line in lines))
    return folder


def run_export(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "export_gt_depth.py"), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


def run_in_process(capsys, *args):
    """(exit code, stderr lines) of the CLI run in this process."""
    with pytest.raises(SystemExit) as info:
        run_cli(export_gt_depth.main, list(args))
    return info.value.code, [line for line in capsys.readouterr().err.splitlines() if line]


def load_maps(path):
    with np.load(path, allow_pickle=True) as npz:
        assert list(npz.keys()) == ["data"]
        return npz["data"]


def velodyne_x_of_rendered_depth(scene, depth):
    """Velodyne forward coordinate of the surface point seen by every pixel of image_02.

    Pixel (row r, col c) of the renderer is the ray through (u, v) = (c, r) of P_rect_02; its
    point is lifted to the rectified camera-0 frame, then to the Velodyne frame with the calib.
    """
    cam = read_calib_file(os.path.join(scene, DATE, "calib_cam_to_cam.txt"))
    velo = read_calib_file(os.path.join(scene, DATE, "calib_velo_to_cam.txt"))
    P = cam["P_rect_02"].reshape(3, 4)
    K_inv = np.linalg.inv(P[:, :3])
    centre = -K_inv @ P[:, 3]  # camera-2 centre in the rectified camera-0 frame
    R_rect = cam["R_rect_00"].reshape(3, 3)
    R, T = velo["R"].reshape(3, 3), velo["T"]
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w]
    rays = K_inv @ np.stack([u.ravel(), v.ravel(), np.ones(h * w)])
    points_rect = rays * np.where(np.isfinite(depth), depth, 0.0).ravel() + centre[:, None]
    points_velo = R.T @ (R_rect.T @ points_rect - T[:, None])
    return points_velo[0].reshape(h, w)


def test_export_velodyne_split_matches_generator_truth(scene, truth, tmp_path):
    split_dir = tmp_path / "splits"
    folder = write_split(split_dir, "synthetic_eigen", [f"{DRIVE} {f:010d} l" for f in FRAMES])
    result = run_export("--data_path", scene, "--split", "synthetic_eigen",
                        "--split_dir", str(split_dir))
    assert result.returncode == 0, result.stderr
    maps = load_maps(folder / "gt_depths.npz")
    assert maps.dtype == object and len(maps) == len(FRAMES)
    assert sorted(p.name for p in folder.iterdir()) == ["gt_depths.npz", "test_files.txt"]

    calib_T_z = read_calib_file(os.path.join(scene, DATE, "calib_velo_to_cam.txt"))["T"][2]
    for f, gt in zip(FRAMES, maps):
        assert gt.dtype == np.float32 and gt.shape == (375, 1242)
        # the published rasteriser puts a point projecting to (u, v) at pixel (round(u)-1, round(v)-1),
        # i.e. exported pixel (r, c) shows what the renderer draws at (r+1, c+1)
        exported = gt[:-1, :-1]
        rendered_z = truth[f][1:, 1:]
        valid = (exported > 0) & np.isfinite(rendered_z)
        assert valid.sum() > 5000
        expected = velodyne_x_of_rendered_depth(scene, truth[f])[1:, 1:]
        rel = np.abs(exported[valid] - expected[valid]) / expected[valid]
        assert np.median(rel) < 0.01
        # vel_depth=True: Velodyne x, not camera z, which is |T_z| ≈ 0.27 m smaller
        offset = np.median(exported[valid] - rendered_z[valid])
        assert offset == pytest.approx(-calib_T_z, abs=0.03)


def test_export_eigen_benchmark_reads_groundtruth_pngs(scene, truth, tmp_path, capsys):
    split_dir = tmp_path / "splits"
    folder = write_split(split_dir, "eigen_benchmark", [f"{DRIVE} {f} l" for f in FRAMES])
    run_cli(export_gt_depth.main, ["--data_path", scene, "--split", "eigen_benchmark",
                                   "--split_dir", str(split_dir)])
    maps = load_maps(folder / "gt_depths.npz")
    for f, gt in zip(FRAMES, maps):
        png = os.path.join(scene, DRIVE, "proj_depth", "groundtruth", "image_02", f"{f:010d}.png")
        np.testing.assert_array_equal(gt, np.array(PIL.Image.open(png)).astype(np.float32) / 256)
        valid = gt > 0
        assert valid.sum() > 10000
        assert np.abs(gt[valid] - truth[f][valid]).max() <= 0.5 / 256 + 1e-4


def test_missing_data_path_exits_2_with_instructions(tmp_path):
    result = run_export("--data_path", str(tmp_path / "kitti_data"), "--split", "eigen")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: --data_path {tmp_path / 'kitti_data'} does not exist")
    assert "README 'KITTI preparation'" in lines[0]
    assert "python -m synthetic_scene --out" in lines[0]


def test_missing_velodyne_file_names_file_and_line(scene, tmp_path, capsys):
    split_dir = tmp_path / "splits"
    folder = write_split(split_dir, "broken", [f"{DRIVE} 1 l", f"{DRIVE} 9 l"])
    code, lines = run_in_process(capsys, "--data_path", scene, "--split", "broken",
                                 "--split_dir", str(split_dir))
    assert code == 2 and len(lines) == 1
    velo = os.path.join(scene, DRIVE, "velodyne_points", "data", "0000000009.bin")
    assert lines[0] == f"error: {velo} does not exist (test_files.txt line 2: '{DRIVE} 9 l')"
    assert sorted(p.name for p in folder.iterdir()) == ["test_files.txt"]  # nothing half-written


def test_unknown_split_lists_known_ones(scene, tmp_path, capsys):
    split_dir = tmp_path / "splits"
    write_split(split_dir, "mine", [f"{DRIVE} 1 l"])
    code, lines = run_in_process(capsys, "--data_path", scene, "--split", "nosuch",
                                 "--split_dir", str(split_dir))
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("error: unknown split 'nosuch'")
    assert "known: eigen, eigen_benchmark, mine" in lines[0]
    assert "python splits/download_splits.py" in lines[0]
    code, lines = run_in_process(capsys, "--data_path", scene, "--split", "eigen",
                                 "--split_dir", str(split_dir))
    assert code == 2 and "fetch the KITTI split lists with `python splits/download_splits.py`" in lines[0]


def test_malformed_line_is_named(scene, tmp_path, capsys):
    split_dir = tmp_path / "splits"
    write_split(split_dir, "bad", [f"{DRIVE} 1 l", f"{DRIVE} 1"])
    code, lines = run_in_process(capsys, "--data_path", scene, "--split", "bad",
                                 "--split_dir", str(split_dir))
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(f"error: test_files.txt line 2 ('{DRIVE} 1'): expected")


def test_help_documents_split_dir(capsys):
    with pytest.raises(SystemExit) as info:
        export_gt_depth.parse_args(["--help"])
    assert info.value.code == 0
    assert "--split_dir" in capsys.readouterr().out
