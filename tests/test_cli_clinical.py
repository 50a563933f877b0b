"""The clinical heuristic: screen captures kept as redacted, de-identified DICOM in sourcedata/."""

from __future__ import annotations

import pydicom
import pytesseract
import pytest
from treeutil import find_tokens, run_cli

from bidsdeid.demo import make_demo


@pytest.fixture(scope="module")
def clinical_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("clinical")
    manifest = make_demo(root / "input", n_patients=1, seed=3)
    proc = run_cli(manifest.root, root / "bids", "participant", "--heuristic", "clinical",
                   "--no-deface")
    return manifest, root, proc


def screenshots(root):
    return sorted((root / "bids" / "sourcedata").glob("sub-*/ses-*/dicom/*_screenshot/*.dcm"))


def test_screen_captures_are_kept_in_sourcedata(clinical_run):
    _, root, proc = clinical_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert screenshots(root), "no screen capture under sourcedata/*/dicom/"


def test_burned_in_identifiers_are_gone_from_the_pixels(clinical_run):
    manifest, root, _ = clinical_run
    words = {t.lower() for p in manifest.patients for t in (p.patient_id, *p.name.replace("^", " ").split())}
    for path in screenshots(root):
        ds = pydicom.dcmread(path)
        assert ds.BurnedInAnnotation == "NO"
        text = pytesseract.image_to_string(ds.pixel_array).lower()
        found = sorted(w for w in words if len(w) >= 4 and w in text)
        assert found == [], f"{path.name}: OCR still reads {found}"


def test_kept_dicom_carries_no_planted_identifier(clinical_run):
    manifest, root, _ = clinical_run
    assert find_tokens(root / "bids" / "sourcedata", manifest.tokens) == []


def test_redaction_thumbnail_is_in_the_qc_folder(clinical_run):
    _, root, _ = clinical_run
    assert list((root / "bids" / "derivatives" / "bidsdeid" / "qc").glob("sub-*/*_redacted.png"))
