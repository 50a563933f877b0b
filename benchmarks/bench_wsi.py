"""Seconds and peak memory to clean a large Aperio slide, next to a plain file copy.

Builds a BigTIFF SVS of about ``--size-gb`` (tiles repeat a few pre-encoded JPEG blocks; written
tile by tile), then cleans it with ``clean_slide`` in a child process so that the peak RSS
reported is the cleaning's own. The same child also times ``shutil.copyfile`` of the slide, the
floor any copy-based cleaner has to pay. Dirty pages are flushed (``os.sync``) before each timing;
the source stays in the page cache, as it would right after a scanner export.

    .venv/bin/python benchmarks/bench_wsi.py --size-gb 2
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(ROOT / "tests"))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _timed_copy(src: Path, out: Path) -> float:
    start = time.perf_counter()
    shutil.copyfile(src, out / "plain_copy.svs")
    seconds = time.perf_counter() - start
    (out / "plain_copy.svs").unlink()
    os.sync()  # the copy's dirty pages must not slow what follows
    return seconds


def clean_once(src: Path, out: Path) -> dict[str, float | str | int]:
    """Run in the child: plain copy and cleaning, twice each; figures as a dict."""
    import slides

    from bidsdeid.rawdata.wsi import clean_slide

    rss_before = _peak_rss_mb()
    copy_seconds, clean_seconds, peaks = [], [], []
    for _ in range(2):  # interleaved, so disk contention from other jobs hits both alike
        copy_seconds.append(_timed_copy(src, out))
        (out / "clean.svs").unlink(missing_ok=True)
        os.sync()
        start = time.perf_counter()
        result = clean_slide(src, out / "clean.svs", list(slides.PLANTED), None)
        clean_seconds.append(time.perf_counter() - start)
        peaks.append(_peak_rss_mb())
    return {"clean_seconds": [round(x, 2) for x in clean_seconds],
            "copy_seconds": [round(x, 2) for x in copy_seconds],
            "peak_rss_mb": round(max(peaks), 1), "rss_before_clean_mb": round(rss_before, 1),
            "removed": ",".join(result.removed_images), "scrubbed_fields": result.scrubbed_fields,
            "bytes": result.bytes}


def same_tiles(src: Path, dst: Path, samples: int = 200) -> bool:
    """Stored bytes of a sample of level-0 tiles are identical before and after."""
    import tifffile

    with tifffile.TiffFile(src) as a, tifffile.TiffFile(dst) as b:
        pa, pb = a.pages[0], b.pages[0]
        n = len(pa.dataoffsets)
        picks = range(0, n, max(1, n // samples))
        with src.open("rb") as fa, dst.open("rb") as fb:
            for i in picks:
                fa.seek(pa.dataoffsets[i])
                fb.seek(pb.dataoffsets[i])
                if fa.read(pa.databytecounts[i]) != fb.read(pb.databytecounts[i]):
                    return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(clean_once(*args.child)))
        return

    import slides

    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        work_dir = Path(work)
        src = work_dir / "large.svs"
        start = time.perf_counter()
        slides.build_large_svs(src, int(args.size_gb * 1e9))
        build_seconds = time.perf_counter() - start
        os.sync()  # start both timings with the slide on disk, not half in dirty pages
        child = subprocess.run([sys.executable, __file__, "--child", str(src), str(work_dir)],
                               check=True, capture_output=True, text=True)
        figures = json.loads(child.stdout)
        figures["tiles_identical"] = same_tiles(src, work_dir / "clean.svs")
    size_gb = figures["bytes"] / 1e9
    print(f"slide: {size_gb:.2f} GB BigTIFF SVS (built in {build_seconds:.1f} s)")
    print(f"{'method':<24}{'seconds (2 runs)':>18}{'GB/s (best)':>13}{'peak RSS MB':>13}")
    for name, key, rss in (("shutil.copyfile", "copy_seconds", ""),
                           ("bidsdeid clean_slide", "clean_seconds", figures["peak_rss_mb"])):
        runs = figures[key]
        print(f"{name:<24}{' / '.join(f'{x:.2f}' for x in runs):>18}"
              f"{size_gb / max(min(runs), 1e-9):>13.2f}{rss:>13}")
    print(f"removed: {figures['removed']}; scrubbed fields: {figures['scrubbed_fields']}; "
          f"sampled level-0 tiles identical: {figures['tiles_identical']}")
    print(f"peak RSS of the child before cleaning (imports): {figures['rss_before_clean_mb']} MB")

if __name__ == "__main__":
    main()
