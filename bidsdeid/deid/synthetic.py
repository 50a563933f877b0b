"""Synthetic DICOM objects full of planted identifiers, for tests and benchmarks.

They are real, valid DICOM (MR Image and Secondary Capture IODs), with identifiers in the places
real scanners put them: patient module, visit, staff, site, device, free text, nested sequences,
a Siemens CSA header and an unknown vendor's private block.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, SecondaryCaptureImageStorage

ROOT = "1.2.826.0.1.3680043.10.999"   # test-only UID root for planted original UIDs


@dataclass(frozen=True)
class PlantedSubject:
    """Identifying values planted into a synthetic subject's headers."""
    family: str = "Doeberg"
    given: str = "Johnathan"
    patient_id: str = "MRN99887766"
    birth_date: str = "19650304"
    address: str = "42 Wallaby Way Sydney"
    phone: str = "+61 2 5550 1234"
    accession: str = "ACC55443322"
    study_id: str = "STU7788"
    referring: str = "Hippocrates^Gregory"
    operator: str = "Nightingale^Florence"
    institution: str = "Saint Elsewhere Hospital"
    institution_address: str = "669 Boylston Street Boston"
    department: str = "Neuroradiology West"
    station: str = "STATIONXR42"
    serial: str = "SN77441122"
    study_date: str = "20210315"

    @property
    def patient_name(self) -> str:
        return f"{self.family}^{self.given}"

    @property
    def birth_date_iso(self) -> str:
        return f"{self.birth_date[:4]}-{self.birth_date[4:6]}-{self.birth_date[6:]}"

    def tokens(self) -> list[str]:
        """Strings that must not survive de-identification anywhere in a file."""
        return [self.family, self.given, self.patient_id, self.birth_date, self.birth_date_iso,
                self.address, self.phone, self.accession, self.study_id, "Hippocrates",
                "Nightingale", self.institution, self.institution_address, self.department,
                self.station, self.serial, self.study_date]


def csa2_header(items: dict[str, str]) -> bytes:
    """A Siemens CSA2 (``SV10``) header with one string item per tag."""
    out = bytearray(b"SV10\x04\x03\x02\x01" + struct.pack("<2I", len(items), 77))
    for name, text in items.items():
        data = text.encode("latin-1") + b"\x00"
        out += struct.pack("<64si4s3i", name.encode(), 1, b"LO\x00\x00", 19, 1, 77)
        out += struct.pack("<4i", len(data), len(data), 77, len(data))
        out += data + b"\x00" * (-len(data) % 4)
    return bytes(out)


def _uid(*parts: object) -> str:
    return ".".join([ROOT, *map(str, parts)])


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "STATIONXR42"
    return meta


def _common(ds: pydicom.Dataset, s: PlantedSubject, subject: int, series: int, instance: int) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstanceCreationDate = s.study_date
    ds.InstanceCreationTime = "101500"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = s.study_date
    ds.StudyTime = "101010"
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "101500.123"
    ds.AccessionNumber = s.accession
    ds.Manufacturer = "SIEMENS"
    ds.InstitutionName = s.institution
    ds.InstitutionAddress = s.institution_address
    ds.ReferringPhysicianName = s.referring
    ds.StationName = s.station
    ds.StudyDescription = f"Brain research for {s.given} {s.family}"
    ds.SeriesDescription = f"T1 MPRAGE {s.patient_id}"
    ds.InstitutionalDepartmentName = s.department
    ds.OperatorsName = s.operator
    ds.ManufacturerModelName = "Prisma"
    ds.PatientName = s.patient_name
    ds.PatientID = s.patient_id
    ds.PatientBirthDate = s.birth_date
    ds.PatientSex = "F"
    ds.PatientAge = "094Y"
    ds.PatientAddress = s.address
    ds.PatientTelephoneNumbers = s.phone
    ds.OtherPatientIDsSequence = Sequence([pydicom.Dataset()])
    ds.OtherPatientIDsSequence[0].PatientID = s.patient_id + "B"
    ds.OtherPatientIDsSequence[0].TypeOfPatientID = "TEXT"
    ds.DeviceSerialNumber = s.serial
    ds.SoftwareVersions = "syngo MR XA30"
    ds.ProtocolName = f"t1_mprage {s.family}"
    ds.StudyInstanceUID = _uid(subject, 1)
    ds.SeriesInstanceUID = _uid(subject, 1, series)
    ds.StudyID = s.study_id
    ds.SeriesNumber = series
    ds.InstanceNumber = instance
    ds.ImageComments = f"call {s.phone} re {s.given}"
    ds.AdditionalPatientHistory = f"born {s.birth_date_iso}, seen at {s.institution}"
    ds.RequestAttributesSequence = Sequence([pydicom.Dataset()])
    ds.RequestAttributesSequence[0].RequestedProcedureID = s.accession
    ds.RequestAttributesSequence[0].ScheduledProcedureStepID = s.study_id


def _pixels(ds: pydicom.Dataset, rows: int, cols: int, seed: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    rng = np.random.default_rng(seed)
    ds.PixelData = rng.integers(0, 4096, size=(rows, cols), dtype=np.uint16).tobytes()


def mr_image(s: PlantedSubject = PlantedSubject(), subject: int = 1, series: int = 1,
             instance: int = 1, size: int = 16) -> pydicom.Dataset:
    """A valid MR Image Storage object with planted identifiers (incl. a CSA header)."""
    sop_instance = _uid(subject, 1, series, instance)
    ds = pydicom.Dataset()
    ds.file_meta = _file_meta(MRImageStorage, sop_instance)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_instance
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.Modality = "MR"
    _common(ds, s, subject, series, instance)
    ds.FrameOfReferenceUID = _uid(subject, 1, series, 0)
    ds.PositionReferenceIndicator = ""
    ds.Laterality = ""
    ds.PatientPosition = "HFS"
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SP"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D"
    ds.SequenceName = "*tfl3d1"
    ds.SliceThickness = "1"
    ds.RepetitionTime = "2300"
    ds.EchoTime = "2.98"
    ds.EchoTrainLength = "1"
    ds.ImagingFrequency = "123.2"
    ds.MagneticFieldStrength = "3"
    ds.ImagePositionPatient = [0, 0, instance]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.SliceLocation = str(instance)
    if instance > 1:  # references the first image of the series
        ref = pydicom.Dataset()
        ref.ReferencedSOPClassUID = MRImageStorage
        ref.ReferencedSOPInstanceUID = _uid(subject, 1, series, 1)
        ds.SourceImageSequence = Sequence([ref])
    ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
    ds.add_new(0x00291010, "OB", csa2_header({
        "ImaCoilString": "HeadNeck_20", "PatientIdentity": s.patient_name,
        "MRN": s.patient_id, "SliceMeasurementDuration": "17.5"}))
    ds.add_new(0x00190010, "LO", "SIEMENS MR HEADER")
    ds.add_new(0x0019100A, "US", 1)
    ds.add_new(0x00191028, "FD", 20.5)
    ds.add_new(0x00090010, "LO", "ACME PACS 01")
    ds.add_new(0x00091001, "LO", f"{s.patient_name} {s.patient_id}")
    _pixels(ds, size, size, seed=instance)
    return ds


def secondary_capture(s: PlantedSubject = PlantedSubject(), subject: int = 1,
                      series: int = 99) -> pydicom.Dataset:
    """A valid Secondary Capture Image Storage object with planted identifiers."""
    sop_instance = _uid(subject, 1, series, 1)
    ds = pydicom.Dataset()
    ds.file_meta = _file_meta(SecondaryCaptureImageStorage, sop_instance)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_instance
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    _common(ds, s, subject, series, 1)
    ds.PatientOrientation = ""
    _pixels(ds, 8, 8, seed=series)
    return ds
