"""Several participant jobs writing into one OUTPUT_DIR at once give what a serial run gives, a
job killed half-way leaves only whole files behind and is completed by running it again, and
parallel workers share the CPUs."""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
from PIL import Image
from treeutil import run_cli, tree_hashes

from bidsdeid.demo import make_demo
from bidsdeid.pipeline import cpu_share


def _participant_cmd(input_dir: Path, output_dir: Path, *options: str | Path) -> list[str]:
    return [sys.executable, "-m", "bidsdeid", str(input_dir), str(output_dir), "participant",
            *map(str, options)]


def _list_labels(input_dir: Path, private: Path) -> list[str]:
    listed = run_cli(input_dir, private.parent / "listing", "participant", "--private-dir", private,
                     "--list-participants", check=True)
    return listed.stdout.split()


def test_parallel_participant_jobs_match_a_serial_run(tmp_path):
    manifest = make_demo(tmp_path / "input", n_patients=4, seed=1)
    private = tmp_path / "private"
    labels = _list_labels(manifest.root, private)
    assert len(labels) == 4, f"expected 4 demo participants, got {labels}"
    common = ["--private-dir", private, "--no-deface"]
    run_cli(manifest.root, tmp_path / "serial", "participant", *common, check=True)
    # Jobs 2 and 4 run a process pool of their own; job 4's memory budget is below two workers'
    # estimate, so its pool runs one series at a time.
    pools = [(), ("--n-procs", "2"), (), ("--n-procs", "2", "--mem-gb", "1")]
    jobs = [subprocess.Popen(_participant_cmd(manifest.root, tmp_path / "parallel", *common,
                                              "--participant-label", label, *pool),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for label, pool in zip(labels, pools, strict=True)]
    for job in jobs:
        _, err = job.communicate(timeout=600)
        assert job.returncode == 0, err[-2000:]
    parallel, serial = tree_hashes(tmp_path / "parallel"), tree_hashes(tmp_path / "serial")
    assert sorted(parallel) == sorted(serial), "the parallel jobs wrote a different set of files"
    differing = [rel for rel in serial if parallel[rel] != serial[rel]]
    assert not differing, f"files whose content differs from the serial run: {differing}"


def _broken_files(root: Path) -> list[str]:
    """Visible files that are not whole: truncated gzip/NIfTI, unparsable JSON, ragged TSV, PNG."""
    broken = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue  # hidden temp files are the expected leftovers of a kill
        try:
            if path.name.endswith(".nii.gz"):
                gzip.decompress(path.read_bytes())  # the CRC and length catch truncation
                nib.load(path).get_fdata()
            elif path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".tsv":
                with path.open(newline="", encoding="utf-8") as fh:
                    rows = list(csv.reader(fh, delimiter="\t"))
                if not rows or any(len(row) != len(rows[0]) for row in rows):
                    raise ValueError("ragged or empty table")
            elif path.suffix == ".png":
                with Image.open(path) as image:
                    image.verify()
        except Exception as exc:  # noqa: BLE001 - every kind of damage is reported the same way
            broken.append(f"{rel}: {type(exc).__name__}: {exc}")
    return broken


def _wait_for_first_image(output_dir: Path, job: subprocess.Popen, timeout: float) -> bool:
    """Poll until the job has placed a NIfTI file into OUTPUT_DIR; False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and job.poll() is None:
        if next(output_dir.glob("sub-*/ses-*/*/*.nii.gz"), None) is not None:
            return True
        time.sleep(0.02)
    return False


def test_killed_participant_job_leaves_whole_files_and_a_rerun_completes_it(tmp_path):
    manifest = make_demo(tmp_path / "input", n_patients=1, seed=3)
    private = tmp_path / "private"
    common = ["--private-dir", private, "--no-deface"]
    run_cli(manifest.root, tmp_path / "reference", "participant", *common, check=True)
    # Killing the whole process group, pool workers included, is what a scheduler does to a job.
    # --work-dir keeps the scratch files the kill leaves behind inside tmp_path.
    job = subprocess.Popen(_participant_cmd(manifest.root, tmp_path / "killed", *common,
                                            "--n-procs", "2", "--work-dir", tmp_path / "work"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        writing = _wait_for_first_image(tmp_path / "killed", job, timeout=300)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    assert writing and job.returncode == -signal.SIGKILL, \
        "the job ended before it was killed half-way: the test proves nothing"
    assert _broken_files(tmp_path / "killed") == [], "the killed job left half-written files"
    run_cli(manifest.root, tmp_path / "killed", "participant", *common, check=True)
    assert tree_hashes(tmp_path / "killed") == tree_hashes(tmp_path / "reference"), \
        "re-running the killed job did not give the output of an uninterrupted run"


def test_workers_share_the_cpus_for_torch_threads():
    cpus = len(os.sched_getaffinity(0))
    assert cpu_share(1) == cpus, "a lone worker takes every CPU"
    assert cpu_share(2) == max(1, cpus // 2)
    assert cpu_share(cpus * 4) == 1, "every worker keeps at least one thread"
