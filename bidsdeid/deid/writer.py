"""Write a de-identified dataset, copying the input's bytes for every element left untouched.

A header scrub changes a few dozen elements; the rest, pixel data included, are copied as byte
ranges of the input instead of being re-encoded one by one. Changed or added elements are encoded
by pydicom. The result is what ``pydicom.dcmwrite(..., enforce_file_format=True)`` writes, with
a zeroed preamble (a preamble may carry a TIFF header or other non-DICOM data).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import PersonName

PREAMBLE = b"\x00" * 128 + b"DICM"
_UNDEFINED_LENGTH = 0xFFFFFFFF
# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 Table 7.1-1).
_LONG_HEADER_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR",
                              "UT", "UV"})


# Text VRs whose values are written as given (numbers as text, DS/IS, are left to pydicom).
_PLAIN_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM",
                             "UC", "UI", "UR", "UT"})
_META_GROUP_LENGTH = 0x00020000
_META_VERSION = 0x00020001
_META_IMPLEMENTATION_UID = 0x00020012


def _plain_text(elem: DataElement, implicit: bool, little: bool) -> bytes | None:
    """Encoding of a text element with an ASCII value (what pydicom writes), else None.

    Scrubbed values are mostly short ASCII strings (dates, UIDs, labels, redacted text);
    encoding them directly avoids most of the writer's per-element cost. Anything else (other
    VRs, non-ASCII text that needs the character set, binary values) goes to pydicom.
    """
    vr, value = elem.VR, elem.value
    if vr not in _PLAIN_TEXT_VRS:
        return None
    if value is None:
        text = ""
    elif isinstance(value, (str, PersonName)):
        text = str(value)
    elif isinstance(value, (MultiValue, list)) and all(isinstance(v, (str, PersonName))
                                                       for v in value):
        text = "\\".join(str(v) for v in value)
    else:
        return None
    if not text.isascii():
        return None
    data = text.encode("ascii")
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    long_header = not implicit and vr in _LONG_HEADER_VRS
    if len(data) > (0xFFFFFFFE if implicit or long_header else 0xFFFE):
        return None
    order = "<" if little else ">"
    tag = struct.pack(order + "HH", elem.tag >> 16, elem.tag & 0xFFFF)
    if implicit:
        return tag + struct.pack(order + "I", len(data)) + data
    if long_header:
        return tag + vr.encode() + b"\x00\x00" + struct.pack(order + "I", len(data)) + data
    return tag + vr.encode() + struct.pack(order + "H", len(data)) + data


def _encode_element(elem: DataElement | RawDataElement, implicit: bool, little: bool,
                    encodings: object) -> bytes:
    if isinstance(elem, DataElement):
        plain = _plain_text(elem, implicit, little)
        if plain is not None:
            return plain
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = implicit, little
    write_data_element(buffer, elem, encodings)
    return buffer.getvalue()


def complete_file_meta(ds: pydicom.Dataset) -> None:
    """Add the file meta elements a Part 10 file needs and a scrub may lack."""
    meta = ds.file_meta
    if _META_VERSION not in meta:
        meta.FileMetaInformationVersion = b"\x00\x01"
    if "MediaStorageSOPClassUID" not in meta and "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if _META_IMPLEMENTATION_UID not in meta:
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID


def _file_meta_bytes(meta: pydicom.Dataset) -> bytes:
    """Group 0002, always explicit VR little endian, with its group length (PS3.10 7.1)."""
    return file_meta_group([_encode_element(meta.get_item(tag), False, True, None)
                            for tag in sorted(meta.keys()) if tag != _META_GROUP_LENGTH])


def file_meta_group(elements: list[bytes]) -> bytes:
    """Encoded file meta elements (sorted, group length excluded) behind their group length."""
    body = b"".join(elements)
    return struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body


def encode_meta_element(tag: int, vr: str, value: str) -> bytes:
    """One file meta element (explicit VR little endian), encoded as the writer encodes it."""
    return _encode_element(DataElement(tag, vr, value), False, True, None)


def snapshot(ds: pydicom.Dataset) -> dict[int, RawDataElement]:
    """The top-level elements still in their read form, to recognise untouched ones later."""
    return {int(tag): elem for tag in ds.keys()  # noqa: SIM118 - iterating would decode
            if isinstance(elem := ds.get_item(tag), RawDataElement)}


def _source_range(elem: RawDataElement, implicit: bool, little: bool,
                  source: bytes) -> tuple[int, int] | None:
    """(start, end) of the element's encoding in ``source``, or None if it cannot be copied."""
    if elem.length == _UNDEFINED_LENGTH or elem.value is None:
        return None
    header = 8 if implicit or elem.VR not in _LONG_HEADER_VRS else 12
    start, end = elem.value_tell - header, elem.value_tell + elem.length
    tag = struct.pack("<HH" if little else ">HH", elem.tag >> 16, elem.tag & 0xFFFF)
    if start < 0 or end > len(source) or source[start:start + 4] != tag:
        return None
    return start, end


def encode(ds: pydicom.Dataset, source: bytes, untouched: Mapping[int, RawDataElement]) -> bytes:
    """Encode ``ds`` as a DICOM file in its original transfer syntax.

    ``source`` is the file ``ds`` was read from and ``untouched`` its :func:`snapshot` taken
    before any change: elements that are still those very objects are copied from ``source``.
    """
    ds.preamble = PREAMBLE[:128]
    transfer_syntax = ds.file_meta.TransferSyntaxUID
    if transfer_syntax == DeflatedExplicitVRLittleEndian:  # offsets refer to inflated bytes
        out = DicomBytesIO()
        pydicom.dcmwrite(out, ds, enforce_file_format=True)
        return out.getvalue()
    implicit, little = transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian
    encodings = ds.get("SpecificCharacterSet", "iso8859")
    parts = [PREAMBLE, _file_meta_bytes(ds.file_meta)]
    run: list[int] | None = None          # byte range of the input being copied
    pending: list[bytes] = []             # elements encoded since the last copied range
    for tag in sorted(ds.keys()):
        elem = ds.get_item(tag)
        copied = (_source_range(elem, implicit, little, source)
                  if untouched.get(int(tag)) is elem else None)
        if copied is None:
            if run is not None:
                parts.append(source[run[0]:run[1]])
                run = None
            pending.append(_encode_element(elem, implicit, little, encodings))
            continue
        if pending:
            parts.extend(pending)
            pending = []
        if run is not None and run[1] == copied[0]:
            run[1] = copied[1]
        else:
            if run is not None:
                parts.append(source[run[0]:run[1]])
            run = list(copied)
    if run is not None:
        parts.append(source[run[0]:run[1]])
    parts.extend(pending)
    return b"".join(parts)
