"""Malformed and hostile input: each bad file is named once, the rest converts, nothing leaks.

One CLI run over the corpus of ``tests/badinputs.py`` (shared by the tests of this module), plus
focused runs for hostile file names and a 20,000-file tree.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import badinputs
import nibabel as nib
import pytest
from dicomfactory import mr_slice, write
from pydicom.uid import generate_uid
from treeutil import find_tokens, run_cli, tree_hashes

from bidsdeid.deid.apply import DeidError, ScrubContext, scrub_file
from bidsdeid.deid.options import DeidOptions

BIDS_PATH = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


@dataclass(frozen=True)
class CorpusRun:
    corpus: badinputs.Corpus
    proc: subprocess.CompletedProcess
    out: Path
    private: Path
    before: dict[str, str]  # hashes of everything but OUTPUT_DIR and the private dir
    after: dict[str, str]

    def label(self, patient_id: str) -> str:
        rows = (self.private / "subjects.tsv").read_text().splitlines()
        return next(r.split("\t")[1] for r in rows if r.startswith(f"id:{patient_id}\t"))

    def t1w_of(self, patient_id: str) -> list[Path]:
        return sorted(self.out.glob(f"sub-{self.label(patient_id)}/ses-*/anat/*_T1w.nii.gz"))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> CorpusRun:
    """The corpus, the CLI's result on it, and the input tree's hashes before and after."""
    tmp = tmp_path_factory.mktemp("corpus")
    corpus = badinputs.make_bad_corpus(tmp / "in", tmp / "outside")
    before = tree_hashes(tmp)
    out, private = tmp / "out", tmp / "private"
    proc = run_cli(corpus.root, out, "participant", "--no-deface", "--private-dir", private,
                   "--slide-mapping", corpus.slide_mapping)
    after = {k: v for k, v in tree_hashes(tmp).items() if not k.startswith(("out/", "private/"))}
    return CorpusRun(corpus, proc, out, private, before, after)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("ERROR ")]


def test_input_tree_is_not_modified(run):
    assert run.after == run.before, "the run changed, added or removed a file outside OUTPUT_DIR"


def test_run_exits_1_without_a_traceback(run):
    assert run.proc.returncode == 1, run.proc.stderr[-3000:]
    assert "Traceback" not in run.proc.stderr, run.proc.stderr[-3000:]


@pytest.mark.parametrize("name", badinputs.CASE_NAMES)
def test_each_malformed_input_gets_one_error_line(run, name):
    case = next(c for c in run.corpus.bad if c.name == name)
    lines = [line for line in error_lines(run.proc) if line.startswith(f"ERROR {case.path}: ")]
    assert len(lines) == 1, f"{name}: expected one ERROR line, got {lines}"
    reason = lines[0].split(": ", 1)[1].lower()
    assert case.reason in reason, f"{name}: reason {reason!r} lacks {case.reason!r}"


def test_no_other_error_lines(run):
    named = {str(case.path) for case in run.corpus.bad}
    others = [line for line in error_lines(run.proc)
              if line.removeprefix("ERROR ").split(": ", 1)[0] not in named]
    assert others == [], "a good file was reported as failed"


@pytest.mark.parametrize("patient_id", ["MRN10001", "MRN10002", "MRN10003", "MRN10004",
                                        "MRN10005"])
def test_good_series_with_any_character_set_is_converted(run, patient_id):
    niftis = run.t1w_of(patient_id)
    assert len(niftis) == 1, f"{patient_id}: expected one T1w, found {niftis}"
    assert nib.load(niftis[0]).shape[:3] == (16, 16, 3), "all three slices converted"


def test_series_with_control_characters_in_its_description_is_converted(run):
    niftis = run.t1w_of("MRN10006")
    assert len(niftis) == 1
    sidecar = niftis[0].with_name(niftis[0].name.replace(".nii.gz", ".json")).read_text()
    assert "\x1b" not in sidecar and "\x00" not in sidecar, "control characters written raw"
    json.loads(sidecar)  # strict: valid JSON for every BIDS tool


def test_output_paths_hold_only_bids_characters(run):
    for path in run.out.rglob("*"):
        rel = path.relative_to(run.out).as_posix()
        assert BIDS_PATH.fullmatch(rel), f"output path {rel!r} holds characters from a header"
        assert ".." not in rel.split("/") and path.resolve().is_relative_to(run.out.resolve())


def test_symbolic_links_out_of_the_input_are_not_followed(run):
    subjects = (run.private / "subjects.tsv").read_text()
    assert "MRN99999" not in subjects, "a file reached through a symbolic link was processed"


def test_no_identifier_reaches_the_output(run):
    assert find_tokens(run.out, run.corpus.identifiers) == []


def test_failures_are_audited_in_the_output_without_the_path(run):
    audit = json.loads(next(run.out.glob(
        f"derivatives/bidsdeid/audit/sub-{run.label('MRN77123')}_audit.json")).read_text())
    assert audit["failures"], "the corrupt series of this subject must be in its audit"
    for failure in audit["failures"]:
        assert re.fullmatch(r"file-[0-9a-f]{12}", failure["file"]), failure


def test_error_reasons_hold_no_identifier(run):
    reasons = " ".join(line.split(": ", 1)[1] for line in error_lines(run.proc)).lower()
    leaked = [t for t in run.corpus.identifiers if t.lower() in reasons]
    assert leaked == [], f"error reasons name identifiers: {leaked}"


def test_huge_declared_pixel_length_is_refused_by_the_scrub_stage(tmp_path):
    data = badinputs.bad_dicom_bytes()["pixel_zip_bomb"][0]
    src = tmp_path / "bomb.dcm"
    src.write_bytes(data)
    ctx = ScrubContext(key=b"k" * 32, date_shift_days=-7, participant_label="x",
                       identifiers=frozenset())
    with pytest.raises(DeidError, match="truncated"):
        scrub_file(src, tmp_path / "out.dcm", ctx, DeidOptions())
    assert not (tmp_path / "out.dcm").exists()


# --- hostile file names ----------------------------------------------------------------------

def _run_with_bad_file(tmp_path: Path, name: str) -> tuple[subprocess.CompletedProcess, Path]:
    src = tmp_path / "in"
    study, series = generate_uid(), generate_uid()
    for i in range(2):
        write(mr_slice("MRN0001", study, series, instance=i + 1, rows=16), src / f"good_{i}.dcm")
    bad = src / name
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"broken")
    return run_cli(src, tmp_path / "out", "participant", "--no-deface"), bad


def test_file_name_with_markup_brackets_is_reported_not_crashing(tmp_path):
    proc, bad = _run_with_bad_file(tmp_path, "a[/x]b/note.dcm")
    assert "Traceback" not in proc.stderr and "MarkupError" not in proc.stderr, proc.stderr[-800:]
    assert proc.returncode == 1
    assert any(str(bad) in line for line in error_lines(proc)), proc.stderr[-2000:]


def test_file_name_with_control_characters_stays_on_one_error_line(tmp_path):
    proc, _ = _run_with_bad_file(tmp_path, "bad\nname\x1b[2J.dcm")
    lines = error_lines(proc)
    assert len(lines) == 1 and "name" in lines[0] and "not DICOM" in lines[0], proc.stderr[-2000:]
    assert "\x1b" not in proc.stderr


# --- a large tree ----------------------------------------------------------------------------

_PEAK_RSS = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    from bidsdeid.discover import discover
    found = discover(Path(sys.argv[1]))
    print(len(found.series), found.n_files, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


def _discover_peak_kib(root: Path) -> tuple[int, int, int]:
    proc = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(root)], capture_output=True,
                          text=True, check=True)
    series, files, peak = map(int, proc.stdout.split())
    return series, files, peak


def _tree(root: Path, n_other: int) -> None:
    for i in range(n_other):
        folder = root / f"d{i // 1000:03d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True)
        (folder / f"f{i:06d}.txt").write_bytes(b"x")
    study, series = generate_uid(), generate_uid()
    for i in range(3):
        write(mr_slice("MRN0001", study, series, instance=i + 1), root / "dicom" / f"{i}.dcm")


def test_discovery_memory_grows_little_with_20000_files(tmp_path):
    _tree(tmp_path / "small", 1000)
    _tree(tmp_path / "large", 20000)
    small = _discover_peak_kib(tmp_path / "small")
    large = _discover_peak_kib(tmp_path / "large")
    assert small[:2] == (1, 1003) and large[:2] == (1, 20003), (small, large)
    per_file = (large[2] - small[2]) * 1024 / 19000
    assert per_file < 1024, f"discovery holds {per_file:.0f} bytes per skipped file"
