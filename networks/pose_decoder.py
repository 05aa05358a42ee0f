"""Pose decoder on ResNet features (Monodepth2's layout and state-dict keys)."""

import torch
import torch.nn as nn

__all__ = ["PoseDecoder"]


class PoseDecoder(nn.Module):
    """Axis-angle and translation from the deepest encoder feature(s).

    ``net.0``: 1x1 "squeeze" conv ``num_ch_enc[-1] -> 256`` (applied to each feature set, ReLU, then
    concatenated); ``net.1``: 3x3 conv ``256*num_input_features -> 256``; ``net.2``: 3x3 conv
    ``256 -> 256``; ``net.3``: 1x1 conv ``256 -> 6*num_frames_to_predict_for``; ReLU between. The output
    is averaged over H and W and scaled by 0.01. These keys load Monodepth2's ``pose.pth`` with
    ``strict=True``.

    Args:
        num_ch_enc: the encoder's 5 channel counts.
        num_input_features: number of encoder feature lists passed to forward.
        num_frames_to_predict_for: poses per sample (default ``num_input_features - 1``; Monodepth2's
            shared-encoder pose net with one stacked pair uses ``num_input_features=1`` and 2).
        stride: stride of the two 3x3 convs.

    forward(input_features: list of ``num_input_features`` encoder feature lists, batch B)
    -> ``(axisangle [B,F,1,3] in radians, translation [B,F,1,3])``,
    ``F = num_frames_to_predict_for``.
    """

    def __init__(self, num_ch_enc, num_input_features, num_frames_to_predict_for=None, stride=1):
        super().__init__()
        if num_frames_to_predict_for is None:
            num_frames_to_predict_for = num_input_features - 1
        if num_frames_to_predict_for < 1:
            raise ValueError("PoseDecoder needs num_frames_to_predict_for >= 1, got "
                             f"{num_frames_to_predict_for}")
        self.num_ch_enc = num_ch_enc
        self.num_input_features = num_input_features
        self.num_frames_to_predict_for = num_frames_to_predict_for
        self.net = nn.ModuleList([
            nn.Conv2d(int(num_ch_enc[-1]), 256, kernel_size=1),
            nn.Conv2d(256 * num_input_features, 256, kernel_size=3, stride=stride, padding=1),
            nn.Conv2d(256, 256, kernel_size=3, stride=stride, padding=1),
            nn.Conv2d(256, 6 * num_frames_to_predict_for, kernel_size=1),
        ])
        self.relu = nn.ReLU()

    def forward(self, input_features):
        if len(input_features) != self.num_input_features:
            raise ValueError(f"PoseDecoder built for {self.num_input_features} feature lists, "
                             f"got {len(input_features)}")
        squeeze = self.net[0]
        x = torch.cat([self.relu(squeeze(features[-1])) for features in input_features], dim=1)
        x = self.relu(self.net[1](x))
        x = self.relu(self.net[2](x))
        x = self.net[3](x)
        out = 0.01 * x.mean(dim=(2, 3)).view(-1, self.num_frames_to_predict_for, 1, 6)
        return out[..., :3], out[..., 3:]
