"""Stand-alone pose CNN on stacked frames (Monodepth2's ``--pose_model_type posecnn``)."""

import torch.nn as nn

__all__ = ["PoseCNN"]

_CHANNELS = (16, 32, 64, 128, 256, 256, 256)
_KERNELS = (7, 5, 3, 3, 3, 3, 3)


class PoseCNN(nn.Module):
    """Seven stride-2 conv + ReLU layers (``net.0``..``net.6``) and a 1x1 ``pose_conv``.

    Keys match Monodepth2's ``pose.pth`` for this model type. The input is used as given (no
    normalisation), as in Monodepth2.

    Args:
        num_input_frames: number of RGB frames stacked along channels.

    forward(x ``[B,3*num_input_frames,H,W]``) -> ``(axisangle [B,F,1,3], translation [B,F,1,3])``,
    ``F = num_input_frames - 1``, averaged over H and W and scaled by 0.01.
    """

    def __init__(self, num_input_frames):
        super().__init__()
        if num_input_frames < 2:
            raise ValueError(f"PoseCNN needs at least 2 input frames, got {num_input_frames}")
        self.num_input_frames = num_input_frames
        layers = []
        num_in = 3 * num_input_frames
        for num_out, kernel in zip(_CHANNELS, _KERNELS):
            layers.append(nn.Conv2d(num_in, num_out, kernel, stride=2, padding=(kernel - 1) // 2))
            num_in = num_out
        self.net = nn.ModuleList(layers)
        self.pose_conv = nn.Conv2d(num_in, 6 * (num_input_frames - 1), kernel_size=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        expected = 3 * self.num_input_frames
        if x.dim() != 4 or x.shape[1] != expected:
            raise ValueError(f"PoseCNN expects [B,{expected},H,W] input, got {tuple(x.shape)}")
        for conv in self.net:
            x = self.relu(conv(x))
        x = self.pose_conv(x)
        out = 0.01 * x.mean(dim=(2, 3)).view(-1, self.num_input_frames - 1, 1, 6)
        return out[..., :3], out[..., 3:]
