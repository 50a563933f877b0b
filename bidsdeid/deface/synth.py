"""SynthStrip-style training pairs synthesised on the fly from the atlas label maps.

Each sample: a random grid (spacing, rotation, scale, position), an elastic warp, random
intensities per label (so any MR contrast), partial-volume averaging, a bias field, gamma,
slice-thickness blur, noise and a random field-of-view cut, and optionally a wider or narrower
CSF layer between cortex and skull. Targets are the brain and face
fractions of each working voxel; ``valid`` marks voxels whose target is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bidsdeid.deface.atlas import CSF, GM, N_LABELS, WM, AtlasHead
from bidsdeid.deface.grid import normalise_intensity
from bidsdeid.deface.register import grid_world_coords, sample_at_world


@dataclass
class Sample:
    image: torch.Tensor  # (1, n, n, n), normalised like inference input
    target: torch.Tensor  # (2, n, n, n) brain, face fractions
    valid: torch.Tensor  # (1, n, n, n) 1 where the target is defined
    affine: np.ndarray  # voxel -> world (mm) of the sample's grid


@dataclass(frozen=True)
class TorchHead:
    labels: torch.Tensor  # (1, I, J, K) float labels
    face: torch.Tensor  # (1, I, J, K) float
    affine: np.ndarray
    brain_centre: np.ndarray  # world mm
    head_top: np.ndarray  # world mm, highest head point (centre in x, y)
    brain_points: np.ndarray  # (N, 3) world mm, a regular subsample of the brain's voxels
    csf_variants: tuple[torch.Tensor, ...]  # labels with the cortex/CSF border moved 1 voxel


def to_torch_head(head: AtlasHead) -> TorchHead:
    lab = head.labels
    labels = torch.as_tensor(lab, dtype=torch.float32)[None]
    variants = tuple(vary_csf_width(labels[0].long(), v).float()[None] for v in (1, -1))
    ijk_brain = np.array(np.nonzero((lab >= WM) & (lab <= CSF)), float)
    ijk_head = np.array(np.nonzero(lab > 0), float)
    world_head = head.affine[:3, :3] @ ijk_head + head.affine[:3, 3:4]
    top = world_head.mean(1)
    top[2] = world_head[2].max()
    world_brain = head.affine[:3, :3] @ ijk_brain + head.affine[:3, 3:4]
    return TorchHead(
        labels,
        torch.as_tensor(head.face, dtype=torch.float32)[None],
        head.affine,
        world_brain.mean(1),
        top,
        world_brain[:, :: max(1, world_brain.shape[1] // 20_000)].T.copy(),
        variants,
    )


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _smooth_field(shape, points: int, std: float, rng: np.random.Generator, channels=1):
    coarse = torch.as_tensor(
        rng.normal(0, std, (1, channels, points, points, points)), dtype=torch.float32
    )
    return F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)[0]


# Typical label means (air, WM, GM, CSF, head classes from darkest to brightest: skull and
# outer CSF, muscle, soft tissue, fat/marrow) for the usual anatomical contrasts. Independent
# random means rarely make the CSF inside the brain mask as dark as the skull, as it is on
# T1w/FLAIR, so without these the network learns to find the brain edge by contrast alone and
# stops at the grey matter on real heads instead of at the inner skull.
CONTRAST_PRESETS = {
    "T1w": (0.02, 0.80, 0.55, 0.15, 0.12, 0.35, 0.60, 0.90),
    "T2w": (0.02, 0.35, 0.50, 0.95, 0.08, 0.30, 0.50, 0.75),
    "PD": (0.02, 0.60, 0.75, 0.85, 0.10, 0.45, 0.65, 0.80),
    "FLAIR": (0.02, 0.50, 0.65, 0.10, 0.08, 0.35, 0.55, 0.80),
}


def label_means(rng: np.random.Generator, realistic_contrast: float) -> torch.Tensor:
    """Mean intensity per label: a jittered preset with probability ``realistic_contrast``,
    else independent uniform values (any contrast)."""
    if realistic_contrast > 0 and rng.random() < realistic_contrast:
        preset = list(CONTRAST_PRESETS.values())[rng.integers(len(CONTRAST_PRESETS))]
        means = np.clip(np.array(preset) + rng.normal(0, 0.07, N_LABELS), 0, 1)
    else:
        means = rng.uniform(0, 1, N_LABELS)
        means[0] = rng.uniform(0, 0.08)
    return torch.as_tensor(means, dtype=torch.float32)


def synthesise(
    head: TorchHead,
    rng: np.random.Generator,
    realistic_contrast: float = 0.0,
    scan: tuple[int, float] | None = None,
    brain_point_share: float = 0.0,
    csf_width_share: float = 0.0,
    fine_size: int = 48,
) -> Sample:
    """One random training pair: a whole-head coarse grid (56^3) or a finer one
    (``fine_size``^3) on the brain (its centre, or with probability ``brain_point_share`` any
    brain point).

    ``scan`` (voxels per side, spacing in mm) instead makes a volume like a scan, e.g. 128 at
    2 mm, to validate the whole inference pipeline on it. With probability ``csf_width_share``
    the labels come from a head whose grey matter/CSF border moved by one atlas voxel (1 mm,
    `vary_csf_width`); the brain target stays.
    """
    if scan is None:
        coarse = rng.random() < 0.5
        size = 56 if coarse else fine_size
        spacing = rng.uniform(3.6, 5.0) if coarse else rng.uniform(2.3, 3.4)
    else:
        coarse, (size, spacing) = False, scan
    fine_n = 2 * size
    rot = _rotation(np.deg2rad(rng.normal(0, 10, 3).clip(-30, 30)))
    scale = rng.uniform(0.88, 1.15, 3)
    linear = rot @ np.diag(scale)
    half = (size * spacing) / 2
    if coarse:
        # Inference stage 1 puts the head top ~20 mm below the grid top: mimic it, with jitter.
        local_top = np.array([0.0, 0.0, half - 20.0]) + rng.normal(0, 8, 3)
        centre = head.head_top - linear @ local_top
    elif scan is None and rng.random() < brain_point_share:
        # A fine grid (110-160 mm) centred on the brain rarely holds the lower brainstem or the
        # brain's far edges, which the inference grid (whole brain) does hold: centre some on
        # any brain point.
        centre = head.brain_points[rng.integers(len(head.brain_points))] + rng.normal(0, 5, 3)
    else:
        centre = head.brain_centre + rng.normal(0, 12, 3)
    fine_affine = np.eye(4)
    fine_affine[:3, :3] = linear * (spacing / 2)
    fine_affine[:3, 3] = centre - linear @ np.full(3, half - spacing / 4)
    world = grid_world_coords((fine_n,) * 3, fine_affine)
    disp = _smooth_field((fine_n,) * 3, 5, rng.uniform(0, 4), rng, channels=3)
    world = world + disp.permute(1, 2, 3, 0)
    source = head.labels
    if csf_width_share > 0 and rng.random() < csf_width_share:
        source = head.csf_variants[rng.integers(len(head.csf_variants))]
    labels = sample_at_world(source, head.affine, world, mode="nearest")[0].long()
    face = sample_at_world(head.face, head.affine, world)[0]
    known = sample_at_world(torch.ones_like(head.face), head.affine, world)[0]
    if rng.random() < 0.5:  # left-right flip: heads are near symmetric, the grid is not
        labels, face, known = labels.flip(0), face.flip(0), known.flip(0)

    means = label_means(rng, realistic_contrast)
    stds = torch.as_tensor(rng.uniform(0, 0.08, N_LABELS), dtype=torch.float32)
    image = means[labels] + stds[labels] * torch.randn(labels.shape)
    sigma = rng.uniform(0.0, 1.2)
    if sigma > 0.3:
        image = _gaussian_blur(image, [sigma] * 3)
    image = image * torch.exp(_smooth_field((fine_n,) * 3, 4, rng.uniform(0, 0.35), rng)[0])

    brain = ((labels >= WM) & (labels <= CSF)).float()
    pool = lambda v: F.avg_pool3d(v[None, None], 2)[0, 0]
    image, brain, face, known = pool(image), pool(brain), pool(face), pool(known)
    if rng.random() < 0.5:  # thick slices along a random axis
        sig = [0.0, 0.0, 0.0]
        sig[rng.integers(3)] = rng.uniform(0.5, 2.0)
        image = _gaussian_blur(image, sig)
    image = image.clamp_min(0) ** rng.uniform(0.6, 1.6)
    image = image + torch.randn(image.shape) * rng.uniform(0, 0.05)
    image = image.abs()
    fov = _random_fov(image.shape, rng)
    image = image * fov
    image = normalise_intensity(image)
    valid = ((known > 0.5) & (fov > 0)).float()
    affine = fine_affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] += fine_affine[:3, :3] @ np.full(3, 0.5)  # a pooled voxel's centre
    return Sample(image[None], torch.stack([brain, face]), valid[None], affine)


def vary_csf_width(labels: torch.Tensor, voxels: int) -> torch.Tensor:
    """Move the grey matter/CSF border by ``voxels``: > 0 turns grey matter near CSF or outside
    the brain into CSF (atrophy: wider sulci, a wider gap to the skull), < 0 turns CSF near
    grey matter into grey matter (a brain that fills the skull).

    Both atlas heads have one CSF width (an average brain placed in a head), so the network
    could learn "mask edge = cortex + that width" instead of finding the inner skull; the brain
    mask (WM, GM, CSF) is unchanged.
    """
    grey = labels == GM
    grow = ~((labels == WM) | grey) if voxels > 0 else grey
    kernel = 2 * abs(voxels) + 1
    near = F.max_pool3d(grow.float()[None, None], kernel, stride=1, padding=abs(voxels))[0, 0] > 0
    changed = (grey & near) if voxels > 0 else ((labels == CSF) & near)
    return torch.where(changed, torch.tensor(CSF if voxels > 0 else GM), labels)


def _random_fov(shape, rng: np.random.Generator) -> torch.Tensor:
    """Where the simulated acquisition has data: cuts of neck, top, or an oblique slab."""
    fov = torch.ones(shape)
    r = rng.random()
    if r < 0.4:
        return fov
    normal = _rotation(np.deg2rad(rng.normal(0, 15, 3))) @ np.array([0.0, 0.0, 1.0])
    ijk = (
        torch.stack(
            torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij"),
            -1,
        )
        - (torch.tensor(shape) - 1) / 2
    )
    height = ijk @ torch.as_tensor(normal, dtype=torch.float32)
    n = shape[0]
    if r < 0.75:  # neck or chin cut
        fov = (height > rng.uniform(-0.5, 0.0) * n).float()
    elif r < 0.85:  # top of head cut
        fov = (height < rng.uniform(0.25, 0.5) * n).float()
    else:  # axial slab
        centre, half = rng.uniform(-0.1, 0.2) * n, rng.uniform(0.2, 0.35) * n
        fov = ((height - centre).abs() < half).float()
    return fov


def _gaussian_blur(volume: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    out = volume[None, None]
    for axis, sigma in enumerate(sigmas):
        if sigma <= 0.2:
            continue
        radius = max(1, math.ceil(2.5 * sigma))
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-0.5 * (x / sigma) ** 2)
        k = k / k.sum()
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad, mode="replicate"), k.reshape(shape))
    return out[0, 0]
