"""Split lists: the real KITTI lists (read from ../shared/kitti_splits when present) parse and match
the repo's checksums; download_splits.py fetches, verifies and refuses tampered files."""

import hashlib
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from utils import SPLITS_DIR, split_file_path

REPO = os.path.dirname(SPLITS_DIR)
SHARED = os.path.join(REPO, "..", "shared", "kitti_splits")
SCRIPT = os.path.join(SPLITS_DIR, "download_splits.py")
REPO_SUMS = os.path.join(SPLITS_DIR, "SHA256SUMS")

needs_shared = pytest.mark.skipif(not os.path.isdir(SHARED),
                                  reason="../shared/kitti_splits is not present")

sys.path.insert(0, SPLITS_DIR)
import download_splits  # noqa: E402  (a script in splits/, imported for its helpers)

sys.path.remove(SPLITS_DIR)


def sums(path):
    return dict(download_splits.read_checksums(path))


def list_files():
    return [name for name in sums(REPO_SUMS) if name.endswith(".txt")]


def expected_line_counts():
    """The 'Line counts:' paragraph of SOURCE.md → {relative path: count}."""
    with open(os.path.join(SHARED, "SOURCE.md"), encoding="utf-8") as f:
        text = f.read()
    counts = {name: int(n) for name, n in re.findall(r"([\w/]+\.txt) (\d+)", text)}
    assert len(counts) >= 14, counts
    return counts


def run_script(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          timeout=120)


def test_repo_checksums_cover_every_list():
    names = set(sums(REPO_SUMS))
    for expected in ("eigen/test_files.txt", "eigen_benchmark/test_files.txt",
                     "eigen_zhou/train_files.txt", "eigen_zhou/val_files.txt",
                     "eigen_full/train_files.txt", "eigen_full/val_files.txt",
                     "odom/train_files.txt", "odom/val_files.txt", "odom/test_files_09.txt",
                     "odom/test_files_10.txt", "benchmark/train_files.txt",
                     "benchmark/val_files.txt", "benchmark/test_files.txt",
                     "benchmark/eigen_to_benchmark_ids.npy", "kitti_archives_to_download.txt",
                     "make3d/test_img_list.txt", "make3d/test_depth_list.txt"):
        assert expected in names


def test_split_file_path_names_the_download_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"python splits/download_splits\.py"):
        split_file_path("eigen_zhou", "train_files.txt", splits_dir=str(tmp_path))
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileNotFoundError, match=r"split folders present: mine"):
        split_file_path("unknown_split", "train_files.txt", splits_dir=str(tmp_path))
    (tmp_path / "mine" / "train_files.txt").write_text("a 1 l\n")
    assert split_file_path("mine", "train_files.txt", splits_dir=str(tmp_path)).endswith(
        os.path.join("mine", "train_files.txt"))


@needs_shared
def test_repo_checksums_match_shared_and_actual_hashes():
    with open(REPO_SUMS, "rb") as a, open(os.path.join(SHARED, "SHA256SUMS"), "rb") as b:
        assert a.read() == b.read()
    for name, digest in sums(REPO_SUMS).items():
        with open(os.path.join(SHARED, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name


@needs_shared
def test_every_list_parses_and_line_counts_match_source_md():
    counts = expected_line_counts()
    date_drive = re.compile(r"^(\d{4}_\d{2}_\d{2})/\1_drive_\d{4}_sync$")
    for name in list_files():
        with open(os.path.join(SHARED, name), encoding="utf-8") as f:
            lines = f.read().splitlines()
        if name in counts:
            assert len(lines) == counts[name], name
        if name.startswith("make3d/"):
            assert all(line.strip().endswith((".jpg", ".mat")) for line in lines), name
            continue
        if name == "kitti_archives_to_download.txt":
            assert all(line.startswith("https://") and line.endswith(".zip") for line in lines)
            continue
        if name == "benchmark/test_files.txt":  # the depth benchmark test images: "image <n>"
            assert [line.split() for line in lines] == [["image", str(i)] for i in range(500)]
            continue
        for line in lines:
            folder, frame, side = line.split()
            assert side in ("l", "r"), (name, line)
            assert int(frame) >= 0
            if name.startswith("odom/"):
                assert 0 <= int(folder) <= 21, (name, line)
            else:
                assert date_drive.match(folder), (name, line)


@needs_shared
def test_eigen_to_benchmark_ids_index_the_benchmark_split():
    ids = np.load(os.path.join(SHARED, "benchmark", "eigen_to_benchmark_ids.npy"))
    assert ids.ndim == 1 and ids.dtype.kind == "i"
    assert ids.min() >= 0


@needs_shared
def test_download_from_local_source_fetches_and_verifies(tmp_path):
    dest = tmp_path / "splits"
    result = run_script("--source", SHARED, "--dest", str(dest))
    assert result.returncode == 0, result.stderr
    expected = sums(REPO_SUMS)
    assert f"{len(expected)} fetched" in result.stdout
    for name, digest in expected.items():
        assert hashlib.sha256((dest / name).read_bytes()).hexdigest() == digest
    again = run_script("--source", SHARED, "--dest", str(dest))
    assert again.returncode == 0
    assert f"0 fetched, {len(expected)} already present" in again.stdout


@needs_shared
def test_tampered_source_exits_2_and_leaves_no_file(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(SHARED, source)
    tampered = source / "eigen" / "test_files.txt"
    tampered.write_text(tampered.read_text().replace(" l\n", " r\n", 1))
    dest = tmp_path / "dest"
    result = run_script("--source", str(source), "--dest", str(dest))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line]
    assert len(errors) == 1 and errors[0].startswith("error: eigen/test_files.txt: checksum mismatch")
    assert not (dest / "eigen" / "test_files.txt").exists()
    assert not [p for p in dest.rglob("*") if p.name.endswith(".tmp")]
    assert (dest / "eigen_benchmark" / "test_files.txt").exists()  # the valid ones are written


def test_unreachable_source_exits_2(tmp_path):
    result = run_script("--source", str(tmp_path / "nowhere"), "--dest", str(tmp_path / "dest"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: source folder")
    assert "nowhere" in result.stderr
    assert not (tmp_path / "dest").exists()
