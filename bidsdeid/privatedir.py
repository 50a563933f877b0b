"""The private dir: the pseudonym key, the original->label mapping and per-subject identifiers.

It lives outside OUTPUT_DIR (0700 folder, 0600 files). Everything derived from the key is a keyed
hash, so parallel jobs sharing the key agree on labels, UIDs and date shifts without talking.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from bidsdeid.fsutil import atomic_write_text

KEY_FILE = "pseudonym.key"
SUBJECTS_FILE = "subjects.tsv"
SESSIONS_FILE = "sessions.tsv"
IDENTIFIERS_DIR = "identifiers"
LOG_DIR = "logs"
LOCK_DIR = "locks"
QC_DIR = "qc"
DISCOVERY_INDEX = "discovery-index.json"  # classified input files and series headers (PHI)

# Shift dates back 110-120 years in whole weeks (weekday kept), so that acquisition dates land in
# 1925 or earlier as BIDS recommends for scans.tsv acq_time.
_SHIFT_BASE_WEEKS = 5740
_SHIFT_SPAN_WEEKS = 522


def default_private_dir(output_dir: Path) -> Path:
    output_dir = output_dir.resolve()
    return output_dir.parent / f"{output_dir.name}_private"


def check_outside(private_dir: Path, output_dir: Path) -> None:
    p, o = private_dir.resolve(), output_dir.resolve()
    if p == o or o in p.parents:
        raise ValueError(f"private dir {private_dir} must not be inside OUTPUT_DIR {output_dir}")


@dataclass(frozen=True)
class PrivateDir:
    root: Path
    key: bytes

    @classmethod
    def open(cls, root: Path, create: bool = True) -> PrivateDir:
        """Open (or create, 0700) the private dir and load (or create, 0600) its key."""
        root = root.resolve()
        if create:
            root.mkdir(parents=True, exist_ok=True)
            os.chmod(root, 0o700)
        key_path = root / KEY_FILE
        if not key_path.exists():
            if not create:
                raise FileNotFoundError(f"{key_path}: no pseudonym key")
            try:
                fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another job created it first: use theirs
                pass
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_hex(32) + "\n")
        text = key_path.read_text().strip()
        while not text:  # a concurrent creator has opened but not yet written the key
            text = key_path.read_text().strip()
        return cls(root=root, key=bytes.fromhex(text))

    # --- keyed derivations (pure) -------------------------------------------------------------

    def digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self.key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()

    def pseudonym(self, patient_key: str, length: int = 8) -> str:
        """Alphanumeric subject label: HMAC of the patient identity, base-36, ``length`` chars."""
        number = int.from_bytes(self.digest("subject", patient_key), "big")
        alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
        chars = []
        for _ in range(length):
            number, rem = divmod(number, 36)
            chars.append(alphabet[rem])
        return "".join(chars)

    def date_shift_days(self, patient_key: str) -> int:
        """Negative day offset, the same for every date of one subject."""
        weeks = int.from_bytes(self.digest("dateshift", patient_key)[:8], "big") % _SHIFT_SPAN_WEEKS
        return -7 * (_SHIFT_BASE_WEEKS + weeks)

    def opaque_ref(self, path: Path) -> str:
        """A stable name for an input file that reveals nothing of its path (for output logs)."""
        return "file-" + self.digest("path", str(path)).hex()[:12]

    # --- mapping tables (locked, atomic) -------------------------------------------------------

    @property
    def lock_dir(self) -> Path:
        """Lock files for everything shared between jobs, the output dataset's files included."""
        folder = self.root / LOCK_DIR
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder

    @property
    def qc_dir(self) -> Path:
        """QC pictures that show the original face (defacing before/after)."""
        folder = self.root / QC_DIR
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder

    def _lock(self, name: str) -> FileLock:
        return FileLock(str(self.lock_dir / f"{name}.lock"), mode=0o600)

    def _read_tsv(self, name: str) -> list[dict[str, str]]:
        path = self.root / name
        if not path.exists():
            return []
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh, delimiter="\t"))

    def _write_tsv(self, name: str, columns: list[str], rows: list[dict[str, str]]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, columns, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.root / name, buf.getvalue(), mode=0o600)

    def record_subject(self, patient_key: str, label: str) -> None:
        with self._lock(SUBJECTS_FILE):
            rows = self._read_tsv(SUBJECTS_FILE)
            if any(r["patient_key"] == patient_key for r in rows):
                return
            rows.append({"patient_key": patient_key, "participant_label": label})
            rows.sort(key=lambda r: r["participant_label"])
            self._write_tsv(SUBJECTS_FILE, ["patient_key", "participant_label"], rows)

    def session_labels(self, label: str, studies_in_order: list[str]) -> dict[str, str]:
        """Session label per study UID: known studies keep theirs, new ones get the next number.

        ``studies_in_order`` is sorted by (shifted) study date, so a first run numbers sessions
        chronologically and a later run appends without renumbering.
        """
        with self._lock(SESSIONS_FILE):
            rows = self._read_tsv(SESSIONS_FILE)
            known = {r["study_uid"]: r["session_label"] for r in rows if r["participant_label"] == label}
            next_number = len(known) + 1
            changed = False
            for uid in studies_in_order:
                if uid not in known:
                    known[uid] = f"{next_number:02d}"
                    rows.append({"participant_label": label, "study_uid": uid,
                                 "session_label": known[uid]})
                    next_number += 1
                    changed = True
            if changed:
                self._write_tsv(SESSIONS_FILE, ["participant_label", "study_uid", "session_label"], rows)
            return {uid: known[uid] for uid in studies_in_order}

    def user_labels(self) -> dict[str, str]:
        """patient_key -> participant label for subjects already recorded."""
        return {r["patient_key"]: r["participant_label"] for r in self._read_tsv(SUBJECTS_FILE)}

    def save_identifiers(self, label: str, identifiers: set[str]) -> None:
        """Merge the subject's original identifier values (for the residual-identifier scan)."""
        folder = self.root / IDENTIFIERS_DIR
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / f"sub-{label}.json"
        with self._lock(f"identifiers-{label}"):
            known = set(json.loads(path.read_text())) if path.exists() else set()
            atomic_write_text(path, json.dumps(sorted(known | identifiers), indent=1), mode=0o600)

    def load_identifiers(self) -> dict[str, set[str]]:
        folder = self.root / IDENTIFIERS_DIR
        if not folder.exists():
            return {}
        return {p.stem.removeprefix("sub-"): set(json.loads(p.read_text()))
                for p in sorted(folder.glob("sub-*.json"))}


def read_tsv_columns(path: Path, key: str, value: str) -> dict[str, str]:
    """``{row[key]: row[value]}`` of a user TSV, with a clear error when a column is missing."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = {key, value} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: TSV lacks column(s) {', '.join(sorted(missing))}")
        return {row[key].strip(): row[value].strip() for row in reader}


def read_label_mapping(path: Path) -> dict[str, str]:
    """A user TSV mapping with columns ``patient_id`` and ``participant_id`` (``sub-`` optional)."""
    mapping = {}
    for patient_id, participant in read_tsv_columns(path, "patient_id", "participant_id").items():
        label = participant.removeprefix("sub-")
        if not label.isalnum():
            raise ValueError(f"{path}: participant_id {label!r} is not alphanumeric")
        mapping[patient_id] = label
    return mapping
