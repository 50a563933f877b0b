"""Deface (and optionally skull-strip) one anatomical NIfTI file."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from isal import igzip

from bidsdeid.deface.infer import DefaceError, NativeMasks, load_model, predict_masks
from bidsdeid.deface.qc import qc_png
from bidsdeid.fsutil import atomic_write_bytes


@dataclass
class DefaceResult:
    face_voxels: int
    brain_voxels: int
    seconds: float
    qc_png: bytes | None


def load_volume(src: Path) -> nib.Nifti1Image:
    """The NIfTI image, refused unless it is one 3D volume."""
    try:
        img = nib.load(src)
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise DefaceError(f"{src.name}: not a readable NIfTI file ({exc})") from exc
    if not isinstance(img, nib.Nifti1Image):
        raise DefaceError(f"{src.name}: not a NIfTI-1/2 image")
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) > 3:
        raise DefaceError(
            f"{src.name}: {len(shape)}D input {img.shape}: defacing needs a 3D anatomical volume"
        )
    if len(shape) < 3 or min(shape) < 8:
        raise DefaceError(f"{src.name}: shape {img.shape} is not a 3D volume")
    return img


def raw_voxels(img: nib.Nifti1Image) -> np.ndarray:
    """The stored (unscaled) voxel values as a 3D array of the file's dtype."""
    raw = np.asarray(img.dataobj.get_unscaled())
    return raw.reshape(raw.shape[:3])


def stored_header(path: Path, img: nib.Nifti1Image) -> nib.Nifti1Header:
    """The header exactly as stored (nibabel's loaded header has its scaling moved away)."""
    with nib.openers.ImageOpener(path) as fobj:
        return type(img.header).from_fileobj(fobj, check=False)


def nifti_bytes_like(header: nib.Nifti1Header, raw: np.ndarray, gz: bool) -> bytes:
    """A file with ``header`` unchanged (affine, scaling, dtype, extensions) and new voxels."""
    buf = io.BytesIO()
    header.write_to(buf)
    shape = header.get_data_shape()
    nib.volumeutils.array_to_file(
        raw.reshape(shape),
        buf,
        header.get_data_dtype(),
        offset=int(header["vox_offset"]),
        order="F",
    )
    data = buf.getvalue()
    return igzip.compress(data, compresslevel=1, mtime=0) if gz else data


def mask_bytes(img: nib.Nifti1Image, mask: np.ndarray, gz: bool) -> bytes:
    """A uint8 mask on the same grid and with the same spatial header as ``img``."""
    header = img.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1, 0)
    out = nib.Nifti1Image(mask.astype(np.uint8), img.affine, header)
    out.header.set_slope_inter(1, 0)
    data = out.to_bytes()
    return igzip.compress(data, compresslevel=1, mtime=0) if gz else data


def _zero_value(img: nib.Nifti1Image, dtype: np.dtype) -> np.ndarray:
    """The stored value that reads back as 0 (the file's scaling applied)."""
    slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    if inter == 0 or slope == 0 or not np.isfinite(slope * inter):
        return np.zeros((), dtype)
    value = -inter / slope
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        value = np.clip(np.rint(value), info.min, info.max)
    return np.asarray(value, dtype)


def _masks(method: str, model: torch.nn.Module | None, data: np.ndarray, affine: np.ndarray):
    if method == "cnn":
        return predict_masks(model or load_model(), data, affine)
    if method == "template":
        from bidsdeid.deface.template import load_template, template_masks

        return template_masks(load_template(), data, affine)
    raise ValueError(f"unknown defacing method {method!r}")


def _gz(path: Path) -> bool:
    return path.name.endswith(".gz")


def deface_file(
    src: Path,
    dst: Path,
    brain_mask: Path | None = None,
    brain_extracted: Path | None = None,
    qc: bool = True,
    model: torch.nn.Module | None = None,
    method: str = "cnn",
) -> DefaceResult:
    """Zero the face of ``src`` into ``dst``; optionally write the brain mask / brain image.

    ``method`` is ``cnn`` (the network, ``model`` or the shipped one) or ``template`` (the
    registration fallback, ``bidsdeid.deface.template``). Outputs keep the input's header,
    affine and dtype and are written atomically. The brain and a 6 mm shell around it are
    never zeroed.
    """
    start = time.perf_counter()
    src, dst = Path(src), Path(dst)
    img = load_volume(src)
    data = img.get_fdata(dtype=np.float32).reshape(img.shape[:3])
    try:
        masks: NativeMasks = _masks(method, model, data, img.affine)
    except DefaceError as exc:
        raise DefaceError(f"{src.name}: {exc}") from None
    raw = raw_voxels(img)
    zero = _zero_value(img, raw.dtype)
    defaced = raw.copy()
    defaced[masks.face] = zero
    header = stored_header(src, img)
    atomic_write_bytes(dst, nifti_bytes_like(header, defaced, _gz(dst)))
    if brain_mask is not None:
        atomic_write_bytes(Path(brain_mask), mask_bytes(img, masks.brain, _gz(Path(brain_mask))))
    if brain_extracted is not None:
        stripped = np.where(masks.brain, raw, zero).astype(raw.dtype)
        atomic_write_bytes(
            Path(brain_extracted), nifti_bytes_like(header, stripped, _gz(Path(brain_extracted)))
        )
    seconds = time.perf_counter() - start
    picture = None
    if qc:
        after = np.where(masks.face, 0.0, data).astype(np.float32)
        picture = qc_png(data, after, img.affine)
    return DefaceResult(int(masks.face.sum()), int(masks.brain.sum()), seconds, picture)
