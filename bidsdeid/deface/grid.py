"""Working grids: where the network looks, in world (scanner) coordinates."""

from __future__ import annotations

import numpy as np
import torch


def normalise_intensity(image: torch.Tensor) -> torch.Tensor:
    """Scale so the 99th percentile of non-zero voxels is 1; clamp to [0, 1.5]."""
    positive = image[image > 0]
    if positive.numel() == 0:
        return image
    step = max(1, positive.numel() // 200_000)
    level = torch.quantile(positive[::step], 0.99)
    return (image / level.clamp_min(1e-6)).clamp(0, 1.5)


def axis_aligned_grid(
    centre: np.ndarray, spacing: float, shape: tuple[int, int, int]
) -> np.ndarray:
    """Affine of a RAS-aligned grid of ``shape`` voxels of ``spacing`` mm centred on ``centre``."""
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = np.asarray(centre, float) - spacing * (np.asarray(shape) - 1) / 2
    return affine
