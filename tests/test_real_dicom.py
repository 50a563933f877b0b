"""The pipeline on real Siemens scanner DICOM (dcm_qa, in ../shared/data/dicom)."""

from __future__ import annotations

import pytest
from conftest import shared_path
from treeutil import assert_bids_valid, find_tokens, run_cli, tree_hashes

HEURISTIC = """\
from bidsdeid.records import BidsTarget


def infotodict(series):
    # every dcm_qa series is an EPI run: one task, run numbers come from repeats
    return BidsTarget("func", "bold", (("task", "qa"),))
"""

# Identifying values of the site that are in these headers (dcm2niix -ba y keeps them).
SITE_TOKENS = ["Medical Center Dr", "MRC35131", "Columbia,SC", "Radiology"]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    source = shared_path("dicom", "dcm_qa_In", "Orientation", "ax")
    root = tmp_path_factory.mktemp("real")
    plugin = root / "qa_heuristic.py"
    plugin.write_text(HEURISTIC)
    before = tree_hashes(source)
    proc = run_cli(source, root / "bids", "participant", "--heuristic", plugin, "--no-deface")
    return source, root, proc, before


def test_real_scanner_series_convert(real_run):
    _, root, proc, _ = real_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((root / "bids").glob("sub-*/ses-*/func/*_bold.nii.gz"))) >= 5


def test_real_output_passes_both_bids_validators(real_run):
    _, root, _, _ = real_run
    assert_bids_valid(root / "bids")


def test_real_output_has_no_site_identifiers(real_run):
    _, root, _, _ = real_run
    assert find_tokens(root / "bids", SITE_TOKENS) == []


def test_real_input_is_untouched(real_run):
    source, _, _, before = real_run
    assert tree_hashes(source) == before
