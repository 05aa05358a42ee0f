"""Geometry, image operations and small conv blocks shared by the networks, the losses and evaluation.

Names follow the Monodepth2 family so that code ports between those repositories. Everything here is
a pure function or a small module that does not fix the batch size, the device or the dtype.

Conventions
-----------
* Images and depth maps are ``[B,C,H,W]``; intrinsics ``K``/``inv_K`` are ``[B,4,4]`` (the 3x3 camera
  matrix in the top-left corner, 1 at ``[3,3]``).
* Pixel ``(x, y)`` is the centre of column ``x`` and row ``y`` (0-based). Normalised sampling grids map
  pixel 0 to -1 and pixel ``W-1`` to +1, i.e. they are meant for
  ``grid_sample(..., align_corners=True)``.
* Rotations are axis-angle vectors in radians (right-hand rule); transforms act on column vectors.
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "DEPTH_METRIC_NAMES",
    "disp_to_depth",
    "depth_to_disp",
    "rot_from_axisangle",
    "get_translation_matrix",
    "transformation_from_parameters",
    "BackprojectDepth",
    "Project3D",
    "upsample",
    "Conv3x3",
    "ConvBlock",
    "ELU",
    "elu",
    "box_mean3",
    "SSIM",
    "get_smooth_loss",
    "compute_depth_errors",
]

DEPTH_METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


# ----------------------------------------------------------------------------------------------
# Disparity <-> depth
# ----------------------------------------------------------------------------------------------
def disp_to_depth(disp, min_depth, max_depth):
    """Convert the network's sigmoid output into depth.

    ``scaled_disp = 1/max_depth + (1/min_depth - 1/max_depth) * disp`` and ``depth = 1/scaled_disp``,
    so ``disp = 0`` gives ``max_depth`` and ``disp = 1`` gives ``min_depth``.

    Args:
        disp: sigmoid disparity in [0, 1], any shape (usually ``[B,1,H,W]``).
        min_depth, max_depth: depth range in metres (Monodepth2 family: 0.1 and 100).
    Returns:
        ``(scaled_disp, depth)``, both shaped like ``disp``.
    """
    min_disp = 1.0 / max_depth
    max_disp = 1.0 / min_depth
    scaled_disp = min_disp + (max_disp - min_disp) * disp
    depth = 1.0 / scaled_disp
    return scaled_disp, depth


def depth_to_disp(depth, min_depth, max_depth):
    """Inverse of :func:`disp_to_depth`: depth in metres -> sigmoid-space disparity in [0, 1].

    Depths outside ``[min_depth, max_depth]`` map outside [0, 1]; clamp the input if that matters.
    """
    min_disp = 1.0 / max_depth
    max_disp = 1.0 / min_depth
    return (1.0 / depth - min_disp) / (max_disp - min_disp)


# ----------------------------------------------------------------------------------------------
# Rigid transforms
# ----------------------------------------------------------------------------------------------
def _skew(v):
    """``[N,3]`` -> ``[N,3,3]`` cross-product matrices, ``skew(v) @ u == v x u``."""
    zero = torch.zeros_like(v[:, 0])
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    return torch.stack(
        [zero, -z, y,
         z, zero, -x,
         -y, x, zero], dim=1).view(-1, 3, 3)


def rot_from_axisangle(vec):
    """Rotation matrix from an axis-angle vector (Rodrigues' formula).

    The direction of ``vec`` is the rotation axis and its norm the angle in **radians**, positive
    counter-clockwise about the axis (right-hand rule): ``pi/2`` about +z maps +x onto +y.
    Small angles use the Taylor expansion, so the function and its gradient are finite at 0.

    Args:
        vec: ``[B,1,3]`` (Monodepth2's pose-decoder slice) or ``[B,3]``.
    Returns:
        ``[B,4,4]`` homogeneous rotation (zero translation).
    """
    if vec.shape[-1] != 3:
        raise ValueError(f"rot_from_axisangle expects [B,1,3] or [B,3], got {tuple(vec.shape)}")
    v = vec.reshape(-1, 3)
    theta2 = (v * v).sum(dim=1, keepdim=True)[:, :, None]  # [N,1,1]
    small = theta2 < 1e-8
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = torch.sqrt(theta2_safe)
    sin_term = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    cos_term = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2_safe)
    k = _skew(v)
    eye3 = torch.eye(3, dtype=v.dtype, device=v.device).expand_as(k)
    rot3 = eye3 + sin_term * k + cos_term * (k @ k)
    rot = torch.zeros(v.shape[0], 4, 4, dtype=v.dtype, device=v.device)
    rot[:, :3, :3] = rot3
    rot[:, 3, 3] = 1.0
    return rot


def get_translation_matrix(translation_vector):
    """``[B,1,3]`` or ``[B,3]`` translation -> ``[B,4,4]`` homogeneous translation matrix."""
    if translation_vector.shape[-1] != 3:
        raise ValueError("get_translation_matrix expects [B,1,3] or [B,3], "
                         f"got {tuple(translation_vector.shape)}")
    t = translation_vector.reshape(-1, 3)
    mat = torch.eye(4, dtype=t.dtype, device=t.device).repeat(t.shape[0], 1, 1)
    mat[:, :3, 3] = t
    return mat


def transformation_from_parameters(axisangle, translation, invert=False):
    """4x4 rigid transform from the pose network's axis-angle and translation.

    Frame convention (Monodepth2 family): for a pose network fed the pair ``[frame_a, frame_b]``
    the parameters ``(R, t)`` describe the transform ``M = T(t) @ R`` that maps homogeneous points
    from camera ``a`` into camera ``b``: ``p_b = R p_a + t``. ``srd.SRDModel`` feeds ``[target, source]``
    for future frames, giving ``T_src_from_tgt``, and ``[source, target]`` with ``invert=True`` for
    past frames, which returns the exact inverse ``M^-1 = R^T @ T(-t)`` (``p_a = R^T (p_b - t)``),
    again ``T_src_from_tgt``.

    Args:
        axisangle: ``[B,1,3]`` radians.
        translation: ``[B,1,3]``.
        invert: return the inverse transform.
    Returns:
        ``[B,4,4]``.
    """
    rot = rot_from_axisangle(axisangle)
    t = translation
    if invert:
        rot = rot.transpose(1, 2)
        t = -t
    trans = get_translation_matrix(t)
    return rot @ trans if invert else trans @ rot


# ----------------------------------------------------------------------------------------------
# Back-projection and projection
# ----------------------------------------------------------------------------------------------
def _pixel_grid(height, width):
    """Homogeneous pixel coordinates ``[1,3,H*W]``: rows (x, y, 1), x varying fastest."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                            torch.arange(width, dtype=torch.float32), indexing="ij")
    ones = torch.ones_like(xs)
    return torch.stack([xs, ys, ones], dim=0).view(1, 3, height * width)


class BackprojectDepth(nn.Module):
    """Lift a depth map into camera coordinates: ``X = depth * inv_K @ (x, y, 1)``.

    The pixel grid is a non-persistent buffer ``[1,3,H*W]`` (it follows ``.to()`` but is not stored
    in checkpoints); it is expanded to the batch size at each call. Computation is in the depth's
    dtype, at least float32.

    forward(depth ``[B,1,H,W]``, inv_K ``[B,4,4]``) -> homogeneous camera points ``[B,4,H*W]``.
    """

    def __init__(self, height, width):
        super().__init__()
        self.height = int(height)
        self.width = int(width)
        self.register_buffer("pix_coords", _pixel_grid(self.height, self.width), persistent=False)

    def forward(self, depth, inv_K):
        if depth.dim() != 4 or tuple(depth.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"BackprojectDepth({self.height}, {self.width}) got depth of shape "
                             f"{tuple(depth.shape)}; expected [B,1,{self.height},{self.width}]")
        batch = depth.shape[0]
        dtype = torch.promote_types(depth.dtype, torch.float32)  # pixel indices exact under fp16/bf16
        pix = self.pix_coords.to(dtype=dtype).expand(batch, -1, -1)
        rays = inv_K[:, :3, :3].to(dtype) @ pix
        cam_points = rays * depth.reshape(batch, 1, -1).to(dtype)
        ones = torch.ones_like(cam_points[:, :1])
        return torch.cat([cam_points, ones], dim=1)


class Project3D(nn.Module):
    """Project homogeneous 3-D points through ``K @ T`` into a normalised sampling grid.

    forward(points ``[B,4,N]`` with ``N = H*W``, K ``[B,4,4]``, T ``[B,4,4]`` (e.g. ``T_src_from_tgt``))
    -> ``[B,H,W,2]`` holding ``(2x/(W-1) - 1, 2y/(H-1) - 1)``, for
    ``grid_sample(..., align_corners=True)``.
    """

    def __init__(self, height, width, eps=1e-7):
        super().__init__()
        self.height = int(height)
        self.width = int(width)
        self.eps = eps

    def forward(self, points, K, T):
        batch, n = points.shape[0], points.shape[-1]
        if n != self.height * self.width:
            raise ValueError(f"Project3D({self.height}, {self.width}) got {n} points; "
                             f"expected {self.height * self.width}")
        proj = (K @ T)[:, :3, :]
        cam = proj @ points
        pix = cam[:, :2] / (cam[:, 2:3] + self.eps)
        pix = pix.view(batch, 2, self.height, self.width).permute(0, 2, 3, 1)
        scale = pix.new_tensor([self.width - 1, self.height - 1])
        return 2.0 * pix / scale - 1.0


# ----------------------------------------------------------------------------------------------
# Conv blocks
# ----------------------------------------------------------------------------------------------
def upsample(x):
    """Nearest-neighbour x2 upsampling of ``[B,C,H,W]``."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


class Conv3x3(nn.Module):
    """3x3 convolution with 1 pixel of reflection (or zero) padding; keeps H and W.

    State-dict keys ``conv.weight``/``conv.bias`` as in Monodepth2 (``conv.weight`` only with
    ``bias=False``).
    """

    def __init__(self, in_channels, out_channels, use_refl=True, bias=True):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1) if use_refl else nn.ZeroPad2d(1)
        self.conv = nn.Conv2d(int(in_channels), int(out_channels), 3, bias=bias)

    def forward(self, x):
        return self.conv(self.pad(x))


class _ELUFromExp(torch.autograd.Function):
    """ELU (alpha = 1) as ``exp(min(x, 0)) - 1 + max(x, 0)``, in at least float32.

    PyTorch's CPU ELU goes through ``expm1``, which is not vectorised there: 4x slower than this
    in float32 and 3x slower in bfloat16 (forward of a [4,16,192,640] map on the 2-core reference
    CPU: 38 ms against 9.5 ms in float32). ``exp(x) - 1`` loses relative precision
    only for |x| near 0, where its absolute error (< 1.2e-7 in float32) is below the rounding of the
    activations themselves. The backward is PyTorch's own, from the saved output.
    """

    @staticmethod
    def forward(ctx, x):
        dtype = torch.promote_types(x.dtype, torch.float32)
        negative = torch.exp(x.clamp(max=0).to(dtype)).sub_(1)
        y = negative.add_(x.clamp(min=0)).to(x.dtype)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return torch.ops.aten.elu_backward(grad, 1.0, 1.0, 1.0, True, y)


def elu(x):
    """ELU with alpha 1, ``F.elu(x)``; on the CPU through :class:`_ELUFromExp` (same values to
    float rounding, 4x faster). Any shape. Under tracing (``torch.jit.trace``, ``torch.onnx.export``)
    it is ``F.elu``, which exports as ONNX ``Elu`` / ``aten::elu`` (an autograd Function cannot be
    traced)."""
    if x.device.type != "cpu" or torch.jit.is_tracing():
        return F.elu(x)
    return _ELUFromExp.apply(x)


class ELU(nn.Module):
    """Module form of :func:`elu` (no parameters: drop-in for ``nn.ELU()``)."""

    def forward(self, x):
        return elu(x)


class ConvBlock(nn.Module):
    """:class:`Conv3x3` followed by ELU."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = Conv3x3(in_channels, out_channels)
        self.nonlin = ELU()

    def forward(self, x):
        return self.nonlin(self.conv(x))


# ----------------------------------------------------------------------------------------------
# Photometric and smoothness terms
# ----------------------------------------------------------------------------------------------
def _box_sum3(x):
    """Sum over each 3x3 window that fits ("valid"): ``[...,H,W]`` -> ``[...,H-2,W-2]``."""
    rows = x[..., :-2] + x[..., 1:-1] + x[..., 2:]
    return rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]


class _BoxMean3(torch.autograd.Function):
    """3x3 mean filter without padding, ``F.avg_pool2d(x, 3, stride=1)``, as separable sums.

    On the CPU this is 3-4x faster than ``avg_pool2d`` forward and backward (the SSIM of every
    photometric term runs five of them). The backward is the adjoint: the same box sum over the
    gradient zero-padded by 2.
    """

    @staticmethod
    def forward(ctx, x):
        return _box_sum3(x) / 9.0

    @staticmethod
    def backward(ctx, grad):
        return _box_sum3(F.pad(grad, (2, 2, 2, 2))) / 9.0


def box_mean3(x):
    """3x3 mean of every full window: ``[B,C,H,W]`` -> ``[B,C,H-2,W-2]`` (= ``avg_pool2d(x, 3, 1)``)."""
    if x.shape[-1] < 3 or x.shape[-2] < 3:
        raise ValueError(f"box_mean3 needs at least 3x3 pixels, got {tuple(x.shape)}")
    return _BoxMean3.apply(x)


class SSIM(nn.Module):
    """Per-pixel SSIM dissimilarity ``clamp((1 - SSIM) / 2, 0, 1)``.

    3x3 mean windows on reflection-padded inputs, ``C1 = 0.01^2``, ``C2 = 0.03^2`` (images in [0, 1]).
    forward(x ``[B,C,H,W]``, y ``[B,C,H,W]``) -> ``[B,C,H,W]``.
    """

    C1 = 0.01 ** 2
    C2 = 0.03 ** 2

    def __init__(self):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)

    def _mean(self, x):
        return box_mean3(x)

    def forward(self, x, y):
        x = self.pad(x)
        y = self.pad(y)
        mu_x = self._mean(x)
        mu_y = self._mean(y)
        sigma_x = self._mean(x * x) - mu_x * mu_x
        sigma_y = self._mean(y * y) - mu_y * mu_y
        sigma_xy = self._mean(x * y) - mu_x * mu_y
        numerator = (2 * mu_x * mu_y + self.C1) * (2 * sigma_xy + self.C2)
        denominator = (mu_x * mu_x + mu_y * mu_y + self.C1) * (sigma_x + sigma_y + self.C2)
        return torch.clamp((1 - numerator / denominator) / 2, 0, 1)


def get_smooth_loss(disp, img):
    """Edge-aware first-order smoothness of the mean-normalised disparity.

    The disparity is divided by its per-image mean (``disp / (mean_HW(disp) + 1e-7)``) here, so pass
    the raw sigmoid disparity. Gradients are weighted by ``exp(-mean_c |d img|)``.

    Args:
        disp: ``[B,1,H,W]``.
        img: ``[B,3,H,W]`` at the same resolution.
    Returns:
        scalar tensor: mean weighted |d/dx| + mean weighted |d/dy|.
    """
    if disp.shape[-2:] != img.shape[-2:]:
        raise ValueError(f"get_smooth_loss: disp {tuple(disp.shape)} and img {tuple(img.shape)} "
                         "must have the same H and W")
    mean_disp = disp.mean(dim=(2, 3), keepdim=True)
    norm_disp = disp / (mean_disp + 1e-7)
    grad_disp_x = (norm_disp[:, :, :, :-1] - norm_disp[:, :, :, 1:]).abs()
    grad_disp_y = (norm_disp[:, :, :-1, :] - norm_disp[:, :, 1:, :]).abs()
    grad_img_x = (img[:, :, :, :-1] - img[:, :, :, 1:]).abs().mean(1, keepdim=True)
    grad_img_y = (img[:, :, :-1, :] - img[:, :, 1:, :]).abs().mean(1, keepdim=True)
    grad_disp_x = grad_disp_x * torch.exp(-grad_img_x)
    grad_disp_y = grad_disp_y * torch.exp(-grad_img_y)
    return grad_disp_x.mean() + grad_disp_y.mean()


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------
def compute_depth_errors(gt, pred):
    """The standard depth metrics (Eigen et al.), used by both validation and evaluation.

    Args:
        gt, pred: depths of the valid pixels (already masked, cropped and scaled), same shape, any
            number of dimensions; torch tensors or NumPy arrays. Computed in float64.
    Returns:
        dict with keys :data:`DEPTH_METRIC_NAMES` in that order, each a 0-dim float64 tensor on the
        input's device: ``abs_rel = mean(|gt-pred|/gt)``, ``sq_rel = mean((gt-pred)^2/gt)``,
        ``rmse``, ``rmse_log`` (natural log), and ``a1/a2/a3`` = fraction of pixels with
        ``max(gt/pred, pred/gt) < 1.25, 1.25^2, 1.25^3``.
    """
    gt = gt if torch.is_tensor(gt) else torch.from_numpy(np.array(gt, dtype=np.float64))
    pred = pred if torch.is_tensor(pred) else torch.from_numpy(np.array(pred, dtype=np.float64))
    if gt.shape != pred.shape:
        raise ValueError(f"compute_depth_errors: gt {tuple(gt.shape)} and pred "
                         f"{tuple(pred.shape)} must have the same shape")
    if gt.numel() == 0:
        raise ValueError("compute_depth_errors: no valid pixels (empty gt)")
    gt = gt.detach().to(torch.float64)
    pred = pred.detach().to(device=gt.device, dtype=torch.float64)

    thresh = torch.maximum(gt / pred, pred / gt)
    diff = gt - pred
    log_diff = torch.log(gt) - torch.log(pred)
    values = (
        (diff.abs() / gt).mean(),
        (diff * diff / gt).mean(),
        torch.sqrt((diff * diff).mean()),
        torch.sqrt((log_diff * log_diff).mean()),
        (thresh < 1.25).to(torch.float64).mean(),
        (thresh < 1.25 ** 2).to(torch.float64).mean(),
        (thresh < 1.25 ** 3).to(torch.float64).mean(),
    )
    return dict(zip(DEPTH_METRIC_NAMES, values))
