"""The sidecar field policy (bidsdeid/data/sidecar_policy.json) and sanitize_sidecar()."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import shared_path

from bidsdeid.deid.options import DeidOptions
from bidsdeid.sanitize import (
    POLICY_PATH,
    SanitizeError,
    SanitizeStats,
    SidecarPolicy,
    load_sidecar_policy,
    sanitize_sidecar,
    sanitize_sidecar_file,
)

POLICY = load_sidecar_policy()
# Every retain option off, dates shifted: each test turns on only what it is about.
STRICT = DeidOptions(retain_safe_private=False, retain_uids=False, retain_device_identity=False,
                     retain_institution_identity=False, retain_patient_characteristics=False,
                     retain_long_dates="modified")
NAME = "Doe^Jane"
IDENTIFIERS = (NAME, "PID-778812")


def run(sidecar: dict, options=STRICT, days: int = 10, identifiers=IDENTIFIERS):
    return sanitize_sidecar(sidecar, POLICY, options, days, identifiers)


def dcm2niix_binary() -> Path:
    """The real executable behind the PyPI package's console script."""
    try:
        import dcm2niix
    except ImportError:
        pytest.skip("the dcm2niix Python package is not installed")
    return Path(dcm2niix.bin)


# --- the policy file ---------------------------------------------------------------------------

def test_policy_names_its_dcm2niix_source_and_version():
    source = json.loads(POLICY_PATH.read_text())["_source"]
    assert "nii_dicom_batch.cpp" in source and "nii_SaveBIDSX" in source
    assert re.search(r"v1\.0\.\d{8}", source), "the dcm2niix version must be named"


def test_policy_covers_every_key_the_installed_dcm2niix_can_write():
    binary = dcm2niix_binary()
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                             check=False).stdout  # --version exits non-zero by design
    # JSON keys are printf format strings in the binary: \t"Key": ...
    keys = {k.decode() for k in re.findall(rb'"([A-Za-z0-9_]+)": ', binary.read_bytes())}
    assert len(keys) > 150, "fixture check: the key scan found the sidecar format strings"
    missing = sorted(k for k in keys if POLICY.action_for(k) is None)
    assert missing == [], f"dcm2niix {version.strip()} writes keys the policy lacks: {missing}"


def test_policy_patterns_cover_numbered_keys():
    assert POLICY.action_for("sWipMemBlockAdFree7") == "keep"
    assert POLICY.action_for("FWF_adFree[3]") == "keep"


def test_policy_with_unknown_action_is_rejected(tmp_path):
    bad = tmp_path / "policy.json"
    bad.write_text(json.dumps({"fields": {"EchoTime": "maybe"}}))
    with pytest.raises(SanitizeError, match="EchoTime"):
        load_sidecar_policy(bad)


def test_policy_naming_an_option_deidoptions_lacks_is_rejected(tmp_path):
    bad = tmp_path / "policy.json"
    bad.write_text(json.dumps({"fields": {"StationName": "option:retain_station"}}))
    with pytest.raises(SanitizeError, match="StationName"):
        load_sidecar_policy(bad)


# --- field actions -----------------------------------------------------------------------------

OPTIONAL_SAMPLES = {"InstitutionName": "Hosp", "InstitutionAddress": "1 Road",
                    "InstitutionalDepartmentName": "Rad", "StationName": "ST1",
                    "DeviceSerialNumber": "SN1", "PatientSex": "M", "PatientWeight": 70,
                    "PatientAge": 42}


@pytest.mark.parametrize("option, fields", [
    ("retain_institution_identity",
     ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName")),
    ("retain_device_identity", ("StationName", "DeviceSerialNumber")),
    ("retain_patient_characteristics", ("PatientSex", "PatientWeight", "PatientAge")),
])
def test_optional_fields_dropped_by_default_and_kept_with_their_option(option, fields):
    sidecar = {name: OPTIONAL_SAMPLES[name] for name in fields}
    dropped, _ = run(sidecar)
    kept, _ = run(sidecar, replace(STRICT, **{option: True}))
    assert dropped == {}, f"{fields} must be dropped without {option}"
    assert kept == sidecar, f"{fields} must be kept with {option}"


@pytest.mark.parametrize("age, expected", [(60, 60), (95, 89), ("095Y", "089Y"), ("006M", "006M")])
def test_patient_age_capped_at_89_years_when_kept(age, expected):
    options = replace(STRICT, retain_patient_characteristics=True)
    assert run({"PatientAge": age}, options)[0] == {"PatientAge": expected}


def test_direct_identifiers_always_dropped():
    sidecar = {"PatientName": NAME, "PatientID": "PID-778812", "PatientBirthDate": "1970-01-01",
               "AccessionNumber": "A1", "ReferringPhysicianName": "Who^Dr", "StudyID": "9"}
    everything = replace(STRICT, retain_patient_characteristics=True, retain_uids=True,
                         retain_long_dates="full")
    assert run(sidecar, everything)[0] == {}


@pytest.mark.parametrize("retain_long_dates, expected", [
    ("modified", "2020-01-11T09:30:00.500000"),
    ("full", "2020-01-01T09:30:00.500000"),
    ("off", None),
])
def test_acquisition_datetime_follows_retain_long_dates(retain_long_dates, expected):
    sidecar = {"AcquisitionDateTime": "2020-01-01T09:30:00.500000"}
    result, _ = run(sidecar, replace(STRICT, retain_long_dates=retain_long_dates), days=10)
    assert result.get("AcquisitionDateTime") == expected


def test_dicom_style_dates_are_shifted_too():
    result, _ = run({"StudyDate": "20200101", "SeriesDate": "2020-01-01"}, days=-1)
    assert result == {"StudyDate": "20191231", "SeriesDate": "2019-12-31"}


@pytest.mark.parametrize("retain_long_dates, kept", [("modified", True), ("full", True),
                                                     ("off", False)])
def test_time_of_day_kept_unless_long_dates_off(retain_long_dates, kept):
    result, _ = run({"AcquisitionTime": "09:30:00.5"},
                    replace(STRICT, retain_long_dates=retain_long_dates))
    assert ("AcquisitionTime" in result) is kept


def test_unparsable_date_is_dropped_not_kept():
    result, stats = run({"AcquisitionDateTime": "sometime last spring"})
    assert result == {}
    assert stats.fields["AcquisitionDateTime:drop"] == 1


@pytest.mark.parametrize("field", ["ImageComments", "StudyDescription", "SeriesDescription",
                                   "ProtocolName"])
def test_free_text_fields_cleaned_of_identifiers(field):
    result, stats = run({field: "scan of Jane Doe PID-778812 on 2020-01-01, t1_mprage"})
    assert "Doe" not in result[field] and "778812" not in result[field]
    assert "2020-01-01" not in result[field], "date-shaped strings are cleaned too"
    assert "t1_mprage" in result[field], "the rest of the text stays"
    assert stats.fields[f"{field}:clean"] == 1


def test_nested_values_in_clean_fields_are_cleaned():
    result, _ = run({"BidsGuess": ["anat", {"note": "for Doe"}, ["Jane", 3]]})
    assert result["BidsGuess"] == ["anat", {"note": "for X"}, ["X", 3]]


def test_kept_field_mentioning_an_identifier_is_cleaned_and_reported():
    sidecar = {"DeidentificationMethodCodeSequence": [{"CodeMeaning": "done for Jane Doe"}],
               "SequenceName": "*tse_Doe"}
    result, stats = run(sidecar)
    assert "Doe" not in json.dumps(result)
    assert stats.fields["SequenceName:clean-forced"] == 1
    assert stats.fields["DeidentificationMethodCodeSequence:clean-forced"] == 1


def test_kept_values_without_identifiers_are_unchanged():
    sidecar = {"ConversionSoftwareVersion": "v1.0.20260724", "SliceTiming": [0.0, 0.5, 0.25],
               "PhaseEncodingDirection": "j-", "EchoTime": 0.03}
    assert run(sidecar)[0] == sidecar, "generic ID-shape cleaning must not touch kept values"


def test_unknown_field_dropped_and_reported_by_name_only():
    result, stats = run({"EchoTime": 0.03, "ScannerMood": "Jane Doe was nervous"})
    assert result == {"EchoTime": 0.03}
    assert stats.fields["ScannerMood:unknown-dropped"] == 1
    assert "nervous" not in repr(stats.fields), "stats carry names, never values"


def test_unknown_field_with_identifying_name_is_reported_without_its_name():
    _, stats = run({"Doe_notes": 1})
    assert "Doe_notes:unknown-dropped" not in stats.fields
    assert stats.fields["<identifying-name>:unknown-dropped"] == 1


def test_key_order_of_dcm2niix_is_kept():
    sidecar = {"Modality": "MR", "EchoTime": 0.03, "AcquisitionTime": "10:00:00", "FlipAngle": 9}
    assert list(run(sidecar)[0]) == list(sidecar)


def test_sanitize_sidecar_does_not_modify_its_input():
    sidecar = {"ImageComments": "Jane Doe", "PatientName": NAME}
    snapshot = json.dumps(sidecar)
    run(sidecar)
    assert json.dumps(sidecar) == snapshot


def test_policy_action_is_looked_up_exactly_before_patterns():
    policy = SidecarPolicy({"Tag*": "keep", "TagSecret": "drop"})
    assert sanitize_sidecar({"TagSecret": 1, "Tag1": 2}, policy, STRICT, 0, ())[0] == {"Tag1": 2}


def test_stats_merge_adds_counts():
    total = SanitizeStats()
    for sidecar in ({"EchoTime": 0.03}, {"EchoTime": 0.04, "Odd": 1}):
        total.merge(run(sidecar)[1])
    assert total.fields == {"EchoTime:keep": 2, "Odd:unknown-dropped": 1}


# --- the file wrapper --------------------------------------------------------------------------

def test_sidecar_file_rewritten_with_two_space_indent_in_original_order(tmp_path):
    path = tmp_path / "sub-01_T1w.json"
    path.write_text('{\n\t"Modality": "MR",\n\t"PatientName": "Doe^Jane",\n\t"EchoTime": 0.03\n}\n')
    sanitize_sidecar_file(path, POLICY, STRICT, 0, IDENTIFIERS)
    assert path.read_text() == '{\n  "Modality": "MR",\n  "EchoTime": 0.03\n}\n'
    assert list(tmp_path.iterdir()) == [path], "no temp file left behind"


def test_broken_sidecar_file_raises_error_naming_the_file(tmp_path):
    path = tmp_path / "sub-01_T1w.json"
    path.write_text('{"EchoTime": 0.03,')
    with pytest.raises(SanitizeError, match="sub-01_T1w.json"):
        sanitize_sidecar_file(path, POLICY, STRICT, 0, IDENTIFIERS)
    assert path.read_text() == '{"EchoTime": 0.03,', "a broken input is left as it was"


# --- real scanner series (dcm_qa) -------------------------------------------------------------

ACQUISITION_FIELDS = ("SliceTiming", "EchoTime", "RepetitionTime", "PhaseEncodingDirection",
                      "TotalReadoutTime", "EffectiveEchoSpacing", "ImageOrientationPatientDICOM")


@pytest.fixture(scope="module")
def dcm_qa_sidecars(tmp_path_factory) -> list[dict]:
    """Every dcm_qa series as dcm2niix describes it with its anonymizer off (fullest sidecar)."""
    dicom = shared_path("dicom", "dcm_qa_In")
    out = tmp_path_factory.mktemp("dcm_qa")
    subprocess.run([str(dcm2niix_binary()), "-b", "o", "-ba", "n", "-f", "%s_%p", "-o", str(out),
                    str(dicom)], check=True, capture_output=True)
    sidecars = [json.loads(path.read_text()) for path in sorted(out.glob("*.json"))]
    assert len(sidecars) > 20, "fixture check: dcm_qa converted"
    return sidecars


@pytest.mark.shared
def test_real_dcm_qa_sidecars_have_no_field_unknown_to_the_policy(dcm_qa_sidecars):
    unknown = set()
    for sidecar in dcm_qa_sidecars:
        _, stats = run(sidecar, identifiers=("PF_PAT_POS_BW_INTERP_test",))
        unknown |= {key for key in stats.fields if key.endswith(":unknown-dropped")}
    assert unknown == set(), f"policy gaps: {sorted(unknown)}"


@pytest.mark.shared
@pytest.mark.parametrize("field", ACQUISITION_FIELDS)
def test_real_dcm_qa_acquisition_parameters_survive_unchanged(dcm_qa_sidecars, field):
    with_field = [sidecar for sidecar in dcm_qa_sidecars if field in sidecar]
    assert with_field, f"fixture check: some dcm_qa sidecar has {field}"
    for sidecar in with_field:
        result, _ = run(sidecar, identifiers=(sidecar.get("PatientName", "?"),))
        assert result[field] == sidecar[field], f"{field} changed"


@pytest.mark.shared
def test_real_dcm_qa_identity_fields_removed(dcm_qa_sidecars):
    for sidecar in dcm_qa_sidecars:
        result, _ = run(sidecar)
        for field in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName",
                      "StationName", "DeviceSerialNumber", "SeriesInstanceUID"):
            assert field not in result, f"{field} survived"
