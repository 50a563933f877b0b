"""Several participant jobs writing into one OUTPUT_DIR at once give what a serial run gives."""

from __future__ import annotations

import subprocess
import sys

from bidsdeid.demo import make_demo
from treeutil import run_cli, tree_hashes


def test_parallel_participant_jobs_match_a_serial_run(tmp_path):
    manifest = make_demo(tmp_path / "input", n_patients=4, seed=1)
    private = tmp_path / "private"
    listed = run_cli(manifest.root, tmp_path / "serial", "participant", "--private-dir", private,
                     "--list-participants")
    labels = listed.stdout.split()
    assert len(labels) == 4, listed.stderr
    common = ["--private-dir", str(private), "--no-deface"]
    serial = run_cli(manifest.root, tmp_path / "serial", "participant", *common)
    assert serial.returncode == 0, serial.stderr[-2000:]
    jobs = [subprocess.Popen([sys.executable, "-m", "bidsdeid", str(manifest.root),
                              str(tmp_path / "parallel"), "participant", "--participant-label",
                              label, *common], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for label in labels]
    for job in jobs:
        _, err = job.communicate()
        assert job.returncode == 0, err[-2000:]
    assert tree_hashes(tmp_path / "parallel") == tree_hashes(tmp_path / "serial")
