"""Make reference brain and face masks for the real heads by ANTs registration.

Independent of the CNN: a labelled template head is warped onto each subject with antspyx SyN.
Run in an environment with antspyx (its numpy/scipy pins clash with bidsdeid's, so use a
separate venv), with the pydeface and nilearn wheels installed (--no-deps, data only):

    python benchmarks/reference_masks/make_reference_masks.py ../shared/data/heads OUT_DIR \
        /tmp/bidsdeid_deface_atlas/pydeface_mean_labels.nii.gz \
        /tmp/bidsdeid_deface_atlas/pydeface_mean_face.nii.gz

The last arguments are the training atlas' label and face maps of pydeface's head (written by
``python -m bidsdeid.deface.train`` into its ``--atlas-cache``); the ears are the part of the
atlas face map that pydeface's own face mask leaves (``bidsdeid.deface.atlas.ear_region``).

Steps:
1. Template brain: the ICBM152-2009 brain (nilearn) as placed in pydeface's mean head by the
   training atlas (see template_brain for why not by ANTs).
2. Each subject: pydeface's mean head is registered (affine + SyN, mutual information, so T2w
   and PD work too) onto the subject; the template brain and pydeface's face mask follow.
3. Reference face = warped face region, inside the subject's head and field of view, not brain;
   reference ears the same way.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import ants
import numpy as np
from scipy import ndimage

SUBJECTS = ["chris_t1", "chris_PD", "register_T1_head_ext2", "register_T2w"]


def package_file(package: str, relative: str) -> str:
    spec = importlib.util.find_spec(package)
    return str(Path(spec.submodule_search_locations[0]) / relative)


def head_mask(img: ants.ANTsImage) -> np.ndarray:
    data = img.numpy()
    level = 0.08 * np.percentile(data[data > 0], 99)
    mask = ndimage.binary_closing(data > level, iterations=3)
    mask = ndimage.binary_fill_holes(mask)
    lab, n = ndimage.label(mask)
    if n > 1:
        mask = lab == 1 + int(np.argmax(ndimage.sum(mask, lab, range(1, n + 1))))
    return mask


def at_2mm(img: ants.ANTsImage) -> ants.ANTsImage:
    """Registration runs on 2 mm copies (fast); transforms are in mm, so they apply anywhere."""
    return ants.resample_image(img, (2.0, 2.0, 2.0), use_voxels=False, interp_type=0)


def template_brain(atlas_labels: Path, pd_full: ants.ANTsImage) -> ants.ANTsImage:
    """The brain on pydeface's head grid, from the training atlas (labels 1-3 are brain).

    That atlas fits the ICBM brain into pydeface's head by an affine fit limited to the brain
    (bidsdeid.deface.atlas); ANTs' own fits of the skull-less ICBM image to a head inflated
    (affine) or shrank (SyN) it, as seen on overlays, so they are not used.
    """
    labels = ants.image_read(str(atlas_labels))
    brain = labels.new_image_like(((labels.numpy() >= 1) & (labels.numpy() <= 3)) * 1.0)
    return ants.resample_image_to_target(brain, pd_full, interp_type="linear")


def main(heads_dir: Path, out_dir: Path, atlas_labels: Path, atlas_face: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    pd_full = ants.image_read(package_file("pydeface", "data/mean_reg2mean.nii.gz"))
    face = ants.image_read(package_file("pydeface", "data/facemask.nii.gz"))
    face = pd_full.new_image_like(1.0 - face.numpy())  # pydeface: 0 over the face
    pd_head = at_2mm(pd_full)
    brain_t = template_brain(atlas_labels, pd_full)
    trained_face = ants.resample_image_to_target(ants.image_read(str(atlas_face)), pd_full,
                                                 interp_type="nearestNeighbor")
    ears = pd_full.new_image_like(((trained_face.numpy() > 0) & (face.numpy() < 0.5)) * 1.0)
    for name in SUBJECTS:
        subject = ants.image_read(str(heads_dir / f"{name}.nii.gz"))
        reg = ants.registration(fixed=at_2mm(subject), moving=pd_head, type_of_transform="SyN")
        brain = ants.apply_transforms(subject, brain_t, reg["fwdtransforms"]).numpy() > 0.5
        brain = ndimage.binary_fill_holes(brain)
        warped_face = ants.apply_transforms(subject, face, reg["fwdtransforms"]).numpy() > 0.5
        ref_face = warped_face & head_mask(subject) & ~brain
        warped_ears = ants.apply_transforms(subject, ears, reg["fwdtransforms"]).numpy() > 0.5
        ref_ears = warped_ears & head_mask(subject) & ~brain
        for kind, mask in (("brain", brain), ("face", ref_face), ("ears", ref_ears)):
            img = subject.new_image_like(mask.astype(np.float32))
            ants.image_write(img.astype("uint8"), str(out_dir / f"{name}_{kind}.nii.gz"))
        print(
            name, "brain voxels", int(brain.sum()), "face voxels", int(ref_face.sum()),
            "ear voxels", int(ref_ears.sum()), flush=True,
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
