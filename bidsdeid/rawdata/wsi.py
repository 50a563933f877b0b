"""Whole-slide images: detect the format, remove label and macro images and identifying metadata.

Cleaning follows the idea of Benjamin Gilbert's anonymize-slide: the slide is copied byte for byte
(streamed) to a temporary file beside the destination and the TIFF structure of the copy is
patched in place, so the pixel tiles that are kept stay byte-identical and nothing is re-encoded:

* label, macro and other associated images are unlinked from the directory chain, and their
  directory, tag values and strip bytes are zeroed (the barcode image does not stay in the file);
* every tag not needed to decode the image is removed from the directories that are kept, and its
  value bytes are zeroed; the Aperio ImageDescription is rewritten keeping only numeric keys
  (MPP, AppMag, ...), TIFF DateTime and the Aperio Date are shifted when a shift is given;
* the copy is verified (OpenSlide opens it and lists no label or macro, and no identifier is left
  in its bytes outside the kept pixel data) before it is renamed to the destination.

Supported: Aperio SVS, Hamamatsu NDPI (with its 64-bit pointer quirks) and generic tiled TIFF,
classic or BigTIFF. MRXS, BIF, Philips TIFF and other formats are refused with a `WsiError`.
DICOM WSI instances are only classified here; their headers go through the DICOM engine.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

import openslide
import pydicom
import tifffile
from pydicom.errors import InvalidDicomError

from bidsdeid.deid.text import identifier_tokens

WSI_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage
SUPPORTED_FORMATS = ("aperio-svs", "hamamatsu-ndpi", "generic-tiff")

# OpenSlide vendor name -> our format name (NDPI and VMS share the "hamamatsu" vendor).
_VENDOR_FORMATS = {
    "aperio": "aperio-svs",
    "generic-tiff": "generic-tiff",
    "philips": "philips-tiff",
    "ventana": "ventana-bif",
    "mirax": "mirax-mrxs",
}
_FILE_SUFFIX = {
    "aperio-svs": ".svs", "hamamatsu-ndpi": ".ndpi", "generic-tiff": ".tif", "philips-tiff": ".tiff",
    "ventana-bif": ".bif", "mirax-mrxs": ".mrxs", "dicom-wsi": ".dcm",
}
_MULTI_FILE_SUFFIXES = {".mrxs", ".vms", ".vmu", ".svslide"}
_CHUNK = 16 << 20
_MAX_DIRECTORIES = 100_000


@dataclass(frozen=True)
class SlideInfo:
    format: str
    path: Path
    associated: tuple[str, ...]
    levels: int


@dataclass
class WsiResult:
    format: str
    removed_images: tuple[str, ...]
    scrubbed_fields: int
    bytes: int


class WsiError(Exception):
    """A slide that cannot be cleaned; ``reason`` holds no identifier from the slide."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


# --- policy data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WsiPolicy:
    keep_tags: dict[str, frozenset[int]]  # format -> tags kept in image directories
    identifying_tags: frozenset[int]
    sub_directory_tags: frozenset[int]
    date_tag: int
    aperio_keep_keys: frozenset[str]
    aperio_date_key: str
    aperio_identifying_keys: frozenset[str]
    kept_associated: dict[str, frozenset[str]]
    refused: dict[str, str]


def _tags(table: dict[str, str]) -> frozenset[int]:
    return frozenset(int(k) for k in table if not k.startswith("_"))


@cache
def load_policy() -> WsiPolicy:
    """The tag and key tables of ``bidsdeid/data/wsi_policy.json``."""
    raw: dict[str, Any] = json.loads(
        resources.files("bidsdeid").joinpath("data/wsi_policy.json").read_text("utf-8"))
    structural = _tags(raw["structural_tags"])
    extra = {k: _tags(v) for k, v in raw["format_tags"].items() if not k.startswith("_")}
    return WsiPolicy(
        keep_tags={fmt: structural | extra.get(fmt, frozenset()) for fmt in SUPPORTED_FORMATS},
        identifying_tags=_tags(raw["identifying_tags"]),
        sub_directory_tags=_tags(raw["sub_directory_tags"]),
        date_tag=int(raw["date_tag"]),
        aperio_keep_keys=frozenset(raw["aperio"]["keep_numeric_keys"]),
        aperio_date_key=raw["aperio"]["date_key"],
        aperio_identifying_keys=frozenset(raw["aperio"]["identifying_keys"]),
        kept_associated={k: frozenset(v) for k, v in raw["kept_associated"].items()
                         if not k.startswith("_")},
        refused={k: v for k, v in raw["refused"].items() if not k.startswith("_")},
    )


# --- TIFF structure ------------------------------------------------------------------------

# type code -> (bytes per value, struct code; "" for text-like values)
_TYPES = {1: (1, "B"), 2: (1, ""), 3: (2, "H"), 4: (4, "I"), 5: (8, "II"), 6: (1, "b"),
          7: (1, ""), 8: (2, "h"), 9: (4, "i"), 10: (8, "ii"), 11: (4, "f"), 12: (8, "d"),
          13: (4, "I"), 16: (8, "Q"), 17: (8, "q"), 18: (8, "Q")}
_TEXT_TYPES = {1, 2, 6, 7}
_ASCII = 2
_NDPI_FORMAT_FLAG, _NDPI_SOURCE_LENS = 65420, 65421
_IMAGE_DESCRIPTION, _SUB_IFDS = 270, 330
_OFFSET_TAGS = ((324, 325), (273, 279))  # (offsets, byte counts): tiles, else strips


@dataclass(frozen=True)
class TiffEntry:
    tag: int
    type: int
    count: int
    record_at: int  # where the entry record starts in its directory
    data_at: int | None  # out-of-line value position; None when the value sits in the record
    size: int  # value size in bytes


@dataclass(frozen=True)
class TiffDirectory:
    index: int
    offset: int
    entries: tuple[TiffEntry, ...]
    # NDPI only: high 32 bits of each entry's value or offset, stored after the next pointer
    # (the layout tifffile reads); None when the directory has no such block.
    high_bits: tuple[int, ...] | None = None

    def entry(self, tag: int) -> TiffEntry | None:
        return next((e for e in self.entries if e.tag == tag), None)


@dataclass(frozen=True)
class TiffLayout:
    byteorder: str  # "<" or ">"
    bigtiff: bool
    ndpi: bool  # classic TIFF with 64-bit next-directory pointers and implied offset high bits
    file_size: int
    directories: tuple[TiffDirectory, ...]

    @property
    def count_size(self) -> int:
        return 8 if self.bigtiff else 2

    @property
    def record_size(self) -> int:
        return 20 if self.bigtiff else 12

    @property
    def field_size(self) -> int:
        return 8 if self.bigtiff else 4

    @property
    def next_size(self) -> int:
        return 8 if self.bigtiff or self.ndpi else 4

    @property
    def first_pointer_at(self) -> int:
        return 8 if self.bigtiff else 4

    def table_size(self, directory: TiffDirectory) -> int:
        n = len(directory.entries)
        extension = 4 * n if directory.high_bits is not None else 0
        return self.count_size + n * self.record_size + self.next_size + extension

    def uint(self, value: int, size: int) -> bytes:
        return struct.pack(self.byteorder + {2: "H", 4: "I", 8: "Q"}[size], value)


class _Broken(Exception):
    """Structure error while parsing; turned into a WsiError naming the file."""


def _unpack(byteorder: str, size: int, raw: bytes) -> int:
    return struct.unpack(byteorder + {2: "H", 4: "I", 8: "Q"}[size], raw)[0]


def fix_ndpi_offset(directory_offset: int, offset: int) -> int:
    """Re-add the high bits NDPI drops from 32-bit offsets: the largest value below the directory."""
    result = (directory_offset & ~0xFFFFFFFF) | (offset & 0xFFFFFFFF)
    if result >= directory_offset and result > 0xFFFFFFFF:
        result -= 1 << 32
    return result


def _read_at(fh: BinaryIO, at: int, size: int, file_size: int) -> bytes:
    if at < 0 or at + size > file_size:
        raise _Broken("truncated or broken TIFF: a structure points past the end of the file")
    fh.seek(at)
    return fh.read(size)


def _parse_directory(fh: BinaryIO, byteorder: str, bigtiff: bool, ndpi: bool, offset: int,
                     file_size: int, index: int, first: TiffDirectory | None,
                     first_raw: dict[int, int]) -> tuple[TiffDirectory, dict[int, int], int]:
    """One directory, its raw 32-bit value offsets (for NDPI sharing) and its next pointer."""
    count_size, record_size, field_size = (8, 20, 8) if bigtiff else (2, 12, 4)
    next_size = 8 if bigtiff or ndpi else 4
    n = _unpack(byteorder, count_size, _read_at(fh, offset, count_size, file_size))
    table = _read_at(fh, offset + count_size, n * record_size + next_size, file_size)
    entries, raw_offsets = [], {}
    for i in range(n):
        rec = table[i * record_size:(i + 1) * record_size]
        tag, typ = struct.unpack(byteorder + "HH", rec[:4])
        count = _unpack(byteorder, field_size, rec[4:4 + field_size])
        if typ not in _TYPES:
            raise _Broken(f"broken TIFF: unknown value type {typ} in directory")
        size = count * _TYPES[typ][0]
        data_at = None
        if size > field_size:
            raw = _unpack(byteorder, field_size, rec[4 + field_size:])
            raw_offsets[tag] = raw
            data_at = raw
            if ndpi:
                shared = first.entry(tag) if first is not None else None
                if shared is not None and first_raw.get(tag) == raw:
                    data_at = shared.data_at
                else:
                    data_at = fix_ndpi_offset(offset, raw)
            if data_at is None or data_at + size > file_size:
                raise _Broken("truncated or broken TIFF: a tag value lies past the end of the file")
        entries.append(TiffEntry(tag, typ, count, offset + count_size + i * record_size, data_at, size))
    next_offset = _unpack(byteorder, next_size, table[n * record_size:])
    high_bits = _ndpi_high_bits(fh, byteorder, offset + count_size + len(table), n, offset,
                                file_size) if ndpi else None
    return TiffDirectory(index, offset, tuple(entries), high_bits), raw_offsets, next_offset


def _ndpi_high_bits(fh: BinaryIO, byteorder: str, at: int, n: int, directory_offset: int,
                    file_size: int) -> tuple[int, ...] | None:
    """The NDPI high-bits block after a directory, if the bytes there can be one.

    Offsets lie below their directory, so a high word is 0 or the directory's own high bits
    (or one less); anything else means other data follows the table and there is no block.
    """
    if at + 4 * n > file_size:
        return None
    fh.seek(at)
    words = struct.unpack(f"{byteorder}{n}I", fh.read(4 * n))
    own = directory_offset >> 32
    return words if all(w in (0, own, own - 1) for w in words) else None


def read_layout(fh: BinaryIO) -> TiffLayout:
    """Parse the header and the whole directory chain; raises ``_Broken`` on any inconsistency."""
    fh.seek(0, os.SEEK_END)
    file_size = fh.tell()
    head = _read_at(fh, 0, 16 if file_size >= 16 else 8, file_size)
    if head[:2] not in (b"II", b"MM"):
        raise _Broken("not a TIFF file")
    byteorder = "<" if head[:2] == b"II" else ">"
    version = _unpack(byteorder, 2, head[2:4])
    if version == 43:
        bigtiff, first_offset = True, _unpack(byteorder, 8, head[8:16])
    elif version == 42:
        bigtiff, first_offset = False, _unpack(byteorder, 4, head[4:8])
    else:
        raise _Broken("not a TIFF file")
    ndpi = False
    if not bigtiff:
        probe, _, _ = _parse_directory(fh, byteorder, False, False, first_offset, file_size, 0,
                                       None, {})
        if probe.entry(_NDPI_FORMAT_FLAG) is not None:
            ndpi = True
            first_offset = _unpack(byteorder, 8, _read_at(fh, 4, 8, file_size))
    directories: list[TiffDirectory] = []
    seen: set[int] = set()
    offset, first, first_raw = first_offset, None, {}
    while offset:
        if offset in seen or len(directories) >= _MAX_DIRECTORIES:
            raise _Broken("broken TIFF: the directory chain loops or never ends")
        seen.add(offset)
        directory, raw, offset = _parse_directory(fh, byteorder, bigtiff, ndpi, offset, file_size,
                                                  len(directories), first, first_raw)
        if first is None:
            first, first_raw = directory, raw
        directories.append(directory)
    if not directories:
        raise _Broken("TIFF file without image directories")
    return TiffLayout(byteorder, bigtiff, ndpi, file_size, tuple(directories))


def read_value(fh: BinaryIO, layout: TiffLayout, entry: TiffEntry) -> bytes:
    """Raw value bytes of an entry, in file byte order."""
    if entry.data_at is None:
        at = entry.record_at + 4 + layout.field_size
        return _read_at(fh, at, entry.size, layout.file_size)
    return _read_at(fh, entry.data_at, entry.size, layout.file_size)


def decode_numbers(layout: TiffLayout, entry: TiffEntry, raw: bytes) -> tuple[float, ...]:
    code = _TYPES[entry.type][1] or "B"
    values = struct.unpack(f"{layout.byteorder}{entry.count * len(code)}{code[0]}", raw)
    if len(code) == 2:  # rationals
        return tuple(values[i] / values[i + 1] if values[i + 1] else 0.0
                     for i in range(0, len(values), 2))
    return values


def decode_text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


def pixel_ranges(fh: BinaryIO, layout: TiffLayout,
                 directory: TiffDirectory) -> list[tuple[int, int]]:
    """(offset, length) of every tile or strip of a directory, checked against the file size."""
    for offsets_tag, counts_tag in _OFFSET_TAGS:
        offsets_entry, counts_entry = directory.entry(offsets_tag), directory.entry(counts_tag)
        if offsets_entry is None or counts_entry is None:
            continue
        offsets = decode_numbers(layout, offsets_entry, read_value(fh, layout, offsets_entry))
        counts = decode_numbers(layout, counts_entry, read_value(fh, layout, counts_entry))
        if len(offsets) != len(counts):
            raise _Broken("broken TIFF: tile offsets and byte counts differ in number")
        ranges = []
        for offset, length in zip(offsets, counts):
            start = fix_ndpi_offset(directory.offset, int(offset)) if layout.ndpi else int(offset)
            if length and start + int(length) > layout.file_size:
                raise _Broken("truncated or broken TIFF: image data lies past the end of the file")
            ranges.append((start, int(length)))
        return ranges
    raise _Broken("broken TIFF: an image directory has no strip or tile offsets")


# --- decisions (pure) ----------------------------------------------------------------------


def associated_name(fmt: str, directory: TiffDirectory, tiled: bool, description: str | None,
                    lens: float | None) -> str | None:
    """Name of the associated image a directory holds, or None for a pyramid level."""
    if fmt == "hamamatsu-ndpi":
        if lens is not None and lens > 0:
            return None
        return _NDPI_ASSOCIATED.get(lens, f"image-{directory.index}")
    if tiled:
        return None
    if fmt == "aperio-svs":
        lines = re.split(r"\r\n|\n|\r", description or "")
        words = lines[1].split() if len(lines) > 1 else []
        if words and words[0].lower() in ("label", "macro"):
            return words[0].lower()
        if directory.index == 1:  # the Aperio spec puts the thumbnail second
            return "thumbnail"
    return f"image-{directory.index}"


_NDPI_ASSOCIATED = {-1.0: "macro", -2.0: "map"}  # NDPI source lens of non-level images
_APERIO_TITLE = re.compile(r"^Aperio[A-Za-z0-9 .\-]*$")
_APERIO_DIMENSIONS = re.compile(
    r"^\d+x\d+( \[\d+,\d+ \d+x\d+\])?( \(\d+x\d+\))?( -> \d+x\d+)?( -)?"
    r"( [A-Za-z0-9]+(/[A-Za-z0-9]+)?)?( Q=\d+)?( RGB)?\s*$")
_NUMERIC = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")


@dataclass
class TextDecision:
    text: str  # the new value
    removed: int  # fields taken out
    identifying: list[str] = field(default_factory=list)  # removed values to search for later


def shift_aperio_date(value: str, days: int) -> str | None:
    """Shift an Aperio ``MM/DD/YY`` date, keeping its shape; None when it does not parse."""
    try:
        day = dt.datetime.strptime(value.strip(), "%m/%d/%y").date()
    except ValueError:
        return None
    return (day + dt.timedelta(days=days)).strftime("%m/%d/%y")


def shift_tiff_datetime(value: str, days: int) -> str | None:
    """Shift a TIFF ``YYYY:MM:DD HH:MM:SS`` date-time; None when it does not parse."""
    try:
        moment = dt.datetime.strptime(value.strip(), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    return (moment + dt.timedelta(days=days)).strftime("%Y:%m:%d %H:%M:%S")


def clean_aperio_description(text: str, policy: WsiPolicy, tokens: frozenset[str],
                             date_shift_days: int | None) -> TextDecision:
    """Keep the Aperio title, the dimension line and numeric keys; shift or drop the date."""
    header, *fields = text.split("|")
    lines = re.split(r"\r\n|\n|\r", header)
    removed = 0
    title = lines[0].strip() if _APERIO_TITLE.match(lines[0].strip()) else "Aperio"
    removed += title != lines[0].strip()
    kept_header = [title]
    for line in lines[1:2]:
        if _APERIO_DIMENSIONS.match(line):
            kept_header.append(line)
        else:
            removed += 1
    removed += len(lines[2:])
    kept, identifying = ["\r\n".join(kept_header)], []
    lowered = [t.lower() for t in tokens]
    for item in fields:
        key, _, value = (part.strip() for part in item.partition("="))
        names_someone = any(t in item.lower() for t in lowered)
        if not names_someone and key in policy.aperio_keep_keys and _NUMERIC.match(value):
            kept.append(item)
            continue
        if not names_someone and key == policy.aperio_date_key and date_shift_days is not None:
            shifted = shift_aperio_date(value, date_shift_days)
            if shifted is not None:
                kept.append(f"{key} = {shifted}")
                continue
        removed += 1
        if key in policy.aperio_identifying_keys or names_someone:
            identifying.append(value)
    return TextDecision("|".join(kept), removed, identifying)


# --- the patch plan ------------------------------------------------------------------------


@dataclass
class Plan:
    """Byte edits for the copy, with what they achieve."""

    wipes: list[tuple[int, int]] = field(default_factory=list)  # ranges to zero
    writes: list[tuple[int, bytes]] = field(default_factory=list)  # applied after the wipes
    removed_images: list[str] = field(default_factory=list)
    scrubbed_fields: int = 0
    identifying_values: list[str] = field(default_factory=list)
    kept_directories: int = 0


def _entry_span(entry: TiffEntry) -> tuple[int, int] | None:
    return (entry.data_at, entry.size) if entry.data_at is not None else None


def _subtract(wanted: list[tuple[int, int]], keep: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Parts of the ``wanted`` ranges that overlap no ``keep`` range (shared values stay)."""
    keep_sorted: list[tuple[int, int]] = []
    for a, b in sorted((a, a + n) for a, n in keep if n > 0):
        if keep_sorted and a <= keep_sorted[-1][1]:
            keep_sorted[-1] = (keep_sorted[-1][0], max(b, keep_sorted[-1][1]))
        else:
            keep_sorted.append((a, b))
    starts = [a for a, _ in keep_sorted]
    out = []
    for start, length in wanted:
        end, pos = start + length, start
        i = max(0, bisect.bisect_right(starts, pos) - 1)
        while pos < end and i < len(keep_sorted):
            a, b = keep_sorted[i]
            if b <= pos:
                i += 1
                continue
            if a >= end:
                break
            if a > pos:
                out.append((pos, a - pos))
            pos = max(pos, b)
            i += 1
        if pos < end:
            out.append((pos, end - pos))
    return out


def _sub_directory_wipes(fh: BinaryIO, layout: TiffLayout, entry: TiffEntry,
                         pointer_tags: frozenset[int], depth: int = 0) -> list[tuple[int, int]]:
    """Table and values of an EXIF/GPS directory whose pointer tag is removed (and its own)."""
    if depth > 3:
        raise _Broken("broken TIFF: EXIF directories nest too deep")
    spans = []
    for offset in decode_numbers(layout, entry, read_value(fh, layout, entry)):
        if not offset:
            continue
        sub, _, _ = _parse_directory(fh, layout.byteorder, layout.bigtiff, False, int(offset),
                                     layout.file_size, 0, None, {})
        spans.append((sub.offset, layout.table_size(sub)))
        for item in sub.entries:
            if span := _entry_span(item):
                spans.append(span)
            if item.tag in pointer_tags:
                spans += _sub_directory_wipes(fh, layout, item, pointer_tags, depth + 1)
    return spans


def plan_cleaning(fh: BinaryIO, layout: TiffLayout, fmt: str, identifiers: Iterable[str],
                  date_shift_days: int | None, policy: WsiPolicy) -> Plan:
    """Decide every edit: which directories go, which tags stay, what replaces descriptions."""
    plan = Plan()
    tokens = identifier_tokens(identifiers)
    kept_names = policy.kept_associated.get(fmt, frozenset())
    kept_spans: list[tuple[int, int]] = [(0, 16 if layout.bigtiff else 12 if layout.ndpi else 8)]
    wipe_spans: list[tuple[int, int]] = []
    kept: list[tuple[TiffDirectory, list[tuple[bytes, int]]]] = []  # new (record, high word)s
    value_writes: dict[int, bytes] = {}
    levels = 0

    for directory in layout.directories:
        if directory.entry(_SUB_IFDS) is not None:
            raise _Broken("TIFF with SubIFDs (e.g. an OME-TIFF pyramid) is not supported")
        desc_entry = directory.entry(_IMAGE_DESCRIPTION)
        description = decode_text(read_value(fh, layout, desc_entry)) if desc_entry else None
        lens_entry = directory.entry(_NDPI_SOURCE_LENS)
        lens = (decode_numbers(layout, lens_entry, read_value(fh, layout, lens_entry))[0]
                if lens_entry else None)
        name = associated_name(fmt, directory, directory.entry(322) is not None, description, lens)
        table = (directory.offset, layout.table_size(directory))
        pixels = pixel_ranges(fh, layout, directory)
        if name is not None and name not in kept_names:
            plan.removed_images.append(name)
            wipe_spans += [table, *pixels]
            wipe_spans += [s for e in directory.entries if (s := _entry_span(e))]
            if description and fmt == "aperio-svs":
                plan.identifying_values += clean_aperio_description(
                    description, policy, tokens, date_shift_days).identifying
            continue
        levels += name is None
        kept_spans += [table, *pixels]
        records: list[tuple[bytes, int]] = []
        for number, entry in enumerate(directory.entries):
            high = directory.high_bits[number] if directory.high_bits else 0
            record = _read_at(fh, entry.record_at, layout.record_size, layout.file_size)
            action, text = _tag_action(fh, layout, fmt, entry, policy, tokens, date_shift_days, plan)
            if action == "keep":
                records.append((record, high))
                if span := _entry_span(entry):
                    kept_spans.append(span)
            elif action == "rewrite":
                new_record = _rewrite_text(layout, entry, record, text, value_writes,
                                           wipe_spans, kept_spans)
                inline = len(text) + 1 <= layout.field_size
                records.append((new_record, 0 if inline else high))
            else:
                plan.scrubbed_fields += 1
                if entry.tag in policy.identifying_tags and entry.type == _ASCII:
                    plan.identifying_values.append(decode_text(read_value(fh, layout, entry)))
                if entry.tag in policy.sub_directory_tags:
                    wipe_spans += _sub_directory_wipes(fh, layout, entry,
                                                      policy.sub_directory_tags)
                if span := _entry_span(entry):
                    wipe_spans.append(span)
        kept.append((directory, records))

    if not levels:
        raise _Broken("no pyramid level left after removing associated images")
    plan.kept_directories = len(kept)
    plan.wipes = _subtract(wipe_spans, kept_spans)
    plan.writes = sorted(value_writes.items()) + _relinked_tables(layout, kept)
    return plan


def _tag_action(fh: BinaryIO, layout: TiffLayout, fmt: str, entry: TiffEntry, policy: WsiPolicy,
                tokens: frozenset[str], date_shift_days: int | None,
                plan: Plan) -> tuple[str, str]:
    """("keep" | "drop" | "rewrite", new text) for one tag of a kept directory."""
    if entry.tag in policy.keep_tags[fmt]:
        return "keep", ""
    if entry.type == _ASCII and entry.tag == _IMAGE_DESCRIPTION and fmt == "aperio-svs":
        decision = clean_aperio_description(decode_text(read_value(fh, layout, entry)), policy,
                                            tokens, date_shift_days)
        plan.scrubbed_fields += decision.removed
        plan.identifying_values += decision.identifying
        return "rewrite", decision.text
    if entry.type == _ASCII and entry.tag == policy.date_tag and date_shift_days is not None:
        shifted = shift_tiff_datetime(decode_text(read_value(fh, layout, entry)), date_shift_days)
        if shifted is not None:
            return "rewrite", shifted
    return "drop", ""


def _rewrite_text(layout: TiffLayout, entry: TiffEntry, record: bytes, text: str,
                  value_writes: dict[int, bytes], wipe_spans: list[tuple[int, int]],
                  kept_spans: list[tuple[int, int]]) -> bytes:
    """Entry record for a shorter (or equal) ASCII value, writing the value where it was."""
    value = text.encode("latin-1", "replace") + b"\0"
    if len(value) > entry.size:
        raise _Broken("internal: a rewritten tag value would grow")
    head = record[:4] + layout.uint(len(value), layout.field_size)
    if len(value) <= layout.field_size:
        if span := _entry_span(entry):
            wipe_spans.append(span)
        return head + value.ljust(layout.field_size, b"\0")
    assert entry.data_at is not None
    value_writes[entry.data_at] = value.ljust(entry.size, b"\0")
    kept_spans.append((entry.data_at, entry.size))
    return head + record[4 + layout.field_size:]


def _relinked_tables(layout: TiffLayout, kept: list[tuple[TiffDirectory, list[tuple[bytes, int]]]]
                     ) -> list[tuple[int, bytes]]:
    """Rewritten directory tables (removed records zero-filled) and the relinked chain."""
    writes = [(layout.first_pointer_at, layout.uint(kept[0][0].offset, layout.next_size))]
    for i, (directory, records) in enumerate(kept):
        following = kept[i + 1][0].offset if i + 1 < len(kept) else 0
        table = (layout.uint(len(records), layout.count_size) + b"".join(r for r, _ in records)
                 + layout.uint(following, layout.next_size))
        if directory.high_bits is not None:
            table += b"".join(layout.uint(high, 4) for _, high in records)
        size = layout.table_size(directory)
        writes.append((directory.offset, table.ljust(size, b"\0")))
    return writes


# --- file I/O ------------------------------------------------------------------------------


def _apply(fh: BinaryIO, plan: Plan) -> None:
    zeros = bytes(min(_CHUNK, max((n for _, n in plan.wipes), default=0)))
    for start, length in plan.wipes:
        fh.seek(start)
        while length > 0:
            step = min(length, len(zeros))
            fh.write(zeros[:step])
            length -= step
    for at, data in plan.writes:
        fh.seek(at)
        fh.write(data)


def _scan_spans(fh: BinaryIO, layout: TiffLayout) -> list[tuple[int, int]]:
    """Everything but pixel data, directory tables and numeric arrays: where text could hide."""
    opaque = [(0, 16 if layout.bigtiff else 12 if layout.ndpi else 8)]
    for directory in layout.directories:
        opaque.append((directory.offset, layout.table_size(directory)))
        opaque += pixel_ranges(fh, layout, directory)
        opaque += [(e.data_at, e.size) for e in directory.entries
                   if e.data_at is not None and e.type not in _TEXT_TYPES]
    return _subtract([(0, layout.file_size)], opaque)


def _chunks(fh: BinaryIO, spans: list[tuple[int, int]], overlap: int) -> Iterator[bytes]:
    for start, length in spans:
        pos, end = start, start + length
        while pos < end:
            fh.seek(pos)
            data = fh.read(min(_CHUNK, end - pos) + overlap)[: end - pos]
            yield data
            pos += _CHUNK


def find_identifiers(fh: BinaryIO, layout: TiffLayout, tokens: frozenset[str]) -> list[str]:
    """Tokens (case-insensitive) found in the non-pixel bytes of a parsed TIFF."""
    needles = {t.lower().encode("utf-8", "replace"): t for t in tokens if t}
    if not needles:
        return []
    overlap = max(map(len, needles)) - 1
    found = set()
    for chunk in _chunks(fh, _scan_spans(fh, layout), overlap):
        lowered = chunk.lower()
        found.update(t for n, t in needles.items() if n in lowered)
    return sorted(found)


def _verify(tmp: Path, fmt: str, info: SlideInfo, plan: Plan, tokens: frozenset[str],
            policy: WsiPolicy) -> None:
    with tmp.open("rb") as fh:
        layout = read_layout(fh)
        if len(layout.directories) != plan.kept_directories:
            raise _Broken("verification: the cleaned directory chain is not as planned")
        if find_identifiers(fh, layout, tokens):
            raise _Broken("verification: identifying text is still in the cleaned slide")
    try:
        with openslide.OpenSlide(tmp) as slide:
            names = set(slide.associated_images)
            levels = slide.level_count
            last = levels - 1
            slide.read_region((0, 0), last, tuple(min(64, d) for d in slide.level_dimensions[last]))
            values = " ".join(map(str, slide.properties.values())).lower()
    except openslide.OpenSlideError as exc:
        raise _Broken(f"verification: OpenSlide cannot open the cleaned slide ({exc})") from exc
    if not names <= policy.kept_associated.get(fmt, frozenset()):
        raise _Broken("verification: the cleaned slide still lists a label or macro image")
    if levels != info.levels:
        raise _Broken("verification: the cleaned slide lost pyramid levels")
    if any(t.lower() in values for t in tokens):
        raise _Broken("verification: identifying text is still in the slide properties")


def _temp_beside(dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    return Path(name)


def clean_slide(src: Path, dst: Path, identifiers: Iterable[str],
                date_shift_days: int | None) -> WsiResult:
    """Write a cleaned copy of slide ``src`` to ``dst``; raise WsiError and write nothing on failure."""
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise WsiError(src, "refusing to clean a slide in place; give a different destination")
    policy = load_policy()
    fmt = _slide_format(src)
    if fmt == "dicom":
        dicom = _dicom_slide(src)
        if dicom is None:
            raise WsiError(src, "not a whole-slide image (a DICOM file of another kind)")
        raise WsiError(src, dicom_refusal(dicom) or policy.refused["dicom-wsi"])
    if fmt is None:
        raise WsiError(src, "not a whole-slide image")
    if fmt not in SUPPORTED_FORMATS:
        raise WsiError(src, policy.refused.get(fmt, policy.refused["other"]).format(format=fmt))
    info = detect_slide(src)  # opens it: a slide OpenSlide cannot read stops here
    if info is None:
        raise WsiError(src, "not a whole-slide image")
    identifiers = list(identifiers)
    tmp = _temp_beside(dst)
    try:
        with src.open("rb") as fh:
            layout = read_layout(fh)
            plan = plan_cleaning(fh, layout, info.format, identifiers, date_shift_days, policy)
        shutil.copyfile(src, tmp)
        with tmp.open("r+b") as fh:
            _apply(fh, plan)
            fh.flush()
            os.fsync(fh.fileno())
        tokens = identifier_tokens([*identifiers, *plan.identifying_values])
        _verify(tmp, info.format, info, plan, tokens, policy)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except (_Broken, struct.error, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise WsiError(src, f"{info.format}: {exc}".replace(str(src), src.name)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return WsiResult(info.format, tuple(plan.removed_images), plan.scrubbed_fields,
                     dst.stat().st_size)


# --- BIDS microscopy export (--wsi-bids) ---------------------------------------------------


def _stored_tiles(fh: BinaryIO, offsets: Iterable[int], counts: Iterable[int]) -> Iterator[bytes]:
    for offset, count in zip(offsets, counts):
        fh.seek(offset)
        yield fh.read(count)


def slide_to_ome_tiff(cleaned: Path, dst: Path) -> dict[str, Any]:
    """Repackage a cleaned tiled slide as a pyramidal OME-TIFF for ``micr/``; tiles unchanged.

    The stored tile bytes of every pyramid level are copied as they are (no re-encoding) into an
    OME-TIFF whose levels are SubIFDs. Returns the BIDS microscopy sidecar fields (pixel size,
    magnification). NDPI levels are single JPEG strips, not tiles, and are refused.
    """
    cleaned, dst = Path(cleaned), Path(dst)
    with openslide.OpenSlide(cleaned) as slide:
        props = slide.properties
        mpp = (props.get(openslide.PROPERTY_NAME_MPP_X), props.get(openslide.PROPERTY_NAME_MPP_Y))
        power = props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)
    sidecar: dict[str, Any] = {}
    metadata: dict[str, Any] = {"axes": "YXS"}
    if all(mpp):
        sidecar |= {"PixelSize": [float(mpp[0]), float(mpp[1])], "PixelSizeUnits": "um"}
        metadata |= {"PhysicalSizeX": float(mpp[0]), "PhysicalSizeXUnit": "\u00b5m",
                     "PhysicalSizeY": float(mpp[1]), "PhysicalSizeYUnit": "\u00b5m"}
    if power:
        sidecar["Magnification"] = float(power)
    tmp = _temp_beside(dst)
    try:
        with tifffile.TiffFile(cleaned) as tif, cleaned.open("rb") as fh:
            levels = [page for page in tif.pages if page.is_tiled]
            if not levels or any(p.planarconfig != 1 for p in levels):
                raise _Broken("only tiled, interleaved pyramids can be stored as OME-TIFF "
                              "without re-encoding")
            # BigTIFF only when needed: BIDS wants the .ome.btf extension for it
            bigtiff = dst.name.endswith(".ome.btf")
            with tifffile.TiffWriter(tmp, bigtiff=bigtiff, ome=True) as tw:
                for number, page in enumerate(levels):
                    layout = {"shape": page.shape, "dtype": page.dtype, "tile": page.tile,
                              "compression": page.compression, "photometric": page.photometric,
                              "subsampling": page.subsampling, "jpegtables": page.jpegtables}
                    tiles = _stored_tiles(fh, page.dataoffsets, page.databytecounts)
                    if number == 0:
                        tw.write(tiles, subifds=len(levels) - 1, metadata=metadata, **layout)
                    else:
                        tw.write(tiles, subfiletype=1, metadata=None, **layout)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except (_Broken, OSError, ValueError, tifffile.TiffFileError) as exc:
        tmp.unlink(missing_ok=True)
        raise WsiError(cleaned, f"OME-TIFF export: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return sidecar


# Classic TIFF offsets are 32-bit: larger slides are exported as BigTIFF (.ome.btf).
CLASSIC_TIFF_LIMIT = 3_500_000_000


def slide_micr_name(subject: str, session: str | None, index: int, size: int = 0) -> Path:
    """BIDS microscopy path of an exported slide, ``sub-01/micr/sub-01_sample-01_BF.ome.tif``
    (``.ome.btf`` when the slide's ``size`` in bytes needs BigTIFF)."""
    if index < 1:
        raise ValueError("slide index starts at 1")
    stem = "_".join([f"sub-{subject}", *([f"ses-{session}"] if session else []),
                     f"sample-{index:02d}", "BF"])
    folder = Path(f"sub-{subject}") / (f"ses-{session}" if session else "")
    extension = ".ome.btf" if size > CLASSIC_TIFF_LIMIT else ".ome.tif"
    return folder / "micr" / f"{stem}{extension}"


# --- detection -----------------------------------------------------------------------------


def _dicom_slide(path: Path) -> SlideInfo | None:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True,
                             specific_tags=["SOPClassUID", "ImageType"])
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise WsiError(path, f"unreadable DICOM file ({type(exc).__name__})") from exc
    if str(ds.get("SOPClassUID", "")) != WSI_SOP_CLASS_UID:
        return None
    image_type = {str(v).upper() for v in (ds.get("ImageType") or [])}
    associated = tuple(n.lower() for n in ("LABEL", "OVERVIEW", "THUMBNAIL") if n in image_type)
    return SlideInfo("dicom-wsi", path, associated, 0 if associated else 1)


def dicom_refusal(info: SlideInfo) -> str | None:
    """Why a DICOM WSI instance must not be exported at all (label/overview), else None."""
    if info.format == "dicom-wsi" and {"label", "overview"} & set(info.associated):
        kind = "label" if "label" in info.associated else "overview"
        return f"DICOM WSI {kind} image: shows the slide label or barcode and is not exported"
    return None


def _slide_format(path: Path) -> str | None:
    """Format name from the first bytes and OpenSlide's detector; None when not a slide."""
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise WsiError(path, f"cannot read file ({exc.strerror})") from exc
    if head[128:132] == b"DICM":
        return "dicom"
    is_tiff = head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
    if not is_tiff and path.suffix.lower() not in _MULTI_FILE_SUFFIXES:
        return None
    vendor = openslide.OpenSlide.detect_format(path)
    if vendor == "hamamatsu":
        return "hamamatsu-ndpi" if is_tiff else "hamamatsu-vms"
    return _VENDOR_FORMATS.get(vendor, vendor) if vendor else None


def detect_slide(path: Path) -> SlideInfo | None:
    """Classify a file as a whole-slide image; None when it is not one.

    Raises WsiError for a file in a slide format that OpenSlide cannot open.
    """
    path = Path(path)
    fmt = _slide_format(path)
    if fmt == "dicom":
        return _dicom_slide(path)
    if fmt is None:
        return None
    try:
        with openslide.OpenSlide(path) as slide:
            return SlideInfo(fmt, path, tuple(sorted(slide.associated_images)), slide.level_count)
    except openslide.OpenSlideError as exc:
        reason = str(exc).replace(str(path), path.name)
        raise WsiError(path, f"{fmt} slide that OpenSlide cannot open ({reason})") from exc


# --- naming --------------------------------------------------------------------------------


def slide_bids_name(subject: str, session: str | None, index: int, fmt: str) -> Path:
    """Path of a cleaned slide relative to OUTPUT_DIR, under ``sourcedata/``.

    ``sourcedata/sub-01/ses-01/micr/sub-01_ses-01_sample-01_slide.svs``: the BIDS microscopy
    layout with the sample entity numbering the subject's slides (1-based).
    """
    if index < 1:
        raise ValueError("slide index starts at 1")
    stem = "_".join([f"sub-{subject}", *([f"ses-{session}"] if session else []),
                     f"sample-{index:02d}", "slide"])
    folder = Path("sourcedata") / f"sub-{subject}"
    if session:
        folder /= f"ses-{session}"
    return folder / "micr" / (stem + _FILE_SUFFIX.get(fmt, ".tif"))
