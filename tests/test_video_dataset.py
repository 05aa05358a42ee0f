"""The dataset registry (``dataset_registry.py``) and the prepared-video source (``--dataset
video``): one table that the options, the image cache and evaluation read; mono split lines;
per-sequence intrinsics checked when the dataset is built."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import dataset_registry
import prepare_cache
import prepare_video
from datasets import MonoDataset, VideoDataset, build_dataset, dataset_class
from datasets import video_io as V
from evaluation.protocol import DepthEvalSettings, build_test_dataset
from options import SRDOptions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def frames(n, size=(96, 64), seed=0):
    """n BGR frames of smooth noise, each 2 px to the left of the last (a sideways pan)."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.integers(0, 255, (size[1], size[0] + 2 * n, 3), np.uint8), (5, 5), 0)
    return [big[:, 2 * i:2 * i + size[0]] for i in range(n)]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A prepared folder with two sequences: 'pan' (12 frames, fx 70 fy 72 cx 47 cy 31 at 96x64)
    and 'tilt' (8 frames, --fov 90)."""
    tmp = tmp_path_factory.mktemp("video_dataset")
    for name, n, intrinsics in (("pan", 12, {"fx": 70, "fy": 72, "cx": 47, "cy": 31}),
                                ("tilt", 8, None)):
        os.makedirs(tmp / name)
        for i, image in enumerate(frames(n, seed=len(name))):
            cv2.imwrite(str(tmp / name / f"{i:03d}.png"), image)
        if intrinsics:
            (tmp / name / "intrinsics.json").write_text(json.dumps(intrinsics))
    out = tmp / "prepared"
    prepare_video.main([str(tmp / "pan"), str(tmp / "tilt"), "--out", str(out), "--fov", "90",
                        "--frame_step", "1", "--no_progress"])
    return str(out)


def parse(*argv):
    return SRDOptions().parse([str(a) for a in argv])


# --- the registry -------------------------------------------------------------------------------

def test_every_registered_source_is_a_choice_everywhere_and_a_dataset_class():
    train_choices = next(a for a in SRDOptions().parser._actions if a.dest == "dataset").choices
    cache_choices = next(a for a in prepare_cache.build_parser()._actions
                         if a.dest == "dataset").choices
    assert list(train_choices) == list(cache_choices) == list(dataset_registry.DATASETS)
    for name, entry in dataset_registry.DATASETS.items():
        cls = dataset_class(name)
        assert issubclass(cls, MonoDataset) and cls.stereo == entry.stereo, name
    assert dataset_class("video") is VideoDataset


def test_a_source_without_intrinsics_fails_when_built():
    class NoCamera(MonoDataset):
        def get_image_path(self, folder, frame_index, side):
            return "unused.jpg"

    with pytest.raises(ValueError, match="NoCamera has no intrinsics: set its class attribute K"):
        NoCamera("data", ["a 1 l"], 64, 96, [0, -1, 1], 1)


def test_evaluation_builds_its_test_images_through_the_registry(prepared):
    settings = DepthEvalSettings(data_path=prepared, dataset="video")
    dataset = build_test_dataset("mine", ["pan 3", "tilt 2"], 64, 96, settings)
    assert isinstance(dataset, VideoDataset) and len(dataset) == 2
    image = cv2.imread(os.path.join(prepared, "pan", V.frame_name(3)))[..., ::-1]
    np.testing.assert_allclose(dataset[0][("color", 0, 0)].permute(1, 2, 0).numpy(),
                               image / 255.0, atol=1e-6)


def test_the_image_cache_reads_the_video_folder_and_its_own_lists(prepared, tmp_path):
    cache = tmp_path / "cache"
    prepare_cache.main(["--dataset", "video", "--data_path", prepared, "--cache_dir", str(cache),
                        "--width", "96", "--height", "64", "--workers", "1", "--no_progress"])
    manifest = json.loads((cache / "manifest.json").read_text())
    # pan: targets 1..9 for training (and their neighbours 0..10), 10 for validation; tilt (under
    # 10 targets: no validation): targets 1..6 and neighbours 0..7
    assert sorted(manifest["entries"]) == sorted(
        [f"pan/{V.frame_name(i)}" for i in range(11)] + [f"tilt/{V.frame_name(i)}" for i in range(8)])


# --- the video source -----------------------------------------------------------------------------

def test_options_take_the_split_from_the_data_folder_unless_given(prepared):
    opt = parse("--dataset", "video", "--data_path", prepared)
    assert opt.split == os.path.abspath(prepared)
    assert os.path.join(opt.split_dir, opt.split, "train_files.txt") == \
        os.path.join(prepared, "train_files.txt")
    assert parse("--dataset", "video", "--data_path", prepared, "--split", "mine").split == "mine"
    assert parse("--data_path", prepared).split == "eigen_zhou"


@pytest.mark.parametrize("flag, message", [
    ("--use_stereo", "--use_stereo needs a stereo source; --dataset video is mono"),
    ("--png", "--png does not apply to --dataset video: its frames are always .jpg"),
    ("--use_calib_file", "--use_calib_file reads KITTI calibration files"),
])
def test_flags_that_do_not_apply_to_a_mono_video_are_refused(flag, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse("--dataset", "video", flag)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_sample_has_the_neighbours_and_the_sequence_intrinsics(prepared):
    opt = parse("--dataset", "video", "--data_path", prepared, "--height", "64", "--width", "96")
    dataset = build_dataset(opt, os.path.join(opt.split, "train_files.txt"), is_train=False,
                            frame_ids=[0, -1, 1], num_scales=2)
    lines = dataset.filenames
    assert lines[0] == "pan 1" and all(len(line.split()) == 2 for line in lines)
    sample = dataset[lines.index("pan 4")]
    for offset in (0, -1, 1):
        image = cv2.imread(os.path.join(prepared, "pan", V.frame_name(4 + offset)))[..., ::-1]
        np.testing.assert_allclose(sample[("color", offset, 0)].permute(1, 2, 0).numpy(),
                                   image / 255.0, atol=1e-6)
    # fx, fy, cx, cy of the JSON (pixels of 96x64 frames), at scale 0 (96x64) and 1 (48x32)
    np.testing.assert_allclose(sample[("K", 0)].numpy()[:2, :3], [[70, 0, 47], [0, 72, 31]],
                               rtol=1e-6)
    np.testing.assert_allclose(sample[("K", 1)].numpy()[:2, :3], [[35, 0, 23.5], [0, 36, 15.5]],
                               rtol=1e-6)
    tilt = dataset[lines.index("tilt 3")]  # --fov 90 on 96 px: f = 48 px, centre (48, 32)
    np.testing.assert_allclose(tilt[("K", 0)].numpy()[:2, :3], [[48, 0, 48], [0, 48, 32]],
                               rtol=1e-6)


def test_missing_or_implausible_intrinsics_fail_when_built(prepared, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    os.remove(copy / "tilt" / V.INTRINSICS_FILE)
    with pytest.raises(FileNotFoundError, match=r"intrinsics file .*tilt/intrinsics.json does not "
                                                r"exist: .*prepare_video.py"):
        VideoDataset(str(copy), ["pan 1", "tilt 1"], 64, 96, [0, -1, 1], 1)
    record = json.loads((copy / "pan" / V.INTRINSICS_FILE).read_text())
    record["K"][0][2] = 1.4  # principal point right of the image
    (copy / "pan" / V.INTRINSICS_FILE).write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"pan/intrinsics.json: principal point .* outside"):
        VideoDataset(str(copy), ["pan 1"], 64, 96, [0, -1, 1], 1)


def test_mono_lines_have_no_side_and_no_stereo_frame(prepared):
    with pytest.raises(ValueError, match="VideoDataset is a mono source"):
        VideoDataset(prepared, ["pan 1"], 64, 96, [0, "s"], 1)
    dataset = VideoDataset(prepared, ["pan 1 l"], 64, 96, [0, -1, 1], 1)
    with pytest.raises(ValueError, match=r"expected '<folder> <frame index>' \(a mono source"):
        dataset[0]


@pytest.mark.slow
def test_train_py_trains_on_the_prepared_folder_with_its_own_split(prepared, tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", "--model_name", "video", "--dataset", "video", "--data_path",
         prepared, "--log_dir", str(tmp_path), "--height", "64", "--width", "96", "--batch_size",
         "2", "--num_epochs", "1", "--weights_init", "scratch", "--depth_decoder", "unet",
         "--num_workers", "0", "--no_progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "15 samples, 7 steps/epoch" in result.stdout  # 9 of pan + 6 of tilt, batch 2
    opt = json.loads((tmp_path / "video" / "models" / "opt.json").read_text())
    assert opt["split"] == os.path.abspath(prepared)
    assert os.path.isfile(tmp_path / "video" / "models" / "weights_0" / "depth.pth")


# --- pre-flight -----------------------------------------------------------------------------------

def test_preflight_names_a_fov_guess_and_implausible_intrinsics(prepared, tmp_path, capsys):
    import shutil
    VideoDataset(prepared, ["pan 1", "tilt 1"], 64, 96, [0, -1, 1], 1, is_train=True)
    out = capsys.readouterr().out.splitlines()
    assert out == ["warning: sequence tilt: the intrinsics are a guess (prepare_video.py --fov); "
                   "wrong ones bend the learned depth"]  # pan moves 2 % of the width: no motion line
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    record = json.loads((copy / "pan" / V.INTRINSICS_FILE).read_text())
    record["K"][0][0] = 0.1  # fx a tenth of the width: a 157 deg field of view
    (copy / "pan" / V.INTRINSICS_FILE).write_text(json.dumps(record))
    lines = VideoDataset(str(copy), ["pan 1"], 64, 96, [0, -1, 1], 1).preflight()
    assert lines == ["warning: sequence pan: its intrinsics give a horizontal field of view of "
                     "157 deg (plausible: 20-150); check fx against the image width"]


def test_preflight_names_frames_that_barely_move(tmp_path):
    """A pan of 1 px per frame on 800 px wide frames (0.125 % of the width, a sixth of the target)
    kept at --frame_step 1."""
    rng = np.random.default_rng(1)
    big = cv2.GaussianBlur(rng.integers(0, 255, (240, 820, 3), np.uint8), (5, 5), 0)
    os.makedirs(tmp_path / "slow")
    for i in range(8):
        cv2.imwrite(str(tmp_path / "slow" / f"{i:02d}.png"), big[:, i:i + 800])
    prepare_video.main([str(tmp_path / "slow"), "--out", str(tmp_path / "out"), "--intrinsics",
                        "500", "500", "400", "120", "--frame_step", "1", "--no_progress"])
    lines = VideoDataset(str(tmp_path / "out"), ["slow 2", "slow 4"], 64, 96, [0, -1, 1],
                         1).preflight()
    assert len(lines) == 1 and lines[0].startswith("warning: the training frames barely move "
                                                   "(median optical flow 0.1")
    assert "larger --frame_step" in lines[0]


def test_validation_without_ground_truth_reports_the_photometric_loss(prepared, tmp_path):
    import torch

    from trainer import Trainer
    trainer = Trainer(parse("--dataset", "video", "--data_path", prepared, "--log_dir", tmp_path,
                            "--height", "64", "--width", "96", "--batch_size", "2",
                            "--weights_init", "scratch", "--depth_decoder", "unet",
                            "--num_workers", "0", "--no_progress"))
    val_batch = next(iter(trainer.data.val_loader))
    assert ("color", 1, 0) in val_batch and "depth_gt" not in val_batch
    metrics = trainer.validator(trainer.model)
    assert list(metrics) == ["photometric"] and 0 < metrics["photometric"] < 1
    # the same number as the model's own loss on that batch (the loader cycles: one val batch)
    trainer.model.eval()
    with torch.no_grad():
        _, terms = trainer.model(val_batch)
    assert metrics["photometric"] == pytest.approx(float(terms["photometric"]), rel=1e-5)
