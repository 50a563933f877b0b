"""Faults during a run: kill -9 then re-run gives the uninterrupted output; a full work dir fails
cleanly, naming the series, and leaves no half-written file in OUTPUT_DIR."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dicomfactory import mr_slice, write
from pydicom.uid import generate_uid
from treeutil import run_cli, tree_hashes

KILL_SEED = 20261123


def _series(root: Path, patient: str, description: str, n: int, rows: int) -> None:
    study, series = generate_uid(), generate_uid()
    for i in range(n):
        write(mr_slice(patient, study, series, instance=i + 1, rows=rows, description=description),
              root / patient / f"{series[-6:]}_{i}.dcm")


def _input(root: Path) -> Path:
    for patient in ("MRN0001", "MRN0002", "MRN0003"):
        _series(root, patient, "t1_mprage_sag", n=6, rows=32)
        _series(root, patient, "t2_tse_tra", n=6, rows=32)
    return root


def _cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "bidsdeid", *map(str, args)]


def _temp_leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.tmp"))


def _start(src: Path, out: Path, *args: str | Path) -> subprocess.Popen:
    return subprocess.Popen(_cli(src, out, *args), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _wait_for_writing(job: subprocess.Popen, out: Path) -> float:
    """Wait until the run starts writing OUTPUT_DIR (after start-up and discovery)."""
    started = time.monotonic()
    while not (out / "dataset_description.json").exists() and job.poll() is None:
        time.sleep(0.02)
    return time.monotonic() - started


def test_killed_runs_then_a_rerun_give_the_uninterrupted_output(tmp_path):
    src = _input(tmp_path / "in")
    seed_private = tmp_path / "private_seed"
    assert run_cli(src, tmp_path / "unused", "participant", "--private-dir", seed_private,
                   "--list-participants").returncode == 0
    for name in ("private_ref", "private_killed"):
        shutil.copytree(seed_private, tmp_path / name)
    (tmp_path / "work").mkdir()
    common = ("participant", "--no-deface", "--work-dir", tmp_path / "work")

    ref = _start(src, tmp_path / "ref", *common, "--private-dir", tmp_path / "private_ref")
    _wait_for_writing(ref, tmp_path / "ref")
    writing_started = time.monotonic()
    assert ref.wait() == 0
    writing = time.monotonic() - writing_started

    rng = random.Random(KILL_SEED)
    out = tmp_path / "killed"
    killed_mid_run = 0
    for _ in range(3):
        job = _start(src, out, *common, "--private-dir", tmp_path / "private_killed")
        _wait_for_writing(job, out)
        time.sleep(rng.uniform(0.0, 1.0) * writing)
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)  # the CLI and its dcm2niix child, as kill -9 would
            killed_mid_run += 1
        job.wait()
    assert killed_mid_run >= 2, "the kills must interrupt runs, not only follow finished ones"

    rerun = run_cli(src, out, *common, "--private-dir", tmp_path / "private_killed")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _temp_leftovers(out) == [], "temp files of the killed runs remain in OUTPUT_DIR"
    assert tree_hashes(out) == tree_hashes(tmp_path / "ref")


def test_rerun_removes_a_temp_file_a_killed_run_left_in_the_dataset_root(tmp_path):
    src = tmp_path / "in"
    _series(src, "MRN0001", "t1_mprage_sag", n=2, rows=16)
    out = tmp_path / "out"
    assert run_cli(src, out, "participant", "--no-deface").returncode == 0
    # exactly what a run killed between mkstemp and os.replace in atomic_write_bytes leaves
    (out / ".participants.tsv.k1ll3d.tmp").write_text("participant_id\tage\tsex\n")
    assert run_cli(src, out, "participant", "--no-deface").returncode == 0
    assert _temp_leftovers(out) == []


def test_missing_work_dir_is_created(tmp_path):
    src = tmp_path / "in"
    _series(src, "MRN0001", "t1_mprage_sag", n=2, rows=16)
    proc = run_cli(src, tmp_path / "out", "participant", "--no-deface",
                   "--work-dir", tmp_path / "no" / "such" / "dir")
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert list((tmp_path / "out").glob("sub-*/ses-01/anat/*_T1w.nii.gz"))


# --- disk full --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def disk_full_run(tmp_path_factory):
    """A run whose work dir is a 2 MB tmpfs (mounting needs root) and whose first subject's
    series cannot fit in it."""
    tmp = tmp_path_factory.mktemp("diskfull")
    work = tmp / "work"
    work.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(work)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        src = tmp / "in"
        _series(src, "MRN0001", "t1_mprage_sag", n=80, rows=128)  # 2.6 MB: cannot fit in 2 MB
        _series(src, "MRN0002", "t1_mprage_sag", n=4, rows=16)    # fits
        out = tmp / "out"
        proc = run_cli(src, out, "participant", "--no-deface", "--work-dir", work,
                       "--private-dir", tmp / "private")
    finally:
        subprocess.run(["umount", "-l", str(work)], check=False)
    return proc, src, out, tmp / "private"


def _label(private: Path, patient: str) -> str:
    rows = (private / "subjects.tsv").read_text().splitlines()
    return next(r.split("\t")[1] for r in rows if r.startswith(f"id:{patient}\t"))


def test_full_work_dir_names_the_series_and_converts_the_rest(disk_full_run):
    proc, src, out, private = disk_full_run
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR ")]
    assert len(errors) == 1 and f"{src}/MRN0001/" in errors[0], errors
    assert list(out.glob(f"sub-{_label(private, 'MRN0002')}/ses-01/anat/*_T1w.nii.gz"))


def test_full_work_dir_leaves_no_half_file_in_the_output(disk_full_run):
    _, _, out, private = disk_full_run
    assert _temp_leftovers(out) == []
    assert not list(out.glob(f"sub-{_label(private, 'MRN0001')}/**/*.nii*")), \
        "the series that did not fit must not be written at all"


def test_full_work_dir_error_says_the_disk_is_full(disk_full_run):
    proc, *_ = disk_full_run
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR ")]
    assert any("no space left" in line.lower() for line in errors), errors
