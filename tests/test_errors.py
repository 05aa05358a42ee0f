"""Every failure a user can cause ends in one line and exit code 2 (issue 15): a damaged checkpoint at
every entry point, a planted pickle in a run folder (refused, with no effect), a corrupt image with
and without DataLoader workers, missing data before the first step (no run folder left), a failing
DDP rank, and the resumable state kept only in the newest weights folder."""

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eval_helpers as H  # noqa: E402

import checkpointing as ckpt  # noqa: E402
import evaluate_depth  # noqa: E402
import evaluate_pose  # noqa: E402
import test_simple  # noqa: E402
import train  # noqa: E402
from options import SRDOptions  # noqa: E402
from trainer import Trainer  # noqa: E402
from utils import run_cli  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- helpers
def cli_exit(capsys, main, argv):
    """Run ``main`` as its script does (run_cli); returns (exit code, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_cli(main, argv)
    return info.value.code, capsys.readouterr().err


def assert_one_line(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


def truncate(path):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    return ["truncated"]


def reshape(path):
    """Give the first weight tensor of ``path`` one more output channel; returns what the error
    must name (the key and both shapes)."""
    sd = torch.load(path, weights_only=True)
    key = next(k for k, v in sd.items() if torch.is_tensor(v) and v.ndim >= 2)
    old = list(sd[key].shape)
    sd[key] = torch.zeros([old[0] + 1] + old[1:])
    torch.save(sd, path)
    return [repr(key), str([old[0] + 1] + old[1:]), str(old)]


DAMAGE = {"truncated": truncate, "shape": reshape}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """KITTI-raw frames + split 'synthetic' (depth), an odometry sequence + split 'odom' (pose), and
    an untrained run's models folder (ResNet-18, U-Net with DOR, separate pose network, 192x64)."""
    base = tmp_path_factory.mktemp("errors")
    root, splits = str(base / "data"), str(base / "splits")
    H.make_kitti_split(root, splits, "synthetic", 2)
    odom_root = base / "odom"
    for i in range(3):
        H.random_image(str(odom_root / "sequences" / "09" / "image_2" / f"{i:06d}.jpg"), 240, 72, i)
    (odom_root / "poses").mkdir()
    (odom_root / "poses" / "09.txt").write_text(
        "".join(f"1 0 0 0 0 1 0 0 0 0 1 {i}\n" for i in range(3)))
    (base / "splits" / "odom").mkdir()
    (base / "splits" / "odom" / "test_files_09.txt").write_text("9 0 l\n9 1 l\n")
    models = str(base / "run" / "models")
    H.make_checkpoint(models)
    image = H.random_image(str(base / "image.jpg"), 64, 32, 0)
    return {"root": root, "splits": splits, "odom": str(odom_root), "models": models,
            "image": image}


def damaged_folder(data, tmp_path, name, damage):
    models = tmp_path / "models"
    shutil.copytree(data["models"], models)
    folder = str(models / "weights_0")
    needles = DAMAGE[damage](os.path.join(folder, name))
    return folder, [os.path.join(folder, name)] + needles


def train_args(data_path, split_dir, log_dir, *extra, name="run"):
    return ["--data_path", data_path, "--split_dir", split_dir, "--split", "mini", "--log_dir",
            str(log_dir), "--model_name", name, "--height", "64", "--width", "192", "--batch_size",
            "1", "--num_epochs", "1", "--num_workers", "0", "--weights_init", "scratch",
            "--depth_decoder", "unet", "--no_progress", *extra]


# ---------------------------------------------------------------- 1. damaged checkpoints
@pytest.mark.parametrize("name, damage", [("encoder.pth", "truncated"), ("depth.pth", "shape")])
def test_evaluate_depth_damaged_checkpoint(data, tmp_path, capsys, name, damage):
    folder, needles = damaged_folder(data, tmp_path, name, damage)
    code, err = cli_exit(capsys, lambda a: evaluate_depth.main(a, splits_dir=data["splits"]),
                         ["--data_path", data["root"], "--num_workers", "0", "--no_progress",
                          "--no_cuda", "--eval_split", "synthetic", "--eval_mono",
                          "--load_weights_folder", folder])
    assert_one_line(code, err, *needles)


@pytest.mark.parametrize("name, damage", [("depth.pth", "truncated"), ("encoder.pth", "shape")])
def test_test_simple_damaged_checkpoint(data, tmp_path, capsys, name, damage):
    folder, needles = damaged_folder(data, tmp_path, name, damage)
    code, err = cli_exit(capsys, test_simple.main, ["--image_path", data["image"], "--model_path",
                                                    folder, "--output_dir", str(tmp_path / "out")])
    assert_one_line(code, err, *needles)


@pytest.mark.parametrize("name, damage", [("pose_encoder.pth", "truncated"), ("pose.pth", "shape")])
def test_evaluate_pose_damaged_checkpoint(data, tmp_path, capsys, name, damage):
    folder, needles = damaged_folder(data, tmp_path, name, damage)
    code, err = cli_exit(capsys, lambda a: evaluate_pose.main(a, splits_dir=data["splits"]),
                         ["--data_path", data["odom"], "--num_workers", "0", "--no_progress",
                          "--no_cuda", "--eval_split", "odom_9", "--load_weights_folder", folder])
    assert_one_line(code, err, *needles)


@pytest.mark.parametrize("name, damage", [("pose.pth", "truncated"), ("encoder.pth", "shape")])
def test_train_warm_start_damaged_checkpoint(data, mini_split, tmp_path, capsys, name, damage):
    folder, needles = damaged_folder(data, tmp_path, name, damage)
    data_path, split_dir = mini_split()
    code, err = cli_exit(capsys, train.main, train_args(data_path, split_dir, tmp_path / "logs",
                                                        "--load_weights_folder", folder))
    assert_one_line(code, err, *needles)


def test_a_non_pytorch_file_is_named_as_such(data, tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(data["models"], models)
    path = models / "weights_0" / "depth.pth"
    path.write_text("<html>404 Not Found</html>\n")
    code, err = cli_exit(capsys, test_simple.main, ["--image_path", data["image"], "--model_path",
                                                    str(path.parent)])
    assert_one_line(code, err, str(path), "not a PyTorch file")


# ---------------------------------------------------------------- 1 + 2. --resume
@pytest.fixture
def saved_run(mini_split, tmp_path):
    """A run folder with models/opt.json and weights_0 (a checkpoint saved before any step)."""
    data_path, split_dir = mini_split()
    opt = SRDOptions().parse(train_args(data_path, split_dir, tmp_path / "logs"))
    trainer = Trainer(opt)
    for writer in trainer.writers.values():
        writer.close()
    trainer.save_checkpoint()
    run = tmp_path / "logs" / "run"
    return {"run": str(run), "weights": run / "models" / "weights_0", "trainer": trainer}


class _Plant:
    """Unpickling this (with a loader that runs code) creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_state_loads_without_running_code(saved_run):
    state = torch.load(saved_run["weights"] / "training_state.pt", weights_only=True)
    assert {"epoch", "step", "optimizer", "scheduler", "rng"} <= set(state)


def test_resume_refuses_a_planted_pickle_and_it_has_no_effect(saved_run, tmp_path, capsys):
    state_file = saved_run["weights"] / "training_state.pt"
    state = torch.load(state_file, weights_only=True)
    marker = tmp_path / "planted"
    state["rng"]["extra"] = _Plant(str(marker))
    torch.save(state, state_file)
    # the plant works: an unsafe load would create the file
    control = tmp_path / "control.pt"
    torch.save({"x": _Plant(str(tmp_path / "control"))}, control)
    torch.load(control, weights_only=False)
    assert (tmp_path / "control").exists()

    code, err = cli_exit(capsys, train.main, ["--resume", saved_run["run"]])
    assert_one_line(code, err, str(state_file), "refused")
    assert not marker.exists()


@pytest.mark.parametrize("name, damage", [("training_state.pt", "truncated"),
                                          ("depth.pth", "shape")])
def test_resume_damaged_checkpoint(saved_run, tmp_path, capsys, name, damage):
    path = str(saved_run["weights"] / name)
    needles = DAMAGE[damage](path)
    code, err = cli_exit(capsys, train.main, ["--resume", saved_run["run"]])
    assert_one_line(code, err, path, *needles)


# ---------------------------------------------------------------- 6. one resumable state
def test_state_kept_only_in_the_newest_folder_and_a_kill_during_a_save_resumes_the_previous(
        saved_run, monkeypatch):
    trainer, models = saved_run["trainer"], saved_run["weights"].parent
    trainer.epoch = 1
    real_save = torch.save

    def killed(obj, path, *a, **k):  # the process dies while writing weights_1's state
        if str(path).endswith(os.path.join("weights_1.partial", "training_state.pt")):
            raise KeyboardInterrupt
        return real_save(obj, path, *a, **k)
    monkeypatch.setattr(ckpt.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint()
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert ckpt.find_training_state(saved_run["run"]) == str(models / "weights_0" /
                                                            "training_state.pt")
    assert ckpt.load_training_state(ckpt.find_training_state(saved_run["run"]), "cpu")["epoch"] == 0

    # killed after the new folder is in place but before the old state is removed: the newest wins
    monkeypatch.setattr(ckpt, "remove_older_training_states", lambda folder: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        trainer.save_checkpoint()
    monkeypatch.undo()
    assert ckpt.find_training_state(saved_run["run"]).endswith(
        os.path.join("weights_1", "training_state.pt"))

    trainer.epoch = 2
    trainer.save_checkpoint()
    states = sorted(p.parent.name for p in models.glob("weights_*/training_state.pt"))
    assert states == ["weights_2"]
    assert (models / "weights_0" / "encoder.pth").is_file()
    assert not list(models.glob("*.partial"))

    trainer.opt.keep_training_states = True
    trainer.epoch = 3
    trainer.save_checkpoint()
    states = sorted(p.parent.name for p in models.glob("weights_*/training_state.pt"))
    assert states == ["weights_2", "weights_3"]


def test_the_demo_keeps_only_the_best_and_the_newest_weights(tmp_path):
    import types

    import demo
    models = tmp_path / "models"
    trainer = types.SimpleNamespace(epoch=3, weights_folder=lambda e: str(models / f"weights_{e}"))
    for epoch in range(4):
        (models / f"weights_{epoch}").mkdir(parents=True)
    rows = [("init", {"abs_rel": 0.5})] + [(str(e), {"abs_rel": a})
                                           for e, a in enumerate([0.3, 0.2, 0.25, 0.26])]
    demo.prune_weights(trainer, rows)
    assert sorted(p.name for p in models.iterdir()) == ["weights_1", "weights_3"]


# ---------------------------------------------------------------- 3. corrupt image, 0 or 2 workers
def test_a_corrupt_jpeg_gives_the_same_line_with_and_without_workers(small_scene, tmp_path, capsys):
    data_path, split_dir = small_scene
    line = open(os.path.join(split_dir, "synthetic", "train_files.txt")).read().splitlines()[0]
    folder, frame, _ = line.split()
    shutil.copytree(data_path, tmp_path / "data", ignore=shutil.ignore_patterns("splits"))
    image = tmp_path / "data" / folder / "image_02" / "data" / f"{int(frame):010d}.jpg"
    image.write_bytes(image.read_bytes()[:200])
    (tmp_path / "splits" / "mini").mkdir(parents=True)
    (tmp_path / "splits" / "mini" / "train_files.txt").write_text(line + "\n")
    lines = []
    for workers in ("0", "2"):
        code, err = cli_exit(capsys, train.main, train_args(
            str(tmp_path / "data"), str(tmp_path / "splits"), tmp_path / f"logs{workers}",
            "--num_workers", workers))
        assert_one_line(code, err, str(image), "split line 1", "remove that line")
        lines.append(err)
    assert lines[0] == lines[1]


# ---------------------------------------------------------------- 4. data checked first
def test_a_missing_frame_fails_before_the_model_and_the_run_folder(mini_split, tmp_path, capsys,
                                                                    monkeypatch):
    data_path, split_dir = mini_split()
    split = os.path.join(split_dir, "mini", "train_files.txt")
    folder = open(split).read().split()[0]
    with open(split, "a") as f:
        f.write(f"{folder} 40 l\n")   # frames 39, 40 and 41 do not exist
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    args = train_args(data_path, split_dir, tmp_path / "logs")
    args[args.index("scratch")] = "pretrained"  # the data error comes before the ImageNet one
    start = time.perf_counter()
    code, err = cli_exit(capsys, train.main, args)
    assert time.perf_counter() - start < 30
    missing = os.path.join(data_path, folder, "image_02", "data", "0000000040.jpg")
    assert_one_line(code, err, "3 of the", missing, "line 3", split)
    assert not (tmp_path / "logs").exists()


def test_the_file_check_of_a_40k_line_split_is_fast(tmp_path):
    from datasets.kitti_dataset import KITTIRAWDataset
    drives = [f"2011_09_26/2011_09_26_drive_{d:04d}_sync" for d in range(20)]
    for drive in drives:
        folder = tmp_path / drive / "image_02" / "data"
        folder.mkdir(parents=True)
        for i in range(2002):
            (folder / f"{i:010d}.jpg").touch()
    lines = [f"{drive} {i} l" for drive in drives for i in range(1, 2001)]
    dataset = KITTIRAWDataset(str(tmp_path), lines, 64, 192, [0, -1, 1], 1, is_train=True)
    start = time.perf_counter()
    checked, missing = dataset.missing_files()
    elapsed = time.perf_counter() - start
    assert checked == 20 * 2002 and missing == []
    assert elapsed < 5, elapsed


# ---------------------------------------------------------------- 5. a failing DDP rank
@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "legacy"])
def test_a_corrupt_sample_on_rank_1_ends_the_job_with_its_line_last(small_scene, tmp_path,
                                                                    launcher):
    from torch.utils.data.distributed import DistributedSampler
    data_path, split_dir = small_scene
    all_lines = open(os.path.join(split_dir, "synthetic", "train_files.txt")).read().splitlines()
    first = all_lines[0].split()
    other = next(line for line in all_lines if line.split()[0] != first[0]
                 or abs(int(line.split()[1]) - int(first[1])) >= 3)
    lines = [all_lines[0], other]   # two lines that share no frame
    (tmp_path / "splits" / "mini").mkdir(parents=True)
    (tmp_path / "splits" / "mini" / "train_files.txt").write_text("\n".join(lines) + "\n")
    rank1 = list(DistributedSampler(lines, num_replicas=2, rank=1, shuffle=True, seed=1234,
                                    drop_last=True))[0]
    folder, frame, _ = lines[rank1].split()
    root = tmp_path / "data"
    shutil.copytree(data_path, root, ignore=shutil.ignore_patterns("splits"))
    image = root / folder / "image_02" / "data" / f"{int(frame):010d}.jpg"
    image.write_bytes(b"not a jpeg")
    args = ["train.py"] + train_args(str(root), str(tmp_path / "splits"), tmp_path / "logs",
                                     "--seed", "1234")
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    else:
        with __import__("socket").socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node=2",
               "--master_port", str(port)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(cmd + args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode != 0
    tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-10:])
    assert re.search(rf"error: image \S*{int(frame):010d}\.jpg is corrupt", tail), tail
    assert "rank      : 1" in tail, tail
