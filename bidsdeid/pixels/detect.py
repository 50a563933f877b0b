"""Fast text-region detection on one frame, so that OCR only reads small candidate crops.

Burned-in text is thin, high-contrast strokes on a locally uniform background, laid out in
horizontal runs. A pixel is a stroke pixel when it differs from the local background (a coarse
median) and belongs to a feature thinner than a glyph stroke (a morphological top-hat), in either
polarity, on the frame's luminance. Long straight runs (UI borders) and solid blocks are dropped;
strokes of glyph size are grouped into lines. A line on a flat background is text beyond
reasonable doubt; a line on a textured background may be noise, and is left to OCR to confirm.
Text must differ from its background in luminance: hue-only text is not found.

For ultrasound the imaging sector is found (the largest lit region) and masked out, so speckle is
never taken for text (the "centre mask" of the seed script); devices draw their text in the black
margin around the sector, and text drawn over the sector itself is not looked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

STROKE_WINDOW = 15  # px; wider than the strokes of any overlay font up to ~48 px
BACKGROUND_BLOCK = 12  # px; background medians over 5 x 5 blocks span the largest glyphs
STROKE_CONTRAST = 40  # grey levels (of 255) between a stroke and its surroundings
FLAT_TOLERANCE = 12  # grey levels around the background's median ...
FLAT_SHARE = 0.8  # ... holding this share of background pixels: a panel, not speckle
SECTOR_LEVEL = 20  # grey level above the black around an ultrasound sector
SECTOR_MARGIN = 4  # px
RULE_LENGTH = 40  # px; straight strokes longer than this are lines, not glyphs
MAX_TEXT_HEIGHT_FRACTION = 0.12  # of the frame height


@dataclass(frozen=True)
class Box:
    """A pixel rectangle; x1 and y1 are exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    def padded(self, pad: int, rows: int, cols: int) -> Box:
        return Box(max(0, self.x0 - pad), max(0, self.y0 - pad), min(cols, self.x1 + pad),
                   min(rows, self.y1 + pad))

    def union(self, other: Box) -> Box:
        return Box(min(self.x0, other.x0), min(self.y0, other.y0), max(self.x1, other.x1),
                   max(self.y1, other.y1))

    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


@dataclass(frozen=True)
class Candidate:
    """A run of glyph-like strokes that may be a line of text."""

    box: Box
    flat_background: bool  # strokes on a uniform background: text, redactable without OCR


@dataclass
class TextMap:
    """Everything the detector learnt about one frame."""

    stroke: np.ndarray  # bool, pixels of glyph-sized strokes
    contrast: np.ndarray  # uint8, stroke contrast used for binarising OCR crops
    candidates: list[Candidate]


def display_gray(frame: np.ndarray) -> np.ndarray:
    """Luminance of a frame as uint8; wider data stretched from its 0.1 to 99.9 percentiles."""
    if frame.ndim == 3:
        luminance = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return luminance.astype(np.uint8) if frame.dtype == np.uint8 else _stretch(luminance)
    return frame if frame.dtype == np.uint8 else _stretch(frame.astype(np.float32))


def _stretch(pixels: np.ndarray) -> np.ndarray:
    low, high = np.percentile(pixels[::3, ::3], (0.1, 99.9))
    if high <= low:
        return np.zeros(pixels.shape, np.uint8)
    return np.clip((pixels - low) * (255.0 / (high - low)), 0, 255).astype(np.uint8)


def local_background(channel: np.ndarray, block: int = BACKGROUND_BLOCK) -> np.ndarray:
    """The colour text is drawn on: medians of blocks, then a median over 5 x 5 blocks.

    A median over a window several glyphs wide barely moves with the text as long as text covers
    under half the window; blocks make it cheap.
    """
    rows, cols = channel.shape
    padded = np.pad(channel, ((0, -rows % block), (0, -cols % block)), mode="edge")
    tiles = padded.reshape(padded.shape[0] // block, block, padded.shape[1] // block, block)
    medians = np.median(tiles.transpose(0, 2, 1, 3).reshape(*tiles.shape[::2], -1), axis=2)
    smooth = ndimage.median_filter(medians, size=5, mode="nearest")
    spread = np.repeat(np.repeat(smooth, block, axis=0), block, axis=1)
    return spread[:rows, :cols]


def stroke_contrast(gray: np.ndarray) -> np.ndarray:
    """How far each pixel stands out as part of a thin stroke.

    A stroke pixel differs from the local background (so the background between glyphs is not
    taken for strokes of the other polarity) and belongs to a feature thinner than
    ``STROKE_WINDOW`` (a top-hat; so the edges of large regions are not taken for strokes).
    """
    signed = gray.astype(np.int16)
    above = signed - local_background(gray).astype(np.int16)
    opened = ndimage.maximum_filter(ndimage.minimum_filter(gray, STROKE_WINDOW), STROKE_WINDOW)
    closed = ndimage.minimum_filter(ndimage.maximum_filter(gray, STROKE_WINDOW), STROKE_WINDOW)
    bright = np.minimum(above, signed - opened)
    dark = np.minimum(-above, closed.astype(np.int16) - signed)
    return np.maximum(bright, dark).clip(0, 255).astype(np.uint8)


def imaging_region(gray: np.ndarray, min_fraction: float = 0.05) -> np.ndarray:
    """The largest broad non-black region (an ultrasound sector), holes filled; empty if small.

    Opening with a square taller than any text line removes the text, which is strokes with
    black between them, and keeps the sector, which is lit throughout.
    """
    lit = (gray > SECTOR_LEVEL).view(np.uint8)
    size = max(25, gray.shape[0] // 12)
    broad = ndimage.maximum_filter(ndimage.minimum_filter(lit, size), size)
    labels, count = ndimage.label(broad)
    if count == 0:
        return np.zeros(gray.shape, bool)
    sizes = np.bincount(labels.ravel())[1:]
    largest = int(np.argmax(sizes)) + 1
    if sizes[largest - 1] < min_fraction * gray.size:
        return np.zeros(gray.shape, bool)
    core = labels == largest
    # Opening rounds the sector's corners off; regrow them from lit pixels close to the core.
    near = ndimage.maximum_filter(core.view(np.uint8), size).view(bool)
    return ndimage.binary_fill_holes(ndimage.binary_propagation(core, mask=near & lit.view(bool)))


def _without_rules(stroke: np.ndarray, length: int = RULE_LENGTH) -> np.ndarray:
    """Drop straight horizontal or vertical runs longer than any glyph stroke: the borders and
    separators of user interfaces, which text often touches."""
    as_bytes = stroke.view(np.uint8)
    rules = np.zeros_like(stroke)
    for axis in (0, 1):
        run = ndimage.minimum_filter1d(as_bytes, length, axis=axis)
        rules |= ndimage.maximum_filter1d(run, length, axis=axis).view(bool)
    return stroke & ~rules


def _glyph_boxes(stroke: np.ndarray, max_height: int) -> tuple[np.ndarray, list[Box]]:
    """Label strokes and keep the components shaped like glyphs (not rules, not large shapes)."""
    labels, _ = ndimage.label(stroke, structure=np.ones((3, 3), bool))
    areas = np.bincount(labels.ravel())
    keep = np.zeros(labels.max() + 1, bool)
    boxes: list[Box] = []
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None:
            continue
        ys, xs = found
        height, width = ys.stop - ys.start, xs.stop - xs.start
        if height > max_height or width > 4 * max_height:
            continue
        if height <= 3 and width > 15:  # a rule or underline, not a glyph
            continue
        if min(height, width) >= 9 and areas[index] >= 0.9 * height * width:
            continue  # a solid block (UI corner, marker), thicker than any stroke
        keep[index] = True
        boxes.append(Box(xs.start, ys.start, xs.stop, ys.stop))
    return keep[labels], boxes


def _merge_boxes(shape: tuple[int, int], boxes: list[Box], reach: float, core: float) -> list[Box]:
    """Union the boxes whose horizontally widened bands touch.

    Each box is painted widened by ``reach`` times its height on both sides and narrowed to the
    middle ``core`` of its height, so neighbours on one row join and stacked rows do not.
    """
    cols = shape[1]
    canvas = np.zeros(shape, bool)
    for box in boxes:
        grow = max(3, int(box.height * reach))
        trim = int(box.height * (1 - core) / 2)
        canvas[box.y0 + trim:box.y1 - trim, max(0, box.x0 - grow):min(cols, box.x1 + grow)] = True
    labels, _ = ndimage.label(canvas)
    merged: dict[int, Box] = {}
    for box in boxes:
        trim = int(box.height * (1 - core) / 2)
        label = int(labels[box.y0 + trim, box.x0])
        merged[label] = merged[label].union(box) if label in merged else box
    return list(merged.values())


def _group_lines(shape: tuple[int, int], glyphs: list[Box]) -> list[Box]:
    """Glyphs into lines: first neighbours closer than most of their own height, then lines and
    stray punctuation on the same row closer than half the line height."""
    words = _merge_boxes(shape, glyphs, reach=0.75, core=1.0)
    return _merge_boxes(shape, words, reach=0.6, core=0.5)


def _trim(line: Box, glyph_mask: np.ndarray) -> Box | None:
    """Shrink a line box to its glyph pixels (grouping reached past the ends)."""
    ys, xs = np.nonzero(glyph_mask[line.slices()])
    if ys.size == 0:
        return None
    return Box(line.x0 + int(xs.min()), line.y0 + int(ys.min()), line.x0 + int(xs.max()) + 1,
               line.y0 + int(ys.max()) + 1)


def _background_is_flat(gray: np.ndarray, glyph_mask: np.ndarray, box: Box) -> bool:
    """Most pixels around and between the glyphs share one grey level (give or take noise)."""
    rows, cols = gray.shape
    ring = box.padded(max(2, box.height // 3), rows, cols)
    near_glyph = ndimage.binary_dilation(glyph_mask[ring.slices()], iterations=2)
    background = gray[ring.slices()][~near_glyph].astype(np.int16)
    if background.size == 0:
        return False
    level = np.median(background)
    return float(np.mean(np.abs(background - level) <= FLAT_TOLERANCE)) >= FLAT_SHARE


def find_text(frame: np.ndarray, centre_mask: bool = False) -> TextMap:
    """Candidate text lines of one frame (rows, cols) or (rows, cols, 3 RGB)."""
    gray = display_gray(frame)
    contrast = stroke_contrast(gray)
    stroke = _without_rules(contrast >= STROKE_CONTRAST)
    if centre_mask:
        # A few pixels beyond the sector too: its jagged rim is not text either.
        stroke &= ~ndimage.binary_dilation(imaging_region(gray), iterations=SECTOR_MARGIN)
    max_height = max(24, int(gray.shape[0] * MAX_TEXT_HEIGHT_FRACTION))
    glyph_mask, glyphs = _glyph_boxes(stroke, max_height)
    candidates = []
    for line in _group_lines(gray.shape, glyphs):
        box = _trim(line, glyph_mask)
        if box is None or box.height < 4 or box.height > max_height:
            continue
        candidates.append(Candidate(box, _background_is_flat(gray, glyph_mask, box)))
    return TextMap(glyph_mask, contrast, candidates)
