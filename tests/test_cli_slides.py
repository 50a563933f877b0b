"""Slides through the CLI: cleaned into sourcedata/, and as BIDS microscopy with --wsi-bids."""

from __future__ import annotations

import openslide
import pytest
from slides import build_svs
from test_cli_inputs import t1_series
from treeutil import assert_bids_valid, find_tokens, run_cli, tree_hashes


@pytest.fixture(scope="module")
def slide_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("slides")
    src = root / "in"
    t1_series(src / "mri", patient="MRN0001")
    (src / "pathology").mkdir(parents=True)
    built = build_svs(src / "pathology" / "DOE_JOHN_case.svs")
    mapping = root / "slides.tsv"
    mapping.write_text("path\tpatient_id\npathology/DOE_JOHN_case.svs\tMRN0001\n")
    before = tree_hashes(src)
    proc = run_cli(src, root / "bids", "participant", "--no-deface", "--slide-mapping", mapping,
                   "--wsi-bids")
    return root, src, built, proc, before


def test_slide_run_succeeds_and_leaves_the_input_alone(slide_run):
    _root, src, _, proc, before = slide_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert tree_hashes(src) == before


def test_cleaned_slide_is_in_sourcedata_without_label_or_macro(slide_run):
    root, *_ = slide_run
    cleaned = list((root / "bids" / "sourcedata").glob("sub-*/ses-01/micr/*_slide.svs"))
    assert len(cleaned) == 1
    with openslide.OpenSlide(cleaned[0]) as slide:
        assert not {"label", "macro"} & set(slide.associated_images)


def test_microscopy_export_has_samples_tsv_and_sidecar(slide_run):
    root, *_ = slide_run
    exported = list((root / "bids").glob("sub-*/ses-01/micr/*_sample-01_BF.ome.tif"))
    assert len(exported) == 1
    assert exported[0].with_name(exported[0].name.replace(".ome.tif", ".json")).exists()
    rows = (root / "bids" / "samples.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["sample_id", "participant_id", "sample_type"]
    assert len(rows) == 2


def test_no_planted_slide_identifier_reaches_the_output(slide_run):
    root, _, built, _, _ = slide_run
    assert find_tokens(root / "bids", [*built.identifiers, "DOE_JOHN"]) == []


def test_output_with_microscopy_passes_the_validators(slide_run):
    root, *_ = slide_run
    assert_bids_valid(root / "bids")
