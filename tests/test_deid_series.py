"""The series shortcut writes exactly what the full engine writes for each file alone."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from conftest import shared_path
from pydicom.uid import ImplicitVRLittleEndian

from bidsdeid.deid.apply import ScrubContext, scrub_file
from bidsdeid.deid.options import DeidOptions
from bidsdeid.deid.series import SeriesScrubber
from bidsdeid.deid.synthetic import PlantedSubject, csa2_header, mr_image
from bidsdeid.discover import discover

SUBJECT = PlantedSubject()
CTX = ScrubContext(key=b"k" * 32, date_shift_days=-41_000, participant_label="abc",
                   identifiers=frozenset({SUBJECT.patient_id, SUBJECT.patient_name}))


def _slice(instance: int, implicit: bool = False) -> pydicom.Dataset:
    ds = mr_image(SUBJECT, instance=instance)
    # Per-slice private values with identifiers in them, as Siemens CSA headers have.
    ds[0x00291010].value = csa2_header({"PatientIdentity": SUBJECT.patient_name,
                                        "SliceNumber": str(instance)})
    ds.add_new(0x00091002, "LO", f"slice {instance} of {SUBJECT.family}")
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def _write_series(folder: Path, datasets: list[pydicom.Dataset]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, ds in enumerate(datasets):
        path = folder / f"{number:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _compare(files: list[Path], tmp_path: Path, options: DeidOptions | None = None) -> int:
    """Scrub ``files`` both ways; assert identical bytes and counts; return shortcut files."""
    options = options or DeidOptions()
    series = SeriesScrubber(CTX, options)
    alone_dir, series_dir = tmp_path / "alone", tmp_path / "series"
    for number, src in enumerate(files):
        alone = scrub_file(src, alone_dir / f"{number}.dcm", CTX, options)
        together = series.scrub_file(src, series_dir / f"{number}.dcm")
        assert (series_dir / f"{number}.dcm").read_bytes() == \
            (alone_dir / f"{number}.dcm").read_bytes(), f"{src.name}: bytes differ"
        assert together.actions == alone.actions, f"{src.name}: action counts differ"
    return series.shortcut_files


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit-VR", "implicit-VR"])
def test_series_output_is_byte_identical_to_scrubbing_each_file_alone(tmp_path, implicit):
    files = _write_series(tmp_path / "in", [_slice(i, implicit) for i in range(1, 8)])
    shortcut = _compare(files, tmp_path)
    # Slice 1 has no SourceImageSequence, slice 2 becomes the template for slices 3-7.
    assert shortcut == 5


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit-VR", "implicit-VR"])
def test_bare_datasets_without_preamble_or_file_meta_take_the_shortcut_too(tmp_path, implicit):
    folder = tmp_path / "in"
    folder.mkdir()
    files = []
    for instance in range(1, 6):
        bare = _slice(instance).copy()
        del bare.file_meta
        files.append(folder / f"{instance}.dcm")
        bare.save_as(files[-1], implicit_vr=implicit, little_endian=True)
    assert _compare(files, tmp_path) == 3


def test_series_shortcut_holds_under_other_options(tmp_path):
    options = DeidOptions(retain_safe_private=True, retain_long_dates="full",
                          clean_descriptors=True)
    files = _write_series(tmp_path / "in", [_slice(i) for i in range(1, 6)])
    assert _compare(files, tmp_path, options) == 3


def test_a_file_of_another_patient_goes_through_the_full_engine(tmp_path):
    datasets = [_slice(i) for i in range(1, 6)]
    datasets[3].PatientID = "MRN00000001"
    files = _write_series(tmp_path / "in", datasets)
    # Slices 3 and 5 take the shortcut (slice 5 with the template made from slice 2); slice 4,
    # of another patient, goes through the full engine.
    assert _compare(files, tmp_path) == 2


def test_text_naming_the_files_own_instance_uid_is_cleaned_as_alone(tmp_path):
    datasets = [_slice(i) for i in range(1, 6)]
    for ds in datasets:
        ds.ImageComments = f"see {ds.SOPInstanceUID}"
    files = _write_series(tmp_path / "in", datasets)
    _compare(files, tmp_path)
    scrubbed = pydicom.dcmread(tmp_path / "series" / "4.dcm")
    assert datasets[4].SOPInstanceUID not in str(scrubbed.get("ImageComments", ""))


def test_a_private_element_dropped_in_one_file_only_keeps_the_output_exact(tmp_path):
    options = DeidOptions(retain_safe_private=True)
    datasets = [_slice(i) for i in range(1, 6)]
    datasets[3][0x00191028].value = 21.5  # a safe Siemens value that differs in one slice
    files = _write_series(tmp_path / "in", datasets)
    assert _compare(files, tmp_path, options) >= 2


def test_real_scanner_series_are_byte_identical(tmp_path):
    root = shared_path("dicom", "dcm_qa_In")
    multi_file = [s for s in discover(root).series if len(s.files) > 1]
    assert multi_file, "no multi-file dcm_qa series found"
    shortcut = 0
    for index, series in enumerate(multi_file):
        shortcut += _compare(series.files[:12], tmp_path / str(index))
    assert shortcut > 0, "the shortcut never applied to real files"
