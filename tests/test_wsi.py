"""Whole-slide image cleaning: label/macro removal, metadata scrubbing, byte-identical tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pydicom
import pytest
import slides
import tifffile
from conftest import shared_path
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from bidsdeid.rawdata.wsi import (
    WSI_SOP_CLASS_UID,
    WsiError,
    clean_aperio_description,
    clean_slide,
    detect_slide,
    dicom_refusal,
    fix_ndpi_offset,
    load_policy,
    slide_bids_name,
    slide_micr_name,
    slide_to_ome_tiff,
)

CALLER_IDENTIFIERS = ["Doe^John", "MRN12345678"]


def _clean(src: Path, out: Path, shift: int | None = None):
    dst = out / f"clean{src.suffix}"
    return dst, clean_slide(src, dst, CALLER_IDENTIFIERS, shift)


def _stored(path: Path, page: tifffile.TiffPage) -> list[bytes]:
    """Stored (still compressed) bytes of every tile or strip of a page."""
    with path.open("rb") as fh:
        segments = []
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
            fh.seek(offset)
            segments.append(fh.read(count))
        return segments


def _raw_segments(path: Path) -> list[list[bytes]]:
    """Stored bytes of every tile or strip, page by page along the directory chain."""
    with tifffile.TiffFile(path) as tif:
        return [_stored(path, page) for page in tif.pages]


def _leftover(path: Path, planted: tuple[str, ...]) -> list[str]:
    data = path.read_bytes().lower()
    return [value for value in planted if value.lower().encode() in data]


def _regions(path: Path) -> list[np.ndarray]:
    with openslide.OpenSlide(path) as slide:
        return [np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]))
                for level in range(slide.level_count)]


@pytest.fixture(scope="module")
def svs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("svs")
    built = slides.build_svs(folder / "case.svs")
    dst, result = _clean(built.path, folder / "out")
    return built, dst, result


@pytest.fixture(scope="module")
def ndpi(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ndpi")
    built = slides.build_ndpi(folder / "case.ndpi")
    dst, result = _clean(built.path, folder / "out")
    return built, dst, result


@pytest.fixture(scope="module")
def generic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiff")
    built = slides.build_generic_tiff(folder / "case.tif")
    dst, result = _clean(built.path, folder / "out")
    return built, dst, result


# --- the test slides are what they claim to be ----------------------------------------------


@pytest.mark.parametrize("fixture", ["svs", "ndpi", "generic"])
def test_built_slides_carry_what_cleaning_must_remove(fixture, request):
    built, _, _ = request.getfixturevalue(fixture)
    assert _leftover(built.path, built.identifiers) == list(built.identifiers)
    expected = {"svs": ("label", "macro", "thumbnail"), "ndpi": ("macro",), "generic": ()}
    assert detect_slide(built.path).associated == expected[fixture]


# --- Aperio SVS -----------------------------------------------------------------------------


def test_svs_cleaned_opens_without_label_or_macro(svs):
    _, dst, result = svs
    with openslide.OpenSlide(dst) as slide:
        assert set(slide.associated_images) == {"thumbnail"}, "label and macro must be gone"
        assert openslide.OpenSlide.detect_format(dst) == "aperio"
    assert result.removed_images == ("label", "macro")
    assert result.bytes == dst.stat().st_size


def test_svs_kept_tiles_are_byte_identical(svs):
    built, dst, _ = svs
    before, after = _raw_segments(built.path), _raw_segments(dst)
    assert after == before[:3], "levels and thumbnail must keep their stored bytes unchanged"


def test_svs_regions_decode_identically(svs):
    built, dst, _ = svs
    for level, (a, b) in enumerate(zip(_regions(built.path), _regions(dst), strict=True)):
        assert np.array_equal(a, b), f"level {level} decodes differently after cleaning"


def test_svs_byte_scan_finds_no_planted_identifier(svs):
    built, dst, _ = svs
    assert _leftover(dst, built.identifiers) == []


def test_svs_keeps_scale_and_drops_scanner_fields(svs):
    _, dst, result = svs
    with openslide.OpenSlide(dst) as slide:
        props = dict(slide.properties)
    assert props["aperio.MPP"] == "0.499" and props["openslide.objective-power"] == "20"
    assert not {"aperio.Filename", "aperio.User", "aperio.ScanScope ID", "aperio.Date",
                "aperio.Time", "tiff.Artist", "tiff.HostComputer", "tiff.Software",
                "tiff.DateTime"} & props.keys()
    assert result.scrubbed_fields > 0


def test_svs_date_shift_keeps_shifted_dates(tmp_path):
    built = slides.build_svs(tmp_path / "case.svs")
    dst, _ = _clean(built.path, tmp_path / "out", shift=-10)
    with openslide.OpenSlide(dst) as slide:
        assert slide.properties["aperio.Date"] == "03/04/21"
        assert slide.properties["tiff.DateTime"] == "2021:03:04 09:15:00"


def test_bigtiff_svs_is_cleaned(tmp_path):
    built = slides.build_svs(tmp_path / "case.svs", bigtiff=True)
    dst, _ = _clean(built.path, tmp_path / "out")
    with openslide.OpenSlide(dst) as slide:
        assert set(slide.associated_images) == {"thumbnail"}
    assert _raw_segments(dst) == _raw_segments(built.path)[:3]
    assert _leftover(dst, built.identifiers) == []


def test_caller_identifier_in_description_is_removed(tmp_path):
    built = slides.build_svs(tmp_path / "case.svs")
    dst = tmp_path / "out" / "clean.svs"
    clean_slide(built.path, dst, ["2040"], None)
    # StripeWidth is normally kept; its value equals an identifier here, so it goes.
    assert b"stripewidth" not in dst.read_bytes().lower()


# --- Hamamatsu NDPI -------------------------------------------------------------------------


def test_ndpi_macro_is_removed(ndpi):
    _, dst, result = ndpi
    with openslide.OpenSlide(dst) as slide:
        assert dict(slide.associated_images) == {}
        assert openslide.OpenSlide.detect_format(dst) == "hamamatsu"
    assert result.removed_images == ("macro",)


def test_ndpi_strips_are_byte_identical(ndpi):
    built, dst, _ = ndpi
    assert _raw_segments(dst) == _raw_segments(built.path)[:3]


def test_ndpi_regions_decode_identically(ndpi):
    built, dst, _ = ndpi
    for level, (a, b) in enumerate(zip(_regions(built.path), _regions(dst), strict=True)):
        assert np.array_equal(a, b), f"level {level} decodes differently after cleaning"


def test_ndpi_byte_scan_finds_no_planted_identifier(ndpi):
    built, dst, _ = ndpi
    assert _leftover(dst, built.identifiers) == []


def test_ndpi_keeps_its_format_tags(ndpi):
    _, dst, _ = ndpi
    with openslide.OpenSlide(dst) as slide:
        assert slide.properties["hamamatsu.SourceLens"] == "20"
        assert "hamamatsu.Reference" not in slide.properties


# --- generic tiled TIFF ---------------------------------------------------------------------


def test_generic_tiff_loses_identifying_tags(generic):
    _, dst, result = generic
    with tifffile.TiffFile(dst) as tif:
        names = {tag.name for page in tif.pages for tag in page.tags}
    assert not names & {"DateTime", "Artist", "HostComputer", "Software", "ImageDescription"}
    assert result.removed_images == ("image-2",), "the stripped label page must go"


def test_generic_tiff_tiles_are_byte_identical(generic):
    built, dst, _ = generic
    assert _raw_segments(dst) == _raw_segments(built.path)[:2]


def test_generic_tiff_byte_scan_finds_no_planted_identifier(generic):
    built, dst, _ = generic
    assert _leftover(dst, built.identifiers) == []


def test_exif_directory_is_unlinked_and_zeroed(tmp_path):
    built = slides.build_tiff_with_exif(tmp_path / "photo.tif")
    assert _leftover(built.path, built.identifiers) == list(built.identifiers)
    dst, result = _clean(built.path, tmp_path / "out")
    with tifffile.TiffFile(dst) as tif:
        assert "ExifTag" not in tif.pages[0].tags
    assert _leftover(dst, built.identifiers) == [], "EXIF owner and capture date must be zeroed"
    assert result.scrubbed_fields >= 1


# --- failures write nothing -----------------------------------------------------------------


@pytest.mark.parametrize("keep_fraction", [0.97, 0.5])
def test_truncated_slide_raises_and_writes_nothing(tmp_path, keep_fraction):
    built = slides.build_svs(tmp_path / "case.svs")
    data = built.path.read_bytes()
    broken = tmp_path / "broken.svs"
    broken.write_bytes(data[: int(len(data) * keep_fraction)])
    out = tmp_path / "out"
    with pytest.raises(WsiError):
        clean_slide(broken, out / "clean.svs", [], None)
    assert not out.exists() or list(out.iterdir()) == [], "no output and no temp file may remain"


def test_tile_offset_past_end_raises(tmp_path):
    built = slides.build_generic_tiff(tmp_path / "case.tif")
    with tifffile.TiffFile(built.path) as tif:
        tag = tif.pages[0].tags["TileOffsets"]
        at = tag.valueoffset
    data = bytearray(built.path.read_bytes())
    data[at:at + 4] = (len(data) + 1000).to_bytes(4, "little")
    broken = tmp_path / "broken.tif"
    broken.write_bytes(bytes(data))
    with pytest.raises(WsiError, match="past the end"):
        clean_slide(broken, tmp_path / "out" / "clean.tif", [], None)
    assert list((tmp_path / "out").iterdir()) == []


def test_cleaning_in_place_is_refused(tmp_path):
    built = slides.build_svs(tmp_path / "case.svs")
    with pytest.raises(WsiError, match="in place"):
        clean_slide(built.path, built.path, [], None)


# --- refused formats ------------------------------------------------------------------------


def test_philips_tiff_is_refused_by_name(tmp_path):
    path = tmp_path / "slide.tiff"
    tifffile.imwrite(path, np.zeros((512, 512, 3), np.uint8), tile=(256, 256), photometric="rgb",
                     metadata=None, software="Philips DP v1.0",
                     description='<?xml version="1.0" encoding="UTF-8" ?>'
                                 '<DataObject ObjectType="DPUfsImport"></DataObject>')
    with pytest.raises(WsiError, match="Philips TIFF is not supported"):
        clean_slide(path, tmp_path / "out" / "clean.tiff", [], None)
    assert not (tmp_path / "out").exists()


def test_mrxs_is_refused_by_name(tmp_path):
    (tmp_path / "slide").mkdir()
    (tmp_path / "slide" / "Slidedat.ini").write_text("[GENERAL]\n")
    path = tmp_path / "slide.mrxs"
    path.write_bytes(b"")
    with pytest.raises(WsiError, match="MIRAX MRXS"):
        clean_slide(path, tmp_path / "out" / "clean.mrxs", [], None)


def test_non_slide_files_are_not_slides(tmp_path):
    plain = tmp_path / "photo.tif"
    tifffile.imwrite(plain, np.zeros((64, 64), np.uint8))  # stripped, not a slide
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert detect_slide(plain) is None
    assert detect_slide(text) is None


# --- DICOM WSI ------------------------------------------------------------------------------


def _dicom_wsi(path: Path, image_type: list[str]) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = WSI_SOP_CLASS_UID
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = WSI_SOP_CLASS_UID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.ImageType = image_type
    ds.PatientName = "Doe^John"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_real_dicom_wsi_is_detected():
    info = detect_slide(shared_path("wsi", "cptac_brca_tile.dcm"))
    assert info is not None and info.format == "dicom-wsi"
    assert info.associated == () and info.levels == 1


def test_dicom_label_instance_is_refused_with_reason(tmp_path):
    label = _dicom_wsi(tmp_path / "label.dcm", ["ORIGINAL", "PRIMARY", "LABEL", "NONE"])
    info = detect_slide(label)
    assert info is not None and info.associated == ("label",)
    assert "label" in (dicom_refusal(info) or "")
    with pytest.raises(WsiError, match="label"):
        clean_slide(label, tmp_path / "out" / "clean.dcm", [], None)


def test_dicom_overview_instance_is_refused(tmp_path):
    overview = _dicom_wsi(tmp_path / "overview.dcm", ["ORIGINAL", "PRIMARY", "OVERVIEW", "NONE"])
    assert "overview" in (dicom_refusal(detect_slide(overview)) or "")


def test_dicom_volume_goes_to_the_dicom_engine(tmp_path):
    volume = _dicom_wsi(tmp_path / "volume.dcm", ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"])
    assert dicom_refusal(detect_slide(volume)) is None
    with pytest.raises(WsiError, match="DICOM header engine"):
        clean_slide(volume, tmp_path / "out" / "clean.dcm", [], None)


# --- BIDS microscopy export -----------------------------------------------------------------


def test_ome_tiff_export_keeps_every_level_tile_for_tile(svs, tmp_path):
    built, cleaned, _ = svs
    ome = tmp_path / "micr" / "slide.ome.tif"
    sidecar = slide_to_ome_tiff(cleaned, ome)
    with tifffile.TiffFile(ome) as tif, tifffile.TiffFile(cleaned) as src:
        assert tif.is_ome
        ome_pages = [level.pages[0] for level in tif.series[0].levels]
        tiled = [page for page in src.pages if page.is_tiled]
        assert len(ome_pages) == len(tiled) == 2
        for ome_page, page in zip(ome_pages, tiled, strict=True):
            assert _stored(ome, ome_page) == _stored(cleaned, page), "tiles must not be re-encoded"
    assert sidecar == {"PixelSize": [0.499, 0.499], "PixelSizeUnits": "um", "Magnification": 20.0}
    assert _leftover(ome, built.identifiers) == []


def test_ome_tiff_export_refuses_ndpi_strips(ndpi, tmp_path):
    _, cleaned, _ = ndpi
    with pytest.raises(WsiError, match="OME-TIFF"):
        slide_to_ome_tiff(cleaned, tmp_path / "micr" / "slide.ome.tif")
    assert list((tmp_path / "micr").iterdir()) == []


def test_slide_micr_name_is_bids_microscopy():
    assert slide_micr_name("01", "02", 1) == Path(
        "sub-01/ses-02/micr/sub-01_ses-02_sample-01_BF.ome.tif")


# --- pure decisions -------------------------------------------------------------------------


def test_aperio_description_keeps_only_numeric_allowed_keys():
    decision = clean_aperio_description(slides.aperio_description("1024x768 (256x256) JPEG/RGB Q=30"),
                                        load_policy(), frozenset(), None)
    assert decision.text == ("Aperio Image Library v12.0.5\r\n1024x768 (256x256) JPEG/RGB Q=30"
                             "|AppMag = 20|MPP = 0.499|StripeWidth = 2040")
    assert {slides.PATIENT, slides.USER, slides.SCANNER_ID, slides.BARCODE} <= set(decision.identifying)


@pytest.mark.parametrize(("directory", "offset", "expected"), [
    (1_000, 50, 50),  # small file: nothing to add
    ((5 << 32) + 100, 50, (5 << 32) + 50),  # same 4 GiB segment as the directory
    ((5 << 32) + 100, 200, (4 << 32) + 200),  # would land after the directory: one segment down
])
def test_ndpi_offsets_get_the_high_bits_of_the_segment_below_their_directory(directory, offset,
                                                                           expected):
    assert fix_ndpi_offset(directory, offset) == expected


def test_slide_bids_name_lives_in_sourcedata():
    assert slide_bids_name("01", "02", 3, "aperio-svs") == Path(
        "sourcedata/sub-01/ses-02/micr/sub-01_ses-02_sample-03_slide.svs")
    assert slide_bids_name("01", None, 1, "hamamatsu-ndpi") == Path(
        "sourcedata/sub-01/micr/sub-01_sample-01_slide.ndpi")
