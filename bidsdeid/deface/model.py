"""A compact 3D U-Net predicting brain and face probabilities on a coarse working grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

OUTPUTS = ("brain", "face")


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, 3, padding=1),
        nn.InstanceNorm3d(c_out, affine=True),
        nn.LeakyReLU(0.1, inplace=True),
        nn.Conv3d(c_out, c_out, 3, padding=1),
        nn.InstanceNorm3d(c_out, affine=True),
        nn.LeakyReLU(0.1, inplace=True),
    )


class UNet3D(nn.Module):
    """Four-level U-Net; input size must be a multiple of 8 on each axis.

    Returns logits of shape (N, 2, ...) for ``OUTPUTS``.
    """

    def __init__(self, channels: tuple[int, ...] = (8, 16, 32, 48)) -> None:
        super().__init__()
        self.channels = tuple(channels)
        self.down = nn.ModuleList()
        c_prev = 1
        for c in channels:
            self.down.append(_block(c_prev, c))
            c_prev = c
        self.up = nn.ModuleList(
            _block(channels[i + 1] + channels[i], channels[i]) for i in range(len(channels) - 1)
        )
        self.head = nn.Conv3d(channels[0], len(OUTPUTS), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool3d(x, 2))
            skips.append(x)
        x = skips.pop()
        for block in reversed(self.up):
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)
