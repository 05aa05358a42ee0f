"""The device-side finish of a training batch: the lower scales and the colour augmentation,
computed batch-wise on whatever device the batch is on (pure torch), after ``Trainer.to_device``.

A ``MonoDataset(..., finish_on_device=True)`` sample carries only what has to come from disk (the
scale-0 ``("color", i, 0)`` of every frame), the intrinsics, ``stereo_T`` / ``depth_gt`` as usual,
and its augmentation parameters as tensors (``"color_jitter"``, ``"do_color_aug"``).
``finish_batch`` turns a collated batch of such samples into the full batch dict of the
``MonoDataset`` docstring, with the same order of operations as the per-sample path on the CPU:

- ``("color", i, s)`` for s >= 1: the scale above, downscaled with antialiased bilinear
  interpolation (``align_corners=False``) to (H // 2^s, W // 2^s), scale by scale;
- ``("color_aug", i, s)`` for every s: the sample's ONE jitter draw applied to that scale's colour
  in the order brightness, contrast (blend with the image's mean grey), saturation, hue, each
  clamped to [0, 1]; for samples without colour augmentation, exactly ``("color", i, s)``.

The hue shift here is torch (RGB → HSV → shift → RGB, per-sample shift on a batch); the CPU path's
``adjust_hue`` goes through OpenCV's float HSV conversion. They agree to float32 rounding
(``FINISH_ATOL``; ``tests/test_finish_batch.py`` has the measured differences).
"""

import torch
import torch.nn.functional as F

# the augmentation keys of an unfinished sample / batch
COLOR_JITTER = "color_jitter"   # [4] float32: brightness, contrast, saturation, hue (B x 4 batched)
DO_COLOR_AUG = "do_color_aug"   # bool (B batched)
NEUTRAL_JITTER = (1.0, 1.0, 1.0, 0.0)
# |finish_batch − the per-sample path| bound for ("color_aug", i, s) on [0, 1] images: float32
# rounding of the two hue conversions (measured <= 1.4e-6; see tests/test_finish_batch.py). Every
# other key is equal.
FINISH_ATOL = 3e-6


def is_unfinished(batch):
    """Whether ``batch`` (a sample or a collated batch) still needs ``finish_batch``."""
    return DO_COLOR_AUG in batch


def finish_batch(batch, num_scales=None):
    """Complete a batch of ``finish_on_device`` samples to the full batch dict (see the module
    docstring); runs where the batch's tensors are (CPU or GPU), without host synchronisation.

    Args:
        batch: collated batch dict (``("color", i, 0)`` [B,3,H,W] per frame, ``"color_jitter"``
            [B,4], ``"do_color_aug"`` [B] bool, plus any other keys, passed through).
        num_scales: scales to build (default: the number of ``("K", s)`` keys of the batch).

    Returns a new dict: every key of the batch except ``"color_jitter"`` / ``"do_color_aug"``, plus
    ``("color", i, s)`` for s >= 1 and ``("color_aug", i, s)`` for every s. A batch without
    ``"do_color_aug"`` is already finished (a loader batch of the per-sample path, or a hand-built
    one) and is returned as it is.
    """
    if not is_unfinished(batch):
        return batch
    if num_scales is None:
        num_scales = sum(1 for k in batch if isinstance(k, tuple) and len(k) == 2 and k[0] == "K")
        num_scales = max(num_scales, 1)
    out = {k: v for k, v in batch.items() if k not in (COLOR_JITTER, DO_COLOR_AUG)}
    frames = [k[1] for k in batch if isinstance(k, tuple) and len(k) == 3 and k[0] == "color"
              and k[2] == 0]
    do_aug = batch[DO_COLOR_AUG].reshape(-1, 1, 1, 1)
    params = batch[COLOR_JITTER]
    for frame_id in frames:
        image = batch[("color", frame_id, 0)]
        memory_format = _memory_format(image)
        for s in range(num_scales):
            if s > 0:
                h, w = image.shape[-2] // 2, image.shape[-1] // 2
                image = F.interpolate(image, size=(h, w), mode="bilinear", antialias=True,
                                      align_corners=False).contiguous(memory_format=memory_format)
                out[("color", frame_id, s)] = image
            jittered = color_jitter_batch(image, params)
            out[("color_aug", frame_id, s)] = torch.where(do_aug, jittered, image).contiguous(
                memory_format=memory_format)
    return out


def _memory_format(image):
    """channels_last when the scale-0 image is in it (``--channels_last`` batches), else the
    default layout."""
    if image.dim() == 4 and not image.is_contiguous() and image.is_contiguous(
            memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def color_jitter_batch(image, params):
    """Colour jitter of a [B,3,h,w] float image in [0, 1] with per-sample factors ``params`` [B,4]
    (brightness, contrast, saturation, hue), in the order and with the clamping of
    ``datasets.mono_dataset.apply_color_jitter`` (torchvision's float kernels)."""
    params = params.to(device=image.device, dtype=image.dtype)
    brightness, contrast, saturation, hue = (p.reshape(-1, 1, 1, 1) for p in params.unbind(dim=1))
    image = image.mul(brightness).clamp_(0, 1.0)
    mean = torch.mean(_grayscale(image), dim=(-3, -2, -1), keepdim=True)
    image = _blend(image, mean, contrast)
    image = _blend(image, _grayscale(image), saturation)
    return adjust_hue_batch(image, hue.reshape(-1, 1, 1))


def _grayscale(image):
    r, g, b = image.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(dim=-3)


def _blend(image1, image2, ratio):
    return image1.mul(ratio).add_(image2.mul(1.0 - ratio)).clamp_(0, 1.0)


def adjust_hue_batch(image, hue):
    """Rotate the hue of a [B,3,h,w] float image in [0, 1] by ``hue`` turns per sample (a tensor
    broadcastable to [B,h,w], e.g. [B,1,1]); result clamped to [0, 1].

    RGB → HSV as OpenCV / torchvision (V = max, S = (max − min) / max, hue in sixths of a turn from
    the max channel, 0 for grey pixels), the shift wrapped into [0, 6), and back with the
    sector-free form of HSV → RGB: channel c (centre 0, 2, 4 sixths for R, G, B) =
    V − V·S·clamp(d − 1, 0, 1), d the circular distance of the hue to the centre
    (3 − ||h − c| − 3|).
    """
    r, g, b = image.unbind(dim=-3)
    minc, maxc = torch.aminmax(image, dim=-3)
    delta = maxc - minc
    grey = delta == 0
    # hue · delta: (g − b) in the red sector, 2·delta + (b − r) green, 4·delta + (r − g) blue
    num = torch.where(maxc == r, g - b,
                      torch.where(maxc == g, (b - r).add_(delta, alpha=2.0),
                                  (r - g).add_(delta, alpha=4.0)))
    h = num.div_(torch.where(grey, torch.ones_like(delta), delta))  # (−1, 5], 0 for grey pixels
    h = torch.remainder(h.add_(hue * 6.0), 6.0)                      # shifted, in [0, 6)
    out = torch.empty_like(image)
    for channel, centre in enumerate((0.0, 2.0, 4.0)):
        # V − V·S·clamp(d − 1, 0, 1), d − 1 = 2 − ||h − c| − 3|, V·S = max − min
        minus_weight = (h - centre).abs_().sub_(3.0).abs_().sub_(2.0).clamp_(-1.0, 0.0)
        torch.addcmul(maxc, minus_weight, delta, out=out.select(-3, channel))
    return out.clamp_(0.0, 1.0)
