"""Records passed between pipeline stages.

Original header values live only in memory (``Series.header``) and in the private dir; nothing in
these records is written to OUTPUT_DIR except BIDS labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Entity order from the BIDS specification (appendix "Entity table"), restricted to raw MR data.
ENTITY_ORDER: tuple[str, ...] = (
    "sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "mod", "echo", "flip", "inv", "mt",
    "part", "chunk",
)


@dataclass(frozen=True)
class BidsTarget:
    """Where a series goes in the dataset, before subject/session are known."""

    datatype: str  # anat, func, dwi, fmap, perf
    suffix: str  # T1w, bold, dwi, phasediff, ...
    entities: tuple[tuple[str, str], ...] = ()  # e.g. (("task", "rest"), ("acq", "mb"))

    def with_entities(self, **extra: str) -> BidsTarget:
        merged = dict(self.entities) | {k: v for k, v in extra.items() if v}
        return BidsTarget(self.datatype, self.suffix, tuple(sorted(merged.items())))

    def stem(self, subject: str, session: str | None) -> str:
        """``sub-01_ses-01_task-rest_run-1_bold`` style file stem, entities in BIDS order."""
        values = dict(self.entities) | {"sub": subject}
        if session:
            values["ses"] = session
        parts = [f"{k}-{values[k]}" for k in ENTITY_ORDER if values.get(k)]
        return "_".join(parts + [self.suffix])

    def relpath(self, subject: str, session: str | None) -> Path:
        folder = Path(f"sub-{subject}") / (f"ses-{session}" if session else "") / self.datatype
        return folder / self.stem(subject, session)


@dataclass
class Series:
    """One DICOM series as discovered: files plus an in-memory summary of its original header."""

    patient_key: str  # PatientID (or name+birth date when missing): the subject's identity
    study_uid: str
    series_uid: str
    files: list[Path]
    header: dict[str, Any]  # keyword -> value of the first instance; never written out
    target: BidsTarget | None = None
    skip_reason: str | None = None

    @property
    def series_number(self) -> int:
        value = self.header.get("SeriesNumber")
        try:
            return int(value)
        except (TypeError, ValueError):
            return 0

    @property
    def sort_key(self) -> tuple[str, str, int, str]:
        return (
            str(self.header.get("SeriesDate", "")),
            str(self.header.get("SeriesTime", "")),
            self.series_number,
            self.series_uid,
        )


@dataclass(frozen=True)
class SkippedFile:
    """An input file that is not imaging data we handle (note, not an error)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Failure:
    """An input that could not be processed. ``reason`` must hold no identifier."""

    path: Path
    stage: str
    reason: str


@dataclass
class Discovery:
    """Everything found under INPUT_DIR."""

    series: list[Series] = field(default_factory=list)
    twix: list[Path] = field(default_factory=list)
    slides: list[Path] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    n_files: int = 0


@dataclass(frozen=True)
class RawFile:
    """A twix or slide file assigned to a subject, cleaned into ``sourcedata/``."""

    path: Path
    kind: str  # "twix" | "slide"
    session: str | None
    identifiers: frozenset[str] = frozenset()  # values read from its own header (memory only)


@dataclass
class Session:
    label: str | None
    study_uid: str
    series: list[Series] = field(default_factory=list)


@dataclass
class Subject:
    """One participant: pseudonym, date shift and sessions. ``patient_key`` stays in memory."""

    label: str
    patient_key: str
    date_shift_days: int
    sessions: list[Session] = field(default_factory=list)
    identifiers: set[str] = field(default_factory=set)  # original values to keep out of output
    raw: list[RawFile] = field(default_factory=list)


@dataclass(frozen=True)
class ConvertedFile:
    """One NIfTI (+ sidecars) written by dcm2niix for a series, in the work dir."""

    nifti: Path
    sidecar: Path | None
    extras: tuple[Path, ...] = ()  # .bval/.bvec
    series: Series | None = None
