"""Walk INPUT_DIR, classify each file by content, and group DICOM instances into series.

Only headers are read, so discovery of 10,000 files never loads pixel data: the first 64 kB of a
file, followed element by element (``bidsdeid.elements``), hold the few values discovery needs
in the common case; otherwise pydicom reads the header (``stop_before_pixels``). Symlinks are not followed unless asked, so nothing outside INPUT_DIR is read by accident.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from bidsdeid.elements import (
    UNDEFINED_LENGTH,
    ElementError,
    element_header,
    layout,
    short_value,
    spans,
)
from bidsdeid.records import Discovery, Failure, Series, SkippedFile

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".bif", ".mrxs", ".scn", ".vms", ".vmu"}
_MAX_HEADER_VALUE = 1024  # longer values (private blobs, overlays) are not heuristic material


def iter_files(root: Path, follow_symlinks: bool = False) -> Iterator[tuple[Path, str | None]]:
    """Yield (path, skip reason or None) for every entry under ``root``, streaming, sorted."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            yield Path(folder), f"unreadable folder ({exc.strerror})"
            continue
        subfolders = []
        for entry in entries:
            path = Path(entry.path)
            if entry.is_symlink() and not follow_symlinks:
                yield path, "symbolic link not followed"
            elif entry.is_dir(follow_symlinks=follow_symlinks):
                subfolders.append(path)
            elif entry.is_file(follow_symlinks=follow_symlinks):
                yield path, None
            else:
                yield path, "not a regular file"
        stack.extend(reversed(subfolders))


def sniff_dicom(head: bytes) -> bool:
    """True if ``head`` (first 132+ bytes) starts a DICOM file, with or without the preamble."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    # No preamble: the first element must be a plausible group 0002/0008 tag, explicit or
    # implicit VR little endian, as written by older scanners and some PACS exports.
    group, element = struct.unpack("<HH", head[:4])
    if group not in (0x0002, 0x0008) or element > 0x0100:
        return False
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    length = struct.unpack("<I", head[4:8])[0]
    return length < 1024


def _plain(value: Any) -> Any:
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, MultiValue | list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return None
    if isinstance(value, float | int | str):
        return value
    return str(value)


def header_summary(ds: Dataset) -> dict[str, Any]:
    """Top-level public, non-sequence elements as plain Python values (memory only)."""
    summary: dict[str, Any] = {}
    for elem in ds:
        if elem.tag.is_private or elem.VR == "SQ" or elem.tag.group in (0x7FE0, 0x6000):
            continue
        keyword = elem.keyword
        if not keyword or elem.value is None:
            continue
        value = _plain(elem.value)
        if value is None or len(str(value)) > _MAX_HEADER_VALUE:
            continue
        summary[keyword] = value
    return summary


def patient_key(ds: Dataset) -> str:
    """The subject's identity: PatientID, else name + birth date, else the study."""
    patient_id = str(ds.get("PatientID", "") or "").strip()
    if patient_id:
        return f"id:{patient_id}"
    name = str(ds.get("PatientName", "") or "").strip()
    birth = str(ds.get("PatientBirthDate", "") or "").strip()
    if name or birth:
        return f"name:{name}|{birth}"
    return f"study:{ds.get('StudyInstanceUID', '')}"


def _failure_reason(path: Path, exc: Exception) -> str:
    """Reason words for a file that failed to parse: generic, never a header value."""
    try:
        size = path.stat().st_size
    except OSError as stat_exc:
        return f"unreadable file ({stat_exc.strerror})"
    if size == 0:
        return "empty file"
    if isinstance(exc, PermissionError):
        return "unreadable file (permission denied)"
    if isinstance(exc, EOFError | struct.error) or "end of file" in str(exc).lower():
        return "truncated DICOM file"
    return f"invalid DICOM header ({type(exc).__name__})"


class TruncatedDicomError(EOFError):
    """The file ends before its pixel data does."""


def _check_pixel_data_complete(fp: BinaryIO, ds: Dataset, size: int) -> None:
    """Raise if an image's pixel data element is missing or runs past the end of the file.

    ``stop_before_pixels`` leaves ``fp`` at the pixel data element's tag, so its declared length
    can be checked against the file size without reading the pixels.
    """
    at_end = fp.tell() >= size
    sop_class = ds.get("SOPClassUID") or getattr(ds.get("file_meta"), "MediaStorageSOPClassUID", None)
    if sop_class == DICOMDIR_SOP_CLASS:
        return  # an index: no SOP instance of its own, no pixels
    if "Rows" not in ds:
        is_image = sop_class is not None and "Image Storage" in getattr(sop_class, "name", "")
        if at_end and (is_image or "SOPInstanceUID" not in ds):
            raise TruncatedDicomError("file ends inside the header")
        return  # not an image (SR, KO, ...): nothing to check
    head = fp.read(12)
    if len(head) < 8 or head[:4] != b"\xe0\x7f\x10\x00":
        if at_end:
            raise TruncatedDicomError("no pixel data before the end of the file")
        return  # big endian or another layout: leave it to the scrub stage's full read
    explicit = head[4:6].isalpha()
    length_offset, length_size = (8, 4) if explicit and head[4:6] in (b"OB", b"OW", b"OD", b"OF", b"OL", b"UN") else (4, 4)
    header_length = length_offset + length_size
    if len(head) < header_length:
        raise TruncatedDicomError("pixel data header cut short")
    (length,) = struct.unpack("<I", head[length_offset:header_length])
    value_start = fp.tell() - len(head) + header_length
    if length == 0xFFFFFFFF:
        if value_start + 8 > size:
            raise TruncatedDicomError("encapsulated pixel data cut short")
    elif value_start + length > size:
        raise TruncatedDicomError("pixel data runs past the end of the file")


def read_header(path: Path) -> Dataset:
    """Header without pixel data; raises ``TruncatedDicomError`` for a file cut short."""
    with path.open("rb") as fp:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
        _check_pixel_data_complete(fp, ds, os.fstat(fp.fileno()).st_size)
    return ds


def _instance_number(ds: Dataset) -> int:
    try:
        return int(ds.get("InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0


def tiff_problem(path: Path) -> str | None:
    """Why a TIFF file is broken (unreadable directories, image data past its end), or None.

    Only directories and offsets are read, never pixels: a truncated slide is named as broken
    instead of being skipped as "not a slide".
    """
    import tifffile

    try:
        size = path.stat().st_size
        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts)]
                if ends and max(ends) > size:
                    return "broken TIFF (image data past the end of the file)"
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types on hostile bytes
        return f"broken TIFF ({type(exc).__name__})"
    return None


_TWIX_BUFFER_NAME = re.compile(rb"[A-Za-z]\w{3,63}\x00")


def maybe_twix(head: bytes) -> bool:
    """Cheap first look for a Siemens twix file (before the full check, which needs twixtools).

    VD/VE files start with a raid header (small header size, 1-64 measurements); VB files with a
    measurement header: its length, the number of buffers, then a buffer name such as "Config".
    """
    if len(head) < 16:
        return False
    first, second = struct.unpack("<II", head[:8])
    if first < 10000:
        return 1 <= second <= 64
    return 1 <= second <= 64 and _TWIX_BUFFER_NAME.match(head, 8) is not None


def _is_slide_candidate(path: Path, head: bytes) -> bool:
    return path.suffix.lower() in _SLIDE_SUFFIXES or head[:4] in _TIFF_MAGICS


@dataclass(frozen=True)
class FileRecord:
    """What one file is: kind ("skip", "fail", "twix", "slide", "dicom") and, for DICOM, its
    series key and instance number. Plain values, so it can be kept in the discovery index."""

    kind: str
    reason: str = ""
    key: tuple[str, str, str] = ("", "", "")
    number: int = 0


# Tags the series key and order need, read by byte spans in the common case.
_PATIENT_ID, _STUDY_UID, _SERIES_UID = 0x00100020, 0x0020000D, 0x0020000E
_INSTANCE_NUMBER, _SOP_CLASS, _MEDIA_SOP_CLASS = 0x00200013, 0x00080016, 0x00020002
_DIRECTORY_RECORDS, _PIXEL_DATA = 0x00041220, 0x7FE00010
_KEY_TAGS = frozenset({_PATIENT_ID, _STUDY_UID, _SERIES_UID, _INSTANCE_NUMBER, _SOP_CLASS})
_FIRST_READ = 1 << 16
_PLAIN_INTEGER = re.compile(rb"[+-]?[0-9]+")


def _plain_text(value: bytes) -> str | None:
    """A single ASCII value as pydicom would give it, stripped; None when decoding may differ."""
    text = value.rstrip(b"\x00 ")
    if not text.isascii() or b"\\" in text or b"\x00" in text:
        return None
    return text.decode("ascii").strip()


def _spans_record(data: bytes, size: int) -> FileRecord | None:
    """The record of a plain little-endian image file, read by byte spans without pydicom.

    None whenever pydicom must decide (another encoding, odd values, no pixel data, a header
    longer than ``data``, DICOMDIR or slide instances, no Patient ID): same answer, slower path.
    """
    try:
        where = layout(data)
        found = spans(data, where.start, where.implicit, stop_tag=_PIXEL_DATA)
        pixel_at = found[-1].end if found else where.start
        if len(data) < pixel_at + 12:
            return None  # the pixel data header is beyond what was read, or missing
        tag, value_start, length = element_header(data, pixel_at, where.implicit)
    except ElementError:
        return None
    if tag != _PIXEL_DATA:
        return None
    if length == UNDEFINED_LENGTH:
        if value_start + 8 > size:
            raise TruncatedDicomError("encapsulated pixel data cut short")
    elif value_start + length > size:
        raise TruncatedDicomError("pixel data runs past the end of the file")
    values: dict[int, str] = {}
    for span in (*where.meta, *found):
        if span.tag in _KEY_TAGS or span.tag == _MEDIA_SOP_CLASS:
            text = _plain_text(short_value(data, span))
            if text is None:
                return None
            values[span.tag] = text
        elif span.tag == _DIRECTORY_RECORDS:
            return None
    sop_class = values.get(_SOP_CLASS) or values.get(_MEDIA_SOP_CLASS, "")
    patient, study, series = (values.get(t, "") for t in (_PATIENT_ID, _STUDY_UID, _SERIES_UID))
    number = values.get(_INSTANCE_NUMBER, "")
    if sop_class in (DICOMDIR_SOP_CLASS, WSI_SOP_CLASS) or not (patient and study and series):
        return None
    if number and not _PLAIN_INTEGER.fullmatch(number.encode()):
        return None
    return FileRecord("dicom", key=(f"id:{patient}", study, series),
                      number=int(number) if number else 0)


def _read_spans_record(path: Path) -> FileRecord | None:
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        data = fh.read(_FIRST_READ)
    return _spans_record(data, size)


def classify(path: Path) -> tuple[FileRecord, Dataset | None]:
    """Classify one file by its content; also returns the header of a DICOM instance."""
    from bidsdeid.rawdata.wsi import WsiError, detect_slide

    try:
        with path.open("rb") as fh:
            head = fh.read(256)
    except OSError as exc:
        return FileRecord("fail", f"unreadable file ({exc.strerror})"), None
    if not head:
        return FileRecord("fail", "empty file"), None
    if not sniff_dicom(head):
        if maybe_twix(head):
            from bidsdeid.rawdata.twix import is_twix  # twixtools: imported only when needed

            if is_twix(path):
                return FileRecord("twix"), None
        try:
            is_slide = _is_slide_candidate(path, head) and detect_slide(path) is not None
        except WsiError as exc:
            return FileRecord("fail", exc.reason), None
        if is_slide:
            return FileRecord("slide"), None
        problem = tiff_problem(path) if head[:4] in _TIFF_MAGICS else None
        if problem:
            return FileRecord("fail", problem), None
        if path.suffix.lower() == ".dcm":
            return FileRecord("fail", "named .dcm but not DICOM"), None
        return FileRecord("skip", "not DICOM, twix or a slide"), None
    try:
        record = _read_spans_record(path)
        if record is not None:
            return record, None
        ds = read_header(path)
        sop_class = str(ds.get("SOPClassUID", "")
                        or getattr(ds.get("file_meta"), "MediaStorageSOPClassUID", ""))
        if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
            return FileRecord("skip", "DICOMDIR index"), None
        if sop_class == WSI_SOP_CLASS:
            return FileRecord("slide"), None
        study = str(ds.get("StudyInstanceUID", "") or "")
        series = str(ds.get("SeriesInstanceUID", "") or "")
        if not study or not series:
            return FileRecord("fail", "missing Study/SeriesInstanceUID (Type 1)"), None
        return FileRecord("dicom", key=(patient_key(ds), study, series),
                          number=_instance_number(ds)), ds
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on hostile bytes
        return FileRecord("fail", _failure_reason(path, exc)), None


def _signature(path: Path) -> list[int] | None:
    """Size, times and inode: a file whose signature is unchanged need not be read again."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


@dataclass
class DiscoveryIndex:
    """Records of files already classified (and series header summaries), kept in the private
    dir so that each job of a participant array need not read every header of INPUT_DIR again.
    It holds header values: it lives only in the private dir, 0600."""

    files: dict[str, list] = field(default_factory=dict)  # path -> signature + record
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)  # series -> path + summary
    changed: bool = False

    @classmethod
    def load(cls, path: Path, follow_symlinks: bool) -> DiscoveryIndex:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        if data.get("version") != _INDEX_VERSION or data.get("follow_symlinks") != follow_symlinks:
            return cls()
        return cls(data.get("files", {}), data.get("headers", {}))

    def save(self, path: Path, follow_symlinks: bool) -> None:
        from bidsdeid.fsutil import atomic_write_text

        atomic_write_text(path, json.dumps({"version": _INDEX_VERSION,
                                            "follow_symlinks": follow_symlinks,
                                            "files": self.files, "headers": self.headers}),
                          mode=0o600)

    def lookup(self, path: Path, signature: list[int] | None) -> FileRecord | None:
        entry = self.files.get(str(path))
        if signature is None or entry is None or entry[:4] != signature:
            return None
        kind, reason, key, number = entry[4:]
        return FileRecord(kind, reason, tuple(key), number)

    def store(self, path: Path, signature: list[int] | None, record: FileRecord) -> None:
        if signature is not None:
            self.files[str(path)] = [*signature, record.kind, record.reason, list(record.key),
                                     record.number]
            self.changed = True


_INDEX_VERSION = 1


def discover(input_dir: Path, follow_symlinks: bool = False,
             index: DiscoveryIndex | None = None) -> Discovery:
    """Classify every file under ``input_dir`` and group DICOM instances into series.

    With an ``index``, files whose size, times and inode are unchanged are not read again; the
    index is updated (``index.changed``) and pruned to the files seen.
    """
    index = index if index is not None else DiscoveryIndex()
    seen: dict[str, list] = {}
    found = Discovery()
    groups: dict[tuple[str, str, str], list[tuple[int, Path]]] = {}
    first_header: dict[tuple[str, str, str], dict[str, Any]] = {}
    for path, skip in iter_files(input_dir, follow_symlinks):
        found.n_files += 1
        if skip:
            found.skipped.append(SkippedFile(path, skip))
            continue
        signature = _signature(path)
        record, ds = index.lookup(path, signature), None
        if record is None:
            record, ds = classify(path)
            index.store(path, signature, record)
        if str(path) in index.files:
            seen[str(path)] = index.files[str(path)]
        if record.kind == "skip":
            found.skipped.append(SkippedFile(path, record.reason))
        elif record.kind == "fail":
            found.failures.append(Failure(path, "discover", record.reason))
        elif record.kind == "twix":
            found.twix.append(path)
        elif record.kind == "slide":
            found.slides.append(path)
        else:
            if record.key not in first_header:  # decodes every element: once per series
                try:
                    first_header[record.key] = _first_header(path, ds, record, index)
                except Exception as exc:  # noqa: BLE001 - a value pydicom cannot decode
                    index.files.pop(str(path), None)
                    seen.pop(str(path), None)
                    found.failures.append(Failure(path, "discover", _failure_reason(path, exc)))
                    continue
            groups.setdefault(record.key, []).append((record.number, path))
    if len(seen) != len(index.files):
        index.files, index.changed = seen, True
    for key, members in groups.items():
        members.sort()
        header = dict(first_header[key], NumberOfFiles=len(members))
        found.series.append(Series(key[0], key[1], key[2], [p for _, p in members], header))
    found.series.sort(key=lambda s: (s.patient_key, s.study_uid, s.sort_key))
    return found


def _first_header(path: Path, ds: Dataset | None, record: FileRecord,
                  index: DiscoveryIndex) -> dict[str, Any]:
    """Header summary of a series' first file: from the index when it came from this file."""
    series = "|".join(record.key)
    cached = index.headers.get(series)
    if ds is None and cached is not None and cached.get("path") == str(path):
        return cached["summary"]
    summary = header_summary(ds if ds is not None else read_header(path))
    index.headers[series] = {"path": str(path), "summary": summary}
    index.changed = True
    return summary
