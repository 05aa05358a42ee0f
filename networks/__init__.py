"""Networks: ResNet encoder, depth decoders with DOR, pose networks.

Checkpoint helpers live in :mod:`networks.checkpoint`.
"""

from networks.resnet_encoder import PretrainedWeightsUnavailable, ResnetEncoder, repeat_conv1_weight
from networks.depth_decoder import DepthDecoder, DisparityHeads, DisparityOffsetRefinement
from networks.hr_decoder import HRDepthDecoder
from networks.pose_decoder import PoseDecoder
from networks.pose_cnn import PoseCNN
from networks.mpvit_encoder import MPViTEncoder, load_imagenet_weights

__all__ = [
    "ResnetEncoder",
    "PretrainedWeightsUnavailable",
    "repeat_conv1_weight",
    "DepthDecoder",
    "HRDepthDecoder",
    "DisparityHeads",
    "DisparityOffsetRefinement",
    "PoseDecoder",
    "PoseCNN",
    "MPViTEncoder",
    "build_depth_encoder",
    "DEPTH_DECODERS",
    "build_depth_decoder",
]

DEPTH_DECODERS = ("hr", "unet")


def build_depth_decoder(name, num_ch_enc, scales, use_dor, num_output_channels=1):
    """Build the depth decoder chosen by ``--depth_decoder`` ("hr" or "unet")."""
    if name == "hr":
        return HRDepthDecoder(num_ch_enc, scales, num_output_channels=num_output_channels,
                              use_dor=use_dor)
    if name == "unet":
        return DepthDecoder(num_ch_enc, scales, num_output_channels=num_output_channels,
                            use_dor=use_dor)
    raise ValueError(f"--depth_decoder {name!r} is unknown; choose one of {', '.join(DEPTH_DECODERS)}")


def build_depth_encoder(opt, pretrained):
    """The depth encoder chosen by ``--encoder``: ResNet (``--num_layers``) or MPViT-small.

    For MPViT with ``pretrained``, ``--encoder_weights`` must name an ``mpvit_small.pth``; absent, a
    :class:`PretrainedWeightsUnavailable` with a one-line message is raised (train.py: exit 2).
    """
    if getattr(opt, "encoder", "resnet") == "resnet":
        enc = ResnetEncoder(opt.num_layers, pretrained)
        enc.encoder.fc.requires_grad_(False)  # kept for Monodepth2 keys, never used
        return enc
    enc = MPViTEncoder()
    if pretrained:
        import os
        path = getattr(opt, "encoder_weights", None)
        if not path or not os.path.isfile(path):
            raise PretrainedWeightsUnavailable(
                f"--encoder mpvit: ImageNet weights file {path!r} not found; pass --encoder_weights "
                "PATH/mpvit_small.pth or train with --weights_init scratch")
        loaded, missing, unexpected = load_imagenet_weights(enc, path)
        print(f"MPViT ImageNet weights {path}: loaded {len(loaded)} tensors, "
              f"{len(missing)} missing, {len(unexpected)} not used")
    return enc
