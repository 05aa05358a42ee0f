"""HR-Depth-style nested depth decoder, the decoder the official SRD code uses (MPViT or ResNet encoder).

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

This is the official SRD / MonoViT ``HR_DepthDecoder`` (with DOR: SRD's default model), checked
numerically against the official code's outputs (``tests/test_official_srd.py``). Its checkpoints
use other names: :func:`official_key_map` maps them onto ours, one to one.

Official ``depth.pth`` layout (``convs`` is an ``nn.ModuleDict`` and ``decoder`` an
``nn.ModuleList`` of the same modules, so every ``convs.<name>.*`` tensor is stored again as
``decoder.<index>.*``, index = position of ``<name>`` in ``convs``; ``delta_gen1..3`` are outside
``convs`` and stored once). Official -> ours (module prefixes; the rest of each key is the same):

* ``convs.f{i}.ca.fc`` / ``convs.f{i}.conv_se`` -> ``adapters.{i}.attention.fc`` / ``adapters.{i}.conv``
* ``convs.X_{i+1}{j-1}_Conv_0`` -> ``nodes.X_{ij}.reduce`` (ConvBlock)
* ``convs.X_{ij}_attention.fc`` / ``.conv_se`` -> ``nodes.X_{ij}.fuse.attention.fc`` / ``.fuse.conv``
* ``convs.X_{ij}_downsample.conv`` -> ``nodes.X_{ij}.fuse.squeeze`` (1x1 conv, no bias)
* ``convs.X_{i+1}{j-1}_Conv_1`` -> ``nodes.X_{ij}.fuse.block`` (ConvBlock)
* ``convs.X_04_Conv_0`` / ``convs.X_04_Conv_1`` -> ``full_res_conv_0`` / ``full_res_conv_1``
* ``convs.dispconv3`` -> ``heads.dispconvs.3`` (without DOR: ``dispconv{s}`` -> ``heads.dispconvs.{s}``)
* with DOR, s = 0..2: ``convs.dispconv{s}`` -> ``heads.dor.{s}.disp_conv`` and
  ``delta_gen{s+1}`` -> ``heads.dor.{s}.offset_net``
* ``convs.X_00_Conv_0`` .. ``convs.X_03_Conv_0``, ``convs.uncerconv0..3`` -> ``official_unused.<name>``

The official forward never reads ``X_00``..``X_03_Conv_0`` nor the uncertainty heads
``uncerconv0..3`` (the reference outputs are reproduced without them); they are held, only when
asked for (``official_unused``), by :attr:`HRDepthDecoder.official_unused` so that an official
checkpoint loads strictly. Training builds the decoder without them (DDP needs every parameter used).
"""

import numpy as np
import torch
import torch.nn as nn

from layers import Conv3x3, ConvBlock, upsample
from networks.depth_decoder import NUM_CH_DEC, DisparityHeads

__all__ = ["HRDepthDecoder", "ChannelAttentionAdapter", "FSEFusion", "ConvFusion", "NODE_ORDER",
           "ATTENTION_NODES", "OFFICIAL_UNUSED", "official_key_map", "is_official_hr_state_dict",
           "official_hr_config", "official_to_ours", "ours_to_official"]

NODE_ORDER = ("01", "11", "21", "31", "02", "12", "22", "03", "13", "04")
ATTENTION_NODES = ("31", "22", "13", "04")
OFFICIAL_UNUSED = ("X_00_Conv_0", "X_01_Conv_0", "X_02_Conv_0", "X_03_Conv_0",
                   "uncerconv0", "uncerconv1", "uncerconv2", "uncerconv3")
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
        num_ch_enc: the encoder's 5 channel counts (ResNet-18/34, ResNet-50+ or MPViT-small
            ``[64,128,216,288,288]``).
        scales: requested output scales (subset of 0..3).
        num_output_channels: disparity channels; > 1 only with ``use_dor=False``.
        use_dor: disparity offset refinement (else one plain head per scale).
        official_unused: names out of :data:`OFFICIAL_UNUSED` to hold (never read in forward) so that an
            official checkpoint that has them loads strictly; leave empty for training.

    forward(list of 5 encoder features) -> ``{("disp", s): [B,C,H/2^s,W/2^s] in (0,1)}`` plus, with DOR,
    ``("delta", s): [B,2,H/2^s,W/2^s]`` (offsets in pixels of scale s, channel 0 = x) for s in 2, 1, 0.
    """

    def __init__(self, num_ch_enc, scales=range(4), num_output_channels=1, use_dor=True,
                 official_unused=()):
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

        unknown = sorted(set(official_unused) - set(OFFICIAL_UNUSED))
        if unknown:
            raise ValueError(f"official_unused: unknown name(s) {unknown}; allowed {OFFICIAL_UNUSED}")
        if official_unused:
            # the official shapes: X_00_Conv_0 halves row 0, X_0j_Conv_0 (j >= 1) halves X_0j,
            # uncerconv{s} is a 3x3 conv on the scale-s feature
            shapes = {"X_00_Conv_0": (row_ch[0], row_ch[0] // 2)}
            shapes.update({f"X_0{j}_Conv_0": (row_ch[0] // 2, row_ch[0] // 4) for j in (1, 2, 3)})
            self.official_unused = nn.ModuleDict()
            for name in OFFICIAL_UNUSED:  # canonical order
                if name not in official_unused:
                    continue
                if name.startswith("uncerconv"):
                    self.official_unused[name] = Conv3x3(self.num_ch_dec[int(name[-1])], 1)
                else:
                    self.official_unused[name] = ConvBlock(*shapes[name])

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


# ------------------------------------------------------------------------------------------------
# The official checkpoint layout
# ------------------------------------------------------------------------------------------------
def _official_modules(decoder):
    """``[(official entry of convs or None, official module prefix, our module prefix)]`` in the
    official ``convs`` insertion order, then the top-level ``delta_gen`` modules (entry None)."""
    held = set(decoder.official_unused) if hasattr(decoder, "official_unused") else set()
    dor = decoder.heads.use_dor
    pairs = []

    def add(entry, sub, ours):
        pairs.append((entry, f"convs.{entry}{sub}", ours))

    for i in (4, 3, 2, 1):
        add(f"f{i}", ".ca", f"adapters.{i}.attention")
        add(f"f{i}", ".conv_se", f"adapters.{i}.conv")
    for j in range(5):
        for i in range(5 - j):
            name = f"X_{i}{j}_Conv_0"
            if i >= 1:
                add(name, "", f"nodes.X_{i - 1}{j + 1}.reduce")
            elif j == 4:
                if decoder.needs_full_res:
                    add(name, "", "full_res_conv_0")
                    add("X_04_Conv_1", "", "full_res_conv_1")
            elif name in held:
                add(name, "", f"official_unused.{name}")
    for name in ATTENTION_NODES:
        add(f"X_{name}_attention", ".fc", f"nodes.X_{name}.fuse.attention.fc")
        add(f"X_{name}_attention", ".conv_se", f"nodes.X_{name}.fuse.conv")
    for name in NODE_ORDER:
        if name in ATTENTION_NODES:
            continue
        i, j = int(name[0]), int(name[1])
        if j > 1:
            add(f"X_{name}_downsample", ".conv", f"nodes.X_{name}.fuse.squeeze")
        add(f"X_{i + 1}{j - 1}_Conv_1", "", f"nodes.X_{name}.fuse.block")
    for s in range(4):
        if dor:
            add(f"dispconv{s}", "", "heads.dispconvs.3" if s == 3 else f"heads.dor.{s}.disp_conv")
        elif s in decoder.scales:
            add(f"dispconv{s}", "", f"heads.dispconvs.{s}")
        if f"uncerconv{s}" in held:
            add(f"uncerconv{s}", "", f"official_unused.uncerconv{s}")
    if dor:
        for s in range(3):
            pairs.append((None, f"delta_gen{s + 1}", f"heads.dor.{s}.offset_net"))
    return pairs


def official_key_map(decoder):
    """``{official key: our key}`` for every key of the official ``depth.pth`` of ``decoder``'s
    configuration, the ``decoder.<index>.*`` aliases included (each maps to the same key as its
    ``convs.*`` original).

    Restricted to the originals (``convs.*``, ``delta_gen*``) the map is one to one onto
    ``decoder.state_dict()``'s keys, ``official_unused.*`` included.
    """
    ours = list(decoder.state_dict().keys())
    entries, mapping, aliases = [], {}, {}
    for entry, official, mine in _official_modules(decoder):
        keys = [k for k in ours if k.startswith(mine + ".")]
        if not keys:
            raise AssertionError(f"official_key_map: no parameters under {mine!r}")
        if entry is not None and entry not in entries:
            entries.append(entry)
        for key in keys:
            mapping[official + key[len(mine):]] = key
            if entry is not None:
                rest = official[len(f"convs.{entry}"):] + key[len(mine):]
                aliases[f"decoder.{entries.index(entry)}{rest}"] = key
    # the official file's order: convs.*, then decoder.*, then delta_gen*
    ordered = {k: v for k, v in mapping.items() if k.startswith("convs.")}
    ordered.update(aliases)
    ordered.update({k: v for k, v in mapping.items() if not k.startswith("convs.")})
    return ordered


def is_official_hr_state_dict(state):
    """True for a state dict in the official SRD / MonoViT ``HR_DepthDecoder`` layout."""
    return any(k.startswith(("convs.X_", "convs.f1.")) for k in state)


def official_hr_config(state):
    """``(use_dor, scales, official_unused)`` of an official HR ``depth.pth`` state dict."""
    use_dor = any(k.startswith("delta_gen") for k in state)
    if use_dor:
        scales = [0, 1, 2, 3]
    else:
        scales = [s for s in range(4) if f"convs.dispconv{s}.conv.weight" in state]
    unused = tuple(n for n in OFFICIAL_UNUSED if any(k.startswith(f"convs.{n}.") for k in state))
    return use_dor, scales, unused


def official_to_ours(state, decoder):
    """Rename an official ``depth.pth`` state dict to ``decoder``'s keys, strictly.

    Every key of the official layout must be there and nothing else, and each ``decoder.<index>.*``
    alias must hold the same values as its ``convs.*`` original; raises ValueError otherwise.
    """
    mapping = official_key_map(decoder)
    missing = sorted(set(mapping) - set(state))
    unexpected = sorted(set(state) - set(mapping))
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise ValueError(f"not the official HR decoder layout of this configuration: {len(missing)} "
                         f"missing and {len(unexpected)} unexpected keys (e.g. {example!r})")
    renamed = {}
    for key, value in state.items():
        ours = mapping[key]
        if ours in renamed:
            other = renamed[ours]
            if other.shape != value.shape or not torch.equal(other, value):
                raise ValueError(f"official depth.pth: {key} differs from the tensor it aliases")
            continue
        renamed[ours] = value
    return renamed


def ours_to_official(state, decoder):
    """``decoder``'s state dict in the official layout (aliases included): the inverse of
    :func:`official_to_ours`."""
    return {official: state[ours] for official, ours in official_key_map(decoder).items()}
