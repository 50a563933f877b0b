"""De-identified objects stay valid for their IOD: dciodvfy reports no error the input lacked."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import require_tool

from bidsdeid.deid.apply import ScrubContext, scrub_file
from bidsdeid.deid.options import DeidOptions
from bidsdeid.deid.synthetic import mr_image, secondary_capture

_VALUE = re.compile(r"<[^>]*>|\[[^\]]*\]")


def _errors(dciodvfy: str, path: Path) -> set[str]:
    """dciodvfy's error lines, with quoted values masked so only the complaint is compared."""
    result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60,
                            check=False)  # dciodvfy exits non-zero when it finds errors
    lines = (result.stdout + result.stderr).splitlines()
    return {_VALUE.sub("<>", line) for line in lines if line.startswith("Error")}


@pytest.mark.parametrize("build", [mr_image, secondary_capture], ids=["MR", "SC"])
@pytest.mark.parametrize("options", [DeidOptions(), DeidOptions(retain_long_dates="off",
                                                                 clean_descriptors=False)],
                         ids=["defaults", "dates-off"])
def test_scrubbing_adds_no_dciodvfy_error(tmp_path, build, options):
    dciodvfy = require_tool("dciodvfy")
    src = tmp_path / "in.dcm"
    build().save_as(src, enforce_file_format=True)
    dst = tmp_path / "out.dcm"
    ctx = ScrubContext(key=b"k" * 32, date_shift_days=-41_000, participant_label="abc",
                       identifiers=frozenset())
    scrub_file(src, dst, ctx, options)
    new_errors = _errors(dciodvfy, dst) - _errors(dciodvfy, src)
    assert not new_errors, f"dciodvfy errors introduced by scrubbing: {sorted(new_errors)}"
