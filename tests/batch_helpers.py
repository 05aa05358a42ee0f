"""Helpers that build training batch dicts for model-level tests (no dataset needed)."""

import torch


def add_intrinsics(inputs, B, H, W, num_scales=4):
    """Put ``("K", s)`` / ``("inv_K", s)`` [B,4,4] for a KITTI-like camera at H x W / 2^s into
    ``inputs`` for every scale s; returns ``inputs``."""
    for s in range(num_scales):
        K = torch.eye(4).repeat(B, 1, 1)
        K[:, 0, 0], K[:, 1, 1] = 0.58 * W / 2 ** s, 1.92 * H / 2 ** s
        K[:, 0, 2], K[:, 1, 2] = 0.5 * W / 2 ** s, 0.5 * H / 2 ** s
        inputs[("K", s)], inputs[("inv_K", s)] = K, torch.linalg.inv(K)
    return inputs
