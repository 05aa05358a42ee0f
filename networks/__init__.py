"""Networks: ResNet / MPViT encoders, depth decoders with DOR, pose networks.

- :mod:`networks.spec`: the model description (:class:`ModelSpec`) and its precedence rule.
- :mod:`networks.build`: spec -> modules (``build_depth``, ``build_pose``, ``predict_pose``).
- :mod:`networks.state_dicts`: the state-dict layouts we read (ours, Monodepth2's, the official
  SRD / MonoViT ones) and how they map onto our modules; file I/O lives in ``checkpointing``.
"""

from networks.resnet_encoder import PretrainedWeightsUnavailable, ResnetEncoder, repeat_conv1_weight
from networks.depth_decoder import DepthDecoder, DisparityHeads, DisparityOffsetRefinement
from networks.hr_decoder import HRDepthDecoder
from networks.pose_decoder import PoseDecoder
from networks.pose_cnn import PoseCNN
from networks.mpvit_encoder import MPViTEncoder, load_imagenet_weights
from networks.spec import ModelSpec, resolve_spec
from networks.build import (DEPTH_DECODERS, PairPose, build_depth, build_depth_decoder,
                            build_depth_encoder, build_pose, check_pair_pose, networks_by_name,
                            predict_pose)

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
    "load_imagenet_weights",
    "ModelSpec",
    "resolve_spec",
    "DEPTH_DECODERS",
    "build_depth",
    "build_depth_encoder",
    "build_depth_decoder",
    "build_pose",
    "predict_pose",
    "networks_by_name",
    "PairPose",
    "check_pair_pose",
]
