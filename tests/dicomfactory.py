"""Small real DICOM files for tests, written with pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid


def mr_slice(patient_id: str = "MRN0001", study_uid: str | None = None,
             series_uid: str | None = None, instance: int = 1, rows: int = 8,
             description: str = "t1_mprage_sag") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Doe^John"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = "MR"
    ds.SeriesDescription = description
    ds.SeriesNumber = 3
    ds.InstanceNumber = instance
    ds.StudyDate = "20240131"
    ds.ImagePositionPatient = [0.0, 0.0, float(instance)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 1.0
    ds.Rows = ds.Columns = rows
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = (np.arange(rows * rows, dtype=np.uint16) + instance).tobytes()
    return ds


def write(ds: Dataset, path: Path, preamble: bool = True) -> Path:
    """Save ``ds``; without ``preamble`` the file is a bare dataset (no preamble, no file meta)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        bare = ds.copy()
        del bare.file_meta
        bare.save_as(path, implicit_vr=False, little_endian=True)
    return path
