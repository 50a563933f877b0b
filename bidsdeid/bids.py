"""Writing the BIDS dataset: dataset files, participants.tsv, scans.tsv, placing images.

Shared files (participants.tsv, dataset_description.json) are updated under a file lock and
replaced atomically, so many participant jobs can write into one OUTPUT_DIR at once. The lock
files live in the private dir (shared by those jobs), so the dataset holds no lock clutter.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock

from bidsdeid import __version__
from bidsdeid.fsutil import atomic_copy, atomic_write_text
from bidsdeid.records import BidsTarget

BIDS_VERSION = "1.9.0"
DERIVATIVES = Path("derivatives") / "bidsdeid"

_README = """\
# De-identified dataset

This dataset was converted from DICOM and de-identified with bidsdeid {version}.

- DICOM headers were de-identified with the DICOM PS3.15 Annex E Basic Application Level
  Confidentiality Profile and the options recorded in `derivatives/bidsdeid/audit/`.
- Subject and session labels are keyed pseudonyms; the key and the mapping to original
  identifiers are kept by the data steward, outside this dataset.
- Dates were shifted by a per-subject offset to 1925 or earlier; ages of 89 and over are
  reported as 89.
- Anatomical images were defaced unless the audit record says otherwise.
"""

_PARTICIPANTS_JSON = {
    "participant_id": {"Description": "Pseudonymous participant label"},
    "age": {"Description": "Age at the first session, in years; 89 or over is reported as 89",
            "Units": "year"},
    "sex": {"Description": "Sex as recorded in the DICOM header",
            "Levels": {"M": "male", "F": "female", "O": "other"}},
}
PARTICIPANT_COLUMNS = ("participant_id", "age", "sex")
SAMPLE_COLUMNS = ("sample_id", "participant_id", "sample_type")
_SAMPLES_JSON = {
    "sample_id": {"Description": "Slide label: sample-<index> within its participant"},
    "participant_id": {"Description": "Pseudonymous participant label"},
    "sample_type": {"Description": "Biosample type (BIDS samples.tsv vocabulary)"},
}


def _json_text(data: Mapping) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _tsv_text(columns: Iterable[str], rows: Iterable[Mapping[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, list(columns), delimiter="\t", lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _remove_own_temps(path: Path) -> None:
    """Temp files a killed job left while replacing ``path`` (call under ``path``'s lock)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def generated_by() -> list[dict[str, str]]:
    return [{"Name": "bidsdeid", "Version": __version__,
             "Description": "DICOM to BIDS conversion with de-identification"}]


def ensure_dataset_files(output_dir: Path, lock_dir: Path, name: str = "De-identified dataset") -> None:
    """dataset_description.json, README, CHANGES, .bidsignore, participants.json; idempotent."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_dir / "dataset.lock"), mode=0o600):
        for shared_file in ("dataset_description.json", "README", "CHANGES", ".bidsignore",
                            "participants.json", str(DERIVATIVES / "dataset_description.json")):
            _remove_own_temps(output_dir / shared_file)
        _write_if_changed(output_dir / "dataset_description.json", _json_text({
            "Name": name, "BIDSVersion": BIDS_VERSION, "DatasetType": "raw",
            "GeneratedBy": generated_by(),
        }))
        _write_if_changed(output_dir / "README", _README.format(version=__version__))
        changes = output_dir / "CHANGES"
        if not changes.exists():
            atomic_write_text(changes, f"1.0.0\n  - Dataset created with bidsdeid {__version__}.\n")
        _write_if_changed(output_dir / ".bidsignore", "derivatives/\nsourcedata/\n")
        _write_if_changed(output_dir / "participants.json", _json_text(_PARTICIPANTS_JSON))
        derivatives = output_dir / DERIVATIVES
        derivatives.mkdir(parents=True, exist_ok=True)
        _write_if_changed(derivatives / "dataset_description.json", _json_text({
            "Name": "bidsdeid audit trail and quality control",
            "BIDSVersion": BIDS_VERSION, "DatasetType": "derivative",
            "GeneratedBy": generated_by(),
        }))


def _upsert_row(path: Path, lock: Path, key: Sequence[str], columns: Sequence[str],
                row: Mapping[str, str]) -> None:
    """Add or replace the row with the same ``key`` columns in a TSV, sorted, under a lock."""
    with FileLock(str(lock), mode=0o600):
        _remove_own_temps(path)
        rows: dict[tuple[str, ...], dict[str, str]] = {}
        if path.exists():
            with path.open(newline="", encoding="utf-8") as fh:
                for existing in csv.DictReader(fh, delimiter="\t"):
                    rows[tuple(existing[k] for k in key)] = existing
        rows[tuple(row[k] for k in key)] = {c: row.get(c, "n/a") or "n/a" for c in columns}
        _write_if_changed(path, _tsv_text(columns, [rows[k] for k in sorted(rows)]))


def upsert_participant(output_dir: Path, lock_dir: Path, row: Mapping[str, str]) -> None:
    """Add or replace one participant's row in participants.tsv."""
    _upsert_row(output_dir / "participants.tsv", lock_dir / "participants.lock",
                ("participant_id",), PARTICIPANT_COLUMNS, row)


def upsert_sample(output_dir: Path, lock_dir: Path, row: Mapping[str, str]) -> None:
    """Add or replace one microscopy sample's row in samples.tsv (with samples.json)."""
    _upsert_row(output_dir / "samples.tsv", lock_dir / "samples.lock",
                ("participant_id", "sample_id"), SAMPLE_COLUMNS, row)
    _write_if_changed(output_dir / "samples.json", _json_text(_SAMPLES_JSON))


def write_scans_tsv(session_dir: Path, stem: str, rows: list[dict[str, str]]) -> Path:
    """``sub-X[_ses-Y]_scans.tsv`` with filename (relative to session dir) and acq_time."""
    path = session_dir / f"{stem}_scans.tsv"
    rows = sorted(rows, key=lambda r: r["filename"])
    _write_if_changed(path, _tsv_text(("filename", "acq_time"), rows))
    return path


def place_file(src: Path, dst: Path) -> None:
    """Put a finished file into the dataset atomically; unchanged files are left alone."""
    if dst.exists() and dst.stat().st_size == src.stat().st_size and dst.read_bytes() == src.read_bytes():
        return
    atomic_copy(src, dst)


def write_json(path: Path, data: Mapping) -> None:
    _write_if_changed(path, _json_text(data))


def _field_map_group(target: BidsTarget) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Field-map files of one acquisition: the same kind (EPI or GRE set) and the same entities
    apart from an EPI map's dir-."""
    kind = "epi" if target.suffix == "epi" else "gre"
    return kind, tuple((k, v) for k, v in target.entities if k != "dir")


def sidecar_completions(items: Sequence[tuple[BidsTarget, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Fields BIDS requires that dcm2niix may not write, for each (target, sidecar) of a session.

    TaskName for functional runs (from the task entity); EchoTime1/EchoTime2 for a phase
    difference map, taken from its magnitude images' echo times; and the recommended
    B0FieldIdentifier on every field map (one per acquisition: a GRE set, or an EPI dir- pair),
    with B0FieldSource on the BOLD/DWI images when the session has exactly one field map.
    """
    magnitude_te = {(t.entities, t.suffix): s.get("EchoTime") for t, s in items
                    if t.suffix in ("magnitude1", "magnitude2")}
    field_maps = sorted({_field_map_group(t) for t, _ in items if t.datatype == "fmap"})
    identifiers = {group: f"b0map{number}" for number, group in enumerate(field_maps, start=1)}
    completions = []
    for target, sidecar in items:
        extra: dict[str, Any] = {}
        if target.datatype == "fmap" and "B0FieldIdentifier" not in sidecar:
            extra["B0FieldIdentifier"] = identifiers[_field_map_group(target)]
        if (target.datatype in ("func", "dwi") and len(field_maps) == 1
                and "B0FieldSource" not in sidecar):
            extra["B0FieldSource"] = identifiers[field_maps[0]]
        if target.datatype == "func" and "TaskName" not in sidecar:
            extra["TaskName"] = dict(target.entities).get("task", "unknown")
        if target.suffix == "phasediff":
            for n in (1, 2):
                echo_time = magnitude_te.get((target.entities, f"magnitude{n}"))
                if f"EchoTime{n}" not in sidecar and echo_time is not None:
                    extra[f"EchoTime{n}"] = echo_time
        completions.append(extra)
    return completions
