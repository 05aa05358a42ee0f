"""prepare_video.py on synthetic drives rendered as videos (``synthetic_scene.video``): the chosen
step and the dropped static frames against what was rendered, the stored intrinsics against the
renderer's camera, reruns, and each bad input as one line with exit code 2 and nothing written."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import prepare_video
from datasets import video_io as V
from synthetic_scene.constants import FX, FY, CX, CY, IMAGE_HEIGHT, IMAGE_WIDTH
from synthetic_scene.raycast import render_frame
from synthetic_scene.video import fine_scene, write_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALE = 2 / 3  # the videos are written at 828x250
DRIVE = dict(seed=3, tag=9101, scene_frames=14, rate=3, static=((10, 5), (25, 4)))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """(mp4 path, its JSON record): 14 scene frames at 3x the rate (40 frames, 0.167 m apart)
    with 5 + 4 repeated frames inserted."""
    path = str(tmp_path_factory.mktemp("videos") / "drive.mp4")
    return path, write_video(path, scale=SCALE, **DRIVE)


def prepare(*argv):
    """Run prepare_video.py in this process (no progress bars)."""
    return prepare_video.main([str(a) for a in argv] + ["--no_progress"])


def report(out):
    with open(os.path.join(out, V.PREPARE_FILE)) as f:
        return json.load(f)


def test_step_and_static_frames_match_the_rendered_drive(video, tmp_path):
    path, rendered = video
    out = tmp_path / "out"
    assert prepare(path, "--out", out) == 0
    seq = report(out)["sequences"][0]
    assert seq["frames_read"] == len(rendered["pose_of_frame"]) == 49
    assert seq["static_dropped"] == rendered["static_inserted"] == 9
    assert seq["step"] == rendered["rate"] == 3
    # the kept frames are the drive's own frames, 0.5 m apart, none of them a repeat
    poses = [rendered["pose_of_frame"][i] for i in seq["kept_source_frames"]]
    assert poses == list(range(0, 40, 3))
    assert sorted(os.listdir(out / "drive")) == [V.frame_name(i) for i in range(14)] + \
        [V.INTRINSICS_FILE]
    train = (out / "train_files.txt").read_text().split("\n")[:-1]
    val = (out / "val_files.txt").read_text().split("\n")[:-1]
    assert train + val == [f"drive {i}" for i in range(1, 13)] and val == ["drive 12"]


def test_the_prepared_drive_passes_the_preflight_silently(video, tmp_path):
    from datasets import VideoDataset
    out = tmp_path / "out"
    prepare(video[0], "--out", out)
    lines = (out / "train_files.txt").read_text().split("\n")[:-1]
    assert VideoDataset(str(out), lines, 64, 192, [0, -1, 1], 1).preflight() == []


def test_step_follows_the_frame_rate(tmp_path):
    """Another drive at twice the scene's rate: step 2."""
    path = str(tmp_path / "double.mp4")
    write_video(path, seed=7, tag=9102, scene_frames=12, rate=2, scale=SCALE)
    prepare(path, "--out", tmp_path / "out")
    seq = report(tmp_path / "out")["sequences"][0]
    assert (seq["step"], seq["static_dropped"], seq["frames_kept"]) == (2, 0, 12)


def test_frame_step_flag_overrides_the_choice(video, tmp_path):
    prepare(video[0], "--out", tmp_path / "out", "--frame_step", "2")
    seq = report(tmp_path / "out")["sequences"][0]
    assert (seq["step"], seq["step_chosen"], seq["frames_kept"]) == (2, False, 20)


def test_stored_intrinsics_project_points_onto_the_rendered_pixels(video, tmp_path):
    """Crop to 2:1 (828x250 -> 500x250, 164 px off each side) and shrink to 320x160: a 3-D point
    seen at renderer pixel (c, r) projects with the stored K onto the pixel that the video's
    resize, the crop and the shrink carry (c, r) to."""
    path, rendered = video
    out = tmp_path / "out"
    prepare(path, "--out", out, "--crop_to_aspect", "2:1", "--max_width", "320")
    with open(out / "drive" / V.INTRINSICS_FILE) as f:
        stored = json.load(f)
    assert (stored["width"], stored["height"]) == (320, 160)
    K = np.array(stored["K"]) * [[320], [160], [1]]
    seq = report(out)["sequences"][0]
    pose = rendered["pose_of_frame"][seq["kept_source_frames"][5]]
    _, depth = render_frame(fine_scene(DRIVE["seed"], DRIVE["tag"], DRIVE["scene_frames"],
                                       DRIVE["rate"]), pose)
    rows, cols = np.meshgrid(np.arange(40, IMAGE_HEIGHT, 60), np.arange(350, 900, 70),
                             indexing="ij")
    z = depth[rows.ravel(), cols.ravel()]
    seen = np.isfinite(z)  # not sky
    assert seen.sum() > 30
    c, r, z = cols.ravel()[seen].astype(float), rows.ravel()[seen].astype(float), z[seen]
    points = np.stack([(c - CX) / FX * z, (r - CY) / FY * z, z])
    projected = K @ points
    u, v = projected[0] / projected[2], projected[1] / projected[2]
    s_video = 828 / IMAGE_WIDTH
    expected_u = ((c + 0.5) * s_video - 0.5 - 164 + 0.5) * (320 / 500) - 0.5
    expected_v = ((r + 0.5) * s_video - 0.5 + 0.5) * (160 / 250) - 0.5
    np.testing.assert_allclose(u, expected_u, atol=1e-6)
    np.testing.assert_allclose(v, expected_v, atol=1e-6)
    # and the stored frame shows there what the renderer drew there (colour, not just numbers)
    frame = cv2.imread(str(out / "drive" / V.frame_name(5)))[..., ::-1].astype(float)
    rgb = cv2.resize(render_frame(fine_scene(DRIVE["seed"], DRIVE["tag"], DRIVE["scene_frames"],
                                             DRIVE["rate"]), pose)[0], (828, 250),
                     interpolation=cv2.INTER_AREA)[:, 164:664]
    rgb = cv2.resize(rgb, (320, 160), interpolation=cv2.INTER_AREA).astype(float)
    aligned = np.abs(frame - rgb).mean()
    shifted = np.abs(frame[:, 3:] - rgb[:, :-3]).mean()
    assert aligned < 0.6 * shifted, (aligned, shifted)


def test_rerun_does_nothing_and_a_change_rebuilds(video, tmp_path, capsys):
    out = tmp_path / "out"
    prepare(video[0], "--out", out)
    stamp = os.stat(out / V.PREPARE_FILE).st_mtime_ns
    capsys.readouterr()
    prepare(video[0], "--out", out)
    assert "nothing to do" in capsys.readouterr().out
    assert os.stat(out / V.PREPARE_FILE).st_mtime_ns == stamp
    prepare(video[0], "--out", out, "--frame_step", "1")
    assert report(out)["sequences"][0]["frames_kept"] == 40
    assert len(os.listdir(out / "drive")) == 41
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no build folder left beside it


def test_a_killed_run_leaves_no_output_and_its_build_folder_goes_next_time(video, tmp_path):
    """A run killed mid-build (SIGKILL: no clean-up) leaves only its hidden build folder beside
    --out, which training cannot mistake for a prepared folder; the next run removes it."""
    stale = tmp_path / ".out.prepare-killed"
    (stale / "drive").mkdir(parents=True)
    (stale / "drive" / V.frame_name(0)).write_bytes(b"half a jpeg")
    prepare(video[0], "--out", tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert report(tmp_path / "out")["sequences"][0]["frames_kept"] == 14


# --- bad input: one line, exit code 2, nothing written -----------------------------------------

def noise_frames(n, size=(96, 64), seed=0, same=False):
    """n BGR uint8 frames of smooth noise; each shifted 2 px from the last unless ``same``."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.integers(0, 255, (size[1], size[0] + 2 * n, 3), np.uint8), (5, 5), 0)
    return [big[:, (0 if same else 2 * i):(0 if same else 2 * i) + size[0]] for i in range(n)]


def write_mp4(path, frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0,
                             (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame))
    writer.release()
    return str(path)


def write_folder(folder, frames, intrinsics=None):
    os.makedirs(folder)
    for i, frame in enumerate(frames):
        cv2.imwrite(os.path.join(folder, f"{i:04d}.png"), frame)
    if intrinsics is not None:
        with open(os.path.join(folder, "intrinsics.json"), "w") as f:
            json.dump(intrinsics, f)
    return str(folder)


def bad_input(kind, tmp):
    """(argv after the good video, text the error line must contain)."""
    if kind == "unreadable video":
        (tmp / "notes.mp4").write_text("not a video")
        return [tmp / "notes.mp4", "--fov", "60"], "notes.mp4: OpenCV reads no frame"
    if kind == "empty video":
        (tmp / "empty.mp4").write_bytes(b"")
        return [tmp / "empty.mp4", "--fov", "60"], "empty.mp4: OpenCV reads no frame"
    if kind == "video of 2 frames":
        return [write_mp4(tmp / "short.mp4", noise_frames(2)), "--fov", "60"], \
            "short.mp4 has 2 frame(s)"
    if kind == "static video":
        return [write_mp4(tmp / "still.mp4", noise_frames(12, same=True)), "--fov", "60"], \
            "still.mp4: the camera does not move"
    if kind == "mixed frame sizes":
        frames = noise_frames(4) + [cv2.resize(noise_frames(1)[0], (80, 64))]
        return [write_folder(tmp / "mixed", frames), "--fov", "60"], "mixes frame sizes"
    if kind == "no intrinsics":
        return [write_folder(tmp / "plain", noise_frames(6))], "no intrinsics for"
    if kind == "intrinsics outside the image":
        folder = write_folder(tmp / "offcentre", noise_frames(6),
                              {"fx": 80, "fy": 80, "cx": 130, "cy": 30})
        return [folder], "principal point (130, 30) lies outside the 96x64 image"
    raise AssertionError(kind)


BAD = ["unreadable video", "empty video", "video of 2 frames", "static video",
       "mixed frame sizes", "no intrinsics", "intrinsics outside the image"]


def run_cli(*argv):
    return subprocess.run([sys.executable, "prepare_video.py", *map(str, argv), "--no_progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_is_one_line_exit_2_and_nothing_written(kind, video, tmp_path):
    """The good drive comes first, so its frames are already in the build folder when the bad
    input stops the run: nothing of it may remain."""
    argv, message = bad_input(kind, tmp_path)
    out = tmp_path / "out"
    before = set(os.listdir(tmp_path))
    result = run_cli(video[0], *argv, "--out", out)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert set(os.listdir(tmp_path)) == before  # no --out, no build folder


def test_an_output_folder_holding_something_else_is_refused(video, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "thesis.txt").write_text("keep me")
    result = run_cli(video[0], "--out", out)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: --out {out} holds something else (no prepare.json): "
                                     "choose a new or empty folder")
    assert os.listdir(out) == ["thesis.txt"] and sorted(os.listdir(tmp_path)) == ["results"]


@pytest.mark.parametrize("argv, message", [
    (["--fov", "0"], "--fov 0 must be"),
    (["--crop_to_aspect", "wide"], "--crop_to_aspect 'wide' must be W:H"),
    (["--distortion", "0.1", "0", "0", "0"], "--distortion needs --intrinsics"),
    (["--calibration", "missing.yaml"], "--calibration missing.yaml does not exist"),
])
def test_bad_flags_are_one_line_exit_2(argv, message, video, tmp_path):
    result = run_cli(video[0], "--out", tmp_path / "out", *argv)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


# --- intrinsics sources ------------------------------------------------------------------------

def test_intrinsics_precedence_and_the_fov_guess(tmp_path, capsys):
    frames = noise_frames(8)
    folder = write_folder(tmp_path / "cam", frames, {"fx": 70, "fy": 72, "cx": 47, "cy": 31})
    prepare(folder, "--out", tmp_path / "a", "--fov", "90")   # the JSON beside it wins
    K = json.load(open(tmp_path / "a" / "cam" / V.INTRINSICS_FILE))["K"]
    np.testing.assert_allclose(K, [[70 / 96, 0, 47 / 96], [0, 72 / 64, 31 / 64], [0, 0, 1]])
    prepare(folder, "--out", tmp_path / "b", "--intrinsics", "60", "61", "50", "30")  # flag wins
    K = json.load(open(tmp_path / "b" / "cam" / V.INTRINSICS_FILE))["K"]
    np.testing.assert_allclose(K, [[60 / 96, 0, 50 / 96], [0, 61 / 64, 30 / 64], [0, 0, 1]])
    os.remove(os.path.join(folder, "intrinsics.json"))
    capsys.readouterr()
    prepare(folder, "--out", tmp_path / "c", "--fov", "90")    # 90 deg: f = W / 2
    assert "a GUESS" in capsys.readouterr().out
    record = json.load(open(tmp_path / "c" / "cam" / V.INTRINSICS_FILE))
    np.testing.assert_allclose(record["K"], [[0.5, 0, 0.5], [0, 48 / 64, 0.5], [0, 0, 1]])
    assert record["guess"] is True


def test_opencv_yaml_with_distortion_undistorts_and_stores_the_new_camera(tmp_path):
    frames = noise_frames(8, size=(160, 96))
    folder = write_folder(tmp_path / "cam", frames)
    K = np.array([[120.0, 0, 80], [0, 120, 48], [0, 0, 1]])
    dist = np.array([-0.2, 0.05, 0, 0, 0])
    fs = cv2.FileStorage(os.path.join(folder, "calibration.yaml"), cv2.FILE_STORAGE_WRITE)
    fs.write("camera_matrix", K)
    fs.write("distortion_coefficients", dist)
    fs.release()
    prepare(folder, "--out", tmp_path / "out")
    record = json.load(open(tmp_path / "out" / "cam" / V.INTRINSICS_FILE))
    new_K, _ = cv2.getOptimalNewCameraMatrix(K, dist, (160, 96), 0)
    np.testing.assert_allclose(np.array(record["K_pixels"]), new_K, rtol=1e-9)
    assert record["source"].endswith("calibration.yaml")
    stored = cv2.imread(str(tmp_path / "out" / "cam" / V.frame_name(0)))
    expected = cv2.undistort(frames[0], K, dist, None, new_K)
    undistorted = np.abs(stored.astype(float) - expected).mean()
    raw = np.abs(stored.astype(float) - frames[0]).mean()
    assert undistorted < 0.5 * raw, (undistorted, raw)  # JPEG and remap rounding: not exact


@pytest.mark.parametrize("ratio, step", [(0.4, 1), (1.41, 1), (1.42, 2), (2.44, 2), (2.5, 3),
                                         (3.0, 3), (3.46, 3), (3.47, 4)])
def test_the_step_rounds_the_motion_ratio_geometrically(ratio, step):
    """Step s covers target / median motion up to sqrt(s (s + 1)): 1.414, 2.449, 3.464."""
    assert V.choose_step([V.TARGET_MOTION / ratio] * 3) == step


@pytest.mark.slow
def test_prepare_train_evaluate_on_kitti_format_ground_truth(small_scene, tmp_path):
    """The two commands of the README on a video of drive 9001 of the small scene (the same drive
    its KITTI files hold), then evaluate_depth.py on the scene's KITTI-format ground truth."""
    import shutil
    data_path, split_dir = small_scene
    video = str(tmp_path / "drive_9001.mp4")
    write_video(video, seed=0, tag=9001, scene_frames=6, rate=3, static=((4, 3),), scale=SCALE)
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def cli(*argv):
        result = subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, capture_output=True,
                                text=True, timeout=600, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    # 6 scene frames are too few for a steady motion median: the step is given (the drive's frames)
    cli("prepare_video.py", video, "--out", tmp_path / "vid", "--frame_step", "3", "--no_progress")
    seq = report(tmp_path / "vid")["sequences"][0]
    assert (seq["static_dropped"], seq["frames_kept"]) == (3, 6)
    cli("train.py", "--model_name", "mine", "--dataset", "video", "--data_path", tmp_path / "vid",
        "--log_dir", tmp_path, "--height", "64", "--width", "192", "--batch_size", "2",
        "--num_epochs", "1", "--weights_init", "scratch", "--depth_decoder", "unet",
        "--num_workers", "0", "--no_progress")
    splits = tmp_path / "splits"
    shutil.copytree(os.path.join(split_dir, "synthetic"), splits / "synthetic")
    cli("export_gt_depth.py", "--data_path", data_path, "--split", "synthetic", "--split_dir", splits)
    weights = tmp_path / "mine" / "models" / "weights_0"
    cli("evaluate_depth.py", "--load_weights_folder", weights, "--eval_mono", "--eval_split",
        "synthetic", "--data_path", data_path, "--split_dir", splits, "--num_workers", "0",
        "--no_progress")
    record = json.loads((weights / "metrics.json").read_text())
    test_lines = (splits / "synthetic" / "test_files.txt").read_text().split("\n")[:-1]
    assert record["num_images"] == len(test_lines)
    assert 0 < record["metrics"]["abs_rel"] < 1


def test_the_scene_cli_writes_a_drive_as_a_video(tmp_path, capsys):
    from synthetic_scene import cli
    path = tmp_path / "mine.mp4"
    cli.main(["--video", str(path), "--seed", "5", "--num_frames", "3", "--rate", "2",
              "--static", "1:2"])
    assert "wrote" in capsys.readouterr().out
    record = json.loads((tmp_path / "mine.json").read_text())
    assert record["pose_of_frame"] == [0, 1, 1, 1, 2, 3, 4]  # 2 x 2 intervals + 1, frame 1 thrice
    assert (record["width"], record["height"], record["static_inserted"]) == (828, 250, 2)
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    assert count == 7


def test_frames_of_a_folder_are_read_in_name_order_numbers_by_value(tmp_path):
    folder = tmp_path / "cam"
    folder.mkdir()
    frames = noise_frames(12)
    for i, frame in enumerate(frames):  # frame_1 ... frame_12, no zero padding
        cv2.imwrite(str(folder / f"frame_{i + 1}.png"), frame)
    source = prepare_video.Source(str(folder))
    assert [os.path.basename(p) for p in source.files] == [f"frame_{i}.png" for i in range(1, 13)]
    for index, image in source.frames():
        assert np.array_equal(image, frames[index])
