"""Find burned-in text in every frame of a DICOM file and fill it, before conversion.

Modes:
- ``all`` (default for candidate series): every text line on a flat background is filled without
  reading it (the safe choice: unreadable text is still text), and lines on textured backgrounds
  are filled whole where OCR reads a word in them.
- ``identifiers``: every candidate line is read, and only words that match the subject's header
  values or identifier patterns are filled (``identifiers.IdentifierMatcher``).

Boxes are padded and filled with the most common colour just outside them, so a box on a panel
or black margin blends in and no non-text pixel of a flat background changes.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import apply_color_lut, convert_color_space
from scipy import ndimage

from bidsdeid.fsutil import atomic_write_bytes

from .codecs import (
    PixelError,
    PixelFrames,
    first_line,
    read_frames,
    redact_jpeg_blocks,
    write_frames,
)
from .detect import Box, TextMap, display_gray, find_text
from .identifiers import IdentifierMatcher
from .ocr import OcrError, OcrWord, read_lines

Mode = Literal["all", "identifiers"]

MIN_WORD_CONFIDENCE = 50.0  # Tesseract confidence for a word on a textured background to count
THUMBNAIL_SIZE = 256


@dataclass
class RedactionResult:
    frames: int
    boxes: int
    words_redacted: int  # OCR-read words filled ("all" fills flat-background lines unread)
    lossy_blocks_only: bool  # lossy data: only the JPEG blocks under boxes were changed
    thumbnail: bytes | None  # PNG of a redacted frame, downscaled, for the QC report


@dataclass(frozen=True, eq=False)
class FramePlan:
    boxes: tuple[Box, ...]
    words: int
    stroke: np.ndarray  # glyph pixels found, so fills take the colour around them


def _is_word(word: OcrWord) -> bool:
    return word.confidence >= MIN_WORD_CONFIDENCE and sum(c.isalnum() for c in word.text) >= 2


def _snap(word: Box, line: Box, glyph_labels: np.ndarray, glyph_slices: list) -> Box:
    """Grow an OCR word box to the whole glyphs it touches (OCR boxes can clip antialiased
    edges), never past its candidate line."""
    box = Box(max(word.x0, line.x0), max(word.y0, line.y0), min(word.x1, line.x1),
              min(word.y1, line.y1))
    if box.width <= 0 or box.height <= 0:
        return line
    for label in np.unique(glyph_labels[box.slices()]):
        if label:
            ys, xs = glyph_slices[label - 1]
            glyph = Box(xs.start, ys.start, xs.stop, ys.stop)
            if line.union(glyph) == line:
                box = box.union(glyph)
    return box


def _outermost(boxes: list[Box]) -> list[Box]:
    """The boxes not inside another (both OCR passes usually find the same word)."""
    unique = sorted(set(boxes), key=lambda b: -b.width * b.height)
    kept: list[Box] = []
    for box in unique:
        if not any(k.union(box) == k for k in kept):
            kept.append(box)
    return kept


def plan_frame(frame: np.ndarray, mode: Mode, matcher: IdentifierMatcher, centre_mask: bool,
               cache: dict | None = None) -> FramePlan:
    """Boxes to fill in one display frame (rows, cols) or (rows, cols, 3)."""
    text: TextMap = find_text(frame, centre_mask=centre_mask)
    gray = display_gray(frame)
    labels, _ = ndimage.label(text.stroke, structure=np.ones((3, 3), bool))
    glyph_slices = ndimage.find_objects(labels)
    rows, cols = gray.shape
    if mode == "all":
        boxes = [c.box for c in text.candidates if c.flat_background]
        lines = [c.box for c in text.candidates if not c.flat_background]
        chosen = [w for w in read_lines(gray, text, lines, cache) if _is_word(w)]
        # A textured line where OCR reads a word is text: all of it goes, read or not.
        boxes += [lines[i] for i in sorted({w.line for w in chosen})]
    else:
        lines = [c.box for c in text.candidates]
        words = read_lines(gray, text, lines, cache)
        boxes, chosen = [], []
        by_reading: dict[int, list[OcrWord]] = {}
        for word in words:
            by_reading.setdefault(word.reading, []).append(word)
        for line_words in by_reading.values():
            line_words.sort(key=lambda w: (w.box.y0 // 8, w.box.x0))
            spanning = matcher.line_matches([w.text for w in line_words])
            chosen += [w for i, w in enumerate(line_words)
                       if i in spanning or matcher.word_matches(w.text)]
    word_boxes = _outermost([_snap(w.box, lines[w.line].padded(2, rows, cols), labels,
                                   glyph_slices) for w in chosen])
    padded = [b.padded(max(2, (b.height + 4) // 5), rows, cols) for b in boxes + word_boxes]
    return FramePlan(tuple(_outermost(padded)), len(word_boxes), text.stroke)


def fill_colours(frame: np.ndarray, boxes: Iterable[Box], stroke: np.ndarray) -> list[np.ndarray]:
    """Each box's most common value away from strokes: the colour the text was drawn on."""
    away = ~ndimage.binary_dilation(stroke, iterations=2)
    colours = []
    for box in boxes:
        region = frame[box.slices()]
        values = region[away[box.slices()]] if away[box.slices()].any() else region
        values = values.reshape(-1, int(np.prod(frame.shape[2:], dtype=int)))
        unique, counts = np.unique(values, axis=0, return_counts=True)
        colours.append(unique[int(np.argmax(counts))].reshape(frame.shape[2:]))
    return colours


def fill_boxes(frame: np.ndarray, boxes: Iterable[Box], stroke: np.ndarray) -> None:
    """Fill each box (in place) with the colour the text in it was drawn on."""
    boxes = list(boxes)
    for box, colour in zip(boxes, fill_colours(frame, boxes, stroke)):
        frame[box.slices()] = colour


def display_frames(frames: PixelFrames, ds: pydicom.Dataset) -> np.ndarray:
    """Frames as the viewer shows them (RGB for colour), for the detector and the thumbnail."""
    array = frames.array
    if frames.lossy:
        return array  # decoders already return RGB for lossy colour JPEG
    if frames.photometric.startswith("YBR") and frames.photometric not in ("YBR_RCT", "YBR_ICT"):
        return convert_color_space(array, "YBR_FULL", "RGB")
    if frames.photometric == "PALETTE COLOR":
        return apply_color_lut(array, ds)
    return array


def thumbnail_png(frame: np.ndarray) -> bytes:
    image = Image.fromarray(display_gray(frame) if frame.ndim == 2 or frame.dtype != np.uint8
                            else frame)
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def redact_file(src: Path, dst: Path, mode: Mode, identifiers: Iterable[str]) -> RedactionResult:
    """Fill burned-in text in every frame of ``src`` and write ``dst`` atomically (may be ``src``).

    Raises ``PixelError`` when the file's text cannot be removed without degrading other pixels
    or cannot be read at all; the caller must then leave the series out of the output.
    """
    if mode not in ("all", "identifiers"):
        raise ValueError(f"unknown redaction mode {mode!r}")
    name = Path(src).name
    try:
        ds = pydicom.dcmread(src)
    except Exception as error:
        raise PixelError(f"{name}: not a readable DICOM file ({first_line(error)})") from error
    frames = read_frames(ds, name)
    shown = display_frames(frames, ds)
    matcher = IdentifierMatcher.from_values(identifiers)
    centre_mask = str(ds.get("Modality", "")).upper() == "US"
    cache: dict = {}
    try:
        plans = [plan_frame(frame, mode, matcher, centre_mask, cache) for frame in shown]
    except OcrError as error:
        raise PixelError(f"{name}: {error}") from error
    changed = any(plan.boxes for plan in plans)
    if changed and frames.lossy:
        fills = [list(zip(p.boxes, fill_colours(frame, p.boxes, p.stroke)))
                 for frame, p in zip(shown, plans)]
        redact_jpeg_blocks(ds, fills, name)
        shown = read_frames(ds, name).array
    elif changed:
        redacted = frames.array.copy()
        for frame, plan in zip(redacted, plans):
            fill_boxes(frame, plan.boxes, plan.stroke)
        write_frames(ds, frames, redacted, name)
        shown = display_frames(PixelFrames(redacted, frames.photometric,
                                           frames.transfer_syntax), ds)
    ds.BurnedInAnnotation = "NO"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    atomic_write_bytes(Path(dst), buffer.getvalue())
    busiest = max(range(len(plans)), key=lambda i: len(plans[i].boxes))
    return RedactionResult(
        frames=len(plans),
        boxes=sum(len(p.boxes) for p in plans),
        words_redacted=sum(p.words for p in plans),
        lossy_blocks_only=changed and frames.lossy,
        thumbnail=thumbnail_png(shown[busiest]),
    )
