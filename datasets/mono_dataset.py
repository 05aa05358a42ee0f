"""The batch-dict contract shared by every dataset of the repo (``MonoDataset``) and its fast
image path: decode once, resize once with antialiasing, build lower scales on tensors, and colour
jitter drawn once per sample."""

import collections
import os
import random

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.data as data
from torchvision.transforms.v2 import functional as TF

from utils import load_rgb  # noqa: F401  (the loader's decoder; re-exported for callers)

from .finish import COLOR_JITTER, DO_COLOR_AUG, NEUTRAL_JITTER
from .image_cache import ImageCache, resize_rgb

ColorJitterParams = collections.namedtuple("ColorJitterParams",
                                           ["brightness", "contrast", "saturation", "hue"])
ColorJitterParams.__doc__ = """Factors of one colour-jitter draw, applied in this order:
brightness, contrast, saturation (multiplicative factors, 1 = unchanged) and hue (shift in
[-0.5, 0.5] of a full turn, 0 = unchanged)."""

Augmentation = collections.namedtuple("Augmentation", ["do_flip", "color"])
Augmentation.__doc__ = """The random choices of one sample: ``do_flip`` (bool) and ``color``
(a ``ColorJitterParams`` or None for no colour augmentation)."""

NO_AUGMENTATION = Augmentation(do_flip=False, color=None)

# ranges of the training colour augmentation (Monodepth2's): factors in [1 - x, 1 + x], hue in ±x
BRIGHTNESS = 0.2
CONTRAST = 0.2
SATURATION = 0.2
HUE = 0.1


def image_to_tensor(rgb, width, height):
    """Resize an [h,w,3] uint8 image to (height, width) with area averaging (antialiased when
    shrinking) and return a [3,height,width] float32 tensor in [0, 1].

    The resize (``resize_rgb``) maps uint8 to uint8, so the image cache stores its result exactly;
    the float conversion comes after it."""
    rgb = resize_rgb(rgb, width, height)
    if not rgb.flags.writeable:  # a PIL buffer or a cache memory map: torch wants to own it
        rgb = rgb.copy()
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)


def downscale(image, height, width):
    """[C,h,w] tensor → [C,height,width] with antialiased bilinear interpolation
    (``align_corners=False``)."""
    return F.interpolate(image[None], size=(height, width), mode="bilinear", antialias=True,
                         align_corners=False)[0]


def draw_color_jitter():
    """Draw one ``ColorJitterParams`` from Python's global RNG (brightness, contrast, saturation
    factors uniform in [0.8, 1.2]; hue uniform in [-0.1, 0.1])."""
    return ColorJitterParams(brightness=random.uniform(1 - BRIGHTNESS, 1 + BRIGHTNESS),
                             contrast=random.uniform(1 - CONTRAST, 1 + CONTRAST),
                             saturation=random.uniform(1 - SATURATION, 1 + SATURATION),
                             hue=random.uniform(-HUE, HUE))


def apply_color_jitter(image, params):
    """Apply ``params`` to a [3,H,W] (or [B,3,H,W]) float image in [0, 1], in the fixed order
    brightness, contrast, saturation, hue (torchvision's ``adjust_*``; each clamps to [0, 1]).
    Contrast blends with the mean grey level of the image it is applied to.

    Brightness, contrast and saturation are torchvision's float kernels op for op (same values),
    called directly: the dispatch of ``torchvision.transforms.v2.functional`` costs as much as the
    arithmetic on the small lower-scale images."""
    if not image.is_floating_point() or image.shape[-3] != 3:
        image = TF.adjust_brightness(image, params.brightness)
        image = TF.adjust_contrast(image, params.contrast)
        image = TF.adjust_saturation(image, params.saturation)
        return adjust_hue(image, params.hue)
    for factor in params[:3]:
        if factor < 0:
            raise ValueError(f"colour jitter factors must be non-negative, got {params}")
    image = image.mul(params.brightness).clamp_(0, 1.0)
    mean = torch.mean(_grayscale(image), dim=(-3, -2, -1), keepdim=True)
    image = _blend(image, mean, params.contrast)
    image = _blend(image, _grayscale(image), params.saturation)
    return adjust_hue(image, params.hue)


def _grayscale(image):
    """torchvision's float RGB → luma ([..., 1, H, W]), same ops."""
    r, g, b = image.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(dim=-3)


def _blend(image1, image2, ratio):
    """torchvision's float ``_blend``: ratio · image1 + (1 − ratio) · image2, clamped to [0, 1]."""
    ratio = float(ratio)
    return image1.mul(ratio).add_(image2, alpha=(1.0 - ratio)).clamp_(0, 1.0)


def adjust_hue(image, hue_factor):
    """Rotate the hue of a [3,H,W] or [B,3,H,W] float image in [0, 1] by ``hue_factor`` turns.

    Same result as torchvision's ``adjust_hue`` (to ~1e-6) through OpenCV's float HSV conversion,
    about 8x faster on the CPU (the hue shift was most of the loader's augmentation cost). The
    wrap of the shifted hue into [0, 360) is ``np.mod``'s result (one add or subtract of 360 for
    a shift within ±360) computed in place on the hue channel only.
    """
    if image.dim() == 4:
        return torch.stack([adjust_hue(x, hue_factor) for x in image])
    hwc = image.permute(1, 2, 0).numpy()
    if image.dtype != torch.float32:
        hwc = np.ascontiguousarray(hwc, dtype=np.float32)
    elif not hwc.flags.c_contiguous:  # planar [3,H,W] memory: interleave the planes (fast in cv2)
        planes = image.numpy()
        hwc = cv2.merge([np.ascontiguousarray(planes[0]), np.ascontiguousarray(planes[1]),
                         np.ascontiguousarray(planes[2])])
    hsv = cv2.cvtColor(hwc, cv2.COLOR_RGB2HSV)   # H in degrees [0, 360)
    hue = hsv[..., 0]
    shift = np.float32(hue_factor * 360.0)
    if not -360.0 < shift < 360.0:
        hue[...] = np.mod(hue + shift, np.float32(360.0))
    else:
        hue += shift
        if shift > 0:
            np.subtract(hue, np.float32(360.0), out=hue, where=hue >= np.float32(360.0))
        elif shift < 0:
            np.add(hue, np.float32(360.0), out=hue, where=hue < np.float32(0.0))
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous().clamp_(0.0, 1.0)


def scale_intrinsics(K_normalized, width, height):
    """Scale normalised [4,4] intrinsics to pixels of a (width, height) image: row 0 × width,
    row 1 × height. Returns (K, inv_K) as float32 tensors."""
    K = np.array(K_normalized, dtype=np.float64)
    K[0, :] *= width
    K[1, :] *= height
    return torch.from_numpy(K.astype(np.float32)), torch.from_numpy(np.linalg.inv(K).astype(np.float32))


def nearest_resize(depth, height, width):
    """Nearest-neighbour resize of an [h,w] map to (height, width) (pixel centres aligned), so
    sparse depth keeps its values."""
    h, w = depth.shape
    if (h, w) == (height, width):
        return depth
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
    return depth[rows[:, None], cols[None, :]]


class MonoDataset(data.Dataset):
    """Frames of a monocular / stereo video dataset as the batch dict of the repo.

    Subclasses say where files are (``get_image_path``), how to read ground truth
    (``check_depth``, ``get_depth``) and, optionally, the intrinsics (``get_intrinsics``);
    everything else is here.

    Args:
        data_path: dataset root.
        filenames: split lines ``"<folder> <frame index> <side>"``, side ``l``/``r`` (or ``2``/``3``);
            a mono source (``stereo = False``) has no side column: ``"<folder> <frame index>"``.
        height, width: network input size H, W (scale 0).
        frame_ids: frames to load: integers are offsets from the target frame (0 = target, −1
            previous, +1 next), ``"s"`` the stereo partner (the other camera at the target time).
        num_scales: number of scales S; scale s has size (H // 2^s, W // 2^s).
        is_train: turn on random flip and colour augmentation.
        img_ext: ``".jpg"`` (converted KITTI) or ``".png"`` (raw KITTI).
        load_depth: add ``"depth_gt"``; None = only when not training and ground truth exists
            (building it costs as much as loading the images, so training skips it).
        use_calib_file: take intrinsics from the dataset's calibration files instead of ``self.K``.
        image_cache: None, or a folder written by ``prepare_cache.py`` (or an
            ``datasets.image_cache.ImageCache``): scale-0 images are read from it where it holds a
            current entry at (width, height), else from the original files (one line per reason
            says so; the split's images are checked when the dataset is built). The cached pixels
            are the ones the resize would produce, so the batch dict is bit-identical either way.
        finish_on_device: return only what has to come from disk and leave the lower scales and
            the colour augmentation to ``datasets.finish_batch``, run batch-wise on the training
            device after the transfer (``Trainer.run_step``; ``datasets.build_dataset`` turns it
            on for training). See "Unfinished samples" below.

    Batch dict of one sample (a DataLoader adds the leading batch dim B to every entry):

    - ``("color", i, s)``: [3, H/2^s, W/2^s] float32 RGB in [0, 1] for every i in frame_ids and
      s in range(num_scales). Each image is decoded once, resized to (H, W) with area averaging,
      and each lower scale is made from the one above with antialiased bilinear interpolation
      (``align_corners=False``). Flipped when the sample is flipped.
    - ``("color_aug", i, s)``: same shapes; the colour-augmented input for the networks. Without
      colour augmentation (always when not training) it is the same tensor as ``("color", i, s)``.
      With it, ``apply_color_jitter(("color", i, s), params)`` with ONE ``params`` for the whole
      sample: every frame and scale gets the same brightness, contrast, saturation and hue factors.
      The losses compare warped ``color`` (not ``color_aug``) images.
    - ``("K", s)``, ``("inv_K", s)``: [4, 4] float32 intrinsics of the target camera at scale s
      and their inverse: the normalised K (``self.K``, or from the calibration file) with row 0
      multiplied by W/2^s and row 1 by H/2^s (integer-divided sizes). When flipped, the normalised
      principal point becomes cx → 1 − cx (no change for the centred KITTI-average K).
    - ``"stereo_T"`` (only when ``"s"`` in frame_ids): [4, 4] float32, identity with
      ``[0, 3] = side_sign · baseline_sign · 0.1``: side_sign −1 when the target is the left camera
      and +1 for the right one; baseline_sign −1 when flipped (flipping swaps left and right).
      It is ``T_source_from_target`` for the stereo source in the Monodepth2 convention: a
      baseline of 0.1 units, which fixes the scale of stereo-trained models (KITTI's real
      baseline is 0.54 m, so metric depth = 5.4 × predicted depth).
    - ``"depth_gt"`` (only when ``load_depth``): [1, 375, 1242] float32 ground-truth depth in
      metres at the full KITTI resolution (``full_res_shape``), 0 = no data; nearest-neighbour
      resized from the native size, flipped with the sample.

    Augmentation (training only), drawn by ``draw_augmentation`` from Python's global ``random``
    (seeded per worker by the DataLoader, so a seeded trainer is reproducible): colour jitter with
    probability 0.5 (brightness, contrast, saturation factors in [0.8, 1.2], hue in [−0.1, 0.1]),
    horizontal flip with probability 0.5 of every frame, scale and ``depth_gt``.

    Unfinished samples (``finish_on_device=True``): ``__getitem__`` / ``get_sample`` return
    ``("color", i, 0)`` of every frame (decoded, resized, flipped as above), ``("K", s)`` /
    ``("inv_K", s)`` for every scale, ``"stereo_T"`` and ``"depth_gt"`` as above, and the sample's
    colour augmentation as tensors: ``"color_jitter"`` [4] float32 (brightness, contrast,
    saturation, hue of its one ``ColorJitterParams``; 1, 1, 1, 0 without colour augmentation) and
    ``"do_color_aug"`` (0-dim bool). No lower scales and no ``("color_aug", i, s)``.
    ``datasets.finish_batch(batch)`` on the collated batch (on any device) makes the batch dict
    above from it, with the same operations in the same order: ``("color", i, s)`` for s >= 1 by
    the same chain of antialiased downscales, ``("color_aug", i, s)`` = the sample's jitter of
    ``("color", i, s)``, or equal to it (values) without colour augmentation; it drops the two
    augmentation keys. The finished batch equals the collated batch of this per-sample path to
    float32 rounding (``tests/test_finish_batch.py``: hue goes through a torch HSV conversion
    instead of OpenCV's), for every key and scale. What the model sees is the same either way.

    Errors: a split line whose frame file is missing raises FileNotFoundError naming the file and
    the split line (1-based line number and text); a corrupt image raises ValueError naming it. A
    source without intrinsics (no ``K`` and no ``get_intrinsics`` of its own), or whose
    ``check_intrinsics`` finds them missing or implausible, raises ValueError when it is built.
    """

    # normalised intrinsics (row 0 divided by the image width, row 1 by the height); subclasses set it
    K = None
    # whether the source has a stereo partner (split lines carry a side column; frame "s" works)
    stereo = True
    # (width, height) of the ground-truth depth maps
    full_res_shape = None

    def __init__(self, data_path, filenames, height, width, frame_ids, num_scales, is_train=False,
                 img_ext=".jpg", load_depth=None, use_calib_file=False, image_cache=None,
                 finish_on_device=False):
        super().__init__()
        for frame_id in frame_ids:
            if frame_id != "s" and not isinstance(frame_id, int):
                raise ValueError(f"frame_ids must be integers or 's', got {frame_ids!r}")
        if "s" in frame_ids and not self.stereo:
            raise ValueError(f"{type(self).__name__} is a mono source: it has no stereo frame 's'")
        if height < 2 ** (num_scales - 1) or width < 2 ** (num_scales - 1):
            raise ValueError(f"image size {width}x{height} is too small for {num_scales} scales")
        self.data_path = data_path
        self.filenames = list(filenames)
        self.height = height
        self.width = width
        self.frame_ids = list(frame_ids)
        self.num_scales = num_scales
        self.is_train = is_train
        self.img_ext = img_ext
        self.use_calib_file = use_calib_file
        self.finish_on_device = finish_on_device
        self.load_depth = (not is_train and self.check_depth()) if load_depth is None else load_depth
        self.check_intrinsics()
        self.image_cache = None
        if image_cache is not None:
            self.image_cache = (image_cache if isinstance(image_cache, ImageCache) else
                                ImageCache(image_cache, data_path, width, height))
            self.image_cache.summary(sorted(set(self.image_files())))

    def __len__(self):
        return len(self.filenames)

    # --- random choices -------------------------------------------------------------------------

    def draw_augmentation(self):
        """The random choices of one sample (``NO_AUGMENTATION`` when not training)."""
        if not self.is_train:
            return NO_AUGMENTATION
        do_color_aug = random.random() > 0.5
        do_flip = random.random() > 0.5
        return Augmentation(do_flip=do_flip, color=draw_color_jitter() if do_color_aug else None)

    def __getitem__(self, index):
        return self.get_sample(index, self.draw_augmentation())

    # --- one sample -----------------------------------------------------------------------------

    def parse_line(self, index):
        """Split line ``index`` → (folder, frame_index, side)."""
        line = self.filenames[index]
        fields = line.split()
        if not self.stereo:
            if len(fields) != 2:
                raise ValueError(f"split line {index + 1} ({line!r}): expected "
                                 "'<folder> <frame index>' (a mono source has no side column)")
            fields.append(None)
        elif len(fields) != 3 or fields[2] not in ("l", "r", "2", "3"):
            raise ValueError(f"split line {index + 1} ({line!r}): expected "
                             "'<folder> <frame index> <side l|r>'")
        try:
            frame_index = int(fields[1])
        except ValueError:
            raise ValueError(f"split line {index + 1} ({line!r}): frame index "
                             f"{fields[1]!r} is not an integer") from None
        return fields[0], frame_index, fields[2]

    def get_sample(self, index, aug):
        """The batch dict of split line ``index`` under the random choices ``aug``
        (an ``Augmentation``); see the class docstring."""
        folder, frame_index, side = self.parse_line(index)
        try:
            inputs = self._load_colors(folder, frame_index, side, aug)
            K = np.array(self.get_intrinsics(folder, side), dtype=np.float64)
            if aug.do_flip:
                K[0, 2] = 1.0 - K[0, 2]
            for s in range(self.num_scales):
                inputs[("K", s)], inputs[("inv_K", s)] = scale_intrinsics(
                    K, self.width // 2 ** s, self.height // 2 ** s)
            if "s" in self.frame_ids:
                inputs["stereo_T"] = self.stereo_transform(side, aug.do_flip)
            if self.load_depth:
                depth = self.get_depth(folder, frame_index, side, aug.do_flip)
                inputs["depth_gt"] = torch.from_numpy(np.ascontiguousarray(depth, np.float32))[None]
        except (FileNotFoundError, ValueError) as e:
            raise type(e)(f"{e} (split line {index + 1}: {self.filenames[index]!r}); replace the "
                          "file (re-extract KITTI or regenerate the scene) or remove that line "
                          "from the split") from None
        return inputs

    def _load_colors(self, folder, frame_index, side, aug):
        inputs = {}
        for frame_id in self.frame_ids:
            if frame_id == "s":
                image = self.get_color(folder, frame_index, other_side(side), aug.do_flip)
            else:
                image = self.get_color(folder, frame_index + frame_id, side, aug.do_flip)
            if self.finish_on_device:  # the rest is datasets.finish_batch's, on the device
                inputs[("color", frame_id, 0)] = image
                continue
            for s in range(self.num_scales):
                if s > 0:
                    image = downscale(image, self.height // 2 ** s, self.width // 2 ** s)
                inputs[("color", frame_id, s)] = image
                inputs[("color_aug", frame_id, s)] = (
                    image if aug.color is None else apply_color_jitter(image, aug.color))
        if self.finish_on_device:
            inputs[COLOR_JITTER] = torch.tensor(
                NEUTRAL_JITTER if aug.color is None else tuple(aug.color), dtype=torch.float32)
            inputs[DO_COLOR_AUG] = torch.tensor(aug.color is not None)
        return inputs

    def get_color(self, folder, frame_index, side, do_flip):
        """[3,H,W] float32 image in [0, 1] at scale 0 (from the image cache when it holds it),
        flipped when ``do_flip``."""
        path = self.get_image_path(folder, frame_index, side)
        rgb = self.image_cache.load(path) if self.image_cache is not None else None
        image = image_to_tensor(load_rgb(path) if rgb is None else rgb, self.width, self.height)
        return torch.flip(image, dims=[-1]) if do_flip else image

    @staticmethod
    def stereo_transform(side, do_flip):
        """The [4,4] ``stereo_T`` of the class docstring."""
        side_sign = -1.0 if side in ("l", "2") else 1.0
        baseline_sign = -1.0 if do_flip else 1.0
        T = torch.eye(4)
        T[0, 3] = side_sign * baseline_sign * 0.1
        return T

    # --- checking the data up front ---------------------------------------------------------

    def image_files(self):
        """The image path of every frame of every split line (with repeats), in split order."""
        for index in range(len(self.filenames)):
            folder, frame_index, side = self.parse_line(index)
            for frame_id in self.frame_ids:
                if frame_id == "s":
                    yield self.get_image_path(folder, frame_index, other_side(side))
                else:
                    yield self.get_image_path(folder, frame_index + frame_id, side)

    def required_files(self):
        """Every file one pass over the split reads: each frame of ``frame_ids`` (the other side's
        image for ``"s"``) of every line, and the ground-truth depth file when it is loaded.
        Yields ``(path, split line number)``; a malformed line raises ValueError naming it."""
        for index in range(len(self.filenames)):
            folder, frame_index, side = self.parse_line(index)
            for frame_id in self.frame_ids:
                if frame_id == "s":
                    yield self.get_image_path(folder, frame_index, other_side(side)), index + 1
                else:
                    yield self.get_image_path(folder, frame_index + frame_id, side), index + 1
            if self.load_depth:
                path = self.depth_file(folder, frame_index, side)
                if path is not None:
                    yield path, index + 1

    def missing_files(self):
        """``(number of files checked, [(missing path, split line number), ...])``.

        Stat-only and fast (one ``os.scandir`` per folder, then set look-ups: 40k KITTI lines in
        well under a second once the folders are in the page cache)."""
        listing = {}
        checked, missing, seen = 0, [], set()
        for path, line in self.required_files():
            if path in seen:
                continue
            seen.add(path)
            checked += 1
            folder, name = os.path.split(path)
            names = listing.get(folder)
            if names is None:
                try:
                    with os.scandir(folder) as entries:
                        names = {e.name for e in entries}
                except OSError:
                    names = set()
                listing[folder] = names
            if name not in names:
                missing.append((path, line))
        return checked, missing

    # --- dataset-specific hooks -----------------------------------------------------------------

    def get_image_path(self, folder, frame_index, side):
        raise NotImplementedError

    def get_intrinsics(self, folder, side):
        """Normalised [4,4] intrinsics of the camera of ``side`` (default: ``self.K``)."""
        return self.K

    def check_intrinsics(self):
        """Called when the dataset is built: raise ValueError when the source has no intrinsics at
        all. Sources that read them per folder check those files here (the video source)."""
        own = type(self).get_intrinsics is not MonoDataset.get_intrinsics
        if self.K is None and not own:
            raise ValueError(f"{type(self).__name__} has no intrinsics: set its class attribute K "
                             "(normalised [4,4]: row 0 / image width, row 1 / height) or override "
                             "get_intrinsics")

    def check_depth(self):
        """Whether ground-truth depth exists (checked on the first split line)."""
        return False

    def depth_file(self, folder, frame_index, side):
        """The ground-truth file ``get_depth`` reads (None: not file-based)."""
        return None

    def get_depth(self, folder, frame_index, side, do_flip):
        """[h,w] float32 ground-truth depth in metres at ``full_res_shape``, flipped when asked."""
        raise NotImplementedError


def other_side(side):
    """The stereo partner of a side: l ↔ r, 2 ↔ 3."""
    return {"l": "r", "r": "l", "2": "3", "3": "2"}[side]
