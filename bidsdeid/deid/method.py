"""The record of how a dataset was de-identified (PS3.15 E.1.1, PS3.16 CID 7050).

Patient Identity Removed, De-identification Method, its Code Sequence (the profile and one code
per option used) and Longitudinal Temporal Information Modified.
"""

from __future__ import annotations

from functools import lru_cache

import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from bidsdeid import __version__
from bidsdeid.deid.options import DeidOptions

# CID 7050 De-identification Method codes: the profile and one per option.
_CID_7050 = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "clean_graphics": ("113103", "Clean Graphics Option"),
    "clean_structured_content": ("113104", "Clean Structured Content Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "full": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "modified": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
}
_TEMPORAL_STATE = {"modified": "MODIFIED", "full": "UNMODIFIED", "off": "REMOVED"}


def _code_item(value: str, meaning: str) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item[0x00080100] = DataElement(0x00080100, "SH", value)    # Code Value
    item[0x00080102] = DataElement(0x00080102, "SH", "DCM")    # Coding Scheme Designator
    item[0x00080104] = DataElement(0x00080104, "LO", meaning)  # Code Meaning
    return item


def _method_codes(options: DeidOptions) -> list[tuple[str, str]]:
    used = ["basic"]
    used += [name for name in ("retain_safe_private", "retain_uids", "retain_device_identity",
                               "retain_institution_identity", "retain_patient_characteristics",
                               "clean_descriptors", "clean_structured_content", "clean_graphics")
             if getattr(options, name)]
    if options.retain_long_dates != "off":
        used.append(options.retain_long_dates)
    return [_CID_7050[name] for name in used]


@lru_cache(maxsize=64)
def _method_elements(options: DeidOptions, implicit: bool, little: bool
                     ) -> tuple[RawDataElement, ...]:
    """PatientIdentityRemoved, DeidentificationMethod(CodeSequence) as PS3.15 E.1.1 asks.

    They are the same for every file scrubbed with ``options``, so they are encoded once, as
    read-form elements that pydicom writes as they are (and still decodes on access).
    """
    codes = Sequence(_code_item(v, m) for v, m in _method_codes(options))
    # One short value: the option list is in the code sequence (LO holds 64 characters).
    method = f"bidsdeid {__version__}: PS3.15 Basic Profile, options coded"[:64]
    encoded = []
    for tag, vr, value in ((0x00120062, "CS", "YES"),      # Patient Identity Removed
                           (0x00120063, "LO", method),     # De-identification Method
                           (0x00120064, "SQ", codes),      # De-identification Method Code Seq.
                           (0x00280303, "CS", _TEMPORAL_STATE[options.retain_long_dates])):
        buffer = DicomBytesIO()
        buffer.is_implicit_VR, buffer.is_little_endian = implicit, little
        write_data_element(buffer, DataElement(tag, vr, value))
        header = 8 if implicit or vr != "SQ" else 12
        data = buffer.getvalue()[header:]
        encoded.append(RawDataElement(BaseTag(tag), vr, len(data), data, 0, implicit, little))
    return tuple(encoded)


def record_method(ds: pydicom.Dataset, options: DeidOptions) -> None:
    """Add the de-identification record, encoded like the dataset's transfer syntax."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    implicit, little = ((syntax.is_implicit_VR, syntax.is_little_endian)
                        if syntax is not None and syntax.is_transfer_syntax
                        else ds.original_encoding)
    for element in _method_elements(options, bool(implicit), little is not False):
        ds[element.tag] = element
