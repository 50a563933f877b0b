"""The raw-data stage: a subject's twix and slide files, cleaned into ``sourcedata/``.

Runs after the subject's DICOM series, with the same key, date shift and identifiers; slides
can also be exported as BIDS microscopy (``--wsi-bids``).
"""

from __future__ import annotations

from pathlib import Path

from bidsdeid import bids
from bidsdeid.audit import SubjectAudit
from bidsdeid.config import RunConfig
from bidsdeid.deid.apply import DeidError, ScrubContext, scrub_file
from bidsdeid.deid.options import DeidOptions
from bidsdeid.privatedir import PrivateDir
from bidsdeid.records import Failure, RawFile, Subject


def _raw_date_shift(subject: Subject, options: DeidOptions) -> int | None:
    """Day offset for raw-data headers: the subject's shift, 0 for full dates, None to remove."""
    return {"modified": subject.date_shift_days, "full": 0, "off": None}[options.retain_long_dates]


def clean_raw_files(cfg: RunConfig, subject: Subject, private: PrivateDir, scrub: ScrubContext,
                     audit: SubjectAudit) -> list[Failure]:
    """Clean the subject's twix and slide files into ``sourcedata/``; returns failures."""
    if not subject.raw:
        return []
    # Imported here: twixtools pulls in matplotlib (about 1 s), which DICOM-only runs never need.
    from bidsdeid.rawdata.twix import TwixError, clean_twix, twix_bids_name
    from bidsdeid.rawdata.wsi import (
        WsiError,
        clean_slide,
        detect_slide,
        dicom_refusal,
        slide_bids_name,
    )

    failures = []
    counters: dict[tuple[str, str | None], int] = {}
    shift = _raw_date_shift(subject, cfg.deid)
    for raw in subject.raw:
        index = counters[(raw.kind, raw.session)] = counters.get((raw.kind, raw.session), 0) + 1
        identifiers = subject.identifiers | raw.identifiers
        try:
            if raw.kind == "twix":
                rel = twix_bids_name(subject.label, raw.session, index)
                result = clean_twix(raw.path, cfg.output_dir / rel, private.key, shift, identifiers,
                                    cfg.deid.retain_patient_characteristics)
                entry = {"file": str(rel), "kind": "twix", "measurements": result.measurements,
                         "replacements": result.replacements}
            else:
                info = detect_slide(raw.path)
                if info is None:
                    raise WsiError(raw.path, "not a whole-slide image")
                rel = slide_bids_name(subject.label, raw.session, index, info.format)
                if info.format == "dicom-wsi":
                    refusal = dicom_refusal(info)
                    if refusal:
                        raise WsiError(raw.path, refusal)
                    stats = scrub_file(raw.path, cfg.output_dir / rel, scrub, cfg.deid)
                    audit.header_actions.update(stats.actions)
                    entry = {"file": str(rel), "kind": "slide", "format": info.format}
                else:
                    result = clean_slide(raw.path, cfg.output_dir / rel, identifiers, shift)
                    entry = {"file": str(rel), "kind": "slide", "format": result.format,
                             "removed_images": list(result.removed_images),
                             "scrubbed_fields": result.scrubbed_fields}
                    if cfg.wsi_bids:
                        entry["micr"] = str(_export_micr(cfg, subject, private, raw,
                                                         cfg.output_dir / rel, index))
        except (TwixError, WsiError) as exc:
            failures.append(Failure(raw.path, raw.kind, exc.reason))
            continue
        except DeidError as exc:
            failures.append(Failure(raw.path, raw.kind, str(exc)))
            continue
        audit.sourcedata.append(entry)
        audit.files_out += 1
    return failures


def _export_micr(cfg: RunConfig, subject: Subject, private: PrivateDir, raw: RawFile,
                 cleaned: Path, index: int) -> Path:
    """A cleaned slide as BIDS microscopy: OME-TIFF + sidecar in micr/, a row in samples.tsv."""
    from bidsdeid.rawdata.wsi import slide_micr_name, slide_to_ome_tiff

    rel = slide_micr_name(subject.label, raw.session, index, cleaned.stat().st_size)
    sidecar = slide_to_ome_tiff(cleaned, cfg.output_dir / rel)
    stem = rel.name.split(".", 1)[0]
    bids.write_json((cfg.output_dir / rel).with_name(f"{stem}.json"), sidecar)
    bids.upsert_sample(cfg.output_dir, private.lock_dir, {
        "sample_id": f"sample-{index:02d}", "participant_id": f"sub-{subject.label}",
        "sample_type": "tissue"})
    return rel
