"""Sidecar fields BIDS requires or recommends that dcm2niix does not write."""

from __future__ import annotations

from bidsdeid.bids import sidecar_completions
from bidsdeid.records import BidsTarget

BOLD = BidsTarget("func", "bold", (("task", "rest"),))
MAG1, MAG2 = BidsTarget("fmap", "magnitude1"), BidsTarget("fmap", "magnitude2")
PHASEDIFF = BidsTarget("fmap", "phasediff")


def test_bold_gets_its_task_name():
    assert sidecar_completions([(BOLD, {})])[0]["TaskName"] == "rest"


def test_phasediff_gets_echo_times_from_its_magnitudes():
    extra = sidecar_completions([(MAG1, {"EchoTime": 0.00492}), (MAG2, {"EchoTime": 0.00738}),
                                 (PHASEDIFF, {})])[2]
    assert (extra["EchoTime1"], extra["EchoTime2"]) == (0.00492, 0.00738)


def test_one_field_map_is_linked_to_the_bold_and_dwi_images():
    dwi = BidsTarget("dwi", "dwi")
    extras = sidecar_completions([(MAG1, {}), (PHASEDIFF, {}), (BOLD, {}), (dwi, {})])
    assert {e["B0FieldIdentifier"] for e in extras[:2]} == {"b0map1"}
    assert extras[2]["B0FieldSource"] == extras[3]["B0FieldSource"] == "b0map1"


def test_epi_pair_is_one_field_map():
    ap = BidsTarget("fmap", "epi", (("dir", "AP"),))
    pa = BidsTarget("fmap", "epi", (("dir", "PA"),))
    extras = sidecar_completions([(ap, {}), (pa, {})])
    assert extras[0]["B0FieldIdentifier"] == extras[1]["B0FieldIdentifier"]


def test_several_field_maps_are_not_guessed_onto_images():
    other = BidsTarget("fmap", "phasediff", (("run", "2"),))
    extras = sidecar_completions([(PHASEDIFF, {}), (other, {}), (BOLD, {})])
    assert extras[0]["B0FieldIdentifier"] != extras[1]["B0FieldIdentifier"]
    assert "B0FieldSource" not in extras[2]


def test_epi_pair_and_gre_set_are_two_field_maps():
    ap = BidsTarget("fmap", "epi", (("dir", "AP"),))
    extras = sidecar_completions([(ap, {}), (PHASEDIFF, {}), (BOLD, {})])
    assert extras[0]["B0FieldIdentifier"] != extras[1]["B0FieldIdentifier"]
    assert "B0FieldSource" not in extras[2]
