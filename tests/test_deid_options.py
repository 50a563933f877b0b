"""DeidOptions: defaults for an OpenNeuro release, strict validation, JSON-able description."""

from __future__ import annotations

import json

import pytest

from bidsdeid.deid.options import DeidOptions


def test_defaults_suit_an_openneuro_release():
    o = DeidOptions()
    assert (o.retain_safe_private, o.retain_uids, o.retain_device_identity,
            o.retain_institution_identity, o.retain_patient_characteristics) == (
        True, False, False, False, True)
    assert o.retain_long_dates == "modified"
    assert o.clean_descriptors and o.clean_structured_content and o.clean_graphics
    assert o.overrides == ()


def test_from_mapping_rejects_unknown_keys_by_name():
    with pytest.raises(ValueError, match="retain_everything"):
        DeidOptions.from_mapping({"retain_everything": True})


def test_from_mapping_rejects_a_bad_long_dates_mode():
    with pytest.raises(ValueError, match="retain_long_dates"):
        DeidOptions.from_mapping({"retain_long_dates": "shifted"})


def test_from_mapping_rejects_non_boolean_flags():
    with pytest.raises(ValueError, match="retain_uids must be true or false"):
        DeidOptions.from_mapping({"retain_uids": "yes"})


def test_overrides_accept_keywords_and_tags_and_normalise_them():
    o = DeidOptions.from_mapping({"overrides": {"SeriesDescription": "x", "(0018,1030)": "K"}})
    assert o.overrides == (("(0008,103E)", "X"), ("(0018,1030)", "K"))


@pytest.mark.parametrize("overrides, message", [
    ({"SeriesDescription": "Q"}, "not one of"),
    ({"NoSuchKeyword": "X"}, "neither a"),
])
def test_overrides_reject_bad_actions_and_unknown_attributes(overrides, message):
    with pytest.raises(ValueError, match=message):
        DeidOptions.from_mapping({"overrides": overrides})


def test_describe_is_json_serialisable_and_complete():
    o = DeidOptions.from_mapping({"retain_long_dates": "off", "overrides": {"StationName": "K"}})
    described = json.loads(json.dumps(o.describe()))
    assert described["retain_long_dates"] == "off"
    assert described["overrides"] == {"(0008,1010)": "K"}
    assert set(described) >= {"retain_safe_private", "clean_graphics"}


def test_options_are_hashable_so_plans_can_be_cached():
    assert hash(DeidOptions()) == hash(DeidOptions.from_mapping({}))
