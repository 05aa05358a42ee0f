"""test_simple.py on a real KITTI frame, a folder and a video, with a tiny untrained checkpoint (CPU)."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eval_helpers as H  # noqa: E402

import test_simple  # noqa: E402
from utils import run_cli  # noqa: E402

KITTI_FRAME = os.path.join(os.path.dirname(H.REPO), "shared", "assets", "kitti_frame_638x235.jpg")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return H.make_checkpoint(str(tmp_path_factory.mktemp("simple") / "models"))[0]


def _check_outputs(out_dir, name, width, height, metric=False):
    jpeg = Image.open(os.path.join(out_dir, f"{name}_disp.jpeg"))
    assert jpeg.format == "JPEG" and jpeg.size == (width, height) and jpeg.mode == "RGB"
    disp = np.load(os.path.join(out_dir, f"{name}_disp.npy"))
    assert disp.shape == (height, width) and disp.dtype == np.float32
    assert np.all(np.isfinite(disp)) and disp.min() > 0
    if metric:
        depth = np.load(os.path.join(out_dir, f"{name}_depth.npy"))
        np.testing.assert_allclose(depth, 5.4 / disp, rtol=1e-6)
    return np.asarray(jpeg), disp


def test_colour_map_is_magma_with_95th_percentile_normalisation():
    disp = np.linspace(0, 1, 101, dtype=np.float32)[None].repeat(4, 0)
    rgb = test_simple.colorize_disparity(disp)
    assert rgb.shape == (4, 101, 3) and rgb.dtype == np.uint8
    from matplotlib import colormaps
    top = (np.array(colormaps["magma"](1.0)[:3]) * 255).astype(np.uint8)
    bottom = (np.array(colormaps["magma"](0.0)[:3]) * 255).astype(np.uint8)
    assert np.all(rgb[0, 95:] == top)  # everything above the 95th percentile saturates
    assert not np.all(rgb[0, 94] == top)
    assert np.all(rgb[0, 0] == bottom)


@pytest.mark.skipif(not os.path.isfile(KITTI_FRAME), reason="shared KITTI frame asset not present")
def test_real_kitti_frame(weights, tmp_path, capsys):
    written = test_simple.main(["--image_path", KITTI_FRAME, "--model_path", weights,
                                "--output_dir", str(tmp_path), "--no_cuda", "--pred_metric_depth"])
    out, err = capsys.readouterr()
    assert " ms" in out and "kitti_frame_638x235" in out
    assert "warning: --pred_metric_depth" in err  # the checkpoint was not trained with stereo
    assert sorted(os.path.basename(p) for p in written) == [
        "kitti_frame_638x235_depth.npy", "kitti_frame_638x235_disp.jpeg",
        "kitti_frame_638x235_disp.npy"]
    jpeg, disp = _check_outputs(str(tmp_path), "kitti_frame_638x235", 638, 235, metric=True)
    # the colour image is the disparity's colour map (JPEG-compressed)
    expected = test_simple.colorize_disparity(disp).astype(np.float64)
    assert np.abs(jpeg.astype(np.float64) - expected).mean() < 4.0


def test_folder_with_ext_and_default_output_next_to_images(weights, tmp_path):
    for i, (w, h) in enumerate([(200, 70), (150, 90)]):
        H.random_image(str(tmp_path / f"frame{i}.png"), w, h, i)
    H.random_image(str(tmp_path / "ignored.jpg"), 64, 32, 9)
    written = test_simple.main(["--image_path", str(tmp_path), "--ext", "png", "--model_path",
                                weights, "--no_cuda"])
    assert len(written) == 4
    _check_outputs(str(tmp_path), "frame0", 200, 70)
    _check_outputs(str(tmp_path), "frame1", 150, 90)
    assert not (tmp_path / "ignored_disp.npy").exists()


def test_video_input(weights, tmp_path):
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 5, (160, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    rng = np.random.default_rng(0)
    for _ in range(3):
        writer.write(rng.integers(0, 255, (48, 160, 3), dtype=np.uint8))
    writer.release()
    out = tmp_path / "out"
    test_simple.main(["--image_path", path, "--model_path", weights, "--output_dir", str(out),
                      "--no_cuda"])
    for i in range(3):
        _check_outputs(str(out), f"clip_{i:06d}", 160, 48)
    assert len(os.listdir(out)) == 6


def _exit(capsys, argv):
    with pytest.raises(SystemExit) as info:
        run_cli(test_simple.main, argv)
    return info.value.code, capsys.readouterr().err


def test_bad_inputs_exit_2(weights, tmp_path, capsys):
    image = H.random_image(str(tmp_path / "ok.jpg"), 64, 32, 0)
    code, err = _exit(capsys, ["--image_path", str(tmp_path / "missing.jpg"), "--model_path", weights])
    assert code == 2 and err.startswith("error: --image_path") and "does not exist" in err
    code, err = _exit(capsys, ["--image_path", image, "--model_path", str(tmp_path / "nomodel")])
    assert code == 2 and err.startswith("error: --model_path") and "does not exist" in err
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    code, err = _exit(capsys, ["--image_path", str(tmp_path / "broken.jpg"), "--model_path", weights,
                               "--output_dir", str(tmp_path / "o")])
    assert code == 2 and "broken.jpg" in err and err.count("\n") == 1
    code, err = _exit(capsys, ["--image_path", str(tmp_path), "--ext", "bmp", "--model_path", weights])
    assert code == 2 and "no *.bmp images" in err


def test_command_line_entry_point(weights, tmp_path):
    proc = subprocess.run([sys.executable, "test_simple.py", "--image_path",
                           str(tmp_path / "missing.png"), "--model_path", weights],
                          cwd=H.REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --image_path")


def test_model_errors_name_model_path_not_another_scripts_flag(weights, tmp_path, capsys):
    """Every --model_path failure names --model_path or the file, never --load_weights_folder
    (the flag of train.py / evaluate_depth.py / export_model.py)."""
    import shutil
    image = H.random_image(str(tmp_path / "ok.jpg"), 64, 32, 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    truncated = tmp_path / "truncated"
    shutil.copytree(weights, truncated)
    data = (truncated / "encoder.pth").read_bytes()
    (truncated / "encoder.pth").write_bytes(data[:len(data) // 2])
    no_depth = tmp_path / "no_depth"
    shutil.copytree(weights, no_depth)
    os.remove(no_depth / "depth.pth")
    for folder, names in ((tmp_path / "nomodel", "--model_path"), (empty, "encoder.pth"),
                          (truncated, "encoder.pth"), (no_depth, "depth.pth")):
        code, err = _exit(capsys, ["--image_path", image, "--model_path", str(folder)])
        assert code == 2 and err.count("\n") == 1 and names in err, err
        assert "--load_weights_folder" not in err and "Traceback" not in err, err
