"""The private dir: key handling, keyed derivations and mapping tables."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bidsdeid.privatedir import PrivateDir, check_outside, default_private_dir, read_label_mapping


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_dir_and_key_are_owner_only(tmp_path):
    private = PrivateDir.open(tmp_path / "priv")
    assert mode(private.root) == 0o700
    assert mode(private.root / "pseudonym.key") == 0o600


def test_key_is_reused_on_reopen(tmp_path):
    first = PrivateDir.open(tmp_path / "priv")
    second = PrivateDir.open(tmp_path / "priv")
    assert first.key == second.key


def test_pseudonym_is_deterministic_per_key_and_alphanumeric(tmp_path):
    a = PrivateDir.open(tmp_path / "a")
    b = PrivateDir.open(tmp_path / "b")
    label = a.pseudonym("id:1234567")
    assert label == a.pseudonym("id:1234567")
    assert label.isalnum() and len(label) == 8
    assert label != b.pseudonym("id:1234567"), "a different key must give a different label"
    assert label != a.pseudonym("id:1234568")


def test_date_shift_lands_dates_before_1926(tmp_path):
    import datetime as dt

    private = PrivateDir.open(tmp_path / "priv")
    for n in range(50):
        shift = private.date_shift_days(f"id:{n}")
        assert shift % 7 == 0, "whole weeks keep the weekday"
        assert (dt.date(2026, 12, 31) + dt.timedelta(days=shift)).year <= 1925


def test_session_labels_append_without_renumbering(tmp_path):
    private = PrivateDir.open(tmp_path / "priv")
    assert private.session_labels("abc", ["uid-a", "uid-b"]) == {"uid-a": "01", "uid-b": "02"}
    # a later run sees an earlier study it had not seen: it gets the next number
    later = private.session_labels("abc", ["uid-0", "uid-a", "uid-b"])
    assert later == {"uid-0": "03", "uid-a": "01", "uid-b": "02"}


def test_mapping_files_are_owner_only(tmp_path):
    private = PrivateDir.open(tmp_path / "priv")
    private.record_subject("id:1", "abc")
    private.save_identifiers("abc", {"Doe^John"})
    assert mode(private.root / "subjects.tsv") == 0o600
    assert mode(private.root / "identifiers" / "sub-abc.json") == 0o600
    assert private.load_identifiers() == {"abc": {"Doe^John"}}


def test_default_private_dir_is_a_sibling_of_output(tmp_path):
    out = tmp_path / "bids"
    assert default_private_dir(out) == tmp_path / "bids_private"
    check_outside(default_private_dir(out), out)


def test_private_dir_inside_output_is_refused(tmp_path):
    with pytest.raises(ValueError, match="must not be inside"):
        check_outside(tmp_path / "bids" / "private", tmp_path / "bids")


def test_user_mapping_tsv(tmp_path):
    tsv = tmp_path / "map.tsv"
    tsv.write_text("patient_id\tparticipant_id\nMRN1\tsub-01\nMRN2\t02\n")
    assert read_label_mapping(tsv) == {"MRN1": "01", "MRN2": "02"}


def test_user_mapping_rejects_non_bids_label(tmp_path):
    tsv = tmp_path / "map.tsv"
    tsv.write_text("patient_id\tparticipant_id\nMRN1\tsub-0_1\n")
    with pytest.raises(ValueError, match="not alphanumeric"):
        read_label_mapping(tsv)
