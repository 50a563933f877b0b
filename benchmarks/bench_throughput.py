"""Participants per hour for demo-sized subjects, with 1 and 2 processes, and the scaling ratio.

    .venv/bin/python benchmarks/bench_throughput.py [--patients 4] [--deface] [--keep DIR]

Writes the synthetic demo input (``bidsdeid demo``: per study 10 series, ~350 DICOM files; the
first patient has two studies), creates the private dir's key once, then times three ways of
converting all the patients, each into a fresh OUTPUT_DIR with the same key:

  1. one ``bidsdeid participant`` process, ``--n-procs 1`` (the baseline);
  2. one process, ``--n-procs 2`` (a pool of 2 workers for the series of a participant);
  3. array-style: one process per ``--participant-label``, two of them at a time, each
     ``--n-procs 1`` (what containers/slurm_array.sh does on a node with 2 CPUs).

Prints, for each, wall time, participants per hour and the speed-up over the baseline (the
scaling ratio), CPU seconds of all processes and participants per CPU-hour, and the peak RSS of
the largest single process. The load average is printed too: on a shared machine other work
lowers the wall-time figures (the CPU figures much less).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bidsdeid.demo import make_demo


@dataclass(frozen=True)
class JobResult:
    wall_s: float
    peak_rss_mb: float


@dataclass(frozen=True)
class ModeResult:
    name: str
    participants: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float

    @property
    def per_hour(self) -> float:
        return self.participants * 3600 / self.wall_s

    @property
    def per_cpu_hour(self) -> float:
        """Participants per CPU-hour: what other work on a shared machine changes least."""
        return self.participants * 3600 / self.cpu_s


def run_job(cmd: list[str]) -> JobResult:
    """Run one bidsdeid process; wall time and the peak RSS of it or its largest child."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})
    stderr = proc.stderr.read()
    proc.stderr.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{stderr.decode()[-2000:]}")
    return JobResult(time.perf_counter() - start, usage.ru_maxrss / 1024)


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_mode(name: str, commands: list[list[str]], slots: int, participants: int) -> ModeResult:
    """Run the commands ``slots`` at a time; wall and CPU time of the whole batch."""
    cpu_before, start = children_cpu_s(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=slots) as pool:
        jobs = list(pool.map(run_job, commands))
    return ModeResult(name, participants, time.perf_counter() - start,
                      children_cpu_s() - cpu_before, max(job.peak_rss_mb for job in jobs))


def bidsdeid_cmd(input_dir: Path, output_dir: Path, private: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "bidsdeid", str(input_dir), str(output_dir), "participant",
            "--private-dir", str(private), *options]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=4, help="demo patients (1-8)")
    parser.add_argument("--deface", action="store_true", help="deface anatomical images too")
    parser.add_argument("--keep", type=Path, help="keep the work folders here")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-throughput-", dir=args.keep))
    try:
        manifest = make_demo(root / "input", n_patients=args.patients, seed=0)
        private = root / "private"
        listed = subprocess.run(bidsdeid_cmd(manifest.root, root / "listing", private,
                                             "--list-participants"),
                                capture_output=True, text=True, check=True)
        labels = listed.stdout.split()
        n_files = sum(1 for path in manifest.root.rglob("*") if path.is_file())
        deface = "--deface" if args.deface else "--no-deface"
        load_before = os.getloadavg()
        modes = [
            time_mode("1 process, --n-procs 1", [bidsdeid_cmd(
                manifest.root, root / "out-serial", private, deface, "--n-procs", "1")],
                1, len(labels)),
            time_mode("1 process, --n-procs 2", [bidsdeid_cmd(
                manifest.root, root / "out-pool", private, deface, "--n-procs", "2")],
                1, len(labels)),
            time_mode("2 jobs at once, --n-procs 1", [bidsdeid_cmd(
                manifest.root, root / "out-array", private, deface, "--n-procs", "1",
                "--participant-label", label) for label in labels], 2, len(labels)),
        ]
        load_after = os.getloadavg()
        baseline = modes[0].per_hour
        print(f"input: {len(labels)} demo participants, {n_files} files, {deface}; "
              f"{os.cpu_count()} CPUs")
        print(f"load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f}")
        print(f"{'mode':<30}{'wall s':>9}{'part./h':>10}{'speed-up':>10}{'CPU s':>9}"
              f"{'part./CPU-h':>13}{'peak RSS MB':>13}")
        for mode in modes:
            print(f"{mode.name:<30}{mode.wall_s:>9.1f}{mode.per_hour:>10.0f}"
                  f"{mode.per_hour / baseline:>10.2f}{mode.cpu_s:>9.1f}{mode.per_cpu_hour:>13.0f}"
                  f"{mode.peak_rss_mb:>13.0f}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
