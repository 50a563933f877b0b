"""Planted identifiers that reach the output: plain ``dcm2niix -ba y`` against bidsdeid.

    .venv/bin/python benchmarks/bench_leaks.py [--patients 3]

Builds the demo input (identifiers planted in every usual place, folder names included), then
converts it twice: with plain ``dcm2niix -ba y -z y`` (its own anonymisation) and with
``bidsdeid participant``. Every output file (gz decompressed) and path is byte-scanned for each
patient's planted tokens; prints the distinct tokens found per patient for each tool.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bidsdeid.convert import dcm2niix_executable
from bidsdeid.demo import make_demo


def tokens_found(root: Path, tokens: frozenset[str]) -> set[str]:
    found = set()
    lowered = [t.lower() for t in tokens]
    for path in root.rglob("*"):
        rel = str(path.relative_to(root)).lower()
        found |= {t for t in lowered if t in rel}
        if path.is_file():
            data = path.read_bytes()
            if path.name.endswith(".gz"):
                data = gzip.decompress(data)
            data = data.lower()
            found |= {t for t in lowered if t.encode() in data}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-leaks-"))
    try:
        manifest = make_demo(root / "input", n_patients=args.patients, seed=0)
        plain = root / "plain"
        plain.mkdir()
        subprocess.run([dcm2niix_executable(), "-b", "y", "-ba", "y", "-z", "y", "-f", "%f_%p_%s",
                        "-o", str(plain), str(manifest.root)], capture_output=True, check=True)
        subprocess.run([sys.executable, "-m", "bidsdeid", str(manifest.root), str(root / "bids"),
                        "participant", "--no-deface"], capture_output=True, check=False)
        print(f"{'patient':<10}{'planted':>9}{'dcm2niix -ba y':>16}{'bidsdeid':>10}")
        totals = [0, 0]
        for number, patient in enumerate(manifest.patients, start=1):
            leaks = [len(tokens_found(out, patient.tokens)) for out in (plain, root / "bids")]
            totals = [a + b for a, b in zip(totals, leaks)]
            print(f"{number:<10}{len(patient.tokens):>9}{leaks[0]:>16}{leaks[1]:>10}")
        n = len(manifest.patients)
        print(f"mean leaked tokens per patient: dcm2niix -ba y {totals[0] / n:.1f}, "
              f"bidsdeid {totals[1] / n:.1f} (target 0)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
