"""Which subject (and session) each twix or slide file belongs to.

Twix and DICOM slides carry a patient ID in their headers and join the DICOM subject with the
same ID. Other slides (SVS, NDPI, TIFF) carry none: the user lists them in a slide-mapping TSV
(``path`` relative to INPUT_DIR, ``patient_id``). Values read here stay in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bidsdeid.discover import patient_key, read_header
from bidsdeid.privatedir import read_tsv_columns
from bidsdeid.records import Discovery, Failure, Session


@dataclass(frozen=True)
class RawCandidate:
    path: Path
    kind: str  # "twix" | "slide"
    study_date: str | None  # YYYYMMDD, for choosing the session
    identifiers: frozenset[str]


def read_slide_mapping(path: Path) -> dict[str, str]:
    """Slide path (relative to INPUT_DIR) -> patient ID, from a TSV with ``path``/``patient_id``."""
    return read_tsv_columns(path, "path", "patient_id")


def identify_raw_files(found: Discovery, input_dir: Path, slide_mapping: dict[str, str]
                       ) -> tuple[dict[str, list[RawCandidate]], list[Failure]]:
    """Patient key -> raw files of that patient; files that match nobody are failures."""
    by_patient: dict[str, list[RawCandidate]] = {}
    failures: list[Failure] = []
    if found.twix:  # twixtools (with matplotlib) is imported only when there is a twix file
        from bidsdeid.rawdata.twix import TwixError, read_twix_info
    for path in found.twix:
        try:
            info = read_twix_info(path)
        except TwixError as exc:
            failures.append(Failure(path, "twix", exc.reason))
            continue
        if not info.patient_id:
            failures.append(Failure(path, "twix", "twix header has no patient ID to match a subject"))
            continue
        values = frozenset(v for v in (info.patient_id, info.patient_name) if v)
        by_patient.setdefault(f"id:{info.patient_id}", []).append(
            RawCandidate(path, "twix", info.study_date, values))
    for path in found.slides:
        rel = str(path.relative_to(input_dir))
        if rel in slide_mapping:
            key, date, values = f"id:{slide_mapping[rel]}", None, frozenset({slide_mapping[rel]})
        else:
            try:
                ds = read_header(path)
            except Exception:  # noqa: BLE001 - not DICOM: a slide file without a patient ID
                failures.append(Failure(path, "slide", "slide has no patient ID: list it in the slide mapping TSV"))
                continue
            key, date = patient_key(ds), str(ds.get("StudyDate", "") or "") or None
            values = frozenset(str(ds.get(k, "") or "") for k in ("PatientID", "PatientName")) - {""}
        by_patient.setdefault(key, []).append(RawCandidate(path, "slide", date, values))
    return by_patient, failures


def session_for(candidate: RawCandidate, sessions: list[Session]) -> str | None:
    """The session with the same study date; the only session; else none (subject level)."""
    if candidate.study_date:
        for session in sessions:
            if session.series and session.series[0].header.get("StudyDate") == candidate.study_date:
                return session.label
    return sessions[0].label if len(sessions) == 1 else None
