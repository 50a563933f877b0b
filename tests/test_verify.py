"""Residual-identifier scan (bidsdeid.verify) on small finished datasets like the pipeline's."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image, ImageDraw

from bidsdeid import bids
from bidsdeid.audit import SubjectAudit, software_versions, write_subject_audit
from bidsdeid.privatedir import PrivateDir
from bidsdeid.verify import IdentifierIndex, Leak, format_leaks, generic_hits, scan_output

# Two pseudonymous subjects and the original identifiers the pipeline would have recorded.
SUBJECTS = {
    "k3x9p2ab": {"Doe^John", "MRN4471092", "19800101", "ACC55127", "1.2.826.0.1.3680043.2.1125.77"},
    "m7q4z8cd": {"Roe^Jane^Q", "MRN5582013", "19750615"},
}
QC_MARKER_RGB = (255, 0, 255)  # magenta stripe in the QC pictures, looked for in screenshots


def kind_of(label: str, value: str) -> str:
    """The kind the scan names for one of SUBJECTS' identifiers (sorted, numbered from 1)."""
    return f"identifier #{sorted(SUBJECTS[label]).index(value) + 1} of sub-{label}"


@dataclass(frozen=True)
class FinishedDataset:
    root: Path
    private: Path

    def anat(self, label: str, ext: str) -> Path:
        return self.root / f"sub-{label}" / "ses-01" / "anat" / f"sub-{label}_ses-01_T1w{ext}"

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def _qc_picture(path: Path, title: str) -> None:
    image = Image.new("RGB", (400, 200), (30, 30, 30))
    draw = ImageDraw.Draw(image)
    draw.ellipse((30, 30, 170, 170), fill=(200, 200, 200))
    draw.ellipse((230, 30, 370, 170), fill=(200, 200, 200))
    draw.rectangle((230, 100, 370, 170), fill=(0, 0, 0))  # "after": face region removed
    draw.rectangle((0, 190, 400, 200), fill=QC_MARKER_RGB)
    draw.text((10, 5), title, fill=(255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _twix_vb(path: Path, header_text: str, n_bytes: int = 4096) -> None:
    """A Siemens VB twix file: uint32 header length, ASCII header, then raw data."""
    header = header_text.encode("latin-1") + b"\x00"
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        struct.pack("<I", len(header) + 4)
        + header
        + rng.integers(0, 256, n_bytes, dtype=np.uint8).tobytes()
    )


def _twix_ve(path: Path, patient_name: str, header_text: str) -> None:
    """A Siemens VD/VE twix file: MultiRaidFileHeader (patient name in entry 1), one measurement."""
    offset = 10240  # measurements start after the 9736-byte raid header, 512-byte aligned
    header = header_text.encode("latin-1") + b"\x00"
    entry = struct.pack(
        "<IIQQ64s64s",
        7,
        1,
        offset,
        4 + len(header) + 512,
        patient_name.encode("latin-1"),
        b"t1_mprage",
    )
    raid = struct.pack("<II", 0, 1) + entry
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        raid.ljust(offset, b"\x00") + struct.pack("<I", 4 + len(header)) + header + b"\x00" * 512
    )


def _slide(path: Path, description: str) -> None:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((64, 64, 3), 220, dtype=np.uint8)
    tifffile.imwrite(path, pixels, description=description, photometric="rgb")


def build_finished_dataset(root: Path, private_root: Path) -> FinishedDataset:
    """A valid, clean OUTPUT_DIR as the pipeline writes it, and its private dir."""
    private = PrivateDir.open(private_root)
    bids.ensure_dataset_files(root, private.lock_dir)
    rng = np.random.default_rng(42)
    for label, identifiers in SUBJECTS.items():
        private.save_identifiers(label, identifiers)
        session_dir = root / f"sub-{label}" / "ses-01"
        anat = session_dir / "anat" / f"sub-{label}_ses-01_T1w"
        anat.parent.mkdir(parents=True)
        t1 = nib.Nifti1Image(
            rng.normal(100, 20, (16, 16, 12)).astype(np.float32), np.diag([1, 1, 1.2, 1])
        )
        t1.header.set_xyzt_units("mm", "sec")
        t1.header["descrip"] = b"TE=2.5;Time=101530.000;phase=1"
        nib.save(t1, f"{anat}.nii.gz")
        anat.with_suffix(".json").write_text(
            json.dumps(
                {
                    "Modality": "MR",
                    "MagneticFieldStrength": 3,
                    "Manufacturer": "Siemens",
                    "ManufacturersModelName": "Prisma",
                    "SeriesDescription": "t1_mprage_sag_p2_iso",
                    "AcquisitionTime": "10:15:30.123000",
                    "RepetitionTime": 2.3,
                    "EchoTime": 0.0025,
                    "FlipAngle": 8,
                    "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"],
                    "ConversionSoftware": "dcm2niix",
                    "ConversionSoftwareVersion": "v1.0.20250506",
                },
                indent=2,
            )
        )
        func = session_dir / "func" / f"sub-{label}_ses-01_task-rest_bold"
        func.parent.mkdir(parents=True)
        bold = nib.Nifti1Image(
            rng.normal(500, 5, (8, 8, 6, 5)).astype(np.float32), np.diag([3, 3, 3, 1])
        )
        bold.header.set_xyzt_units("mm", "sec")
        bold.header["pixdim"][4] = 2.0
        nib.save(bold, f"{func}.nii.gz")
        func.with_suffix(".json").write_text(
            json.dumps(
                {
                    "TaskName": "rest",
                    "RepetitionTime": 2.0,
                    "EchoTime": 0.03,
                    "Manufacturer": "Siemens",
                    "SliceTiming": [0.0, 1.0, 0.5, 1.5, 0.25, 1.25],
                    "PhaseEncodingDirection": "j-",
                },
                indent=2,
            )
        )
        bids.write_scans_tsv(
            session_dir,
            f"sub-{label}_ses-01",
            [
                {"filename": f"anat/{anat.name}.nii.gz", "acq_time": "1913-06-02T10:15:30"},
                {"filename": f"func/{func.name}.nii.gz", "acq_time": "1913-06-02T10:25:02"},
            ],
        )
        bids.upsert_participant(
            root, private.lock_dir, {"participant_id": f"sub-{label}", "age": "42", "sex": "F"}
        )
        source = root / "sourcedata" / f"sub-{label}" / "ses-01"
        _twix_vb(
            source / f"sub-{label}_ses-01_acq-mprage_twix.dat",
            '### ASCCONV BEGIN ###\ntProtocolName = "t1_mprage"\nsPatient.tPatientName = "X"\n',
        )
        _slide(
            source / f"sub-{label}_ses-01_sample-01_slide.tif",
            "Aperio Image Library v12 |AppMag = 20",
        )
        audit = SubjectAudit(
            label,
            files_in=14,
            files_out=6,
            series=[
                {"series": 1, "files": [f"sub-{label}/ses-01/anat/{anat.name}.nii.gz"]},
                {"series": 2, "skipped": "localizer"},
            ],
            header_actions=Counter({"remove": 41, "replace": 12, "shift": 6}),
        )
        write_subject_audit(root, audit, {"deface": True}, software_versions("v1.0.20250506"))
        qc = root / bids.DERIVATIVES / "qc" / f"sub-{label}"
        _qc_picture(qc / f"sub-{label}_ses-01_T1w_deface.png", "before | after")
        _qc_picture(qc / f"sub-{label}_ses-01_series-002_redacted.png", "redacted")
    logs = root / bids.DERIVATIVES / "logs"
    logs.mkdir(parents=True)
    (logs / "participant.log").write_text("10:00:01 sub-k3x9p2ab: 2 series converted\n")
    return FinishedDataset(root, private_root)


@pytest.fixture
def dataset(tmp_path: Path) -> FinishedDataset:
    return build_finished_dataset(tmp_path / "bids", tmp_path / "private")


def _identifiers(ds: FinishedDataset) -> dict[str, set[str]]:
    return PrivateDir.open(ds.private, create=False).load_identifiers()


def plant_leaks(ds: FinishedDataset) -> dict[str, tuple[str, str, str]]:
    """The four leaks of the issue; name -> the (path, location, kind) the scan must report."""
    a, b = SUBJECTS
    sidecar = ds.anat(a, ".json")
    fields = json.loads(sidecar.read_text())
    fields["InstitutionName"] = "Clinic of JOHN DOE"
    sidecar.write_text(json.dumps(fields, indent=2))

    image = nib.load(ds.anat(a, ".nii.gz"))
    image.header["descrip"] = b"TE=2.5;scan 2023-05-14"
    nib.save(
        nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine, image.header),
        ds.anat(a, ".nii.gz"),
    )

    participants = ds.root / "participants.tsv"
    participants.write_text(participants.read_text().replace("\t42\tF\n", "\t42\tMRN5582013\n", 1))

    slide = ds.root / "sourcedata" / f"sub-{a}" / "ses-01" / f"sub-{a}_ses-01_sample-01_slide.tif"
    renamed = slide.with_name(f"sub-{a}_ses-01_sample-ACC55127_slide.tif")
    slide.rename(renamed)
    masked_name = renamed.name.replace("ACC55127", f"<{kind_of(a, 'ACC55127')}>")
    return {
        "name in JSON": (ds.rel(sidecar), "JSON field InstitutionName", kind_of(a, "Doe^John")),
        "date in descrip": (
            ds.rel(ds.anat(a, ".nii.gz")),
            "NIfTI header descrip",
            "date after 1925",
        ),
        "ID in TSV": ("participants.tsv", "TSV row 1 column sex", kind_of(b, "MRN5582013")),
        "ID in file name": (
            ds.rel(renamed.with_name(masked_name)),
            "file name",
            kind_of(a, "ACC55127"),
        ),
    }


def _places(leaks: list[Leak]) -> set[tuple[str, str, str]]:
    return {(leak.path, leak.location, leak.kind) for leak in leaks}


# --- the scan on datasets ------------------------------------------------------------------------


def test_clean_dataset_has_no_leaks(dataset: FinishedDataset) -> None:
    leaks = scan_output(dataset.root, _identifiers(dataset))
    assert leaks == [], "\n".join(format_leaks(leaks, show_values=True))


def test_each_planted_leak_is_named_by_file_field_and_kind(dataset: FinishedDataset) -> None:
    expected = plant_leaks(dataset)
    leaks = scan_output(dataset.root, _identifiers(dataset))
    found = _places(leaks)
    missing = {name: place for name, place in expected.items() if place not in found}
    assert not missing, f"not reported: {missing}\nreported: {sorted(found)}"


def test_reported_paths_and_lines_never_hold_the_value(dataset: FinishedDataset) -> None:
    plant_leaks(dataset)
    leaks = scan_output(dataset.root, _identifiers(dataset))
    hidden = "\n".join(format_leaks(leaks, show_values=False)).casefold()
    for value in ("john doe", "mrn5582013", "acc55127", "2023-05-14"):
        assert value not in hidden, f"{value!r} printed without --show-values"
    shown = "\n".join(format_leaks(leaks, show_values=True)).casefold()
    assert "acc55127" in shown and "2023-05-14" in shown, "--show-values must show the values"


def test_leaks_inside_binary_gzip_and_vendor_files_are_found(dataset: FinishedDataset) -> None:
    a, b = SUBJECTS
    # an identifier written into the voxel bytes of a gzip NIfTI, and into a text extension
    data = np.zeros(64, dtype=np.uint8)
    data[10:20] = np.frombuffer(b"MRN4471092", dtype=np.uint8)  # voxel bytes in file order
    voxel_leak = dataset.root / f"sub-{a}" / "ses-01" / "anat" / f"sub-{a}_ses-01_acq-x_T2w.nii.gz"
    image = nib.Nifti1Image(data.reshape((4, 4, 4), order="F"), np.eye(4))
    image.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"reviewed for Jane Roe"))
    nib.save(image, voxel_leak)
    # the patient name in a twix header, a slide description and a UTF-16 log line
    source = dataset.root / "sourcedata" / f"sub-{b}" / "ses-01"
    _twix_vb(source / f"sub-{b}_ses-01_acq-b_twix.dat", 'tPatientName = "Roe^Jane^Q"\n')
    _twix_ve(source / f"sub-{b}_ses-01_acq-c_twix.dat", "Roe^Jane^Q", 'tReferringPhysician = "X"')
    _slide(source / f"sub-{b}_ses-01_sample-02_slide.tif", "Aperio |Patient = ROE JANE|AppMag = 20")
    (dataset.root / bids.DERIVATIVES / "logs" / "utf16.log").write_bytes(
        "ok roe^jane".encode("utf-16-le")
    )

    found = _places(scan_output(dataset.root, _identifiers(dataset)))
    name_b = kind_of(b, "Roe^Jane^Q")
    voxel_byte = nib.load(voxel_leak).dataobj.offset + 10
    expected = {
        (dataset.rel(voxel_leak), f"NIfTI voxel data byte {voxel_byte}", kind_of(a, "MRN4471092")),
        (dataset.rel(voxel_leak), "NIfTI extension 1 (ecode 6)", name_b),
        (
            f"sourcedata/sub-{b}/ses-01/sub-{b}_ses-01_acq-b_twix.dat",
            "twix measurement 1 header",
            name_b,
        ),
        (
            f"sourcedata/sub-{b}/ses-01/sub-{b}_ses-01_acq-c_twix.dat",
            "twix raid entry 1 patName",
            name_b,
        ),
        (
            f"sourcedata/sub-{b}/ses-01/sub-{b}_ses-01_sample-02_slide.tif",
            "TIFF page 0 tag ImageDescription",
            name_b,
        ),
        (f"{bids.DERIVATIVES.as_posix()}/logs/utf16.log", "content byte 6", name_b),
    }
    assert expected <= found, f"missing {expected - found}"


def test_dicom_and_png_metadata_are_named_by_element_and_chunk(dataset: FinishedDataset) -> None:
    import pydicom
    from PIL.PngImagePlugin import PngInfo
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    a, _ = SUBJECTS
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.PatientName, ds.PatientID, ds.ContentDate = "Doe^John", "XX", "20230514"
    slide = dataset.root / "sourcedata" / f"sub-{a}" / "ses-01" / f"sub-{a}_ses-01_slide.dcm"
    ds.save_as(slide, enforce_file_format=True)
    picture = dataset.root / bids.DERIVATIVES / "qc" / f"sub-{a}" / f"sub-{a}_extra.png"
    info = PngInfo()
    info.add_text("Comment", "for JOHN DOE")
    Image.new("RGB", (8, 8)).save(picture, pnginfo=info)

    found = _places(scan_output(dataset.root, _identifiers(dataset)))
    name = kind_of(a, "Doe^John")
    expected = {
        (dataset.rel(slide), "DICOM (0010,0010) PatientName", name),
        (dataset.rel(slide), "DICOM (0008,0023) ContentDate", "date after 1925"),
        (dataset.rel(picture), "PNG text chunk Comment", name),
    }
    assert expected <= found, f"missing {expected - found}"


def test_identifier_across_a_read_chunk_boundary_is_found_once(tmp_path: Path) -> None:
    from bidsdeid import verify

    path = tmp_path / "big.bin"
    offset = verify._CHUNK - 4  # the value straddles the first and second chunk
    with path.open("wb") as fh:
        fh.write(b"\x00" * offset + b"MRN4471092" + b"\x00" * (verify._CHUNK // 2))
    leaks = scan_output(tmp_path, {"k3x9p2ab": {"MRN4471092"}})
    assert [(leak.path, leak.location) for leak in leaks] == [("big.bin", f"content byte {offset}")]


def test_subjects_argument_limits_the_files_but_not_the_identifiers(
    dataset: FinishedDataset,
) -> None:
    a, b = SUBJECTS
    sidecar = dataset.anat(b, ".json")
    sidecar.write_text(sidecar.read_text().replace('"Siemens"', '"Siemens for John Doe"', 1))
    ids = _identifiers(dataset)
    assert scan_output(dataset.root, ids, subjects=[a]) == [], "sub-b's files are out of scope"
    leaks = scan_output(dataset.root, ids, subjects=[f"sub-{b}"])
    assert _places(leaks) == {
        (dataset.rel(sidecar), "JSON field Manufacturer", kind_of(a, "Doe^John"))
    }


# --- the matching rules (pure) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["Doe^John", "DOE JOHN", "John Doe", "doe, john", "john_doe", "JohnDoe"]
)
def test_name_is_found_in_every_common_spelling(text: str) -> None:
    index = IdentifierIndex.build({"abc": {"Doe^John"}})
    assert [kind for kind, _ in index.find_text(f"seen: {text}.")] == ["identifier #1 of sub-abc"]


@pytest.mark.parametrize("text", ["Johnson", "Doerte", "doe2", "sub-abc_T1w"])
def test_name_parts_inside_longer_words_are_not_hits(text: str) -> None:
    index = IdentifierIndex.build({"abc": {"Doe^John"}})
    assert list(index.find_text(text)) == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("ID 89260265.", True),
        ("0.89260265", False),  # part of a decimal
        ("189260265", False),  # part of a longer number
        ("89260265.5", False),
        ("call +44 1632 960875", True),
        ("shim 1632", False),  # a short part of the phone number alone is an ordinary number
    ],
)
def test_number_identifiers_match_whole_numbers_only(text: str, found: bool) -> None:
    index = IdentifierIndex.build({"abc": {"89260265", "+44 1632 960875"}})
    assert bool(list(index.find_text(text))) is found


def test_common_words_of_an_address_match_only_within_the_whole_address() -> None:
    index = IdentifierIndex.build({"abc": {"12 Orrin Way, Glimmerford Vale"}})
    assert list(index.find_text("the way we scanned the vale")) == []
    assert [k for k, _ in index.find_text("lives near Glimmerford")] == ["identifier #1 of sub-abc"]
    assert [k for k, _ in index.find_text("at 12 orrin way, glimmerford vale")] == [
        "identifier #1 of sub-abc"
    ]


def test_mask_replaces_identifiers_by_their_kind() -> None:
    index = IdentifierIndex.build({"abc": {"ACC55127"}})
    assert (
        index.mask("sub-abc_acq-acc55127_T1w.nii.gz")
        == "sub-abc_acq-<identifier #1 of sub-abc>_T1w.nii.gz"
    )


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("2023-05-14", "date after 1925"),
        ("scanned 14.05.2023", "date after 1925"),
        ("05/14/2023", "date after 1925"),
        ("20230514101530.000", "date after 1925"),
        ("14 May 2023", "date after 1925"),
        ("mail jd@example.org", "e-mail address"),
        ("call +1 555-123-4567", "phone number"),
        ("(020) 7946-0958", "phone number"),
        ("MRN 44710921", "long digit run (MRN-like)"),
    ],
)
def test_identifier_shaped_strings_are_hits(text: str, kind: str) -> None:
    assert [k for k, _ in generic_hits(text)] == [kind]


@pytest.mark.parametrize(
    "text",
    [
        "1913-06-02T10:15:30",  # shifted acquisition date
        "TE=2.5;Time=101530.000;phase=1;mb=3",  # dcm2niix descrip
        "10:15:30.123000",  # time of day with microseconds
        "45.1234567",  # a fraction
        "t1_mprage_sag_p2_iso",
        "2023-02-30",  # not a calendar date
        "ep2d 2x2x2 64ch",
    ],
)
def test_ordinary_sidecar_text_is_not_a_hit(text: str) -> None:
    assert generic_hits(text) == []


# --- the group stage from the command line -------------------------------------------------------


def _group(ds: FinishedDataset, *extra: str) -> subprocess.CompletedProcess[str]:
    input_dir = ds.root.parent / "input"
    input_dir.mkdir(exist_ok=True)
    env = dict(os.environ, COLUMNS="250", NO_COLOR="1")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bidsdeid",
            str(input_dir),
            str(ds.root),
            "group",
            "--private-dir",
            str(ds.private),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def test_group_stage_fails_naming_each_planted_leak(dataset: FinishedDataset) -> None:
    expected = plant_leaks(dataset)
    done = _group(dataset)
    console = done.stdout + done.stderr
    assert done.returncode == 1, console
    for name, (path, location, kind) in expected.items():
        assert f"{path}: {location}: {kind}" in console, f"{name} not named:\n{console}"
    for value in ("JOHN DOE", "MRN5582013", "ACC55127", "2023-05-14"):
        assert value not in console, f"{value} shown without --show-values"
    report = (dataset.root / bids.DERIVATIVES / "report.html").read_text()
    for value in ("john doe", "mrn5582013", "acc55127", "2023-05-14"):
        assert value not in report.casefold(), f"{value} written into the report"


def test_group_stage_shows_values_only_with_show_values(dataset: FinishedDataset) -> None:
    plant_leaks(dataset)
    done = _group(dataset, "--show-values")
    assert done.returncode == 1
    assert "'MRN5582013'" in done.stdout + done.stderr
