"""QC picture of a defaced volume: mid-sagittal slice and two surface renders, before/after.

The "before" row shows the face: the PNG is for the private QC folder, never for OUTPUT_DIR.
"""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage

PANEL = 192
QC_SPACING_MM = 2.0


def to_ras_iso(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorient to RAS voxel axes and resample to ~2 mm isotropic (for pictures only)."""
    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(data, ornt)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))[ornt[:, 0].astype(int)]
    step = np.maximum(1, np.floor(QC_SPACING_MM / zooms).astype(int))
    ras = ras[:: step[0], :: step[1], :: step[2]]
    return ndimage.zoom(ras.astype(np.float32), zooms * step / QC_SPACING_MM, order=1)


def surface_render(volume: np.ndarray, axis: int, level: float, reverse: bool) -> np.ndarray:
    """Depth-shaded first-hit render looking along ``axis`` (a cheap 3D view)."""
    v = np.flip(volume, axis) if reverse else volume
    hit = v > level
    depth = np.where(hit.any(axis), hit.argmax(axis), v.shape[axis]).astype(np.float32)
    gy, gx = np.gradient(ndimage.gaussian_filter(depth, 1.0))
    shade = 1.0 / np.sqrt(1.0 + gx**2 + gy**2)
    image = np.where(depth < v.shape[axis], shade * (1.0 - 0.5 * depth / v.shape[axis]), 0.0)
    return image


def _panel(image: np.ndarray) -> Image.Image:
    image = np.rot90(image)  # second axis (A or S) upwards
    scaled = (255 * np.clip(image, 0, 1)).astype(np.uint8)
    return Image.fromarray(scaled).resize((PANEL, PANEL), Image.BILINEAR)


def _row(volume: np.ndarray, level: float, scale: float) -> list[Image.Image]:
    sagittal = volume[volume.shape[0] // 2] / scale
    side = surface_render(volume, axis=0, level=level, reverse=True)  # from the right
    front = surface_render(volume, axis=1, level=level, reverse=True)  # from the front
    return [_panel(sagittal), _panel(side), _panel(front)]


def qc_png(before: np.ndarray, after: np.ndarray, affine: np.ndarray) -> bytes:
    """PNG bytes: top row before, bottom row after defacing."""
    b = to_ras_iso(before, affine)
    a = to_ras_iso(after, affine)
    scale = float(np.percentile(b[b > 0], 99.5)) if (b > 0).any() else 1.0
    level = 0.12 * scale
    rows = [_row(b, level, scale), _row(a, level, scale)]
    canvas = Image.new("L", (3 * PANEL, 2 * PANEL))
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            canvas.paste(panel, (c * PANEL, r * PANEL))
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()


def after_row(png: bytes) -> bytes:
    """Only the bottom ("after") row of a ``qc_png`` picture: the part that may be shared."""
    with Image.open(io.BytesIO(png)) as image:
        width, height = image.size
        cropped = image.crop((0, height // 2, width, height))
        out = io.BytesIO()
        cropped.save(out, format="PNG")
    return out.getvalue()
