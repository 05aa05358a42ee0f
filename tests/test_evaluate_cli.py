"""evaluate_depth.py end to end on tiny KITTI-format data and tiny untrained checkpoints (CPU)."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eval_helpers as H  # noqa: E402

import evaluation as E  # noqa: E402
import evaluate_depth  # noqa: E402
from utils import run_cli  # noqa: E402

NUM_IMAGES = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A data root with 3 KITTI-raw frames, a splits dir with the 'synthetic' split and its ground
    truth, and a run with two epochs (U-Net decoder with DOR, 192x64)."""
    base = tmp_path_factory.mktemp("evaldepth")
    root, splits = str(base / "data"), str(base / "splits")
    gts = H.make_kitti_split(root, splits, "synthetic", NUM_IMAGES)
    models = str(base / "run" / "models")
    folders = H.make_checkpoint(models, epochs=(0, 1))
    return {"base": base, "root": root, "splits": splits, "gts": gts, "models": models,
            "folders": folders}


def evaluate(setup, *args):
    argv = ["--data_path", setup["root"], "--num_workers", "0", "--no_progress", "--no_cuda",
            "--eval_split", "synthetic", *args]
    return evaluate_depth.main(argv, splits_dir=setup["splits"])


def exit_of(setup, capsys, *args, splits=None):
    """Run the CLI in-process as `python evaluate_depth.py ...`; returns (exit code, stderr)."""
    argv = ["--data_path", setup["root"], "--num_workers", "0", "--no_progress", *args]
    with pytest.raises(SystemExit) as info:
        run_cli(lambda a: evaluate_depth.main(a, splits_dir=splits or setup["splits"]), argv)
    return info.value.code, capsys.readouterr().err


@pytest.fixture(scope="module")
def direct(setup):
    """One direct evaluation of epoch 0 with --save_pred_disps: (record, stdout, saved disparities)."""
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        record = evaluate(setup, "--load_weights_folder", setup["folders"][0], "--eval_mono",
                          "--save_pred_disps")
    disps = np.load(os.path.join(setup["folders"][0], "disps_synthetic_split.npy"))
    return record, buf.getvalue(), disps


def test_direct_evaluation_prints_table_and_writes_metrics_json(setup, direct):
    record, out, disps = direct
    folder = setup["folders"][0]
    assert "abs_rel |   sq_rel |     rmse | rmse_log |       a1 |       a2 |       a3 |" in out
    assert " Scaling ratios | med: " in out
    row = [line for line in out.splitlines() if line.startswith("&")]
    assert len(row) == 1 and row[0].endswith("\\\\") and row[0].count("&") == 7

    saved = json.load(open(os.path.join(folder, "metrics.json")))
    assert saved == json.loads(json.dumps(record))
    assert saved["split"] == "synthetic" and saved["num_images"] == NUM_IMAGES
    assert saved["epoch"] == 0 and saved["mode"] == "mono"
    assert saved["model"]["depth_decoder"] == "unet" and saved["model"]["use_dor"] is True
    assert (saved["model"]["height"], saved["model"]["width"]) == (64, 192)
    assert saved["median_scaling"] is True and saved["scaling_ratios"]["median"] > 0
    m = saved["metrics"]
    assert list(m) == list(E.DEPTH_METRIC_NAMES)
    assert all(np.isfinite(v) for v in m.values())
    assert 0 <= m["a1"] <= m["a2"] <= m["a3"] <= 1
    # the row printed is the record's numbers, and those are the library's for these disparities
    assert row[0] == E.format_metrics_row([m[k] for k in E.DEPTH_METRIC_NAMES])
    assert disps.shape == (NUM_IMAGES, 64, 192) and disps.dtype == np.float32
    assert m == E.evaluate_disparities(disps, setup["gts"], "synthetic")["metrics"]


def test_ext_disp_reproduces_direct_evaluation_exactly(setup, direct, tmp_path):
    record, _, _ = direct
    npy = os.path.join(setup["folders"][0], "disps_synthetic_split.npy")
    ext = evaluate(setup, "--ext_disp_to_eval", npy, "--eval_mono", "--eval_out_dir", str(tmp_path))
    assert ext["metrics"] == record["metrics"]
    assert ext["scaling_ratios"] == record["scaling_ratios"]
    assert json.load(open(tmp_path / "metrics.json"))["metrics"] == record["metrics"]


def test_stereo_and_scale_factor_paths(setup, tmp_path):
    npy = str(tmp_path / "d.npy")
    gts = setup["gts"]
    np.save(npy, np.stack([cv2.resize(E.STEREO_SCALE_FACTOR / g, (192, 64)) for g in gts]))
    common = ["--ext_disp_to_eval", npy, "--eval_out_dir", str(tmp_path)]
    stereo = evaluate(setup, *common, "--eval_stereo")
    mono = evaluate(setup, *common, "--eval_mono", "--disable_median_scaling")
    assert stereo["median_scaling"] is False and stereo["pred_depth_scale_factor"] == 5.4
    assert stereo["scaling_ratios"] is None
    # x5.4 undoes the /5.4 of the stored disparity; without it depths are 5.4 times too small
    assert stereo["metrics"]["abs_rel"] < mono["metrics"]["abs_rel"]
    assert mono["metrics"]["abs_rel"] == pytest.approx(
        E.evaluate_disparities(np.load(npy), gts, "synthetic", median_scaling=False)["metrics"]["abs_rel"])


def test_post_process_blends_with_the_mirror(setup, direct, tmp_path):
    _, _, plain = direct
    post = evaluate(setup, "--load_weights_folder", setup["folders"][0], "--eval_mono",
                    "--post_process", "--save_pred_disps", "--eval_out_dir", str(tmp_path))
    post_disps = np.load(tmp_path / "disps_synthetic_split.npy")
    assert post["post_process"] is True and np.isfinite(post["metrics"]["abs_rel"])
    assert post_disps.shape == plain.shape and not np.allclose(post_disps, plain)


@pytest.mark.parametrize("decoder,dor", [("hr", True), ("unet", False)])
def test_other_decoders_load_from_their_checkpoint(setup, tmp_path, decoder, dor):
    folder = H.make_checkpoint(str(tmp_path / "models"), depth_decoder=decoder, use_dor=dor)[0]
    record = evaluate(setup, "--load_weights_folder", folder, "--eval_mono")
    assert record["model"]["depth_decoder"] == decoder and record["model"]["use_dor"] is dor
    assert np.isfinite(record["metrics"]["abs_rel"])


def test_every_epoch_of_a_run(setup, capsys):
    summary = evaluate(setup, "--load_weights_folder", setup["models"], "--eval_mono")
    out = capsys.readouterr().out
    per_epoch = [json.load(open(os.path.join(f, "metrics.json"))) for f in setup["folders"]]
    assert [r["epoch"] for r in per_epoch] == [0, 1]
    saved = json.load(open(os.path.join(setup["models"], "metrics_all.json")))
    assert saved == json.loads(json.dumps(summary))
    assert [e["epoch"] for e in saved["epochs"]] == [0, 1]
    best = int(np.argmin([r["metrics"]["abs_rel"] for r in per_epoch]))
    assert saved["best_epoch"] == best
    assert [e["metrics"] for e in saved["epochs"]] == [r["metrics"] for r in per_epoch]
    marked = [line for line in out.splitlines() if line.startswith("* ")]
    assert len(marked) == 1 and marked[0].split()[1] == str(best)
    # the run folder itself resolves to the same epochs
    run_dir = os.path.dirname(setup["models"])
    assert evaluate_depth.find_weights_folders(run_dir) == (setup["folders"], setup["models"])
    assert evaluate_depth.find_weights_folders(setup["folders"][1]) == ([setup["folders"][1]], None)


def test_eigen_to_benchmark_indexes_eigen_predictions(setup, tmp_path):
    splits = str(tmp_path / "splits")
    rng = np.random.default_rng(5)
    n_eigen, ids = 5, np.array([0, 2, 3])
    os.makedirs(os.path.join(splits, "eigen"))
    with open(os.path.join(splits, "eigen", "test_files.txt"), "w") as f:
        f.write("".join(f"{H.DRIVE} {i} l\n" for i in range(n_eigen)))
    os.makedirs(os.path.join(splits, "benchmark"))
    np.save(os.path.join(splits, "benchmark", "eigen_to_benchmark_ids.npy"), ids)
    gts = [np.where(rng.random((30, 90)) < 0.3, rng.uniform(1, 70, (30, 90)), 0.0) for _ in ids]
    H.write_gt(splits, "eigen_benchmark", gts)
    disps = rng.uniform(0.02, 0.5, (n_eigen, 16, 48)).astype(np.float32)
    npy = str(tmp_path / "eigen_disps.npy")
    np.save(npy, disps)
    argv = ["--ext_disp_to_eval", npy, "--eval_mono", "--eval_eigen_to_benchmark",
            "--eval_out_dir", str(tmp_path), "--eval_split", "eigen_benchmark", "--no_progress"]
    record = evaluate_depth.main(argv, splits_dir=splits)
    assert record["split"] == "eigen_benchmark" and record["num_images"] == 3
    assert record["metrics"] == E.evaluate_disparities(disps[ids], gts, "eigen_benchmark")["metrics"]


def test_benchmark_split_writes_pngs_instead_of_scoring(setup, tmp_path):
    data, splits = tmp_path / "bench_data", tmp_path / "splits"
    for i in range(2):
        H.random_image(str(data / "image" / f"{i:010d}.png"), 240, 70, i)
    (splits / "benchmark").mkdir(parents=True)
    (splits / "benchmark" / "test_files.txt").write_text("image 0\nimage 1\n")
    argv = ["--load_weights_folder", setup["folders"][0], "--eval_stereo", "--eval_split",
            "benchmark", "--data_path", str(data), "--eval_out_dir", str(tmp_path / "out"),
            "--num_workers", "0", "--no_progress"]
    assert evaluate_depth.main(argv, splits_dir=str(splits)) is None
    out = tmp_path / "out" / "benchmark_predictions"
    assert sorted(os.listdir(out)) == ["0000000000.png", "0000000001.png"]
    png = cv2.imread(str(out / "0000000000.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.shape == (352, 1216) and png.max() > 0
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_make3d_split(setup, tmp_path):
    from scipy.io import savemat
    data, splits = tmp_path / "make3d", tmp_path / "splits"
    rng = np.random.default_rng(0)
    imgs, depths = [], []
    for i in range(2):
        img = f"Test134/img-{i}.jpg"
        H.random_image(str(data / img), 170, 227, i)  # portrait like Make3D's 1704 x 2272
        grid = np.zeros((55, 305, 4))
        grid[..., 3] = rng.uniform(2, 90, (55, 305))
        depth = f"Gridlaserdata/depth_sph_corr-{i}.mat"
        (data / "Gridlaserdata").mkdir(exist_ok=True)
        savemat(str(data / depth), {"Position3DGrid": grid})
        imgs.append(img)
        depths.append(depth)
    (splits / "make3d").mkdir(parents=True)
    (splits / "make3d" / "test_img_list.txt").write_text("\n".join(imgs))
    (splits / "make3d" / "test_depth_list.txt").write_text("\n".join(depths))
    argv = ["--load_weights_folder", setup["folders"][0], "--eval_mono", "--eval_split", "make3d",
            "--data_path", str(data), "--eval_out_dir", str(tmp_path / "out"), "--no_progress"]
    record = evaluate_depth.main(argv, splits_dir=str(splits))
    assert list(record["metrics"]) == list(E.MAKE3D_METRIC_NAMES)
    assert record["num_images"] == 2 and all(np.isfinite(v) for v in record["metrics"].values())
    assert json.load(open(tmp_path / "out" / "metrics.json"))["split"] == "make3d"


# ------------------------------------------------------------------------------------------------
# bad input: one line `error: ...` and exit code 2
# ------------------------------------------------------------------------------------------------
def test_missing_weights_folder(setup, capsys, tmp_path):
    code, err = exit_of(setup, capsys, "--load_weights_folder", str(tmp_path / "nope"), "--eval_mono")
    assert code == 2 and err.startswith("error: --load_weights_folder") and "does not exist" in err
    assert err.count("\n") == 1


def test_missing_gt_names_the_export_command(setup, capsys, tmp_path):
    splits = tmp_path / "splits"
    (splits / "synthetic").mkdir(parents=True)
    (splits / "synthetic" / "test_files.txt").write_text(
        open(os.path.join(setup["splits"], "synthetic", "test_files.txt")).read())
    code, err = exit_of(setup, capsys, "--load_weights_folder", setup["folders"][0], "--eval_mono",
                        "--eval_split", "synthetic", "--no_cuda", splits=str(splits))
    assert code == 2 and err.startswith("error: ground truth ")
    assert f"python export_gt_depth.py --data_path {setup['root']} --split synthetic" in err


def test_prediction_length_mismatch(setup, capsys, tmp_path):
    npy = str(tmp_path / "short.npy")
    np.save(npy, np.ones((NUM_IMAGES - 1, 8, 24), np.float32))
    code, err = exit_of(setup, capsys, "--ext_disp_to_eval", npy, "--eval_mono",
                        "--eval_split", "synthetic", "--eval_out_dir", str(tmp_path))
    assert code == 2 and f"has {NUM_IMAGES - 1} disparities but split 'synthetic'" in err
    assert f"has {NUM_IMAGES}" in err


@pytest.mark.parametrize("flags", [[], ["--eval_mono", "--eval_stereo"]])
def test_neither_or_both_modes(setup, capsys, flags):
    code, err = exit_of(setup, capsys, "--load_weights_folder", setup["folders"][0], *flags)
    assert code == 2 and "choose exactly one of --eval_mono and --eval_stereo" in err


def test_missing_split_file_names_the_download_script(setup, capsys, tmp_path):
    code, err = exit_of(setup, capsys, "--load_weights_folder", setup["folders"][0], "--eval_mono",
                        "--eval_split", "eigen", splits=str(tmp_path))
    assert code == 2 and "test_files.txt" in err and "python splits/download_splits.py" in err


def test_pose_split_points_to_evaluate_pose(setup, capsys):
    code, err = exit_of(setup, capsys, "--load_weights_folder", setup["folders"][0], "--eval_mono",
                        "--eval_split", "odom_9")
    assert code == 2 and "evaluate_pose.py --eval_split odom_9" in err


def test_command_line_entry_point(setup):
    """The real `python evaluate_depth.py` process: exit code 2 and a single error line."""
    proc = subprocess.run([sys.executable, "evaluate_depth.py", "--eval_mono",
                           "--load_weights_folder", os.path.join(str(setup["base"]), "missing")],
                          cwd=H.REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --load_weights_folder") and proc.stderr.count("\n") == 1


def test_synthetic_scene_with_exported_ground_truth(tmp_path):
    """The repo's synthetic scene, export_gt_depth.py's npz, evaluate_depth.py: the format chain."""
    synthetic = pytest.importorskip("synthetic_scene")
    export_gt_depth = pytest.importorskip("export_gt_depth")
    root = str(tmp_path / "scene")
    synthetic.generate(root, num_drives=1, num_frames=5, gt_depth=False, progress=False)
    splits = os.path.join(root, "splits")
    export_gt_depth.main(["--data_path", root, "--split", "synthetic", "--split_dir", splits])
    gts = evaluate_depth.load_gt_depths("synthetic", splits, root)
    assert len(gts) == 2 and gts[0].shape == (375, 1242)
    # the exact ground truth (as disparity, at another resolution) scores perfectly...
    npy = str(tmp_path / "gt_disps.npy")
    np.save(npy, np.stack([1.0 / np.maximum(g, 1e-3) for g in gts]).astype(np.float32))
    argv = ["--data_path", root, "--eval_split", "synthetic", "--eval_mono", "--no_progress",
            "--ext_disp_to_eval", npy, "--eval_out_dir", str(tmp_path / "out")]
    record = evaluate_depth.main(argv, splits_dir=splits)
    assert record["metrics"]["abs_rel"] == pytest.approx(0, abs=1e-6)
    assert record["metrics"]["a1"] == 1.0
    # ...and an untrained model on the rendered images gives finite numbers
    folder = H.make_checkpoint(str(tmp_path / "run" / "models"))[0]
    record = evaluate_depth.main(["--data_path", root, "--eval_split", "synthetic", "--eval_mono",
                                  "--no_progress", "--num_workers", "0", "--no_cuda",
                                  "--load_weights_folder", folder], splits_dir=splits)
    assert record["num_images"] == 2 and all(np.isfinite(v) for v in record["metrics"].values())
