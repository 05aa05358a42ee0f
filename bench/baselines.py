"""Straightforward reference implementations the benchmarks compare the repo's fast paths with.

- ``multiview_check_numpy``: SRD's multiview check the way the official code does it: one sample and
  one scale at a time with NumPy matrix products and ``cv2.remap`` (bilinear, zero border). Same
  definition as ``losses.multiview_check``.
- ``BaselineKITTIRAWDataset``: the Monodepth2-style loader: per frame, PIL decode; per scale, a PIL
  resize of the scale above; colour augmentation with torchvision's ``ColorJitter`` (one draw per
  sample, applied to every frame and scale as PIL images). Same batch-dict keys as
  ``datasets.KITTIRAWDataset`` without ground truth.

Written for the benchmarks (``bench_multiview.py``, ``bench_data.py``); no test imports them.
"""

import os
import random

import cv2
import numpy as np
import PIL.Image
import torch
import torch.utils.data as data
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF


# --------------------------------------------------------------------------------------------
# multiview check, per sample with NumPy + OpenCV
# --------------------------------------------------------------------------------------------
def pixel_grid(height, width, dtype=np.float64):
    """Homogeneous pixel coordinates (x, y, 1) of an H x W image, row-major: [3, H*W]."""
    xs, ys = np.meshgrid(np.arange(width, dtype=dtype), np.arange(height, dtype=dtype))
    return np.stack([xs.ravel(), ys.ravel(), np.ones(height * width, dtype)])


def multiview_check_sample(depth_ref, depth_src, K, T_src_from_ref, pix=None, dtype=np.float64):
    """The multiview check of one image.

    Lift every reference pixel with ``depth_ref`` (K^-1), move it with ``T_src_from_ref``, project it
    with K to (u, v); sample ``depth_src`` there with ``cv2.remap`` (bilinear, zero outside); lift
    (u, v) with the sampled depth, bring it back with T^-1; its z is D_rep.
    r = |D_rep - D_ref| / D_ref, mask = r < mean(r).

    Args:
        depth_ref, depth_src: [H,W] float32 depths of the reference and the source frame.
        K: [3,3] or [4,4] intrinsics at H x W.
        T_src_from_ref: [4,4] rigid transform from the reference to the source camera.
        pix: optional precomputed ``pixel_grid(H, W, dtype)``.
        dtype: dtype of the geometry (default float64, NumPy's default, as straightforward code
            computes; ``cv2.remap`` always gets float32 maps and the float32 source depth).
    Returns:
        (mask [H,W] bool, r [H,W] float32).
    """
    H, W = depth_ref.shape
    pix = pixel_grid(H, W, dtype) if pix is None else pix
    K3 = np.asarray(K, dtype)[:3, :3]
    inv_K = np.linalg.inv(K3)
    T = np.asarray(T_src_from_ref, dtype)
    ones = np.ones((1, H * W), dtype)
    depth_ref = depth_ref.astype(dtype, copy=False)

    cam_ref = (inv_K @ pix) * depth_ref.reshape(1, -1)              # [3,N] reference camera points
    cam_src = (T @ np.vstack([cam_ref, ones]))[:3]                   # [3,N] in the source camera
    proj = K3 @ cam_src
    z = np.maximum(proj[2], 1e-7)
    u = proj[0] / z
    v = proj[1] / z
    sampled = cv2.remap(np.asarray(depth_src, np.float32), u.reshape(H, W).astype(np.float32),
                        v.reshape(H, W).astype(np.float32), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    lifted = (inv_K @ np.stack([u, v, ones[0]])) * sampled.reshape(1, -1)
    back = np.linalg.inv(T) @ np.vstack([lifted, ones])              # [4,N] back in the reference
    depth_rep = back[2].reshape(H, W)
    ratio = np.abs(depth_rep - depth_ref) / depth_ref
    return ratio < ratio.mean(), ratio.astype(np.float32)


def multiview_check_numpy(depth_ref, depth_src, K, T_src_from_ref, dtype=np.float64):
    """``losses.multiview_check``'s contract, computed per sample and per scale (geometry in
    ``dtype``, see ``multiview_check_sample``).

    Args:
        depth_ref, depth_src: [S*B,1,H,W] float32 arrays (scale-major: rows s*B..s*B+B-1 are scale s).
        K: [B,4,4] (or [B,3,3]) intrinsics at H x W.
        T_src_from_ref: [B,4,4].
    Returns:
        (mask [S*B,1,H,W] float32 in {0,1}, r [S*B,1,H,W] float32).
    """
    depth_ref, depth_src = np.asarray(depth_ref), np.asarray(depth_src)
    K, T = np.asarray(K), np.asarray(T_src_from_ref)
    SB, _, H, W = depth_ref.shape
    B = K.shape[0]
    if SB % B:
        raise ValueError(f"depth batch {SB} is not a multiple of the pose batch {B}")
    pix = pixel_grid(H, W, dtype)
    mask = np.empty((SB, 1, H, W), np.float32)
    ratio = np.empty((SB, 1, H, W), np.float32)
    for row in range(SB):
        b = row % B
        m, r = multiview_check_sample(depth_ref[row, 0], depth_src[row, 0], K[b], T[b], pix,
                                      dtype)
        mask[row, 0], ratio[row, 0] = m, r
    return mask, ratio


# --------------------------------------------------------------------------------------------
# data loading, Monodepth2 style
# --------------------------------------------------------------------------------------------
KITTI_AVERAGE_K = np.array([[0.58, 0, 0.5, 0],
                            [0, 1.92, 0.5, 0],
                            [0, 0, 1, 0],
                            [0, 0, 0, 1]], dtype=np.float32)


class BaselineKITTIRAWDataset(data.Dataset):
    """KITTI raw frames as the repo's batch dict, built the straightforward way.

    Per sample: flip and colour-jitter draws; per frame: decode with PIL (and flip); per scale: PIL
    resize (Lanczos, as Monodepth2's ``transforms.Resize`` with ANTIALIAS) of the scale above, then
    ``ToTensor``; ``color_aug``: torchvision ``ColorJitter(0.2, 0.2, 0.2, 0.1)`` parameters drawn
    once per sample (``ColorJitter.get_params``) and applied to each frame's PIL image at each scale
    in ColorJitter's order. Keys: ``("color", i, s)``, ``("color_aug", i, s)``, ``("K", s)``,
    ``("inv_K", s)`` and ``"stereo_T"`` with ``"s"`` in frame_ids. Split lines as ``KITTIRAWDataset``.
    """

    side_map = {"2": 2, "3": 3, "l": 2, "r": 3}

    def __init__(self, data_path, filenames, height, width, frame_ids, num_scales, is_train=False,
                 img_ext=".jpg"):
        self.data_path = data_path
        self.filenames = list(filenames)
        self.height, self.width = height, width
        self.frame_ids = list(frame_ids)
        self.num_scales = num_scales
        self.is_train = is_train
        self.img_ext = img_ext
        self.resize = [transforms.Resize((height // 2 ** s, width // 2 ** s),
                                         interpolation=InterpolationMode.LANCZOS)
                       for s in range(num_scales)]
        self.to_tensor = transforms.ToTensor()
        self.jitter = transforms.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1)

    def __len__(self):
        return len(self.filenames)

    def image_path(self, folder, frame_index, side):
        return os.path.join(self.data_path, folder, f"image_0{self.side_map[side]}", "data",
                            f"{frame_index:010d}{self.img_ext}")

    def load(self, folder, frame_index, side, do_flip):
        with PIL.Image.open(self.image_path(folder, frame_index, side)) as img:
            img = img.convert("RGB")
        return img.transpose(PIL.Image.FLIP_LEFT_RIGHT) if do_flip else img

    def jitter_fn(self):
        """One ColorJitter draw as a function of a PIL image (ColorJitter.forward, fixed params)."""
        j = self.jitter
        order, b, c, s, h = transforms.ColorJitter.get_params(j.brightness, j.contrast,
                                                              j.saturation, j.hue)
        ops = {0: (TF.adjust_brightness, b), 1: (TF.adjust_contrast, c),
               2: (TF.adjust_saturation, s), 3: (TF.adjust_hue, h)}

        def apply(img):
            for k in order:
                fn, factor = ops[int(k)]
                if factor is not None:
                    img = fn(img, factor)
            return img
        return apply

    def __getitem__(self, index):
        folder, frame, side = self.filenames[index].split()
        frame = int(frame)
        do_color_aug = self.is_train and random.random() > 0.5
        do_flip = self.is_train and random.random() > 0.5
        jitter = self.jitter_fn() if do_color_aug else None
        inputs = {}
        for i in self.frame_ids:
            if i == "s":
                img = self.load(folder, frame, {"l": "r", "r": "l", "2": "3", "3": "2"}[side],
                                do_flip)
            else:
                img = self.load(folder, frame + i, side, do_flip)
            for s in range(self.num_scales):
                img = self.resize[s](img)
                color = self.to_tensor(img)
                inputs[("color", i, s)] = color
                inputs[("color_aug", i, s)] = self.to_tensor(jitter(img)) if jitter else color
        K = KITTI_AVERAGE_K.astype(np.float64).copy()
        if do_flip:
            K[0, 2] = 1.0 - K[0, 2]
        for s in range(self.num_scales):
            Ks = K.copy()
            Ks[0, :] *= self.width // 2 ** s
            Ks[1, :] *= self.height // 2 ** s
            inputs[("K", s)] = torch.from_numpy(Ks.astype(np.float32))
            inputs[("inv_K", s)] = torch.from_numpy(np.linalg.inv(Ks).astype(np.float32))
        if "s" in self.frame_ids:
            T = torch.eye(4)
            T[0, 3] = (-1.0 if side in ("l", "2") else 1.0) * (-1.0 if do_flip else 1.0) * 0.1
            inputs["stereo_T"] = T
        return inputs
