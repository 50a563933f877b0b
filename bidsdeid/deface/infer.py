"""Run the defacing U-Net on one NIfTI volume and map its masks back to native space.

Two passes of the same network: a whole-head 4 mm grid (64^3, 256 mm) finds brain and face;
a 3.1 mm grid fitted around that brain refines the brain. Both grids are aligned with the world
(RAS) axes, so any voxel orientation or obliquity is handled by the resampling alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from bidsdeid.deface.grid import axis_aligned_grid, normalise_intensity
from bidsdeid.deface.model import UNet3D

MODEL_FILE = "deface_unet.pt"
COARSE_SPACING, COARSE_SIZE = 4.0, 64
HEAD_TOP_MARGIN_MM = 20.0  # the synthetic training grids put the head top this far from the edge
# Fine spacing chosen on synthetic scans (2 mm and 1.2 mm, models/MODEL_CARD.md): brain Dice
# 0.949 / 0.955 / 0.958 / 0.960 at 2.5 / 2.8 / 3.1 / 3.4 mm (the training crops span 2.3-3.4);
# 3.4 scores best and 3.1, within 0.002 of it, is finer, so 3.1.
FINE_SPACING, FINE_MAX = 3.1, 96
# The fine pass runs on overlapping tiles near the size of the training crops (48 voxels), so
# instance normalisation sees statistics like those of training, not of a whole-brain grid:
# synthetic-scan Dice 0.941 -> 0.948 at 2.5 mm (64-voxel tiles; 56 gave 0.950 at 1.5x the time).
FINE_TILE, TILE_OVERLAP = 64, 24
BRAIN_MARGIN_MM = 15.0
PROTECT_MM = 6.0  # defacing never touches voxels this close to the predicted brain
# Probability thresholds chosen on synthetic validation pairs (never on the real test heads):
# face 0.3 raises face recall from 0.80 to 0.88 (extra removal is non-brain tissue or air);
# for the brain, whole-pipeline synthetic 2 mm scans give Dice 0.947 / 0.955 / 0.957 / 0.956
# at 0.3 / 0.4 / 0.5 / 0.6 (models/MODEL_CARD.md), so 0.5 stays.
FACE_THRESHOLD = 0.3
BRAIN_THRESHOLD = 0.5
# Averaging with the mirrored image gained 0.0004-0.0006 Dice on synthetic scans for twice the
# network time, so it is off by default.
FLIP_AVERAGE = False


class DefaceError(Exception):
    """A volume that cannot be defaced (wrong dimensionality, empty, unreadable)."""


@dataclass(frozen=True)
class NativeMasks:
    """Masks on the input's own voxel grid."""

    brain: np.ndarray  # bool
    face: np.ndarray  # bool, voxels to zero (never within PROTECT_MM of the brain)


def model_paths() -> list[Path]:
    """Where the weights may be: inside an installed wheel, then the source tree."""
    package = Path(__file__).resolve().parents[1]
    return [package / "_shipped" / "models" / MODEL_FILE, package.parent / "models" / MODEL_FILE]


def load_weights(path: Path) -> torch.nn.Module:
    """The network saved in ``path`` (by ``bidsdeid.deface.train``), in eval mode."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = UNet3D(tuple(saved["channels"]))
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def load_model() -> torch.nn.Module:
    """The shipped network in eval mode; raises DefaceError when no weights are found."""
    for path in model_paths():
        if path.exists():
            return load_weights(path)
    raise DefaceError(f"model weights {MODEL_FILE} not found in {[str(p) for p in model_paths()]}")


def sample_native_on_grid(
    data: torch.Tensor,
    native_affine: np.ndarray,
    grid_affine: np.ndarray,
    shape: tuple[int, int, int],
) -> torch.Tensor:
    """Trilinear samples of the native volume at the grid's voxel centres (0 outside)."""
    grid_to_native = np.linalg.inv(native_affine) @ grid_affine
    return _resample(data, grid_to_native, shape)


def _resample(
    volume: torch.Tensor, out_to_in: np.ndarray, shape: tuple[int, int, int]
) -> torch.Tensor:
    """Trilinear samples of a (C, I, J, K) volume on an output grid (0 outside).

    ``out_to_in`` maps output voxel indices to input voxel indices. The sampling grid is built
    by broadcasting, which is much cheaper than ``affine_grid`` on 1 mm volumes.
    """
    size = np.array(volume.shape[1:], float)
    to_norm = np.diag([*(2.0 / (size - 1)), 1.0])
    to_norm[:3, 3] = -1.0
    m = torch.as_tensor(to_norm @ out_to_in, dtype=torch.float32)
    i, j, k = (torch.arange(n, dtype=torch.float32) for n in shape)
    grid = torch.empty((*shape, 3), dtype=torch.float32)
    for out_axis, in_axis in enumerate((2, 1, 0)):  # grid_sample wants (x, y, z) = (K, J, I)
        row = m[in_axis]
        grid[..., out_axis] = (
            (row[0] * i + row[3])[:, None, None]
            + (row[1] * j)[None, :, None]
            + (row[2] * k)[None, None, :]
        )
    return F.grid_sample(
        volume[None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=True
    )[0]


def _world_points(mask: np.ndarray, affine: np.ndarray, max_points: int = 400_000) -> np.ndarray:
    idx = np.flatnonzero(mask)
    if idx.size > max_points:
        idx = idx[:: idx.size // max_points]
    ijk = np.array(np.unravel_index(idx, mask.shape), float)
    return (affine[:3, :3] @ ijk + affine[:3, 3:4]).T


def coarse_grid(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The whole-head grid: centred on the head in x/y, head top near the grid's top."""
    sub = data[::2, ::2, ::2]
    positive = sub[sub > 0]
    if positive.size == 0:
        raise DefaceError("the volume is empty (no voxel above zero)")
    level = 0.15 * np.percentile(positive, 99)
    head = ndimage.binary_opening(sub > level, iterations=1)
    if not head.any():
        head = sub > level
    sub_affine = affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    world = _world_points(head, sub_affine)
    top = np.percentile(world[:, 2], 99.8)
    upper = world[world[:, 2] > top - 120.0]
    centre = np.array(
        [
            upper[:, 0].mean(),
            upper[:, 1].mean(),
            top - (COARSE_SIZE * COARSE_SPACING / 2 - HEAD_TOP_MARGIN_MM),
        ]
    )
    return axis_aligned_grid(centre, COARSE_SPACING, (COARSE_SIZE,) * 3)


def fine_grid(
    brain: np.ndarray, grid_affine: np.ndarray, spacing: float
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A grid of ``spacing`` mm around the coarse brain, each side a multiple of 8 voxels."""
    world = _world_points(brain, grid_affine)
    lo = world.min(0) - BRAIN_MARGIN_MM
    hi = world.max(0) + BRAIN_MARGIN_MM
    n = np.ceil((hi - lo) / spacing / 8).astype(int) * 8
    n = np.clip(n, 16, FINE_MAX)
    shape = (int(n[0]), int(n[1]), int(n[2]))
    return axis_aligned_grid((lo + hi) / 2, spacing, shape), shape


def probabilities(model: torch.nn.Module, image: torch.Tensor, flip: bool) -> torch.Tensor:
    """Brain and face probabilities (2, I, J, K) of a (1, I, J, K) world-aligned image.

    ``flip`` averages them with those of the left-right mirrored image (the network was trained
    with random mirroring, so both are estimates of the same masks).
    """
    prob = torch.sigmoid(model(image[None]))[0]
    if flip:
        prob = 0.5 * (prob + torch.sigmoid(model(image[None].flip(2)))[0].flip(1))
    return prob


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread first indices of tiles covering ``size`` voxels, each pair overlapping by
    at least ``overlap``."""
    if size <= tile:
        return [0]
    count = math.ceil((size - tile) / (tile - overlap)) + 1
    return [round(i * (size - tile) / (count - 1)) for i in range(count)]


def tiled_probabilities(
    model: torch.nn.Module,
    image: torch.Tensor,
    flip: bool,
    tile: int = FINE_TILE,
    overlap: int = TILE_OVERLAP,
) -> torch.Tensor:
    """``probabilities`` over overlapping tiles, blended with weights that fall off linearly
    over the outer quarter of each tile."""
    shape = image.shape[1:]
    if all(n <= tile for n in shape):
        return probabilities(model, image, flip)
    total = torch.zeros(2, *shape)
    weight_sum = torch.zeros(shape)
    for i in tile_starts(shape[0], tile, overlap):
        for j in tile_starts(shape[1], tile, overlap):
            for k in tile_starts(shape[2], tile, overlap):
                box = (slice(i, i + tile), slice(j, j + tile), slice(k, k + tile))
                crop = image[(slice(None), *box)]
                a, b, c = crop.shape[1:]
                w = (
                    _ramp(a, tile)[:, None, None]
                    * _ramp(b, tile)[None, :, None]
                    * _ramp(c, tile)[None, None, :]
                )
                total[(slice(None), *box)] += probabilities(model, crop, flip) * w
                weight_sum[box] += w
    return total / weight_sum


def _ramp(n: int, tile: int) -> torch.Tensor:
    """Blending weights along one tile axis: rising from the edges, flat in the middle."""
    i = torch.arange(n, dtype=torch.float32)
    return torch.clamp(torch.minimum(i + 1, n - i), max=tile / 4)


@torch.no_grad()
def predict_masks(
    model: torch.nn.Module,
    data: np.ndarray,
    affine: np.ndarray,
    brain_threshold: float = BRAIN_THRESHOLD,
    flip: bool = FLIP_AVERAGE,
    fine_spacing: float = FINE_SPACING,
) -> NativeMasks:
    """Brain and face masks on the native grid of a 3D volume."""
    data = np.ascontiguousarray(data, dtype=np.float32)
    if not np.isfinite(data).all():
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    volume = torch.as_tensor(data)[None]
    c_aff = coarse_grid(data, affine)
    c_shape = (COARSE_SIZE,) * 3
    image = normalise_intensity(sample_native_on_grid(volume, affine, c_aff, c_shape))
    # Outside the acquired field of view the network was never trained (no target there).
    coarse = probabilities(model, image, flip) * _inside(data.shape, affine, c_aff, c_shape)
    coarse_brain = _largest_component(coarse[0].numpy() > brain_threshold)
    if not coarse_brain.any():
        raise DefaceError("no brain found: is this a head MRI volume?")
    f_aff, f_shape = fine_grid(coarse_brain, c_aff, fine_spacing)
    image = normalise_intensity(sample_native_on_grid(volume, affine, f_aff, f_shape))
    fine_prob = tiled_probabilities(model, image, flip)[0] * _inside(
        data.shape, affine, f_aff, f_shape
    )
    # The fine pass may only refine the coarse brain's edge, not find a brain elsewhere.
    near_coarse = (
        _resample(
            torch.as_tensor(coarse_brain[None].astype(np.float32)),
            np.linalg.inv(c_aff) @ f_aff,
            f_shape,
        )[0].numpy()
        > 0.5
    )
    near_coarse = ndimage.binary_dilation(near_coarse, iterations=3)
    fine_prob = fine_prob.numpy()
    del volume
    return native_masks(
        brain_edge_probability(fine_prob, fine_prob > brain_threshold, near_coarse),
        f_aff,
        fine_spacing,
        coarse[1].numpy(),
        c_aff,
        data.shape[:3],
        affine,
        brain_threshold,
    )


def brain_edge_probability(prob: np.ndarray, brain: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The brain probability kept for resampling: 1 inside the largest brain component and its
    holes, the network's probability on its one-voxel edge, 0 elsewhere.

    Resampling this (not the binary mask) to the native grid keeps the edge's sub-voxel
    position, so the native mask is not a blocky copy of the working grid.
    """
    filled = ndimage.binary_fill_holes(_largest_component(brain & allowed))
    # Edge voxels above threshold belong to a rejected component: they must stay outside.
    edge = ndimage.binary_dilation(filled) & ~filled & ~brain
    return np.where(filled, 1.0, np.where(edge, prob, 0.0)).astype(np.float32)


def native_masks(
    brain_prob: np.ndarray,
    brain_affine: np.ndarray,
    brain_spacing: float,
    face_prob: np.ndarray,
    face_affine: np.ndarray,
    native_shape: tuple[int, ...],
    affine: np.ndarray,
    brain_threshold: float = BRAIN_THRESHOLD,
) -> NativeMasks:
    """Brain and face masks on the native grid from probabilities on working grids.

    The face mask never comes within PROTECT_MM of the brain.
    """
    filled = brain_prob > brain_threshold
    # Closeness to the brain (2 * PROTECT_MM minus distance, >= 0): zero far away and, through
    # the resampler's zero padding, outside the brain's box too.
    distance = ndimage.distance_transform_edt(~filled, sampling=brain_spacing)
    closeness = np.clip(2 * PROTECT_MM - distance, 0, None)
    brain_grid = torch.as_tensor(np.stack([brain_prob, closeness]).astype(np.float32))
    face_grid = torch.as_tensor(face_prob[None].astype(np.float32))
    brain = np.zeros(native_shape, bool)
    face = np.zeros(native_shape, bool)
    # Work in slabs along the first axis to keep peak memory small on 1 mm volumes.
    slab = max(1, 8_000_000 // (native_shape[1] * native_shape[2]))
    for start in range(0, native_shape[0], slab):
        stop = min(native_shape[0], start + slab)
        part_affine = affine @ _shift(start)
        shp = (stop - start, native_shape[1], native_shape[2])
        b, close = _resample(brain_grid, np.linalg.inv(brain_affine) @ part_affine, shp)
        b = b > brain_threshold
        near_brain = close > PROTECT_MM
        f = _resample(face_grid, np.linalg.inv(face_affine) @ part_affine, shp)[0] > FACE_THRESHOLD
        brain[start:stop] = b.numpy()
        face[start:stop] = (f & ~near_brain & ~b).numpy()
    return NativeMasks(brain, face)


def _inside(native_shape, native_affine, grid_affine, grid_shape) -> torch.Tensor:
    """1 where a grid voxel lies within the native volume's field of view, else 0."""
    ones = torch.ones(1, *native_shape[:3])
    return (sample_native_on_grid(ones, native_affine, grid_affine, grid_shape)[0] > 0.99).float()


def _shift(first_index: int) -> np.ndarray:
    s = np.eye(4)
    s[0, 3] = first_index
    return s


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum(mask, lab, range(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))
