"""Residual-identifier scan of a finished OUTPUT_DIR.

Every path and every file is searched for the identifier values the private dir recorded for
each subject, and the BIDS raw data's JSON, TSV and NIfTI text fields for identifier-shaped
strings (dates after 1925, e-mail, phone numbers, MRN-like digit runs). A hit names the file,
the field and which identifier matched ("identifier #3 of sub-abc"); the matched value is kept
in ``Leak.value`` for the console only and never in ``path``/``location``/``kind``.

Two kinds of search, because the files differ:

- *token search* on text (paths, JSON values, TSV cells, header fields, log lines): whole
  values and their parts of 3+ characters (numbers: 5+ digits; ordinary words such as the
  "Way" of an address only within the whole value), case-insensitive, not inside a longer
  word or number;
- *byte search* on the whole (gzip-decompressed, streamed) content of every file, including
  voxel and raw data: whole values of 5+ characters and name orders ("Doe^John", "JOHN DOE"),
  as ASCII/UTF-8 and UTF-16. Shorter parts would match random binary data by chance.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from bidsdeid.deid.text import identifier_tokens

_CHUNK = 4 << 20
_MIN_BYTE_VALUE = 5  # shortest value searched in binary content (see module docstring)
_MIN_DIGITS = 5  # shorter numbers ("+44", "1632") are ordinary sidecar and table values
_NAME_SEPARATORS = r"[\s^,._-]{0,3}"
# a number-like identifier must not sit inside a longer number, a decimal or a word
_NUMBER_BEFORE = r"(?<![\w.,])"
_NUMBER_AFTER = r"(?![\w]|[.,]\d)"
_TEXT_SUFFIXES = frozenset({".bval", ".bvec", ".csv", ".html", ".htm", ".log", ".md", ".txt",
                            ".svg", ".xml", ".rst", ".cfg", ".ini", ".toml", ".yaml", ".yml"})
_TEXT_NAMES = frozenset({"README", "CHANGES", "LICENSE", ".bidsignore"})
_TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".scn", ".bif", ".qptiff")
_DATA_URI = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=\s]+")


@dataclass(frozen=True)
class Leak:
    """One residual identifier. ``value`` is the matched text: console only, never written."""

    path: str  # relative to OUTPUT_DIR, identifiers in it replaced by their kind
    location: str  # field, header entry, line or byte offset
    kind: str  # "identifier #3 of sub-abc", "date after 1925", ...
    value: str


# --- identifier patterns (pure) ------------------------------------------------------------------


def _is_number_like(text: str) -> bool:
    """True for values without letters (IDs, dates, phone numbers, UIDs): digit boundaries."""
    return not any(c.isalpha() for c in text)


def _normalise(text: str) -> str:
    """Case- and separator-free form, so that every spelling of a name maps to one kind."""
    return re.sub(r"[\s^,._-]+", "", text).casefold()


def _name_parts(value: str) -> list[str]:
    """Family, given, middle... of a DICOM PN or free-text name; [] if it is not name-like."""
    parts = [p for p in re.split(r"[\^,\s]+", value.strip()) if p]
    if len(parts) < 2 or not all(re.fullmatch(r"[^\W\d_][\w'-]*", p) for p in parts):
        return []
    return parts


def _name_orders(parts: list[str]) -> list[list[str]]:
    """Family-first as stored, given-first as written, and given-family without middle names."""
    if not parts:
        return []
    orders = [parts, parts[1:] + parts[:1]]
    if len(parts) > 2:
        orders += [parts[:2], [parts[1], parts[0]]]
    return orders


def _date_variants(value: str) -> list[str]:
    """A DICOM DA value also written as ISO, European and US dates."""
    m = re.fullmatch(r"((?:19|20)\d{2})(\d{2})(\d{2})", value.strip())
    if not m:
        return []
    y, mo, d = m.groups()
    return [f"{y}-{mo}-{d}", f"{d}.{mo}.{y}", f"{mo}/{d}/{y}"]


@dataclass(frozen=True, eq=False)
class IdentifierIndex:
    """Compiled searches for every subject's identifiers and the kind each match names."""

    kinds: dict[str, str]  # normalised matched text -> "identifier #i of sub-x"
    text_pattern: re.Pattern[str] | None
    bytes_search: ByteSearch

    @classmethod
    def build(cls, identifiers: Mapping[str, set[str]]) -> IdentifierIndex:
        common_words = ScanPolicy.load().common_words
        kinds: dict[str, str] = {}
        text_alternatives: dict[str, None] = {}  # ordered set of regex sources
        byte_alternatives: dict[str, str] = {}  # regex source -> text every match starts with
        for label in sorted(identifiers):
            for number, value in enumerate(sorted(identifiers[label]), start=1):
                value = str(value).strip()
                kind = f"identifier #{number} of sub-{label}"
                wholes = [value, *_date_variants(value)]
                for token in identifier_tokens(wholes):
                    if _is_number_like(token) and sum(c.isdigit() for c in token) < _MIN_DIGITS:
                        continue  # "+44", "1632": ordinary numbers in sidecars and tables
                    if token not in wholes and token.casefold() in common_words:
                        continue  # "Way" of "12 Orrin Way": searched within the whole only
                    kinds.setdefault(_normalise(token), kind)
                    text_alternatives[re.escape(token)] = None
                for whole in wholes:
                    if len(whole) >= _MIN_BYTE_VALUE and not (
                        _is_number_like(whole) and sum(c.isdigit() for c in whole) < _MIN_DIGITS
                    ):
                        byte_alternatives[re.escape(whole)] = whole
                for order in _name_orders(_name_parts(value)):
                    kinds.setdefault(_normalise("".join(order)), kind)
                    source = _NAME_SEPARATORS.join(re.escape(p) for p in order)
                    text_alternatives[source] = None
                    if sum(map(len, order)) < _MIN_BYTE_VALUE:
                        continue
                    if len(order[0]) >= 3:
                        byte_alternatives[source] = order[0]
                    else:  # too short to anchor on: spell out the usual separators instead
                        for separator in ("^", " ", ", ", ",", "_", "-", ".", ""):
                            literal = separator.join(order)
                            byte_alternatives[re.escape(literal)] = literal
        text_pattern = None
        if text_alternatives:
            # Longest first, so "Doe^John" is named before "Doe". Words must not continue into
            # letters or digits; numbers must not be part of a longer number or a decimal.
            words = [a for a in text_alternatives if not _is_number_like(a)]
            numbers = [a for a in text_alternatives if _is_number_like(a)]
            groups = []
            if words:
                body = "|".join(sorted(words, key=len, reverse=True))
                groups.append(rf"(?<![^\W_])(?:{body})(?![^\W_])")
            if numbers:
                body = "|".join(sorted(numbers, key=len, reverse=True))
                groups.append(rf"{_NUMBER_BEFORE}(?:{body}){_NUMBER_AFTER}")
            text_pattern = re.compile("|".join(groups), re.IGNORECASE)
        return cls(kinds, text_pattern, ByteSearch.build(byte_alternatives))

    def find_text(self, text: str) -> Iterator[tuple[str, str]]:
        """(kind, matched text) for every identifier in ``text``."""
        if self.text_pattern is None:
            return
        for m in self.text_pattern.finditer(text):
            yield self.kind_of(m.group()), m.group()

    def kind_of(self, matched: str) -> str:
        return self.kinds.get(_normalise(matched), "identifier")

    def mask(self, text: str) -> str:
        """``text`` with each identifier replaced by its kind in angle brackets (safe to write; not
        rich console markup, which square brackets would be)."""
        if self.text_pattern is None:
            return text
        return self.text_pattern.sub(lambda m: f"<{self.kind_of(m.group())}>", text)


_ENCODINGS = ("utf-8", "utf-16-le", "utf-16-be")


def _trigrams(data: np.ndarray) -> np.ndarray:
    """The 3-byte gram starting at each position of a uint8 array, as one integer < 2**24."""
    grams = data[:-2].astype(np.uint32)
    grams |= data[1:-1].astype(np.uint32) << 8
    grams |= data[2:].astype(np.uint32) << 16
    return grams


_GOLDEN = np.uint32(2654435761)  # Knuth's multiplicative hash, to 16 bits below


@dataclass(frozen=True, eq=False)
class ByteSearch:
    """Whole identifier values in raw bytes (ASCII/UTF-8 and UTF-16), fast enough for voxels.

    One big regular expression over every byte runs at about 1 MB/s, so each value is found by
    its first 3-byte gram instead (numpy over the whole buffer; a 64 KiB hash table keeps it in
    cache), and only there is that value's own small pattern tried.
    """

    patterns: dict[int, tuple[tuple[int, str, re.Pattern[bytes]], ...]]  # gram -> (rank, enc, pat)
    grams: np.ndarray  # sorted uint32 keys of ``patterns``
    hashed: np.ndarray  # bool[65536]
    reach: int  # no match is longer than this many bytes

    @classmethod
    def build(cls, alternatives: Mapping[str, str]) -> ByteSearch:
        """``alternatives``: regex source -> the literal text each of its matches starts with."""
        patterns: dict[int, list[tuple[int, str, re.Pattern[bytes]]]] = {}
        reach = 0
        for source, start in alternatives.items():
            reach = max(reach, 4 * len(source) + 8)  # UTF-16 doubles; separators take <= 6 bytes
            for rank, encoding in enumerate(_ENCODINGS):
                if encoding == "utf-8":
                    before, after = (
                        (_NUMBER_BEFORE, _NUMBER_AFTER)
                        if _is_number_like(start)
                        else (r"(?<![A-Za-z0-9])", r"(?![A-Za-z0-9])")
                    )
                    pattern = re.compile(f"{before}(?:{source}){after}".encode(), re.IGNORECASE)
                else:
                    pattern = re.compile(_utf16_source(source, encoding))
                # bytes.lower() folds ASCII only: other letters as written and in either case
                for variant in {start, start.lower(), start.upper()}:
                    encoded = variant.encode(encoding).lower()
                    if len(encoded) >= 3:
                        gram = int(_trigrams(np.frombuffer(encoded[:3], dtype=np.uint8))[0])
                        patterns.setdefault(gram, []).append((rank, encoding, pattern))
        grams = np.array(sorted(patterns), dtype=np.uint32)
        hashed = np.zeros(1 << 16, dtype=bool)
        hashed[(grams * _GOLDEN) >> np.uint32(16)] = True
        return cls({g: tuple(dict.fromkeys(v)) for g, v in patterns.items()}, grams, hashed, reach)

    def find(self, buffer: bytes) -> list[tuple[int, str, str]]:
        """(offset, encoding, matched text), overlapping matches reported once (UTF-8 first)."""
        if len(buffer) < 3 or not self.grams.size:
            return []
        grams = _trigrams(np.frombuffer(buffer.lower(), dtype=np.uint8))
        candidates = np.flatnonzero(self.hashed[(grams * _GOLDEN) >> np.uint32(16)])
        candidates = candidates[np.isin(grams[candidates], self.grams)]
        matches = set()
        for position, gram in zip(candidates.tolist(), grams[candidates].tolist(), strict=True):
            for rank, encoding, pattern in self.patterns[gram]:
                m = pattern.match(buffer, position, position + self.reach)  # gram = its start
                if m:
                    matches.add((rank, m.start(), m.end(), encoding))
        kept: list[tuple[int, int, str]] = []
        for _, start, end, encoding in sorted(matches):
            if not any(start < e and s < end for s, e, _ in kept):
                kept.append((start, end, encoding))
        return sorted((s, enc, buffer[s:e].decode(enc, errors="replace")) for s, e, enc in kept)


def _utf16_source(source: str, encoding: str) -> bytes:
    """A regex source (escaped literals and the separator class) rewritten for UTF-16 bytes."""
    zero_first = encoding == "utf-16-be"
    out = []
    for token in re.findall(r"\\.|.", source.replace(_NAME_SEPARATORS, "\x00")):
        if token == "\x00":
            sep = b"[\\s^,._-]\\x00" if not zero_first else b"\\x00[\\s^,._-]"
            out.append(b"(?:" + sep + b"){0,3}")
            continue
        char = token[1:] if token.startswith("\\") and len(token) == 2 else token
        lo, up = char.lower(), char.upper()
        units = []
        for variant in dict.fromkeys((lo, up)):
            encoded = variant.encode(encoding)
            units.append(re.escape(encoded))
        out.append(b"(?:" + b"|".join(units) + b")")
    return b"".join(out)


# --- generic identifier shapes (pure) ------------------------------------------------------------

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]*\w")
_ISO_DATE = re.compile(r"(?<![\d.])(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)")
_COMPACT_DATE = re.compile(r"(?<![\d.])((?:19|20)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])")
_DAY_FIRST_DATE = re.compile(r"(?<![\d.])(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})(?!\d)")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WORD_DATE = re.compile(
    r"(?<!\d)(\d{1,2})[ -]?(" + "|".join(_MONTHS) + r")[a-z]*\.?[ -]?(\d{4})(?!\d)", re.IGNORECASE
)
_PHONE = re.compile(
    r"(?<![\w.+])(?:\+\d{1,3}[ -]?)?(?:\(\d{1,4}\)[ -]?)?\d{2,4}(?:[ -]\d{2,4}){1,3}"
    r"(?![\w.])"
)
_DIGIT_RUN = re.compile(r"(?<![^\W_])(?<!\.)\d{7,}(?![^\W_])")
LAST_SHIFTED_YEAR = 1925  # bidsdeid shifts every date to 1925 or earlier


def _is_recent_date(year: int, month: int, day: int) -> bool:
    if not LAST_SHIFTED_YEAR < year < 2100:
        return False
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    return True


def _date_hits(text: str) -> Iterator[tuple[int, int]]:
    for pattern in (_ISO_DATE, _COMPACT_DATE):
        for m in pattern.finditer(text):
            if _is_recent_date(int(m[1]), int(m[2]), int(m[3])):
                yield m.span()
    for m in _DAY_FIRST_DATE.finditer(text):
        a, b, year = int(m[1]), int(m[2]), int(m[3])
        if _is_recent_date(year, b, a) or _is_recent_date(year, a, b):
            yield m.span()
    for m in _WORD_DATE.finditer(text):
        month = _MONTHS.index(m[2][:3].lower()) + 1
        if _is_recent_date(int(m[3]), month, int(m[1])):
            yield m.span()


def generic_hits(text: str) -> list[tuple[str, str]]:
    """(kind, matched text) for identifier-shaped strings; overlapping matches named once."""
    spans: list[tuple[int, int, str]] = []
    candidates = [("e-mail address", m.span()) for m in _EMAIL.finditer(text)]
    candidates += [("date after 1925", span) for span in _date_hits(text)]
    for m in _PHONE.finditer(text):
        digits = sum(c.isdigit() for c in m.group())
        if 9 <= digits <= 15 and re.search(r"[+(-]", m.group()):
            candidates.append(("phone number", m.span()))
    candidates += [("long digit run (MRN-like)", m.span()) for m in _DIGIT_RUN.finditer(text)]
    for kind, (start, end) in candidates:
        if not any(start < e and s < end for s, e, _ in spans):
            spans.append((start, end, kind))
    return [(kind, text[s:e]) for s, e, kind in sorted(spans)]


# --- scan policy (data file) ---------------------------------------------------------------------


@dataclass(frozen=True)
class ScanPolicy:
    generic_excluded_top: frozenset[str]
    generic_exempt_fields: frozenset[str]
    common_words: frozenset[str]

    @classmethod
    @cache
    def load(cls) -> ScanPolicy:
        text = resources.files("bidsdeid").joinpath("data/leak_scan.json").read_text("utf-8")
        data = json.loads(text)
        return cls(
            frozenset(data["generic_scope"]["excluded_top_folders"]),
            frozenset(data["generic_exempt_json_fields"]["fields"]),
            frozenset(w.casefold() for w in data["common_words"]["words"]),
        )

    def generic_applies(self, relpath: str) -> bool:
        return relpath.split("/", 1)[0] not in self.generic_excluded_top

    def field_exempt(self, field_path: str) -> bool:
        return re.sub(r"\[\d+\]", "[]", field_path) in self.generic_exempt_fields


# --- per-file scanners: each yields (location, kind, value) --------------------------------------

Hit = tuple[str, str, str]


def _text_hits(index: IdentifierIndex, text: str, location: str, generic: bool) -> Iterator[Hit]:
    for kind, value in index.find_text(text):
        yield location, kind, value
    if generic:
        for kind, value in generic_hits(text):
            yield location, kind, value


def _walk_json(node: Any, path: str) -> Iterator[tuple[str, str, bool]]:
    """(field path, text, is_key) for every key and scalar of a JSON document (floats skipped)."""
    if isinstance(node, dict):
        for key, value in node.items():
            child = f"{path}.{key}" if path else str(key)
            yield path or "(top level)", str(key), True
            yield from _walk_json(value, child)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk_json(value, f"{path}[{i}]")
    elif isinstance(node, str) or (isinstance(node, int) and not isinstance(node, bool)):
        yield path, str(node), False


def _scan_json(
    path: Path, index: IdentifierIndex, generic: bool, policy: ScanPolicy
) -> Iterator[Hit]:
    try:
        document = json.loads(path.read_bytes())
    except (UnicodeDecodeError, ValueError):
        yield from _scan_text(path, index)
        return
    for field_path, text, is_key in _walk_json(document, ""):
        location = f"JSON key in {field_path}" if is_key else f"JSON field {field_path}"
        yield from _text_hits(
            index, text, location, generic and not is_key and not policy.field_exempt(field_path)
        )


def _scan_tsv(path: Path, index: IdentifierIndex, generic: bool) -> Iterator[Hit]:
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        rows = csv.reader(fh, delimiter="\t")
        header = next(rows, [])
        for i, column in enumerate(header, start=1):
            yield from _text_hits(index, column, f"TSV header column {i}", False)
        for row_number, row in enumerate(rows, start=1):
            for i, cell in enumerate(row):
                column = header[i] if i < len(header) else f"#{i + 1}"
                yield from _text_hits(index, cell, f"TSV row {row_number} column {column}", generic)


def _scan_text(path: Path, index: IdentifierIndex) -> Iterator[Hit]:
    with path.open(encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            line = _DATA_URI.sub("", line)  # base64 pictures: random letters, not text
            yield from _text_hits(index, line, f"line {number}", False)


@dataclass(frozen=True)
class NiftiLayout:
    """Byte ranges of a NIfTI file's named header fields and extensions."""

    fields: tuple[tuple[str, int, int], ...]  # (name, start, end)
    vox_offset: int

    def locate(self, offset: int) -> str:
        for name, start, end in self.fields:
            if start <= offset < end:
                return name
        if offset >= self.vox_offset:
            return f"NIfTI voxel data byte {offset}"
        return f"NIfTI header byte {offset}"


def _open_content(path: Path) -> BinaryIO:
    """The file's bytes, gzip-decompressed when it is gzip (streamed, never read whole)."""
    fh = path.open("rb")
    if fh.read(2) == b"\x1f\x8b":
        fh.seek(0)
        return gzip.GzipFile(fileobj=fh)  # type: ignore[return-value]
    fh.seek(0)
    return fh


def _scan_nifti(
    path: Path, index: IdentifierIndex, generic: bool
) -> tuple[list[Hit], NiftiLayout | None]:
    import nibabel as nib

    try:
        image = nib.load(str(path))
        header = image.header
    except Exception:  # noqa: BLE001 - not a readable NIfTI: the byte search still covers it
        return [], None
    hits: list[Hit] = []
    dtype = header.template_dtype
    fields = []
    for name in dtype.names:
        field_type, start = dtype.fields[name][:2]
        fields.append((f"NIfTI header {name}", start, start + field_type.itemsize))
        if field_type.kind == "S" and name != "magic":
            text = header[name].item().decode("latin-1").rstrip("\x00")
            hits += _text_hits(index, text, f"NIfTI header {name}", generic)
    start = dtype.itemsize + 4  # header, then the 4-byte extension flag
    for number, ext in enumerate(header.extensions, start=1):
        location = f"NIfTI extension {number} (ecode {ext.get_code()})"
        end = start + ext.get_sizeondisk()
        fields.append((location, start, end))
        start = end
        text = bytes(ext.content).decode("utf-8", errors="replace")
        printable = sum(c.isprintable() or c.isspace() for c in text)
        hits += _text_hits(index, text, location, generic and printable >= 0.9 * max(len(text), 1))
    # the loaded header's vox_offset field may read 0; the data proxy knows where voxels start
    return hits, NiftiLayout(tuple(fields), int(getattr(image.dataobj, "offset", start)))


def _twix_header_regions(fh: BinaryIO) -> list[tuple[str, int, int]]:
    """(name, start, end) of a Siemens twix file's text headers (VB single, VD/VE multi-raid)."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(0)
    first = fh.read(8)
    if len(first) < 8:
        return []
    hd_size, count = struct.unpack("<II", first)
    measurements: list[tuple[int, int]] = []
    regions: list[tuple[str, int, int]] = []
    if hd_size == 0 and 0 < count <= 64:  # VD/VE MultiRaidFileHeader: 8 + 64 * 152 bytes
        for k in range(count):
            fh.seek(8 + 152 * k)
            _, _, offset, _ = struct.unpack("<IIQQ", fh.read(24))
            regions += [
                (f"twix raid entry {k + 1} patName", 8 + 152 * k + 24, 8 + 152 * k + 88),
                (f"twix raid entry {k + 1} protName", 8 + 152 * k + 88, 8 + 152 * k + 152),
            ]
            measurements.append((k + 1, offset))
    else:
        measurements.append((1, 0))
    for number, offset in measurements:
        if offset + 4 > size:
            continue
        fh.seek(offset)
        (length,) = struct.unpack("<I", fh.read(4))
        if 0 < length <= size - offset:
            regions.append((f"twix measurement {number} header", offset, offset + length))
    return regions


def _scan_twix(path: Path, index: IdentifierIndex) -> tuple[list[Hit], list[tuple[str, int, int]]]:
    hits: list[Hit] = []
    with path.open("rb") as fh:
        regions = _twix_header_regions(fh)
        for name, start, end in regions:
            fh.seek(start)
            text = fh.read(min(end - start, 64 << 20)).decode("latin-1").replace("\x00", " ")
            hits += _text_hits(index, text, name, False)
    return hits, regions


def _region_locator(regions: list[tuple[str, int, int]], other: str) -> Callable[[int], str]:
    """Name of the region holding a byte offset, else ``"<other> byte N"``."""

    def locate(offset: int) -> str:
        return next((n for n, s, e in regions if s <= offset < e), f"{other} byte {offset}")

    return locate


def _scan_tiff(path: Path, index: IdentifierIndex) -> Iterator[Hit]:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception:  # noqa: BLE001 - not a TIFF after all: the byte search still covers it
        return
    with tif:
        for number, page in enumerate(tif.pages):
            for tag in page.tags.values():
                value = tag.value
                if isinstance(value, bytes):
                    value = value.decode("utf-8", errors="replace")
                if isinstance(value, str):
                    yield from _text_hits(index, value, f"TIFF page {number} tag {tag.name}", False)


def _scan_dicom(path: Path, index: IdentifierIndex) -> Iterator[Hit]:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - unreadable: the byte search still covers it
        return
    found: list[Hit] = []

    def visit(_ds: Any, elem: Any) -> None:
        if elem.VR in {"SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN"} or elem.value is None:
            return
        location = f"DICOM {elem.tag} {elem.keyword or 'private'}"
        values = (
            elem.value
            if isinstance(elem.value, (list, tuple, pydicom.multival.MultiValue))
            else [elem.value]
        )
        for value in values:
            text = str(value)
            found.extend(_text_hits(index, text, location, False))
            date = _COMPACT_DATE.match(text) if elem.VR in {"DA", "DT"} else None
            if date and _is_recent_date(int(date[1]), int(date[2]), int(date[3])):
                found.append((location, "date after 1925", text))

    ds.walk(visit)
    yield from found


def _scan_png(path: Path, index: IdentifierIndex) -> Iterator[Hit]:
    from PIL import Image

    try:
        with Image.open(path) as image:
            chunks = dict(getattr(image, "text", {}) or {})
    except Exception:  # noqa: BLE001 - the byte search still covers it
        return
    for key, value in chunks.items():
        yield from _text_hits(index, f"{key} {value}", f"PNG text chunk {key}", False)


def _scan_bytes(stream: BinaryIO, index: IdentifierIndex) -> Iterator[tuple[int, str, str]]:
    """(offset, kind, matched) for whole identifier values anywhere in a byte stream.

    Read in chunks; the last ``reach`` bytes of each chunk are searched again with the next one,
    and a match is reported only from the chunk in which it starts well before the end.
    """
    search = index.bytes_search
    overlap = search.reach
    buffer = b""
    base = 0  # offset of buffer[0] in the stream
    done = 0  # matches starting before this offset were reported already
    while True:
        chunk = stream.read(_CHUNK)
        at_end = not chunk
        buffer += chunk
        limit = base + (len(buffer) if at_end else len(buffer) - overlap)
        for offset, _, matched in search.find(buffer):
            if done <= base + offset < limit:
                yield base + offset, index.kind_of(matched), matched
        if at_end:
            return
        done = max(done, limit)
        cut = max(0, len(buffer) - overlap - 1)  # keep one byte before `done` for look-behind
        base += cut
        buffer = buffer[cut:]


# --- the scan ------------------------------------------------------------------------------------


def _byte_hits(
    path: Path, index: IdentifierIndex, locate: Callable[[int], str] | None
) -> Iterator[Hit]:
    """Byte search of the content, decompressed if it is gzip (raw if the gzip is broken)."""
    try:
        with _open_content(path) as stream:
            where = "decompressed content" if isinstance(stream, gzip.GzipFile) else "content"
            hits = list(_scan_bytes(stream, index))
    except (OSError, EOFError, zlib.error):
        with path.open("rb") as stream:
            where = "content"
            hits = list(_scan_bytes(stream, index))
    for offset, kind, value in hits:
        yield (locate(offset) if locate else f"{where} byte {offset}"), kind, value


def _subject_of(relpath: str) -> str | None:
    m = re.search(r"(?:^|/)sub-([A-Za-z0-9]+)(?:[_/.]|$)", relpath)
    return m[1] if m else None


def _entries(output_dir: Path, subjects: set[str] | None) -> Iterator[tuple[str, Path, bool]]:
    """(relative path, path, is_file) of every folder and file in scope, sorted."""
    for root, dirs, files in os.walk(output_dir):
        dirs.sort()
        base = Path(root)
        for name in dirs + sorted(files):
            path = base / name
            relpath = path.relative_to(output_dir).as_posix()
            owner = _subject_of(relpath)
            if subjects is not None and owner is not None and owner not in subjects:
                continue
            yield relpath, path, name in files


def _file_hits(path: Path, relpath: str, index: IdentifierIndex, policy: ScanPolicy) -> list[Hit]:
    """Structured hits (named fields) first, then byte hits for identifiers not yet named."""
    name = path.name
    lower = name.lower()
    generic = policy.generic_applies(relpath)
    hits: list[Hit] = []
    locate: Callable[[int], str] | None = None
    if lower.endswith((".nii", ".nii.gz")):
        nifti_hits, layout = _scan_nifti(path, index, generic)
        hits += nifti_hits
        locate = layout.locate if layout else None
    elif lower.endswith(".json"):
        hits += _scan_json(path, index, generic, policy)
    elif lower.endswith(".tsv"):
        hits += _scan_tsv(path, index, generic)
    elif lower.endswith(".dat"):
        twix_hits, regions = _scan_twix(path, index)
        hits += twix_hits
        locate = _region_locator(regions, "twix data")
    elif lower.endswith(".dcm") or lower == "dicomdir":
        hits += _scan_dicom(path, index)
    elif lower.endswith(_TIFF_SUFFIXES):
        hits += _scan_tiff(path, index)
    elif lower.endswith(".png"):
        hits += _scan_png(path, index)
    elif path.suffix.lower() in _TEXT_SUFFIXES or name in _TEXT_NAMES:
        hits += _scan_text(path, index)
    named = {kind for _, kind, _ in hits}
    for location, kind, value in _byte_hits(path, index, locate):
        if kind not in named:  # one byte hit per identifier not already named by a field
            named.add(kind)
            hits.append((location, kind, value))
    return hits


def scan_output(
    output_dir: Path, identifiers: Mapping[str, set[str]], subjects: Iterable[str] | None = None
) -> list[Leak]:
    """Every residual identifier in OUTPUT_DIR; ``subjects`` limits the files to theirs + shared.

    ``identifiers`` is the private dir's ``{label: original values}``; all subjects' values are
    searched in every file in scope, so one subject's name in another's file is found too.
    """
    index = IdentifierIndex.build(identifiers)
    policy = ScanPolicy.load()
    wanted = None if subjects is None else {s.removeprefix("sub-") for s in subjects}
    leaks: dict[tuple[str, str, str], Leak] = {}

    def add(relpath: str, location: str, kind: str, value: str) -> None:
        leak = Leak(index.mask(relpath), index.mask(location), kind, value)
        leaks.setdefault((leak.path, leak.location, leak.kind), leak)

    for relpath, path, is_file in _entries(Path(output_dir), wanted):
        for kind, value in index.find_text(path.name):
            add(relpath, "file name" if is_file else "folder name", kind, value)
        if is_file and path.is_file():  # symlinks are followed: their content is published too
            for location, kind, value in _file_hits(path, relpath, index, policy):
                add(relpath, location, kind, value)
    return sorted(leaks.values(), key=lambda leak: (leak.path, leak.location, leak.kind))


def format_leaks(leaks: list[Leak], show_values: bool) -> list[str]:
    """One line per leak: file, field, kind; the value only when ``show_values`` (console)."""
    lines = []
    for leak in leaks:
        line = f"{leak.path}: {leak.location}: {leak.kind}"
        if show_values:
            line += f" = {leak.value!r}"
        lines.append(line)
    return lines
