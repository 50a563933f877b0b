"""Validators, pybids summary and the HTML report (bidsdeid.validate, bidsdeid.report)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_verify import (
    QC_MARKER_RGB,
    SUBJECTS,
    FinishedDataset,
    build_finished_dataset,
    plant_leaks,
)

from bidsdeid import bids
from bidsdeid.privatedir import PrivateDir
from bidsdeid.report import make_masker, qc_category, write_report
from bidsdeid.validate import (
    ValidatorResult,
    deno_validator_command,
    layout_summary,
    node_validator_command,
    run_bids_validator,
    run_bids_validator_deno,
)
from bidsdeid.verify import scan_output

CHROMIUM = Path("/usr/bin/chromium")
SECTIONS = ("summary", "leak-scan", "validators", "dataset", "participants", "versions")


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> FinishedDataset:
    root = tmp_path_factory.mktemp("clean")
    return build_finished_dataset(root / "bids", root / "private")


@pytest.fixture(scope="module")
def validators(clean: FinishedDataset) -> list[ValidatorResult]:
    return [run_bids_validator(clean.root), run_bids_validator_deno(clean.root)]


def test_clean_dataset_passes_the_npm_validator(
    clean: FinishedDataset, validators: list[ValidatorResult]
) -> None:
    if node_validator_command() is None:
        pytest.skip("node or the npm bids-validator is not installed")
    result = validators[0]
    assert result.ran and result.version.startswith("1.")
    assert result.errors == 0, result.messages


def test_clean_dataset_passes_the_deno_validator(
    clean: FinishedDataset, validators: list[ValidatorResult]
) -> None:
    if deno_validator_command() is None:
        pytest.skip("bids-validator-deno is not installed")
    result = validators[1]
    assert result.ran
    assert result.errors == 0, result.messages


def test_validators_report_errors_with_code_and_path(
    clean: FinishedDataset, tmp_path: Path
) -> None:
    if node_validator_command() is None or deno_validator_command() is None:
        pytest.skip("a BIDS validator is not installed")
    stray = clean.root / f"sub-{next(iter(SUBJECTS))}" / "ses-01" / "anat" / "notes.txt"
    stray.write_text("not a BIDS file\n")
    try:
        results = [run_bids_validator(clean.root), run_bids_validator_deno(clean.root)]
    finally:
        stray.unlink()
    for result in results:
        assert result.errors >= 1, f"{result.tool} accepted a stray file"
        assert any("NOT_INCLUDED" in m and stray.name in m for m in result.messages), (
            result.messages
        )


def test_pybids_counts_subjects_sessions_and_datatypes(clean: FinishedDataset) -> None:
    summary = layout_summary(clean.root)
    assert (summary["subjects"], summary["sessions"], summary["images"]) == (2, 2, 4), summary
    assert summary["datatypes"] == {"anat": 2, "func": 2}
    assert summary["per_subject"]["k3x9p2ab"]["sessions"] == ["01"]


def test_masker_hides_every_leaked_value_in_any_case() -> None:
    from bidsdeid.verify import Leak

    mask = make_masker([Leak("a", "file name", "identifier #1 of sub-x", "ACC55127")])
    assert (
        mask("/sourcedata/sample-acc55127.tif") == "/sourcedata/sample-<identifier #1 of sub-x>.tif"
    )


@pytest.mark.parametrize(
    ("stem", "category"),
    [
        ("sub-a_ses-01_T1w_deface", "defacing"),
        ("sub-a_ses-01_series-002_redacted", "redaction"),
        ("sub-a_ses-01_series-002_unredacted", None),
        ("sub-a_ses-01_series-002_original", None),
    ],
)
def test_qc_pictures_are_sorted_by_name_and_originals_never_shown(stem: str, category: str) -> None:
    assert qc_category(stem) == category


def test_report_has_every_section_and_embeds_the_qc_pictures(
    clean: FinishedDataset, validators: list[ValidatorResult]
) -> None:
    path = write_report(clean.root, [], validators, layout_summary(clean.root))
    assert path == clean.root / bids.DERIVATIVES / "report.html"
    page = path.read_text()
    for section in SECTIONS:
        assert f'id="{section}"' in page, f"section {section} missing"
    assert page.count('class="qc-defacing"') == 2 and page.count('class="qc-redaction"') == 2
    assert not re.search(r'(src|href)="(?!data:)', page), "the report must not load anything"
    for label in SUBJECTS:
        assert f"sub-{label}_ses-01_T1w.nii.gz" in page, "series table lists each image"


def test_report_shows_leaks_without_their_values(tmp_path: Path) -> None:
    ds = build_finished_dataset(tmp_path / "bids", tmp_path / "private")
    plant_leaks(ds)
    leaks = scan_output(ds.root, PrivateDir.open(ds.private, create=False).load_identifiers())
    # a validator message quoting a leaky file name, as the validators do
    quoting = ValidatorResult(
        "bids-validator-deno",
        "3",
        1,
        0,
        ("ERROR NOT_INCLUDED x1: /sourcedata/sample-ACC55127_slide.tif",),
        True,
    )
    page = write_report(ds.root, leaks, [quoting], layout_summary(ds.root)).read_text().casefold()
    assert page.count("<tr><td>") >= len(leaks), "one table row per leak"
    for value in ("john doe", "mrn5582013", "acc55127", "2023-05-14"):
        assert value not in page, f"{value!r} written into the report"


def _screenshot(html: Path, png: Path, profile: Path) -> None:
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            "--window-size=1280,2000",
            html.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_report_renders_in_headless_chromium(
    clean: FinishedDataset, validators: list[ValidatorResult], tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed")
    report = write_report(clean.root, [], validators, layout_summary(clean.root))
    png = tmp_path / "report.png"
    _screenshot(report, png, tmp_path / "profile")
    assert png.exists(), "Chromium wrote no screenshot"
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.std() > 20, "the screenshot is (nearly) blank"

    def share(rgb: tuple[int, int, int]) -> float:
        return float(np.mean(np.all(np.abs(pixels - rgb) <= 8, axis=-1)))

    assert share((0x1F, 0x3B, 0x5A)) > 0.02, "the header band is not drawn"
    assert share((0x2E, 0x7D, 0x32)) > 0.002, "no green pass card (leak scan / validators)"
    assert share(QC_MARKER_RGB) > 0.0005, "the embedded QC pictures are not drawn"
