"""The Annex E table as data, and how options and IOD Types turn it into one action each."""

from __future__ import annotations

import importlib.util
import re

import pytest
from conftest import PROJECT_ROOT
from pydicom.datadict import tag_for_keyword
from pydicom.uid import EnhancedMRImageStorage, MRImageStorage

from bidsdeid.deid import profile
from bidsdeid.deid.options import DeidOptions

ACTION = re.compile(r"^[DZXKCU]\*?(/[DZXKCU]\*?)*$")


def _plan(options: DeidOptions, sop_class: str = MRImageStorage, nested: bool = False):
    return profile.planned_actions(options, sop_class, nested)


def _tag(keyword: str) -> int:
    return tag_for_keyword(keyword)


def test_table_holds_every_row_of_table_e1_1_with_valid_actions():
    table = profile.annex_e()
    assert len(table.entries) + len(table.repeating) == 459, "rows of Table E.1-1 (+ private)"
    actions = {e.action for e in table.entries.values()}
    assert {"D", "Z", "X", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"} <= actions
    for entry in table.entries.values():
        assert ACTION.match(entry.action), entry.name
        assert all(ACTION.match(a) for a in entry.options.values()), entry.name
    assert table.private.options == {"retain_safe_private": "C"}


def test_every_option_column_of_the_standard_is_present():
    columns = {c for e in profile.annex_e().entries.values() for c in e.options}
    assert columns | set(profile.annex_e().private.options) == {
        "retain_safe_private", "retain_uids", "retain_device_identity",
        "retain_institution_identity", "retain_patient_characteristics",
        "retain_long_full_dates", "retain_long_modified_dates", "clean_descriptors",
        "clean_structured_content", "clean_graphics"}


@pytest.mark.parametrize("attribute_type, expected", [("1", "D"), ("2", "Z"), ("3", "X"),
                                                      (None, "D")])
def test_combined_action_is_chosen_by_attribute_type(attribute_type, expected):
    assert profile.resolve_combined("X/Z/D", attribute_type) == expected


def test_referenced_image_sequence_keeps_new_uids_when_type_1():
    assert profile.resolve_combined("X/Z/U*", "1") == "U"
    assert profile.resolve_combined("X/Z/U*", "3") == "X"


def test_device_serial_number_is_removed_unless_device_identity_is_retained():
    serial = _tag("DeviceSerialNumber")
    assert _plan(DeidOptions())[serial] == "X"
    assert _plan(DeidOptions(retain_device_identity=True))[serial] == "K"


def test_type_1_device_serial_of_enhanced_mr_gets_a_dummy_not_removal():
    assert _plan(DeidOptions(), EnhancedMRImageStorage)[_tag("DeviceSerialNumber")] == "D"


@pytest.mark.parametrize("mode, expected", [("modified", "C"), ("full", "K"), ("off", "Z")])
def test_study_date_follows_the_long_dates_option(mode, expected):
    assert _plan(DeidOptions(retain_long_dates=mode))[_tag("StudyDate")] == expected


def test_descriptors_are_cleaned_or_removed_by_clean_descriptors():
    tag = _tag("SeriesDescription")
    assert _plan(DeidOptions())[tag] == "C"
    assert _plan(DeidOptions(clean_descriptors=False))[tag] == "X"


def test_overrides_replace_the_profile_action():
    options = DeidOptions.from_mapping({"overrides": {"StationName": "K"}})
    assert _plan(options)[_tag("StationName")] == "K"


def test_generator_converts_innolitics_rows_and_rejects_unknown_actions():
    spec = importlib.util.spec_from_file_location("gen", PROJECT_ROOT / "scripts/gen_annex_e.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    rows = [{"name": "Icon Image Sequence\n\n(see Note 12)", "tag": "(0088,0200)",
             "stdCompIOD": "Y", "basicProfile": "X", "id": "00880200"},
            {"name": "Private attributes", "tag": "(GGGG,EEEE) WHERE GGGG IS ODD",
             "stdCompIOD": "N", "basicProfile": "X", "rtnSafePrivOpt": "C", "id": "x"}]
    table = gen.convert(rows, "abc")
    assert table["attributes"]["(0088,0200)"] == {"name": "Icon Image Sequence", "action": "X",
                                                  "in_std_iod": True}
    with pytest.raises(ValueError, match="unexpected basic action"):
        gen.convert([dict(rows[0], basicProfile="Q")] + rows[1:], None)
