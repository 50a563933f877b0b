"""Synthetic MR DICOM tree with planted identifiers, for demos and end-to-end tests.

``make_demo(root)`` writes, without any download and deterministically for a seed, a small
multi-patient input that looks like a real scanner export:

* per study: localizer (3 planes), 3D T1w MPRAGE, T2w TSE, FLAIR, resting-state BOLD
  (10 volumes, 12 slices, slice timing in per-file AcquisitionTime) with its SBRef, DWI
  (b0 + 6 directions, b-values and vectors in the public tags (0018,9087)/(0018,9089)), a GRE
  field map (magnitude series with two echoes + phase difference) and a secondary-capture
  screenshot with the patient's name and ID burned into its pixels;
* the first patient has two studies on different dates, and its first study a repeated T1w;
* the images are a synthetic head (scalp, skull, CSF, grey and white matter, eyes, nose and jaw)
  so that defacing has a face to find;
* identifiers are planted in every usual place: patient, study, equipment and physician
  attributes, free text (StudyDescription, ImageComments, one SeriesDescription), UIDs built
  from the MRN and the study date, a private tag, nested sequences, dates and times, folder
  names, a DICOMDIR and non-DICOM side files (a note and a JPEG);
* file names are random hex, some with ``.dcm``, some without; some files have no preamble
  and no file meta (old-style implicit VR little endian).

``DemoManifest.tokens`` lists the strings that must never be found in a de-identified output
(compare case-insensitively); each ``PlantedPatient.tokens`` holds that patient's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_data_element, write_file_meta_info
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
)

# Demo UIDs deliberately embed the MRN and study date (as some PACS do) under a sub-arc of the
# pydicom/Medical Connections root that pydicom's generate_uid() does not use.
DEMO_UID_ROOT = "1.2.826.0.1.3680043.9.7000."

# Fictional identities: uncommon name parts (>= 4 letters) so a byte scan never matches ordinary
# words; phone numbers in the UK range reserved for drama (Ofcom 01632 960xxx).
_SURNAMES = ("Quackenbush", "Thistlewood", "Marchbanks", "Oyelaran", "Vandersloot",
             "Pennywhistle", "Abernathy", "Zabrowski")
_GIVEN_NAMES = ("Philomena", "Barnaby", "Ottoline", "Ignatius", "Wilhelmina", "Casimir",
                "Leocadia", "Thaddeus")
_STREETS = ("Larkspur Crescent", "Quillfeather Lane", "Brambleholt Road", "Nettlecombe Close")
_TOWNS = ("Wobbleton", "Glimmerford", "Ashcombe Parva", "Frobisham")
_INSTITUTION = "St Aldric Memorial Hospital"
_INSTITUTION_ADDRESS = "12 Orrin Way, Glimmerford Vale"
_REFERRING = "FENWICKE^YSOLDE^^DR"
_PERFORMING = "HALLORAN^DESMOND"
_OPERATOR = "TRASKEWICZ^ODALYS"
_STATION = "ALDRICMR07"
_SERIAL = "KQ4417802"
_PRIVATE_CREATOR = "BIDSDEID DEMO PATIENT"
_PRIVATE_GROUP = 0x0033

# Tissue labels of the phantom and their intensity per contrast.
_AIR, _SCALP, _SKULL, _CSF, _GREY, _WHITE, _FACE, _EYE = range(8)
_CONTRAST: dict[str, tuple[int, ...]] = {
    #          air scalp skull csf  grey white face  eye
    "T1w":   (0, 900, 80, 150, 450, 650, 400, 120),
    "T2w":   (0, 500, 60, 1200, 600, 400, 300, 1300),
    "FLAIR": (0, 600, 60, 100, 650, 450, 350, 120),
    "EPI":   (0, 300, 50, 900, 700, 550, 250, 800),
    "GRE":   (0, 700, 60, 500, 600, 650, 450, 500),
}
_DIFFUSIVITY = np.array([0, 1.0, 0.3, 3.0, 0.8, 0.7, 1.2, 3.0]) * 1e-3  # mm^2/s per label

_AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
_CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


@dataclass(frozen=True)
class PlantedPatient:
    """One synthetic patient and the identifier strings planted for it."""

    patient_id: str
    name: str  # DICOM PN form, FAMILY^GIVEN
    birth_date: str  # DICOM DA form
    tokens: frozenset[str]


@dataclass(frozen=True)
class DemoManifest:
    """What ``make_demo`` wrote: the input root, its patients and all planted tokens."""

    root: Path
    patients: tuple[PlantedPatient, ...]
    tokens: frozenset[str]


@dataclass(frozen=True)
class _Identity:
    family: str
    given: str
    mrn: str
    other_id: str
    birth: date
    sex: str
    address: str
    phone: str
    studies: tuple[_Study, ...]

    @property
    def dicom_name(self) -> str:
        return f"{self.family.upper()}^{self.given.upper()}"


@dataclass(frozen=True)
class _Study:
    index: int
    day: date
    start: datetime
    accession: str
    study_id: str
    repeat_t1w: bool


@dataclass(frozen=True)
class _Geometry:
    rows: int
    cols: int
    slices: int
    pixel_mm: float
    slice_mm: float
    orientation: tuple[float, ...]


@dataclass(frozen=True)
class _Protocol:
    """One acquisition of the demo protocol (Siemens-like names and parameters)."""

    description: str
    contrast: str
    geometry: _Geometry
    image_type: tuple[str, ...]
    scanning_sequence: str
    sequence_variant: str
    sequence_name: str
    acquisition_type: str
    repetition_ms: float
    echo_ms: tuple[float, ...]
    flip: float
    inversion_ms: float | None = None
    volumes: int = 1


_T1W = _Protocol("t1_mprage_sag_p2_iso", "T1w", _Geometry(48, 48, 40, 4.0, 4.0, _SAGITTAL),
                 ("ORIGINAL", "PRIMARY", "M", "ND", "NORM"), "GR\\IR", "SK\\SP\\MP",
                 "*tfl3d1_16ns", "3D", 2300, (2.98,), 9, inversion_ms=900)
_T2W = _Protocol("t2_tse_tra", "T2w", _Geometry(48, 48, 16, 4.0, 6.0, _AXIAL),
                 ("ORIGINAL", "PRIMARY", "M", "ND", "NORM"), "SE", "SK\\SP\\OSP",
                 "*tse2d1_15", "2D", 6000, (100.0,), 150)
_FLAIR = _Protocol("t2_tirm_tra_dark-fluid", "FLAIR", _Geometry(48, 48, 16, 4.0, 6.0, _AXIAL),
                   ("ORIGINAL", "PRIMARY", "M", "ND", "NORM"), "SE\\IR", "SK\\SP\\MP\\OSP",
                   "*tir2d1_16", "2D", 9000, (81.0,), 150, inversion_ms=2500)
_EPI_GEOMETRY = _Geometry(32, 32, 12, 6.0, 8.0, _AXIAL)
_SBREF = _Protocol("cmrr_mbep2d_bold_rest_SBRef", "EPI", _EPI_GEOMETRY,
                   ("ORIGINAL", "PRIMARY", "M", "ND", "NORM"), "EP", "SK\\SS", "epfid2d1_32",
                   "2D", 2000, (30.0,), 52)
_BOLD = _Protocol("cmrr_mbep2d_bold_rest", "EPI", _EPI_GEOMETRY,
                  ("ORIGINAL", "PRIMARY", "M", "ND", "NORM"), "EP", "SK\\SS", "epfid2d1_32",
                  "2D", 2000, (30.0,), 52, volumes=10)
_DWI = _Protocol("ep2d_diff_mddw_6dir_b1000", "EPI", _EPI_GEOMETRY,
                 ("ORIGINAL", "PRIMARY", "DIFFUSION", "NONE", "ND", "NORM"), "EP", "SK\\SP",
                 "ep_b0", "2D", 4000, (80.0,), 90, volumes=7)
_FMAP_MAGNITUDE = _Protocol("gre_field_mapping", "GRE", _EPI_GEOMETRY,
                            ("ORIGINAL", "PRIMARY", "M", "ND"), "GR", "SP", "*fm2d2r", "2D",
                            500, (4.92, 7.38), 60)
_FMAP_PHASEDIFF = _Protocol("gre_field_mapping", "GRE", _EPI_GEOMETRY,
                            ("ORIGINAL", "PRIMARY", "P", "ND"), "GR", "SP", "*fm2d2r", "2D",
                            500, (7.38,), 60)
_LOCALIZER = _Protocol("localizer", "GRE", _Geometry(48, 48, 1, 5.0, 7.0, _AXIAL),
                       ("ORIGINAL", "PRIMARY", "M", "ND", "NORM"), "GR", "SP", "*fl2d1", "2D",
                       8.6, (4.0,), 20)

_B_VALUE = 1000.0
_DIRECTIONS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1],
                        [0.7071, 0.7071, 0], [0.7071, 0, 0.7071], [0, 0.7071, 0.7071]])
_PIXEL_DATA = 0x7FE00010


def make_demo(root: Path, n_patients: int = 3, seed: int = 0) -> DemoManifest:
    """Write the demo DICOM tree under ``root`` (created) and return what was planted."""
    if not 1 <= n_patients <= len(_SURNAMES):
        raise ValueError(f"n_patients must be between 1 and {len(_SURNAMES)}, got {n_patients}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    identities = _identities(rng, n_patients)
    shared_folder = root / "incoming" / _hex(rng, 4)
    for number, identity in enumerate(identities):
        home = _patient_folder(root, rng, number, identity)
        for study in identity.studies:
            # A later visit, and the last patient, land in one folder of mixed uploads.
            mixed = study.index > 1 or number == len(identities) - 1 > 0
            _write_study(shared_folder if mixed else home / _hex(rng, 4), rng, identity, study)
        _write_side_files(home, rng, identity)
    _write_dicomdir(root / "DICOMDIR", identities)
    patients = tuple(
        PlantedPatient(i.mrn, i.dicom_name, i.birth.strftime("%Y%m%d"), _tokens(i))
        for i in identities
    )
    return DemoManifest(root, patients, frozenset().union(*(p.tokens for p in patients)))


def _identities(rng: np.random.Generator, n_patients: int) -> list[_Identity]:
    families = rng.permutation(len(_SURNAMES))[:n_patients]
    givens = rng.permutation(len(_GIVEN_NAMES))[:n_patients]
    identities = []
    for number in range(n_patients):
        birth = date(1950, 1, 1) + timedelta(days=int(rng.integers(0, 45 * 365)))
        n_studies = 2 if number == 0 else 1
        first_day = date(2023, 1, 9) + timedelta(days=int(rng.integers(0, 600)))
        studies = tuple(
            _study(rng, index + 1, first_day + timedelta(days=97 * index),
                   repeat=(number, index) == (0, 0))
            for index in range(n_studies)
        )
        identities.append(_Identity(
            family=_SURNAMES[families[number]],
            given=_GIVEN_NAMES[givens[number]],
            mrn=str(int(rng.integers(30_000_000, 99_999_999))),
            other_id=f"HX{int(rng.integers(100_000, 999_999))}Q",
            birth=birth,
            sex=("F", "M")[number % 2],
            address=f"{int(rng.integers(11, 98))} {_STREETS[number % len(_STREETS)]}, "
                    f"{_TOWNS[number % len(_TOWNS)]}",
            phone=f"+44 1632 960{int(rng.integers(100, 999))}",
            studies=studies,
        ))
    return identities


def _study(rng: np.random.Generator, index: int, day: date, repeat: bool) -> _Study:
    start = datetime.combine(day, datetime.min.time()) + timedelta(
        hours=int(rng.integers(8, 17)), minutes=int(rng.integers(0, 60)))
    return _Study(index, day, start, accession=f"ACC{int(rng.integers(10**7, 10**8))}",
                  study_id=f"E{int(rng.integers(10**6, 10**7))}", repeat_t1w=repeat)


def _tokens(identity: _Identity) -> frozenset[str]:
    birth = identity.birth
    name_parts = {identity.family, identity.given}
    tokens = {
        identity.dicom_name, f"{identity.given} {identity.family}",
        *name_parts, *(part.upper() for part in name_parts),
        identity.mrn, identity.other_id, f"{DEMO_UID_ROOT}{identity.mrn}",
        birth.strftime("%Y%m%d"), birth.isoformat(),
        identity.address, identity.address.split(", ")[0], identity.phone,
        _INSTITUTION, "Aldric", _INSTITUTION_ADDRESS, "Glimmerford",
        _REFERRING, "FENWICKE", "YSOLDE", _PERFORMING, "HALLORAN", _OPERATOR, "TRASKEWICZ",
        _STATION, _SERIAL,
    }
    for study in identity.studies:
        tokens |= {study.accession, study.study_id, study.day.strftime("%Y%m%d"),
                   study.day.isoformat()}
    return frozenset(tokens)


# ---------------------------------------------------------------------------------------------
# Folder layout


def _hex(rng: np.random.Generator, n_bytes: int = 6) -> str:
    return rng.bytes(n_bytes).hex()


def _patient_folder(root: Path, rng: np.random.Generator, number: int,
                    identity: _Identity) -> Path:
    # Exports often name folders after the patient: identifiers in input paths on purpose.
    if number % 2 == 0:
        return root / f"{identity.family.upper()}_{identity.given.upper()}_{identity.mrn}"
    return root / "export" / _hex(rng, 3) / f"{identity.mrn}"


def _write_side_files(folder: Path, rng: np.random.Generator, identity: _Identity) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scan_notes.txt").write_text(
        f"Scan notes for {identity.given} {identity.family} (MRN {identity.mrn}), "
        f"born {identity.birth.isoformat()}. Patient tolerated the scan well.\n")
    picture = _burned_in_picture(identity, (160, 120))
    picture.save(folder / f"{_hex(rng, 4)}.jpg", quality=90)


# ---------------------------------------------------------------------------------------------
# Studies and series


def _write_study(folder: Path, rng: np.random.Generator, identity: _Identity,
                 study: _Study) -> None:
    protocols: list[_Protocol] = [_LOCALIZER, _T1W]
    if study.repeat_t1w:
        protocols.append(_T1W)
    protocols += [_named_t2w(identity), _FLAIR, _SBREF, _BOLD, _DWI, _FMAP_MAGNITUDE,
                  _FMAP_PHASEDIFF]
    study_uid = f"{DEMO_UID_ROOT}{identity.mrn}.{study.day:%Y%m%d}.{study.index}"
    for number, protocol in enumerate(protocols, start=1):
        series_start = study.start + timedelta(minutes=4 * number)
        base = _base_dataset(identity, study, study_uid, number, protocol.description,
                             series_start)
        _write_mr_series(folder / _hex(rng, 2), rng, base, protocol, series_start)
    number = len(protocols) + 1
    shot_time = study.start + timedelta(minutes=4 * number)
    base = _base_dataset(identity, study, study_uid, number, "Screen Save", shot_time)
    _write_screenshot(folder, rng, base, identity)


def _named_t2w(identity: _Identity) -> _Protocol:
    # A technologist typed the patient into the description: free text must be cleaned too.
    return replace(_T2W, description=f"t2_tse_tra {identity.family.upper()} {identity.mrn}")


def _base_dataset(identity: _Identity, study: _Study, study_uid: str, series_number: int,
                  description: str, series_start: datetime) -> Dataset:
    """Attributes shared by every instance of one series (patient, study, series, equipment)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = f"{study.day:%Y%m%d}"
    ds.StudyTime = f"{study.start:%H%M%S}.000000"
    ds.SeriesTime = f"{series_start:%H%M%S}.000000"
    ds.AccessionNumber = study.accession
    ds.Manufacturer = "SIEMENS"
    ds.InstitutionName = _INSTITUTION
    ds.InstitutionAddress = _INSTITUTION_ADDRESS
    ds.ReferringPhysicianName = _REFERRING
    ds.StationName = _STATION
    ds.StudyDescription = f"BRAIN^ROUTINE {identity.family}"
    ds.SeriesDescription = description
    ds.InstitutionalDepartmentName = "Radiology Aldric Wing"
    ds.PerformingPhysicianName = _PERFORMING
    ds.OperatorsName = _OPERATOR
    ds.ManufacturerModelName = "Prisma_fit"
    ds.ReferencedPatientSequence = [_item(
        ReferencedSOPClassUID="1.2.840.10008.3.1.2.1.1",
        ReferencedSOPInstanceUID=f"{DEMO_UID_ROOT}{identity.mrn}.1")]
    ds.ProcedureCodeSequence = [_item(
        CodeValue="MRBRAIN", CodingSchemeDesignator="99ALDRIC",
        CodeMeaning=f"MR brain for {identity.family} {identity.mrn}")]
    ds.PatientName = identity.dicom_name
    ds.PatientID = identity.mrn
    ds.IssuerOfPatientID = _INSTITUTION
    ds.PatientBirthDate = f"{identity.birth:%Y%m%d}"
    ds.PatientSex = identity.sex
    ds.OtherPatientIDs = identity.other_id
    ds.OtherPatientIDsSequence = [_item(PatientID=identity.other_id,
                                        IssuerOfPatientID="Aldric Legacy RIS",
                                        TypeOfPatientID="TEXT")]
    age = (study.day - identity.birth).days // 365
    ds.PatientAge = f"{age:03d}Y"
    ds.PatientSize = 1.72
    ds.PatientWeight = 68.0
    ds.PatientAddress = identity.address
    ds.PatientTelephoneNumbers = identity.phone
    ds.BodyPartExamined = "HEAD"
    ds.DeviceSerialNumber = _SERIAL
    ds.SoftwareVersions = "syngo MR E11"
    ds.ProtocolName = description
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = f"{study_uid}.{series_number}"
    ds.StudyID = study.study_id
    ds.SeriesNumber = series_number
    ds.FrameOfReferenceUID = f"{study_uid}.0"
    ds.PositionReferenceIndicator = ""
    ds.ImageComments = (f"{identity.given} {identity.family}, MRN {identity.mrn}, "
                        f"DOB {identity.birth.isoformat()}, scanned {study.day.isoformat()}")
    ds.RequestAttributesSequence = [_item(
        RequestedProcedureID=study.accession,
        ScheduledProcedureStepID=f"{study.accession}.1",
        RequestedProcedureDescription=f"MRI brain {identity.dicom_name}",
        ReferencedStudySequence=[_item(ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
                                       ReferencedSOPInstanceUID=study_uid)],
    )]
    block = ds.private_block(_PRIVATE_GROUP, _PRIVATE_CREATOR, create=True)
    block.add_new(0x10, "LO", identity.dicom_name)
    block.add_new(0x11, "LO", identity.mrn)
    return ds


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _write_mr_series(folder: Path, rng: np.random.Generator, base: Dataset,
                     protocol: _Protocol, series_start: datetime) -> None:
    """One file per slice (and echo, and volume), like classic MR Image Storage exports."""
    _add_mr_attributes(base, protocol)
    writer = _SeriesWriter.for_series(folder, base)
    is_phase = "P" in protocol.image_type
    planes = _localizer_planes(protocol.geometry) if protocol is _LOCALIZER else _stack(
        protocol.geometry)
    labels = [_labels(points) for _, _, points in planes]
    instance_number = 1
    for volume in range(protocol.volumes):
        for echo_number, echo_ms in enumerate(protocol.echo_ms, start=1):
            b_value, direction = _diffusion(protocol, volume)
            for slice_index, (position, orientation, points) in enumerate(planes):
                time = series_start + timedelta(
                    milliseconds=volume * protocol.repetition_ms
                    + _slice_offset_ms(protocol, slice_index))
                instance: dict[str, Any] = {
                    "SOPInstanceUID": f"{base.SeriesInstanceUID}.{instance_number}",
                    "AcquisitionTime": f"{time:%H%M%S.%f}",
                    "ContentTime": f"{time:%H%M%S.%f}",
                    "EchoTime": echo_ms,
                    "EchoNumbers": 2 if is_phase else echo_number,  # Siemens: phasediff at TE2
                    "AcquisitionNumber": volume + 1,
                    "InstanceNumber": instance_number,
                    "ImagePositionPatient": [round(float(v), 4) for v in position],
                    "ImageOrientationPatient": list(orientation),
                    "SliceLocation": round(float(np.dot(position, _normal(orientation))), 4),
                }
                if protocol.volumes > 1:
                    instance["TemporalPositionIdentifier"] = volume + 1
                if protocol is _DWI:
                    instance["DiffusionBValue"] = b_value
                    instance["DiffusionGradientOrientation"] = [float(v) for v in direction]
                    instance["DiffusionDirectionality"] = "DIRECTIONAL" if b_value else "NONE"
                pixels = _pixels(rng, protocol, points, labels[slice_index], volume, b_value,
                                 direction, echo_ms)
                writer.write(rng, instance, pixels.tobytes())
                instance_number += 1


def _add_mr_attributes(base: Dataset, protocol: _Protocol) -> None:
    """MR Image and Image Pixel attributes common to all instances of the series."""
    g = protocol.geometry
    base.Modality = "MR"
    base.SOPClassUID = MRImageStorage
    base.ImageType = list(protocol.image_type)
    base.ScanningSequence = protocol.scanning_sequence
    base.SequenceVariant = protocol.sequence_variant
    base.ScanOptions = ""
    base.MRAcquisitionType = protocol.acquisition_type
    base.SequenceName = protocol.sequence_name
    base.SliceThickness = g.slice_mm
    base.SpacingBetweenSlices = g.slice_mm
    base.RepetitionTime = protocol.repetition_ms
    if protocol.inversion_ms is not None:
        base.InversionTime = protocol.inversion_ms
    base.NumberOfAverages = 1
    base.EchoTrainLength = {"EP": g.rows, "SE": 15}.get(protocol.scanning_sequence[:2], 1)
    base.ImagingFrequency = 123.25
    base.ImagedNucleus = "1H"
    base.MagneticFieldStrength = 3
    base.FlipAngle = protocol.flip
    base.PixelBandwidth = 2300 if protocol.scanning_sequence == "EP" else 240
    base.InPlanePhaseEncodingDirection = "COL"
    base.AcquisitionMatrix = [0, g.cols, g.rows, 0]
    base.TransmitCoilName = "Body"
    base.ReceiveCoilName = "HeadNeck_20"
    base.SamplesPerPixel = 1
    base.PhotometricInterpretation = "MONOCHROME2"
    base.Rows, base.Columns = g.rows, g.cols
    base.PixelSpacing = [g.pixel_mm, g.pixel_mm]
    base.BitsAllocated, base.BitsStored, base.HighBit = 16, 12, 11
    base.PixelRepresentation = 0
    if protocol.volumes > 1:
        base.NumberOfTemporalPositions = protocol.volumes
    if "P" in protocol.image_type:
        base.RescaleIntercept, base.RescaleSlope, base.RescaleType = -4096, 2, "US"


def _diffusion(protocol: _Protocol, volume: int) -> tuple[float, np.ndarray]:
    if protocol is not _DWI or volume == 0:
        return 0.0, np.zeros(3)
    return _B_VALUE, _DIRECTIONS[volume - 1]


def _slice_offset_ms(protocol: _Protocol, slice_index: int) -> float:
    """Interleaved ascending 2D acquisition; a 3D volume or localizer has one time."""
    n = protocol.geometry.slices
    if protocol.acquisition_type != "2D" or n == 1:
        return 0.0
    order = (tuple(range(0, n, 2)) + tuple(range(1, n, 2))).index(slice_index)
    return order * protocol.repetition_ms / n


# ---------------------------------------------------------------------------------------------
# Geometry and the head phantom (patient LPS coordinates, millimetres)


def _normal(orientation: tuple[float, ...]) -> np.ndarray:
    return np.cross(orientation[:3], orientation[3:])


def _plane(g: _Geometry, orientation: tuple[float, ...], offset_mm: float
           ) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """Top-left position and voxel-centre coordinates of one slice centred on the head."""
    row_dir, col_dir = np.array(orientation[:3]), np.array(orientation[3:])
    centre = np.array([0.0, -10.0, 0.0]) + offset_mm * _normal(orientation)
    first = (centre - (g.cols - 1) / 2 * g.pixel_mm * row_dir
             - (g.rows - 1) / 2 * g.pixel_mm * col_dir)
    r, c = np.mgrid[0:g.rows, 0:g.cols]
    points = (first + c[..., None] * g.pixel_mm * row_dir + r[..., None] * g.pixel_mm * col_dir)
    return first, orientation, points


def _stack(g: _Geometry) -> list[tuple[np.ndarray, tuple[float, ...], np.ndarray]]:
    return [_plane(g, g.orientation, (k - (g.slices - 1) / 2) * g.slice_mm)
            for k in range(g.slices)]


def _localizer_planes(g: _Geometry) -> list[tuple[np.ndarray, tuple[float, ...], np.ndarray]]:
    return [_plane(g, orientation, 0.0) for orientation in (_SAGITTAL, _CORONAL, _AXIAL)]


def _ellipsoid(points: np.ndarray, centre: tuple[float, float, float],
               radii: tuple[float, float, float]) -> np.ndarray:
    return np.sqrt((((points - np.array(centre)) / np.array(radii)) ** 2).sum(axis=-1))


def _labels(points: np.ndarray) -> np.ndarray:
    """Tissue label of each point: a cranium with brain, a face with eyes, nose and jaw."""
    labels = np.full(points.shape[:-1], _AIR, dtype=np.int8)
    face = ((_ellipsoid(points, (0, -42, -52), (56, 48, 42)) < 1)  # cheeks, mouth, jaw
            | (_ellipsoid(points, (0, -90, -22), (9, 13, 20)) < 1))  # nose
    labels[face] = _FACE
    r = _ellipsoid(points, (0, 5, 15), (70, 90, 80))
    labels[r < 1.0] = _SCALP
    labels[r < 0.92] = _SKULL
    labels[r < 0.84] = _CSF
    labels[r < 0.79] = _GREY
    labels[r < 0.62] = _WHITE
    ventricles = ((_ellipsoid(points, (-9, 10, 25), (6, 25, 10)) < 1)
                  | (_ellipsoid(points, (9, 10, 25), (6, 25, 10)) < 1))
    labels[ventricles] = _CSF
    eyes = ((_ellipsoid(points, (-30, -66, -8), (12, 12, 12)) < 1)
            | (_ellipsoid(points, (30, -66, -8), (12, 12, 12)) < 1))
    labels[eyes] = _EYE
    return labels


def _pixels(rng: np.random.Generator, protocol: _Protocol, points: np.ndarray,
            labels: np.ndarray, volume: int, b_value: float, direction: np.ndarray,
            echo_ms: float) -> np.ndarray:
    if "P" in protocol.image_type:
        # Smooth off-resonance inside the head, stored as Siemens-style 12-bit phase.
        phase = 2048 + 900 * np.sin(points[..., 0] / 40) * np.cos(points[..., 2] / 50)
        phase = np.where(labels > _AIR, phase, rng.uniform(0, 4095, labels.shape))
        return np.clip(phase, 0, 4095).astype("<u2")
    signal = np.array(_CONTRAST[protocol.contrast], dtype=float)[labels]
    if b_value:
        signal *= np.exp(-b_value * _DIFFUSIVITY[labels] * (0.6 + 0.8 * abs(direction[0])))
    if protocol.volumes > 1 and not b_value:
        signal *= 1 + 0.02 * np.sin(volume * 0.9 + points[..., 1] / 30)
    signal *= np.exp(-(echo_ms - protocol.echo_ms[0]) / 60)
    noisy = np.hypot(signal + rng.normal(0, 12, signal.shape), rng.normal(0, 12, signal.shape))
    return np.clip(noisy, 0, 4095).astype("<u2")


# ---------------------------------------------------------------------------------------------
# Screenshot, JPEG, DICOMDIR


def _burned_in_picture(identity: _Identity, size: tuple[int, int]) -> Image.Image:
    picture = Image.new("RGB", size, (0, 0, 0))
    draw = ImageDraw.Draw(picture)
    lines = (identity.dicom_name, f"ID {identity.mrn}", f"DOB {identity.birth:%Y-%m-%d}")
    font_size = max(8, size[1] // 9)
    font = ImageFont.load_default(size=font_size)
    while font_size > 8 and max(draw.textlength(line, font=font) for line in lines) > size[0] - 8:
        font_size -= 1
        font = ImageFont.load_default(size=font_size)
    for number, line in enumerate(lines):
        draw.text((6, 4 + number * (size[1] // 7)), line, fill=(255, 255, 255), font=font)
    return picture


def _write_screenshot(folder: Path, rng: np.random.Generator, base: Dataset,
                      identity: _Identity) -> None:
    """A secondary-capture 'screen save': a head slice with the patient burned into pixels."""
    width, height = 256, 192
    picture = _burned_in_picture(identity, (width, height))
    g = _Geometry(96, 96, 1, 2.0, 2.0, _AXIAL)
    _, _, points = _plane(g, _AXIAL, 0.0)
    slice_image = np.array(_CONTRAST["T1w"], dtype=float)[_labels(points)] / 900 * 255
    picture.paste(Image.fromarray(slice_image.astype(np.uint8)).convert("RGB"),
                  (width - 100, height - 100))
    ds = base
    ds.Modality = "OT"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.ConversionType = "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = height, width
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    writer = _SeriesWriter.for_series(folder, ds)
    writer.write(rng, {"SOPInstanceUID": f"{base.SeriesInstanceUID}.1"},
                 np.asarray(picture, dtype=np.uint8).tobytes(), raw=False)


@dataclass(frozen=True)
class _SeriesWriter:
    """Writes the instances of one series, encoding each distinct element only once.

    Building and encoding a pydicom Dataset per file made the demo several times slower. The
    attributes shared by the series are encoded once per transfer syntax, per-instance values
    that repeat (positions, echo times, b-values) once each, and the encoded elements are
    joined in tag order, which is all a DICOM data set is.
    """

    folder: Path
    sop_class: str
    pixel_vr: str
    shared: dict[bool, tuple[tuple[int, bytes], ...]]  # implicit VR? -> encoded elements
    _encoded: dict[tuple[str, object, bool], tuple[int, bytes]] = field(default_factory=dict)

    @classmethod
    def for_series(cls, folder: Path, shared: Dataset) -> _SeriesWriter:
        folder.mkdir(parents=True, exist_ok=True)
        pixel_vr = "OW" if shared.BitsAllocated > 8 else "OB"
        encoded = {implicit: tuple(_encode_element(element, implicit) for element in shared)
                   for implicit in (False, True)}
        return cls(folder, shared.SOPClassUID, pixel_vr, encoded)

    def write(self, rng: np.random.Generator, instance: dict[str, Any], pixels: bytes,
              raw: bool | None = None) -> None:
        """Write one file with a meaningless name; ``raw`` files lack preamble and meta."""
        kind = int(rng.integers(0, 4))
        name = _hex(rng) + (".dcm" if kind == 0 else "")
        raw = kind == 3 if raw is None else raw
        pixel_data = DataElement(_PIXEL_DATA, self.pixel_vr, pixels)
        elements = sorted(self.shared[raw]
                          + tuple(self._element(k, v, raw) for k, v in instance.items())
                          + (_encode_element(pixel_data, raw),))
        body = b"".join(encoded for _, encoded in elements)
        if raw:
            (self.folder / name).write_bytes(body)
            return
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = self.sop_class
        meta.MediaStorageSOPInstanceUID = instance["SOPInstanceUID"]
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        header = DicomBytesIO()
        header.is_little_endian, header.is_implicit_VR = True, False
        write_file_meta_info(header, meta)
        (self.folder / name).write_bytes(b"\0" * 128 + b"DICM" + header.getvalue() + body)

    def _element(self, keyword: str, value: Any, implicit_vr: bool) -> tuple[int, bytes]:
        key = (keyword, tuple(value) if isinstance(value, list) else value, implicit_vr)
        if key not in self._encoded:
            tag = tag_for_keyword(keyword)
            self._encoded[key] = _encode_element(
                DataElement(tag, dictionary_VR(tag), value), implicit_vr)
        return self._encoded[key]


def _encode_element(element: DataElement, implicit_vr: bool) -> tuple[int, bytes]:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit_vr
    write_data_element(fp, element)
    return int(element.tag), fp.getvalue()


def _write_dicomdir(path: Path, identities: list[_Identity]) -> None:
    """A DICOMDIR listing patients and studies (no image records): to be recognised, skipped."""
    records = []
    for identity in identities:
        records.append(_item(DirectoryRecordType="PATIENT", RecordInUseFlag=0xFFFF,
                             OffsetOfTheNextDirectoryRecord=0,
                             OffsetOfReferencedLowerLevelDirectoryEntity=0,
                             PatientName=identity.dicom_name, PatientID=identity.mrn,
                             PatientBirthDate=f"{identity.birth:%Y%m%d}"))
        for study in identity.studies:
            records.append(_item(DirectoryRecordType="STUDY", RecordInUseFlag=0xFFFF,
                                 OffsetOfTheNextDirectoryRecord=0,
                                 OffsetOfReferencedLowerLevelDirectoryEntity=0,
                                 StudyDate=f"{study.day:%Y%m%d}", StudyTime="120000",
                                 AccessionNumber=study.accession, StudyID=study.study_id,
                                 StudyDescription=f"BRAIN^ROUTINE {identity.family}"))
    ds = Dataset()
    ds.FileSetID = "DEMO"
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0
    ds.DirectoryRecordSequence = records
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    ds.file_meta.MediaStorageSOPInstanceUID = f"{DEMO_UID_ROOT}{identities[0].mrn}.9"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.preamble = b"\0" * 128
    dcmwrite(path, ds, enforce_file_format=True)
