"""The two records of a run: a full log in the private dir, and a PHI-free audit in OUTPUT_DIR.

The private log may name input paths and carry dcm2niix's messages; the audit names input files
only by keyed opaque references and holds counts, options, versions and BIDS names.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bidsdeid import __version__
from bidsdeid.bids import DERIVATIVES, write_json
from bidsdeid.privatedir import LOG_DIR, PrivateDir
from bidsdeid.records import Failure


class PrivateLog:
    """Append-only log in the private dir (0600); the only place input paths are written."""

    def __init__(self, private: PrivateDir, name: str) -> None:
        folder = private.root / LOG_DIR
        folder.mkdir(mode=0o700, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        self.path = folder / f"{stamp}-{name}-{os.getpid()}.log"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._fh = os.fdopen(fd, "a", encoding="utf-8")

    def write(self, message: str) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
        self._fh.write(f"{stamp} {message}\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


@dataclass
class SubjectAudit:
    """What was done for one participant, with no identifiers."""

    participant: str
    series: list[dict[str, Any]] = field(default_factory=list)
    header_actions: Counter = field(default_factory=Counter)
    sidecar_actions: Counter = field(default_factory=Counter)
    failures: list[dict[str, str]] = field(default_factory=list)
    files_in: int = 0
    files_out: int = 0
    sourcedata: list[dict[str, Any]] = field(default_factory=list)

    def add_failure(self, private: PrivateDir, failure: Failure) -> None:
        self.failures.append({"file": private.opaque_ref(failure.path), "stage": failure.stage,
                              "reason": failure.reason})


def software_versions(dcm2niix: str) -> dict[str, str]:
    import nibabel
    import numpy
    import pydicom

    return {"bidsdeid": __version__, "dcm2niix": dcm2niix, "pydicom": pydicom.__version__,
            "nibabel": nibabel.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def write_subject_audit(output_dir: Path, audit: SubjectAudit, options: dict[str, Any],
                        versions: dict[str, str]) -> Path:
    """``derivatives/bidsdeid/audit/sub-<label>_audit.json``: deterministic (no timestamps)."""
    path = output_dir / DERIVATIVES / "audit" / f"sub-{audit.participant}_audit.json"
    write_json(path, {
        "participant": f"sub-{audit.participant}",
        "software": versions,
        "options": options,
        "files_in": audit.files_in,
        "files_out": audit.files_out,
        "series": audit.series,
        "header_actions": dict(sorted(audit.header_actions.items())),
        "sidecar_actions": dict(sorted(audit.sidecar_actions.items())),
        "sourcedata": audit.sourcedata,
        "failures": sorted(audit.failures, key=lambda f: (f["stage"], f["file"])),
    })
    return path
