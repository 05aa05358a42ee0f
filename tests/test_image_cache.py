"""The training-size image cache (datasets/image_cache.py, prepare_cache.py): bit-identical samples,
fallback to the original files with one line per reason, and the builder's resume / errors."""

import argparse
import os
import random
import re
import shutil

import numpy as np
import PIL.Image
import pytest
import torch

import prepare_cache
from datasets import KITTIRAWDataset, build_dataset
from datasets import image_cache as C
from datasets import mono_dataset
from utils import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

DATE = "2011_09_26"
DRIVE = f"{DATE}/{DATE}_drive_9001_sync"
FRAME_IDS = [0, -1, 1, "s"]
LINES = [f"{DRIVE} 1 l", f"{DRIVE} 1 r"]
H, W = 96, 320


@pytest.fixture
def own_scene(scene, tmp_path):
    """A private copy of the scene's images (tests that change a source file)."""
    dst = tmp_path / "scene"
    shutil.copytree(os.path.join(scene, DATE), dst / DATE,
                    ignore=shutil.ignore_patterns("velodyne_points", "proj_depth", "*.png"))
    return str(dst)


def build(data_path, cache_dir, tmp_path, lines=LINES, extra=(), width=W, height=H):
    split = tmp_path / "cache_list.txt"
    split.write_text("\n".join(lines) + "\n")
    return prepare_cache.main(["--data_path", data_path, "--cache_dir", str(cache_dir),
                               "--split", "none", "--split_files", str(split), "--use_stereo",
                               "--width", str(width), "--height", str(height), "--no_progress",
                               "--workers", "1", *extra])


def dataset(root, cache=None, lines=LINES, log=None, width=W, height=H):
    if cache is not None and log is not None:
        cache = C.ImageCache(cache, root, width, height, log=log)
    return KITTIRAWDataset(root, list(lines), height, width, FRAME_IDS, 4, is_train=True,
                           load_depth=False, image_cache=cache)


def assert_same_sample(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
        assert a[key].stride() == b[key].stride(), key


def test_cached_sample_is_bit_identical_with_augmentation(scene, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    assert build(scene, cache, tmp_path) == 0
    plain, cached = dataset(scene), dataset(scene, str(cache))
    decoded = []
    load_rgb = mono_dataset.load_rgb
    monkeypatch.setattr(mono_dataset, "load_rgb", lambda path: decoded.append(path) or load_rgb(path))
    seen = set()
    for seed in range(16):
        for index in range(len(LINES)):
            random.seed(seed)
            aug = plain.draw_augmentation()
            seen.add((aug.do_flip, aug.color is not None))
            random.seed(seed)
            a = plain[index]
            assert len(decoded) == len(FRAME_IDS)
            decoded.clear()
            random.seed(seed)
            b = cached[index]
            assert decoded == []  # every frame came from the cache
            assert_same_sample(a, b)  # every key, every scale, colour + flip augmentation
    assert seen == {(False, False), (False, True), (True, False), (True, True)}
    assert len(a) == 2 * len(FRAME_IDS) * 4 + 2 * 4 + 1


def test_cache_stores_the_loaders_uint8_resize(scene, tmp_path):
    cache = tmp_path / "cache"
    build(scene, cache, tmp_path, lines=LINES[:1])
    manifest = C.read_manifest(str(cache))
    assert (manifest["width"], manifest["height"], manifest["dtype"]) == (W, H, "uint8")
    rel = f"{DRIVE}/image_02/data/0000000001.jpg"
    entry = manifest["entries"][rel]
    source = os.path.join(scene, rel)
    assert (entry["size"], entry["mtime_ns"]) == C.source_signature(source)
    stored = np.load(os.path.join(cache, entry["file"]), mmap_mode="r")
    rgb = np.asarray(PIL.Image.open(source).convert("RGB"))
    assert stored.dtype == np.uint8 and stored.shape == (H, W, 3)
    np.testing.assert_array_equal(stored, C.resize_rgb(rgb, W, H))
    # the float image is the resized uint8 / 255: storing uint8 loses nothing
    assert torch.equal(mono_dataset.image_to_tensor(np.array(stored), W, H),
                       mono_dataset.image_to_tensor(rgb, W, H))


def change_image(path):
    image = np.asarray(PIL.Image.open(path).convert("RGB"))
    PIL.Image.fromarray(255 - image).save(path, quality=90)


def test_stale_entry_is_detected_and_the_original_used_with_one_line(own_scene, tmp_path):
    cache = tmp_path / "cache"
    build(own_scene, cache, tmp_path)
    source = os.path.join(own_scene, DRIVE, "image_02", "data", "0000000002.jpg")
    change_image(source)  # the source changed after the cache was built
    lines = []
    cached = dataset(own_scene, str(cache), log=lines.append)
    assert len(lines) == 1 and "1 of" in lines[0] and "changed" in lines[0] and source in lines[0]
    plain = dataset(own_scene)
    for seed in range(4):
        random.seed(seed)
        a = plain[0]
        random.seed(seed)
        assert_same_sample(a, cached[0])  # the changed image came from the new file
    assert len(lines) == 1  # not repeated per sample

    # a change while the dataset is in use is caught per image, and said once
    build(own_scene, cache, tmp_path)  # resumes: rewrites the stale entry
    lines = []
    cached = dataset(own_scene, str(cache), log=lines.append)
    assert lines == []
    change_image(source)
    for seed in range(3):
        random.seed(seed)
        a = plain[0]
        random.seed(seed)
        assert_same_sample(a, cached[0])
    assert len(lines) == 1 and "changed" in lines[0] and source in lines[0]


def test_other_size_missing_and_unreadable_entries_fall_back(scene, tmp_path):
    cache = tmp_path / "cache"
    build(scene, cache, tmp_path, lines=LINES[:1])  # line 1 l only: 'r' frames missing
    plain = dataset(scene)

    lines = []
    other = dataset(scene, str(cache), log=lines.append, width=W * 2, height=H * 2)
    assert len(lines) == 1 and "not used" in lines[0] and f"{W}x{H}" in lines[0]
    random.seed(0)
    sample = other[0]
    assert len(lines) == 1 and sample[("color", 0, 0)].shape == (3, H * 2, W * 2)

    manifest = C.read_manifest(str(cache))
    victim = os.path.join(cache, manifest["entries"][f"{DRIVE}/image_02/data/0000000000.jpg"]["file"])
    with open(victim, "r+b") as f:
        f.truncate(100)
    lines = []
    cached = dataset(scene, str(cache), log=lines.append)
    assert len(lines) == 1 and "not in the cache" in lines[0]
    for index in (0, 1, 0, 1):
        random.seed(index)
        a = plain[index]
        random.seed(index)
        assert_same_sample(a, cached[index])
    assert len(lines) == 2 and "unreadable" in lines[1]


def test_prepare_cache_resumes_and_writes_atomically(scene, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert build(scene, cache, tmp_path, extra=["--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "0 already cached, 6 to write" in out
    assert build(scene, cache, tmp_path) == 0
    assert "6 already cached, 0 to write" in capsys.readouterr().out
    manifest = C.read_manifest(str(cache))
    os.remove(os.path.join(cache, manifest["entries"][f"{DRIVE}/image_03/data/0000000002.jpg"]
                           ["file"]))
    assert build(scene, cache, tmp_path) == 0
    assert "5 already cached, 1 to write" in capsys.readouterr().out
    leftovers = [n for _, _, names in os.walk(cache) for n in names if n.endswith(".tmp")]
    assert leftovers == []


def test_prepare_cache_bad_input_is_one_line_and_exit_2(scene, tmp_path, capsys):
    def fails(argv, pattern):
        with pytest.raises(SystemExit) as exc:
            run_cli(prepare_cache.main, argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
        assert re.search(pattern, err), err

    cache = str(tmp_path / "cache")
    fails(["--data_path", str(tmp_path / "nope"), "--cache_dir", cache], "--data_path")
    fails(["--data_path", scene, "--cache_dir", cache, "--split", "no_such_split",
           "--split_dir", str(tmp_path)], "no_such_split")
    fails(["--data_path", scene, "--cache_dir", cache, "--split", "none", "--split_files",
           str(tmp_path / "missing.txt")], "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{DRIVE} 99 l\n")
    fails(["--data_path", scene, "--cache_dir", cache, "--split", "none", "--split_files",
           str(bad)], "missing under --data_path")
    build(scene, cache, tmp_path, lines=LINES[:1])
    capsys.readouterr()
    fails(["--data_path", scene, "--cache_dir", cache, "--split", "none", "--split_files",
           str(tmp_path / "cache_list.txt"), "--width", "640", "--no_progress"],
          "another cache.*--force")
    with pytest.raises(FileNotFoundError, match="no manifest.json.*prepare_cache.py"):
        dataset(scene, str(tmp_path / "no_cache"))


def test_build_dataset_passes_the_image_cache(scene, tmp_path):
    cache = tmp_path / "cache"
    build(scene, cache, tmp_path, lines=LINES[:1])
    opt = argparse.Namespace(dataset="kitti", data_path=scene, height=H, width=W, png=False,
                             use_calib_file=False, frame_ids=[0, -1, 1], image_cache=str(cache))
    ds = build_dataset(opt, LINES[:1], is_train=False, frame_ids=[0], num_scales=1)
    assert isinstance(ds.image_cache, C.ImageCache)
    del opt.image_cache
    assert build_dataset(opt, LINES[:1], is_train=False, frame_ids=[0], num_scales=1).image_cache \
        is None
