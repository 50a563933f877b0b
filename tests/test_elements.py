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
from bidsdeid.elements import ElementError, file_spans, meta_spans, transfer_syntax_is_implicit


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
    assert transfer_syntax_is_implicit(data, meta_spans(data)) is implicit
    meta, elements = file_spans(data, implicit)
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
        file_spans(data, implicit=False)


def test_a_file_without_preamble_is_not_followed():
    data = _encoded(mr_image())
    with pytest.raises(ElementError):
        file_spans(data[128:], implicit=False)


def test_a_stray_delimiter_at_top_level_is_refused():
    data = _encoded(mr_image())
    delimiter = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    with pytest.raises(ElementError):
        file_spans(data + delimiter, implicit=False)
