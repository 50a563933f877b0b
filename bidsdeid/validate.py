"""Run both BIDS validators on OUTPUT_DIR and index it with pybids.

- the legacy npm ``bids-validator`` (1.x), run with node, ``--json`` (NIfTI header checks on);
- ``bids-validator-deno`` from PyPI (the current schema-based validator), ``--format json``.

Messages keep issue codes, counts and dataset paths only: validators' "evidence" fields quote
file content, so they are left out of anything that may be written into OUTPUT_DIR.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

_REPO_ROOT = Path(__file__).resolve().parents[1]
NODE_VALIDATOR = _REPO_ROOT / ".tools" / "node_modules" / ".bin" / "bids-validator"
_TIMEOUT_S = 1800
_MAX_LOCATIONS = 3  # dataset paths quoted per issue code
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class ValidatorResult:
    tool: str
    version: str
    errors: int  # issue occurrences (one per file) of severity error
    warnings: int
    messages: tuple[str, ...]  # errors first, one line per issue code
    ran: bool


def _not_run(tool: str, reason: str) -> ValidatorResult:
    return ValidatorResult(tool, "", 0, 0, (reason,), ran=False)


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NO_COLOR="1", FORCE_COLOR="0")
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def _version(command: list[str]) -> str:
    try:
        out = _run([*command, "--version"], timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    found = re.search(r"\d+\.\d+\.\d+\S*", _ANSI.sub("", out))
    return found.group() if found else "unknown"


def _issue_line(severity: str, code: str, locations: list[str], count: int) -> str:
    shown = ", ".join(sorted(set(locations))[:_MAX_LOCATIONS])
    more = (
        f" (+{len(set(locations)) - _MAX_LOCATIONS} more)"
        if len(set(locations)) > _MAX_LOCATIONS
        else ""
    )
    where = f": {shown}{more}" if shown else ""
    return f"{severity} {code} x{count}{where}"


# --- npm bids-validator (legacy, node) -----------------------------------------------------------


def node_validator_command() -> list[str] | None:
    """``node <bids-validator script>`` from <repo>/.tools or PATH; None if node or it is absent."""
    node = shutil.which("node")
    script = NODE_VALIDATOR if NODE_VALIDATOR.exists() else None
    if script is None and (found := shutil.which("bids-validator")):
        script = Path(found)
    if node is None or script is None:
        return None
    return [node, str(script.resolve())]


def parse_node_report(report: dict[str, Any]) -> tuple[int, int, tuple[str, ...]]:
    """(errors, warnings, messages) from ``bids-validator --json`` output."""
    counts = {}
    messages = []
    for severity, key in (("ERROR", "errors"), ("WARNING", "warnings")):
        total = 0
        for issue in report.get("issues", {}).get(key, []):
            files = issue.get("files") or []
            count = max(len(files), 1) + int(issue.get("additionalFileCount") or 0)
            locations = [
                f["file"]["relativePath"]
                for f in files
                if isinstance(f.get("file"), dict) and f["file"].get("relativePath")
            ]
            messages.append(
                _issue_line(severity, str(issue.get("key", issue.get("code"))), locations, count)
            )
            total += count
        counts[key] = total
    return counts["errors"], counts["warnings"], tuple(messages)


def run_bids_validator(output_dir: Path, timeout: float = _TIMEOUT_S) -> ValidatorResult:
    tool = "bids-validator (npm)"
    command = node_validator_command()
    if command is None:
        return _not_run(
            tool, f"not run: node or bids-validator not found ({NODE_VALIDATOR} or PATH)"
        )
    version = _version(command)
    try:
        done = _run([*command, "--json", str(output_dir)], timeout)
        report = json.loads(done.stdout)
    except subprocess.TimeoutExpired:
        return ValidatorResult(
            tool, version, 1, 0, (f"ERROR timed out after {timeout:.0f} s",), True
        )
    except ValueError:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return ValidatorResult(tool, version, 1, 0, (f"ERROR validator failed: {reason}",), True)
    errors, warnings, messages = parse_node_report(report)
    return ValidatorResult(tool, version, errors, warnings, messages, ran=True)


# --- bids-validator-deno (PyPI) ------------------------------------------------------------------


def deno_validator_command() -> list[str] | None:
    beside_python = Path(sys.executable).parent / "bids-validator-deno"
    if beside_python.exists():
        return [str(beside_python)]
    found = shutil.which("bids-validator-deno")
    return [found] if found else None


def parse_deno_report(report: dict[str, Any]) -> tuple[int, int, tuple[str, ...]]:
    """(errors, warnings, messages) from ``bids-validator-deno --format json`` output."""
    occurrences: Counter[tuple[str, str]] = Counter()
    locations: dict[tuple[str, str], list[str]] = {}
    for issue in report.get("issues", {}).get("issues", []):
        severity = str(issue.get("severity", "error")).upper()
        if severity not in {"ERROR", "WARNING"}:
            continue
        code = str(issue.get("code", "UNKNOWN"))
        if issue.get("subCode"):
            code += f" {issue['subCode']}"
        where = [issue["location"]] if issue.get("location") else list(issue.get("affects") or [])
        occurrences[(severity, code)] += 1
        locations.setdefault((severity, code), []).extend(where)
    counts: Counter[str] = Counter()
    for (severity, _), count in occurrences.items():
        counts[severity] += count
    messages = [
        _issue_line(severity, code, locations[(severity, code)], count)
        for (severity, code), count in sorted(
            occurrences.items(), key=lambda kv: (kv[0][0] != "ERROR", kv[0][1])
        )
    ]
    return counts["ERROR"], counts["WARNING"], tuple(messages)


def run_bids_validator_deno(output_dir: Path, timeout: float = _TIMEOUT_S) -> ValidatorResult:
    tool = "bids-validator-deno"
    command = deno_validator_command()
    if command is None:
        return _not_run(
            tool, "not run: bids-validator-deno not installed (pip install bids-validator-deno)"
        )
    try:  # the binary's --version sometimes prints a build hash instead
        version = metadata.version("bids-validator-deno")
    except metadata.PackageNotFoundError:
        version = _version(command)
    try:
        done = _run([*command, "--format", "json", str(output_dir)], timeout)
        report = json.loads(done.stdout)
    except subprocess.TimeoutExpired:
        return ValidatorResult(
            tool, version, 1, 0, (f"ERROR timed out after {timeout:.0f} s",), True
        )
    except ValueError:
        reason = (_ANSI.sub("", done.stderr).strip().splitlines() or ["no output"])[-1]
        return ValidatorResult(tool, version, 1, 0, (f"ERROR validator failed: {reason}",), True)
    errors, warnings, messages = parse_deno_report(report)
    if schema := report.get("summary", {}).get("schemaVersion"):
        version += f" (schema {schema})"
    return ValidatorResult(tool, version, errors, warnings, messages, ran=True)


# --- pybids --------------------------------------------------------------------------------------


def layout_summary(output_dir: Path) -> dict[str, Any]:
    """Counts from a pybids ``BIDSLayout`` of the raw dataset (no derivatives, no sourcedata)."""
    import bids

    try:
        layout = bids.BIDSLayout(str(output_dir), validate=True, derivatives=False)
    except Exception as exc:  # noqa: BLE001 - pybids raises many types; the report shows why
        first_line = (str(exc).splitlines() or [""])[0]
        return {"pybids": bids.__version__, "error": f"{type(exc).__name__}: {first_line}"}
    images = layout.get(extension=[".nii", ".nii.gz"])
    per_subject: dict[str, dict[str, Any]] = {}
    for subject in sorted(layout.get_subjects()):
        files = layout.get(subject=subject, extension=[".nii", ".nii.gz"])
        per_subject[subject] = {
            "sessions": sorted(layout.get_sessions(subject=subject)),
            "images": len(files),
            "datatypes": dict(
                sorted(Counter(f.entities.get("datatype", "?") for f in files).items())
            ),
        }
    return {
        "pybids": bids.__version__,
        "subjects": len(per_subject),
        "sessions": sum(len(s["sessions"]) for s in per_subject.values()),
        "images": len(images),
        "files": len(layout.get()),
        "datatypes": dict(sorted(Counter(f.entities.get("datatype", "?") for f in images).items())),
        "suffixes": dict(sorted(Counter(f.entities.get("suffix", "?") for f in images).items())),
        "per_subject": per_subject,
    }
