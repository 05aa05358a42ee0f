"""Build the networks a :class:`~networks.spec.ModelSpec` describes, and run the pose network.

The one place where a spec becomes modules: training (``srd.SRDModel``), ``evaluate_depth.py``,
``evaluate_pose.py``, ``test_simple.py``, ``export_model.py`` and the benches all call these.
"""

import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from networks.depth_decoder import DepthDecoder
from networks.hr_decoder import HRDepthDecoder
from networks.mpvit_encoder import MPViTEncoder, load_imagenet_weights
from networks.pose_cnn import PoseCNN
from networks.pose_decoder import PoseDecoder
from networks.resnet_encoder import PretrainedWeightsUnavailable, ResnetEncoder
from networks.spec import ModelSpec

__all__ = ["DEPTH_DECODERS", "build_depth_encoder", "build_depth_decoder", "build_depth",
           "build_pose", "predict_pose", "networks_by_name", "PairPose", "check_pair_pose"]

DEPTH_DECODERS = ("hr", "unet")


def build_depth_decoder(name: str, num_ch_enc: Sequence[int], scales: Sequence[int], use_dor: bool,
                        num_output_channels: int = 1) -> nn.Module:
    """The depth decoder ``name`` ("hr" or "unet") for encoder channels ``num_ch_enc``."""
    if name == "hr":
        return HRDepthDecoder(num_ch_enc, scales, num_output_channels=num_output_channels,
                              use_dor=use_dor)
    if name == "unet":
        return DepthDecoder(num_ch_enc, scales, num_output_channels=num_output_channels,
                            use_dor=use_dor)
    raise ValueError(f"--depth_decoder {name!r} is unknown; choose one of {', '.join(DEPTH_DECODERS)}")


def build_depth_encoder(spec: ModelSpec, pretrained: bool = False,
                        encoder_weights: Optional[str] = None) -> nn.Module:
    """The depth encoder of ``spec``: ResNet-``num_layers`` or MPViT-small.

    ``pretrained``: ImageNet weights (torchvision's for ResNet; for MPViT the ``mpvit_small.pth``
    named by ``encoder_weights``, else a :class:`PretrainedWeightsUnavailable` with a one-line message).
    """
    if spec.encoder == "resnet":
        enc = ResnetEncoder(spec.num_layers, pretrained)
        enc.encoder.fc.requires_grad_(False)  # kept for Monodepth2 keys, never used
        return enc
    enc = MPViTEncoder()
    if pretrained:
        if not encoder_weights or not os.path.isfile(encoder_weights):
            raise PretrainedWeightsUnavailable(
                f"--encoder mpvit: ImageNet weights file {encoder_weights!r} not found; pass "
                "--encoder_weights PATH/mpvit_small.pth or train with --weights_init scratch")
        loaded, missing, unexpected = load_imagenet_weights(enc, encoder_weights)
        print(f"MPViT ImageNet weights {encoder_weights}: loaded {len(loaded)} tensors, "
              f"{len(missing)} missing, {len(unexpected)} not used")
    return enc


def build_depth(spec: ModelSpec, pretrained: bool = False,
                encoder_weights: Optional[str] = None) -> Tuple[nn.Module, nn.Module]:
    """(depth encoder, depth decoder) of ``spec``."""
    encoder = build_depth_encoder(spec, pretrained, encoder_weights)
    decoder = build_depth_decoder(spec.depth_decoder, encoder.num_ch_enc, spec.scales, spec.use_dor)
    return encoder, decoder


def build_pose(spec: ModelSpec, depth_encoder: Optional[nn.Module] = None,
               pretrained: bool = False) -> Tuple[Optional[nn.Module], nn.Module]:
    """(pose encoder or None, pose network) of ``spec``.

    "separate_resnet": a ResNet-``num_layers`` on ``num_pose_frames`` stacked images + PoseDecoder;
    "shared": a PoseDecoder on the depth encoder's features (``depth_encoder`` required);
    "posecnn": PoseCNN on the stacked images.
    """
    n = spec.num_pose_frames
    if spec.pose_model_type == "separate_resnet":
        enc = ResnetEncoder(spec.num_layers, pretrained, num_input_images=n)
        enc.encoder.fc.requires_grad_(False)
        n_pred = 2 if spec.pose_model_input == "pairs" else n - 1
        return enc, PoseDecoder(enc.num_ch_enc, num_input_features=1, num_frames_to_predict_for=n_pred)
    if spec.pose_model_type == "shared":
        if depth_encoder is None:
            raise ValueError("pose_model_type 'shared' needs the depth encoder")
        return None, PoseDecoder(depth_encoder.num_ch_enc, n)
    if spec.pose_model_type == "posecnn":
        return None, PoseCNN(n)
    raise ValueError(f"--pose_model_type {spec.pose_model_type!r} is unknown")


def predict_pose(pose_model_type: str, pose_encoder: Optional[nn.Module], pose: nn.Module,
                 images: List[torch.Tensor],
                 features: Optional[List[List[torch.Tensor]]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run the pose network on frames given in its input order.

    Args:
        images: one ``[B,3,H,W]`` image per frame (stacked along channels for the separate encoder
            and PoseCNN).
        features: for "shared", the depth encoder's feature list of each frame.
    Returns:
        ``(axisangle, translation)``, each ``[B,F,1,3]`` (axis-angle in radians).
    """
    if pose_model_type == "shared":
        return pose(features)
    stacked = torch.cat(images, 1)
    if pose_model_type == "separate_resnet":
        return pose([pose_encoder(stacked)])
    return pose(stacked)


def networks_by_name(encoder: nn.Module, depth: nn.Module, pose_encoder: Optional[nn.Module] = None,
                     pose: Optional[nn.Module] = None,
                     mask: Optional[nn.Module] = None) -> Dict[str, nn.Module]:
    """Name -> module as written to ``weights_<epoch>/<name>.pth`` (absent networks left out)."""
    nets = {"encoder": encoder, "depth": depth, "pose_encoder": pose_encoder, "pose": pose,
            "mask": mask}
    return {k: v for k, v in nets.items() if v is not None}


class PairPose(nn.Module):
    """A pose network that takes frame pairs, as one module: ``(image0, image1)`` (each
    ``[B,3,H,W]``) -> ``(axisangle [B,1,3] in radians, translation [B,1,3])`` of the first predicted
    transform (frame 0 -> frame 1, Monodepth2's convention for the pair ``[0, 1]``).

    Used by ``evaluate_pose.py`` and ``export_model.py --pose``; :func:`check_pair_pose` says which
    specs it can serve.
    """

    def __init__(self, pose_model_type: str, pose_encoder: Optional[nn.Module], pose: nn.Module,
                 depth_encoder: Optional[nn.Module] = None):
        super().__init__()
        self.pose_model_type = pose_model_type
        self.pose_encoder, self.pose, self.depth_encoder = pose_encoder, pose, depth_encoder

    def forward(self, image0: torch.Tensor, image1: torch.Tensor):
        features = None
        if self.pose_model_type == "shared":
            features = [self.depth_encoder(image0), self.depth_encoder(image1)]
        axisangle, translation = predict_pose(self.pose_model_type, self.pose_encoder, self.pose,
                                              [image0, image1], features)
        return axisangle[:, 0], translation[:, 0]


def check_pair_pose(spec: ModelSpec, what: str) -> None:
    """ValueError (one line, naming ``what``) unless ``spec``'s pose network takes frame pairs."""
    if spec.pose_model_input != "pairs" or spec.pose_model_type not in ("separate_resnet", "shared"):
        raise ValueError(f"{what} works on pose networks of frame pairs (--pose_model_input pairs, "
                         "--pose_model_type separate_resnet or shared); this run has "
                         f"{spec.pose_model_input} / {spec.pose_model_type}")
