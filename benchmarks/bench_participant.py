"""Wall time and peak memory of ``bidsdeid participant`` against bare dcm2niix on the same files.

    .venv/bin/python benchmarks/bench_participant.py [--files 2000] [--keep DIR]

Builds an input of N single-slice MR DICOM files (20 series x N/20 slices, 128x128, with planted
identifiers), then runs, each as a separate process timed with wait4:
  1. bare ``dcm2niix -b y -z y`` on the whole input (what a user would otherwise run), and
  2. ``bidsdeid INPUT OUTPUT participant --no-deface --redact off`` (discovery, heuristic,
     header scrubbing of every file, dcm2niix per series, sidecar/NIfTI sanitizing, BIDS writing).
Prints both and the ratio (target: bidsdeid <= 1.5x bare dcm2niix with defacing and OCR off).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from mrslice import mr_slice
from pydicom.uid import generate_uid

SERIES = 20


def build_input(root: Path, n_files: int) -> None:
    rng = np.random.default_rng(0)
    per_series = max(1, n_files // SERIES)
    study = generate_uid()
    descriptions = ["t1_mprage_sag", "t2_tse_tra", "t2_flair_tra", "pd_tse_tra"]
    for s in range(SERIES):
        series_uid = generate_uid()
        for i in range(per_series):
            pixels = rng.integers(0, 4000, (128, 128), dtype=np.uint16)
            ds = mr_slice("Bench^Patient", "MRN7654321", study, series_uid, s + 1, i + 1,
                          descriptions[s % len(descriptions)], pixels)
            ds.PatientBirthDate = "19600101"
            ds.InstitutionName, ds.StationName = "Bench General Hospital", "BENCHMR1"
            ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = "20240131"
            ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = f"1000{s:02d}"
            ds.Manufacturer = "BenchVendor"
            ds.EchoTime, ds.RepetitionTime = 30.0, 2000.0
            folder = root / f"s{s:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            ds.save_as(folder / f"{i:05d}.dcm", enforce_file_format=True)


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of a command, waited-for children included."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--keep", type=Path, help="keep the work folders here")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-participant-", dir=args.keep))
    try:
        build_input(root / "input", args.files)
        bin_dir = Path(sys.executable).parent
        bare_out = root / "bare"
        bare_out.mkdir()
        bare = timed([str(bin_dir / "dcm2niix"), "-b", "y", "-z", "y", "-o", str(bare_out),
                      str(root / "input")])
        ours = timed([sys.executable, "-m", "bidsdeid", str(root / "input"), str(root / "bids"),
                      "participant", "--no-deface", "--redact", "off"])
        print(f"input: {args.files} files in {SERIES} series of 128x128 slices")
        print(f"{'tool':<34}{'wall s':>10}{'CPU s':>10}{'peak RSS MB':>14}")
        for name, (wall, cpu, rss) in (("dcm2niix (bare, no de-id)", bare),
                                       ("bidsdeid participant", ours)):
            print(f"{name:<34}{wall:>10.2f}{cpu:>10.2f}{rss:>14.0f}")
        print(f"ratio bidsdeid / bare dcm2niix: wall {ours[0] / bare[0]:.2f} (target <= 1.5), "
              f"CPU {ours[1] / bare[1]:.2f}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
