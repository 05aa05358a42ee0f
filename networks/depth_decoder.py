"""Monodepth2-style U-Net depth decoder with SRD's disparity offset refinement (DOR).

Both decoders in this package produce one decoder feature per output scale ``s`` (resolution
``H/2^s``, ``num_ch_dec[s]`` channels, ``num_ch_dec = [16,32,64,128,256]``) and hand them to
:class:`DisparityHeads`, which turns them into disparities:

* with DOR (default): the 1/8 disparity (scale 3) comes from a plain 3x3 conv + sigmoid head; each
  finer disparity (scales 2, 1, 0) comes from a :class:`DisparityOffsetRefinement` step that warps the
  coarser disparity by a learned pixel offset and refines it with the finer feature;
* without DOR: a plain 3x3 conv + sigmoid head per requested scale (Monodepth2's layout).
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from layers import ELU, Conv3x3, ConvBlock, upsample

__all__ = [
    "NUM_CH_DEC",
    "DisparityOffsetRefinement",
    "DisparityHeads",
    "DepthDecoder",
    "monodepth2_depth_state_dict_to_unet",
]

NUM_CH_DEC = (16, 32, 64, 128, 256)
DOR_COARSEST_SCALE = 3


def check_scales(scales):
    """Return ``scales`` as a sorted list of distinct ints in 0..3, or raise ValueError."""
    scales = sorted(set(int(s) for s in scales))
    if not scales or scales[0] < 0 or scales[-1] > DOR_COARSEST_SCALE:
        raise ValueError(f"--scales must be a non-empty subset of 0 1 2 3, got {scales}")
    return scales


class DisparityOffsetRefinement(nn.Module):
    """One DOR step: coarse disparity + features -> finer disparity (the official SRD head).

    The coarser decoder feature is upsampled bilinearly (``align_corners=True``) to the finer size and
    concatenated *before* the finer feature; ``offset_net`` = ``1x1 conv (no bias) -> BatchNorm ->
    ELU -> 3x3 conv (reflection padding, no bias, zero initialised)`` predicts a 2-channel offset
    ``(dx, dy)`` in pixels of the finer map (the official ``delta_gen``). The coarse disparity is
    resampled at ``(x + dx, y + dy)`` (see :meth:`warp`), concatenated *before* the finer feature,
    and a 3x3 conv (reflection padding) + sigmoid gives the finer disparity.

    Args:
        num_ch_coarse: channels of the coarser decoder feature.
        num_ch_fine: channels of the finer decoder feature.
    """

    def __init__(self, num_ch_coarse, num_ch_fine):
        super().__init__()
        num_in = int(num_ch_coarse) + int(num_ch_fine)
        hidden = num_in // 2
        self.offset_net = nn.Sequential(
            nn.Conv2d(num_in, hidden, kernel_size=1, bias=False),
            nn.BatchNorm2d(hidden),
            ELU(),
            Conv3x3(hidden, 2, bias=False),
        )
        nn.init.zeros_(self.offset_net[-1].conv.weight)
        self.disp_conv = Conv3x3(int(num_ch_fine) + 1, 1)

    @staticmethod
    def warp(coarse_disp, offset_px):
        """Resample ``coarse_disp [B,C,Hc,Wc]`` on the finer grid shifted by ``offset_px [B,2,Hf,Wf]``.

        Fine pixel ``x`` (0..Wf-1) corresponds to coarse pixel ``x*(Wc-1)/(Wf-1)`` (corner-aligned), so
        with a zero offset the result equals
        ``F.interpolate(coarse_disp, (Hf, Wf), mode="bilinear", align_corners=True)``. Channel 0 of the
        offset is x, channel 1 is y, both in fine pixels. As in the official code, samples beyond the
        border read zeros (``grid_sample``'s default ``padding_mode="zeros"``): a sample half a coarse
        pixel outside the map gets half the edge value. Returns ``[B,C,Hf,Wf]``.
        """
        height, width = offset_px.shape[-2:]
        if height < 2 or width < 2:
            raise ValueError(f"DOR warp needs a fine map of at least 2x2, got {height}x{width}")
        dtype = torch.promote_types(offset_px.dtype, torch.float32)  # exact pixel indices
        ys, xs = torch.meshgrid(torch.arange(height, dtype=dtype, device=offset_px.device),
                                torch.arange(width, dtype=dtype, device=offset_px.device),
                                indexing="ij")
        x = xs + offset_px[:, 0].to(dtype)
        y = ys + offset_px[:, 1].to(dtype)
        grid = torch.stack([2.0 * x / (width - 1) - 1.0, 2.0 * y / (height - 1) - 1.0], dim=-1)
        return F.grid_sample(coarse_disp.to(dtype), grid, mode="bilinear", padding_mode="zeros",
                             align_corners=True)

    def forward(self, coarse_feat, coarse_disp, fine_feat):
        """Returns ``(fine_disp [B,1,Hf,Wf], offset_px [B,2,Hf,Wf])``."""
        size = fine_feat.shape[-2:]
        coarse_up = F.interpolate(coarse_feat, size=size, mode="bilinear", align_corners=True)
        offset = self.offset_net(torch.cat([coarse_up, fine_feat], dim=1))
        warped = self.warp(coarse_disp, offset)
        fine_disp = torch.sigmoid(self.disp_conv(torch.cat([warped, fine_feat], dim=1)))
        return fine_disp, offset


class DisparityHeads(nn.Module):
    """Disparity heads on per-scale decoder features (shared by both decoders).

    Args:
        num_ch_dec: decoder channels per scale (index = scale).
        scales: requested output scales (subset of 0..3).
        num_output_channels: channels of each disparity map; > 1 only without DOR.
        use_dor: chain DOR steps 3->2->1->0 (all four scales are computed internally).

    forward(features) where ``features[s]`` is ``[B,num_ch_dec[s],H/2^s,W/2^s]`` -> dict with
    ``("disp", s)`` for requested scales and, with DOR, ``("delta", s)`` ``[B,2,H/2^s,W/2^s]`` (the
    DOR offsets in pixels of that scale, channel 0 = x) for s in 2, 1, 0.
    """

    def __init__(self, num_ch_dec, scales, num_output_channels=1, use_dor=True):
        super().__init__()
        self.scales = check_scales(scales)
        self.use_dor = bool(use_dor)
        if self.use_dor and num_output_channels != 1:
            raise ValueError("num_output_channels > 1 (predictive mask) is only supported without "
                             "DOR; pass --no_dor or drop --predictive_mask")
        head_scales = [DOR_COARSEST_SCALE] if self.use_dor else self.scales
        self.dispconvs = nn.ModuleDict(
            {str(s): Conv3x3(num_ch_dec[s], num_output_channels) for s in head_scales})
        self.dor = nn.ModuleDict()
        if self.use_dor:
            for s in range(DOR_COARSEST_SCALE - 1, -1, -1):
                self.dor[str(s)] = DisparityOffsetRefinement(num_ch_dec[s + 1], num_ch_dec[s])

    @property
    def needed_scales(self):
        """Scales whose decoder feature the heads read."""
        return list(range(DOR_COARSEST_SCALE + 1)) if self.use_dor else self.scales

    def forward(self, features):
        outputs = {}
        if not self.use_dor:
            for s in self.scales:
                outputs[("disp", s)] = torch.sigmoid(self.dispconvs[str(s)](features[s]))
            return outputs
        disp = torch.sigmoid(self.dispconvs[str(DOR_COARSEST_SCALE)](features[DOR_COARSEST_SCALE]))
        if DOR_COARSEST_SCALE in self.scales:
            outputs[("disp", DOR_COARSEST_SCALE)] = disp
        for s in range(DOR_COARSEST_SCALE - 1, -1, -1):
            disp, offset = self.dor[str(s)](features[s + 1], disp, features[s])
            outputs[("delta", s)] = offset
            if s in self.scales:
                outputs[("disp", s)] = disp
        return outputs


class DepthDecoder(nn.Module):
    """Monodepth2-style U-Net decoder (channels 16/32/64/128/256) with optional DOR.

    At level ``i`` = 4..0: ConvBlock, nearest x2 upsample, concatenate the encoder feature ``i-1``
    (skip, for i > 0), ConvBlock; the result at level ``i`` (for i <= 3) is the scale-``i`` feature.

    Args:
        num_ch_enc: the encoder's 5 channel counts.
        scales: requested output scales (subset of 0..3).
        num_output_channels: disparity channels; > 1 only with ``use_dor=False``.
        use_skips: concatenate encoder features.
        use_dor: disparity offset refinement (else one plain head per scale).

    forward(list of 5 encoder features) -> ``{("disp", s): [B,C,H/2^s,W/2^s] in (0,1)}`` plus, with DOR,
    ``("delta", s): [B,2,H/2^s,W/2^s]`` (DOR offsets) for s in 2, 1, 0.
    """

    def __init__(self, num_ch_enc, scales=range(4), num_output_channels=1, use_skips=True,
                 use_dor=True):
        super().__init__()
        self.num_ch_enc = np.asarray(num_ch_enc)
        self.num_ch_dec = np.array(NUM_CH_DEC)
        self.use_skips = use_skips
        self.heads = DisparityHeads(self.num_ch_dec, scales, num_output_channels, use_dor)
        self.scales = self.heads.scales
        self.convs = nn.ModuleDict()
        for i in range(4, -1, -1):
            num_in = self.num_ch_enc[-1] if i == 4 else self.num_ch_dec[i + 1]
            self.convs[f"upconv_{i}_0"] = ConvBlock(num_in, self.num_ch_dec[i])
            num_in = self.num_ch_dec[i]
            if use_skips and i > 0:
                num_in += self.num_ch_enc[i - 1]
            self.convs[f"upconv_{i}_1"] = ConvBlock(num_in, self.num_ch_dec[i])

    def forward(self, input_features):
        features = {}
        x = input_features[-1]
        for i in range(4, -1, -1):
            x = [upsample(self.convs[f"upconv_{i}_0"](x))]
            if self.use_skips and i > 0:
                x.append(input_features[i - 1])
            x = self.convs[f"upconv_{i}_1"](torch.cat(x, dim=1))
            features[i] = x
        return self.heads(features)


def monodepth2_depth_state_dict_to_unet(state_dict, scales=range(4)):
    """Rename a Monodepth2 ``depth.pth`` state dict to :class:`DepthDecoder` (``use_dor=False``) keys.

    Monodepth2 keeps its decoder convs in one ``decoder`` ModuleList: ``decoder.0``..``decoder.9`` are
    ``upconv_4_0, upconv_4_1, ..., upconv_0_1`` and ``decoder.10+k`` is the disparity head of
    ``scales[k]`` (in the order the scales were given). Keys not starting with ``decoder.`` pass
    through unchanged.
    """
    names = [f"convs.upconv_{i}_{j}" for i in range(4, -1, -1) for j in (0, 1)]
    names += [f"heads.dispconvs.{s}" for s in scales]
    renamed = {}
    for key, value in state_dict.items():
        parts = key.split(".", 2)
        if parts[0] == "decoder" and len(parts) == 3 and parts[1].isdigit() \
                and int(parts[1]) < len(names):
            key = f"{names[int(parts[1])]}.{parts[2]}"
        renamed[key] = value
    return renamed
