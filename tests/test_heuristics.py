"""Heuristics: rule files, the shipped default, Python plug-ins and session-level naming."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bidsdeid.heuristics import (
    NO_MATCH,
    UNSAFE_LABEL,
    Heuristic,
    HeuristicError,
    assign_targets,
    is_safe_label,
    load_heuristic,
    shipped_heuristics,
    shipped_heuristics_dir,
)
from bidsdeid.records import BidsTarget, Series

PATIENT = {"PatientName": "QUIMBLEFORD^ARAMINTA", "PatientID": "48213907",
           "PatientBirthDate": "19710305", "Modality": "MR"}
MAGNITUDE = ["ORIGINAL", "PRIMARY", "M", "ND"]
PHASE = ["ORIGINAL", "PRIMARY", "P", "ND"]


def make_series(description: str, number: int = 1, **header: Any) -> Series:
    """A series whose header is what discovery would keep from the first instance."""
    values = PATIENT | {"SeriesDescription": description, "ProtocolName": description,
                        "SeriesNumber": number, "ImageType": MAGNITUDE,
                        "SeriesTime": f"1{number:02d}000.000000", "NumberOfFiles": 10} | header
    return Series("id:48213907", "1.2.3", f"1.2.3.{number}", [], values)


def rules(tmp_path: Path, text: str) -> Heuristic:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return load_heuristic(str(path))


def name(result: BidsTarget | str) -> str:
    """``anat/acq-x_T1w`` for a target, the reason for a skip."""
    if isinstance(result, str):
        return result
    return f"{result.datatype}/{result.stem('x', None).removeprefix('sub-x_')}"


@pytest.fixture(scope="module")
def default() -> Heuristic:
    return load_heuristic("default")


# --- loading ---------------------------------------------------------------------------------


def test_default_is_shipped_and_loads_by_name() -> None:
    assert "default" in shipped_heuristics()
    assert (shipped_heuristics_dir() / "default.toml").is_file()
    assert load_heuristic("default").name == "default"


def test_rule_file_loads_by_path(tmp_path: Path) -> None:
    heuristic = rules(tmp_path, '[[rule]]\nskip = "all"\n')
    assert heuristic.name == "rules"
    assert heuristic.classify(make_series("anything")) == "all"


@pytest.mark.parametrize(("text", "message"), [
    ("[[rule", "not a readable TOML file"),
    ("x = 1\n", "unknown key"),
    ("description = 'no rules'\n", "at least one"),
    ('[[rule]]\nskip = "s"\ndatatype = "anat"\n', "either skips or names a target"),
    ('[[rule]]\ndatatype = "beh"\nsuffix = "x"\n', "datatype must be one of"),
    ('[[rule]]\ndatatype = "anat"\nsuffix = "T1 w"\n', "suffix must be letters and digits"),
    ('[[rule]]\nskip = "s"\nmatch = { SeriesDescription = "(" }\n', "invalid regular expression"),
    ('[[rule]]\nskip = "s"\nmatch = { "Series Description" = "x" }\n', "not a header keyword"),
    ('[[rule]]\nskip = "s"\nmatch = { EchoTime = { min = "1" } }\n', "min/max must be numbers"),
    ('[[rule]]\nskip = "s"\nmatch = { EchoTime = { between = 1 } }\n', "unknown key"),
    ('[[rule]]\ndatatype = "anat"\nsuffix = "T1w"\nentities = { run = "1" }\n',
     "not an entity a heuristic may set"),
    ('[[rule]]\ndatatype = "anat"\nsuffix = "T1w"\nentities = { acq = "a-b" }\n',
     "must be letters and digits"),
    ('[[rule]]\ndatatype = "func"\nsuffix = "bold"\nentities = { task = { from = "X" } }\n',
     "needs from"),
])
def test_invalid_rule_files_are_refused_with_the_reason(tmp_path: Path, text: str,
                                                        message: str) -> None:
    with pytest.raises(HeuristicError, match=message) as raised:
        rules(tmp_path, text)
    assert "rules.toml" in str(raised.value), "the message names the file"


def test_unknown_name_lists_the_shipped_heuristics() -> None:
    with pytest.raises(ValueError, match="unknown heuristic 'reproin'.*default"):
        load_heuristic("reproin")


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="heuristic file not found"):
        load_heuristic(str(tmp_path / "absent.toml"))


# --- conditions ------------------------------------------------------------------------------


def test_first_matching_rule_wins_and_unmatched_series_are_skipped(tmp_path: Path) -> None:
    heuristic = rules(tmp_path, """
[[rule]]
skip = "first"
match = { SeriesDescription = "t1" }
[[rule]]
skip = "second"
match = { SeriesDescription = "mprage" }
""")
    assert heuristic.classify(make_series("T1_MPRAGE")) == "first", "case-insensitive, in order"
    assert heuristic.classify(make_series("mprage")) == "second"
    assert heuristic.classify(make_series("flair")) == NO_MATCH


def test_any_of_several_keywords_may_satisfy_a_condition(tmp_path: Path) -> None:
    heuristic = rules(tmp_path, '[[rule]]\nskip = "hit"\n'
                                'match = { "SeriesDescription|ProtocolName" = "bold" }\n')
    assert heuristic.classify(make_series("x", ProtocolName="ep_bold")) == "hit"
    assert heuristic.classify(make_series("x", ProtocolName="ep_dwi")) == NO_MATCH


@pytest.mark.parametrize(("image_type", "hit"), [
    (["ORIGINAL", "PRIMARY", "P", "ND"], True),
    ("ORIGINAL\\PRIMARY\\PHASE", True),  # a single backslash-joined string counts as a list
    (["ORIGINAL", "PRIMARY", "M", "ND"], False),
    ([], False),
])
def test_contains_tests_list_items_not_substrings(tmp_path: Path, image_type: Any,
                                                  hit: bool) -> None:
    heuristic = rules(tmp_path, '[[rule]]\nskip = "phase"\n'
                                'match = { ImageType = { contains = ["p", "PHASE"] } }\n')
    assert (heuristic.classify(make_series("x", ImageType=image_type)) == "phase") is hit


@pytest.mark.parametrize(("echo_time", "hit"), [
    (2.0, True), (10, True), (10.5, False), ("4.5", True), (None, False), ([3.0, 5.0], True),
])
def test_numeric_range_is_closed(tmp_path: Path, echo_time: Any, hit: bool) -> None:
    heuristic = rules(tmp_path, '[[rule]]\nskip = "short TE"\n'
                                'match = { EchoTime = { min = 2, max = 10 } }\n')
    assert (heuristic.classify(make_series("x", EchoTime=echo_time)) == "short TE") is hit


def test_absent_and_unless(tmp_path: Path) -> None:
    heuristic = rules(tmp_path, """
[[rule]]
skip = "no contrast"
match = { ContrastBolusAgent = { absent = true } }
unless = { SeriesDescription = "flair" }
""")
    assert heuristic.classify(make_series("t1")) == "no contrast"
    assert heuristic.classify(make_series("t1", ContrastBolusAgent="")) == "no contrast"
    assert heuristic.classify(make_series("t1", ContrastBolusAgent="Gd")) == NO_MATCH
    assert heuristic.classify(make_series("t2_flair")) == NO_MATCH


# --- entities --------------------------------------------------------------------------------

BOLD_RULES = """
[[rule]]
datatype = "func"
suffix = "bold"
match = { SeriesDescription = "bold" }
[rule.entities]
task = { from = "SeriesDescription", regex = 'task[-_]([a-z0-9_]+)' }
dir = { from = "SeriesDescription", regex = '_(ap|pa)_', choices = ["AP", "PA"], default = "" }

[[rule]]
skip = "bold without task"
match = { SeriesDescription = "bold" }
"""


@pytest.mark.parametrize(("description", "expected"), [
    ("bold_task-nback", "func/task-nback_bold"),
    ("bold_pa_task-n_back", "func/task-nback_dir-PA_bold"),  # reduced to letters and digits
    ("bold_rest", "bold without task"),  # required entity missing: the rule does not apply
    ("bold_task-quimbleford", "bold without task"),  # the patient's name is never a label
    ("bold_task-48213907", "bold without task"),  # nor the ID or any long digit run
])
def test_entities_come_from_the_header_but_never_carry_identifiers(
        tmp_path: Path, description: str, expected: str) -> None:
    heuristic = rules(tmp_path, BOLD_RULES)
    assert name(heuristic.classify(make_series(description))) == expected


@pytest.mark.parametrize(("label", "safe"), [
    ("rest", True), ("b1000", True), ("mb4", True), ("", False), ("a-b", False),
    ("x" * 25, False), ("20240115", False), ("quimbleford", False), ("AramintaQ", False),
    ("réseau", False),
])
def test_safe_labels(label: str, safe: bool) -> None:
    assert is_safe_label(label, PATIENT) is safe


# --- the shipped default ---------------------------------------------------------------------

ORIGINAL = ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"]


@pytest.mark.parametrize(("description", "header", "expected"), [
    # anatomy, Siemens / GE / Philips naming
    ("t1_mprage_sag_p2_iso", {}, "anat/T1w"),
    ("Sag 3D FSPGR BRAVO", {}, "anat/T1w"),
    ("T1W_3D_TFE", {}, "anat/T1w"),
    ("t1_mprage_post_gd", {}, "anat/ce-gadolinium_T1w"),
    ("t1_mprage_sag", {"ContrastBolusAgent": "Gadovist"}, "anat/ce-gadolinium_T1w"),
    ("t1_mprage_sag", {"ContrastBolusAgent": "NONE"}, "anat/T1w"),
    ("t2_tse_tra", {}, "anat/T2w"),
    ("T2W_TSE", {}, "anat/T2w"),
    ("Ax T2 FSE", {}, "anat/T2w"),
    ("t2_space_sag_p2_iso", {}, "anat/T2w"),
    ("t2_tirm_tra_dark-fluid", {}, "anat/FLAIR"),
    ("Sag CUBE FLAIR", {}, "anat/FLAIR"),
    ("pd_tse_cor", {}, "anat/PDw"),
    ("t2_swi_tra", {}, "SWI is not mapped by the default heuristic"),
    ("mp2rage_INV1", {}, "anat/inv-1_MP2RAGE"),
    ("mp2rage_UNI_Images", {}, "anat/UNIT1"),
    ("anything", {"MRAcquisitionType": "3D", "ScanningSequence": ["GR", "IR"],
                  "InversionTime": 900.0, "EchoTime": 2.98}, "anat/T1w"),
    # functional
    ("cmrr_mbep2d_bold_rest", {}, "func/task-rest_bold"),
    ("cmrr_mbep2d_bold_rest_SBRef", {}, "func/task-rest_sbref"),
    ("func_task-nback_run-1_bold", {}, "func/task-nback_bold"),
    ("rfMRI_REST_AP", {}, "func/task-REST_dir-AP_bold"),
    ("tfMRI_WM_PA_SBRef", {}, "func/task-WM_dir-PA_sbref"),
    ("ep2d_bold_moco", {"ImageType": ["DERIVED", "PRIMARY", "M", "MOCO"]},
     "derived or secondary series"),
    ("ep2d_bold", {}, ("BOLD series without a task label in its description "
                       "(add a rule naming the task)")),
    # diffusion
    ("ep2d_diff_mddw_30dir_b1000", {}, "dwi/dwi"),
    ("dMRI_dir98_AP", {}, "dwi/dir-AP_dwi"),
    ("dMRI_dir98_AP_SBRef", {}, "dwi/dir-AP_sbref"),
    ("ep2d_diff_mddw_30dir_b1000_ADC", {"ImageType": ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]},
     "derived parameter map (ADC/FA/TRACE/...)"),
    ("ep2d_diff_FA", {}, "derived parameter map (ADC/FA/TRACE/...)"),
    # field maps
    ("gre_field_mapping", {"ImageType": MAGNITUDE}, "fmap/magnitude"),
    ("gre_field_mapping", {"ImageType": PHASE}, "fmap/phasediff"),
    ("SpinEchoFieldMap_AP", {"ScanningSequence": "EP"}, "fmap/dir-AP_epi"),
    ("fmap_dir-PA", {"ScanningSequence": "EP"}, "fmap/dir-PA_epi"),
    # skipped
    ("localizer", {}, "localizer"),
    ("AAHead_Scout_64ch-head-coil", {}, "localizer"),
    ("3Plane Loc SSFSE", {}, "localizer"),
    ("SURVEY", {}, "localizer"),
    ("t1_mprage_sag_p2_iso_MPR_Cor", {"ImageType": ["DERIVED", "SECONDARY", "MPR"]},
     "reformatted or projection image (MPR/MIP)"),
    ("PhoenixZIPReport", {"Modality": "SR"},
     "not an MR image (screen capture, report or presentation object)"),
    ("Screen Save", {"Modality": "OT"},
     "not an MR image (screen capture, report or presentation object)"),
    ("dose report", {"Modality": "CT"}, "vendor protocol report"),
    ("pcasl_3d", {}, ("ASL perfusion is not mapped by the default heuristic (needs "
                      "aslcontext; add a rule)")),
    ("cardiac cine", {}, NO_MATCH),
])
def test_default_heuristic_names_common_neuro_series(
        default: Heuristic, description: str, header: dict[str, Any], expected: str) -> None:
    series = make_series(description, **({"ImageType": ORIGINAL} | header))
    assert name(default.classify(series)) == expected


def test_default_ignores_the_patient_name_in_a_description(default: Heuristic) -> None:
    series = make_series("t2_tse_tra QUIMBLEFORD 48213907")
    assert name(default.classify(series)) == "anat/T2w"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=40))
def test_default_never_writes_an_identifier_into_a_label(description: str) -> None:
    """Whatever a technologist typed around the patient's name, labels stay clean."""
    heuristic = load_heuristic("default")
    for text in (description, f"bold_task-quimbleford{description}",
                 f"{description}_task-{PATIENT['PatientID']}_bold"):
        result = heuristic.classify(make_series(text))
        if isinstance(result, BidsTarget):
            for _, label in result.entities:
                assert is_safe_label(label, PATIENT), f"{text!r} gave label {label!r}"


# --- Python plug-ins -------------------------------------------------------------------------


def plugin(tmp_path: Path, body: str) -> Heuristic:
    path = tmp_path / "my_rules.py"
    path.write_text("from bidsdeid.records import BidsTarget\n\n" + body)
    return load_heuristic(str(path))


def test_plugin_infotodict_decides(tmp_path: Path) -> None:
    heuristic = plugin(tmp_path, """
def infotodict(series):
    description = series.header["SeriesDescription"]
    if "mprage" in description:
        return BidsTarget("anat", "T1w", (("acq", "mprage"),))
    if "scout" in description:
        return "scout"
    return None
""")
    assert heuristic.name == "my_rules"
    assert name(heuristic.classify(make_series("t1_mprage"))) == "anat/acq-mprage_T1w"
    assert heuristic.classify(make_series("scout")) == "scout"
    assert heuristic.classify(make_series("other")) == NO_MATCH


def test_plugin_labels_are_checked_like_rule_labels(tmp_path: Path) -> None:
    heuristic = plugin(tmp_path, """
def infotodict(series):
    return BidsTarget("anat", "T1w", (("acq", series.header["PatientID"]),))
""")
    assert heuristic.classify(make_series("t1")) == UNSAFE_LABEL


@pytest.mark.parametrize(("body", "message"), [
    ("def infotodict(series):\n    return BidsTarget('raw', 'T1w')\n", "datatype 'raw'"),
    ("def infotodict(series):\n    return BidsTarget('anat', 'T1w', (('sub', 'a'),))\n",
     "entity 'sub'"),
    ("def infotodict(series):\n    return 42\n", "returned int"),
])
def test_plugin_returning_an_invalid_target_is_an_error(tmp_path: Path, body: str,
                                                        message: str) -> None:
    with pytest.raises(HeuristicError, match=message):
        plugin(tmp_path, body).classify(make_series("t1"))


@pytest.mark.parametrize(("body", "message"), [
    ("def other(series):\n    return None\n", "defines no function infotodict"),
    ("raise RuntimeError('boom')\n", "import failed: RuntimeError: boom"),
])
def test_broken_plugin_is_refused_when_loading(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(HeuristicError, match=message):
        plugin(tmp_path, body)


# --- one session: runs, parts, echoes --------------------------------------------------------


def targets(series: list[Series]) -> list[str]:
    return [name(s.target) if s.target else f"skip: {s.skip_reason}" for s in series]


def test_repeated_targets_get_runs_in_acquisition_order(default: Heuristic) -> None:
    late = make_series("t1_mprage", number=5)
    early = make_series("t1_mprage", number=2)
    single = make_series("t2_tse", number=3)
    scout = make_series("localizer", number=1)
    session = [late, single, scout, early]
    assign_targets(session, default)
    assert targets(session) == ["anat/run-2_T1w", "anat/T2w", "skip: localizer",
                                "anat/run-1_T1w"]


def test_bold_runs_pair_with_their_sbref(default: Heuristic) -> None:
    session = [make_series(d, number=n) for n, d in enumerate(
        ["bold_rest_SBRef", "bold_rest", "bold_rest_SBRef", "bold_rest"], start=1)]
    assign_targets(session, default)
    assert targets(session) == ["func/task-rest_run-1_sbref", "func/task-rest_run-1_bold",
                                "func/task-rest_run-2_sbref", "func/task-rest_run-2_bold"]


def test_separate_phase_series_get_part_entities(default: Heuristic) -> None:
    session = [make_series("bold_rest", number=1, ImageType=MAGNITUDE),
               make_series("bold_rest", number=2, ImageType=PHASE)]
    assign_targets(session, default)
    assert targets(session) == ["func/task-rest_part-mag_bold", "func/task-rest_part-phase_bold"]


def test_separate_echo_series_get_echo_entities_by_echo_time(default: Heuristic) -> None:
    session = [make_series("me_mprage", number=n, EchoTime=te)
               for n, te in ((1, 3.6), (2, 1.8), (3, 5.4))]
    assign_targets(session, default)
    assert targets(session) == ["anat/echo-2_T1w", "anat/echo-1_T1w", "anat/echo-3_T1w"]


def test_separate_field_map_magnitude_echoes_become_magnitude1_and_2(default: Heuristic) -> None:
    session = [make_series("gre_field_mapping", number=1, EchoTime=4.92),
               make_series("gre_field_mapping", number=2, EchoTime=7.38),
               make_series("gre_field_mapping", number=3, EchoTime=7.38, ImageType=PHASE)]
    assign_targets(session, default)
    assert targets(session) == ["fmap/magnitude1", "fmap/magnitude2", "fmap/phasediff"]


def test_field_map_phase_is_not_a_part(default: Heuristic) -> None:
    session = [make_series("gre_field_mapping", number=1, EchoTime=4.92),
               make_series("gre_field_mapping", number=2, EchoTime=7.38, ImageType=PHASE)]
    assign_targets(session, default)
    assert targets(session) == ["fmap/magnitude", "fmap/phasediff"]
