"""Shared fixtures: synthetic KITTI-format scenes generated once per test session."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


# The loader tests' scene (test_datasets, test_image_cache, test_finish_batch, test_export_gt):
# 1 drive x 3 frames with .png images too, generated once per session.
LOADER_SCENE_PARAMS = dict(num_drives=1, num_frames=3, png=True, progress=False)


@pytest.fixture(scope="session")
def scene(tmp_path_factory):
    """data_path of the loader tests' scene (``LOADER_SCENE_PARAMS``)."""
    import synthetic_scene as sk
    root = tmp_path_factory.getbasetemp() / "synthetic_kitti_small"
    sk.generate(root, **LOADER_SCENE_PARAMS)
    return str(root)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (the loader runs with one thread per worker; two
    threads on a busy 2-core box are slower); restored after the module."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _scene(tmp_path_factory, name, num_drives, num_frames):
    import synthetic_scene as sk
    root = tmp_path_factory.mktemp(name)
    sk.generate(str(root), num_drives=num_drives, num_frames=num_frames, progress=False)
    split_dir = root / "splits"
    sk.write_splits(str(split_dir), num_drives=num_drives, num_frames=num_frames, odometry=False)
    return str(root), str(split_dir)


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory):
    """(data_path, split_dir): 2 drives x 6 frames, split 'synthetic' (for a few training steps)."""
    return _scene(tmp_path_factory, "small_scene", 2, 6)


@pytest.fixture(scope="session")
def demo_scene(tmp_path_factory):
    """(data_path, split_dir): the default scene (3 drives x 48 frames), as the demo uses it."""
    import synthetic_scene as sk
    return _scene(tmp_path_factory, "demo_scene", sk.DEFAULT_NUM_DRIVES, sk.DEFAULT_NUM_FRAMES)


@pytest.fixture
def mini_split(small_scene, tmp_path):
    """make(n_train) -> (data_path, split_dir) of a split 'mini' with n_train training lines of
    small_scene (with batch 2 and n_train 2: one step per epoch) and its validation lines."""
    import shutil

    def make(n_train=2):
        data_path, split_dir = small_scene
        dst = tmp_path / "splits" / "mini"
        dst.mkdir(parents=True)
        lines = open(os.path.join(split_dir, "synthetic", "train_files.txt")).read().splitlines()
        (dst / "train_files.txt").write_text("\n".join(lines[:n_train]) + "\n")
        shutil.copy(os.path.join(split_dir, "synthetic", "val_files.txt"), dst / "val_files.txt")
        return data_path, str(tmp_path / "splits")
    return make
