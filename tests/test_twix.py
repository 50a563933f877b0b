"""Siemens twix de-identification, on VB and VD/VE files the tests build themselves."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import twixtools
from hypothesis import given
from hypothesis import strategies as st
from twixfiles import MeasSpec, Planted, build_twix
from twixtools import hdr_def

from bidsdeid.deid.dates import shift_da
from bidsdeid.rawdata.twix import (
    TwixError,
    TwixInfo,
    clean_twix,
    is_twix,
    keyed_uid,
    read_twix_info,
    twix_bids_name,
)

KEY = bytes(range(32))
SHIFT = -7 * 5800
PLANTED = Planted()
LAYOUTS = {
    "VD": [MeasSpec("noise", 2, 2, 16), MeasSpec("gre", 4, 2, 32), MeasSpec("epi", 3, 3, 24)],
    "VB": [MeasSpec("gre", 5, 3, 32)],
}


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request) -> str:
    return request.param


@pytest.fixture
def built(tmp_path, layout):
    return build_twix(tmp_path / "meas_MID00412_Doe.dat", layout, LAYOUTS[layout], PLANTED)


@pytest.fixture
def cleaned(built, tmp_path) -> Path:
    dst = tmp_path / "out" / "sub-01_run-1_twix.dat"
    clean_twix(built.path, dst, KEY, SHIFT, PLANTED.identifiers())
    return dst


def _twix(path: Path) -> list[dict]:
    return twixtools.read_twix(str(path), parse_pmu=False, verbose=False)


def _header_text(path: Path) -> str:
    return "".join(scan["hdr"][f"{name}_raw"] for scan in _twix(path)
                   for name in ("Config", "Dicom", "Meas", "MeasYaps", "Phoenix", "Spice"))


def _header_lengths(path: Path, offsets: list[int]) -> list[int]:
    with path.open("rb") as fh:
        lengths = []
        for offset in offsets:
            fh.seek(offset)
            lengths.append(struct.unpack("<I", fh.read(4))[0])
    return lengths


# --- the test files themselves --------------------------------------------------------------------

def test_built_files_are_read_back_by_twixtools(built, layout):
    scans = twixtools.map_twix(str(built.path), verbose=False)
    assert len(scans) == len(LAYOUTS[layout]), "twixtools sees every measurement"
    for scan, data in zip(scans, built.data, strict=True):
        assert scan["hdr"]["Config"]["PatientName"] == PLANTED.patient_name
        got = np.squeeze(scan["image"][:]).reshape(data.shape)
        assert np.array_equal(got, data), "twixtools reads the planted samples"


# --- sniffing and header info ---------------------------------------------------------------------

def test_is_twix_recognises_the_layout(built):
    assert is_twix(built.path)


@pytest.mark.parametrize("content", [
    b"", b"hello", b"plain text notes about a scan\n" * 400, bytes(128) + b"DICM" + bytes(600),
    np.random.default_rng(1).bytes(20000),
], ids=["empty", "short", "text", "dicom", "random"])
def test_is_twix_rejects_other_files(tmp_path, content):
    path = tmp_path / "file.dat"
    path.write_bytes(content)
    assert not is_twix(path)


def test_read_twix_info_refuses_other_files(tmp_path):
    path = tmp_path / "notes.dat"
    path.write_bytes(b"plain text\n" * 100)
    with pytest.raises(TwixError):
        read_twix_info(path)


def test_read_twix_info_gives_the_fields_for_subject_matching(built, layout):
    assert read_twix_info(built.path) == TwixInfo(
        layout=layout, measurements=len(LAYOUTS[layout]), patient_id=PLANTED.patient_id,
        patient_name=PLANTED.patient_name, frame_of_reference=PLANTED.frame_of_reference,
        study_date=PLANTED.study_date)


# --- de-identification ----------------------------------------------------------------------------

def test_every_planted_identifier_is_gone_from_the_output_bytes(built, cleaned, layout):
    data = cleaned.read_bytes().lower()
    left = [n for n in PLANTED.needles(len(LAYOUTS[layout])) if n.lower() in data]
    assert not left, f"identifiers survive in the cleaned file: {left}"


def test_output_has_the_input_length(built, cleaned):
    assert cleaned.stat().st_size == built.path.stat().st_size


def test_everything_after_the_headers_is_bit_identical(built, cleaned):
    """MDHs and ADC samples: every byte after each measurement header is unchanged."""
    lengths = _header_lengths(built.path, built.measurement_offsets)
    assert lengths == _header_lengths(cleaned, built.measurement_offsets), "header lengths kept"
    src, dst = built.path.read_bytes(), cleaned.read_bytes()
    ends = [*built.measurement_offsets[1:], len(src)]
    for offset, length, end in zip(built.measurement_offsets, lengths, ends, strict=True):
        assert src[offset + length:end] == dst[offset + length:end], "raw data changed"


def test_twixtools_reads_identical_k_space_from_the_output(built, cleaned):
    scans = twixtools.map_twix(str(cleaned), verbose=False)
    for scan, data in zip(scans, built.data, strict=True):
        got = np.squeeze(scan["image"][:]).reshape(data.shape)
        assert got.view(np.uint32).tobytes() == data.view(np.uint32).tobytes()


def test_non_identifying_protocol_is_unchanged(built, cleaned):
    for before, after in zip(_twix(built.path), _twix(cleaned), strict=True):
        for buffer, key in [("MeasYaps", "sKSpace"), ("MeasYaps", "sSliceArray"),
                            ("Dicom", "SoftwareVersions"), ("Meas", "tPatientPosition"),
                            ("MeasYaps", "sProtConsistencyInfo"), ("Config", "MeasUID")]:
            assert after["hdr"][buffer][key] == before["hdr"][buffer][key], f"{buffer}.{key}"


def test_named_fields_are_blanked_in_every_buffer(cleaned):
    for scan in _twix(cleaned):
        hdr = scan["hdr"]
        assert hdr["Config"]["PatientName"] == "" and hdr["Config"]["PatientID"] == ""
        assert hdr["Dicom"]["tPatientName"] == "" and hdr["Dicom"]["InstitutionName"] == ""
        assert hdr["MeasYaps"]["tPatientName"] == "" and hdr["Phoenix"]["tPatientName"] == ""
        assert hdr["Config"]["flPatientAge"] == 0.0, "age is zeroed by default"


def test_patient_characteristics_are_kept_on_request(built, tmp_path):
    dst = tmp_path / "kept.dat"
    clean_twix(built.path, dst, KEY, SHIFT, PLANTED.identifiers(),
               retain_patient_characteristics=True)
    config = _twix(dst)[0]["hdr"]["Config"]
    assert (config["flPatientAge"], config["PatientSex"]) == (38.0, PLANTED.sex)


def test_dates_are_shifted_by_the_subject_offset(cleaned):
    shifted = shift_da(PLANTED.study_date, SHIFT)
    dicom = _twix(cleaned)[0]["hdr"]["Dicom"]
    assert str(int(dicom["StudyDate"])) == shifted
    assert f"{shifted}" in _header_text(cleaned), "the date in free text is shifted too"


def test_dates_are_removed_without_a_shift(built, tmp_path):
    dst = tmp_path / "nodates.dat"
    clean_twix(built.path, dst, KEY, None, PLANTED.identifiers())
    dicom = _twix(dst)[0]["hdr"]["Dicom"]
    assert dicom["StudyDate"] == "" and dicom["StudyTime"] == ""
    assert shift_da(PLANTED.study_date, SHIFT) not in _header_text(dst)


def test_uids_are_keyed_consistently_and_keep_their_length(cleaned):
    frames = {scan["hdr"]["Config"]["FrameOfReference"] for scan in _twix(cleaned)}
    assert frames == {keyed_uid(KEY, PLANTED.frame_of_reference)}, "one keyed FoR per study"
    (frame,) = frames
    assert len(frame) == len(PLANTED.frame_of_reference)
    assert frame != keyed_uid(b"another key", PLANTED.frame_of_reference)


@given(st.lists(st.integers(0, 10**12), min_size=6, max_size=12))
def test_keyed_uid_keeps_the_shape_of_a_uid(components):
    uid = ".".join(map(str, components))
    keyed = keyed_uid(KEY, uid)
    assert [len(p) for p in keyed.split(".")] == [len(p) for p in uid.split(".")]
    assert all(p.isdigit() and (len(p) == 1 or p[0] != "0") for p in keyed.split(".")), keyed


def test_caller_identifiers_are_removed_from_free_text(built, tmp_path):
    """The accession number sits in no named field: only the caller's list finds it."""
    kept, removed = tmp_path / "kept.dat", tmp_path / "removed.dat"
    clean_twix(built.path, kept, KEY, SHIFT, [])
    clean_twix(built.path, removed, KEY, SHIFT, [PLANTED.accession])
    assert PLANTED.accession.encode() in kept.read_bytes()
    assert PLANTED.accession.encode() not in removed.read_bytes()


def test_raid_header_patient_name_is_blanked(tmp_path):
    built = build_twix(tmp_path / "in.dat", "VD", LAYOUTS["VD"], PLANTED)
    dst = tmp_path / "out.dat"
    clean_twix(built.path, dst, KEY, SHIFT, [])
    raid = np.frombuffer(dst.read_bytes()[:hdr_def.MultiRaidFileHeader.itemsize],
                         dtype=hdr_def.MultiRaidFileHeader)[0]
    entries = raid["entry"][:len(LAYOUTS["VD"])]
    assert all(name == b"" for name in entries["patName_"])
    assert [p.decode() for p in entries["protName_"]] == [s.protocol for s in LAYOUTS["VD"]]


def test_result_reports_measurements_bytes_and_replacements(built, tmp_path, layout):
    result = clean_twix(built.path, tmp_path / "o.dat", KEY, SHIFT, PLANTED.identifiers())
    assert (result.measurements, result.bytes) == (len(LAYOUTS[layout]), built.path.stat().st_size)
    assert result.replacements > 20 * result.measurements


# --- failures write nothing -----------------------------------------------------------------------

def _cut_points(built) -> dict[str, int]:
    size = built.path.stat().st_size
    header_end = built.measurement_offsets[-1] + _header_lengths(
        built.path, built.measurement_offsets[-1:])[0]
    return {"in-header": header_end - 100, "in-data": (header_end + size) // 2,
            "before-acqend": size - 300}


@pytest.mark.parametrize("where", ["in-header", "in-data", "before-acqend"])
def test_truncated_file_raises_and_writes_nothing(built, tmp_path, where):
    os.truncate(built.path, _cut_points(built)[where])
    out = tmp_path / "out"
    with pytest.raises(TwixError, match="truncated"):
        clean_twix(built.path, out / "x.dat", KEY, SHIFT, [])
    assert not out.exists() or not any(out.iterdir()), "no output or temp file is left"


def test_corrupt_buffer_length_raises_and_writes_nothing(built, tmp_path):
    with built.path.open("r+b") as fh:  # first buffer length of the last measurement: huge
        fh.seek(built.measurement_offsets[-1] + 8 + len(b"Config\x00"))
        fh.write(struct.pack("<I", 0x7FFFFFFF))
    out = tmp_path / "out"
    with pytest.raises(TwixError, match="runs past its header"):
        clean_twix(built.path, out / "x.dat", KEY, SHIFT, [])
    assert not out.exists() or not any(out.iterdir())


def test_non_twix_file_raises(tmp_path):
    path = tmp_path / "notes.dat"
    path.write_bytes(b"plain text\n" * 100)
    with pytest.raises(TwixError):
        clean_twix(path, tmp_path / "out" / "x.dat", KEY, SHIFT, [])


def test_identifier_outside_the_buffers_fails_verification(built, tmp_path):
    """Header bytes after the last buffer are not text we may rewrite: refuse, write nothing."""
    offset = built.measurement_offsets[-1]
    header_length = _header_lengths(built.path, [offset])[0]
    with built.path.open("r+b") as fh:
        fh.seek(offset + header_length - 32)
        fh.write(PLANTED.patient_id.encode())
    out = tmp_path / "out"
    with pytest.raises(TwixError, match="survive"):
        clean_twix(built.path, out / "x.dat", KEY, SHIFT, PLANTED.identifiers())
    assert not any(out.iterdir()), "no output or temp file is left"


def test_names_that_are_format_keywords_keep_the_protocol_readable(tmp_path):
    """Surnames like End, Name or Phoenix go from the text but not from the file's syntax."""
    planted = Planted(patient_name="End^Name^Phoenix")
    built = build_twix(tmp_path / "in.dat", "VB", LAYOUTS["VB"], planted)
    dst = tmp_path / "out.dat"
    clean_twix(built.path, dst, KEY, SHIFT, planted.identifiers())
    (scan,) = _twix(dst)
    assert scan["hdr"]["MeasYaps"]["sKSpace"]["lBaseResolution"] == LAYOUTS["VB"][0].samples // 2
    assert "End^Name^Phoenix" not in scan["hdr"]["Spice_raw"]


def test_output_may_not_overwrite_the_input(built):
    with pytest.raises(TwixError, match="overwrite"):
        clean_twix(built.path, built.path, KEY, SHIFT, [])


def test_error_message_names_no_identifier(built, tmp_path):
    os.truncate(built.path, built.path.stat().st_size // 2)
    with pytest.raises(TwixError) as caught:
        clean_twix(built.path, tmp_path / "x.dat", KEY, SHIFT, PLANTED.identifiers())
    assert not any(n.decode() in caught.value.reason for n in PLANTED.needles(3))


# --- naming ---------------------------------------------------------------------------------------

def test_bids_name_uses_labels_only():
    assert twix_bids_name("01", "02", 3) == Path(
        "sourcedata/sub-01/ses-02/sub-01_ses-02_run-3_twix.dat")
    assert twix_bids_name("01", None, 1) == Path("sourcedata/sub-01/sub-01_run-1_twix.dat")


@pytest.mark.parametrize("subject,session,index", [("0-1", None, 1), ("01", "a b", 1),
                                                   ("01", None, 0)])
def test_bids_name_rejects_bad_labels(subject, session, index):
    with pytest.raises(ValueError):
        twix_bids_name(subject, session, index)
