"""Siemens twix raw data (.dat): sniffing, header fields for subject matching, de-identification.

File layout, as twixtools reads it (twixtools.read_twix, hdr_def.py, mdh_def.py, twixprot.py):

* VD/VE ("multi-raid"): a MultiRaidFileHeader (uint32 hdSize_, uint32 count_, 64 entries of
  measId_, fileId_, off_, len_, patName_[64], protName_[64]); per measurement at ``off_`` a
  header (uint32 header length, uint32 buffer count, per buffer ``name\\0`` + uint32 length +
  text) followed by MDH+ADC blocks up to an ACQEND block.
* VB: one measurement at offset 0 with the same header; twixtools calls a file VD when its first
  uint32 is below 10000 and its second at most 64, and VB otherwise.

De-identification rewrites only header text (the Config, Dicom, Meas, MeasYaps, Phoenix, Spice
buffers and the raid entries' name fields), always with values of the same length, so every
offset and length a reader depends on stays valid. Identifiers are found by field name (the
table ``data/twix_phi.json``) and then by value everywhere in the header text. MDH+ADC blocks are
copied through in chunks without being parsed into memory, hashed on the way in and again in the
written file.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import hmac
import io
import json
import os
import re
import struct
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import twixtools
from twixtools import hdr_def, mdh_def, twixprot
from twixtools.mdb import Mdb

from bidsdeid.deid.dates import shift_da, shift_dt, shift_iso
from bidsdeid.deid.text import identifier_tokens

_RAID_HEADER_SIZE = hdr_def.MultiRaidFileHeader.itemsize
_RAID_ENTRIES_AT = hdr_def.MultiRaidFileHeader.fields["entry"][1]
_ENTRY = hdr_def.MrParcRaidFileEntry
_PATNAME_AT, _PROTNAME_AT = _ENTRY.fields["patName_"][1], _ENTRY.fields["protName_"][1]
_NAME_FIELD_SIZE = _ENTRY.fields["patName_"][0].itemsize
_MAX_MEASUREMENTS = 64
_VB_MIN_HEADER = 10000  # twixtools' VB/VD rule
_CHUNK = 8 << 20
_BUFFER_NAME = re.compile(rb"([A-Za-z]\w{3,63})\x00")


class TwixError(Exception):
    """A twix file that cannot be read or de-identified; ``reason`` names no identifier."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class _Malformed(ValueError):
    """Raised by the layout readers; turned into TwixError where the path is known."""


@dataclass(frozen=True)
class TwixInfo:
    """Header fields for matching a twix file to a DICOM study. Held in memory only."""

    layout: str  # "VB" | "VD"
    measurements: int
    patient_id: str | None
    patient_name: str | None
    frame_of_reference: str | None
    study_date: str | None  # YYYYMMDD


@dataclass
class TwixResult:
    measurements: int
    bytes: int
    replacements: int


# --- layout ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Buffer:
    name: str
    offset: int  # absolute file offset of the text
    length: int


@dataclass(frozen=True)
class _Measurement:
    offset: int
    length: int
    header_length: int
    buffers: tuple[_Buffer, ...]
    blocks: int  # MDH blocks before ACQEND (twixtools' mdb count); -1 when not walked


@dataclass(frozen=True)
class _Layout:
    kind: str
    size: int
    measurements: tuple[_Measurement, ...]

    def header_regions(self) -> list[tuple[int, int]]:
        """Byte ranges holding header text; everything else is raw data copied untouched."""
        regions = [(0, _RAID_HEADER_SIZE)] if self.kind == "VD" else []
        regions += [(m.offset, m.offset + m.header_length) for m in self.measurements]
        return regions


def _layout_kind(first8: bytes) -> str:
    first, second = struct.unpack("<II", first8)
    return "VD" if first < _VB_MIN_HEADER and second <= _MAX_MEASUREMENTS else "VB"


def _read_exact(fh, offset: int, length: int, what: str) -> bytes:
    fh.seek(offset)
    data = fh.read(length)
    if len(data) != length:
        raise _Malformed(f"truncated: {what} ends after the end of the file")
    return data


def _measurement_extents(fh, size: int, kind: str) -> list[tuple[int, int]]:
    if kind == "VB":
        return [(0, size)]
    raid = np.frombuffer(_read_exact(fh, 0, _RAID_HEADER_SIZE, "the multi-raid header"),
                         dtype=hdr_def.MultiRaidFileHeader)[0]
    count = int(raid["hdr"]["count_"])
    if not 1 <= count <= _MAX_MEASUREMENTS:
        raise _Malformed("the multi-raid header lists no measurement")
    extents = []
    for k in range(count):
        offset, length = int(raid["entry"][k]["off_"]), int(raid["entry"][k]["len_"])
        if length == 0 and count == 1:  # as twixtools: a lone entry may leave its length unset
            length = size - offset
        if offset < _RAID_HEADER_SIZE or length <= 0:
            raise _Malformed(f"measurement {k + 1} has an invalid offset or length")
        if offset + length > size:
            raise _Malformed(f"truncated: measurement {k + 1} ends after the end of the file")
        if extents and offset < sum(extents[-1]):
            raise _Malformed(f"measurement {k + 1} overlaps the one before")
        extents.append((offset, length))
    return extents


def _parse_header(header: bytes, offset: int, index: int) -> tuple[_Buffer, ...]:
    count = struct.unpack_from("<I", header, 4)[0]
    if not 1 <= count <= _MAX_MEASUREMENTS:
        raise _Malformed(f"measurement {index} header declares {count} buffers")
    buffers, pos = [], 8
    for b in range(count):
        match = _BUFFER_NAME.match(header, pos)
        if match is None or match.end() + 4 > len(header):
            raise _Malformed(f"buffer {b + 1} of measurement {index} has no valid name")
        length = struct.unpack_from("<I", header, match.end())[0]
        pos = match.end() + 4
        if pos + length > len(header):
            raise _Malformed(f"buffer {b + 1} of measurement {index} runs past its header")
        buffers.append(_Buffer(match[1].decode("ascii"), offset + pos, length))
        pos += length
    return tuple(buffers)


def _walk_blocks(fh, start: int, end: int, kind: str, index: int) -> int:
    """Follow the MDH chain as twixtools does; count blocks up to ACQEND, refuse gaps and cuts."""
    header_type = mdh_def.Scan_header if kind == "VD" else mdh_def.VB17_header
    header_size = ctypes.sizeof(header_type)
    per_channel = ctypes.sizeof(mdh_def.Channel_header) if kind == "VD" else header_size
    leading = header_size if kind == "VD" else 0
    pos, blocks = start, 0
    while True:
        if pos + header_size > end:
            raise _Malformed(f"truncated: measurement {index} ends before its ACQEND block")
        fh.seek(pos)
        mdh = header_type.from_buffer_copy(fh.read(header_size))
        if mdh_def.is_flag_set(mdh, "ACQEND"):
            return blocks
        if mdh_def.is_flag_set(mdh, "SYNCDATA"):
            length = int(mdh_def.get_dma_len(mdh))
        else:
            length = leading + mdh.UsedChannels * (per_channel + 8 * mdh.SamplesInScan)
        if length < header_size:
            raise _Malformed(f"measurement {index} has a corrupt data block at byte {pos}")
        if pos + length > end:
            raise _Malformed(f"truncated: measurement {index} ends inside a data block")
        pos += length
        blocks += 1


def _read_layout(fh, size: int, walk: bool) -> _Layout:
    if size < 8:
        raise _Malformed("too short for a twix file")
    kind = _layout_kind(_read_exact(fh, 0, 8, "the file header"))
    measurements = []
    for k, (offset, length) in enumerate(_measurement_extents(fh, size, kind), start=1):
        header_length = struct.unpack("<I", _read_exact(fh, offset, 4, f"measurement {k}"))[0]
        if not 8 <= header_length <= length:
            raise _Malformed(f"truncated: the header of measurement {k} runs past its end")
        header = _read_exact(fh, offset, header_length, f"the header of measurement {k}")
        buffers = _parse_header(header, offset, k)
        end = offset + length
        blocks = _walk_blocks(fh, offset + header_length, end, kind, k) if walk else -1
        measurements.append(_Measurement(offset, length, header_length, buffers, blocks))
    return _Layout(kind, size, tuple(measurements))


def _open(path: Path) -> io.BufferedReader:
    try:
        return path.open("rb")
    except OSError as err:
        raise TwixError(path, f"cannot open: {err.strerror}") from None


def _checked_layout(fh, path: Path, walk: bool) -> _Layout:
    """The file's layout, or TwixError naming what is wrong with it."""
    try:
        return _read_layout(fh, os.fstat(fh.fileno()).st_size, walk)
    except _Malformed as err:
        raise TwixError(path, str(err)) from None
    except OSError as err:
        raise TwixError(path, f"cannot read: {err.strerror}") from None


def _buffer_texts(fh, measurement: _Measurement) -> Iterator[tuple[str, str]]:
    for buffer in measurement.buffers:
        fh.seek(buffer.offset)
        yield buffer.name, fh.read(buffer.length).decode("latin-1")


# --- sniffing and header info ---------------------------------------------------------------------

def _looks_like_measurement_header(head: bytes, room: int) -> bool:
    if len(head) < 8:
        return False
    length, count = struct.unpack_from("<II", head)
    return (8 < length <= room and 1 <= count <= _MAX_MEASUREMENTS
            and _BUFFER_NAME.match(head, 8) is not None)


def is_twix(path: Path) -> bool:
    """True when ``path`` starts like a twix file (reads at most about 10 kB)."""
    try:
        with Path(path).open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(_RAID_HEADER_SIZE)
            if len(head) < 8:
                return False
            offset = 0
            if _layout_kind(head[:8]) == "VD":
                if len(head) < _RAID_HEADER_SIZE:
                    return False
                raid = np.frombuffer(head, dtype=hdr_def.MultiRaidFileHeader)[0]
                offset = int(raid["entry"][0]["off_"])
                if not (1 <= raid["hdr"]["count_"] <= _MAX_MEASUREMENTS
                        and _RAID_HEADER_SIZE <= offset < size):
                    return False
            fh.seek(offset)
            return _looks_like_measurement_header(fh.read(72), size - offset)
    except OSError:
        return False


_INFO_KEYS = {
    "patient_id": ("PatientID", "tPatientID"),
    "patient_name": ("PatientName", "tPatientName", "PatientsName", "tPatientsName"),
    "frame_of_reference": ("FrameOfReference", "tFrameOfReference"),
    "study_date": ("StudyDate", "tStudyDate"),
}


def _as_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():  # twixprot casts "20190213" to float
        value = int(value)
    return str(value).strip().strip('"').strip()


def _first_value(parsed: list[dict], keys: tuple[str, ...]) -> str | None:
    for protocol in parsed:
        for key in keys:
            value = _as_text(protocol.get(key, ""))
            if value and not _is_placeholder(value):
                return value
    return None


def read_twix_info(path: Path) -> TwixInfo:
    """Header fields for subject matching, parsed by twixtools from the header buffers only."""
    path = Path(path)
    with _open(path) as fh:
        layout = _checked_layout(fh, path, walk=False)
        try:
            parsed = [twixprot.parse_buffer(text)
                      for m in layout.measurements for _, text in _buffer_texts(fh, m)]
        except OSError as err:
            raise TwixError(path, f"cannot read: {err.strerror}") from None
        except Exception as err:  # noqa: BLE001 - twixprot raises whatever odd text provokes
            raise TwixError(path, f"twixtools cannot parse the header ({type(err).__name__})") \
                from None
    values = {field: _first_value(parsed, keys) for field, keys in _INFO_KEYS.items()}
    study_date = values["study_date"]
    study_date = _date_digits(study_date) if study_date else None
    if study_date is None and values["frame_of_reference"]:
        study_date = _embedded_date(values["frame_of_reference"])
    return TwixInfo(layout=layout.kind, measurements=len(layout.measurements),
                    patient_id=values["patient_id"], patient_name=values["patient_name"],
                    frame_of_reference=values["frame_of_reference"], study_date=study_date)


# --- finding identifiers in header text (pure) ----------------------------------------------------

def load_phi_fields() -> dict[str, str]:
    """Parameter name -> action, from ``bidsdeid/data/twix_phi.json``."""
    table = json.loads((resources.files("bidsdeid") / "data" / "twix_phi.json").read_text())
    return dict(table["fields"])


@dataclass(frozen=True)
class _Value:
    """One value of a named parameter: ``text[start:end]`` is the token (quotes included)."""

    name: str
    start: int
    end: int


_XPROT_PARAM = re.compile(r'<Param\w*\."(\w+)">\s*\{')
_XPROT_TOKEN = re.compile(r'<\w+>|"[^"]*"|[^\s"<>{}]+')
_ASCCONV_LINE = re.compile(r'^[ \t]*([A-Za-z_][\w.\[\]]*)[ \t]*=[ \t]*("[^\n]*"|[^\s#"]+)',
                           re.MULTILINE)
_ARRAY_INDEX = re.compile(r"\[\d+\]")


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    for pos in range(start, len(text)):
        if text[pos] == "{":
            depth += 1
        elif text[pos] == "}":
            depth -= 1
            if depth == 0:
                return pos
    return len(text)


def _named_values(text: str, names: Mapping[str, str]) -> Iterator[_Value]:
    """Values of the parameters in ``names``, in XProtocol and in ASCCONV syntax."""
    for param in _XPROT_PARAM.finditer(text):
        if param[1] not in names:
            continue
        after_attribute = False
        body_end = _closing_brace(text, param.end())
        for token in _XPROT_TOKEN.finditer(text, param.end(), body_end):
            if token[0].startswith("<"):
                after_attribute = True  # <Visible> "true", <Precision> 6: the next token is its own
            elif after_attribute:
                after_attribute = False
            else:
                yield _Value(param[1], token.start(), token.end())
    for line in _ASCCONV_LINE.finditer(text):
        name = _ARRAY_INDEX.sub("", line[1]).rsplit(".", 1)[-1]
        if name in names:
            yield _Value(name, line.start(2), line.end(2))


def _unquote(token: str) -> tuple[str, str, str]:
    inner = token.strip('"')
    lead = len(token) - len(token.lstrip('"'))
    return token[:lead], inner, token[lead + len(inner):]


_PLACEHOLDER = re.compile(r"^[\sxX*0.\-^_:]*$")


def _is_placeholder(value: str) -> bool:
    return bool(_PLACEHOLDER.match(value))


_UID = re.compile(r"(?<![\d.])(?=[\d.]*\d{4})\d+(?:\.\d+){5,}(?!\d)(?!\.\d)")
_DATE8 = re.compile(r"(?:19|20)\d{6}")


def _date_digits(value: str) -> str | None:
    """``20190213``, ``2019-02-13`` or ``2019.02.13...`` as YYYYMMDD when a valid date."""
    digits = re.sub(r"[-./]", "", value[:10])[:8]
    return digits if _DATE8.fullmatch(digits) and shift_da(digits, 0) else None


def _embedded_date(uid: str) -> str | None:
    """The acquisition date Siemens writes into a UID component (``...45074.1.20190213105815``)."""
    for component in uid.split(".")[4:]:
        if len(component) >= 8 and _date_digits(component[:8]):
            return component[:8]
    return None


@dataclass(frozen=True)
class _Findings:
    """Identifying values found in the headers; original values, memory only."""

    tokens: frozenset[str]
    uids: frozenset[str]
    study_dates: frozenset[str]
    birth_dates: frozenset[str]


_MIN_UID = 8  # shorter "uid" field values are keyed but too short to search for
_MIN_NUMERIC_TOKEN = 5  # shorter digit runs (matrix sizes, TRs) match too many protocol values


def _searchable(tokens: Iterable[str]) -> frozenset[str]:
    kept = set()
    for token in tokens:
        token = token.strip()
        if len(token) < 3 or _is_placeholder(token):
            continue
        if token.isdigit() and len(token) < _MIN_NUMERIC_TOKEN:
            continue
        kept.add(token)
        utf8 = token.encode("utf-8", "replace").decode("latin-1")
        if utf8 != token:  # the same name written as UTF-8 bytes into the latin-1 header
            kept.add(utf8)
    return frozenset(kept)


def _find_identifiers(texts: Iterable[str], fields: Mapping[str, str],
                      identifiers: Iterable[str]) -> _Findings:
    tokens = set(identifier_tokens(v for v in identifiers if v))
    uids, study_dates, birth_dates = set(), set(), set()
    for text in texts:
        uids.update(_UID.findall(text))
        for value in _named_values(text, fields):
            action = fields[value.name]
            inner = _unquote(text[value.start:value.end])[1].strip()
            if not inner or _is_placeholder(inner):
                continue
            if action == "person":
                tokens |= identifier_tokens([inner])
            elif action in ("id", "text"):
                tokens.add(inner)
            elif action == "birth_date":
                tokens.add(inner)  # in whatever format it is written
                birth_dates.add(_date_digits(inner))
            elif action == "uid" and len(inner) >= _MIN_UID:
                uids.add(inner)
            elif action == "date":
                study_dates.add(_date_digits(inner))
    study_dates.update(map(_embedded_date, uids))
    return _Findings(_searchable(tokens), frozenset(uids), frozenset(study_dates - {None}),
                     frozenset(birth_dates - {None}))


# --- same-length replacements (pure) --------------------------------------------------------------

def _keyed_digits(key: bytes, value: str) -> Iterator[int]:
    counter = 0
    while True:
        block = hmac.new(key, f"twix-uid\x00{value}\x00{counter}".encode(), hashlib.sha256)
        yield from (b % 10 for b in block.digest() if b < 250)
        counter += 1


def keyed_uid(key: bytes, value: str) -> str:
    """Same length and punctuation, every letter and digit keyed; no leading zero in a component."""
    digits = _keyed_digits(key, value)
    out = []
    for pos, char in enumerate(value):
        if not (char.isascii() and char.isalnum()):
            out.append(char)
            continue
        digit = next(digits)
        starts_component = pos == 0 or not value[pos - 1].isalnum()
        continues = pos + 1 < len(value) and value[pos + 1].isalnum()
        if digit == 0 and starts_component and continues:
            digit = 1 + next(digits) % 9
        out.append(str(digit))
    return "".join(out)


def _blank(token: str) -> str:
    """``"Doe^John"`` -> ``        ""``: an empty value, padded in front so ASCCONV still parses."""
    lead, inner, trail = _unquote(token)
    return " " * len(inner) + lead + trail


def _zero(token: str) -> str:
    return re.sub(r"[A-Za-z0-9]", "0", token)


def _shift_date_text(value: str, days: int) -> str:
    """Shift YYYYMMDD, YYYYMMDDHHMMSS... or YYYY-MM-DD text, same length; '' when unparsable."""
    if re.fullmatch(r"\d{8}", value):
        return shift_da(value, days)
    if re.fullmatch(r"\d{8}[\d.]*", value):
        return shift_dt(value, days)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}.*", value):
        return shift_iso(value, days)
    return ""


@dataclass(frozen=True)
class _Cleaner:
    """Everything needed to clean header text of one file: options, findings, compiled patterns."""

    key: bytes
    date_shift_days: int | None
    retain_characteristics: bool
    fields: Mapping[str, str]
    findings: _Findings
    tokens: re.Pattern[str] | None
    dates: re.Pattern[str] | None
    uids: re.Pattern[str] | None

    def _field_value(self, action: str, token: str) -> str:
        lead, inner, trail = _unquote(token)
        quoted = bool(lead)
        if action in ("person", "id", "text", "birth_date"):
            return _blank(token) if quoted else _zero(token)
        if action == "characteristic":
            if self.retain_characteristics:
                return token
            numeric = re.fullmatch(r"\s*[-+]?[\d.]+\s*", inner)
            return _zero(token) if numeric or not quoted else _blank(token)
        if action == "uid":  # UID-shaped values are left to the pass over every UID in the text
            return token if _UID.fullmatch(inner) else lead + keyed_uid(self.key, inner) + trail
        if action == "date":
            shifted = (_shift_date_text(inner, self.date_shift_days)
                       if self.date_shift_days is not None else "")
            if len(shifted) == len(inner):
                return lead + shifted + trail
            return _blank(token) if quoted else _zero(token)
        if action == "time" and self.date_shift_days is None:
            return _blank(token) if quoted else _zero(token)
        return token

    def _date_value(self, found: str) -> str:
        digits = found.replace("-", "")
        full = digits if len(digits) == 8 else "20" + digits
        if self.date_shift_days is None or full in self.findings.birth_dates:
            return "x" * len(found)
        shifted = shift_da(full, self.date_shift_days)
        if not shifted:
            return "x" * len(found)
        if "-" in found:
            return f"{shifted[:4]}-{shifted[4:6]}-{shifted[6:]}"
        return shifted[-len(found):]

    def _token_value(self, match: re.Match[str]) -> str:
        return match[0] if _is_format_keyword(match) else "x" * len(match[0])

    def clean(self, text: str) -> tuple[str, int]:
        """Same-length cleaned text and the number of values changed."""
        chars, changed = list(text), 0
        for value in _named_values(text, self.fields):
            old = text[value.start:value.end]
            new = self._field_value(self.fields[value.name], old)
            if new != old:
                chars[value.start:value.end] = new
                changed += 1
        text = "".join(chars)
        substitutions = [(_UID, lambda m: keyed_uid(self.key, m[0])),
                         (self.dates, lambda m: self._date_value(m[0])),
                         (self.tokens, self._token_value)]
        for pattern, replace in substitutions:
            if pattern is None:
                continue

            def counted(match: re.Match[str], replace=replace) -> str:
                nonlocal changed
                new = replace(match)
                changed += new != match[0]
                return new

            text = pattern.sub(counted, text)
        return text, changed

    def residuals(self, text: str) -> int:
        """How many identifying values survive in ``text`` (0 for a clean header)."""
        found = 0
        for pattern in (self.uids, self.dates):
            if pattern is not None:
                found += sum(1 for _ in pattern.finditer(text))
        if self.tokens is not None:
            found += sum(not _is_format_keyword(m) for m in self.tokens.finditer(text))
        for value in _named_values(text, self.fields):
            token = text[value.start:value.end]
            if self._field_value(self.fields[value.name], token) != token \
                    and self.fields[value.name] not in ("uid", "date"):
                found += 1  # a field that cleaning would still change was not cleaned
        return found


def _is_format_keyword(match: re.Match[str]) -> bool:
    """A name that is also XProtocol/ASCCONV syntax (``<Name>``, ``### ASCCONV END ###``)."""
    text, start, end = match.string, match.start(), match.end()
    if text[start - 1:start] == "<" and text[end:end + 1] == ">":
        return True
    return text.startswith("### ASCCONV", text.rfind("\n", 0, start) + 1)


def _alternation(values: Iterable[str]) -> str:
    return "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))


def _make_cleaner(findings: _Findings, key: bytes, date_shift_days: int | None,
                  retain_characteristics: bool, fields: Mapping[str, str]) -> _Cleaner:
    tokens = None
    if findings.tokens:
        tokens = re.compile(r"(?<![A-Za-z0-9])(?:" + _alternation(findings.tokens)
                            + r")(?![A-Za-z0-9])", re.IGNORECASE)
    forms = {form for d in findings.study_dates | findings.birth_dates
             for form in (d, f"{d[:4]}-{d[4:6]}-{d[6:]}")}
    forms |= {d[2:] for d in findings.study_dates if d.startswith("20")}  # YYMMDD in Siemens UIDs
    dates = re.compile(r"(?<!\d)(?:" + _alternation(forms) + r")(?!\d)") if forms else None
    uids = None
    if findings.uids:
        uids = re.compile(r"(?<![\d.])(?:" + _alternation(findings.uids) + r")(?!\d)(?!\.\d)")
    return _Cleaner(key, date_shift_days, retain_characteristics, fields, findings, tokens, dates,
                    uids)


def _clean_raid_header(raw: bytes, count: int, cleaner: _Cleaner) -> tuple[bytes, int]:
    """Blank each entry's patient name; clean its protocol name like header text."""
    out, changed = bytearray(raw), 0
    for k in range(count):
        entry = _RAID_ENTRIES_AT + k * _ENTRY.itemsize
        name = slice(entry + _PATNAME_AT, entry + _PATNAME_AT + _NAME_FIELD_SIZE)
        if any(out[name]):
            out[name] = bytes(_NAME_FIELD_SIZE)
            changed += 1
        protocol = slice(entry + _PROTNAME_AT, entry + _PROTNAME_AT + _NAME_FIELD_SIZE)
        text, n = cleaner.clean(out[protocol].decode("latin-1"))
        out[protocol] = text.encode("latin-1")
        changed += n
    return bytes(out), changed


def _raid_residuals(raw: bytes, count: int, cleaner: _Cleaner) -> int:
    found = 0
    for k in range(count):
        entry = _RAID_ENTRIES_AT + k * _ENTRY.itemsize
        found += any(raw[entry + _PATNAME_AT:entry + _PATNAME_AT + _NAME_FIELD_SIZE])
        protocol = raw[entry + _PROTNAME_AT:entry + _PROTNAME_AT + _NAME_FIELD_SIZE]
        found += cleaner.residuals(protocol.decode("latin-1"))
    return found


def _clean_measurement_header(raw: bytes, measurement: _Measurement,
                              cleaner: _Cleaner) -> tuple[bytes, int]:
    out, changed = bytearray(raw), 0
    for buffer in measurement.buffers:
        at = buffer.offset - measurement.offset
        text, n = cleaner.clean(raw[at:at + buffer.length].decode("latin-1"))
        out[at:at + buffer.length] = text.encode("latin-1")
        changed += n
    return bytes(out), changed


# --- streaming ------------------------------------------------------------------------------------

def _copy_through(fin, fout, start: int, end: int, digest, chunk: memoryview) -> None:
    """Copy ``[start, end)`` unchanged in chunks, hashing it (``fout`` None: hash only)."""
    fin.seek(start)
    remaining = end - start
    while remaining:
        n = fin.readinto(chunk[:min(len(chunk), remaining)])
        if not n:
            raise _Malformed("the file shrank while it was being read")
        digest.update(chunk[:n])
        if fout is not None:
            fout.write(chunk[:n])
        remaining -= n


def _raw_ranges(layout: _Layout) -> Iterator[tuple[int, int]]:
    pos = 0
    for start, end in layout.header_regions():
        yield pos, start
        pos = end
    yield pos, layout.size


def _cleaned_regions(fin, layout: _Layout, cleaner: _Cleaner) -> Iterator[tuple[bytes, int]]:
    if layout.kind == "VD":
        raw = _read_exact(fin, 0, _RAID_HEADER_SIZE, "the multi-raid header")
        yield _clean_raid_header(raw, len(layout.measurements), cleaner)
    for m in layout.measurements:
        raw = _read_exact(fin, m.offset, m.header_length, "a measurement header")
        yield _clean_measurement_header(raw, m, cleaner)


def _stream_clean(fin, fout, layout: _Layout, cleaner: _Cleaner) -> tuple[bytes, int]:
    """Write the cleaned file; returns the hash of the raw data and the replacement count."""
    digest, chunk, replacements, pos = hashlib.sha256(), memoryview(bytearray(_CHUNK)), 0, 0
    for (start, end), (header, n) in zip(layout.header_regions(),
                                         _cleaned_regions(fin, layout, cleaner), strict=True):
        _copy_through(fin, fout, pos, start, digest, chunk)
        fout.write(header)
        replacements += n
        pos = end
    _copy_through(fin, fout, pos, layout.size, digest, chunk)
    return digest.digest(), replacements


def _raw_digest(fh, layout: _Layout) -> bytes:
    digest, chunk = hashlib.sha256(), memoryview(bytearray(_CHUNK))
    for start, end in _raw_ranges(layout):
        _copy_through(fh, None, start, end, digest, chunk)
    return digest.digest()


def _header_residuals(fh, layout: _Layout, cleaner: _Cleaner) -> int:
    """Identifying values left in the header text, and in header bytes after the last buffer.

    The buffer names and lengths between the texts are format structure and are not scanned:
    a surname such as Phoenix must not fail every file.
    """
    found = 0
    for m in layout.measurements:
        raw = _read_exact(fh, m.offset, m.header_length, "a measurement header")
        for buffer in m.buffers:
            at = buffer.offset - m.offset
            found += cleaner.residuals(raw[at:at + buffer.length].decode("latin-1"))
        tail = m.buffers[-1].offset + m.buffers[-1].length - m.offset
        found += cleaner.residuals(raw[tail:].decode("latin-1"))
    if layout.kind == "VD":
        raw = _read_exact(fh, 0, _RAID_HEADER_SIZE, "the multi-raid header")
        found += _raid_residuals(raw, len(layout.measurements), cleaner)
    return found


def _twixtools_reopens(path: Path, layout: _Layout) -> str | None:
    """None when twixtools reads every measurement's header and first data block; else why not.

    twixtools' full read keeps Python objects for every channel of every block, so its memory
    grows with the file; the whole MDH chain is instead followed by ``_walk_blocks`` with
    twixtools' own MDH definitions, and the raw bytes are compared by hash.
    """
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            scans = twixtools.read_twix(str(path), parse_data=False, parse_pmu=False,
                                        parse_geometry=False, verbose=False)
        if len(scans) != len(layout.measurements):
            return "twixtools finds a different number of measurements in the cleaned file"
        with path.open("rb") as fh:
            for k, (scan, m) in enumerate(zip(scans, layout.measurements, strict=True), start=1):
                if not {b.name for b in m.buffers} <= set(scan["hdr"]):
                    return f"twixtools cannot parse the header buffers of cleaned measurement {k}"
                fh.seek(m.offset + m.header_length)
                block = Mdb(fh, layout.kind == "VD")
                if m.blocks and not (block.is_flag_set("SYNCDATA") or block.data.shape == (
                        block.mdh.UsedChannels, block.mdh.SamplesInScan)):
                    return f"twixtools cannot decode the data of cleaned measurement {k}"
    except Exception as err:  # noqa: BLE001 - twixtools raises whatever numpy/struct raise
        return f"twixtools cannot re-open the cleaned file ({type(err).__name__})"
    return None


def _verify(tmp: Path, layout: _Layout, raw_digest: bytes, cleaner: _Cleaner) -> str | None:
    """None when the written file is a faithful, clean copy; else the reason it is not."""
    with tmp.open("rb") as fh:
        try:
            written = _read_layout(fh, os.fstat(fh.fileno()).st_size, walk=True)
        except _Malformed as err:
            return f"the cleaned file does not parse ({err})"
        if written != layout:
            return "the cleaned file's layout differs from the input's"
        if _raw_digest(fh, written) != raw_digest:
            return "the cleaned file's raw data differs from the input's"
        residuals = _header_residuals(fh, written, cleaner)
        if residuals:
            return f"{residuals} identifying value(s) survive in the cleaned header"
    return _twixtools_reopens(tmp, layout)


def clean_twix(src: Path, dst: Path, key: bytes, date_shift_days: int | None,
               identifiers: Iterable[str],
               retain_patient_characteristics: bool = False) -> TwixResult:
    """De-identify ``src`` into ``dst`` (same length, raw data untouched), verified, atomically.

    ``identifiers`` are the subject's values known from elsewhere (DICOM name, ID, birth date);
    ``date_shift_days`` None removes dates instead of shifting them. On any failure nothing is
    left at ``dst`` and TwixError is raised.
    """
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise TwixError(src, "the output would overwrite the input")
    fields = load_phi_fields()
    with _open(src) as fin:
        layout = _checked_layout(fin, src, walk=True)
        try:
            texts = (text for m in layout.measurements for _, text in _buffer_texts(fin, m))
            findings = _find_identifiers(texts, fields, identifiers)
        except OSError as err:
            raise TwixError(src, f"cannot read: {err.strerror}") from None
        cleaner = _make_cleaner(findings, key, date_shift_days, retain_patient_characteristics,
                                fields)
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as fout:
                raw_digest, replacements = _stream_clean(fin, fout, layout, cleaner)
                fout.flush()
                os.fsync(fout.fileno())
            problem = _verify(tmp, layout, raw_digest, cleaner)
            if problem:
                raise TwixError(src, problem)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dst)
        except _Malformed as err:
            tmp.unlink(missing_ok=True)
            raise TwixError(src, str(err)) from None
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise TwixError(src, f"cannot write the cleaned copy: {err.strerror}") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return TwixResult(measurements=len(layout.measurements), bytes=layout.size,
                      replacements=replacements)


# --- naming ---------------------------------------------------------------------------------------

def twix_bids_name(subject: str, session: str | None, index: int) -> Path:
    """``sourcedata/sub-<s>/[ses-<t>/]sub-<s>[_ses-<t>]_run-<index>_twix.dat`` (dataset-relative).

    Built from labels only, so nothing of the original file name reaches the output.
    """
    if not subject.isalnum() or (session is not None and not session.isalnum()):
        raise ValueError("subject and session labels must be alphanumeric")
    if index < 1:
        raise ValueError("twix run index starts at 1")
    folder = Path("sourcedata", f"sub-{subject}") / (f"ses-{session}" if session else "")
    stem = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    return folder / f"{stem}_run-{index}_twix.dat"
