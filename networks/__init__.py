"""Networks: ResNet encoder, depth decoders with DOR, pose networks.

Checkpoint helpers live in :mod:`networks.checkpoint`.
"""

from networks.resnet_encoder import PretrainedWeightsUnavailable, ResnetEncoder, repeat_conv1_weight
from networks.depth_decoder import DepthDecoder, DisparityHeads, DisparityOffsetRefinement
from networks.hr_decoder import HRDepthDecoder
from networks.pose_decoder import PoseDecoder
from networks.pose_cnn import PoseCNN

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
