"""End to end: the real CLI on the synthetic demo input, as a new user runs it."""

from __future__ import annotations

import json
import shutil
import stat

import pytest
from treeutil import assert_bids_valid, find_tokens, run_cli, tree_hashes

from bidsdeid.demo import make_demo


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One demo input converted once; tests below only read it."""
    root = tmp_path_factory.mktemp("demo")
    manifest = make_demo(root / "input", n_patients=3, seed=0)
    before = tree_hashes(manifest.root)
    proc = run_cli(manifest.root, root / "bids", "participant", "--verify")
    return manifest, root, proc, before


def test_participant_run_succeeds(demo_run):
    _, _, proc, _ = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_input_is_never_modified(demo_run):
    manifest, _, _, before = demo_run
    assert tree_hashes(manifest.root) == before


def test_no_planted_identifier_reaches_the_output(demo_run):
    manifest, root, _, _ = demo_run
    hits = find_tokens(root / "bids", manifest.tokens)
    assert hits == [], "identifiers found in the output:\n" + "\n".join(hits)


def test_one_subject_per_patient_with_pseudonymous_labels(demo_run):
    manifest, root, _, _ = demo_run
    subjects = sorted(p.name for p in (root / "bids").glob("sub-*"))
    assert len(subjects) == len(manifest.patients)
    rows = (root / "bids" / "participants.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows[1:]] == subjects


def test_expected_datatypes_are_written(demo_run):
    _, root, _, _ = demo_run
    names = {p.name.split("_")[-1] for p in (root / "bids").glob("sub-*/ses-*/*/*.nii.gz")}
    for suffix in ("T1w.nii.gz", "T2w.nii.gz", "FLAIR.nii.gz", "bold.nii.gz", "sbref.nii.gz",
                   "dwi.nii.gz", "phasediff.nii.gz", "magnitude1.nii.gz", "magnitude2.nii.gz"):
        assert suffix in names, f"no *_{suffix} in the output ({sorted(names)})"
    assert list((root / "bids").glob("sub-*/ses-*/dwi/*_dwi.bval")), "dwi without .bval"


def test_scans_tsv_acq_time_is_shifted_to_1925_or_earlier(demo_run):
    _, root, _, _ = demo_run
    for scans in (root / "bids").glob("sub-*/ses-*/*_scans.tsv"):
        for row in scans.read_text().splitlines()[1:]:
            filename, acq_time = row.split("\t")
            assert (scans.parent / filename).exists(), f"{scans.name} lists a missing {filename}"
            assert acq_time == "n/a" or int(acq_time[:4]) <= 1925, f"{scans.name}: {acq_time}"


def test_private_dir_is_beside_the_output_and_owner_only(demo_run):
    _, root, _, _ = demo_run
    private = root / "bids_private"
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    for path in private.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path} is not 0600"
    assert not list((root / "bids").rglob("*.key")), "the key must never be in the output"


def test_dataset_passes_the_bids_validators(demo_run):
    _, root, _, _ = demo_run
    assert_bids_valid(root / "bids")


def test_audit_record_has_counts_and_no_input_paths(demo_run):
    manifest, root, _, _ = demo_run
    audits = sorted((root / "bids" / "derivatives" / "bidsdeid" / "audit").glob("*_audit.json"))
    assert len(audits) == len(manifest.patients)
    record = json.loads(audits[0].read_text())
    assert record["header_actions"], "no header action counted"
    assert record["files_in"] > 0 and record["files_out"] > 0
    assert str(manifest.root) not in audits[0].read_text()


def test_rerun_gives_identical_output(demo_run, tmp_path):
    manifest, root, _, _ = demo_run
    first = tree_hashes(root / "bids")
    proc = run_cli(manifest.root, root / "bids", "participant")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tree_hashes(root / "bids") == first


def test_same_key_gives_same_labels_in_a_fresh_output(demo_run, tmp_path):
    manifest, root, _, _ = demo_run
    private = tmp_path / "priv"
    shutil.copytree(root / "bids_private", private)
    label = min(p.name for p in (root / "bids").glob("sub-*")).removeprefix("sub-")
    proc = run_cli(manifest.root, tmp_path / "out", "participant", "--participant-label", label,
                   "--private-dir", private, "--no-deface")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in (tmp_path / "out").glob("sub-*")] == [f"sub-{label}"]


def test_dry_run_prints_the_plan_and_writes_nothing(demo_run, tmp_path):
    manifest, _, _, _ = demo_run
    proc = run_cli(manifest.root, tmp_path / "out", "participant", "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "anat/" in proc.stdout and "skipped:" in proc.stdout
    assert not (tmp_path / "out").exists() and not (tmp_path / "out_private").exists()


def test_list_participants_prints_one_label_per_line(demo_run, tmp_path):
    manifest, root, _, _ = demo_run
    proc = run_cli(manifest.root, root / "bids", "participant", "--list-participants")
    assert proc.returncode == 0
    assert sorted(proc.stdout.split()) == sorted(p.name[4:] for p in (root / "bids").glob("sub-*"))


def test_output_inside_input_is_a_usage_error(demo_run):
    manifest, _, _, _ = demo_run
    proc = run_cli(manifest.root, manifest.root / "bids", "participant")
    assert proc.returncode == 2
    assert "inside INPUT_DIR" in proc.stderr


def test_unknown_config_option_is_a_usage_error(demo_run, tmp_path):
    manifest, _, _, _ = demo_run
    config = tmp_path / "c.toml"
    config.write_text("n_porcs = 2\n")
    proc = run_cli(manifest.root, tmp_path / "out", "participant", "--config", config)
    assert proc.returncode == 2 and "n_porcs" in proc.stderr


def test_group_stage_passes_on_the_demo_output(demo_run):
    manifest, root, _, _ = demo_run
    proc = run_cli(manifest.root, root / "bids", "group")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "residual identifiers: 0" in proc.stderr
    report = root / "bids" / "derivatives" / "bidsdeid" / "report.html"
    assert report.exists() and "<html" in report.read_text().lower()
    assert find_tokens(root / "bids", manifest.tokens) == [], "the report must not leak either"


def test_defacing_qc_pictures_are_written(demo_run):
    _, root, _, _ = demo_run
    pictures = list((root / "bids" / "derivatives" / "bidsdeid" / "qc").glob("sub-*/*_deface.png"))
    anat = list((root / "bids").glob("sub-*/ses-*/anat/*.nii.gz"))
    assert len(pictures) == len(anat), "one defacing QC picture per anatomical image"


def test_qc_pictures_showing_the_face_stay_in_the_private_dir(demo_run):
    from PIL import Image

    _, root, _, _ = demo_run
    shared = sorted((root / "bids" / "derivatives" / "bidsdeid" / "qc").glob("sub-*/*_deface.png"))
    private = sorted((root / "bids_private" / "qc").glob("sub-*/*_deface.png"))
    assert [p.name for p in private] == [p.name for p in shared]
    for shared_png, private_png in zip(shared, private):
        with Image.open(shared_png) as after, Image.open(private_png) as both:
            assert both.height == 2 * after.height, "the dataset gets the defaced row only"
