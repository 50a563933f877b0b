"""Burned-in text redaction (bidsdeid.pixels) on generated ultrasound-like and screenshot-like
DICOM files, with real Tesseract."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import textimages
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, JPEGLSLossless, RLELossless
from textimages import TextImage

from bidsdeid.pixels import PixelError, RedactionResult, needs_pixel_check, redact_file

if shutil.which("tesseract") is None:
    pytest.skip("tesseract is not installed", allow_module_level=True)

# Ten frames: both kinds, three sizes, RGB and greyscale, every font, every seed different.
SIZES = ((480, 640), (384, 512), (600, 800))


def generated_set() -> list[TextImage]:
    images = []
    for i in range(10):
        make = textimages.ultrasound_image if i % 2 == 0 else textimages.screenshot_image
        rows, cols = SIZES[i % 3]
        images.append(make(500 + i, rows, cols, rgb=i % 4 != 3))
    return images


def redact_image(image: TextImage, folder: Path, mode: str = "all", frames: int = 1,
                 name: str = "frame") -> tuple[np.ndarray, RedactionResult]:
    src = textimages.to_dicom(image, folder / f"{name}.dcm", frames=frames)
    dst = folder / f"{name}_redacted.dcm"
    result = redact_file(src, dst, mode, image.subject.header_values)
    return pydicom.dcmread(dst).pixel_array, result


@pytest.fixture(scope="module")
def redacted_all(tmp_path_factory) -> list[tuple[TextImage, np.ndarray]]:
    folder = tmp_path_factory.mktemp("all")
    return [(image, redact_image(image, folder, name=f"f{i}")[0])
            for i, image in enumerate(generated_set())]


@pytest.fixture(scope="module")
def redacted_identifiers(tmp_path_factory) -> list[tuple[TextImage, np.ndarray]]:
    folder = tmp_path_factory.mktemp("identifiers")
    return [(image, redact_image(image, folder, "identifiers", name=f"f{i}")[0])
            for i, image in enumerate(generated_set()[:6])]


def recall(pairs: list[tuple[TextImage, np.ndarray]]) -> tuple[float, list[str]]:
    """Share of planted identifier words whose box is filled and that OCR no longer reads."""
    total, missed = 0, []
    for image, output in pairs:
        read = textimages.words_read_back(output, image.identifier_words)
        for word in image.identifier_words:
            total += 1
            if not textimages.word_is_filled(output, word) or word.text in read:
                missed.append(f"{image.kind}:{word.text}")
    return 1 - len(missed) / total, missed


def test_generated_set_is_varied():
    images = generated_set()
    identifiers = [w for image in images for w in image.identifier_words]
    heights = {w.box[3] - w.box[1] for w in identifiers}
    assert len(identifiers) >= 50, "too few planted identifiers for a 0.98 recall to mean much"
    assert {i.kind for i in images} == {"ultrasound", "screenshot"}
    assert {i.pixels.ndim for i in images} == {2, 3}, "RGB and greyscale frames"
    assert max(heights) >= 2 * min(heights), f"text sizes vary too little: {sorted(heights)}"


def test_all_mode_redacts_planted_identifiers(redacted_all):
    value, missed = recall(redacted_all)
    assert value >= 0.98, f"recall {value:.3f}; missed {missed}"


def test_all_mode_changes_few_pixels_outside_text(redacted_all):
    shares = [textimages.changed_share_outside_text(image.pixels, output, image)
              for image, output in redacted_all]
    assert np.mean(shares) <= 0.02, f"non-text pixels changed: {np.round(shares, 4)}"
    assert max(shares) <= 0.05, f"one frame lost too much: {np.round(shares, 4)}"


def test_identifiers_mode_redacts_identifiers(redacted_identifiers):
    value, missed = recall(redacted_identifiers)
    assert value >= 0.98, f"recall {value:.3f}; missed {missed}"


def test_identifiers_mode_leaves_other_text(redacted_identifiers):
    others = [(image, output, w) for image, output in redacted_identifiers
              for w in image.words if not w.identifier and len(w.text) > 1]
    kept = [w.text for image, output, w in others
            if np.array_equal(output[w.box[1]:w.box[3], w.box[0]:w.box[2]],
                              image.pixels[w.box[1]:w.box[3], w.box[0]:w.box[2]])]
    assert len(kept) >= 0.9 * len(others), (
        f"only {len(kept)} of {len(others)} non-identifier words kept: "
        f"lost {sorted({w.text for _, _, w in others} - set(kept))}")


def test_multiframe_rgb_redacts_every_frame(tmp_path):
    image = textimages.ultrasound_image(7, 360, 480, rgb=True)
    output, result = redact_image(image, tmp_path, frames=3)
    assert output.shape == (3, 360, 480, 3)
    assert result.frames == 3
    for index, frame in enumerate(output):
        unfilled = [w.text for w in image.identifier_words
                    if not textimages.word_is_filled(frame, w)]
        assert not unfilled, f"frame {index} still shows {unfilled}"


def test_ybr_full_colour_is_redacted(tmp_path):
    from pydicom.pixels import convert_color_space

    image = textimages.ultrasound_image(16, 300, 400, rgb=True)
    path = textimages.to_dicom(image, tmp_path / "ybr.dcm")
    ds = pydicom.dcmread(path)
    ds.PixelData = convert_color_space(ds.pixel_array, "RGB", "YBR_FULL").tobytes()
    ds.PhotometricInterpretation = "YBR_FULL"
    ds.save_as(path)
    redact_file(path, tmp_path / "out.dcm", "all", image.subject.header_values)
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.PhotometricInterpretation == "YBR_FULL"
    out.pixel_array_options(raw=True)  # the stored YBR values, filled as stored
    unfilled = [w.text for w in image.identifier_words
                if not textimages.word_is_filled(out.pixel_array, w)]
    assert not unfilled, f"still drawn: {unfilled}"


def test_sixteen_bit_greyscale_is_redacted(tmp_path):
    image = textimages.screenshot_image(17, 300, 400, rgb=False)
    path = textimages.to_dicom(image, tmp_path / "grey16.dcm")
    ds = pydicom.dcmread(path)
    ds.PixelData = (ds.pixel_array.astype(np.uint16) * 16).tobytes()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.save_as(path)
    redact_file(path, tmp_path / "out.dcm", "all", image.subject.header_values)
    output = pydicom.dcmread(tmp_path / "out.dcm").pixel_array
    assert output.dtype == np.uint16 and output.max() <= 4095
    unfilled = [w.text for w in image.identifier_words if not textimages.word_is_filled(output, w)]
    assert not unfilled, f"still drawn: {unfilled}"


def test_burned_in_annotation_is_no_after_redaction(tmp_path):
    image = textimages.screenshot_image(8, 300, 400)
    redact_image(image, tmp_path)
    assert pydicom.dcmread(tmp_path / "frame_redacted.dcm").BurnedInAnnotation == "NO"


def test_redacts_in_place(tmp_path):
    image = textimages.screenshot_image(9, 300, 400)
    path = textimages.to_dicom(image, tmp_path / "work.dcm")
    redact_file(path, path, "all", image.subject.header_values)
    output = pydicom.dcmread(path).pixel_array
    assert all(textimages.word_is_filled(output, w) for w in image.identifier_words)
    assert not list(tmp_path.glob(".*.tmp")), "temporary file left behind"


def _compressed_copy(src: Path, dst: Path, syntax: str) -> Path:
    ds = pydicom.dcmread(src)
    if syntax == RLELossless:
        ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    else:
        import imagecodecs

        frames = [imagecodecs.jpegls_encode(ds.pixel_array, level=0)]
        ds.PixelData = encapsulate(frames)
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(dst)
    return dst


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless], ids=["rle", "jpeg-ls"])
def test_lossless_syntax_round_trip_matches_uncompressed(tmp_path, syntax):
    image = textimages.ultrasound_image(11, 300, 400, rgb=True)
    native = textimages.to_dicom(image, tmp_path / "native.dcm")
    compressed = _compressed_copy(native, tmp_path / "compressed.dcm", syntax)
    redact_file(native, tmp_path / "native_out.dcm", "all", image.subject.header_values)
    redact_file(compressed, tmp_path / "compressed_out.dcm", "all", image.subject.header_values)
    native_out = pydicom.dcmread(tmp_path / "native_out.dcm")
    compressed_out = pydicom.dcmread(tmp_path / "compressed_out.dcm")
    assert compressed_out.file_meta.TransferSyntaxUID == syntax, "transfer syntax changed"
    assert np.array_equal(compressed_out.pixel_array, native_out.pixel_array), (
        "compressed and uncompressed inputs gave different pixels")
    changed = (native_out.pixel_array != image.pixels).any(axis=2)
    assert changed.any(), "nothing was redacted"
    assert changed.mean() < 0.2
    for word in image.identifier_words:
        assert textimages.word_is_filled(compressed_out.pixel_array, word), word.text


def test_changed_pixels_are_only_filled_boxes(tmp_path):
    image = textimages.screenshot_image(12, 300, 400)
    output, _ = redact_image(image, tmp_path)
    changed = (output != image.pixels).any(axis=2)
    from scipy import ndimage

    labels, _ = ndimage.label(changed)
    for index, (ys, xs) in enumerate(ndimage.find_objects(labels), start=1):
        region = output[ys, xs][labels[ys, xs] == index]
        assert (region == region[0]).all(), f"changed region {ys, xs} is not a solid fill"
    unchanged = ~changed
    assert np.array_equal(output[unchanged], image.pixels[unchanged])


def _jpeg_copy(src: Path, dst: Path) -> Path:
    import imagecodecs

    ds = pydicom.dcmread(src)
    ds.PixelData = encapsulate([imagecodecs.jpeg8_encode(ds.pixel_array, level=90)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.save_as(dst)
    return dst


def test_lossy_jpeg_with_text_is_refused_or_changed_blockwise(tmp_path):
    image = textimages.ultrasound_image(13, 320, 480, rgb=True)
    src = _jpeg_copy(textimages.to_dicom(image, tmp_path / "native.dcm"), tmp_path / "jpeg.dcm")
    dst = tmp_path / "out.dcm"
    try:
        result = redact_file(src, dst, "all", image.subject.header_values)
    except PixelError as error:
        assert "lossy" in str(error) and "jpeg.dcm" in str(error), str(error)
        assert not dst.exists(), "a refused file must not be written"
        return
    assert result.lossy_blocks_only
    before = _dct_luminance(src, tmp_path / "before.jpg")
    after = _dct_luminance(dst, tmp_path / "after.jpg")
    changed = (before != after).any(axis=(2, 3))
    assert changed.any(), "no JPEG block was changed"
    assert changed.mean() < 0.2, f"{changed.mean():.0%} of the blocks changed"
    assert not after[changed].reshape(-1, 64)[:, 1:].any(), "changed blocks are not flat"
    output = pydicom.dcmread(dst).pixel_array
    leaked = textimages.words_read_back(output, image.identifier_words)
    assert not leaked, f"still readable: {leaked}"


def _dct_luminance(path: Path, scratch: Path) -> np.ndarray:
    """Quantised luminance DCT coefficients of a one-frame JPEG DICOM, (rows, cols, 8, 8)."""
    import jpeglib
    from pydicom.encaps import generate_frames

    scratch.write_bytes(next(generate_frames(pydicom.dcmread(path).PixelData, number_of_frames=1)))
    return jpeglib.read_dct(str(scratch)).Y.copy()


def test_lossy_jpeg_without_text_is_kept_byte_for_byte(tmp_path):
    blank = TextImage("ultrasound", np.zeros((128, 160, 3), np.uint8), [],
                      textimages.make_subject(__import__("random").Random(1)))
    src = _jpeg_copy(textimages.to_dicom(blank, tmp_path / "native.dcm"), tmp_path / "jpeg.dcm")
    result = redact_file(src, tmp_path / "out.dcm", "all", [])
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert result.boxes == 0
    assert out.PixelData == pydicom.dcmread(src).PixelData
    assert out.BurnedInAnnotation == "NO"


def test_thumbnail_is_a_small_png_of_the_redacted_frame(tmp_path):
    image = textimages.ultrasound_image(14, 480, 640)
    output, result = redact_image(image, tmp_path)
    thumbnail = Image.open(io.BytesIO(result.thumbnail))
    assert thumbnail.format == "PNG" and max(thumbnail.size) <= 256
    expected = Image.fromarray(output)
    expected.thumbnail((256, 256))
    assert np.array_equal(np.asarray(thumbnail), np.asarray(expected)), (
        "thumbnail is not the redacted frame")


def test_file_without_pixels_raises_pixel_error(tmp_path):
    image = textimages.screenshot_image(15, 100, 120)
    path = textimages.to_dicom(image, tmp_path / "x.dcm")
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(PixelError, match="x.dcm"):
        redact_file(path, tmp_path / "out.dcm", "all", [])


@pytest.mark.parametrize("header, expected", [
    ({"Modality": "US"}, True),
    ({"Modality": "SC"}, True),
    ({"Modality": "OT"}, True),
    ({"Modality": "MR", "ImageType": ["ORIGINAL", "PRIMARY", "M"]}, False),
    ({"Modality": "MR", "BurnedInAnnotation": "YES"}, True),
    ({"Modality": "CT", "ImageType": "DERIVED\\SECONDARY"}, True),
    ({"Modality": "MR", "ImageType": ["DERIVED", "PRIMARY", "SCREENSHOT"]}, True),
    ({"Modality": "MR", "BurnedInAnnotation": "NO"}, False),
])
def test_needs_pixel_check(header, expected):
    assert needs_pixel_check(header) is expected


def test_needs_pixel_check_when_forced():
    assert needs_pixel_check({"Modality": "MR"}, force=True)
