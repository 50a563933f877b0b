#!/usr/bin/env python3
"""Header de-identification speed and leaks: bidsdeid vs pydicom/deid vs dicognito.

Builds N small MR Image files (20 subjects, planted identifiers in the patient module, staff,
site, device, free text, nested sequences, a Siemens CSA header and an unknown private block),
or takes a folder of DICOM files. Each tool de-identifies the same files, one after the other, in
one process; then every output file is byte-scanned for its subject's planted tokens.

    python benchmarks/bench_deid.py --files 2000
    python benchmarks/bench_deid.py --input /path/to/dicom   # speed only: no planted tokens

Files live in a RAM folder (/dev/shm when present) so that disk write-back of one tool's output
does not slow the next tool: the figures compare the tools' own work, read and write included.
Each tool runs ``--rounds`` times, alternating the order; its best round is reported.
``bidsdeid`` scrubs file by file; ``bidsdeid-series`` is what the participant stage does (discovery
groups files into series, one SeriesScrubber per series), its discovery time included.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import string
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pydicom

from bidsdeid.deid.apply import ScrubContext, scrub_file
from bidsdeid.deid.options import DeidOptions
from bidsdeid.deid.series import SeriesScrubber
from bidsdeid.deid.synthetic import ROOT, PlantedSubject, mr_image
from bidsdeid.discover import discover

SUBJECTS = 20


@dataclass
class Result:
    tool: str
    seconds: float
    files: int
    leaked_tokens: int = 0
    files_with_leaks: int = 0
    failures: int = 0

    @property
    def rate(self) -> float:
        return self.files / self.seconds if self.seconds else float("inf")


def _subject(index: int) -> PlantedSubject:
    letters = "".join(string.ascii_lowercase[(index // 26 ** k) % 26] for k in range(3))
    base = PlantedSubject()
    return replace(base, family=f"Doeberg{letters}", given=f"Johnathan{letters}",
                   patient_id=f"MRN{9988776600 + index}", birth_date=f"1965{index % 12 + 1:02d}14",
                   accession=f"ACC{5544332200 + index}", serial=f"SN{77441100 + index}")


def build_corpus(folder: Path, count: int) -> dict[Path, list[str]]:
    """Write ``count`` files; returns each file's planted tokens."""
    tokens = {}
    per_subject = max(1, count // SUBJECTS)
    for i in range(count):
        subject_index = min(i // per_subject, SUBJECTS - 1)
        subject = _subject(subject_index)
        series, instance = 1 + i % 3, 1 + i
        path = folder / f"{i:06d}.dcm"
        mr_image(subject, subject=subject_index, series=series, instance=instance,
                 size=16).save_as(path, enforce_file_format=True)
        tokens[path] = subject.tokens() + [ROOT]
    return tokens


def run_bidsdeid(files: list[Path], out: Path) -> int:
    options = DeidOptions()
    failures = 0
    key = b"benchmark-key-0123456789abcdef!!"
    for src in files:
        ctx = ScrubContext(key=key, date_shift_days=-41_006, participant_label="bench",
                           identifiers=frozenset())
        try:
            scrub_file(src, out / src.name, ctx, options)
        except Exception:  # noqa: BLE001 - a benchmark counts failures, it does not stop
            failures += 1
    return failures


def run_bidsdeid_series(files: list[Path], out: Path) -> int:
    """What the participant stage does: discovery groups the files into series, and each series
    is scrubbed with one SeriesScrubber (element decisions reused across its files)."""
    options = DeidOptions()
    failures = 0
    key = b"benchmark-key-0123456789abcdef!!"
    wanted = set(files)
    root = Path(os.path.commonpath(files))
    for series in discover(root if root.is_dir() else root.parent).series:
        ctx = ScrubContext(key=key, date_shift_days=-41_006, participant_label="bench",
                           identifiers=frozenset())
        scrubber = SeriesScrubber(ctx, options)
        for src in series.files:
            if src not in wanted:
                continue
            try:
                scrubber.scrub_file(src, out / src.name)
            except Exception:  # noqa: BLE001 - a benchmark counts failures, it does not stop
                failures += 1
    return failures


def run_deid(files: list[Path], out: Path) -> int:
    from deid.config import DeidRecipe
    from deid.dicom import replace_identifiers
    logging.getLogger("deid").setLevel(logging.ERROR)
    recipe = DeidRecipe()  # pydicom/deid's default dicom recipe
    replace_identifiers(dicom_files=[str(f) for f in files], deid=recipe, save=True,
                        overwrite=True, output_folder=str(out), remove_private=True)
    return sum(not (out / f.name).exists() for f in files)


def run_dicognito(files: list[Path], out: Path) -> int:
    from dicognito.anonymizer import Anonymizer
    anonymizer = Anonymizer()
    failures = 0
    for src in files:
        try:
            ds = pydicom.dcmread(src)
            anonymizer.anonymize(ds)
            ds.save_as(out / src.name)
        except Exception:  # noqa: BLE001
            failures += 1
    return failures


TOOLS: dict[str, Callable[[list[Path], Path], int]] = {
    "bidsdeid": run_bidsdeid, "bidsdeid-series": run_bidsdeid_series, "deid": run_deid,
    "dicognito": run_dicognito}


def scan_leaks(result: Result, out: Path, tokens: dict[Path, list[str]]) -> None:
    for src, planted in tokens.items():
        dst = out / src.name
        if not dst.exists():
            continue
        data = dst.read_bytes().lower()
        found = [t for t in planted if t.lower().encode() in data]
        result.leaked_tokens += len(found)
        result.files_with_leaks += bool(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000, help="synthetic files to build")
    parser.add_argument("--input", type=Path, help="use these DICOM files instead (no leak scan)")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset")
    parser.add_argument("--rounds", type=int, default=2, help="runs per tool (best is kept)")
    parser.add_argument("--workdir", type=Path,
                        default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench_deid_", dir=args.workdir))
    try:
        if args.input:
            files = sorted(p for p in args.input.rglob("*") if p.is_file())
            tokens: dict[Path, list[str]] = {}
        else:
            corpus = work / "in"
            corpus.mkdir()
            tokens = build_corpus(corpus, args.files)
            files = sorted(tokens)
        tools = args.tools.split(",")
        best: dict[str, Result] = {}
        for round_index in range(args.rounds):
            for tool in tools if round_index % 2 == 0 else tools[::-1]:
                out = work / tool
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                start = time.perf_counter()
                failures = TOOLS[tool](files, out)
                result = Result(tool, time.perf_counter() - start, len(files), failures=failures)
                if tool not in best or result.seconds < best[tool].seconds:
                    best[tool] = result
                print(f"{tool} round {round_index + 1}: {result.rate:.1f} files/s",
                      file=sys.stderr)
        results = [best[tool] for tool in tools]
        for result in results:  # outputs of the last round: each tool's output is deterministic
            scan_leaks(result, work / result.tool, tokens)
        fastest_peer = max((r.rate for r in results if not r.tool.startswith("bidsdeid")),
                           default=None)
        print(f"\n{len(files)} files, {len(tokens[files[0]]) if tokens else 0} planted tokens each")
        print(f"{'tool':<16} {'files/s':>9} {'vs fastest peer':>16} {'leaked tokens':>14} "
              f"{'files w/ leaks':>15} {'failures':>9}")
        for r in results:
            ratio = f"{r.rate / fastest_peer:.2f}x" if fastest_peer else "-"
            print(f"{r.tool:<16} {r.rate:>9.1f} {ratio:>16} {r.leaked_tokens:>14} "
                  f"{r.files_with_leaks:>15} {r.failures:>9}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
