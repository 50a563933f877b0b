"""Defacing with the shipped CNN: refusals, header preservation, brain safety, orientation."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from bidsdeid.deface import DefaceError, DefaceResult, deface_file, load_model
from bidsdeid.deface.apply import stored_header
from bidsdeid.deface.infer import (
    FINE_MAX,
    FINE_TILE,
    TILE_OVERLAP,
    _resample,
    model_paths,
    probabilities,
    tile_starts,
    tiled_probabilities,
)
from tests.conftest import shared_path

SMALL_HEAD = ("heads", "register_T1_head_ext2.nii.gz")  # 1.6 mm, 104 x 150 x 133, with neck
REFERENCE = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_masks"
EARS_GONE_MIN = 0.5
# Debian's mricron-data (installed by scripts/setup.sh): a real head for a fresh clone. It is a
# training head of the network, so tests on it check the code path, not generalisation.
COLIN_HEAD = Path("/usr/share/mricron/templates/ch2.nii.gz")


def world_centre(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World (mm) centre of a mask's voxels."""
    return nib.affines.apply_affine(affine, np.argwhere(mask).mean(0))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_model()


@pytest.fixture(scope="module")
def defaced_small_head(tmp_path_factory, model):
    src = shared_path(*SMALL_HEAD)
    out = tmp_path_factory.mktemp("deface")
    result = deface_file(
        src,
        out / "defaced.nii.gz",
        brain_mask=out / "mask.nii.gz",
        brain_extracted=out / "brain.nii.gz",
        qc=True,
        model=model,
    )
    return src, out, result


def test_shipped_weights_are_small_and_load(model):
    path = next(p for p in model_paths() if p.exists())
    params = sum(p.numel() for p in model.parameters())
    assert path.stat().st_size < 5_000_000, f"weights file is {path.stat().st_size} bytes"
    assert params < 1_000_000, f"network has {params} parameters"


def test_4d_input_is_refused_with_a_clear_message(tmp_path):
    src = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 16, 3), np.int16), np.eye(4)), src)
    with pytest.raises(DefaceError, match="4D input"):
        deface_file(src, tmp_path / "out.nii.gz")
    assert not (tmp_path / "out.nii.gz").exists(), "nothing is written for a refused input"


def test_empty_volume_is_refused(tmp_path, model):
    src = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 32), np.int16), np.eye(4)), src)
    with pytest.raises(DefaceError, match="empty"):
        deface_file(src, tmp_path / "out.nii.gz", model=model)


def test_output_keeps_header_affine_and_dtype(defaced_small_head):
    src, out, _ = defaced_small_head
    before, after = nib.load(src), nib.load(out / "defaced.nii.gz")
    assert after.get_data_dtype() == before.get_data_dtype()
    assert np.array_equal(after.affine, before.affine)
    out_header = stored_header(out / "defaced.nii.gz", after)
    assert out_header.binaryblock == stored_header(src, before).binaryblock, "header changed"


def test_only_zeroes_voxels_and_never_inside_the_brain_mask(defaced_small_head):
    src, out, result = defaced_small_head
    before = np.asanyarray(nib.load(src).dataobj)
    after = np.asanyarray(nib.load(out / "defaced.nii.gz").dataobj)
    brain = np.asanyarray(nib.load(out / "mask.nii.gz").dataobj) > 0
    changed = before != after
    assert np.all(after[changed] == 0), "defacing may only set voxels to zero"
    assert not np.any(changed & brain), "a brain voxel was zeroed"
    assert result.face_voxels > 10_000, f"only {result.face_voxels} face voxels zeroed"


def test_keeps_the_reference_brain_and_removes_the_reference_face(defaced_small_head):
    """Against masks made by ANTs registration (benchmarks/reference_masks/README.md).

    Thresholds sit a little below what the shipped weights reach on this head (brain 1.0000,
    face 0.9947, Dice 0.9544; see models/MODEL_CARD.md), so a regression fails.
    """
    src, out, _ = defaced_small_head
    name = SMALL_HEAD[1].split(".")[0]
    ref_brain = np.asanyarray(nib.load(REFERENCE / f"{name}_brain.nii.gz").dataobj) > 0
    ref_face = np.asanyarray(nib.load(REFERENCE / f"{name}_face.nii.gz").dataobj) > 0
    before = np.asanyarray(nib.load(src).dataobj)
    after = np.asanyarray(nib.load(out / "defaced.nii.gz").dataobj)
    mask = np.asanyarray(nib.load(out / "mask.nii.gz").dataobj) > 0
    brain_kept = (after[ref_brain] == before[ref_brain]).mean()
    face_gone = (after[ref_face] == 0).mean()
    dice = 2 * (mask & ref_brain).sum() / (mask.sum() + ref_brain.sum())
    assert brain_kept >= 0.999, f"only {brain_kept:.4f} of the reference brain kept"
    assert face_gone >= 0.98, f"only {face_gone:.4f} of the reference face zeroed"
    assert dice >= 0.945, f"skull-strip Dice {dice:.3f} vs reference"


def test_removes_most_of_the_reference_outer_ears(defaced_small_head):
    """Ears are part of what defacing removes (the atlas adds them to pydeface's face mask);
    the threshold is a regression guard a little below what the shipped weights reach."""
    _, out, _ = defaced_small_head
    name = SMALL_HEAD[1].split(".")[0]
    ref_ears = np.asanyarray(nib.load(REFERENCE / f"{name}_ears.nii.gz").dataobj) > 0
    after = np.asanyarray(nib.load(out / "defaced.nii.gz").dataobj)
    ears_gone = (after[ref_ears] == 0).mean()
    assert ears_gone >= EARS_GONE_MIN, f"only {ears_gone:.3f} of the reference ears zeroed"


def test_zeroed_region_lies_in_front_of_and_below_the_brain(defaced_small_head):
    src, out, _ = defaced_small_head
    img = nib.load(src)
    after = np.asanyarray(nib.load(out / "defaced.nii.gz").dataobj)
    zeroed = (np.asanyarray(img.dataobj) != 0) & (after == 0)
    brain = np.asanyarray(nib.load(out / "mask.nii.gz").dataobj) > 0
    face_c, brain_c = world_centre(zeroed, img.affine), world_centre(brain, img.affine)
    assert face_c[1] > brain_c[1] + 30, f"zeroed voxels not anterior: {face_c} vs {brain_c}"
    assert face_c[2] < brain_c[2], f"zeroed voxels not inferior: {face_c} vs {brain_c}"


def test_brain_extracted_image_is_the_input_inside_the_mask(defaced_small_head):
    src, out, _ = defaced_small_head
    before = np.asanyarray(nib.load(src).dataobj)
    brain_img = np.asanyarray(nib.load(out / "brain.nii.gz").dataobj)
    mask = np.asanyarray(nib.load(out / "mask.nii.gz").dataobj) > 0
    assert np.array_equal(brain_img[mask], before[mask])
    assert not brain_img[~mask].any()


def test_qc_picture_is_a_two_row_png(defaced_small_head):
    _, _, result = defaced_small_head
    assert isinstance(result, DefaceResult) and result.qc_png is not None
    picture = Image.open(io.BytesIO(result.qc_png))
    assert picture.format == "PNG" and picture.width == 1.5 * picture.height


def test_masks_do_not_depend_on_voxel_axis_order(tmp_path, model, defaced_small_head):
    src, out, _ = defaced_small_head
    img = nib.load(src)
    # Same head, voxel axes permuted and flipped, affine adjusted: the same world object.
    data = np.asanyarray(img.dataobj)
    swapped = np.flip(data.transpose(2, 0, 1), axis=1)
    # new voxel (a, b, c) holds old voxel (n - 1 - b, c, a)
    index_map = np.array(
        [[0, -1, 0, data.shape[0] - 1], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float
    )
    moved = tmp_path / "moved.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(swapped), img.affine @ index_map), moved)
    deface_file(
        moved, tmp_path / "d.nii.gz", brain_mask=tmp_path / "m.nii.gz", qc=False, model=model
    )
    mask_moved = np.asanyarray(nib.load(tmp_path / "m.nii.gz").dataobj) > 0
    mask_back = np.flip(mask_moved, axis=1).transpose(1, 2, 0)
    mask = np.asanyarray(nib.load(out / "mask.nii.gz").dataobj) > 0
    dice = 2 * (mask & mask_back).sum() / (mask.sum() + mask_back.sum())
    assert dice > 0.97, f"brain masks differ after reorientation: Dice {dice:.3f}"


def test_flip_averaged_probabilities_mirror_with_the_image(model):
    image = torch.rand(1, 32, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        mirrored = probabilities(model, image.flip(1), flip=True)
        direct = probabilities(model, image, flip=True)
        single = probabilities(model, image, flip=False)
    assert torch.allclose(mirrored, direct.flip(1), atol=1e-5), "left-right averaging is asymmetric"
    assert not torch.allclose(single, direct, atol=1e-5), "flip=True changed nothing"


@pytest.mark.parametrize("size", range(16, FINE_MAX + 1, 8))  # every fine-grid side
def test_fine_tiles_cover_the_grid_with_the_overlap(size):
    tile, overlap = FINE_TILE, TILE_OVERLAP
    starts = tile_starts(size, tile, overlap)
    covered = np.zeros(size, bool)
    for start in starts:
        covered[start : start + tile] = True
    assert covered.all(), f"tiles {starts} leave voxels of a {size}-voxel axis uncovered"
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts)), (
        f"overlap < {overlap}"
    )
    assert starts[-1] + min(tile, size) == size, "the last tile must end at the grid's edge"


def test_tiled_probabilities_blend_the_tiles_of_a_large_grid(model):
    image = torch.rand(1, 72, 48, 48, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        tiled = tiled_probabilities(model, image, flip=False, tile=48, overlap=16)
        first_tile = probabilities(model, image[:, :48], flip=False)
    assert tiled.shape == (2, 72, 48, 48)
    assert 0 <= tiled.min() and tiled.max() <= 1
    # Tiles at 0 and 24 along the first axis: voxels only the first covers keep its values.
    assert torch.allclose(tiled[:, :24], first_tile[:, :24], atol=1e-6), "unblended part changed"


def test_resampler_matches_scipy_inside_the_volume():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    volume = rng.random((12, 14, 16)).astype(np.float32)
    out_to_in = np.array(
        [[0.9, 0.1, 0, 1], [0, 1.1, 0.05, 0.5], [0.02, 0, 0.8, -0.5], [0, 0, 0, 1]]
    )
    ours = _resample(torch.as_tensor(volume)[None], out_to_in, (9, 10, 12))[0].numpy()
    ref = ndimage.affine_transform(volume, out_to_in, order=1, output_shape=(9, 10, 12))
    inside = (
        ndimage.affine_transform(
            np.ones_like(volume), out_to_in, order=0, output_shape=(9, 10, 12), cval=0
        )
        > 0
    )
    inside = ndimage.binary_erosion(inside)
    assert np.allclose(ours[inside], ref[inside], atol=1e-5)


def test_scaled_integer_input_keeps_its_scaling_and_zeroes_to_zero(tmp_path, model):
    img = nib.load(shared_path(*SMALL_HEAD))
    raw = np.asanyarray(img.dataobj).astype(np.int16) + 5  # stored values; read back below
    scaled = nib.Nifti1Image(raw, img.affine)
    scaled.header.set_slope_inter(2.0, -10.0)  # value = 2 * raw - 10, so raw -5 + 5 reads 0
    src = tmp_path / "scaled.nii"
    nib.save(scaled, src)
    deface_file(src, tmp_path / "out.nii", qc=False, model=model)
    before, after = nib.load(src), nib.load(tmp_path / "out.nii")
    assert stored_header(src, before)["scl_slope"] == 2.0
    assert stored_header(tmp_path / "out.nii", after).binaryblock == (
        stored_header(src, before).binaryblock
    ), "the stored header, scaling included, must not change"
    changed = before.get_fdata() != after.get_fdata()
    assert changed.sum() > 10_000
    assert np.all(after.get_fdata()[changed] == 0), "zeroed voxels must read back as 0"


def test_template_fallback_keeps_the_brain_and_removes_the_face(tmp_path):
    """The registration fallback (no CNN) on the small head. Its template is the one the
    reference masks were made from, so these figures flatter it; they guard regressions."""
    src = shared_path(*SMALL_HEAD)
    name = SMALL_HEAD[1].split(".")[0]
    deface_file(
        src, tmp_path / "d.nii.gz", brain_mask=tmp_path / "m.nii.gz", qc=False, method="template"
    )
    ref_brain = np.asanyarray(nib.load(REFERENCE / f"{name}_brain.nii.gz").dataobj) > 0
    ref_face = np.asanyarray(nib.load(REFERENCE / f"{name}_face.nii.gz").dataobj) > 0
    before = np.asanyarray(nib.load(src).dataobj)
    after = np.asanyarray(nib.load(tmp_path / "d.nii.gz").dataobj)
    brain_kept = (after[ref_brain] == before[ref_brain]).mean()
    face_gone = (after[ref_face] == 0).mean()
    assert brain_kept >= 0.999, f"only {brain_kept:.4f} of the reference brain kept"
    assert face_gone >= 0.9, f"only {face_gone:.4f} of the reference face zeroed"


def test_unknown_defacing_method_is_refused(tmp_path):
    src = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((16, 16, 16), np.int16), np.eye(4)), src)
    with pytest.raises(ValueError, match="unknown defacing method"):
        deface_file(src, tmp_path / "out.nii.gz", method="pydeface")


def test_defaces_a_real_head_without_the_shared_data(tmp_path, model):
    """Colin 27 at 2 mm (from Debian's mricron-data): the face goes, the brain stays."""
    if not COLIN_HEAD.exists():
        pytest.skip(f"{COLIN_HEAD} not installed (apt-get install mricron-data)")
    img = nib.load(COLIN_HEAD)
    data = np.asanyarray(img.dataobj).astype(np.int16)[::2, ::2, ::2]
    src = tmp_path / "colin_2mm.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine @ np.diag([2.0, 2.0, 2.0, 1.0])), src)
    deface_file(src, tmp_path / "d.nii.gz", brain_mask=tmp_path / "m.nii.gz", qc=False, model=model)
    small = nib.load(src)
    after = np.asanyarray(nib.load(tmp_path / "d.nii.gz").dataobj)
    brain = np.asanyarray(nib.load(tmp_path / "m.nii.gz").dataobj) > 0
    zeroed = (data != 0) & (after == 0)
    litres = brain.sum() * 8 / 1e6
    assert 1.4 < litres < 2.1, f"brain mask of {litres:.2f} L is not an adult brain"
    assert zeroed.sum() * 8 > 100_000, f"only {zeroed.sum() * 8} mm3 zeroed"
    face_c, brain_c = world_centre(zeroed, small.affine), world_centre(brain, small.affine)
    assert face_c[1] > brain_c[1] + 30 and face_c[2] < brain_c[2], (
        f"zeroed voxels centre {face_c} is not in front of and below the brain {brain_c}"
    )
