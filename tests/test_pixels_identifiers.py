"""Which OCR words count as identifiers (bidsdeid.pixels.identifiers), and that the detector and
the one-process OCR find and locate planted words."""

from __future__ import annotations

import shutil

import pytest
import textimages

from bidsdeid.pixels.detect import find_text
from bidsdeid.pixels.identifiers import IdentifierMatcher
from bidsdeid.pixels.ocr import read_lines

HEADER = ("GARCIA^MARIA", "MRN0045821", "19560312", "20190705", "A7788123")


@pytest.fixture(scope="module")
def matcher() -> IdentifierMatcher:
    return IdentifierMatcher.from_values(HEADER)


@pytest.mark.parametrize("word", ["GARCIA", "MARIA", "GARCIA^MARIA", "Garcia,", "MRN0045821",
                                  "A7788123"])
def test_header_values_match(matcher, word):
    assert matcher.word_matches(word), word


@pytest.mark.parametrize("word", ["GARC1A", "MAR1A", "MRNOO45821", "A77B8123", "GARCIA*MARIA",
                                  "Name:GARCIA"])
def test_ocr_slips_still_match(matcher, word):
    assert matcher.word_matches(word), word


@pytest.mark.parametrize("word", ["12/03/1956", "03.12.1956", "1956-03-12", "05-Jul-2019",
                                  "07/05/19"])
def test_header_dates_match_in_any_layout(matcher, word):
    assert matcher.word_matches(word), word


@pytest.mark.parametrize("word", ["31/12/2001", "987654321", "someone@example.org", "JOHNSON"])
def test_identifier_shapes_and_frequent_names_match_for_anyone(matcher, word):
    assert matcher.word_matches(word), word


@pytest.mark.parametrize("word", ["Gain", "52%", "MI", "0.9", "TIS", "C5-1", "16cm", "24Hz",
                                  "LT", "KIDNEY", "Slice", "12/40", "400/40", "11:08", "Acc",
                                  "DOB", "Name:", "ID:", "Series", "FLAIR", "Axial"])
def test_overlay_labels_do_not_match(matcher, word):
    assert not matcher.word_matches(word), word


def test_dates_split_over_words_match(matcher):
    assert matcher.line_matches(["DOB", "12", "Mar", "1956", "10:33"]) == {1, 2, 3}


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract is not installed")
def test_ocr_reads_planted_words_at_their_positions():
    image = textimages.screenshot_image(21, 384, 512)
    text = find_text(image.pixels)
    from bidsdeid.pixels.detect import display_gray

    words = read_lines(display_gray(image.pixels), text, [c.box for c in text.candidates])
    for planted in image.identifier_words:
        x0, y0, x1, y1 = planted.box
        overlapping = [w for w in words
                       if w.box.x0 < x1 and w.box.x1 > x0 and w.box.y0 < y1 and w.box.y1 > y0]
        assert overlapping, f"no OCR word where {planted.text!r} is drawn"


def test_ultrasound_sector_is_not_taken_for_text():
    image = textimages.ultrasound_image(22, 480, 640)
    text = find_text(image.pixels, centre_mask=True)
    mask = image.text_mask()
    stray = [c.box for c in text.candidates if not mask[c.box.slices()].any()]
    assert not stray, f"candidates away from any planted word: {stray}"
