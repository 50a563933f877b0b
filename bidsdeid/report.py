"""The group report: one self-contained HTML page in ``derivatives/bidsdeid/report.html``.

It shows the leak-scan result (file, field and kind, never the value), both validators, the
pybids counts, per participant the series and what was done (from the audit records) with the
defacing and redaction QC pictures, and the software versions. Every text that reaches the page
is escaped and has every leaked value masked, so the report itself cannot spread a leak.
"""

from __future__ import annotations

import base64
import html
import io
import json
import platform
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from string import Template
from typing import Any

from bidsdeid import __version__
from bidsdeid.bids import DERIVATIVES
from bidsdeid.fsutil import atomic_write_text
from bidsdeid.validate import ValidatorResult
from bidsdeid.verify import Leak

REPORT_NAME = "report.html"
_THUMBNAIL_WIDTH = 900
_PACKAGES = ("pydicom", "nibabel", "numpy", "pybids", "dcm2niix", "bids-validator-deno")


@dataclass(frozen=True)
class QcPicture:
    subject: str
    category: str  # "defacing", "redaction" or "other"
    caption: str
    data_uri: str


# --- pure helpers --------------------------------------------------------------------------------


def make_masker(leaks: Iterable[Leak]) -> Callable[[str], str]:
    """A function replacing every leaked value (any case) with its kind in angle brackets."""
    kinds: dict[str, str] = {}
    for leak in leaks:
        if leak.value.strip():
            kinds.setdefault(leak.value.casefold(), leak.kind)
    if not kinds:
        return lambda text: text
    pattern = re.compile(
        "|".join(re.escape(v) for v in sorted(kinds, key=len, reverse=True)), re.IGNORECASE
    )
    return lambda text: pattern.sub(lambda m: f"<{kinds[m.group().casefold()]}>", text)


def qc_category(stem: str) -> str | None:
    """Report section of a QC picture, from the name the pipeline gives it; None: never shown.

    Pictures of the unredacted originals would republish burned-in text, so they stay out.
    """
    if stem.endswith(("_unredacted", "_original")):
        return None
    if stem.endswith("_deface"):
        return "defacing"
    if stem.endswith("_redacted"):
        return "redaction"
    return "other"


class _Page:
    """Builds escaped, masked HTML fragments."""

    def __init__(self, mask: Callable[[str], str]) -> None:
        self.mask = mask

    def text(self, value: Any) -> str:
        return html.escape(self.mask(str(value)))

    def table(self, columns: list[str], rows: Iterable[Iterable[Any]]) -> str:
        head = "".join(f"<th>{self.text(c)}</th>" for c in columns)
        thead = f"<thead><tr>{head}</tr></thead>" if any(columns) else ""
        body = "".join(
            "<tr>" + "".join(f"<td>{self.cell(v)}</td>" for v in row) + "</tr>" for row in rows
        )
        return f"<table>{thead}<tbody>{body}</tbody></table>"

    def cell(self, value: Any) -> str:
        if isinstance(value, (list, tuple)):
            return "<br>".join(self.cell(v) for v in value)
        if isinstance(value, dict):
            return "<br>".join(f"{self.text(k)}: {self.cell(v)}" for k, v in value.items())
        return self.text("" if value is None else value)

    def listing(self, lines: Iterable[str]) -> str:
        return (
            "<ul>" + "".join(f"<li><code>{self.text(line)}</code></li>" for line in lines) + "</ul>"
        )

    def cards(self, cards: list[tuple[str, str, str]]) -> str:
        """(css class, big text, label) status cards."""
        return (
            '<div class="cards">'
            + "".join(
                f'<div class="card {cls}"><div class="big">{self.text(big)}</div>'
                f"{self.text(label)}</div>"
                for cls, big, label in cards
            )
            + "</div>"
        )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _summary_section(
    page: _Page, leaks: list[Leak], validators: list[ValidatorResult], summary: Mapping[str, Any]
) -> str:
    cards = [("fail" if leaks else "pass", _count(len(leaks), "hit"), "residual-identifier scan")]
    for result in validators:
        if not result.ran:
            cards.append(("skip", "not run", result.tool))
        else:
            cls = "fail" if result.errors else "pass"
            cards.append(
                (
                    cls,
                    _count(result.errors, "error"),
                    f"{result.tool} ({_count(result.warnings, 'warning')})",
                )
            )
    if "error" in summary:
        cards.append(("fail", "pybids failed", "dataset index"))
    else:
        cards.append(
            (
                "info",
                f"{summary.get('subjects', 0)} subjects",
                f"{summary.get('sessions', 0)} sessions, {summary.get('images', 0)} images",
            )
        )
    return f'<section id="summary"><h2>Summary</h2>{page.cards(cards)}</section>'


def _leak_section(page: _Page, leaks: list[Leak]) -> str:
    if not leaks:
        body = (
            "<p>No residual identifiers found: every file and path was searched for each "
            "subject's recorded identifiers and for identifier-shaped strings.</p>"
        )
    else:
        body = (
            f"<p>{len(leaks)} residual identifier(s). Values are not shown here; run the "
            "group stage with <code>--show-values</code> to see them on the console.</p>"
            + page.table(
                ["file", "where", "what"], ((leak.path, leak.location, leak.kind) for leak in leaks)
            )
        )
    return f'<section id="leak-scan"><h2>Residual-identifier scan</h2>{body}</section>'


def _validator_section(page: _Page, validators: list[ValidatorResult]) -> str:
    rows = [
        (
            r.tool,
            r.version or "-",
            r.errors if r.ran else "-",
            r.warnings if r.ran else "-",
            "yes" if r.ran else "no",
        )
        for r in validators
    ]
    parts = [page.table(["validator", "version", "errors", "warnings", "ran"], rows)]
    for result in validators:
        errors = [m for m in result.messages if not m.startswith("WARNING")]
        warnings = [m for m in result.messages if m.startswith("WARNING")]
        if errors:
            parts.append(f"<h3>{page.text(result.tool)}: errors</h3>{page.listing(errors)}")
        if warnings:  # long and rarely actionable: folded
            parts.append(
                f"<details><summary>{page.text(result.tool)}: {len(warnings)} warning "
                f"codes</summary>{page.listing(warnings)}</details>"
            )
    return f'<section id="validators"><h2>BIDS validators</h2>{"".join(parts)}</section>'


def _dataset_section(page: _Page, summary: Mapping[str, Any]) -> str:
    if "error" in summary:
        body = (
            f"<p>pybids could not index the dataset: <code>{page.text(summary['error'])}</code></p>"
        )
    else:
        counts = [
            ("subjects", summary.get("subjects")),
            ("sessions", summary.get("sessions")),
            ("images", summary.get("images")),
            ("files indexed", summary.get("files")),
            ("datatypes", summary.get("datatypes", {})),
            ("suffixes", summary.get("suffixes", {})),
        ]
        body = page.table(["pybids BIDSLayout", "count"], counts)
    return f'<section id="dataset"><h2>Dataset (pybids)</h2>{body}</section>'


def _series_table(page: _Page, series: list[Mapping[str, Any]]) -> str:
    columns: list[str] = []
    for entry in series:
        columns += [k for k in entry if k not in columns]
    return page.table(columns, ([entry.get(c, "") for c in columns] for entry in series))


def _participant_block(
    page: _Page,
    label: str,
    audit: Mapping[str, Any],
    layout: Mapping[str, Any],
    pictures: list[QcPicture],
) -> str:
    parts = [
        f'<div class="participant" id="sub-{page.text(label)}"><h3>sub-{page.text(label)}</h3>'
    ]
    facts = [("files in / out", f"{audit.get('files_in', '-')} / {audit.get('files_out', '-')}")]
    if layout:
        facts += [
            ("sessions", ", ".join(layout.get("sessions", [])) or "-"),
            ("images by datatype", layout.get("datatypes", {})),
        ]
    parts.append(page.table(["", ""], facts))
    if audit.get("series"):
        parts.append(
            "<p><b>Series and what was done</b></p>" + _series_table(page, audit["series"])
        )
    for key, title in (
        ("header_actions", "DICOM header actions"),
        ("sidecar_actions", "JSON sidecar actions"),
    ):
        if audit.get(key):  # long tables: folded
            table = page.table(["action", "count"], audit[key].items())
            parts.append(
                f"<details><summary>{title} ({len(audit[key])})</summary>{table}</details>"
            )
    if audit.get("options"):
        options = page.text(json.dumps(audit["options"], indent=1, sort_keys=True))
        parts.append(f"<details><summary>Options</summary><pre>{options}</pre></details>")
    if audit.get("sourcedata"):
        parts.append("<p><b>sourcedata</b></p>" + _series_table(page, audit["sourcedata"]))
    if audit.get("failures"):
        parts.append("<p><b>Failures</b></p>" + _series_table(page, audit["failures"]))
    for category, title in (
        # the "before" row shows the face: it stays in the private dir, the dataset has "after"
        ("defacing", "Defacing QC (after defacing; before/after pictures are in the private dir)"),
        ("redaction", "Burned-in text redaction (redacted images)"),
        ("other", "Other QC pictures"),
    ):
        chosen = [p for p in pictures if p.category == category]
        if chosen:
            figures = "".join(
                f'<figure class="qc-{category}">'
                f'<img src="{p.data_uri}" alt="{page.text(p.caption)}">'
                f"<figcaption>{page.text(p.caption)}</figcaption></figure>"
                for p in chosen
            )
            parts.append(f'<p><b>{title}</b></p><div class="gallery">{figures}</div>')
    parts.append("</div>")
    return "".join(parts)


def _participants_section(
    page: _Page,
    audits: Mapping[str, Mapping[str, Any]],
    layout: Mapping[str, Any],
    pictures: list[QcPicture],
) -> str:
    per_subject = layout.get("per_subject", {})
    labels = sorted(set(audits) | set(per_subject) | {p.subject for p in pictures})
    if not labels:
        return '<section id="participants"><h2>Participants</h2><p>No participants.</p></section>'
    blocks = "".join(
        _participant_block(
            page,
            label,
            audits.get(label, {}),
            per_subject.get(label, {}),
            [p for p in pictures if p.subject == label],
        )
        for label in labels
    )
    return f'<section id="participants"><h2>Participants</h2>{blocks}</section>'


def _versions_section(
    page: _Page,
    audits: Mapping[str, Mapping[str, Any]],
    validators: list[ValidatorResult],
    summary: Mapping[str, Any],
) -> str:
    used: dict[str, set[str]] = {}
    for audit in audits.values():
        for name, version in (audit.get("software") or {}).items():
            used.setdefault(f"{name} (participant runs)", set()).add(str(version))
    here = {"bidsdeid": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            here[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    rows = [(name, ", ".join(sorted(v))) for name, v in sorted(used.items())]
    rows += [(f"{name} (group run)", version) for name, version in here.items()]
    rows += [(r.tool, r.version if r.ran else "not run") for r in validators]
    if summary.get("pybids"):
        rows.append(("pybids (layout)", summary["pybids"]))
    table = page.table(["software", "version"], rows)
    return f'<section id="versions"><h2>Versions</h2>{table}</section>'


# --- I/O at the edges ----------------------------------------------------------------------------


def read_audits(output_dir: Path) -> dict[str, dict[str, Any]]:
    """label -> audit record from ``derivatives/bidsdeid/audit/sub-<label>_audit.json``."""
    audits = {}
    for path in sorted((output_dir / DERIVATIVES / "audit").glob("sub-*_audit.json")):
        label = path.name.removeprefix("sub-").removesuffix("_audit.json")
        try:
            audits[label] = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            audits[label] = {"failures": [{"file": path.name, "reason": "unreadable audit record"}]}
    return audits


def png_data_uri(path: Path, width: int = _THUMBNAIL_WIDTH) -> str:
    """The picture as a PNG data: URI, scaled down to ``width`` pixels and without metadata."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB") if image.mode not in {"RGB", "L", "RGBA"} else image.copy()
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def read_qc_pictures(output_dir: Path) -> list[QcPicture]:
    pictures = []
    for path in sorted((output_dir / DERIVATIVES / "qc").glob("sub-*/*.png")):
        label = path.parent.name.removeprefix("sub-")
        category = qc_category(path.stem)
        if category is None:
            continue
        try:
            uri = png_data_uri(path)
        except OSError:
            continue  # unreadable picture: the report lists the participant without it
        pictures.append(QcPicture(label, category, path.stem, uri))
    return pictures


def _dataset_name(output_dir: Path) -> str:
    try:
        return str(json.loads((output_dir / "dataset_description.json").read_text("utf-8"))["Name"])
    except (OSError, ValueError, KeyError):
        return output_dir.name


def write_report(
    output_dir: Path, leaks: list[Leak], validators: list[ValidatorResult], summary: dict
) -> Path:
    """Write ``derivatives/bidsdeid/report.html`` (atomically) and return its path."""
    output_dir = Path(output_dir)
    page = _Page(make_masker(leaks))
    audits = read_audits(output_dir)
    pictures = read_qc_pictures(output_dir)
    body = "\n".join(
        [
            _summary_section(page, leaks, validators, summary),
            _leak_section(page, leaks),
            _participants_section(page, audits, summary, pictures),
            _validator_section(page, validators),
            _dataset_section(page, summary),
            _versions_section(page, audits, validators, summary),
        ]
    )
    template = Template(
        resources.files("bidsdeid").joinpath("data/report_template.html").read_text("utf-8")
    )
    document = template.substitute(
        title="bidsdeid report",
        subtitle=page.text(f"{_dataset_name(output_dir)}: de-identification and validation"),
        body=body,
    )
    path = output_dir / DERIVATIVES / REPORT_NAME
    atomic_write_text(path, document)
    return path
