"""bidsdeid.sanitize on real dcm2niix output of a small synthetic MR series built with pydicom.

The series carries identifiers everywhere dcm2niix may copy them (institution, device, free-text
comments naming the patient, dates); after sanitizing, none may remain in the JSON or in the
NIfTI bytes, while the image and its geometry stay exactly as dcm2niix wrote them.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from bidsdeid.deid.options import DeidOptions
from bidsdeid.sanitize import (
    NEUTRAL_DESCRIP,
    load_sidecar_policy,
    sanitize_nifti,
    sanitize_sidecar_file,
)

PATIENT_NAME = "Quintillian^Borrowdale"
PATIENT_ID = "MRN4471923"
IDENTIFIERS = (PATIENT_NAME, PATIENT_ID, "19610412")
INSTITUTION = "Fenwick Memorial Hospital"
INSTITUTION_ADDRESS = "12 Larkspur Lane, Otterburn"
DEPARTMENT = "Radiology Wing Zeta"
STATION = "FENWICKMR7"
SERIAL = "SN-88213"
ACQ_DATE = "20210315"
SHIFT_DAYS = -42
PROJECT_DEFAULTS = DeidOptions()
# Strings that must not be anywhere in the sanitized output under default options.
SECRETS = ("Quintillian", "Borrowdale", PATIENT_ID, "19610412", "Fenwick", "Larkspur",
           "Otterburn", "Zeta", STATION, SERIAL, "2021-03-15")


def write_mr_series(folder: Path, n_slices: int = 3, n_volumes: int = 1) -> None:
    """A small axial MR series (n_volumes x n_slices single-frame files) full of identifiers."""
    folder.mkdir(parents=True)
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(7)
    for volume in range(n_volumes):
        for z in range(n_slices):
            instance = volume * n_slices + z + 1
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MRImageStorage
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = pydicom.Dataset()
            ds.file_meta = meta
            ds.SOPClassUID = MRImageStorage
            ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.FrameOfReferenceUID = frame_uid
            ds.Modality, ds.Manufacturer = "MR", "SIEMENS"
            ds.ManufacturerModelName = "Prisma"
            ds.InstitutionName, ds.InstitutionAddress = INSTITUTION, INSTITUTION_ADDRESS
            ds.InstitutionalDepartmentName = DEPARTMENT
            ds.StationName, ds.DeviceSerialNumber = STATION, SERIAL
            ds.SoftwareVersions = "syngo MR E11"
            ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
            ds.PatientBirthDate, ds.PatientSex = "19610412", "F"
            ds.PatientAge, ds.PatientWeight = "060Y", "61"
            ds.ReferringPhysicianName = "Doctor^Hollyhock"
            ds.AccessionNumber, ds.StudyID = "ACC99120", "4471"
            ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = ACQ_DATE
            ds.StudyTime = ds.SeriesTime = "101500"
            ds.AcquisitionTime = f"1016{volume:02d}.250000"
            ds.ContentTime = ds.AcquisitionTime
            ds.StudyDescription = f"Brain for {PATIENT_NAME}"
            ds.SeriesDescription = f"t2 Borrowdale {PATIENT_ID}"
            ds.ProtocolName = "t2_tse_Borrowdale"
            ds.ImageComments = "patient Quintillian Borrowdale born 1961-04-12"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
            ds.SeriesNumber, ds.AcquisitionNumber, ds.InstanceNumber = 5, volume + 1, instance
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "SK", ""
            ds.MRAcquisitionType, ds.SequenceName = "2D", "*tse2d1_9"
            ds.EchoTime, ds.RepetitionTime, ds.FlipAngle = "90", "3000", "150"
            ds.MagneticFieldStrength, ds.ImagingFrequency = "3", "123.2"
            ds.SliceThickness, ds.SpacingBetweenSlices = "4", "4"
            ds.PixelSpacing = ["1.5", "1.25"]
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            ds.ImagePositionPatient = ["-6", "-5", str(-10 + 4 * z)]
            ds.SliceLocation = str(-10 + 4 * z)
            ds.PatientPosition = "HFS"
            ds.InPlanePhaseEncodingDirection = "COL"
            ds.Rows, ds.Columns = 10, 8
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.PixelData = rng.integers(0, 4000, (10, 8), dtype=np.uint16).tobytes()
            ds.save_as(folder / f"IM{instance:04d}.dcm", enforce_file_format=True)


def convert(dicom_dir: Path, out_dir: Path, anonymize: str = "y") -> tuple[Path, Path]:
    """Run the real dcm2niix as the pipeline does; returns (nifti, sidecar)."""
    dcm2niix = pytest.importorskip("dcm2niix", reason="the dcm2niix package is not installed")
    out_dir.mkdir(parents=True)
    subprocess.run([dcm2niix.bin, "-b", "y", "-ba", anonymize, "-z", "y", "-f", "series",
                    "-o", str(out_dir), str(dicom_dir)], check=True, capture_output=True)
    return out_dir / "series.nii.gz", out_dir / "series.json"


@pytest.fixture(scope="module")
def dicom_3d(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dicom") / "series3d"
    write_mr_series(folder)
    return folder


@pytest.fixture(scope="module")
def dicom_4d(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dicom") / "series4d"
    write_mr_series(folder, n_volumes=3)
    return folder


@pytest.fixture
def converted(dicom_3d, tmp_path) -> tuple[Path, Path]:
    return convert(dicom_3d, tmp_path / "out")


@pytest.fixture
def converted_unanonymized(dicom_3d, tmp_path) -> tuple[Path, Path]:
    """dcm2niix with its own anonymizer off (-ba n): every identifier reaches the sidecar."""
    return convert(dicom_3d, tmp_path / "out", anonymize="n")


def sanitize_both(nifti: Path, sidecar: Path, options: DeidOptions = PROJECT_DEFAULTS):
    stats = sanitize_sidecar_file(sidecar, load_sidecar_policy(), options, SHIFT_DAYS, IDENTIFIERS)
    sanitize_nifti(nifti)
    return stats


def leaked(data: bytes) -> list[str]:
    text = data.decode("latin-1").lower()
    return [secret for secret in SECRETS if secret.lower() in text]


def test_dcm2niix_output_carries_the_identifiers_this_suite_looks_for(converted_unanonymized):
    nifti, sidecar = converted_unanonymized
    assert leaked(sidecar.read_bytes()), "fixture check: the raw sidecar should hold identifiers"
    assert b"Quintillian" in gzip.decompress(nifti.read_bytes()), \
        "fixture check: dcm2niix copies ImageComments into aux_file"


def test_no_identifier_left_in_sidecar_even_without_dcm2niix_anonymizer(converted_unanonymized):
    nifti, sidecar = converted_unanonymized
    sanitize_both(nifti, sidecar)
    assert leaked(sidecar.read_bytes()) == [], "identifiers survived in the JSON sidecar"


def test_no_identifier_left_in_nifti_bytes(converted_unanonymized):
    nifti, sidecar = converted_unanonymized
    sanitize_both(nifti, sidecar)
    assert leaked(gzip.decompress(nifti.read_bytes())) == [], "identifiers survived in the NIfTI"


def test_descrip_and_aux_file_cleared_on_real_output(converted):
    nifti, sidecar = converted
    assert b"Time=" in nib.load(nifti).header["descrip"].item(), "fixture check: dcm2niix descrip"
    sanitize_both(nifti, sidecar)
    header = nib.load(nifti).header
    assert header["descrip"].item() == NEUTRAL_DESCRIP
    assert header["aux_file"].item() == b""


def test_voxels_and_affine_identical_after_sanitizing(converted):
    nifti, sidecar = converted
    before = nib.load(nifti)
    voxels, header = np.asanyarray(before.dataobj.get_unscaled()).copy(), before.header.copy()
    sanitize_both(nifti, sidecar)
    after = nib.load(nifti)
    assert np.array_equal(np.asanyarray(after.dataobj.get_unscaled()), voxels)
    assert after.get_data_dtype() == header.get_data_dtype()
    for key in ("qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x",
                "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z", "pixdim", "dim",
                "scl_slope", "scl_inter", "xyzt_units"):
        assert np.array_equal(after.header[key], header[key], equal_nan=True), f"{key} changed"


def test_4d_series_keeps_its_volumes_and_voxels(dicom_4d, tmp_path):
    nifti, sidecar = convert(dicom_4d, tmp_path / "out")
    before = nib.load(nifti)
    voxels = np.asanyarray(before.dataobj.get_unscaled()).copy()
    assert voxels.ndim == 4 and voxels.shape[3] == 3, "fixture check: dcm2niix made a 4D file"
    sanitize_both(nifti, sidecar)
    assert np.array_equal(np.asanyarray(nib.load(nifti).dataobj.get_unscaled()), voxels)


def test_acquisition_datetime_shifted_by_subject_offset(converted_unanonymized):
    nifti, sidecar = converted_unanonymized
    original = json.loads(sidecar.read_text())["AcquisitionDateTime"]
    assert original.startswith("2021-03-15T10:16:00"), "fixture check: dcm2niix date-time"
    sanitize_both(nifti, sidecar)
    # 2021-03-15 minus 42 days; the time of day is kept.
    assert json.loads(sidecar.read_text())["AcquisitionDateTime"] == "2021-02-01" + original[10:]


def test_institution_kept_only_with_its_option(converted_unanonymized):
    nifti, sidecar = converted_unanonymized
    sanitize_both(nifti, sidecar, replace(PROJECT_DEFAULTS, retain_institution_identity=True))
    result = json.loads(sidecar.read_text())
    assert result["InstitutionName"] == INSTITUTION
    assert "StationName" not in result, "device identity needs its own option"


def test_unknown_field_in_real_sidecar_dropped_and_reported(converted):
    nifti, sidecar = converted
    content = json.loads(sidecar.read_text())
    content["OperatorRemark"] = "scanned Borrowdale twice"
    sidecar.write_text(json.dumps(content))
    stats = sanitize_both(nifti, sidecar)
    assert "OperatorRemark" not in json.loads(sidecar.read_text())
    assert stats.fields["OperatorRemark:unknown-dropped"] == 1


def test_real_sidecar_of_synthetic_series_has_no_unknown_field(converted_unanonymized):
    nifti, sidecar = converted_unanonymized
    stats = sanitize_both(nifti, sidecar)
    unknown = [key for key in stats.fields if key.endswith(":unknown-dropped")]
    assert unknown == [], f"policy gaps: {unknown}"


def test_header_extension_added_to_real_output_is_removed(converted, tmp_path):
    nifti, sidecar = converted
    image = nib.load(nifti)
    image.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"comment: Borrowdale\0\0\0\0"))
    with_extension = tmp_path / "ext.nii.gz"
    nib.save(image, with_extension)
    shutil.move(with_extension, nifti)
    assert len(nib.load(nifti).header.extensions) == 1, "fixture check: extension written"
    sanitize_both(nifti, sidecar)
    assert len(nib.load(nifti).header.extensions) == 0
    assert b"Borrowdale" not in gzip.decompress(nifti.read_bytes())
