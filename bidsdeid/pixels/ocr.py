"""Read the words in a frame's candidate text lines with Tesseract, in one process per frame.

Overlay text is small, coloured, light-on-dark and antialiased, which Tesseract reads poorly as
is. Each candidate line is cropped, scaled so its text is about ``TARGET_HEIGHT`` pixels tall, and
prepared twice (the passes): binarised from the stroke map, and as grey levels turned dark-on-light
and stretched. All crops of all passes are stacked into one mosaic image, read by a single
``tesseract --psm 11`` call (process start-up dominates the cost of small crops), and the words
are mapped back to frame coordinates.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytesseract
from PIL import Image

from .detect import STROKE_CONTRAST, Box, TextMap

TARGET_HEIGHT = 34  # px of a scaled line box; Tesseract reads best with capitals of 20-30 px
MAX_SCALE = 4.0
GAP = 16  # px of white around every crop in the mosaic
TESSERACT_CONFIG = "--psm 11 -c tessedit_do_invert=0"
PASSES = ("binary", "grey")


class OcrError(RuntimeError):
    """Tesseract could not be run."""


@dataclass(frozen=True)
class OcrWord:
    text: str
    box: Box  # in frame coordinates
    confidence: float  # Tesseract's 0-100
    line: int  # index of the candidate line it was read in
    reading: int  # index of the (line, pass) crop it was read in: words of one reading form a line


@dataclass(frozen=True)
class _Slot:
    line: int
    box: Box  # the crop in frame coordinates
    scale: float
    top: int  # row of the crop in the mosaic
    height: int


def _prepare(gray: np.ndarray, text: TextMap, box: Box, scale: float, how: str) -> Image.Image:
    """One crop, scaled, dark text on white."""
    size = (max(1, round(box.width * scale)), max(1, round(box.height * scale)))
    if how == "binary":
        contrast = Image.fromarray(text.contrast[box.slices()]).resize(size, Image.BILINEAR)
        ink = np.asarray(contrast) >= STROKE_CONTRAST
        return Image.fromarray(np.where(ink, 0, 255).astype(np.uint8))
    crop = gray[box.slices()].astype(np.float32)
    glyphs = text.stroke[box.slices()]
    if glyphs.any() and (~glyphs).any() and crop[glyphs].mean() > crop[~glyphs].mean():
        crop = 255.0 - crop
    low, high = np.percentile(crop, (1, 99))
    stretched = np.clip((crop - low) * (255.0 / max(high - low, 1.0)), 0, 255)
    return Image.fromarray(stretched.astype(np.uint8)).resize(size, Image.LANCZOS)


def build_mosaic(gray: np.ndarray, text: TextMap,
                 lines: Sequence[Box]) -> tuple[Image.Image, list[_Slot]]:
    """Every pass of every line crop stacked top to bottom on white."""
    rows, cols = gray.shape
    crops: list[tuple[_Slot, Image.Image]] = []
    top = GAP
    for index, line in enumerate(lines):
        box = line.padded(max(2, line.height // 4), rows, cols)
        scale = float(np.clip(TARGET_HEIGHT / max(line.height, 1), 1.0, MAX_SCALE))
        for how in PASSES:
            image = _prepare(gray, text, box, scale, how)
            crops.append((_Slot(index, box, scale, top, image.height), image))
            top += image.height + GAP
    width = max((image.width for _, image in crops), default=1) + 2 * GAP
    mosaic = Image.new("L", (width, max(top, 1)), 255)
    for slot, image in crops:
        mosaic.paste(image, (GAP, slot.top))
    return mosaic, [slot for slot, _ in crops]


def run_tesseract(mosaic: Image.Image) -> dict[str, list]:
    # Tesseract's OpenMP threads only slow it down on a small shared CPU; a user's setting wins.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    try:
        return pytesseract.image_to_data(mosaic, lang="eng", config=TESSERACT_CONFIG,
                                         output_type=pytesseract.Output.DICT)
    except (pytesseract.TesseractError, pytesseract.TesseractNotFoundError, OSError) as error:
        lines = str(error).strip().splitlines() or [type(error).__name__]
        raise OcrError(f"tesseract failed: {lines[0]}") from error


def words_from_data(data: dict[str, list], slots: Sequence[_Slot]) -> list[OcrWord]:
    """Tesseract's word rows mapped from mosaic to frame coordinates."""
    words = []
    for text, conf, left, top, width, height in zip(data["text"], data["conf"], data["left"],
                                                    data["top"], data["width"], data["height"]):
        text = text.strip()
        if not text:
            continue
        centre = top + height / 2
        reading = next((i for i, s in enumerate(slots) if s.top <= centre < s.top + s.height),
                       None)
        if reading is None:
            continue
        slot = slots[reading]
        x0 = slot.box.x0 + int((left - GAP) / slot.scale)
        y0 = slot.box.y0 + int((top - slot.top) / slot.scale)
        x1 = slot.box.x0 + int(np.ceil((left + width - GAP) / slot.scale))
        y1 = slot.box.y0 + int(np.ceil((top + height - slot.top) / slot.scale))
        box = Box(max(x0, slot.box.x0), max(y0, slot.box.y0), min(x1, slot.box.x1),
                  min(y1, slot.box.y1))
        words.append(OcrWord(text, box, float(conf), slot.line, reading))
    return words


def read_lines(gray: np.ndarray, text: TextMap, lines: Sequence[Box],
               cache: dict[bytes, dict[str, list]] | None = None) -> list[OcrWord]:
    """Words read in the given candidate lines of one frame (all passes; may repeat words).

    ``cache`` maps mosaic bytes to Tesseract output, so frames of a cine loop that carry the
    same text are read once.
    """
    if not lines:
        return []
    mosaic, slots = build_mosaic(gray, text, lines)
    key = hashlib.sha256(mosaic.tobytes() + bytes(str(mosaic.size), "ascii")).digest()
    if cache is not None and key in cache:
        data = cache[key]
    else:
        data = run_tesseract(mosaic)
        if cache is not None:
            cache[key] = data
    return words_from_data(data, slots)
