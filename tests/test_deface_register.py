"""Registration used by the atlas and the template fallback: affine and deformable fits."""

from __future__ import annotations

import numpy as np
import torch

from bidsdeid.deface.atlas import CSF, GM, WM, tissue_by_intensity
from bidsdeid.deface.infer import brain_edge_probability
from bidsdeid.deface.register import grid_world_coords, register_deformable

SPACING = 2.0


def blob_image(shape=(48, 48, 48), centre_shift=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoid 'head' with an inner 'brain' of another brightness and an off-centre spot,
    on a 2 mm grid centred on the origin."""
    affine = np.diag([SPACING] * 3 + [1.0])
    affine[:3, 3] = -SPACING * (np.array(shape) - 1) / 2
    world = grid_world_coords(shape, affine).numpy() - np.array(centre_shift)
    r = np.linalg.norm(world / [36.0, 30.0, 33.0], axis=-1)
    image = np.where(r < 1, 0.4, 0.0) + np.where(r < 0.7, 0.5, 0.0)
    spot = np.linalg.norm(world - [12.0, -8.0, 10.0], axis=-1) < 7
    return (image + 0.6 * spot).astype(np.float32), affine


def test_deformable_fit_recovers_a_local_shift_the_affine_start_lacks():
    fixed, affine = blob_image()
    moving, _ = blob_image(centre_shift=(4.0, 0.0, 0.0))  # moving = fixed shifted +4 mm in x
    warp = register_deformable(
        fixed, affine, moving, affine, np.eye(4),
        control_spacing=8.0, spacings=(4.0, 2.0), iterations=80, smoothness=0.1,
    )
    centre = torch.tensor([[0.0, 0.0, 0.0], [12.0, -8.0, 10.0]])
    moved = warp(centre).numpy()
    assert np.allclose(moved[:, 0] - centre[:, 0].numpy(), 4.0, atol=1.0), (
        f"points should map 4 mm along x, got {moved - centre.numpy()}"
    )
    assert np.abs(moved[:, 1:] - centre[:, 1:].numpy()).max() < 1.0, "no shift was asked in y, z"


def test_tissue_classes_follow_intensity_order_on_a_t1_head():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, (20, 20, 20))
    intensity = np.array([20.0, 60.0, 100.0])[truth] + rng.normal(0, 5, truth.shape)
    brain = np.ones(truth.shape, bool)
    brain[:2] = False
    labels = tissue_by_intensity(intensity.astype(np.float32), brain)
    expected = np.array([CSF, GM, WM])[truth]
    assert (labels[~brain] == 0).all(), "no tissue label outside the brain"
    assert (labels[brain] == expected[brain]).mean() > 0.99


def test_brain_probability_for_resampling_is_one_inside_and_soft_only_on_the_edge():
    prob = np.zeros((20, 20, 20), np.float32)
    prob[5:15, 5:15, 5:15] = 0.9
    prob[9, 9, 9] = 0.1  # a hole inside the brain is brain
    prob[4, 5:15, 5:15] = 0.3  # the edge keeps its probability
    prob[0:2, 0:2, 0:2] = 0.9  # a separate speck is not brain
    out = brain_edge_probability(prob, prob > 0.5, np.ones(prob.shape, bool))
    assert out[9, 9, 9] == 1.0 and out[5:15, 5:15, 5:15].min() == 1.0
    assert np.isclose(out[4, 10, 10], 0.3), "edge voxels keep the network's probability"
    assert out[0:2, 0:2, 0:2].max() == 0.0, "only the largest component is brain"
    assert out[17:, 17:, 17:].max() == 0.0
