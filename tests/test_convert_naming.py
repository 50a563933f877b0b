"""Naming of dcm2niix's outputs when one series splits into echoes or magnitude/phase."""

from __future__ import annotations

import pytest

from bidsdeid.convert import ConvertError, name_outputs
from bidsdeid.records import BidsTarget


def test_single_output_keeps_the_target():
    target = BidsTarget("anat", "T1w")
    assert name_outputs(target, [{"EchoNumber": 1}]) == [target]


def test_fieldmap_magnitude_echoes_become_magnitude1_and_2():
    target = BidsTarget("fmap", "magnitude")
    names = name_outputs(target, [{"EchoNumber": 1}, {"EchoNumber": 2}])
    assert [n.suffix for n in names] == ["magnitude1", "magnitude2"]


def test_single_echo_fieldmap_magnitude_is_magnitude1():
    assert name_outputs(BidsTarget("fmap", "magnitude"), [{}])[0].suffix == "magnitude1"


def test_multi_echo_series_gets_echo_entities():
    target = BidsTarget("func", "bold", (("task", "rest"),))
    names = name_outputs(target, [{"EchoNumber": 1}, {"EchoNumber": 2}, {"EchoNumber": 3}])
    assert [dict(n.entities)["echo"] for n in names] == ["1", "2", "3"]
    assert names[1].stem("01", None) == "sub-01_task-rest_echo-2_bold"


def test_magnitude_and_phase_get_part_entities():
    target = BidsTarget("anat", "T2starw")
    names = name_outputs(target, [{"ImageType": ["ORIGINAL", "PRIMARY", "M"]},
                                  {"ImageType": ["ORIGINAL", "PRIMARY", "P"]}])
    assert [dict(n.entities)["part"] for n in names] == ["mag", "phase"]


def test_outputs_that_cannot_be_told_apart_are_an_error():
    with pytest.raises(ConvertError):
        name_outputs(BidsTarget("anat", "T1w"), [{"EchoNumber": 1}, {"EchoNumber": 1}])


def test_stem_orders_entities_as_bids_does():
    target = BidsTarget("func", "bold", (("run", "2"), ("task", "rest"), ("acq", "mb")))
    assert target.stem("ab12", "01") == "sub-ab12_ses-01_task-rest_acq-mb_run-2_bold"
