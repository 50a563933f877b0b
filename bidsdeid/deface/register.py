"""Registration of a template head to another head: affine, then deformable.

Small gradient-descent registrations in PyTorch: 12 affine parameters, then a smooth
displacement on a coarse control grid, on coarse-to-fine isotropic grids, by normalised
cross-correlation (global, or local where contrasts differ). They need no FSL/ANTs and run on
a CPU. Used to carry template labels (brain, face) onto another head: when building the
training atlas (``atlas.py``), and by the registration-based defacing fallback
(``template.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def grid_world_coords(shape: tuple[int, int, int], affine: np.ndarray) -> torch.Tensor:
    """World (mm) coordinates of every voxel centre of a grid, shape (*shape, 3)."""
    axes = [torch.arange(n, dtype=torch.float32) for n in shape]
    ijk = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    a = torch.as_tensor(affine, dtype=torch.float32)
    return ijk @ a[:3, :3].T + a[:3, 3]


def sample_at_world(
    volume: torch.Tensor, affine: np.ndarray, world: torch.Tensor, mode: str = "bilinear"
) -> torch.Tensor:
    """Sample a (C, I, J, K) volume at world points (..., 3); zero outside the volume."""
    inv = torch.as_tensor(np.linalg.inv(affine), dtype=torch.float32)
    ijk = world @ inv[:3, :3].T + inv[:3, 3]
    size = torch.tensor(volume.shape[1:], dtype=torch.float32)
    norm = 2.0 * ijk / (size - 1) - 1.0
    # grid_sample wants (x, y, z) = (K, J, I) order for a (N, C, I, J, K) input.
    grid = norm.flip(-1).reshape(1, *world.shape[:-1], 3)
    if grid.dim() == 3:
        grid = grid.reshape(1, 1, 1, -1, 3)
    out = F.grid_sample(volume[None], grid, mode=mode, padding_mode="zeros", align_corners=True)
    return out[0].reshape(volume.shape[0], *world.shape[:-1])


def isotropic_grid(
    shape: tuple[int, ...], affine: np.ndarray, spacing: float
) -> tuple[tuple[int, int, int], np.ndarray]:
    """An axis-aligned (world) grid of ``spacing`` mm covering the volume's bounding box."""
    corners = (
        np.array(
            [
                [i, j, k, 1]
                for i in (0, shape[0] - 1)
                for j in (0, shape[1] - 1)
                for k in (0, shape[2] - 1)
            ],
            dtype=float,
        )
        @ affine.T
    )
    lo, hi = corners[:, :3].min(0), corners[:, :3].max(0)
    n = np.ceil((hi - lo) / spacing).astype(int) + 1
    grid_affine = np.diag([spacing, spacing, spacing, 1.0])
    grid_affine[:3, 3] = lo
    return (int(n[0]), int(n[1]), int(n[2])), grid_affine


def _normalise(v: torch.Tensor) -> torch.Tensor:
    hi = torch.quantile(v[v > 0].flatten()[::7], 0.99) if (v > 0).any() else torch.tensor(1.0)
    return (v / hi).clamp(0, 1.5)


def _centroid(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    w = np.clip(volume, 0, None).astype(np.float64)
    ijk = np.array(np.nonzero(w > 0.1 * w.max()), dtype=float)
    return (affine[:3, :3] @ ijk.mean(1)) + affine[:3, 3]


def register_affine(
    fixed: np.ndarray,
    fixed_affine: np.ndarray,
    moving: np.ndarray,
    moving_affine: np.ndarray,
    fixed_weight: np.ndarray | None = None,
    spacings: tuple[float, ...] = (6.0, 4.0, 3.0),
    iterations: int = 120,
    window_mm: float | None = None,
) -> np.ndarray:
    """4x4 matrix T mapping fixed world coordinates to moving world coordinates.

    ``fixed_weight`` (same grid as ``fixed``) limits where the similarity is measured, e.g. a
    brain mask when only the brain should drive the fit. With ``window_mm`` the similarity is
    local (squared correlation in boxes of that size), so the two images may differ in contrast
    (a T1w template on a T2w head); else it is one correlation over the whole weight.
    """
    fixed_t, moving_t, weight_t = _as_tensors(fixed, moving, fixed_weight)
    shift = _centroid(moving, moving_affine) - _centroid(fixed, fixed_affine)
    linear = torch.zeros(9, requires_grad=True)
    translation = torch.as_tensor(shift, dtype=torch.float32).clone().requires_grad_(True)
    for spacing in spacings:
        world, f, w = _level(fixed_t, fixed_affine, weight_t, spacing)
        centre = (world * w[..., None]).sum((0, 1, 2)) / w.sum()
        # Adam steps are about lr per parameter: mm for the shift, unitless for the matrix.
        opt = torch.optim.Adam(
            [{"params": [linear], "lr": 0.004}, {"params": [translation], "lr": 0.6 * spacing / 4}]
        )
        for _ in range(iterations):
            opt.zero_grad()
            matrix = torch.eye(3) + linear.reshape(3, 3)
            moved_world = (world - centre) @ matrix.T + centre + translation
            m = sample_at_world(moving_t, moving_affine, moved_world)[0]
            if window_mm is None:
                loss = -_weighted_ncc(f, m, w)
            else:
                loss = -_local_ncc(f, m, w, max(1, round(window_mm / spacing / 2)))
            loss.backward()
            opt.step()
    with torch.no_grad():
        matrix = (torch.eye(3) + linear.reshape(3, 3)).numpy().astype(float)
        t = translation.numpy().astype(float)
    c = centre.numpy().astype(float)
    out = np.eye(4)
    out[:3, :3] = matrix
    out[:3, 3] = c - matrix @ c + t
    return out


def _as_tensors(
    fixed: np.ndarray, moving: np.ndarray, fixed_weight: np.ndarray | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Normalised fixed and moving images, and the weight, as (1, I, J, K) tensors."""
    weight = None
    if fixed_weight is not None:
        weight = torch.as_tensor(np.asarray(fixed_weight, np.float32))[None]
    return (
        _normalise(torch.as_tensor(np.asarray(fixed, np.float32)))[None],
        _normalise(torch.as_tensor(np.asarray(moving, np.float32)))[None],
        weight,
    )


def _level(
    fixed_t: torch.Tensor, fixed_affine: np.ndarray, weight_t: torch.Tensor | None, spacing: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One resolution level: world points of an isotropic grid over the fixed image, the fixed
    image on it and the weight (the head, where no weight is given)."""
    shape, grid_affine = isotropic_grid(tuple(fixed_t.shape[1:]), fixed_affine, spacing)
    world = grid_world_coords(shape, grid_affine)
    f = sample_at_world(fixed_t, fixed_affine, world)[0]
    if weight_t is None:
        return world, f, (f > 0.05).float()
    return world, f, sample_at_world(weight_t, fixed_affine, world)[0]


def _weighted_ncc(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    sw = w.sum()
    ma, mb = (a * w).sum() / sw, (b * w).sum() / sw
    da, db = a - ma, b - mb
    cov = (w * da * db).sum()
    return cov / torch.sqrt((w * da * da).sum() * (w * db * db).sum() + 1e-8)


@dataclass(frozen=True)
class Warp:
    """Fixed world -> moving world: an affine, then a smooth displacement (mm).

    The displacement lives on a coarse control grid in fixed world space and is interpolated
    trilinearly between control points.
    """

    affine: np.ndarray  # 4x4, fixed world -> moving world
    displacement: torch.Tensor  # (3, I, J, K) mm, added after the affine
    grid_affine: np.ndarray  # control grid voxel -> fixed world

    def __call__(self, world: torch.Tensor) -> torch.Tensor:
        """Moving-world points for fixed-world points (..., 3)."""
        a = torch.as_tensor(self.affine, dtype=torch.float32)
        shift = sample_at_world(self.displacement, self.grid_affine, world).movedim(0, -1)
        return world @ a[:3, :3].T + a[:3, 3] + shift


def register_deformable(
    fixed: np.ndarray,
    fixed_affine: np.ndarray,
    moving: np.ndarray,
    moving_affine: np.ndarray,
    initial: np.ndarray,
    fixed_weight: np.ndarray | None = None,
    control_spacing: float = 8.0,
    spacings: tuple[float, ...] = (4.0, 2.0),
    iterations: int = 150,
    smoothness: float = 0.5,
    window_mm: float = 9.0,
) -> Warp:
    """Refine an affine ``initial`` (fixed world -> moving world) by a smooth displacement.

    Local normalised cross-correlation (``window_mm`` boxes, so contrast may differ slowly
    across the head) against a diffusion penalty on the displacement's control grid.
    """
    fixed_t, moving_t, weight_t = _as_tensors(fixed, moving, fixed_weight)
    control_shape, control_affine = isotropic_grid(fixed.shape, fixed_affine, control_spacing)
    displacement = torch.zeros((3, *control_shape), requires_grad=True)
    a = torch.as_tensor(initial, dtype=torch.float32)
    for spacing in spacings:
        world, f, w = _level(fixed_t, fixed_affine, weight_t, spacing)
        radius = max(1, round(window_mm / spacing / 2))
        base = world @ a[:3, :3].T + a[:3, 3]
        opt = torch.optim.Adam([displacement], lr=0.25 * spacing)
        for _ in range(iterations):
            opt.zero_grad()
            shift = sample_at_world(displacement, control_affine, world).movedim(0, -1)
            m = sample_at_world(moving_t, moving_affine, base + shift)[0]
            penalty = smoothness * _diffusion(displacement, control_spacing)
            loss = -_local_ncc(f, m, w, radius) + penalty
            loss.backward()
            opt.step()
    return Warp(np.asarray(initial, float), displacement.detach(), control_affine)


def _box_mean(v: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2 * radius + 1)^3 box (clipped at the borders), one axis at a time: the
    same result as one 3D pooling at a fraction of its cost, backward pass included."""
    k = 2 * radius + 1
    out = v[None, None]
    for axis in range(3):
        size, pad = [1, 1, 1], [0, 0, 0]
        size[axis], pad[axis] = k, radius
        out = F.avg_pool3d(out, size, stride=1, padding=pad, count_include_pad=False)
    return out[0, 0]


def _local_ncc(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over ``w`` of the squared correlation of a and b in boxes of 2*radius+1 voxels."""
    ma, mb = _box_mean(a, radius), _box_mean(b, radius)
    cov = _box_mean(a * b, radius) - ma * mb
    va = (_box_mean(a * a, radius) - ma * ma).clamp_min(1e-5)
    vb = (_box_mean(b * b, radius) - mb * mb).clamp_min(1e-5)
    cc = cov * cov / (va * vb)
    return (cc * w).sum() / w.sum().clamp_min(1e-6)


def _diffusion(displacement: torch.Tensor, spacing: float) -> torch.Tensor:
    """Mean squared spatial derivative of the displacement (unitless: mm per mm)."""
    d = displacement / spacing
    return sum((d.diff(dim=axis) ** 2).mean() for axis in (1, 2, 3))
