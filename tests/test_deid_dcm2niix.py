"""Scrubbed real Siemens DICOM converts exactly like the original (voxels, geometry, timing)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import require_tool, shared_path

from bidsdeid.deid.apply import ScrubContext, scrub_file
from bidsdeid.deid.options import DeidOptions

SERIES = [
    ("Orientation", "ax", "axasc35"),  # mosaic EPI, slice times from the CSA header
    ("TotalReadoutTime", "PF_PAT_POS_PFOV_PEres_INTERP_test2",
     "58PF_NOPAT_NOPOS_PERES100_ES0P59_BW2222_AP_0016"),  # partial Fourier, readout time
]
FIELDS = ("SliceTiming", "EchoTime", "RepetitionTime", "PhaseEncodingDirection",
          "TotalReadoutTime")


def _dcm2niix() -> str:
    """The dcm2niix of this environment (the PyPI wheel lives beside the interpreter)."""
    beside = shutil.which("dcm2niix", path=str(Path(sys.executable).parent))
    return beside or require_tool("dcm2niix")


def _convert(dcm2niix: str, folder: Path, out: Path) -> tuple[nib.Nifti1Image, dict]:
    out.mkdir()
    subprocess.run([dcm2niix, "-b", "y", "-z", "n", "-f", "%s", "-o", str(out), str(folder)],
                   check=True, capture_output=True, timeout=120)
    (nii,) = out.glob("*.nii")
    return nib.load(nii), json.loads(nii.with_suffix(".json").read_text())


@pytest.mark.shared
@pytest.mark.parametrize("parts", SERIES, ids=[p[-1] for p in SERIES])
def test_scrubbed_series_converts_identically(tmp_path, parts):
    series = shared_path("dicom", "dcm_qa_In", *parts)
    dcm2niix = _dcm2niix()
    scrubbed = tmp_path / "scrubbed"
    ctx = ScrubContext(key=b"k" * 32, date_shift_days=-41_006, participant_label="abc",
                       identifiers=frozenset())
    for src in sorted(p for p in series.iterdir() if p.is_file() and p.suffix != ".nii"):
        scrub_file(src, scrubbed / src.name, ctx, DeidOptions())
    original_img, original_json = _convert(dcm2niix, series, tmp_path / "nii_original")
    scrubbed_img, scrubbed_json = _convert(dcm2niix, scrubbed, tmp_path / "nii_scrubbed")
    assert np.array_equal(original_img.get_fdata(), scrubbed_img.get_fdata()), "voxels differ"
    assert np.array_equal(original_img.affine, scrubbed_img.affine), "affine differs"
    for name in FIELDS:
        if name in original_json:
            assert scrubbed_json.get(name) == original_json[name], f"{name} differs"
    assert "SliceTiming" in scrubbed_json and "TotalReadoutTime" in scrubbed_json
