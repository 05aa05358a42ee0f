"""evaluate_pose.py on a tiny KITTI-odometry-format sequence with an untrained pose network (CPU)."""

import json
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eval_helpers as H  # noqa: E402

import evaluation as E  # noqa: E402
import evaluate_pose  # noqa: E402
from networks.spec import ModelSpec  # noqa: E402
from utils import run_cli  # noqa: E402

NUM_FRAMES = 7


def _pose(yaw, position):
    c, s = np.cos(yaw), np.sin(yaw)
    T = np.eye(4)
    T[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    T[:3, 3] = position
    return T


@pytest.fixture(scope="module")
def odom(tmp_path_factory):
    """sequences/09/image_2/%06d.jpg, poses/09.txt (forward motion with yaw), the odom split list
    and a run with an untrained separate_resnet pose network at 192x64."""
    base = tmp_path_factory.mktemp("odom")
    root, splits = base / "data", base / "splits"
    for i in range(NUM_FRAMES):
        H.random_image(str(root / "sequences" / "09" / "image_2" / f"{i:06d}.jpg"), 240, 72, i)
    poses = np.stack([_pose(0.02 * i, [0.1 * i, 0.0, 0.8 * i]) for i in range(NUM_FRAMES)])
    (root / "poses").mkdir()
    np.savetxt(root / "poses" / "09.txt", poses[:, :3, :].reshape(-1, 12))
    (splits / "odom").mkdir(parents=True)
    (splits / "odom" / "test_files_09.txt").write_text(
        "".join(f"9 {i} l\n" for i in range(NUM_FRAMES - 1)))
    folder = H.make_checkpoint(str(base / "run" / "models"))[0]
    return {"base": base, "root": str(root), "splits": str(splits), "folder": folder,
            "poses": poses}


def run(odom, *args, splits=None):
    argv = ["--data_path", odom["root"], "--num_workers", "0", "--no_progress", "--no_cuda", *args]
    return evaluate_pose.main(argv, splits_dir=splits or odom["splits"])


def test_untrained_pose_net_gives_finite_ate_and_writes_metrics(odom, capsys):
    record = run(odom, "--eval_split", "odom_9", "--load_weights_folder", odom["folder"])
    out = capsys.readouterr().out
    assert "Trajectory error: " in out and ", std: " in out
    assert record["num_snippets"] == NUM_FRAMES - 1 and record["sequence"] == 9
    assert np.isfinite(record["ate_mean"]) and np.isfinite(record["ate_std"])
    assert record["ate_mean"] >= 0
    saved = json.load(open(os.path.join(odom["folder"], "metrics_pose.json")))
    assert saved["ate_mean"] == record["ate_mean"] and saved["model"]["height"] == 64


def _serve(local_poses):
    """A stand-in for ``pose_setup`` whose network returns ``local_poses`` in loader order."""
    def fake_setup(opt, weights_folder, device, explicit=None):
        served = []

        def relative_pose(images0, images1):
            start = len(served)
            served.extend(range(images0.shape[0]))
            return torch.from_numpy(local_poses[start:start + images0.shape[0]])
        return relative_pose, ModelSpec(height=64, width=192)
    return fake_setup


def test_perfect_relative_poses_give_zero_ate(odom, monkeypatch):
    """The pipeline pairs split line i with the ground-truth motion from frame i to i+1."""
    gt_local = E.local_from_global_poses(odom["poses"])
    scaled = gt_local.copy()
    scaled[:, :3, 3] *= 0.3  # monocular: right motion, wrong scale
    swapped = gt_local.copy()
    swapped[:, :3, 3] = gt_local[:, [2, 1, 0], 3]  # wrong direction of motion
    ates = {}
    for name, poses in (("perfect", gt_local), ("scaled", scaled), ("swapped", swapped)):
        monkeypatch.setattr(evaluate_pose, "pose_setup", _serve(poses))
        ates[name] = run(odom, "--eval_split", "odom_9", "--load_weights_folder", odom["folder"],
                         "--eval_out_dir", str(odom["base"] / name))["ate_mean"]
    assert ates["perfect"] == pytest.approx(0, abs=1e-9)
    assert ates["scaled"] == pytest.approx(0, abs=1e-9)
    assert ates["swapped"] > 0.05


def test_synthetic_odometry_scene_end_to_end(tmp_path):
    """The repo's synthetic scene in KITTI odometry format, its own split lists, an untrained net."""
    synthetic = pytest.importorskip("synthetic_scene")
    root = str(tmp_path / "scene")
    synthetic.generate(root, num_drives=1, num_frames=3, odometry=True, odom_frames=6,
                       gt_depth=False, progress=False)
    folder = H.make_checkpoint(str(tmp_path / "run" / "models"))[0]
    argv = ["--data_path", root, "--num_workers", "0", "--no_progress", "--no_cuda",
            "--eval_split", "synthetic_odom_10", "--load_weights_folder", folder]
    record = evaluate_pose.main(argv, splits_dir=os.path.join(root, "splits"))
    assert record["sequence"] == 10 and record["num_snippets"] == 5
    assert np.isfinite(record["ate_mean"]) and np.isfinite(record["ate_std"])
    # the scene moves ~0.5 m per frame: snippet errors are bounded by the snippet length
    assert 0 <= record["ate_mean"] < 2.0


def test_split_names():
    assert evaluate_pose.parse_pose_split("odom_9") == ("odom", 9)
    assert evaluate_pose.parse_pose_split("odom_10") == ("odom", 10)
    assert evaluate_pose.parse_pose_split("synthetic_odom_9") == ("synthetic_odom", 9)


def _exit(odom, capsys, *args, splits=None):
    argv = ["--data_path", odom["root"], "--num_workers", "0", "--no_progress", *args]
    with pytest.raises(SystemExit) as info:
        run_cli(lambda a: evaluate_pose.main(a, splits_dir=splits or odom["splits"]), argv)
    return info.value.code, capsys.readouterr().err


def test_bad_inputs_exit_2(odom, capsys, tmp_path):
    code, err = _exit(odom, capsys, "--eval_split", "eigen", "--load_weights_folder", odom["folder"])
    assert code == 2 and "not a pose split" in err
    code, err = _exit(odom, capsys, "--eval_split", "odom_9", "--load_weights_folder",
                      str(tmp_path / "none"))
    assert code == 2 and "--load_weights_folder" in err and "does not exist" in err
    code, err = _exit(odom, capsys, "--eval_split", "odom_10", "--load_weights_folder", odom["folder"])
    assert code == 2 and "test_files_10.txt" in err and "download_splits.py" in err
    code, err = _exit(odom, capsys, "--eval_split", "odom_9", "--load_weights_folder", odom["folder"],
                      "--data_path", str(tmp_path))
    assert code == 2 and "09.txt" in err
    assert err.count("\n") == 1
