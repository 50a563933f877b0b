"""Builder of synthetic Siemens twix (.dat) files for tests and benchmarks.

The layout follows twixtools (hdr_def.py, twixtools.read_twix, mdb.py, mdh_def.py):

* VD/VE: a MultiRaidFileHeader (8 bytes + 64 x 152-byte entries) padded to 10240 bytes; then per
  measurement a header (uint32 header length, uint32 buffer count, per buffer ``name\\0``, uint32
  length, text) followed by MDH+ADC blocks (one 192-byte scan header, then per channel a 32-byte
  channel header and the samples) ending with an ACQEND block; measurements are 512-byte aligned.
* VB: a single measurement at offset 0 whose header is at least 10000 bytes long (twixtools tells
  VB from VD by that) and, per ADC, one 128-byte MDH before every channel's samples.

The header buffers (Config, Dicom, Meas, MeasYaps, Phoenix, Spice) carry planted identifiers in
XProtocol (``<ParamString."PatientName">  { "Doe^John" }``) and ASCCONV (``tPatientName =
""Doe^John""``) syntax, in named fields and in free text, so that a test can check every one is
gone from a de-identified copy.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from twixtools import hdr_def, mdh_def

BUFFER_NAMES = ("Config", "Dicom", "Meas", "MeasYaps", "Phoenix", "Spice")
RAID_HEADER_SPACE = 10240
ALIGN = 512
VB_MIN_HEADER = 10240
ACQEND_SAMPLES = 16
HEADER_TAIL = 40  # bytes after the last buffer, inside the header length


@dataclass(frozen=True)
class Planted:
    """The identifiers a synthetic file carries (every buffer holds several of them)."""

    patient_name: str = "Doe^Johnathan"
    patient_id: str = "PAT0042917"
    birth_date: str = "19800517"
    sex: int = 2
    age: str = "38.000000"
    weight: str = "81.500000"
    height: str = "1780.000000"
    institution: str = "Springfield General Hospital"
    institution_address: str = "742 Evergreen Terrace Springfield"
    device_serial: str = "45074"
    operator: str = "Smithers^Waylon"
    referring_physician: str = "Hibbert^Julius"
    study_date: str = "20190213"
    study_time: str = "105815"
    accession: str = "ACC778812"  # only in free text: found by value, from the caller's list

    @property
    def frame_of_reference(self) -> str:
        return (f"1.3.12.2.1107.5.2.19.{self.device_serial}.1."
                f"{self.study_date}{self.study_time}234567.0.0.0")

    def series_uid(self, index: int) -> str:
        return (f"1.3.12.2.1107.5.2.19.{self.device_serial}."
                f"{self.study_date}{self.study_time}{index:02d}65123456")

    def identifiers(self) -> list[str]:
        """What the DICOM side of the pipeline hands over for this subject."""
        return [self.patient_name, self.patient_id, self.birth_date, self.accession]

    def needles(self, n_measurements: int) -> list[bytes]:
        """Every planted identifying string, for a byte scan of a de-identified file."""
        values = [
            *self.patient_name.split("^"), self.patient_name, self.patient_id, self.birth_date,
            self.accession,
            self.institution, self.institution_address, self.device_serial,
            *self.operator.split("^"), *self.referring_physician.split("^"),
            self.study_date, self.study_date[2:] + self.study_time, self.frame_of_reference,
            *(self.series_uid(i) for i in range(n_measurements)),
        ]
        return [v.encode("latin-1") for v in values]


@dataclass(frozen=True)
class MeasSpec:
    """One measurement: its protocol name and the size of its k-space."""

    protocol: str = "gre"
    lines: int = 4
    channels: int = 2
    samples: int = 32


@dataclass
class BuiltTwix:
    path: Path
    layout: str
    data: list[np.ndarray] = field(default_factory=list)  # per measurement (lines, cha, col)
    measurement_offsets: list[int] = field(default_factory=list)


# --- header text ---------------------------------------------------------------------------------

def _xprot(name: str, params: list[str]) -> str:
    body = "\n".join(f"    {p}" for p in params)
    return (f'<XProtocol> \n{{\n  <Name> "{name}" \n  <ParamMap."">\n  {{\n{body}\n  }}\n}}\n')


def _ascconv(lines: list[str]) -> str:
    body = "\n".join(f"{name:<40} = {value}" for name, value in
                     (line.split(" = ", 1) for line in lines))
    return f"### ASCCONV BEGIN ###\n{body}\n### ASCCONV END ###\n"


def header_buffers(p: Planted, index: int, spec: MeasSpec) -> dict[str, str]:
    """The six header buffers of measurement ``index``, with identifiers planted in each."""
    name, pid, birth, dt = p.patient_name, p.patient_id, p.birth_date, p.study_date
    exam_uid = f"1.3.12.2.1107.5.2.19.{p.device_serial}.30000019021308141178100000005"
    config = _xprot("Config", [
        f'<ParamString."PatientName">  {{ "{name}"  }}',
        f'<ParamString."tPatientName">  {{ "{name}"  }}',
        f'<ParamString."PatientID">  {{ "{pid}"  }}',
        f'<ParamString."PatientBirthDay">  {{ "{birth}"  }}',
        f'<ParamLong."PatientSex">  {{ {p.sex}  }}',
        f'<ParamDouble."flPatientAge">  {{ <Precision> 6  {p.age}  }}',
        f'<ParamDouble."flUsedPatientWeight">  {{ <Precision> 6  {p.weight}  }}',
        f'<ParamDouble."flPatientHeight">  {{ <Unit> "[mm]"  <Precision> 6  {p.height}  }}',
        f'<ParamString."InstitutionName">  {{ "{p.institution}"  }}',
        f'<ParamString."DeviceSerialNumber">  {{ "{p.device_serial}"  }}',
        f'<ParamString."FrameOfReference">  {{ "{p.frame_of_reference}"  }}',
        f'<ParamString."ExamMemoryUID">  {{ "{exam_uid}"  }}',
        f'<ParamString."SeriesLOID">  {{ "{p.series_uid(index)}"  }}',
        f'<ParamLong."MeasUID">  {{ {400 + index}  }}',
        f'<ParamString."SequenceDescription">  {{ "{spec.protocol}"  }}',
        '<ParamString."chronSliceIndices">  { "0 -1 -1 -1"  }',
        '<ParamLong."NSlc">  { 1  }',
        f'<ParamLong."PhaseEncodingLines">  {{ {spec.lines}  }}',
        f'<ParamLong."RawCol">  {{ {spec.samples}  }}',
    ])
    dicom = _xprot("Dicom", [
        f'<ParamString."tPatientName">  {{ "{name}"  }}',
        f'<ParamString."PatientID">  {{ "{pid}"  }}',
        f'<ParamString."PatientBirthDay">  {{ "{birth}"  }}',
        f'<ParamLong."lPatientSex">  {{ {p.sex}  }}',
        f'<ParamString."InstitutionName">  {{ "{p.institution}"  }}',
        f'<ParamString."InstitutionAddress">  {{ "{p.institution_address}"  }}',
        f'<ParamString."DeviceSerialNumber">  {{ "{p.device_serial}"  }}',
        f'<ParamString."OperatorsName">  {{ "{p.operator}"  }}',
        f'<ParamString."ReferringPhysician">  {{ "{p.referring_physician}"  }}',
        f'<ParamString."StudyDate">  {{ "{dt}"  }}',
        f'<ParamString."StudyTime">  {{ "{p.study_time}.000000"  }}',
        '<ParamString."Manufacturer">  { "SIEMENS"  }',
        '<ParamString."ManufacturersModelName">  { "Prisma_fit"  }',
        '<ParamString."SoftwareVersions">  { "syngo MR E11"  }',
        '<ParamDouble."flMagneticFieldStrength">  { <Precision> 6  2.893620  }',
    ])
    meas = _xprot("Meas", [
        f'<ParamString."tPatientName">  {{ <Visible> "true"  "{name}"  }}',
        f'<ParamString."PatientBirthDay">  {{ <Visible> "true"  "{birth}"  }}',
        '<ParamString."tPatientPosition">  { "HFS"  }',
        f'<ParamString."tFrameOfReference">  {{ "{p.frame_of_reference}"  }}',
        f'<ParamString."tOperator">  {{ "{p.operator}"  }}',
        f'<ParamString."tComment">  {{ "follow-up of {name} ({pid}) on {dt}"  }}',
        '<ParamLong."lScanRegionPosTra">  { 0  }',
    ])
    meas_yaps = _ascconv([
        "ulVersion = 0x14b44b6",
        'tSequenceFileName = ""%SiemensSeq%\\gre""',
        f'tProtocolName = ""{spec.protocol}_{dt}""',
        f'tPatientName = ""{name}""',
        f'tReferenceImage0 = ""{p.series_uid(index + 40)}""',
        'sProtConsistencyInfo.tBaselineString = ""N4_VE11C_LATEST_20160120""',
        "sProtConsistencyInfo.flNominalB0 = 2.89362",
        "sRXSPEC.alDwellTime[0] = 2800",
        f"sKSpace.lBaseResolution = {spec.samples // 2}",
        f"sKSpace.lPhaseEncodingLines = {spec.lines}",
        "sKSpace.lPartitions = 1",
        "sKSpace.ucDimension = 0x2",
        "sSliceArray.asSlice[0].dThickness = 5",
        "sSliceArray.asSlice[0].dPhaseFOV = 220",
        "sSliceArray.asSlice[0].dReadoutFOV = 220",
        "sSliceArray.lSize = 1",
        f'sWipMemBlock.tFree = ""{pid}""',
    ])
    phoenix = _xprot("Phoenix", [
        f'<ParamString."PatientID">  {{ "{pid}"  }}',
        '<ParamLong."lAverages">  { 1  }',
    ]) + _ascconv([
        f'tPatientName = ""{name}""',
        f'tFrameOfReference = ""{p.frame_of_reference}""',
        f"sKSpace.lPhaseEncodingLines = {spec.lines}",
    ])
    spice = _xprot("Spice", [
        f'<ParamString."tFreeText">  {{ "{name} {pid} born {birth} by {p.operator}"  }}',
        f'<ParamString."tRequestNote">  {{ "order {p.accession}"  }}',
        f'<ParamString."InstitutionName">  {{ "{p.institution}"  }}',
        '<ParamDouble."flReadoutOSFactor">  { <Precision> 6  2.000000  }',
    ])
    return {"Config": config, "Dicom": dicom, "Meas": meas, "MeasYaps": meas_yaps,
            "Phoenix": phoenix, "Spice": spice}


def measurement_header(buffers: dict[str, str], min_length: int = 0) -> bytes:
    """uint32 length, uint32 count, then ``name\\0`` + uint32 length + text per buffer, padded.

    Real headers end with some non-text bytes after the last buffer; the padding stands for them.
    """
    body = b"".join(name.encode() + b"\x00" + struct.pack("<I", len(text) + 1)
                    + text.encode("latin-1") + b"\x00" for name, text in buffers.items())
    length = max(8 + len(body) + HEADER_TAIL, min_length)
    length += -length % 32
    return struct.pack("<II", length, len(buffers)) + body + b"\x00" * (length - 8 - len(body))


# --- raw data blocks ------------------------------------------------------------------------------

def _vd_block(spec: MeasSpec, line: int, meas_uid: int, samples: np.ndarray) -> bytes:
    chan_len = ctypes.sizeof(mdh_def.Channel_header) + 8 * spec.samples
    mdh = mdh_def.Scan_header()
    mdh_def.set_dma_len(mdh, ctypes.sizeof(mdh_def.Scan_header) + spec.channels * chan_len)
    mdh.MeasUID = meas_uid
    mdh.ScanCounter = line + 1
    mdh.TimeStamp = 38295 * 400 + line
    mdh.SamplesInScan = spec.samples
    mdh.UsedChannels = spec.channels
    mdh.Counter.Lin = line
    mdh.CenterCol = spec.samples // 2
    mdh.CenterLin = spec.lines // 2
    mdh.SliceData.Quaternion[0] = 1.0
    parts = [bytes(mdh)]
    for c in range(spec.channels):
        cha = mdh_def.Channel_header(TypeAndChannelLength=chan_len, MeasUID=meas_uid,
                                     ScanCounter=line + 1, ChannelId=c)
        parts += [bytes(cha), samples[c].tobytes()]
    return b"".join(parts)


def _vb_block(spec: MeasSpec, line: int, meas_uid: int, samples: np.ndarray) -> bytes:
    parts = []
    for c in range(spec.channels):
        mdh = mdh_def.VB17_header()
        mdh_def.set_dma_len(mdh, spec.channels * (ctypes.sizeof(mdh) + 8 * spec.samples))
        mdh.MeasUID = meas_uid
        mdh.ScanCounter = line + 1
        mdh.TimeStamp = 38295 * 400 + line
        mdh.SamplesInScan = spec.samples
        mdh.UsedChannels = spec.channels
        mdh.Counter.Lin = line
        mdh.CenterCol = spec.samples // 2
        mdh.CenterLin = spec.lines // 2
        mdh.ChannelId = c
        mdh.SliceData.Quaternion[0] = 1.0
        parts += [bytes(mdh), samples[c].tobytes()]
    return b"".join(parts)


def _acqend(layout: str, meas_uid: int) -> bytes:
    mdh = mdh_def.Scan_header() if layout == "VD" else mdh_def.VB17_header()
    mdh_def.add_flag(mdh, "ACQEND")
    mdh.MeasUID = meas_uid
    mdh.SamplesInScan = ACQEND_SAMPLES
    mdh.UsedChannels = 1
    mdh_def.set_dma_len(mdh, ctypes.sizeof(mdh) + 8 * ACQEND_SAMPLES)
    return bytes(mdh) + b"\x00" * (8 * ACQEND_SAMPLES)


def _lines(spec: MeasSpec, rng: np.random.Generator) -> Iterator[np.ndarray]:
    for _ in range(spec.lines):
        floats = rng.standard_normal(2 * spec.channels * spec.samples, dtype=np.float32)
        yield floats.view(np.complex64).reshape(spec.channels, spec.samples)


def _write_measurement(fh, layout: str, header: bytes, spec: MeasSpec, meas_uid: int,
                       rng: np.random.Generator, keep: list[np.ndarray] | None) -> None:
    fh.write(header)
    block = _vd_block if layout == "VD" else _vb_block
    kept = []
    for line, samples in enumerate(_lines(spec, rng)):
        fh.write(block(spec, line, meas_uid, samples))
        if keep is not None:
            kept.append(samples)
    fh.write(_acqend(layout, meas_uid))
    if keep is not None:
        keep.append(np.stack(kept))


def build_twix(path: Path, layout: str, specs: list[MeasSpec], planted: Planted = Planted(),
               seed: int = 0, keep_data: bool = True) -> BuiltTwix:
    """Write a twix file; ``keep_data`` returns each measurement's samples (lines, cha, col)."""
    if layout not in ("VB", "VD"):
        raise ValueError(layout)
    if layout == "VB" and len(specs) != 1:
        raise ValueError("a VB file holds exactly one measurement")
    rng = np.random.default_rng(seed)
    built = BuiltTwix(path=path, layout=layout)
    keep = built.data if keep_data else None
    with path.open("wb") as fh:
        if layout == "VB":
            header = measurement_header(header_buffers(planted, 0, specs[0]), VB_MIN_HEADER)
            built.measurement_offsets.append(0)
            _write_measurement(fh, layout, header, specs[0], 400, rng, keep)
            return built
        raid = np.zeros(1, dtype=hdr_def.MultiRaidFileHeader)[0]
        raid["hdr"]["count_"] = len(specs)
        fh.write(b"\x00" * RAID_HEADER_SPACE)
        for index, spec in enumerate(specs):
            offset = fh.tell()
            header = measurement_header(header_buffers(planted, index, spec))
            _write_measurement(fh, layout, header, spec, 400 + index, rng, keep)
            entry = raid["entry"][index]
            entry["measId_"], entry["fileId_"] = 400 + index, index
            entry["off_"], entry["len_"] = offset, fh.tell() - offset
            entry["patName_"] = planted.patient_name.encode()
            entry["protName_"] = spec.protocol.encode()
            built.measurement_offsets.append(offset)
            fh.write(b"\x00" * (-fh.tell() % ALIGN))
        fh.seek(0)
        fh.write(raid.tobytes())
    return built
