"""A corpus of malformed and hostile inputs beside a few good series, for robustness tests.

``make_bad_corpus(root, outside)`` writes under ``root``:

* good series (each its own patient) that must be converted: a plain T1w, person names in
  ISO_IR 100, ISO_IR 192 (UTF-8), GB18030 and ISO 2022 IR 87 (Japanese, three component groups),
  and one whose SeriesDescription/ProtocolName carry path traversal and control characters;
* one file per malformed case (``BadCase``), each of which must give exactly one error line
  naming it: zero-byte, truncated header, truncated pixels, a wrong VR, a wrong value length, an
  undefined-length sequence without its delimiters, 5000 nested sequences, a huge declared
  element length, a pixel "zip bomb" (4 GB declared pixel length), missing Type 1 UIDs, a series
  with mixed geometry, corrupted JPEG pixel data, a text file named .dcm, a truncated twix file
  and a truncated SVS;
* symbolic links (a file and a folder) to DICOM under ``outside``, which must not be followed.

The malformed files sit in a folder named after a patient, so that a test can check that an error
about them writes no identifier into OUTPUT_DIR.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import slides
import twixfiles
from dicomfactory import mr_slice, write
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLosslessSV1, generate_uid

# The patient whose name is the folder of the malformed files (never allowed into OUTPUT_DIR).
PATH_PATIENT_NAME = "Wintergreen^Philomena"
PATH_FOLDER = "Wintergreen_Philomena_MRN77123"
# The malformed cases, in the order make_bad_corpus writes them.
CASE_NAMES = ("zero_byte", "truncated_header", "truncated_pixels", "pixel_zip_bomb",
              "huge_element_length", "wrong_vr", "wrong_value_length", "broken_sequence",
              "deep_sequence", "missing_type1", "not_dicom", "corrupt_jpeg", "mixed_geometry",
              "broken_twix", "broken_slide")
HOSTILE_TEXT = "t1_mprage ../../../../etc/passwd\r\n\x1b[2J\x00/..\\..\\x"


@dataclass(frozen=True)
class GoodSeries:
    patient_id: str
    patient_name: str       # as written (str, or bytes for a hand-encoded value)
    charset: str | list[str]
    files: tuple[Path, ...]


@dataclass(frozen=True)
class BadCase:
    """One malformed input: the file an error line must name and the words of its reason."""

    name: str
    path: Path
    reason: str  # lower-case words expected in the reason ("" when any clear reason will do)


@dataclass
class Corpus:
    root: Path
    good: list[GoodSeries] = field(default_factory=list)
    bad: list[BadCase] = field(default_factory=list)
    links: list[Path] = field(default_factory=list)
    slide_mapping: Path | None = None
    identifiers: tuple[str, ...] = ()  # values that must never be found in OUTPUT_DIR


def _series(root: Path, patient_id: str, name: object, charset: str | list[str] = "ISO_IR 6",
            n: int = 3, description: str = "t1_mprage_sag", protocol: str | None = None,
            study: str | None = None) -> tuple[Path, ...]:
    study, series = study or generate_uid(), generate_uid()
    paths = []
    for i in range(n):
        ds = mr_slice(patient_id, study, series, instance=i + 1, rows=16, description=description)
        ds.SpecificCharacterSet = charset
        ds.PatientName = name
        ds.ProtocolName = protocol or description
        paths.append(write(ds, root / f"{patient_id}_{i}.dcm"))
    return tuple(paths)


def _one_slice(patient_id: str = "MRN77123") -> Dataset:
    ds = mr_slice(patient_id, rows=16)
    ds.PatientName = PATH_PATIENT_NAME
    return ds


def _encoded(ds: Dataset) -> bytes:
    from pydicom.filebase import DicomBytesIO

    buf = DicomBytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _element_offset(data: bytes, tag: int) -> int:
    """Offset of an explicit VR little endian element's tag in ``data`` (first occurrence)."""
    needle = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    at = data.find(needle, 132)
    if at < 0:
        raise ValueError(f"tag {tag:08X} not in data")
    return at


def _patched(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new):]


def _pixel_length_offset(data: bytes) -> int:
    at = data.rfind(b"\xe0\x7f\x10\x00OW\x00\x00")
    if at < 0:
        raise ValueError("no explicit VR pixel data element")
    return at + 8


def bad_dicom_bytes() -> dict[str, tuple[bytes, str]]:
    """Case name -> (file bytes, expected reason words), each built from a valid slice."""
    good = _encoded(_one_slice())
    cases: dict[str, tuple[bytes, str]] = {}
    cases["zero_byte"] = (b"", "empty")
    cases["truncated_header"] = (good[:300], "truncated")
    cases["truncated_pixels"] = (good[:-100], "truncated")
    # a 4 GB pixel length on a 1 kB file: must be refused without allocating it
    at = _pixel_length_offset(good)
    cases["pixel_zip_bomb"] = (_patched(good, at, struct.pack("<I", 0xFFFFFFF0)), "")
    # StudyDate (DA, 2-byte length) declared 0xFFF0 bytes long: runs past the end of the file
    at = _element_offset(good, 0x00080020)
    cases["huge_element_length"] = (_patched(good, at + 6, struct.pack("<H", 0xFFF0)), "")
    # Rows (US) with VR bytes "ZZ": not a VR
    at = _element_offset(good, 0x00280010)
    cases["wrong_vr"] = (_patched(good, at + 4, b"ZZ"), "")
    # Rows (US) declared 3 bytes long: not a whole number of values (and shifts every element)
    cases["wrong_value_length"] = (_patched(good, at + 6, struct.pack("<H", 3)), "")
    cases["broken_sequence"] = (_broken_sequence_bytes(), "")
    cases["deep_sequence"] = (_deep_sequence_bytes(5000), "")
    return cases


def _broken_sequence_bytes() -> bytes:
    """A slice with an undefined-length sequence whose item and sequence delimiters are missing."""
    ds = _one_slice()
    body = _encoded(ds)
    at = _element_offset(body, 0x00180050)  # SliceThickness: insert the sequence before it
    seq = (struct.pack("<HH", 0x0008, 0x1140) + b"SQ\x00\x00" + struct.pack("<I", 0xFFFFFFFF)
           + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
           + struct.pack("<HH", 0x0008, 0x1150) + b"UI" + struct.pack("<H", 4) + b"1.2\x00")
    return body[:at] + seq + body[at:]


def _deep_sequence_bytes(depth: int) -> bytes:
    """A slice with ``depth`` nested undefined-length sequences (a recursion bomb, 180 kB)."""
    body = _encoded(_one_slice())
    at = _element_offset(body, 0x00180050)
    opening = (struct.pack("<HH", 0x0008, 0x1140) + b"SQ\x00\x00" + struct.pack("<I", 0xFFFFFFFF)
               + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF))
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return body[:at] + opening * depth + closing * depth + body[at:]


def _corrupt_jpeg_series(root: Path) -> Path:
    """Two JPEG Lossless slices whose fragments are noise; returns the series' first file."""
    study, series = generate_uid(), generate_uid()
    first = None
    for i in range(2):
        ds = mr_slice("MRN77123", study, series, instance=i + 1, rows=16,
                      description="t2_tse_tra")
        ds.PatientName = PATH_PATIENT_NAME
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + os.urandom(200)])
        ds["PixelData"].VR = "OB"
        path = write(ds, root / f"corrupt_jpeg_{i}.dcm")
        first = first or path
    return first


def _mixed_geometry_series(root: Path) -> Path:
    """One series UID whose slices have two matrix sizes; returns its first file."""
    study, series = generate_uid(), generate_uid()
    paths = []
    for i, rows in enumerate((16, 16, 8, 8)):
        ds = mr_slice("MRN77123", study, series, instance=i + 1, rows=rows,
                      description="flair_tra")
        ds.PatientName = PATH_PATIENT_NAME
        paths.append(write(ds, root / f"mixed_geometry_{i}.dcm"))
    return paths[0]


def make_bad_corpus(root: Path, outside: Path) -> Corpus:
    """Write the corpus (see the module docstring); ``outside`` must not be under ``root``."""
    corpus = Corpus(root)
    good = [
        ("MRN10001", "Plain^Patricia", "ISO_IR 6"),
        ("MRN10002", "Müller^Jürgen", "ISO_IR 100"),
        ("MRN10003", "Łukasiewicz^Żaneta", "ISO_IR 192"),
        ("MRN10004", "王^小明", "GB18030"),
        ("MRN10005", "Yamada^Tarou=山田^太郎=やまだ^たろう", ["", "ISO 2022 IR 87"]),
    ]
    for patient_id, name, charset in good:
        files = _series(root / "good" / patient_id, patient_id, name, charset)
        corpus.good.append(GoodSeries(patient_id, name, charset, files))
    hostile = _series(root / "good" / "MRN10006", "MRN10006", "Hostile^Harriet",
                      description=HOSTILE_TEXT, protocol="../" * 8 + "x\n\x07")
    corpus.good.append(GoodSeries("MRN10006", "Hostile^Harriet", "ISO_IR 6", hostile))

    bad_dir = root / PATH_FOLDER
    bad_dir.mkdir(parents=True)
    for name, (data, reason) in bad_dicom_bytes().items():
        path = bad_dir / f"{name}.dcm"
        path.write_bytes(data)
        corpus.bad.append(BadCase(name, path, reason))
    missing = _one_slice()
    del missing.SeriesInstanceUID
    corpus.bad.append(BadCase("missing_type1", write(missing, bad_dir / "missing_type1.dcm"),
                              "type 1"))
    (bad_dir / "not_dicom.dcm").write_text("Wintergreen Philomena: scan notes\n")
    corpus.bad.append(BadCase("not_dicom", bad_dir / "not_dicom.dcm", "not dicom"))
    corpus.bad.append(BadCase("corrupt_jpeg", _corrupt_jpeg_series(bad_dir), ""))
    corpus.bad.append(BadCase("mixed_geometry", _mixed_geometry_series(bad_dir), ""))

    twix = twixfiles.build_twix(bad_dir / "broken_twix.dat", "VD",
                                [twixfiles.MeasSpec(), twixfiles.MeasSpec("t1")])
    os.truncate(twix.path, twix.path.stat().st_size * 2 // 3)
    corpus.bad.append(BadCase("broken_twix", twix.path, "truncated"))
    slide = slides.build_svs(bad_dir / "broken_slide.svs", width=512, height=384)
    os.truncate(slide.path, slide.path.stat().st_size // 2)
    corpus.bad.append(BadCase("broken_slide", slide.path, ""))
    corpus.slide_mapping = root.parent / f"{root.name}_slides.tsv"
    corpus.slide_mapping.write_text(f"path\tpatient_id\n{PATH_FOLDER}/broken_slide.svs\tMRN10001\n")

    outside.mkdir(parents=True, exist_ok=True)
    _series(outside / "elsewhere", "MRN99999", "Outsider^Oscar")
    (root / "link_to_file.dcm").symlink_to(next((outside / "elsewhere").iterdir()))
    (root / "link_to_folder").symlink_to(outside / "elsewhere", target_is_directory=True)
    corpus.links = [root / "link_to_file.dcm", root / "link_to_folder"]

    names = [PATH_PATIENT_NAME, "Outsider^Oscar", "MRN99999", "MRN77123",
             twixfiles.Planted().patient_name, twixfiles.Planted().patient_id, slides.PATIENT]
    for series in corpus.good:
        names += [series.patient_id, series.patient_name]
    corpus.identifiers = tuple(_name_parts(names))
    assert tuple(case.name for case in corpus.bad) == CASE_NAMES
    return corpus


def _name_parts(values: list[str]) -> list[str]:
    """Whole values and their person-name components of 4+ characters (what a leak would show)."""
    parts = set()
    for value in values:
        parts.add(value)
        for group in value.split("="):
            parts.update(p for p in group.replace("^", " ").split()
                         if len(p) >= 4 or (len(p) >= 2 and not p.isascii()))
    return sorted(parts)
