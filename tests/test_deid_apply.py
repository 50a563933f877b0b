"""Header de-identification of real pydicom files built with planted identifiers."""

from __future__ import annotations

import re
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedMRImageStorage

from bidsdeid.deid.apply import DeidError, ScrubContext, scrub_dataset, scrub_file
from bidsdeid.deid.dates import shift_da
from bidsdeid.deid.options import DeidOptions
from bidsdeid.deid.private import csa_item_spans
from bidsdeid.deid.synthetic import ROOT, PlantedSubject, mr_image, secondary_capture

SUBJECT = PlantedSubject()
KEY = bytes(range(32))
SHIFT = -40_404


def _ctx(key: bytes = KEY) -> ScrubContext:
    return ScrubContext(key=key, date_shift_days=SHIFT, participant_label="7f3k9q2a",
                        identifiers=frozenset({SUBJECT.patient_name, SUBJECT.patient_id}))


def _write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


DEFAULTS = DeidOptions()


def _scrub(tmp_path: Path, ds: Dataset, options: DeidOptions = DEFAULTS,
           name: str = "in.dcm", key: bytes = KEY) -> tuple[Path, Dataset]:
    src = _write(ds, tmp_path / name)
    dst = tmp_path / "out" / name
    scrub_file(src, dst, _ctx(key), options)
    return dst, pydicom.dcmread(dst)


@pytest.mark.parametrize("build", [mr_image, secondary_capture], ids=["MR", "SC"])
def test_no_planted_identifier_survives_anywhere_in_the_written_file(tmp_path, build):
    dst, _ = _scrub(tmp_path, build(SUBJECT, instance=2) if build is mr_image else build(SUBJECT))
    data = dst.read_bytes().lower()
    leaked = [t for t in SUBJECT.tokens() + [ROOT] if t.lower().encode() in data]
    assert not leaked, f"planted identifiers found in output: {leaked}"


def test_patient_name_and_id_become_the_participant_label(tmp_path):
    _, out = _scrub(tmp_path, mr_image(SUBJECT))
    assert (str(out.PatientName), out.PatientID) == ("sub-7f3k9q2a", "sub-7f3k9q2a")


def test_deidentification_is_recorded_as_the_standard_asks(tmp_path):
    _, out = _scrub(tmp_path, mr_image(SUBJECT))
    codes = {item.CodeValue for item in out.DeidentificationMethodCodeSequence}
    assert out.PatientIdentityRemoved == "YES"
    assert {"113100", "113111", "113107", "113105"} <= codes
    assert "113109" not in codes, "Retain Device Identity was not used"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


def test_uids_are_consistent_across_files_and_nested_references(tmp_path):
    first = mr_image(SUBJECT, instance=1)
    second = mr_image(SUBJECT, instance=2)
    ref = Dataset()
    ref.ReferencedSOPClassUID = first.SOPClassUID
    ref.ReferencedSOPInstanceUID = first.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ReferencedInstanceSequence = Sequence([ref])
    second.ReferencedSeriesSequence = Sequence([series])
    _, out1 = _scrub(tmp_path, first, name="1.dcm")
    _, out2 = _scrub(tmp_path, second, name="2.dcm")
    nested = out2.ReferencedSeriesSequence[0]
    assert out1.SeriesInstanceUID == out2.SeriesInstanceUID == nested.SeriesInstanceUID
    assert nested.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == out1.SOPInstanceUID
    assert nested.ReferencedInstanceSequence[0].ReferencedSOPClassUID == first.SOPClassUID
    assert out1.SOPInstanceUID.startswith("2.25.") and out1.SOPInstanceUID != first.SOPInstanceUID


def test_file_meta_instance_uid_matches_the_new_sop_instance_uid(tmp_path):
    _, out = _scrub(tmp_path, mr_image(SUBJECT))
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert "SourceApplicationEntityTitle" not in out.file_meta
    assert out.file_meta.TransferSyntaxUID == mr_image().file_meta.TransferSyntaxUID


def test_same_key_and_input_give_identical_bytes(tmp_path):
    src = _write(mr_image(SUBJECT), tmp_path / "in.dcm")
    scrub_file(src, tmp_path / "a.dcm", _ctx(), DeidOptions())
    scrub_file(src, tmp_path / "b.dcm", _ctx(), DeidOptions())
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()


def test_different_keys_give_different_uids(tmp_path):
    _, out_a = _scrub(tmp_path, mr_image(SUBJECT), name="a.dcm", key=b"a" * 32)
    _, out_b = _scrub(tmp_path, mr_image(SUBJECT), name="b.dcm", key=b"b" * 32)
    assert out_a.StudyInstanceUID != out_b.StudyInstanceUID


def test_dates_are_shifted_by_the_subjects_offset_everywhere(tmp_path):
    ds = mr_image(SUBJECT)
    ds.AcquisitionDateTime = SUBJECT.study_date + "101500.5+0100"
    _, out = _scrub(tmp_path, ds)
    shifted = shift_da(SUBJECT.study_date, SHIFT)
    assert {out.StudyDate, out.SeriesDate, out.AcquisitionDate, out.ContentDate,
            out.InstanceCreationDate} == {shifted}
    assert out.AcquisitionDateTime == shifted + "101500.5+0100"
    assert out.StudyTime == ds.StudyTime, "whole-day shifts keep times"


def test_dates_are_removed_or_emptied_when_long_dates_are_off(tmp_path):
    _, out = _scrub(tmp_path, mr_image(SUBJECT), DeidOptions(retain_long_dates="off"))
    assert out.StudyDate == "" and out.ContentDate == "", "Type 2: present but empty"
    assert "SeriesDate" not in out and "AcquisitionDate" not in out, "Type 3: removed"
    assert out.LongitudinalTemporalInformationModified == "REMOVED"


def test_full_dates_are_kept_with_the_full_dates_option(tmp_path):
    _, out = _scrub(tmp_path, mr_image(SUBJECT), DeidOptions(retain_long_dates="full"))
    assert out.StudyDate == SUBJECT.study_date


def test_device_serial_is_kept_only_with_retain_device_identity(tmp_path):
    _, default = _scrub(tmp_path, mr_image(SUBJECT), name="a.dcm")
    _, kept = _scrub(tmp_path, mr_image(SUBJECT), DeidOptions(retain_device_identity=True),
                     name="b.dcm")
    assert "DeviceSerialNumber" not in default
    assert kept.DeviceSerialNumber == SUBJECT.serial
    assert kept.StationName == SUBJECT.station


def test_type_1_attributes_are_never_emptied(tmp_path):
    ds = mr_image(SUBJECT)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    _, out = _scrub(tmp_path, ds, DeidOptions(retain_long_dates="off"))
    for keyword in ("DeviceSerialNumber", "ContentDate", "ContentTime", "SOPInstanceUID",
                    "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert keyword in out and str(out[keyword].value), f"Type 1 {keyword} emptied or removed"
    assert out.DeviceSerialNumber != SUBJECT.serial


def test_ages_of_89_and_over_are_capped(tmp_path):
    _, out = _scrub(tmp_path, mr_image(SUBJECT))
    assert out.PatientAge == "089Y"


def test_surviving_descriptors_keep_their_text_but_lose_identifiers(tmp_path):
    _, out = _scrub(tmp_path, mr_image(SUBJECT))
    assert out.SeriesDescription.startswith("T1 MPRAGE")
    assert SUBJECT.patient_id not in out.SeriesDescription


def test_overrides_replace_the_profile_for_one_attribute(tmp_path):
    options = DeidOptions.from_mapping({"overrides": {"SeriesDescription": "X"}})
    _, out = _scrub(tmp_path, mr_image(SUBJECT), options)
    assert "SeriesDescription" not in out and "ProtocolName" in out


def test_safe_private_keeps_the_csa_header_with_identifiers_blanked(tmp_path):
    original = mr_image(SUBJECT)[0x00291010].value
    _, out = _scrub(tmp_path, mr_image(SUBJECT))
    csa = out[0x00291010].value
    assert len(csa) == len(original), "same-length blanking keeps CSA lengths valid"
    assert csa_item_spans(csa) == csa_item_spans(original), "CSA structure intact"
    assert b"HeadNeck_20" in csa and b"17.5" in csa, "non-identifying items kept"
    assert SUBJECT.family.encode() not in csa and SUBJECT.patient_id.encode() not in csa


def test_private_tags_outside_the_allow_list_are_dropped_with_their_creator(tmp_path):
    _, out = _scrub(tmp_path, mr_image(SUBJECT))
    assert 0x00091001 not in out and 0x00090010 not in out
    assert out[0x00290010].value == "SIEMENS CSA HEADER"
    assert out[0x00191028].value == 20.5


def test_all_private_tags_go_without_retain_safe_private(tmp_path):
    _, out = _scrub(tmp_path, mr_image(SUBJECT), DeidOptions(retain_safe_private=False))
    assert not [e.tag for e in out if e.tag.is_private]


def test_pixel_data_bytes_are_unchanged(tmp_path):
    ds = mr_image(SUBJECT)
    _, out = _scrub(tmp_path, ds)
    assert out.PixelData == ds.PixelData


def test_stats_count_actions_by_tag_and_never_carry_values(tmp_path):
    stats = scrub_dataset(mr_image(SUBJECT), _ctx(), DeidOptions())
    assert stats.actions["(0018,1000) DeviceSerialNumber:X"] == 1
    key_shape = re.compile(r"^\([0-9A-F]{4},[0-9A-F]{4}\) \w+:[DZXKCU]$")
    assert all(key_shape.match(k) for k in stats.actions), list(stats.actions)
    merged = scrub_dataset(mr_image(SUBJECT), _ctx(), DeidOptions())
    merged.merge(stats)
    assert merged.actions["(0018,1000) DeviceSerialNumber:X"] == 2


def test_truncated_input_raises_deid_error_without_header_values(tmp_path):
    src = _write(mr_image(SUBJECT), tmp_path / "in.dcm")
    src.write_bytes(src.read_bytes()[:-100])
    with pytest.raises(DeidError, match="truncated DICOM") as error:
        scrub_file(src, tmp_path / "out.dcm", _ctx(), DeidOptions())
    assert SUBJECT.family not in str(error.value)
    assert not (tmp_path / "out.dcm").exists()


def test_non_dicom_input_raises_deid_error(tmp_path):
    src = tmp_path / "notes.txt"
    src.write_text("Doeberg^Johnathan MRN99887766\n" * 20)
    with pytest.raises(DeidError, match="not a DICOM file"):
        scrub_file(src, tmp_path / "out.dcm", _ctx(), DeidOptions())


def _with_overlay(ds: Dataset) -> Dataset:
    ds.add_new(0x60000010, "US", 4)                 # Overlay Rows
    ds.add_new(0x60000011, "US", 4)                 # Overlay Columns
    ds.add_new(0x60000040, "CS", "G")               # Overlay Type
    ds.add_new(0x60000050, "SS", [1, 1])            # Overlay Origin
    ds.add_new(0x60000100, "US", 1)                 # Overlay Bits Allocated
    ds.add_new(0x60000102, "US", 0)                 # Overlay Bit Position
    ds.add_new(0x60003000, "OW", b"\xff\x00")       # Overlay Data
    ds.add_new(0x60004000, "LT", f"drawn for {SUBJECT.given}")  # Overlay Comments
    return ds


def test_overlay_planes_are_removed_whole_by_clean_graphics(tmp_path):
    _, out = _scrub(tmp_path, _with_overlay(mr_image(SUBJECT)))
    assert not [e.tag for e in out if e.tag.group == 0x6000]


def test_an_overlay_kept_by_override_keeps_its_plane_and_cleans_its_comment(tmp_path):
    options = DeidOptions.from_mapping({"overrides": {"(6000,3000)": "K"}})
    _, out = _scrub(tmp_path, _with_overlay(mr_image(SUBJECT)), options)
    assert out[0x60003000].value == b"\xff\x00" and out[0x60000010].value == 4
    assert SUBJECT.given not in out[0x60004000].value


def test_structured_content_is_kept_but_cleaned(tmp_path):
    ds = mr_image(SUBJECT)
    text_item = Dataset()
    text_item.RelationshipType = "CONTAINS"
    text_item.ValueType = "TEXT"
    text_item.TextValue = f"Subject {SUBJECT.family} tolerated the scan"
    person = Dataset()
    person.RelationshipType = "CONTAINS"
    person.ValueType = "PNAME"
    person.PersonName = SUBJECT.operator
    ds.ContentSequence = Sequence([text_item, person])
    _, out = _scrub(tmp_path, ds)
    assert out.ContentSequence[0].TextValue.endswith("tolerated the scan")
    assert SUBJECT.family not in out.ContentSequence[0].TextValue
    assert str(out.ContentSequence[1].PersonName) != SUBJECT.operator


def test_patient_characteristics_go_without_their_option(tmp_path):
    ds = mr_image(SUBJECT)
    ds.PatientWeight = "71"
    _, out = _scrub(tmp_path, ds, DeidOptions(retain_patient_characteristics=False))
    assert "PatientAge" not in out and "PatientWeight" not in out
    assert out.PatientSex == "", "Type 2 Patient's Sex stays, empty"


def test_scrub_file_refuses_to_overwrite_its_input(tmp_path):
    src = _write(mr_image(SUBJECT), tmp_path / "in.dcm")
    before = src.read_bytes()
    with pytest.raises(DeidError, match="overwrite the input"):
        scrub_file(src, src, _ctx(), DeidOptions())
    assert src.read_bytes() == before
