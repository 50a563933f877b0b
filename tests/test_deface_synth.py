"""Synthetic training pairs: shapes, ranges and label-driven targets."""

from __future__ import annotations

import numpy as np
import torch

from bidsdeid.deface.atlas import CSF, FIRST_HEAD_LABEL, GM, WM, AtlasHead
from bidsdeid.deface.grid import normalise_intensity
from bidsdeid.deface.synth import synthesise, to_torch_head, vary_csf_width


def toy_head() -> AtlasHead:
    """A 2 mm ball head: brain ball inside a scalp shell, a face block in front-below."""
    n = 110
    ijk = np.indices((n, n, n)).transpose(1, 2, 3, 0) - n / 2
    r = np.linalg.norm(ijk * [1.0, 0.85, 0.9], axis=-1)
    labels = np.zeros((n, n, n), np.uint8)
    labels[r < 48] = FIRST_HEAD_LABEL
    labels[r < 42] = CSF
    labels[r < 38] = GM
    labels[r < 30] = WM
    face = (ijk[..., 1] > 25) & (ijk[..., 2] < -5)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -n
    return AtlasHead("toy", np.zeros(0, np.float32), labels, face & (labels < WM), affine)


def test_sample_has_normalised_image_and_fraction_targets():
    sample = synthesise(to_torch_head(toy_head()), np.random.default_rng(1))
    n = sample.image.shape[-1]
    assert sample.image.shape == (1, n, n, n) and sample.target.shape == (2, n, n, n)
    assert 0 <= sample.image.min() and sample.image.max() <= 1.5
    assert 0 <= sample.target.min() and sample.target.max() <= 1
    assert set(torch.unique(sample.valid).tolist()) <= {0.0, 1.0}


def test_brain_target_follows_the_brain_labels():
    head = toy_head()
    brain_share = np.isin(head.labels, [WM, GM, CSF]).mean()
    rng = np.random.default_rng(2)
    shares = [synthesise(to_torch_head(head), rng).target[0].mean().item() for _ in range(3)]
    assert all(s > 0 for s in shares), f"no brain in samples: {shares}"
    assert max(shares) > brain_share, "samples zoom in on the head, so brain share rises"


def test_moving_the_csf_border_keeps_the_brain_mask():
    labels = torch.as_tensor(toy_head().labels).long()
    brain = (labels >= WM) & (labels <= CSF)
    for voxels in (1, -1):
        moved = vary_csf_width(labels, voxels)
        assert torch.equal((moved >= WM) & (moved <= CSF), brain), f"brain changed at {voxels}"
        assert torch.equal(moved == WM, labels == WM), "white matter must not move"


def test_wider_csf_takes_one_voxel_of_grey_matter_and_narrower_gives_it_back():
    labels = torch.as_tensor(toy_head().labels).long()
    # Toy radii (voxels, y and z squeezed): GM 30-38, CSF 38-42; one voxel moves the border.
    gm, csf = int((labels == GM).sum()), int((labels == CSF).sum())
    wider = vary_csf_width(labels, 1)
    narrower = vary_csf_width(labels, -1)
    assert int((wider == CSF).sum()) > csf and int((narrower == CSF).sum()) < csf
    assert 0.7 * gm < int((wider == GM).sum()) < gm, "one voxel of an 8-voxel ribbon, not all"
    assert int((narrower == CSF).sum()) > 0.5 * csf, "one voxel of a 4-voxel layer, not all"


def test_zero_csf_width_share_leaves_the_random_stream_alone():
    # Validation sets are fixed by their seed: the option must not shift the draws when off.
    head = to_torch_head(toy_head())
    torch.manual_seed(0)  # the noise comes from torch's generator
    before = synthesise(head, np.random.default_rng(3))
    torch.manual_seed(0)
    after = synthesise(head, np.random.default_rng(3), csf_width_share=0.0)
    assert torch.equal(before.image, after.image) and torch.equal(before.target, after.target)


def test_normalise_intensity_maps_the_99th_percentile_to_one():
    image = torch.linspace(0, 200, 10_001)
    out = normalise_intensity(image)
    assert abs(torch.quantile(out[out > 0], 0.99).item() - 1.0) < 0.02
    assert out.max() <= 1.5


def test_ear_region_is_lateral_head_tissue_away_from_the_brain():
    from scipy import ndimage

    from bidsdeid.deface.atlas import EAR_BRAIN_GAP_MM, EAR_MIN_ABS_X, ear_region

    head = toy_head()
    ears = ear_region(head.labels, head.affine)
    assert ears.any(), "no ear voxels on a head that reaches the ear band"
    ijk = np.array(np.nonzero(ears), float)
    x = head.affine[0, 0] * ijk[0] + head.affine[0, 3]
    assert (np.abs(x) >= EAR_MIN_ABS_X).all(), "ear voxels near the midline"
    assert (head.labels[ears] >= FIRST_HEAD_LABEL).all(), "ear voxels outside head tissue"
    brain = np.isin(head.labels, [WM, GM, CSF])
    distance = ndimage.distance_transform_edt(~brain, sampling=2.0)
    assert distance[ears].min() >= EAR_BRAIN_GAP_MM, "ear voxels too close to the brain"


def test_realistic_contrasts_are_jittered_presets():
    from bidsdeid.deface.synth import CONTRAST_PRESETS, label_means

    rng = np.random.default_rng(3)
    presets = np.array(list(CONTRAST_PRESETS.values()))
    for _ in range(20):
        means = label_means(rng, realistic_contrast=1.0).numpy()
        assert np.abs(presets - means).max(axis=1).min() < 0.35, f"not near a preset: {means}"
    free = np.array([label_means(rng, realistic_contrast=0.0).numpy() for _ in range(200)])
    assert free[:, 0].max() <= 0.08, "air must stay dark"
    assert free[:, 1:].std() > 0.25, "free contrasts must span the range"


def test_fine_samples_can_be_centred_anywhere_on_the_brain():
    head = to_torch_head(toy_head())

    def fine_centre_distances(share: float) -> list[float]:
        rng = np.random.default_rng(4)
        distances = []
        while len(distances) < 6:
            sample = synthesise(head, rng, brain_point_share=share)
            n = sample.image.shape[-1]
            if n == 48:  # a fine (brain) sample, not a whole-head one
                centre = sample.affine[:3, :3] @ np.full(3, (n - 1) / 2) + sample.affine[:3, 3]
                distances.append(float(np.linalg.norm(centre - head.brain_centre)))
        return distances

    near_centre, anywhere = fine_centre_distances(0.0), fine_centre_distances(1.0)
    assert max(near_centre) < 45, f"brain-centred samples strayed: {near_centre}"
    assert max(anywhere) > 45, f"brain-point samples never reached the brain's edge: {anywhere}"
