"""The demo generator writes a realistic, identifier-laden DICOM tree that dcm2niix converts."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import require_tool

from bidsdeid.demo import DEMO_UID_ROOT, DemoManifest, make_demo
from bidsdeid.discover import discover
from bidsdeid.heuristics import NO_MATCH, assign_targets, load_heuristic
from bidsdeid.records import Discovery, Series

DCM2NIIX = Path(sys.executable).with_name("dcm2niix")
NOT_DICOM = {".txt", ".jpg"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoManifest:
    return make_demo(tmp_path_factory.mktemp("demo") / "input", n_patients=3, seed=0)


@pytest.fixture(scope="module")
def datasets(demo: DemoManifest) -> dict[Path, pydicom.Dataset]:
    """Every DICOM instance of the demo (headers only), by path; DICOMDIR excluded."""
    found = {}
    for path in sorted(demo.root.rglob("*")):
        if path.is_file() and path.suffix not in NOT_DICOM and path.name != "DICOMDIR":
            found[path] = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    return found


@pytest.fixture(scope="module")
def found(demo: DemoManifest) -> Discovery:
    """The demo as the discovery stage sees it."""
    return discover(demo.root)


@pytest.fixture(scope="module")
def series(found: Discovery) -> list[Series]:
    return found.series


@pytest.fixture(scope="module")
def converted(demo: DemoManifest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole demo converted by real dcm2niix, one output name per SeriesInstanceUID."""
    out = tmp_path_factory.mktemp("nifti")
    run = subprocess.run([str(DCM2NIIX), "-b", "y", "-z", "y", "-f", "%j", "-o", str(out),
                          str(demo.root)], capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "warning" not in run.stdout.lower(), run.stdout
    return out


def _by_description(series: list[Series], patient: str, text: str) -> list[Series]:
    return [s for s in series
            if s.header["PatientID"] == patient and text in s.header["SeriesDescription"]]


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


# --- generation ------------------------------------------------------------------------------


def test_same_seed_gives_identical_trees(tmp_path: Path) -> None:
    first = make_demo(tmp_path / "a", n_patients=1, seed=7)
    second = make_demo(tmp_path / "b", n_patients=1, seed=7)
    assert _tree_digest(first.root) == _tree_digest(second.root), "same seed, different bytes"
    assert first.tokens == second.tokens


def test_demo_is_small(demo: DemoManifest) -> None:
    size = sum(p.stat().st_size for p in demo.root.rglob("*") if p.is_file())
    assert size < 20 * 2**20, f"demo tree is {size / 2**20:.1f} MiB, expected < 20 MiB"


def test_rejects_more_patients_than_identities(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_patients"):
        make_demo(tmp_path, n_patients=0)


def test_every_token_is_really_planted_in_the_input(demo: DemoManifest) -> None:
    """A token absent from the input would make the output scan meaningless."""
    haystack = b"\n".join(
        [p.read_bytes().lower() for p in demo.root.rglob("*") if p.is_file()]
        + [str(p.relative_to(demo.root)).lower().encode() for p in demo.root.rglob("*")])
    missing = sorted(t for t in demo.tokens if t.lower().encode() not in haystack)
    assert not missing, f"tokens never planted: {missing}"


def test_tokens_are_distinctive(demo: DemoManifest) -> None:
    short = sorted(t for t in demo.tokens if len(t) < 4 or (t.isdigit() and len(t) < 7))
    assert not short, f"tokens that could match innocently: {short}"
    assert all(p.tokens <= demo.tokens for p in demo.patients)


def test_identifiers_are_planted_in_every_usual_place(
        demo: DemoManifest, datasets: dict[Path, pydicom.Dataset]) -> None:
    patient = demo.patients[0]
    ds = next(d for d in datasets.values()
              if d.PatientID == patient.patient_id and d.Modality == "MR")
    family = patient.name.split("^")[0]
    assert str(ds.PatientName) == patient.name
    assert ds.PatientBirthDate == patient.birth_date
    for keyword in ("OtherPatientIDs", "PatientAddress", "PatientTelephoneNumbers",
                    "InstitutionName", "InstitutionAddress", "ReferringPhysicianName",
                    "PerformingPhysicianName", "OperatorsName", "StationName",
                    "DeviceSerialNumber", "AccessionNumber", "StudyID", "StudyDate",
                    "SeriesDate", "AcquisitionDate", "ContentDate", "StudyTime", "SeriesTime",
                    "AcquisitionTime", "ContentTime"):
        assert str(ds.get(keyword, "")).strip(), f"{keyword} not planted"
    assert family.lower() in ds.StudyDescription.lower()
    assert patient.patient_id in ds.ImageComments
    for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
        assert uid.startswith(f"{DEMO_UID_ROOT}{patient.patient_id}.{ds.StudyDate}")
    private = ds.private_block(0x0033, "BIDSDEID DEMO PATIENT")
    name_tag = private[0x10].value  # UN (bytes) when read from an implicit VR file
    assert (name_tag.decode() if isinstance(name_tag, bytes) else name_tag).strip() == \
        patient.name, "private tag with the name"
    assert family in ds.RequestAttributesSequence[0].RequestedProcedureDescription
    assert patient.patient_id in ds.ProcedureCodeSequence[0].CodeMeaning
    assert patient.patient_id in ds.ReferencedPatientSequence[0].ReferencedSOPInstanceUID
    assert any(patient.patient_id in d.SeriesDescription for d in datasets.values()
               if d.PatientID == patient.patient_id), "a SeriesDescription with the MRN"


def test_files_are_messy_like_a_real_export(
        demo: DemoManifest, datasets: dict[Path, pydicom.Dataset]) -> None:
    preambles = {p.read_bytes()[128:132] == b"DICM" for p in datasets}
    assert preambles == {True, False}, "expected files with and without preamble"
    assert {p.suffix for p in datasets} == {"", ".dcm"}
    family = demo.patients[0].name.split("^")[0]
    assert any(family in part and demo.patients[0].patient_id in part
               for p in datasets for part in p.parts), "a folder named after the patient"
    dicomdir = pydicom.dcmread(demo.root / "DICOMDIR")
    assert dicomdir.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"
    assert {p.suffix for p in demo.root.rglob("*") if p.suffix in NOT_DICOM} == NOT_DICOM


def test_discovery_finds_every_series_and_skips_the_side_files(found: Discovery) -> None:
    assert not found.failures, found.failures
    assert len(found.series) == 41, "3 patients x 10 series, a second study, a repeated T1w"
    assert sorted(s.path.suffix or s.path.name for s in found.skipped) == [
        ".jpg", ".jpg", ".jpg", ".txt", ".txt", ".txt", "DICOMDIR"]


def test_first_patient_has_two_studies_and_a_repeated_t1w(
        demo: DemoManifest, series: list[Series]) -> None:
    first = demo.patients[0].patient_id
    studies = {s.study_uid for s in series if s.header["PatientID"] == first}
    dates = {s.header["StudyDate"] for s in series if s.header["PatientID"] == first}
    assert len(studies) == 2 and len(dates) == 2
    t1w = _by_description(series, first, "mprage")
    assert len(t1w) == 3, "two T1w in the first study, one in the second"


def test_screenshot_shows_the_patient_in_its_pixels(
        demo: DemoManifest, datasets: dict[Path, pydicom.Dataset]) -> None:
    require_tool("tesseract")
    import pytesseract

    patient = demo.patients[0]
    path = next(p for p, d in datasets.items()
                if d.PatientID == patient.patient_id and d.Modality == "OT")
    text = pytesseract.image_to_string(pydicom.dcmread(path).pixel_array)
    assert patient.patient_id in text, f"OCR found {text!r}"
    assert patient.name.split("^")[0] in text.upper()


# --- conversion by real dcm2niix -------------------------------------------------------------


def _output(converted: Path, series: Series, suffix: str = "") -> Path:
    return converted / f"{series.series_uid}{suffix}.nii.gz"


def _sidecar(nifti: Path) -> dict[str, object]:
    return json.loads(nifti.with_name(nifti.name.replace(".nii.gz", ".json")).read_text())


def test_t1w_converts_to_a_3d_volume(converted: Path, demo: DemoManifest,
                                     series: list[Series]) -> None:
    t1w = _by_description(series, demo.patients[1].patient_id, "mprage")[0]
    image = nib.load(_output(converted, t1w))
    assert image.shape == (40, 48, 48)
    assert nib.aff2axcodes(image.affine)[0] in "LR", "sagittal slices along left-right"
    assert _sidecar(_output(converted, t1w))["InversionTime"] == 0.9


def test_bold_converts_to_10_volumes_with_slice_timing(
        converted: Path, demo: DemoManifest, series: list[Series]) -> None:
    bold = next(s for s in _by_description(series, demo.patients[1].patient_id, "bold_rest")
                if "SBRef" not in s.header["SeriesDescription"])
    image = nib.load(_output(converted, bold))
    assert image.shape == (32, 32, 12, 10)
    sidecar = _sidecar(_output(converted, bold))
    assert sidecar["RepetitionTime"] == 2
    timing = np.array(sidecar["SliceTiming"])
    assert timing.shape == (12,) and timing.min() == 0 and timing.max() < 2
    assert np.all(np.argsort(timing, kind="stable")[:6] % 2 == 0), "interleaved, even first"


def test_dwi_converts_with_bval_and_bvec(converted: Path, demo: DemoManifest,
                                         series: list[Series]) -> None:
    dwi = _by_description(series, demo.patients[1].patient_id, "diff")[0]
    stem = converted / dwi.series_uid
    bvals = np.loadtxt(f"{stem}.bval")
    bvecs = np.loadtxt(f"{stem}.bvec")
    assert bvals.tolist() == [0] + [1000] * 6
    assert bvecs.shape == (3, 7)
    assert np.allclose(np.linalg.norm(bvecs[:, 1:], axis=0), 1, atol=1e-3)
    assert nib.load(_output(converted, dwi)).shape == (32, 32, 12, 7)


def test_field_map_echoes_are_split_and_phase_is_marked(
        converted: Path, demo: DemoManifest, series: list[Series]) -> None:
    magnitude, phasediff = sorted(
        _by_description(series, demo.patients[1].patient_id, "gre_field_mapping"),
        key=lambda s: s.series_number)
    echo1, echo2 = _output(converted, magnitude, "_e1"), _output(converted, magnitude, "_e2")
    assert _sidecar(echo1)["EchoTime"] == pytest.approx(0.00492)
    assert _sidecar(echo2)["EchoTime"] == pytest.approx(0.00738)
    phase = _output(converted, phasediff, "_e2_ph")
    assert "P" in _sidecar(phase)["ImageType"]


# --- the default heuristic on the demo -------------------------------------------------------


def test_default_heuristic_maps_every_demo_series(demo: DemoManifest,
                                                  series: list[Series]) -> None:
    heuristic = load_heuristic("default")
    sessions: dict[str, list[Series]] = defaultdict(list)
    for item in series:
        sessions[item.study_uid].append(item)
    expected_once = {
        "anat/T2w", "anat/FLAIR", "func/task-rest_sbref", "func/task-rest_bold", "dwi/dwi",
        "fmap/phasediff", "fmap/magnitude",
    }
    first = demo.patients[0].patient_id
    first_visit = min(s.header["StudyDate"] for s in series if s.header["PatientID"] == first)
    for study_uid, members in sessions.items():
        assign_targets(members, heuristic)
        names = sorted(f"{s.target.datatype}/{s.target.stem('x', None)[6:]}"
                       for s in members if s.target)
        repeated = (members[0].header["PatientID"], members[0].header["StudyDate"]) == (
            first, first_visit)
        t1w = {"anat/run-1_T1w", "anat/run-2_T1w"} if repeated else {"anat/T1w"}
        assert sorted(expected_once | t1w) == names, f"session {study_uid[-12:]}"
        skipped = {s.header["SeriesDescription"]: s.skip_reason for s in members
                   if s.skip_reason}
        assert set(skipped) == {"localizer", "Screen Save"}, skipped
        assert NO_MATCH not in skipped.values()
