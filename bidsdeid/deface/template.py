"""Registration-based defacing (the fallback, no CNN): a labelled template head carried onto
the volume, as pydeface does with FSL.

The template is pydeface's mean head at 2 mm with the training atlas's brain and face (ears
included) labels, in ``models/`` (``deface_template.nii.gz``: intensity and labels as two
volumes). It is registered to the volume, affine then deformable
(``bidsdeid.deface.register``), with a local similarity so T2w and PD heads work too; the
masks follow the warp. Tens of seconds per volume: for comparison and for heads the CNN
refuses, not the default.

    python -m bidsdeid.deface.template --out models/deface_template.nii.gz
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from bidsdeid.deface.atlas import COLIN_HEAD, CSF, WM, load_or_build_atlas, package_file
from bidsdeid.deface.infer import (
    DefaceError,
    NativeMasks,
    model_paths,
    native_masks,
    sample_native_on_grid,
)
from bidsdeid.deface.register import (
    grid_world_coords,
    isotropic_grid,
    register_affine,
    register_deformable,
    sample_at_world,
)

TEMPLATE_FILE = "deface_template.nii.gz"
TEMPLATE_SPACING = 2.0
BRAIN, FACE = 1, 2  # label values in the template's second volume
WORK_SPACING = 2.0  # grid on which the warped labels are read before going native
SIMILARITY_WINDOW_MM = 12.0


@dataclass(frozen=True)
class Template:
    intensity: np.ndarray  # float32
    labels: np.ndarray  # uint8: 0, BRAIN, FACE
    affine: np.ndarray


def load_template(path: Path | None = None) -> Template:
    """The shipped template (or ``path``); raises DefaceError when it is missing."""
    candidates = [path] if path else [p.with_name(TEMPLATE_FILE) for p in model_paths()]
    for candidate in candidates:
        if candidate.exists():
            img = nib.load(candidate)
            data = np.asarray(img.dataobj)
            return Template(data[..., 0].astype(np.float32), data[..., 1].astype(np.uint8),
                            img.affine)
    raise DefaceError(f"template {TEMPLATE_FILE} not found in {[str(p) for p in candidates]}")


@torch.no_grad()
def _warped_labels(template: Template, warp, shape, grid_affine) -> tuple[np.ndarray, np.ndarray]:
    world = grid_world_coords(shape, grid_affine)
    onehot = torch.as_tensor(
        np.stack([template.labels == BRAIN, template.labels == FACE]).astype(np.float32)
    )
    moved = sample_at_world(onehot, template.affine, warp(world))
    return moved[0].numpy(), moved[1].numpy()


def template_masks(template: Template, data: np.ndarray, affine: np.ndarray) -> NativeMasks:
    """Brain and face masks on the native grid of a 3D volume, by registration."""
    data = np.ascontiguousarray(np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0), np.float32)
    if not (data > 0).any():
        raise DefaceError("the volume is empty (no voxel above zero)")
    to_template = register_affine(
        data, affine, template.intensity, template.affine, window_mm=SIMILARITY_WINDOW_MM
    )
    warp = register_deformable(
        data, affine, template.intensity, template.affine, to_template,
        spacings=(4.0, 3.0), iterations=100, window_mm=SIMILARITY_WINDOW_MM,
    )
    shape, grid_affine = isotropic_grid(data.shape, affine, WORK_SPACING)
    brain, face = _warped_labels(template, warp, shape, grid_affine)
    # Outside the acquired field of view there is nothing to zero or keep.
    inside = sample_native_on_grid(
        torch.ones(1, *data.shape), affine, grid_affine, shape
    )[0].numpy() > 0.99
    brain_bin = ndimage.binary_fill_holes((brain > 0.5) & inside)
    return native_masks(brain_bin.astype(np.float32), grid_affine, WORK_SPACING,
                        face * inside, grid_affine, data.shape[:3], affine)


def build_template(atlas_labels: Path, atlas_face: Path) -> nib.Nifti1Image:
    """pydeface's mean head at 2 mm with the atlas's brain and face labels."""
    head = nib.load(package_file("pydeface", "data/mean_reg2mean.nii.gz"))
    labels = np.asarray(nib.load(atlas_labels).dataobj)
    face = np.asarray(nib.load(atlas_face).dataobj) > 0
    shape, grid_affine = isotropic_grid(head.shape, head.affine, TEMPLATE_SPACING)
    world = grid_world_coords(shape, grid_affine)
    brain_f = ((labels >= WM) & (labels <= CSF)).astype(np.float32)
    volumes = torch.as_tensor(
        np.stack([np.asarray(head.dataobj, np.float32), brain_f, face.astype(np.float32)])
    )
    intensity, brain, face_t = sample_at_world(volumes, head.affine, world).numpy()
    intensity = np.clip(intensity / np.percentile(intensity, 99.5) * 200, 0, 255)
    out = np.zeros((*shape, 2), np.uint8)
    out[..., 0] = np.rint(intensity).astype(np.uint8)
    out[..., 1][face_t > 0.5] = FACE
    out[..., 1][brain > 0.5] = BRAIN
    img = nib.Nifti1Image(out, grid_affine)
    img.header["descrip"] = b"bidsdeid deface template: pydeface mean head, atlas labels"
    return img


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Build the registration fallback's template.")
    ap.add_argument("--out", type=Path, default=Path("models") / TEMPLATE_FILE)
    ap.add_argument("--atlas-cache", type=Path, default=Path("/tmp/bidsdeid_deface_atlas"))
    args = ap.parse_args(argv)
    load_or_build_atlas(args.atlas_cache, COLIN_HEAD if COLIN_HEAD.exists() else None)
    img = build_template(args.atlas_cache / "pydeface_mean_labels.nii.gz",
                         args.atlas_cache / "pydeface_mean_face.nii.gz")
    nib.save(img, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
