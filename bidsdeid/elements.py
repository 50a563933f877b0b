"""Byte spans of the elements of an encoded DICOM file, found without decoding any value.

Little endian only (explicit or implicit VR), the encodings of nearly every file met in
practice. Sequences and items of undefined length are followed to their delimiters, so a span
always covers an element's whole encoding. Anything unexpected raises ``ElementError``; callers
then fall back to pydicom, which gives the precise reason.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 Table 7.1-1).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})
_TAG = struct.Struct("<HH")
_TAG_LENGTH = struct.Struct("<HHI")
_TAG_VR_SHORT = struct.Struct("<HH2sH")
_LONG_LENGTH = struct.Struct("<I")
_META_GROUP = 0x0002
_AFTER_META = 0x00030000
_TRANSFER_SYNTAX = 0x00020010
_IMPLICIT_LE = b"1.2.840.10008.1.2"
_BIG_ENDIAN = b"1.2.840.10008.1.2.2"
_DEFLATED = b"1.2.840.10008.1.2.1.99"
PREAMBLE_END = 132  # 128-byte preamble + "DICM"


class ElementError(ValueError):
    """The bytes are not a plain little-endian encoding this module follows."""


@dataclass(frozen=True, slots=True)
class Span:
    """One element: its tag and the [start, end) range of its encoding (header included)."""

    tag: int
    start: int
    end: int


def _element(data: bytes, pos: int, implicit: bool) -> tuple[int, int, int, bool]:
    """(tag, value start, value length, nested items are implicit VR) of the element at pos."""
    if implicit:
        group, elem, length = _TAG_LENGTH.unpack_from(data, pos)
        return group << 16 | elem, pos + 8, length, True
    group, elem, vr, length = _TAG_VR_SHORT.unpack_from(data, pos)
    if vr in _LONG_VRS:
        if length:  # the reserved field
            raise ElementError("non-zero reserved bytes")
        (length,) = _LONG_LENGTH.unpack_from(data, pos + 8)
        # An undefined-length UN holds implicit VR items (PS3.5 6.2.2).
        return group << 16 | elem, pos + 12, length, vr == b"UN"
    if not (vr.isalpha() and vr.isupper()):
        raise ElementError("not an explicit VR")
    return group << 16 | elem, pos + 8, length, False


def element_header(data: bytes, pos: int, implicit: bool) -> tuple[int, int, int]:
    """(tag, value start, value length) of the element starting at ``pos``."""
    try:
        return _element(data, pos, implicit)[:3]
    except struct.error:
        raise ElementError("element header cut short") from None


def _element_end(data: bytes, pos: int, implicit: bool) -> tuple[int, int]:
    """(tag, end offset) of the element starting at pos."""
    tag, value_start, length, items_implicit = _element(data, pos, implicit)
    if tag >> 16 == 0xFFFE:
        raise ElementError("delimiter outside a sequence")
    if length != UNDEFINED_LENGTH:
        end = value_start + length
        if end > len(data):
            raise ElementError("element runs past the end")
        return tag, end
    return tag, _items_end(data, value_start, items_implicit or implicit)


def _items_end(data: bytes, pos: int, implicit: bool) -> int:
    """End of an undefined-length sequence (or encapsulated pixel data) starting at pos."""
    while True:
        group, elem, length = _TAG_LENGTH.unpack_from(data, pos)
        tag = group << 16 | elem
        pos += 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            raise ElementError("expected an item")
        if length != UNDEFINED_LENGTH:
            pos += length
            if pos > len(data):
                raise ElementError("item runs past the end")
            continue
        while True:  # an item of undefined length: elements up to its delimiter
            group, elem = _TAG.unpack_from(data, pos)
            if group << 16 | elem == _ITEM_END:
                pos += 8
                break
            pos = _element_end(data, pos, implicit)[1]


def spans(data: bytes, start: int, implicit: bool, stop_tag: int | None = None) -> list[Span]:
    """Top-level elements from ``start``: to the end of ``data``, which the last must reach
    exactly, or up to the first element whose tag is ``stop_tag`` or above."""
    found = []
    pos, size = start, len(data)
    try:
        while pos < size:
            if stop_tag is not None:
                group, elem = _TAG.unpack_from(data, pos)
                if group << 16 | elem >= stop_tag:
                    break
            tag, end = _element_end(data, pos, implicit)
            found.append(Span(tag, pos, end))
            pos = end
    except (struct.error, RecursionError) as exc:
        raise ElementError(f"cannot follow the elements ({type(exc).__name__})") from None
    return found


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a file's dataset starts and how it is encoded."""

    meta: list[Span]   # file meta elements (empty for a bare dataset)
    start: int         # offset of the dataset's first element
    implicit: bool


def layout(data: bytes) -> Layout:
    """The layout of a little-endian file, read as pydicom does: with or without the preamble,
    with or without file meta (a bare dataset's VR is sniffed from its first element)."""
    if data[128:PREAMBLE_END] == b"DICM":
        meta_start = PREAMBLE_END
    elif data[:2] == b"\x02\x00":
        meta_start = 0  # file meta without the preamble
    else:
        if data[:2] != b"\x08\x00" or len(data) < 8:
            raise ElementError("neither file meta nor a group 0008 element first")
        explicit = 0x40 < data[4] < 0x5B and 0x40 < data[5] < 0x5B
        return Layout([], 0, not explicit)
    meta = spans(data, meta_start, implicit=False, stop_tag=_AFTER_META)
    if not meta or meta[0].tag >> 16 != _META_GROUP:
        raise ElementError("no file meta group")
    implicit = transfer_syntax_is_implicit(data, meta)
    if implicit is None:
        raise ElementError("not a little-endian transfer syntax")
    return Layout(meta, meta[-1].end, implicit)


def transfer_syntax_is_implicit(data: bytes, meta: list[Span]) -> bool | None:
    """True/False for implicit/explicit VR little endian encodings of the dataset (compressed
    pixel data included); None for big endian, deflated or a missing transfer syntax."""
    for span in meta:
        if span.tag == _TRANSFER_SYNTAX:
            uid = short_value(data, span).rstrip(b"\x00 ")
            if uid in (_BIG_ENDIAN, _DEFLATED):
                return None
            return uid == _IMPLICIT_LE
    return None


def short_value(data: bytes, span: Span) -> bytes:
    """The stored value of an element with an 8-byte header: any element in implicit VR, and
    the text and number VRs (AE, AS, CS, DA, DS, IS, LO, PN, SH, UI, ...) in explicit VR."""
    return data[span.start + 8:span.end]


def file_spans(data: bytes) -> tuple[Layout, list[Span]]:
    """The layout and the top-level dataset elements of a whole file."""
    found = layout(data)
    return found, spans(data, found.start, found.implicit)
