"""The participant stage: the only place that knows the order of the pipeline's stages.

discover -> plan (labels, date shift, sessions, heuristic) -> per series, in the work dir:
scrub headers -> redact burned-in text -> dcm2niix -> sanitize sidecars/NIfTI -> deface
-> write into OUTPUT_DIR (atomic) -> scans.tsv, participants.tsv, audit -> optional verify.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from bidsdeid import bids
from bidsdeid.audit import PrivateLog, SubjectAudit, software_versions, write_subject_audit
from bidsdeid.config import RunConfig
from bidsdeid.convert import (
    ConvertError,
    dcm2niix_executable,
    dcm2niix_version,
    name_outputs,
    read_sidecar,
    run_dcm2niix,
)
from bidsdeid.deid.apply import DeidError, ScrubContext, ScrubStats, subject_identifiers
from bidsdeid.deid.options import DeidOptions
from bidsdeid.deid.series import SeriesScrubber
from bidsdeid.deid.text import clean_text
from bidsdeid.discover import DiscoveryIndex, discover, read_header
from bidsdeid.fsutil import atomic_write_bytes, remove_stale_temps, scratch_dir
from bidsdeid.heuristics import SOURCEDATA_DICOM, Heuristic, assign_targets, load_heuristic
from bidsdeid.pixels.policy import needs_pixel_check
from bidsdeid.privatedir import DISCOVERY_INDEX, PrivateDir, default_private_dir, read_label_mapping
from bidsdeid.rawdata.assign import (
    RawCandidate,
    identify_raw_files,
    read_slide_mapping,
    session_for,
)
from bidsdeid.rawdata.stage import clean_raw_files
from bidsdeid.records import BidsTarget, Discovery, Failure, RawFile, Series, Session, Subject
from bidsdeid.sanitize import (
    SanitizeError,
    SanitizeStats,
    load_sidecar_policy,
    sanitize_nifti,
    sanitize_sidecar_file,
)

ANAT_DEFACE_SUFFIXES = {"T1w", "T2w", "FLAIR", "PD", "PDw", "T2starw", "inplaneT1", "inplaneT2",
                        "angio", "T1map", "T2map", "UNIT1", "MP2RAGE", "MEGRE", "MESE"}


# --- planning (no files written) -------------------------------------------------------------

def _study_order_key(series: list[Series]) -> tuple[str, str]:
    header = series[0].header
    return (str(header.get("StudyDate", "")), str(header.get("StudyTime", "")))


def plan_subjects(found: Discovery, private: PrivateDir, heuristic: Heuristic,
                  mapping: dict[str, str] | None = None, only: Iterable[str] = (),
                  record: bool = True,
                  raw: dict[str, list[RawCandidate]] | None = None) -> list[Subject]:
    """Group series into subjects and sessions, give labels, and map series to BIDS targets.

    Subjects are labelled by the user mapping (PatientID -> label) or by keyed pseudonym; sessions
    are numbered in study-date order and remembered in the private dir (``record``) so that a
    later run adds new sessions without renumbering old ones. Twix and slide files join the
    subject with their patient ID (a subject may have only those).
    """
    raw = raw or {}
    by_patient: dict[str, dict[str, list[Series]]] = {key: {} for key in raw}
    for series in found.series:
        by_patient.setdefault(series.patient_key, {}).setdefault(series.study_uid, []).append(series)
    wanted = set(only)
    subjects = []
    for patient_key, studies in sorted(by_patient.items()):
        patient_id = patient_key.removeprefix("id:")
        if mapping is not None and patient_id in mapping:
            label = mapping[patient_id]
        else:
            label = private.pseudonym(patient_key)
        if wanted and label not in wanted:
            continue
        ordered = sorted(studies, key=lambda uid: (_study_order_key(studies[uid]), uid))
        if record:
            private.record_subject(patient_key, label)
            session_labels = private.session_labels(label, ordered)
        else:
            session_labels = {uid: f"{i:02d}" for i, uid in enumerate(ordered, start=1)}
        sessions = []
        for uid in ordered:
            session = Session(session_labels[uid], uid, sorted(studies[uid], key=lambda s: s.sort_key))
            assign_targets(session.series, heuristic)
            sessions.append(session)
        raw_files = [RawFile(c.path, c.kind, session_for(c, sessions), c.identifiers)
                     for c in sorted(raw.get(patient_key, []), key=lambda c: str(c.path))]
        subjects.append(Subject(label, patient_key, private.date_shift_days(patient_key), sessions,
                                raw=raw_files))
    return subjects


# --- one series, in a worker process ----------------------------------------------------------

@dataclass(frozen=True)
class SeriesJob:
    index: int
    series: Series
    subject: str
    session: str | None
    scrub: ScrubContext
    options: DeidOptions
    work_dir: Path
    redact: str
    ocr_all_series: bool
    deface: bool
    skull_strip: str
    deface_method: str


@dataclass
class ProducedFile:
    target: BidsTarget
    nifti: Path
    sidecar: Path | None
    extras: tuple[Path, ...]
    brain_mask: Path | None = None
    brain_image: Path | None = None
    qc_png: bytes | None = None  # before/after: shows the face, for the private dir only
    qc_shared_png: bytes | None = None  # the defaced row, for the dataset's QC folder


@dataclass
class SeriesOutcome:
    index: int
    target: BidsTarget | None = None
    produced: list[ProducedFile] = field(default_factory=list)
    header_actions: ScrubStats = field(default_factory=lambda: ScrubStats())
    sidecar_actions: SanitizeStats = field(default_factory=lambda: SanitizeStats())
    failures: list[Failure] = field(default_factory=list)
    excluded: str | None = None
    acq_time: str = "n/a"
    redaction_png: bytes | None = None
    words_redacted: int = 0
    dicom_files: list[Path] = field(default_factory=list)  # kept as DICOM in sourcedata/
    log: list[str] = field(default_factory=list)


def acq_time_of(ds: pydicom.Dataset) -> str:
    """ISO acquisition date-time of a (scrubbed, so shifted) header, or ``n/a``."""
    stamp = str(ds.get("AcquisitionDateTime", "") or "")
    if len(stamp) >= 14:
        date, time = stamp[:8], stamp[8:]
    else:
        for date_kw, time_kw in (("AcquisitionDate", "AcquisitionTime"),
                                 ("SeriesDate", "SeriesTime"), ("StudyDate", "StudyTime")):
            date, time = str(ds.get(date_kw, "") or ""), str(ds.get(time_kw, "") or "")
            if len(date) == 8 and len(time) >= 6:
                break
        else:
            return "n/a"
    try:
        moment = dt.datetime.strptime(date + time[:6], "%Y%m%d%H%M%S")
    except ValueError:
        return "n/a"
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def _scrub_series(job: SeriesJob, dicom_dir: Path, outcome: SeriesOutcome) -> list[Path]:
    scrubbed = []
    scrubber = SeriesScrubber(job.scrub, job.options)
    for number, src in enumerate(job.series.files):
        dst = dicom_dir / f"{number:05d}.dcm"
        try:
            outcome.header_actions.merge(scrubber.scrub_file(src, dst))
            scrubbed.append(dst)
        except DeidError as exc:
            outcome.failures.append(Failure(src, "scrub", str(exc)))
    return scrubbed


def _redact_series(job: SeriesJob, files: list[Path], outcome: SeriesOutcome) -> bool:
    """Burned-in text stage; False when the series must be excluded."""
    if not _needs_redaction(job):
        return True
    from bidsdeid.pixels import PixelError, redact_file  # Tesseract, Pillow, codecs

    for path in files:
        try:
            result = redact_file(path, path, job.redact, job.scrub.identifiers)
        except PixelError as exc:
            outcome.excluded = f"burned-in text could not be redacted: {_reason(exc, job)}"
            return False
        outcome.words_redacted += result.words_redacted
        if result.thumbnail and outcome.redaction_png is None and result.boxes:
            outcome.redaction_png = result.thumbnail
    return True


def _needs_redaction(job: SeriesJob) -> bool:
    return job.redact != "off" and needs_pixel_check(job.series.header, force=job.ocr_all_series)


def _import_stage_modules(jobs: list[SeriesJob]) -> None:
    """Import the heavy stage modules the jobs need once, in the parent, before the workers
    fork: each worker would otherwise import them again (about a second each)."""
    if any(_needs_redaction(job) for job in jobs):
        import bidsdeid.pixels.redact
    if any(job.deface or job.skull_strip != "off" for job in jobs
           if job.series.target.datatype == "anat"):
        import bidsdeid.deface.apply  # noqa: F401


def _reason(exc: Exception, job: SeriesJob) -> str:
    """A stage's message without work-dir paths: the audit names series, not scratch files."""
    return str(exc).replace(f"{job.work_dir}/", "").replace(str(job.work_dir), "")


class _StageError(Exception):
    """A stage refused a series; the message is the one-line, identifier-free reason."""


def _deface(job: SeriesJob, item: ProducedFile, out_dir: Path) -> None:
    from bidsdeid.deface import DefaceError, deface_file
    from bidsdeid.deface.qc import after_row

    defaced = out_dir / f"defaced_{item.nifti.name}"
    mask = out_dir / f"mask_{item.nifti.name}" if job.skull_strip in ("mask", "both") else None
    brain = out_dir / f"brain_{item.nifti.name}" if job.skull_strip in ("brain", "both") else None
    try:
        result = deface_file(item.nifti, defaced, brain_mask=mask, brain_extracted=brain, qc=True,
                             method=job.deface_method)
    except DefaceError as exc:  # a face must never be released: the series is excluded
        raise _StageError(f"defacing failed: {_reason(exc, job)}") from exc
    item.nifti, item.brain_mask, item.brain_image = defaced, mask, brain
    if result.qc_png:
        item.qc_png, item.qc_shared_png = result.qc_png, after_row(result.qc_png)


def _convert_and_sanitize(job: SeriesJob, dicom_dir: Path, nifti_dir: Path,
                          outcome: SeriesOutcome) -> None:
    try:
        outputs, messages = run_dcm2niix(dicom_dir, nifti_dir)
        outcome.log.append(messages)
        targets = name_outputs(job.series.target, [read_sidecar(o) for o in outputs])
    except ConvertError as exc:
        raise _StageError(f"conversion failed: {_reason(exc, job)}") from exc
    policy = load_sidecar_policy()
    for output, target in zip(outputs, targets):
        try:
            if output.sidecar is not None:
                outcome.sidecar_actions.merge(sanitize_sidecar_file(
                    output.sidecar, policy, job.options, job.scrub.date_shift_days,
                    job.scrub.identifiers))
            nifti = output.nifti
            if nifti.suffix == ".nii":  # compressed in the sanitizing pass
                nifti = nifti.with_name(nifti.name + ".gz")
            sanitize_nifti(output.nifti, nifti)
        except SanitizeError as exc:
            raise _StageError(f"sanitizing failed: {_reason(exc, job)}") from exc
        item = ProducedFile(target, nifti, output.sidecar, output.extras)
        if job.deface and target.datatype == "anat" and target.suffix in ANAT_DEFACE_SUFFIXES:
            _deface(job, item, nifti_dir)
        outcome.produced.append(item)


def process_series(job: SeriesJob) -> SeriesOutcome:
    """Scrub, redact, convert, sanitize and deface one series inside the work dir."""
    outcome = SeriesOutcome(job.index, job.series.target)
    series_dir = job.work_dir / f"series-{job.index:03d}"
    shutil.rmtree(series_dir, ignore_errors=True)
    dicom_dir, nifti_dir = series_dir / "dicom", series_dir / "nifti"
    dicom_dir.mkdir(parents=True)
    try:
        files = _scrub_series(job, dicom_dir, outcome)
        if not files:
            raise _StageError("no file of the series could be de-identified")
        if not _redact_series(job, files, outcome):
            return outcome
        outcome.acq_time = acq_time_of(read_header(files[0]))
        if job.series.target.datatype == SOURCEDATA_DICOM:
            outcome.dicom_files = files
        else:
            _convert_and_sanitize(job, dicom_dir, nifti_dir, outcome)
    except _StageError as exc:
        outcome.excluded, outcome.produced = str(exc), []
    except OSError as exc:  # the work dir: disk full, quota, permissions
        outcome.excluded, outcome.produced = f"cannot write the work dir ({exc.strerror})", []
        outcome.log.append(traceback.format_exc())
    except Exception as exc:  # noqa: BLE001 - one series must not stop the participant
        outcome.excluded, outcome.produced = f"internal error ({type(exc).__name__})", []
        outcome.log.append(traceback.format_exc())
    return outcome


# --- one participant --------------------------------------------------------------------------

@dataclass
class RunSummary:
    subjects: list[str] = field(default_factory=list)
    series_converted: int = 0
    series_skipped: int = 0
    files_written: int = 0
    failures: list[Failure] = field(default_factory=list)
    leaks: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures and not self.leaks


def _collect_identifiers(subject: Subject) -> set[str]:
    """Identifier values from the first file of each series (full header, no pixels)."""
    identifiers: set[str] = set()
    for session in subject.sessions:
        for series in session.series:
            try:
                identifiers |= subject_identifiers(read_header(series.files[0]))
            except Exception:  # noqa: BLE001, S112 - unreadable files are reported by the scrub stage
                continue
    return identifiers


# Working-set estimate of one series in a worker: the interpreter with its imports and the CNN,
# plus a few copies of the series' pixels (scrubbed copy, dcm2niix's volume, the NIfTI).
_WORKER_BASE_BYTES = 600 * 2**20
_SERIES_COPIES = 4


def series_memory_estimate(job: SeriesJob) -> int:
    size = 0
    for path in job.series.files:
        try:
            size += path.stat().st_size
        except OSError:
            continue
    return _WORKER_BASE_BYTES + _SERIES_COPIES * size


def cpu_share(n_workers: int) -> int:
    """Torch threads for each of ``n_workers`` processes: by default every process takes all
    CPUs, and the oversubscribed threads slow the defacing registration several-fold."""
    return max(1, len(os.sched_getaffinity(0)) // n_workers)


def _share_cpus(n_workers: int) -> None:
    torch = sys.modules.get("torch")  # imported before the fork when series need defacing
    if torch is not None:
        torch.set_num_threads(cpu_share(n_workers))


def _map_pool(jobs: list[SeriesJob], n_procs: int, mem_bytes: int | None,
              on_done: Callable[[SeriesOutcome], None]) -> None:
    """Run the series jobs on ``n_procs`` workers, never starting one that would take the
    estimated memory of the jobs in flight over ``mem_bytes`` (one job always runs)."""
    if n_procs <= 1 or len(jobs) <= 1:
        for job in jobs:
            on_done(process_series(job))
        return
    _import_stage_modules(jobs)
    pending = list(jobs)
    in_flight: dict[Future, int] = {}
    with ProcessPoolExecutor(max_workers=n_procs, initializer=_share_cpus,
                             initargs=(n_procs,)) as pool:
        while pending or in_flight:
            while pending and len(in_flight) < n_procs:
                need = series_memory_estimate(pending[0])
                if in_flight and mem_bytes is not None and sum(in_flight.values()) + need > mem_bytes:
                    break
                in_flight[pool.submit(process_series, pending.pop(0))] = need
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                del in_flight[future]
                on_done(future.result())


def _write_outputs(output_dir: Path, private_qc: Path, subject: Subject, session: Session,
                   outcome: SeriesOutcome, audit: SubjectAudit) -> list[dict[str, str]]:
    """Place the produced files; returns their scans.tsv rows."""
    session_dir = output_dir / f"sub-{subject.label}" / (f"ses-{session.label}" if session.label else "")
    rows = []
    for item in outcome.produced:
        rel = item.target.relpath(subject.label, session.label)
        dst_stem = output_dir / rel
        bids.place_file(item.nifti, dst_stem.with_name(dst_stem.name + ".nii.gz"))
        written = [".nii.gz"]
        if item.sidecar is not None:
            bids.place_file(item.sidecar, dst_stem.with_name(dst_stem.name + ".json"))
            written.append(".json")
        for extra in item.extras:
            bids.place_file(extra, dst_stem.with_name(dst_stem.name + extra.suffix))
            written.append(extra.suffix)
        deriv = output_dir / bids.DERIVATIVES / rel
        entities = deriv.name.rsplit("_", 1)[0]  # the stem without its suffix
        if item.brain_mask is not None:
            bids.place_file(item.brain_mask, deriv.with_name(f"{entities}_desc-brain_mask.nii.gz"))
        if item.brain_image is not None:
            bids.place_file(item.brain_image,
                            deriv.with_name(f"{entities}_desc-brain_{item.target.suffix}.nii.gz"))
        if item.qc_png and item.qc_shared_png:
            name = f"sub-{subject.label}/{rel.name}_deface.png"
            atomic_write_bytes(private_qc / name, item.qc_png, mode=0o600)
            atomic_write_bytes(output_dir / bids.DERIVATIVES / "qc" / name, item.qc_shared_png)
        audit.files_out += len(written)
        rows.append({"filename": str(rel.relative_to(session_dir.relative_to(output_dir))) + ".nii.gz",
                     "acq_time": outcome.acq_time})
    if outcome.dicom_files:
        rel = _sourcedata_dicom_dir(subject, session, outcome)
        for number, path in enumerate(outcome.dicom_files, start=1):
            bids.place_file(path, output_dir / rel / f"{number:05d}.dcm")
        audit.files_out += len(outcome.dicom_files)
    if outcome.redaction_png:
        name = f"sub-{subject.label}_ses-{session.label}_series-{outcome.index:03d}_redacted.png"
        atomic_write_bytes(output_dir / bids.DERIVATIVES / "qc" / f"sub-{subject.label}" / name,
                           outcome.redaction_png)
    return rows


def _complete_sidecars(items: list[ProducedFile]) -> None:
    """Add the fields BIDS requires that dcm2niix did not write (TaskName, EchoTime1/2)."""
    with_sidecar = [item for item in items if item.sidecar is not None]
    sidecars = [json.loads(item.sidecar.read_text()) for item in with_sidecar]
    completions = bids.sidecar_completions([(i.target, s) for i, s in zip(with_sidecar, sidecars)])
    for item, sidecar, extra in zip(with_sidecar, sidecars, completions):
        if extra:
            bids.write_json(item.sidecar, sidecar | extra)


def _sourcedata_dicom_dir(subject: Subject, session: Session, outcome: SeriesOutcome) -> Path:
    """``sourcedata/sub-X/ses-Y/dicom/sub-X_ses-Y_<entities>_<suffix>/`` for a kept series."""
    target = outcome.target
    return (Path("sourcedata") / f"sub-{subject.label}" / f"ses-{session.label}" / "dicom"
            / target.stem(subject.label, session.label))


def _remove_stale(session_dir: Path, keep: set[Path]) -> None:
    """Delete files of a re-processed session that this run did not produce."""
    if not session_dir.exists():
        return
    for path in session_dir.rglob("*"):
        if path.is_file() and path not in keep:
            path.unlink()


def _record_outcomes(subject: Subject, private: PrivateDir, jobs: list[tuple[Session, SeriesJob]],
                     outcomes: dict[int, SeriesOutcome], audit: SubjectAudit,
                     summary: RunSummary, log: PrivateLog) -> dict[str | None, list[SeriesOutcome]]:
    """Log, count and audit every series outcome; returns the good ones per session label."""
    good: dict[str | None, list[SeriesOutcome]] = {}
    for session, job in jobs:
        outcome = outcomes[job.index]
        for message in outcome.log:
            log.write(f"sub-{subject.label} series {job.index}: {message.strip()}")
        failures = list(outcome.failures)
        if outcome.excluded:
            failures.append(Failure(job.series.files[0], "series", outcome.excluded))
            audit.series.append({"series": job.index, "excluded": outcome.excluded})
        else:
            good.setdefault(session.label, []).append(outcome)
        for failure in failures:
            summary.failures.append(failure)
            audit.add_failure(private, failure)
        audit.header_actions.update(outcome.header_actions.actions)
        audit.sidecar_actions.update(outcome.sidecar_actions.fields)
    return good


def _write_session(cfg: RunConfig, private: PrivateDir, subject: Subject, session: Session,
                   outcomes: list[SeriesOutcome], audit: SubjectAudit) -> None:
    """Place one session's outputs, write its scans.tsv, and drop files a re-run no longer makes."""
    session_dir = cfg.output_dir / f"sub-{subject.label}" / f"ses-{session.label}"
    _complete_sidecars([item for outcome in outcomes for item in outcome.produced])
    written: set[Path] = set()
    rows = []
    for outcome in outcomes:
        rows += _write_outputs(cfg.output_dir, private.qc_dir, subject, session, outcome, audit)
        for item in outcome.produced:
            stem = cfg.output_dir / item.target.relpath(subject.label, session.label)
            for ext in [".nii.gz", ".json", *(e.suffix for e in item.extras)]:
                written.add(stem.with_name(stem.name + ext))
        files = sorted(f"{item.target.relpath(subject.label, session.label)}.nii.gz"
                       for item in outcome.produced)
        if outcome.dicom_files:
            files.append(f"{_sourcedata_dicom_dir(subject, session, outcome)}/")
        audit.series.append({"series": outcome.index, "files": files,
                             **({"words_redacted": outcome.words_redacted}
                                if outcome.words_redacted else {})})
    if rows:
        written.add(bids.write_scans_tsv(session_dir, f"sub-{subject.label}_ses-{session.label}",
                                         rows))
    _remove_stale(session_dir, written)


def _age_years(header: dict) -> str:
    """Age from PatientAge (e.g. ``045Y``), capped at 89 as BIDS asks; ``n/a`` if unknown."""
    value = str(header.get("PatientAge", "") or "")
    if len(value) == 4 and value[:3].isdigit():
        years = {"Y": 1.0, "M": 1 / 12, "W": 1 / 52.18, "D": 1 / 365.25}.get(value[3].upper())
        if years is not None:
            return str(min(int(int(value[:3]) * years), 89))
    return "n/a"


def participant_row(subject: Subject, options: DeidOptions) -> dict[str, str]:
    row = {"participant_id": f"sub-{subject.label}", "age": "n/a", "sex": "n/a"}
    if options.retain_patient_characteristics and subject.sessions:
        header = subject.sessions[0].series[0].header
        row["age"] = _age_years(header)
        sex = str(header.get("PatientSex", "") or "").upper()
        row["sex"] = sex if sex in ("M", "F", "O") else "n/a"
    return row


def run_subject(cfg: RunConfig, subject: Subject, private: PrivateDir, work_root: Path,
                log: PrivateLog, versions: dict[str, str],
                progress: Callable[[str], None] = lambda _: None) -> RunSummary:
    summary = RunSummary(subjects=[subject.label])
    audit = SubjectAudit(subject.label)
    for folder, pattern in ((cfg.output_dir / f"sub-{subject.label}", ".*.tmp"),
                            (cfg.output_dir / "sourcedata" / f"sub-{subject.label}", ".*.tmp"),
                            (cfg.output_dir / bids.DERIVATIVES, f".sub-{subject.label}_*.tmp")):
        remove_stale_temps(folder, pattern)  # leftovers of a killed run of this subject
    subject.identifiers = _collect_identifiers(subject)
    for raw in subject.raw:
        subject.identifiers |= raw.identifiers
    private.save_identifiers(subject.label, subject.identifiers)
    scrub = ScrubContext(key=private.key, date_shift_days=subject.date_shift_days,
                         participant_label=subject.label,
                         identifiers=frozenset(subject.identifiers))
    work_dir = work_root / f"sub-{subject.label}"
    jobs: list[tuple[Session, SeriesJob]] = []
    index = 0
    for session in subject.sessions:
        for series in session.series:
            audit.files_in += len(series.files)
            index += 1
            if series.target is None:
                summary.series_skipped += 1
                # a user's plug-in may word its skip reasons from header values: clean them
                audit.series.append({"series": index, "skipped": clean_text(
                    series.skip_reason or "", subject.identifiers)})
                log.write(f"sub-{subject.label} series {index} skipped: {series.skip_reason} "
                          f"({len(series.files)} files, first {series.files[0]})")
                continue
            jobs.append((session, SeriesJob(
                index, series, subject.label, session.label, scrub, cfg.deid, work_dir,
                cfg.redact, cfg.ocr_all_series, cfg.deface, cfg.skull_strip,
                cfg.deface_method)))
    outcomes: dict[int, SeriesOutcome] = {}

    def done(outcome: SeriesOutcome) -> None:
        outcomes[outcome.index] = outcome
        progress(f"sub-{subject.label} series {outcome.index}")

    mem_bytes = int(cfg.mem_gb * 2**30) if cfg.mem_gb else None
    _map_pool([job for _, job in jobs], cfg.n_procs, mem_bytes, done)

    good = _record_outcomes(subject, private, jobs, outcomes, audit, summary, log)
    for session in subject.sessions:
        _write_session(cfg, private, subject, session, good.get(session.label, []), audit)
        summary.series_converted += len(good.get(session.label, []))
    audit.series.sort(key=lambda entry: entry["series"])
    audit.files_in += len(subject.raw)
    for failure in clean_raw_files(cfg, subject, private, scrub, audit):
        summary.failures.append(failure)
        audit.add_failure(private, failure)
    bids.upsert_participant(cfg.output_dir, private.lock_dir, participant_row(subject, cfg.deid))
    audit_options = {"deid": cfg.deid.describe(), "heuristic": Path(cfg.heuristic).name,
                     "deface": cfg.deface, "skull_strip": cfg.skull_strip,
                     "deface_method": cfg.deface_method, "redact": cfg.redact}
    write_subject_audit(cfg.output_dir, audit, audit_options, versions)
    summary.files_written = audit.files_out
    if not cfg.keep_work:
        shutil.rmtree(work_dir, ignore_errors=True)
    return summary


def open_private(cfg: RunConfig) -> PrivateDir:
    return PrivateDir.open(cfg.private_dir or default_private_dir(cfg.output_dir))


def prepare(cfg: RunConfig) -> tuple[PrivateDir, Discovery, list[Subject]]:
    """Discover and plan. A dry run writes nothing; listing participants only creates the key."""
    if not (cfg.dry_run or cfg.list_participants):
        dcm2niix_executable()  # fail now, not after discovery, when it is missing
    private = _peek_private(cfg) if cfg.dry_run else open_private(cfg)
    heuristic = load_heuristic(cfg.heuristic)
    mapping = read_label_mapping(cfg.label_mapping) if cfg.label_mapping else None
    slide_mapping = read_slide_mapping(cfg.slide_mapping) if cfg.slide_mapping else {}
    found = _discover_with_index(cfg, private)
    raw, raw_failures = identify_raw_files(found, cfg.input_dir, slide_mapping)
    found.failures.extend(raw_failures)
    record = not (cfg.dry_run or cfg.list_participants)
    subjects = plan_subjects(found, private, heuristic, mapping, cfg.participant_labels, record, raw)
    return private, found, subjects


def _discover_with_index(cfg: RunConfig, private: PrivateDir) -> Discovery:
    """Discovery that reuses the private dir's index of already-read files (not in a dry run,
    which writes nothing): array jobs after the first read only new or changed files."""
    if cfg.dry_run:
        return discover(cfg.input_dir, follow_symlinks=cfg.follow_symlinks)
    path = private.root / DISCOVERY_INDEX
    index = DiscoveryIndex.load(path, cfg.follow_symlinks)
    found = discover(cfg.input_dir, follow_symlinks=cfg.follow_symlinks, index=index)
    if index.changed:
        index.save(path, cfg.follow_symlinks)
    return found


def _peek_private(cfg: RunConfig) -> PrivateDir:
    """The private dir's key if it exists; else a throw-away key (dry runs write nothing, so
    their labels are provisional until the first real run creates the key)."""
    root = cfg.private_dir or default_private_dir(cfg.output_dir)
    try:
        return PrivateDir.open(root, create=False)
    except FileNotFoundError:
        import secrets
        return PrivateDir(root=root, key=secrets.token_bytes(32))


def run_participants(cfg: RunConfig, private: PrivateDir, found: Discovery, subjects: list[Subject],
                     progress: Callable[[str], None] = lambda _: None) -> RunSummary:
    summary = RunSummary(failures=list(found.failures))
    bids.ensure_dataset_files(cfg.output_dir, private.lock_dir)
    log = PrivateLog(private, "participant")
    for failure in found.failures:
        log.write(f"discover failure: {failure.path}: {failure.reason}")
    for skipped in found.skipped:
        log.write(f"skipped: {skipped.path}: {skipped.reason}")
    versions = software_versions(dcm2niix_version())
    try:
        with scratch_dir(cfg.work_dir, keep=cfg.keep_work) as work_root:
            for subject in subjects:
                result = run_subject(cfg, subject, private, work_root, log, versions, progress)
                summary.subjects += result.subjects
                summary.series_converted += result.series_converted
                summary.series_skipped += result.series_skipped
                summary.files_written += result.files_written
                summary.failures += result.failures
    finally:
        log.close()
    return summary


def plan_lines(subjects: list[Subject]) -> list[str]:
    """Human-readable plan for ``--dry-run``: every series and where it goes (console only)."""
    lines = []
    for subject in subjects:
        lines.append(f"sub-{subject.label}")
        for session in subject.sessions:
            lines.append(f"  ses-{session.label}")
            for series in session.series:
                desc = series.header.get("SeriesDescription", "")
                head = f"    #{series.series_number:<4} {desc!s:<32} ({len(series.files)} files)"
                if series.target is not None:
                    lines.append(f"{head} -> {series.target.relpath(subject.label, session.label)}")
                else:
                    lines.append(f"{head} skipped: {series.skip_reason}")
    return lines

