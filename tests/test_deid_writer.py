"""The byte-copying writer writes exactly what pydicom writes, in the input's transfer syntax."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from bidsdeid.deid import writer
from bidsdeid.deid.apply import ScrubContext, scrub_dataset
from bidsdeid.deid.options import DeidOptions
from bidsdeid.deid.synthetic import mr_image

CTX = ScrubContext(key=b"k" * 32, date_shift_days=-41_000, participant_label="abc",
                   identifiers=frozenset())


def _pydicom_bytes(ds: pydicom.Dataset) -> bytes:
    ds.preamble = writer.PREAMBLE[:128]
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("syntax", [None, ImplicitVRLittleEndian, ExplicitVRBigEndian],
                         ids=["explicit-LE", "implicit-LE", "explicit-BE"])
def test_scrubbed_output_is_byte_identical_to_pydicoms(syntax):
    original = mr_image(instance=2)
    if syntax is not None:
        original.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, original, enforce_file_format=True)
    source = buffer.getvalue()
    ds = pydicom.dcmread(io.BytesIO(source))
    untouched = writer.snapshot(ds)
    scrub_dataset(ds, CTX, DeidOptions())
    writer.complete_file_meta(ds)
    assert writer.encode(ds, source, untouched) == _pydicom_bytes(ds)


def test_untouched_elements_are_copied_from_the_source():
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, mr_image(), enforce_file_format=True)
    source = bytearray(buffer.getvalue())
    ds = pydicom.dcmread(io.BytesIO(bytes(source)))
    untouched = writer.snapshot(ds)
    source[-1] ^= 0xFF  # the copy must come from ``source``, not from the parsed dataset
    assert writer.encode(ds, bytes(source), untouched)[-1] == source[-1]
