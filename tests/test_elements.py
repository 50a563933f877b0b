"""Byte spans of elements: the same elements, in the same bytes, as pydicom reads."""

from __future__ import annotations

import io
import itertools
import struct

import pydicom
import pytest
from badinputs import bad_dicom_bytes
from pydicom.encaps import encapsulate
from pydicom.uid import ImplicitVRLittleEndian, JPEGLosslessSV1

from bidsdeid.deid.synthetic import mr_image
from bidsdeid.elements import ElementError, file_spans, layout


def _encoded(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _with_undefined_lengths(implicit: bool, encapsulated: bool) -> pydicom.Dataset:
    ds = mr_image(instance=2)
    ds["OtherPatientIDsSequence"].is_undefined_length = True
    ds["SourceImageSequence"].is_undefined_length = True
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    if encapsulated:
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.PixelData = encapsulate([b"\xff\xd8fragment-one\xff\xd9", b"two!"])
        ds["PixelData"].is_undefined_length = True
    return ds


@pytest.mark.parametrize(("implicit", "encapsulated"),
                         [(False, False), (True, False), (False, True)],
                         ids=["explicit", "implicit", "encapsulated"])
def test_spans_cover_each_top_level_element_exactly(implicit, encapsulated):
    data = _encoded(_with_undefined_lengths(implicit, encapsulated))
    assert data.count(b"\xfe\xff\xdd\xe0") >= 2, "the file must hold undefined lengths"
    found, elements = file_spans(data)
    assert found.implicit is implicit
    meta = found.meta
    reference = pydicom.dcmread(io.BytesIO(data))
    assert [s.tag for s in elements] == [int(e.tag) for e in reference]
    assert [s.tag for s in meta] == [int(e.tag) for e in reference.file_meta]
    assert elements[0].start == meta[-1].end and elements[-1].end == len(data)
    for before, after in itertools.pairwise(elements):
        assert before.end == after.start, f"gap or overlap after {before.tag:08X}"
    for span in elements:  # each span, read alone, is the same element
        alone = pydicom.filereader.read_dataset(io.BytesIO(data[span.start:span.end]),
                                                implicit, True)
        # (private values read alone in implicit VR lack their creator, hence their VR)
        if not span.tag >> 16 & 1:
            assert alone[span.tag].value == reference[span.tag].value, f"{span.tag:08X}"


@pytest.mark.parametrize("case", ["truncated_header", "truncated_pixels", "huge_element_length",
                                  "broken_sequence", "deep_sequence"])
def test_broken_encodings_raise_element_error(case):
    data, _ = bad_dicom_bytes()[case]
    with pytest.raises(ElementError):
        file_spans(data)


def _bare(ds: pydicom.Dataset, implicit: bool) -> bytes:
    """The dataset alone: no preamble, no file meta (as older scanners wrote)."""
    out = io.BytesIO()
    bare = ds.copy()
    del bare.file_meta
    bare.save_as(out, implicit_vr=implicit, little_endian=True)
    return out.getvalue()


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_a_bare_dataset_is_read_as_pydicom_reads_it(implicit):
    data = _bare(mr_image(), implicit)
    found, elements = file_spans(data)
    assert (found.meta, found.start, found.implicit) == ([], 0, implicit)
    reference = pydicom.dcmread(io.BytesIO(data), force=True)
    assert [s.tag for s in elements] == [int(e.tag) for e in reference]


def test_file_meta_without_the_preamble_is_found():
    data = _encoded(mr_image())
    found = layout(data[128 + 4:])
    assert found.meta and found.meta[0].tag == 0x00020000 and found.implicit is False


def test_other_leading_bytes_are_refused():
    data = _encoded(mr_image())
    with pytest.raises(ElementError):
        layout(data[128:])  # "DICM" first: neither file meta nor a dataset


def test_a_stray_delimiter_at_top_level_is_refused():
    data = _encoded(mr_image())
    delimiter = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    with pytest.raises(ElementError):
        file_spans(data + delimiter)
