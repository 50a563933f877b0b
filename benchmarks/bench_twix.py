"""Throughput and peak memory of twix de-identification on a ~1 GB synthetic VD file.

    .venv/bin/python benchmarks/bench_twix.py [--size-mb 1024] [--workdir DIR]

Builds the file in chunks (tests/twixfiles.py: a noise measurement and one large 32-channel
measurement), then runs ``clean_twix`` in a fresh child process so that its peak RSS
(``ru_maxrss``) is its own and not the builder's. A plain file copy of the same file is timed
beside it as the I/O ceiling. De-identification reads the input once, writes it, and reads the
output twice (raw-data hash and the twixtools re-open), so about a third of the copy speed is the
expected figure. Requirement: peak RSS <= 200 MB, i.e. raw data is streamed, never loaded.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHANNELS, SAMPLES = 32, 512
PEAK_RSS_LIMIT_MB = 200


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_clean(src: Path, dst: Path) -> None:
    """Run in a fresh interpreter: import, note RSS, clean, print figures as JSON."""
    from twixfiles import Planted

    from bidsdeid.rawdata.twix import clean_twix

    baseline = _rss_mb()
    start = time.perf_counter()
    result = clean_twix(src, dst, bytes(32), -7 * 5800, Planted().identifiers())
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "bytes": result.bytes, "baseline_rss_mb": baseline,
                      "peak_rss_mb": _rss_mb(), "replacements": result.replacements}))


def build(path: Path, size_mb: int) -> None:
    from twixfiles import MeasSpec, build_twix
    from twixtools import mdh_def

    block = ctypes.sizeof(mdh_def.Scan_header) + CHANNELS * (
        ctypes.sizeof(mdh_def.Channel_header) + 8 * SAMPLES)
    lines = max(1, (size_mb << 20) // block)
    specs = [MeasSpec("noise", 16, CHANNELS, SAMPLES), MeasSpec("mprage", lines, CHANNELS, SAMPLES)]
    build_twix(path, "VD", specs, keep_data=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", nargs=2, type=Path, metavar=("SRC", "DST"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    if args.child:
        child_clean(*args.child)
        return 0

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        src, dst, copy = Path(tmp, "meas.dat"), Path(tmp, "clean.dat"), Path(tmp, "copy.dat")
        start = time.perf_counter()
        build(src, args.size_mb)
        print(f"built {src.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - start:.1f} s")

        start = time.perf_counter()
        shutil.copyfile(src, copy)
        with copy.open("rb+") as fh:  # clean_twix fsyncs its output too
            os.fsync(fh.fileno())
        copy_s = time.perf_counter() - start
        copy.unlink()

        out = subprocess.run([sys.executable, __file__, "--child", str(src), str(dst)],
                             check=True, capture_output=True, text=True).stdout
        figures = json.loads(out.strip().splitlines()[-1])

    mib = figures["bytes"] / 2**20
    print(f"{'method':<28}{'MiB/s':>10}{'seconds':>10}{'peak RSS MiB':>14}")
    print(f"{'copy + fsync (I/O ceiling)':<28}{mib / copy_s:>10.0f}{copy_s:>10.1f}{'-':>14}")
    print(f"{'bidsdeid clean_twix':<28}{mib / figures['seconds']:>10.0f}"
          f"{figures['seconds']:>10.1f}{figures['peak_rss_mb']:>14.0f}")
    print(f"RSS after imports (python, numpy, twixtools): {figures['baseline_rss_mb']:.0f} MiB; "
          f"header replacements: {figures['replacements']}")
    within = figures["peak_rss_mb"] <= PEAK_RSS_LIMIT_MB
    print(f"peak RSS <= {PEAK_RSS_LIMIT_MB} MiB: {'yes' if within else 'NO'}")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
