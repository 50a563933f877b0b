"""Burned-in text redaction: speed and recall of bidsdeid.pixels against plain Tesseract.

For each frame size, a generated set (tests/textimages.py: ultrasound-like and screenshot-like
frames with names, IDs and dates in several fonts, sizes, colours and positions) is written as
DICOM and redacted by ``redact_file`` in both modes. The baseline is one Tesseract pass over the
whole frame (default page segmentation) whose word boxes are filled: every word ("all") or the
words that match the subject's identifiers with the same matcher ("identifiers").

Reported per size and method:
- wall s/frame and CPU s/frame (this process plus Tesseract child processes);
- recall: planted identifier words whose ink box is filled and which Tesseract no longer reads;
- non-text changed: share of pixels outside planted words that changed;
- kept: share of non-identifier words left untouched (identifiers mode only).

Run: .venv/bin/python benchmarks/bench_ocr.py [--count 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import pytesseract

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import textimages

from bidsdeid.pixels import redact_file
from bidsdeid.pixels.detect import Box
from bidsdeid.pixels.identifiers import IdentifierMatcher
from bidsdeid.pixels.redact import fill_boxes

SIZES = {"512x512": (512, 512), "1024x768": (768, 1024)}


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def baseline(pixels: np.ndarray, mode: str, matcher: IdentifierMatcher) -> np.ndarray:
    """One plain Tesseract pass over the frame; fill the chosen word boxes."""
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    data = pytesseract.image_to_data(pixels, output_type=pytesseract.Output.DICT)
    boxes = []
    for text, left, top, width, height in zip(data["text"], data["left"], data["top"],
                                              data["width"], data["height"]):
        if not text.strip():
            continue
        if mode == "identifiers" and not matcher.word_matches(text.strip()):
            continue
        boxes.append(Box(left, top, left + width, top + height).padded(2, *pixels.shape[:2]))
    output = pixels.copy()
    fill_boxes(output, boxes, np.zeros(pixels.shape[:2], bool))
    return output


def score(image: textimages.TextImage, output: np.ndarray) -> tuple[int, int, float, float]:
    """(identifier words redacted, identifier words, non-text changed share, share kept)."""
    ids = image.identifier_words
    read = textimages.words_read_back(output, ids)
    hits = sum(textimages.word_is_filled(output, w) and w.text not in read for w in ids)
    others = [w for w in image.words if not w.identifier]
    kept = [w for w in others
            if np.array_equal(output[w.box[1]:w.box[3], w.box[0]:w.box[2]],
                              image.pixels[w.box[1]:w.box[3], w.box[0]:w.box[2]])]
    share = textimages.changed_share_outside_text(image.pixels, output, image)
    return hits, len(ids), share, len(kept) / max(len(others), 1)


def run(count: int) -> None:
    print(f"{'size':9} {'method':22} {'wall s/fr':>9} {'cpu s/fr':>9} {'recall':>7} "
          f"{'nontext chg':>11} {'kept':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, (rows, cols) in SIZES.items():
            images = textimages.test_set(count, rows, cols, first_seed=1000)
            for mode in ("all", "identifiers"):
                for method in ("bidsdeid", "tesseract 1-pass"):
                    wall = cpu = 0.0
                    hits = total = 0
                    shares, kept = [], []
                    for i, image in enumerate(images):
                        matcher = IdentifierMatcher.from_values(image.subject.header_values)
                        w0, c0 = time.perf_counter(), cpu_seconds()
                        if method == "bidsdeid":
                            src = textimages.to_dicom(image, Path(tmp) / f"{label}_{i}.dcm")
                            w0, c0 = time.perf_counter(), cpu_seconds()
                            redact_file(src, src, mode, image.subject.header_values)
                            wall += time.perf_counter() - w0
                            cpu += cpu_seconds() - c0
                            output = pydicom.dcmread(src).pixel_array
                        else:
                            output = baseline(image.pixels, mode, matcher)
                            wall += time.perf_counter() - w0
                            cpu += cpu_seconds() - c0
                        h, n, share, k = score(image, output)
                        hits, total = hits + h, total + n
                        shares.append(share)
                        kept.append(k)
                    kept_text = f"{np.mean(kept):6.3f}" if mode == "identifiers" else "     -"
                    print(f"{label:9} {method + ' ' + mode:22} {wall / count:9.3f} "
                          f"{cpu / count:9.3f} {hits / total:7.3f} {np.mean(shares):11.4f} "
                          f"{kept_text}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="frames per size")
    run(parser.parse_args().count)


if __name__ == "__main__":
    main()
