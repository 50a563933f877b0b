"""Soak runs: memory stays flat over many subjects, and discovery of a huge tree stays bounded.

    .venv/bin/python benchmarks/bench_soak.py subjects [--subjects 500] [--checkpoint 50]
    .venv/bin/python benchmarks/bench_soak.py tree [--files 100000]

``subjects``: builds N subjects (one 4-slice 32x32 T1w series each, planted identifiers), runs
``bidsdeid INPUT OUTPUT participant --no-deface`` as one process and samples its memory from
/proc while it runs. A subject is done when its audit file appears. Prints the peak RSS (VmHWM)
and the current RSS (VmRSS) of the bidsdeid process when ``--checkpoint`` subjects are done and
at the end; flat memory means the two peaks are close (dcm2niix runs as a child and is not
counted).

``tree``: builds a tree of N tiny non-imaging files plus one 3-file DICOM series and runs
discovery in a child process for N/10 and N files; prints each peak RSS (ru_maxrss) and the
cost per extra file.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from mrslice import mr_slice
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid


def _slice(patient: int, study: str, series: str, instance: int) -> Dataset:
    ds = mr_slice(f"Soak^Patient{patient:04d}", f"SOAK{patient:06d}", study, series, 1, instance,
                  "t1_mprage_sag", np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * instance)
    ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = "19700101", "F", "054Y"
    ds.StudyDate = ds.SeriesDate = "20240131"
    ds.StudyTime = ds.SeriesTime = "101500"
    ds.Manufacturer = "SoakVendor"
    return ds


def build_subjects(root: Path, n_subjects: int) -> None:
    for patient in range(n_subjects):
        study, series = generate_uid(), generate_uid()
        folder = root / f"p{patient:04d}"
        folder.mkdir(parents=True)
        for instance in range(1, 5):
            _slice(patient, study, series, instance).save_as(folder / f"{instance}.dcm",
                                                             enforce_file_format=True)


def _status_kib(pid: int) -> dict[str, int]:
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0])
    except (OSError, ValueError):
        pass
    return values


def soak_subjects(n_subjects: int, checkpoint: int, keep: Path | None) -> None:
    tmp = Path(keep or tempfile.mkdtemp(prefix="bidsdeid-soak-"))
    src, out = tmp / "in", tmp / "out"
    started = time.monotonic()
    build_subjects(src, n_subjects)
    print(f"built {n_subjects} subjects ({4 * n_subjects} files) in "
          f"{time.monotonic() - started:.0f} s")
    audits = out / "derivatives" / "bidsdeid" / "audit"
    job = subprocess.Popen([sys.executable, "-m", "bidsdeid", str(src), str(out), "participant",
                            "--no-deface", "--redact", "off", "--work-dir", str(tmp)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    at_checkpoint: dict[str, int] | None = None
    last: dict[str, int] = {}
    while job.poll() is None:
        time.sleep(0.2)
        sample = _status_kib(job.pid)
        last = sample or last
        if at_checkpoint is None and audits.exists() and \
                sum(1 for _ in audits.glob("sub-*_audit.json")) >= checkpoint:
            at_checkpoint, checkpoint_time = dict(last), time.monotonic() - started
    elapsed = time.monotonic() - started
    stderr = job.stderr.read() if job.stderr else ""
    done = sum(1 for _ in audits.glob("sub-*_audit.json"))
    print(f"bidsdeid exit {job.returncode}, {done} subjects in {elapsed:.0f} s "
          f"({elapsed / max(done, 1):.2f} s per subject)")
    if job.returncode != 0:
        print(stderr[-2000:])
    if at_checkpoint:
        print(f"at {checkpoint:>4} subjects ({checkpoint_time:.0f} s): peak RSS "
              f"{at_checkpoint.get('VmHWM', 0) / 1024:.1f} MiB, current "
              f"{at_checkpoint.get('VmRSS', 0) / 1024:.1f} MiB")
    print(f"at {done:>4} subjects ({elapsed:.0f} s): peak RSS {last.get('VmHWM', 0) / 1024:.1f} "
          f"MiB, current {last.get('VmRSS', 0) / 1024:.1f} MiB (last sample before exit)")
    if keep is None:
        shutil.rmtree(tmp, ignore_errors=True)


_DISCOVER = textwrap.dedent("""
    import resource, sys, time
    from pathlib import Path
    from bidsdeid.discover import discover
    started = time.monotonic()
    found = discover(Path(sys.argv[1]))
    print(found.n_files, len(found.series), round(time.monotonic() - started, 1),
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


def build_tree(root: Path, n_files: int) -> None:
    for i in range(n_files):
        folder = root / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True)
        (folder / f"f{i:07d}.txt").write_bytes(b"x")
    study, series = generate_uid(), generate_uid()
    (root / "dicom").mkdir()
    for instance in range(1, 4):
        _slice(0, study, series, instance).save_as(root / "dicom" / f"{instance}.dcm",
                                                   enforce_file_format=True)


def soak_tree(n_files: int, keep: Path | None) -> None:
    tmp = Path(keep or tempfile.mkdtemp(prefix="bidsdeid-tree-"))
    results = []
    for n in (n_files // 10, n_files):
        root = tmp / f"tree{n}"
        build_tree(root, n)
        proc = subprocess.run([sys.executable, "-c", _DISCOVER, str(root)], capture_output=True,
                              text=True, check=True)
        files, series, seconds, peak = proc.stdout.split()
        results.append((int(files), int(peak)))
        print(f"discovery of {files} files ({series} series) in {seconds} s: peak RSS "
              f"{int(peak) / 1024:.1f} MiB")
        shutil.rmtree(root, ignore_errors=True)
    (small_files, small_peak), (large_files, large_peak) = results
    per_file = (large_peak - small_peak) * 1024 / (large_files - small_files)
    print(f"memory per extra file: {per_file:.0f} bytes")
    if keep is None:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    subjects = sub.add_parser("subjects")
    subjects.add_argument("--subjects", type=int, default=500)
    subjects.add_argument("--checkpoint", type=int, default=50)
    subjects.add_argument("--keep", type=Path, help="build in this folder and keep it")
    tree = sub.add_parser("tree")
    tree.add_argument("--files", type=int, default=100_000)
    tree.add_argument("--keep", type=Path, help="build in this folder and keep it")
    args = parser.parse_args()
    if args.mode == "subjects":
        soak_subjects(args.subjects, args.checkpoint, args.keep)
    else:
        soak_tree(args.files, args.keep)


if __name__ == "__main__":
    main()
