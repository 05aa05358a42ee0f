"""MPViT-small encoder (multi-path vision transformer) as the official SRD / MonoViT code uses it.

Plain PyTorch (no ``mmcv``/``mmseg``/``timm``). Module names follow the official state-dict layout
(``../shared/spec/official_srd_reference/encoder_keys.txt``) so official ``encoder.pth`` files load
strictly without any key mapping. As in the official code, each ``MHCAEncoder``'s convolutional
position encodings (``cpe``, ``crpe``) are *shared* by all its layers, so the same tensors appear
under several keys (``mhca_blks.N.cpe`` / ``MHCA_layers.M.cpe`` / ``factoratt_crpe.crpe``).

Architecture (MPViT-small): ``embed_dims=[64,128,216,288]``, ``num_path=[2,3,3,3]``,
``num_layers=[1,3,6,3]``, ``mlp_ratio=4``, ``num_heads=8``, BatchNorm, Hardswish, LayerNorm eps 1e-6,
stochastic depth (drop-path) rising linearly to 0.2 over the 13 transformer layers.

forward(x: ``[B,3,H,W]`` in [0,1]) -> list of 5 features:
``[B,64,H/2,W/2]``, ``[B,128,H/4,W/4]``, ``[B,216,H/8,W/8]``, ``[B,288,H/16,W/16]``,
``[B,288,H/32,W/32]``.
"""

import torch
import torch.nn as nn

__all__ = ["MPViTEncoder", "MPVIT_SMALL", "load_imagenet_weights"]

MPVIT_SMALL = dict(embed_dims=(64, 128, 216, 288), num_path=(2, 3, 3, 3), num_layers=(1, 3, 6, 3),
                   mlp_ratio=4, num_heads=8)
CRPE_WINDOW = {3: 2, 5: 3, 7: 3}  # kernel size -> number of heads using it


def drop_path(x, prob, training):
    """Stochastic depth: zero whole samples of a residual branch with probability ``prob``."""
    if prob == 0.0 or not training:
        return x
    keep = 1.0 - prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class ConvBN(nn.Module):
    """Bias-free conv -> BatchNorm -> optional Hardswish (keys ``conv``, ``bn``)."""

    def __init__(self, in_ch, out_ch, kernel_size=1, stride=1, act=False):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.Hardswish() if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class DWConvBN(nn.Module):
    """Depthwise 3x3 conv (stride ``stride``) -> pointwise 1x1 -> BatchNorm -> Hardswish."""

    def __init__(self, in_ch, out_ch, kernel_size=3, stride=1):
        super().__init__()
        self.dwconv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2,
                                groups=out_ch, bias=False)
        self.pwconv = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.Hardswish()

    def forward(self, x):
        return self.act(self.bn(self.pwconv(self.dwconv(x))))


class PatchEmbed(nn.Module):
    """One path's patch embedding (key ``patch_conv``)."""

    def __init__(self, in_ch, embed_dim, stride):
        super().__init__()
        self.patch_conv = DWConvBN(in_ch, embed_dim, 3, stride)

    def forward(self, x):
        return self.patch_conv(x)


class PatchEmbedStage(nn.Module):
    """``num_path`` chained patch embeddings; the first strides by 2. Returns every path's map."""

    def __init__(self, embed_dim, num_path):
        super().__init__()
        self.patch_embeds = nn.ModuleList(
            [PatchEmbed(embed_dim, embed_dim, 2 if i == 0 else 1) for i in range(num_path)])

    def forward(self, x):
        outs = []
        for embed in self.patch_embeds:
            x = embed(x)
            outs.append(x)
        return outs


class ConvPosEnc(nn.Module):
    """Convolutional position encoding: tokens ``[B,N,C]`` + depthwise 3x3 conv of their image."""

    def __init__(self, dim, k=3):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, k, 1, k // 2, groups=dim)

    def forward(self, x, size):
        b, n, c = x.shape
        feat = x.transpose(1, 2).reshape(b, c, size[0], size[1])
        return (self.proj(feat) + feat).flatten(2).transpose(1, 2)


class ConvRelPosEnc(nn.Module):
    """Convolutional relative position encoding: ``q * dwconv(v)``, head groups with 3/5/7 kernels."""

    def __init__(self, head_ch, num_heads, window=CRPE_WINDOW):
        super().__init__()
        self.head_ch = head_ch
        self.conv_list = nn.ModuleList()
        self.channel_splits = []
        for kernel, heads in window.items():
            ch = heads * head_ch
            self.conv_list.append(nn.Conv2d(ch, ch, kernel, 1, kernel // 2, groups=ch))
            self.channel_splits.append(ch)
        assert sum(window.values()) == num_heads

    def forward(self, q, v, size):
        """q, v: ``[B,h,N,Ch]`` -> ``[B,h,N,Ch]``."""
        b, h, n, ch = q.shape
        v_img = v.transpose(2, 3).reshape(b, h * ch, size[0], size[1])
        conv_v = torch.cat([conv(part) for conv, part in
                            zip(self.conv_list, torch.split(v_img, self.channel_splits, dim=1))], 1)
        conv_v = conv_v.reshape(b, h, ch, n).transpose(2, 3)
        return q * conv_v


class FactorAttConvRelPosEnc(nn.Module):
    """Factorised attention ``scale * q (softmax_N(k)^T v)`` plus the shared conv rel. pos. enc."""

    def __init__(self, dim, num_heads, crpe):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.crpe = crpe

    def forward(self, x, size):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        kv = torch.matmul(k.softmax(dim=2).transpose(2, 3), v)  # [B,h,Ch,Ch]
        out = self.scale * torch.matmul(q, kv) + self.crpe(q, v, size)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class MHCABlock(nn.Module):
    """Transformer layer: shared cpe, pre-norm factorised attention and MLP, both drop-pathed."""

    def __init__(self, dim, num_heads, mlp_ratio, drop_prob, cpe, crpe):
        super().__init__()
        self.cpe = cpe
        self.crpe = crpe
        self.factoratt_crpe = FactorAttConvRelPosEnc(dim, num_heads, crpe)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.drop_prob = drop_prob
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x, size):
        x = self.cpe(x, size)
        x = x + drop_path(self.factoratt_crpe(self.norm1(x), size), self.drop_prob, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_prob, self.training)


class MHCAEncoder(nn.Module):
    """``num_layers`` MHCA layers on one path's tokens; ``[B,N,C]`` -> ``[B,C,H,W]``."""

    def __init__(self, dim, num_layers, num_heads, mlp_ratio, drop_probs):
        super().__init__()
        self.cpe = ConvPosEnc(dim, 3)
        self.crpe = ConvRelPosEnc(dim // num_heads, num_heads)
        self.MHCA_layers = nn.ModuleList([
            MHCABlock(dim, num_heads, mlp_ratio, drop_probs[i], self.cpe, self.crpe)
            for i in range(num_layers)])

    def forward(self, x, size):
        for layer in self.MHCA_layers:
            x = layer(x, size)
        b = x.shape[0]
        return x.reshape(b, size[0], size[1], -1).permute(0, 3, 1, 2).contiguous()


class ResBlock(nn.Module):
    """Local (convolutional) path: x + ConvBN(1x1, conv) of dwconv3x3-BN-Hardswish of ConvBN(1x1)."""

    def __init__(self, dim):
        super().__init__()
        self.conv1 = ConvBN(dim, dim, act=True)
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, bias=False)
        self.norm = nn.BatchNorm2d(dim)
        self.act = nn.Hardswish()
        self.conv2 = ConvBN(dim, dim)

    def forward(self, x):
        return x + self.conv2(self.act(self.norm(self.dwconv(self.conv1(x)))))


class MHCAStage(nn.Module):
    """One stage: local ResBlock on path 0 + one MHCAEncoder per path, concatenated, 1x1 aggregate."""

    def __init__(self, dim, out_dim, num_layers, num_heads, mlp_ratio, num_path, drop_probs):
        super().__init__()
        self.mhca_blks = nn.ModuleList([
            MHCAEncoder(dim, num_layers, num_heads, mlp_ratio, drop_probs) for _ in range(num_path)])
        self.InvRes = ResBlock(dim)
        self.aggregate = ConvBN(dim * (num_path + 1), out_dim, act=True)

    def forward(self, inputs):
        outs = [self.InvRes(inputs[0])]
        for x, encoder in zip(inputs, self.mhca_blks):
            h, w = x.shape[2:]
            outs.append(encoder(x.flatten(2).transpose(1, 2), (h, w)))
        return self.aggregate(torch.cat(outs, dim=1))


class MPViTEncoder(nn.Module):
    """MPViT encoder with MonoViT's stride-2 stem (5 feature maps, see the module docstring).

    Args:
        drop_path_rate: final stochastic-depth probability (official 0.2; active in train mode only).
        embed_dims, num_path, num_layers, mlp_ratio, num_heads: architecture (default MPViT-small).
    """

    def __init__(self, drop_path_rate=0.2, embed_dims=MPVIT_SMALL["embed_dims"],
                 num_path=MPVIT_SMALL["num_path"], num_layers=MPVIT_SMALL["num_layers"],
                 mlp_ratio=MPVIT_SMALL["mlp_ratio"], num_heads=MPVIT_SMALL["num_heads"]):
        super().__init__()
        embed_dims = list(embed_dims)
        total = sum(num_layers)
        dpr = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        self.stem = nn.Sequential(ConvBN(3, embed_dims[0] // 2, 3, 2, act=True),
                                  ConvBN(embed_dims[0] // 2, embed_dims[0], 3, 1, act=True))
        self.patch_embed_stages = nn.ModuleList(
            [PatchEmbedStage(embed_dims[i], num_path[i]) for i in range(len(embed_dims))])
        out_dims = embed_dims[1:] + [embed_dims[-1]]
        stages, cur = [], 0
        for i in range(len(embed_dims)):
            stages.append(MHCAStage(embed_dims[i], out_dims[i], num_layers[i], num_heads, mlp_ratio,
                                    num_path[i], dpr[cur:cur + num_layers[i]]))
            cur += num_layers[i]
        self.mhca_stages = nn.ModuleList(stages)
        self.num_ch_enc = [embed_dims[0]] + out_dims

    def forward(self, x):
        x = self.stem(x)
        features = [x]
        for embed, stage in zip(self.patch_embed_stages, self.mhca_stages):
            x = stage(embed(x))
            features.append(x)
        return features


def load_imagenet_weights(encoder, path):
    """Load a published ``mpvit_small.pth`` (its ``model`` entry) non-strictly into ``encoder``.

    Returns ``(loaded, missing, unexpected)`` key lists. Raises FileNotFoundError if ``path`` is absent.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    own = encoder.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    result = encoder.load_state_dict(usable, strict=False)
    unexpected = sorted(set(state) - set(usable))
    return sorted(usable), sorted(result.missing_keys), unexpected
