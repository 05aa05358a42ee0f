"""HR-Depth-style nested depth decoder, the decoder the official SRD code uses with ResNet encoders.

Layout (``num_ch_dec = [16,32,64,128,256]``):

1. Encoder levels 1-4 pass a :class:`ChannelAttentionAdapter` to 64/128/256/512 channels; level 0 is
   used as is. These are the nodes ``X_i0`` (row ``i`` = encoder level ``i``, resolution ``H/2^(i+1)``).
2. Nested nodes ``X_ij`` (j >= 1) are filled in the order 01, 11, 21, 31, 02, 12, 22, 03, 13, 04.
   ``X_ij`` takes ``X_(i+1)(j-1)``, halves its channels with a ConvBlock, upsamples it x2 (nearest)
   and concatenates ``X_i0 .. X_i(j-1)``; nodes 31, 22, 13, 04 fuse that with :class:`FSEFusion`, the
   others with :class:`ConvFusion`. Every ``X_ij`` with j >= 1 has ``num_ch_dec[i+1]`` channels.
3. Scale features: ``X_22`` (1/8, scale 3), ``X_13`` (1/4, scale 2), ``X_04`` (1/2, scale 1) and
   ConvBlock -> x2 upsample -> ConvBlock of ``X_04`` (full resolution, 16 channels, scale 0), turned
   into disparities by :class:`~networks.depth_decoder.DisparityHeads` (DOR or plain heads).
"""

import numpy as np
import torch
import torch.nn as nn

from layers import ConvBlock, upsample
from networks.depth_decoder import NUM_CH_DEC, DisparityHeads

__all__ = ["HRDepthDecoder", "ChannelAttentionAdapter", "FSEFusion", "ConvFusion", "NODE_ORDER",
           "ATTENTION_NODES"]

NODE_ORDER = ("01", "11", "21", "31", "02", "12", "22", "03", "13", "04")
ATTENTION_NODES = ("31", "22", "13", "04")
ADAPTED_CHANNELS = (64, 64, 128, 256, 512)  # channels of X_i0 after the adapters (level 0: as is)
SE_REDUCTION = 16


class _SqueezeExcite(nn.Module):
    """Channel re-weighting: global average pool -> FC (/16) -> ReLU -> FC -> sigmoid -> scale."""

    def __init__(self, channels, reduction=SE_REDUCTION):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
        )

    def forward(self, x):
        weights = torch.sigmoid(self.fc(x.mean(dim=(2, 3))))
        return x * weights[:, :, None, None]


class ChannelAttentionAdapter(nn.Module):
    """Channel attention on an encoder feature, then 3x3 conv + ReLU to ``out_channels``."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.attention = _SqueezeExcite(int(in_channels))
        self.conv = nn.Conv2d(int(in_channels), int(out_channels), kernel_size=3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.conv(self.attention(x)))


class FSEFusion(nn.Module):
    """Feature-fusion squeeze-excitation: channel attention on the concatenation, 1x1 conv + ReLU."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.attention = _SqueezeExcite(int(in_channels))
        self.conv = nn.Conv2d(int(in_channels), int(out_channels), kernel_size=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.conv(self.attention(x)))


class ConvFusion(nn.Module):
    """ConvBlock fusion; with ``squeeze`` a bias-free 1x1 conv to ``2*out_channels`` comes first."""

    def __init__(self, in_channels, out_channels, squeeze):
        super().__init__()
        in_channels, out_channels = int(in_channels), int(out_channels)
        self.squeeze = (nn.Conv2d(in_channels, 2 * out_channels, kernel_size=1, bias=False)
                        if squeeze else nn.Identity())
        self.block = ConvBlock(2 * out_channels if squeeze else in_channels, out_channels)

    def forward(self, x):
        return self.block(self.squeeze(x))


class NestedNode(nn.Module):
    """Node ``X_ij``: ConvBlock-halve + x2 upsample the node below-left, concatenate the row, fuse."""

    def __init__(self, num_ch_below, num_ch_row, out_channels, col, attention):
        super().__init__()
        half = int(num_ch_below) // 2
        self.reduce = ConvBlock(num_ch_below, half)
        num_in = half + int(num_ch_row)
        self.fuse = FSEFusion(num_in, out_channels) if attention \
            else ConvFusion(num_in, out_channels, squeeze=col > 1)

    def forward(self, below, row):
        return self.fuse(torch.cat([upsample(self.reduce(below))] + list(row), dim=1))


class HRDepthDecoder(nn.Module):
    """HR-Depth-style nested decoder with fSE, channel-attention adapters and optional DOR.

    Args:
        num_ch_enc: the encoder's 5 channel counts (ResNet-18/34 or ResNet-50+).
        scales: requested output scales (subset of 0..3).
        num_output_channels: disparity channels; > 1 only with ``use_dor=False``.
        use_dor: disparity offset refinement (else one plain head per scale).

    forward(list of 5 encoder features) -> ``{("disp", s): [B,C,H/2^s,W/2^s] in (0,1)}`` plus, with DOR,
    ``("offset", s): [B,2,H/2^s,W/2^s]`` for s in 2, 1, 0.
    """

    def __init__(self, num_ch_enc, scales=range(4), num_output_channels=1, use_dor=True):
        super().__init__()
        self.num_ch_enc = np.asarray(num_ch_enc)
        self.num_ch_dec = np.array(NUM_CH_DEC)
        self.heads = DisparityHeads(self.num_ch_dec, scales, num_output_channels, use_dor)
        self.scales = self.heads.scales

        self.adapters = nn.ModuleDict({
            str(i): ChannelAttentionAdapter(self.num_ch_enc[i], ADAPTED_CHANNELS[i])
            for i in range(1, 5)})
        row_ch = [int(self.num_ch_enc[0])] + list(ADAPTED_CHANNELS[1:])

        def node_channels(i, j):
            return row_ch[i] if j == 0 else int(self.num_ch_dec[i + 1])

        self.nodes = nn.ModuleDict()
        for name in NODE_ORDER:
            i, j = int(name[0]), int(name[1])
            num_row = sum(node_channels(i, k) for k in range(j))
            self.nodes[f"X_{name}"] = NestedNode(node_channels(i + 1, j - 1), num_row,
                                                 self.num_ch_dec[i + 1], j, name in ATTENTION_NODES)
        self.needs_full_res = 0 in self.heads.needed_scales
        if self.needs_full_res:
            self.full_res_conv_0 = ConvBlock(self.num_ch_dec[1], self.num_ch_dec[0])
            self.full_res_conv_1 = ConvBlock(self.num_ch_dec[0], self.num_ch_dec[0])

    def forward(self, input_features):
        x = {"00": input_features[0]}
        for i in range(1, 5):
            x[f"{i}0"] = self.adapters[str(i)](input_features[i])
        for name in NODE_ORDER:
            i, j = int(name[0]), int(name[1])
            row = [x[f"{i}{k}"] for k in range(j)]
            x[name] = self.nodes[f"X_{name}"](x[f"{i + 1}{j - 1}"], row)
        features = {3: x["22"], 2: x["13"], 1: x["04"]}
        if self.needs_full_res:
            features[0] = self.full_res_conv_1(upsample(self.full_res_conv_0(x["04"])))
        return self.heads(features)
