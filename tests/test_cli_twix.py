"""Twix raw data through the CLI: matched to the DICOM subject, cleaned into sourcedata/."""

from __future__ import annotations

from dataclasses import astuple

import twixtools
from test_cli_inputs import t1_series
from treeutil import find_tokens, run_cli, tree_hashes
from twixfiles import MeasSpec, Planted, build_twix


def test_twix_joins_its_dicom_subject_and_is_cleaned(tmp_path):
    planted = Planted()
    src = tmp_path / "in"
    t1_series(src / "dicom", patient=planted.patient_id, study_date=planted.study_date)
    (src / "raw").mkdir()
    build_twix(src / "raw" / "meas_MID00042_Doe.dat", "VD", [MeasSpec(), MeasSpec("epi")], planted)
    before = tree_hashes(src)
    proc = run_cli(src, tmp_path / "out", "participant", "--no-deface")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert tree_hashes(src) == before
    subjects = list((tmp_path / "out").glob("sub-*"))
    assert len(subjects) == 1, "the twix file must join the DICOM subject, not make a new one"
    cleaned = list((tmp_path / "out" / "sourcedata").glob(f"{subjects[0].name}/ses-01/*_twix.dat"))
    assert len(cleaned) == 1
    assert len(twixtools.read_twix(str(cleaned[0]), parse_data=False)) == 2
    # Kept on purpose by the defaults: age/weight/height (retain_patient_characteristics) and the
    # time of day; the accession number is only in free text and this DICOM has none to learn it.
    kept = {planted.age, planted.weight, planted.height, planted.study_time, planted.accession}
    tokens = [v for v in astuple(planted) if isinstance(v, str) and len(v) >= 5 and v not in kept]
    assert find_tokens(tmp_path / "out", tokens + ["Johnathan", "Waylon"]) == []


def test_twix_of_an_unknown_patient_becomes_its_own_subject(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    build_twix(src / "x.dat", "VB", [MeasSpec()], Planted(patient_id="PAT0000001"))
    proc = run_cli(src, tmp_path / "out", "participant", "--no-deface")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list((tmp_path / "out" / "sourcedata").glob("sub-*/*_twix.dat"))) == 1
