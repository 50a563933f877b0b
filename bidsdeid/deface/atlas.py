"""Training atlas: head templates with brain, tissue and face labels.

Sources (all shipped inside PyPI wheels or Debian packages, nothing fetched):
- ``pydeface`` wheel (MIT): ``data/mean_reg2mean.nii.gz`` (a mean T1 head with face, 1 mm) and
  ``data/facemask.nii.gz`` (0 over the face, 1 elsewhere).
- ``nilearn`` wheel (BSD-3): ICBM152 2009a symmetric brain (``mni_icbm152_t1..``, brain-only)
  with grey- and white-matter probability maps, 1 mm.
- Debian ``mricron-data`` (BSD-3; the MNI's Colin 27 head, free to use and redistribute):
  ``/usr/share/mricron/templates/ch2.nii.gz``, one real adult head (27 averaged 1 mm T1 scans)
  with sharp cortex, skull, face and ears: the anatomy of a real subject, which the blurred
  mean head lacks.

Each head gets a label map: 0 air, 1 white matter, 2 grey matter, 3 intracranial CSF, 4-7
non-brain head tissue (intensity quartiles of scalp, skull, muscle, fat ...), and a face map
(the voxels defacing removes). The brain (the ICBM brain mask: brain and the CSF up to the
inner skull) is carried onto each head by an affine fit over the brain region; on the sharp
Colin head it is then refined by a smooth deformable fit (``register_deformable``), and its
tissue classes come from the head's own intensities, so sulci are the subject's. The face map
comes from the pydeface face mask, carried by a whole-head affine fit, plus the outer ears
(``ear_region``), which pydeface's mask leaves.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from bidsdeid.deface.register import (
    Warp,
    grid_world_coords,
    register_affine,
    register_deformable,
    sample_at_world,
)

AIR, WM, GM, CSF = 0, 1, 2, 3
FIRST_HEAD_LABEL = 4
HEAD_CLASSES = 4
N_LABELS = FIRST_HEAD_LABEL + HEAD_CLASSES
COLIN_HEAD = Path("/usr/share/mricron/templates/ch2.nii.gz")  # Debian package mricron-data


@dataclass(frozen=True)
class AtlasHead:
    """One template head on its own grid."""

    name: str
    intensity: np.ndarray  # float32, template intensities (used only for registration/QC)
    labels: np.ndarray  # uint8, see module docstring
    face: np.ndarray  # bool, the region defacing removes (includes air in front of the face)
    affine: np.ndarray


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{package} is not installed (pip install {package} --no-deps)")
    return Path(spec.submodule_search_locations[0]) / relative


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(path)
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def head_mask(intensity: np.ndarray) -> np.ndarray:
    """Head (non-air) voxels: above a fraction of the robust maximum, closed and filled."""
    level = 0.08 * np.percentile(intensity[intensity > 0], 99)
    mask = ndimage.binary_closing(intensity > level, iterations=3)
    mask = ndimage.binary_fill_holes(mask)
    lab, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, lab, range(1, n + 1))
        mask = lab == (1 + int(np.argmax(sizes)))
    return mask


def _warp(
    volume: np.ndarray, affine: np.ndarray, shape, target_affine, to_source, mode="bilinear"
):
    """``volume`` resampled onto a target grid; ``to_source`` maps target world to source
    world (a 4x4 matrix or a ``Warp``)."""
    world = grid_world_coords(shape, target_affine)
    if isinstance(to_source, Warp):
        src_world = to_source(world)
    else:
        t = torch.as_tensor(to_source, dtype=torch.float32)
        src_world = world @ t[:3, :3].T + t[:3, 3]
    v = torch.as_tensor(np.asarray(volume, np.float32))[None]
    return sample_at_world(v, affine, src_world, mode=mode)[0].numpy()


# The outer ears, in the template's (MNI-aligned) world space, in mm: head tissue lateral to
# the skull at ear height, at least EAR_BRAIN_GAP_MM from the brain. Drawn on pydeface's mean
# head and checked on its axial and coronal slices; it also takes a strip of scalp above the
# pinna, which is harmless to remove.
EAR_MIN_ABS_X, EAR_Y_RANGE, EAR_Z_RANGE, EAR_BRAIN_GAP_MM = 55.0, (-50.0, 10.0), (-55.0, -5.0), 10.0


def ear_region(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Voxels of the outer ears (and the scalp just above them) of an MNI-aligned head."""
    ijk = np.indices(labels.shape, dtype=np.float32).reshape(3, -1)
    x, y, z = (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape(3, *labels.shape)
    brain = (labels >= WM) & (labels <= CSF)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    far = ndimage.distance_transform_edt(~brain, sampling=zooms) >= EAR_BRAIN_GAP_MM
    return ((labels >= FIRST_HEAD_LABEL) & far & (np.abs(x) >= EAR_MIN_ABS_X)
            & (y >= EAR_Y_RANGE[0]) & (y <= EAR_Y_RANGE[1])
            & (z >= EAR_Z_RANGE[0]) & (z <= EAR_Z_RANGE[1]))


def tissue_by_intensity(intensity: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """WM/GM/CSF labels inside ``brain`` by 1D k-means on a T1 head's own intensities."""
    values = intensity[brain]
    centres = np.percentile(values, [10, 50, 90]).astype(np.float64)
    for _ in range(30):
        nearest = np.abs(values[:, None] - centres[None]).argmin(1)
        centres = np.array([values[nearest == k].mean() for k in range(3)])
    edges = (centres[:-1] + centres[1:]) / 2  # CSF < GM < WM on T1
    out = np.zeros(intensity.shape, np.uint8)
    out[brain] = np.array([CSF, GM, WM], np.uint8)[np.searchsorted(edges, values)]
    return out


def build_head(
    name: str,
    head_path: Path,
    icbm: dict[str, tuple[np.ndarray, np.ndarray]],
    face: tuple[np.ndarray, np.ndarray] | None,
    face_to_head: np.ndarray | None,
    sharp: bool = False,
) -> AtlasHead:
    """Labels for one head: ICBM brain registered in, head tissue by intensity.

    ``sharp`` marks a real (not averaged) T1 head: its brain fit is refined deformably and its
    brain tissue classes come from its own intensities instead of ICBM's probability maps.
    """
    intensity, affine = _load(head_path)
    t1, t1_aff = icbm["t1"]
    brain_ref = (t1 > 0).astype(np.float32)
    # head world -> ICBM world, fitted on the ICBM brain only (the ICBM image has no skull).
    to_icbm = np.linalg.inv(
        register_affine(
            t1,
            t1_aff,
            intensity,
            affine,
            fixed_weight=ndimage.binary_dilation(brain_ref > 0, iterations=3),
        )
    )
    if sharp:
        near_brain = _warp(brain_ref, t1_aff, intensity.shape, affine, to_icbm) > 0.5
        to_icbm = register_deformable(
            intensity,
            affine,
            t1,
            t1_aff,
            to_icbm,
            fixed_weight=ndimage.binary_dilation(near_brain, iterations=6),
        )
    brain = _warp(brain_ref, t1_aff, intensity.shape, affine, to_icbm) > 0.5
    labels = np.zeros(intensity.shape, np.uint8)
    head = head_mask(intensity) | brain
    rest = head & ~brain
    quartiles = np.percentile(intensity[rest], [25, 50, 75])
    labels[rest] = FIRST_HEAD_LABEL + np.searchsorted(quartiles, intensity[rest]).astype(np.uint8)
    if sharp:
        labels[brain] = tissue_by_intensity(intensity, brain)[brain]
    else:
        gm = _warp(icbm["gm"][0], t1_aff, intensity.shape, affine, to_icbm)
        wm = _warp(icbm["wm"][0], t1_aff, intensity.shape, affine, to_icbm)
        labels[brain] = CSF
        labels[brain & (gm >= 0.5 * 255) & (gm >= wm)] = GM
        labels[brain & (wm >= 0.5 * 255) & (wm > gm)] = WM
    if face is None:
        face_map = np.zeros(intensity.shape, bool)
    else:
        face_map = _warp(face[0], face[1], intensity.shape, affine, face_to_head) < 0.5
        # Outside the face mask's own box the warp returns 0: only trust where it was defined.
        inside = _warp(np.ones_like(face[0]), face[1], intensity.shape, affine, face_to_head) > 0.5
        face_map &= inside
    face_map |= ear_region(labels, affine)
    return AtlasHead(name, intensity, labels, face_map & ~brain, affine)


def build_atlas(colin_head: Path | None = COLIN_HEAD) -> list[AtlasHead]:
    """The training heads: pydeface's mean head, and Colin 27 unless ``colin_head`` is None."""
    icbm = {
        k: _load(
            package_file(
                "nilearn", f"datasets/data/mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz"
            )
        )
        for k in ("t1", "gm", "wm")
    }
    pd_head = package_file("pydeface", "data/mean_reg2mean.nii.gz")
    face = _load(package_file("pydeface", "data/facemask.nii.gz"))
    heads = [build_head("pydeface_mean", pd_head, icbm, face, np.eye(4))]
    pd, pd_aff = _load(pd_head)
    if colin_head is not None:
        if not colin_head.exists():
            raise FileNotFoundError(f"{colin_head}: training head not found")
        head, head_aff = _load(colin_head)
        head_to_pd = register_affine(head, head_aff, pd, pd_aff)
        heads.append(build_head("colin27", colin_head, icbm, face, head_to_pd, sharp=True))
    return heads


def training_head(text: str) -> Path | None:
    """A command-line head path; ``none`` leaves that head out."""
    return None if text == "none" else Path(text)


def load_or_build_atlas(cache: Path, colin_head: Path | None) -> list[AtlasHead]:
    """Atlas heads, built once (a few minutes) and cached as NIfTI label maps.

    The cache is used only when it holds the same heads as asked for.
    """
    names = ["pydeface_mean"] + (["colin27"] if colin_head is not None else [])
    index = cache / "heads.json"
    if index.exists() and json.loads(index.read_text()) == names:
        heads = []
        for name in names:
            lab = nib.load(cache / f"{name}_labels.nii.gz")
            face = nib.load(cache / f"{name}_face.nii.gz")
            heads.append(
                AtlasHead(
                    name,
                    np.zeros(0, np.float32),
                    np.asarray(lab.dataobj),
                    np.asarray(face.dataobj) > 0,
                    lab.affine,
                )
            )
        return heads
    heads = build_atlas(colin_head)
    cache.mkdir(parents=True, exist_ok=True)
    for h in heads:
        nib.save(nib.Nifti1Image(h.labels, h.affine), cache / f"{h.name}_labels.nii.gz")
        nib.save(
            nib.Nifti1Image(h.face.astype(np.uint8), h.affine), cache / f"{h.name}_face.nii.gz"
        )
    index.write_text(json.dumps([h.name for h in heads]))
    return heads
