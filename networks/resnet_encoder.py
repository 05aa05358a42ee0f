"""ResNet encoder for depth (one image) and pose (several stacked images).

State-dict keys equal torchvision's ResNet prefixed with ``encoder.`` (``encoder.conv1.weight``,
``encoder.layer1.0.conv1.weight``, ..., ``encoder.fc.weight``), which is what Monodepth2's
``encoder.pth`` and ``pose_encoder.pth`` contain, so those checkpoints load with ``strict=True``
once their ``height``/``width``/``use_stereo`` entries are removed.
"""

import os
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn as nn
from torchvision import models

__all__ = ["ResnetEncoder", "PretrainedWeightsUnavailable", "repeat_conv1_weight", "RESNET_DEPTHS"]

RESNET_DEPTHS = (18, 34, 50, 101, 152)

_CONSTRUCTORS = {
    18: (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    34: (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1),
    50: (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1),
    101: (models.resnet101, models.ResNet101_Weights.IMAGENET1K_V1),
    152: (models.resnet152, models.ResNet152_Weights.IMAGENET1K_V1),
}

# Monodepth2 convention: inputs in [0, 1] are normalised with one mean/std for all channels.
INPUT_MEAN = 0.45
INPUT_STD = 0.225


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet weights could not be downloaded or read from the torch hub cache."""


def repeat_conv1_weight(weight, num_input_images):
    """Adapt a 3-channel conv1 weight ``[C,3,k,k]`` to ``num_input_images`` stacked RGB images.

    The weight is repeated along the input-channel dimension and divided by the number of images,
    so a stack of identical images gives the same response as one image did.
    Returns ``[C, 3*num_input_images, k, k]``.
    """
    return torch.cat([weight] * num_input_images, dim=1) / num_input_images


def _load_imagenet_state_dict(num_layers):
    weights = _CONSTRUCTORS[num_layers][1]
    filename = os.path.basename(urlparse(weights.url).path)
    hub_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
    try:
        return weights.get_state_dict(progress=False)
    except Exception as exc:  # offline, proxy error, truncated file, ...
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise PretrainedWeightsUnavailable(
            f"ImageNet weights for ResNet-{num_layers} ({filename}) unavailable ({reason}): "
            f"pass --weights_init scratch or place {filename} in {hub_dir}") from None


class ResnetEncoder(nn.Module):
    """ResNet feature pyramid.

    Args:
        num_layers: one of 18, 34, 50, 101, 152.
        pretrained: load torchvision's ImageNet weights (``IMAGENET1K_V1``); raises
            :class:`PretrainedWeightsUnavailable` with a one-line message when they cannot be had.
        num_input_images: number of RGB images stacked along channels (pose encoder: 2). With
            pretrained weights, conv1 is :func:`repeat_conv1_weight` of the ImageNet conv1.

    forward(x ``[B,3*num_input_images,H,W]`` in [0,1]) -> list of 5 features at strides 2, 4, 8, 16,
    32 with ``num_ch_enc`` channels: ``[64,64,128,256,512]`` (x4 for levels 1-4 when num_layers > 34).
    """

    def __init__(self, num_layers, pretrained, num_input_images=1):
        super().__init__()
        if num_layers not in _CONSTRUCTORS:
            raise ValueError(f"--num_layers {num_layers} is not a valid ResNet depth; "
                             f"choose one of {', '.join(map(str, RESNET_DEPTHS))}")
        if num_input_images < 1:
            raise ValueError(f"num_input_images must be >= 1, got {num_input_images}")
        self.num_layers = num_layers
        self.num_input_images = num_input_images
        self.num_ch_enc = np.array([64, 64, 128, 256, 512])
        if num_layers > 34:
            self.num_ch_enc[1:] *= 4

        self.encoder = _CONSTRUCTORS[num_layers][0](weights=None)
        if num_input_images > 1:
            conv1 = nn.Conv2d(3 * num_input_images, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
            self.encoder.conv1 = conv1
        if pretrained:
            state = _load_imagenet_state_dict(num_layers)
            if num_input_images > 1:
                state["conv1.weight"] = repeat_conv1_weight(state["conv1.weight"], num_input_images)
            self.encoder.load_state_dict(state)

    def forward(self, input_image):
        expected = 3 * self.num_input_images
        if input_image.dim() != 4 or input_image.shape[1] != expected:
            raise ValueError(f"ResnetEncoder expects [B,{expected},H,W] input, "
                             f"got {tuple(input_image.shape)}")
        enc = self.encoder
        x = (input_image - INPUT_MEAN) / INPUT_STD
        features = [enc.relu(enc.bn1(enc.conv1(x)))]
        features.append(enc.layer1(enc.maxpool(features[-1])))
        features.append(enc.layer2(features[-1]))
        features.append(enc.layer3(features[-1]))
        features.append(enc.layer4(features[-1]))
        return features
