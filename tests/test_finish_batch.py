"""The device-side finish of training batches (datasets/finish.py): a collated batch of
``finish_on_device`` samples + ``finish_batch`` equals the collated batch of the per-sample path,
every key and scale, with augmentation on under fixed seeds.

Tolerances (images in [0, 1], float32):
- ``("color", i, s)`` (scale 0 and the downscaled lower scales), ``K``, ``inv_K``, ``stereo_T``,
  ``depth_gt``: exact (the same float ops; F.interpolate of a batch = per image on the CPU).
- ``("color_aug", i, s)`` and the hue shift alone: ``FINISH_ATOL`` = 3e-6. Measured maxima of
  |batch − per-sample|: 4.2e-7 on the scene's samples here (16 samples x 4 frames x 4 scales,
  640x192), 8.9e-7 for the hue shift on the images of ``test_hue_matches_opencv``, and 1.4e-6 at
  worst over 120 random 320x96 images with random jitter draws and hue shifts in [-0.5, 0.5] (a
  one-off measurement, not a test). The per-sample path rotates hue through OpenCV's float HSV
  conversion (degrees, sector table), the batch path through a torch HSV conversion (sixths of a
  turn, sector-free formula); the brightness / contrast / saturation factors are float32 tensors
  instead of Python floats. Each is a few float32 roundings of values <= 1 (ulp <= 6e-8), so
  ~1e-6 is rounding, not a different result; 3e-6 is about 2x the worst measured, for other CPUs'
  (and GPUs') SIMD / FMA rounding.
"""

import random

import pytest
import torch
from torch.utils.data import default_collate

from datasets import KITTIRAWDataset, finish_batch
from datasets.finish import (COLOR_JITTER, DO_COLOR_AUG, FINISH_ATOL, adjust_hue_batch,
                             color_jitter_batch, is_unfinished)
from datasets.mono_dataset import ColorJitterParams, adjust_hue, apply_color_jitter

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

DATE = "2011_09_26"
DRIVE = f"{DATE}/{DATE}_drive_9001_sync"
FRAME_IDS = [0, -1, 1, "s"]
LINES = [f"{DRIVE} 1 l", f"{DRIVE} 1 r"]
H, W = 192, 640
JITTER_ATOL = FINISH_ATOL  # 3e-6


def datasets(root, **kwargs):
    """(per-sample path, finish_on_device path) on the same lines, training augmentation on."""
    return tuple(KITTIRAWDataset(root, LINES, H, W, FRAME_IDS, 4, is_train=True,
                                 finish_on_device=finish, **kwargs) for finish in (False, True))


def seeded_batches(full, unfinished, seeds):
    """The two collated batches of samples drawn under the same seeds."""
    a, b = [], []
    for n, seed in enumerate(seeds):
        random.seed(seed)
        a.append(full[n % len(full)])
        random.seed(seed)
        b.append(unfinished[n % len(unfinished)])
    return default_collate(a), default_collate(b)


def test_finished_batch_equals_the_per_sample_path(scene):
    full, unfinished = datasets(scene, load_depth=True)
    sample = unfinished[0]
    assert set(sample) == ({("color", i, 0) for i in FRAME_IDS} | {COLOR_JITTER, DO_COLOR_AUG}
                           | {(k, s) for k in ("K", "inv_K") for s in range(4)}
                           | {"stereo_T", "depth_gt"})
    assert sample[COLOR_JITTER].shape == (4,) and sample[COLOR_JITTER].dtype == torch.float32
    assert sample[DO_COLOR_AUG].dtype == torch.bool
    seen, worst = set(), 0.0
    for seeds in (range(0, 8), range(100, 108)):
        expected, batch = seeded_batches(full, unfinished, seeds)
        assert is_unfinished(batch)
        finished = finish_batch(batch)
        assert not is_unfinished(finished)
        assert finished.keys() == expected.keys()
        for key, value in expected.items():
            got = finished[key]
            assert got.shape == value.shape and got.dtype == value.dtype, key
            if isinstance(key, tuple) and key[0] == "color_aug":
                worst = max(worst, (got - value).abs().max().item())
                torch.testing.assert_close(got, value, atol=JITTER_ATOL, rtol=0, msg=str(key))
            else:
                assert torch.equal(got, value), key
        for n, seed in enumerate(seeds):
            random.seed(seed)
            aug = full.draw_augmentation()
            seen.add((aug.do_flip, aug.color is not None))
            assert bool(batch[DO_COLOR_AUG][n]) == (aug.color is not None)
            if aug.color is not None:
                assert batch[COLOR_JITTER][n].tolist() == pytest.approx(list(aug.color))
    assert seen == {(False, False), (False, True), (True, False), (True, True)}
    assert 0 < worst < JITTER_ATOL


def test_finish_batch_without_colour_aug_gives_color_exactly(scene):
    full, unfinished = datasets(scene, load_depth=False)
    _, batch = seeded_batches(full, unfinished, range(8))
    batch[DO_COLOR_AUG] = torch.zeros_like(batch[DO_COLOR_AUG])
    finished = finish_batch(batch)
    for i in FRAME_IDS:
        for s in range(4):
            assert torch.equal(finished[("color_aug", i, s)], finished[("color", i, s)])
    # mixed batch: the samples without colour augmentation are exact, the others jittered
    _, batch = seeded_batches(full, unfinished, range(8))
    mask = batch[DO_COLOR_AUG]
    assert 0 < int(mask.sum()) < len(mask)
    finished = finish_batch(batch)
    for s in range(4):
        color, aug = finished[("color", 0, s)], finished[("color_aug", 0, s)]
        assert torch.equal(aug[~mask], color[~mask])
        assert (aug[mask] - color[mask]).abs().mean() > 1e-3


def test_finish_batch_leaves_a_finished_batch_alone(scene):
    full, unfinished = datasets(scene, load_depth=False)
    expected, batch = seeded_batches(full, unfinished, range(4))
    assert not is_unfinished(expected)
    assert finish_batch(expected) is expected  # a full batch (per-sample path, hand-built)
    finished = finish_batch(batch)
    assert finish_batch(finished) is finished  # finishing twice is a no-op
    assert COLOR_JITTER not in finished and DO_COLOR_AUG not in finished
    assert finish_batch(batch, num_scales=2).keys() == {
        k for k in expected if not (isinstance(k, tuple) and len(k) == 3 and k[2] >= 2)}


def test_channels_last_batch_keeps_its_layout_and_values(scene):
    full, unfinished = datasets(scene, load_depth=False)
    _, batch = seeded_batches(full, unfinished, range(4))
    reference = finish_batch(batch)
    cl = {k: (v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v)
          for k, v in batch.items()}
    finished = finish_batch(cl)
    for key, value in reference.items():
        if isinstance(key, tuple) and key[0] in ("color", "color_aug"):
            assert finished[key].is_contiguous(memory_format=torch.channels_last), key
            torch.testing.assert_close(finished[key], value, atol=JITTER_ATOL, rtol=0)


def test_hue_matches_opencv():
    """The torch hue shift against the per-sample OpenCV one, per sample shift, on random colours
    with grey, black, white and saturated pixels mixed in, for shifts over the whole [-0.5, 0.5]."""
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(6, 3, 48, 64, generator=gen)
    image[:, :, :4] = torch.rand(6, 1, 4, 64, generator=gen)                      # grey
    image[:, :, 4:6] = 0.0
    image[:, :, 6:8] = 1.0
    image[:, :, 8:12] = (torch.rand(6, 3, 4, 64, generator=gen) > 0.5).float()    # corners
    image[:, :, 12:16] = torch.round(image[:, :, 12:16] * 255) / 255              # 8-bit levels
    hues = torch.tensor([-0.5, -0.1, -0.013, 0.0, 0.07, 0.5])
    got = adjust_hue_batch(image, hues.reshape(-1, 1, 1))
    expected = torch.stack([adjust_hue(x, float(h)) for x, h in zip(image, hues)])
    worst = (got - expected).abs().max().item()
    assert worst < JITTER_ATOL
    assert torch.equal(got[:, :, :8], image[:, :, :8])  # grey / black / white: unchanged


def test_color_jitter_batch_matches_the_per_sample_jitter():
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(3, 3, 24, 80, generator=gen)
    params = [ColorJitterParams(1.2, 0.8, 1.2, 0.1), ColorJitterParams(0.8, 1.2, 0.8, -0.1),
              ColorJitterParams(1.0, 1.0, 1.0, 0.0)]
    got = color_jitter_batch(image, torch.tensor([list(p) for p in params]))
    for x, p, y in zip(image, params, got):
        torch.testing.assert_close(y, apply_color_jitter(x, p), atol=JITTER_ATOL, rtol=0)
