"""Command line: ``bidsdeid INPUT_DIR OUTPUT_DIR {participant,group} [options]`` and ``bidsdeid demo DIR``.

Exit codes: 0 everything processed; 1 some inputs failed, a leak was found or the validator
reported errors; 2 usage error (bad option, config file or paths).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bidsdeid import __version__
from bidsdeid.config import ConfigError, RunConfig, build_config, parse_key_values
from bidsdeid.records import Failure

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

console = Console(stderr=True, highlight=False, soft_wrap=True)  # one line per message
app = typer.Typer(add_completion=False, rich_markup_mode=None,
                  help=__doc__, context_settings={"help_option_names": ["-h", "--help"]})
demo_app = typer.Typer(add_completion=False, help="Write the synthetic demo DICOM input.")


def _version(value: bool) -> None:
    if value:
        print(f"bidsdeid {__version__}")
        raise typer.Exit(EXIT_OK)


def _check_paths(cfg: RunConfig) -> None:
    """Refuse layouts that would write into the input or put secrets into the output."""
    from bidsdeid.privatedir import check_outside, default_private_dir

    input_dir = cfg.input_dir.resolve()
    if not input_dir.is_dir():
        raise ConfigError(f"{cfg.input_dir}: input folder does not exist")
    for name, path in (("OUTPUT_DIR", cfg.output_dir), ("--work-dir", cfg.work_dir),
                       ("--private-dir", cfg.private_dir)):
        if path is not None:
            resolved = path.resolve()
            if resolved == input_dir or input_dir in resolved.parents:
                raise ConfigError(f"{name} {path} is inside INPUT_DIR: nothing may be written there")
    check_outside(cfg.private_dir or default_private_dir(cfg.output_dir), cfg.output_dir)


@app.command()
def run(
    input_dir: Annotated[Path, typer.Argument(help="Folder of raw DICOM / twix / slides (read only).")],
    output_dir: Annotated[Path, typer.Argument(help="BIDS dataset to write.")],
    analysis_level: Annotated[str, typer.Argument(help="participant or group.")],
    participant_label: Annotated[list[str] | None, typer.Option(
        "--participant-label", help="Process only this subject label (repeatable).")] = None,
    heuristic: Annotated[str | None, typer.Option(
        help="Shipped heuristic name or path to a .toml/.py heuristic.")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="TOML file; any option below can be set there.")] = None,
    label_mapping: Annotated[Path | None, typer.Option(
        help="TSV with patient_id and participant_id columns instead of keyed pseudonyms.")] = None,
    slide_mapping: Annotated[Path | None, typer.Option(
        help="TSV with path (relative to INPUT_DIR) and patient_id for slides without one.")] = None,
    work_dir: Annotated[Path | None, typer.Option(help="Scratch folder (default: system temp).")] = None,
    keep_work: Annotated[bool | None, typer.Option("--keep-work", help="Keep scratch files.")] = None,
    private_dir: Annotated[Path | None, typer.Option(
        help="Key and ID mapping (default: OUTPUT_DIR's sibling '<name>_private').")] = None,
    n_procs: Annotated[int | None, typer.Option(help="Worker processes per participant.")] = None,
    mem_gb: Annotated[float | None, typer.Option(
        help="Memory budget (GB) for one participant's workers; fewer run at once to stay under it.")] = None,
    dry_run: Annotated[bool | None, typer.Option(
        "--dry-run", help="Print each series and its BIDS name or skip reason; write nothing.")] = None,
    list_participants: Annotated[bool | None, typer.Option(
        "--list-participants", help="Print the participant labels found and exit.")] = None,
    follow_symlinks: Annotated[bool | None, typer.Option(
        "--follow-symlinks", help="Follow symbolic links inside INPUT_DIR.")] = None,
    deface: Annotated[bool | None, typer.Option(
        "--deface/--no-deface", help="Deface anatomical images (default on).")] = None,
    skull_strip: Annotated[str | None, typer.Option(
        help="off, mask, brain or both: brain mask / brain image into derivatives/.")] = None,
    deface_method: Annotated[str | None, typer.Option(
        help="cnn (default, about 1-2 s a volume) or template (registration of a labelled "
             "template head, about a minute).")] = None,
    redact: Annotated[str | None, typer.Option(
        help="Burned-in text: all (default), identifiers, or off.")] = None,
    wsi_bids: Annotated[bool | None, typer.Option(
        "--wsi-bids", help="Also export cleaned slides as BIDS microscopy (micr/, OME-TIFF).")] = None,
    ocr_all_series: Annotated[bool | None, typer.Option(
        "--ocr-all-series", help="Look for burned-in text in every series.")] = None,
    verify: Annotated[bool | None, typer.Option(
        "--verify", help="Scan each subject's output for residual identifiers.")] = None,
    show_values: Annotated[bool | None, typer.Option(
        "--show-values", help="Show leaked values on the console (never written to files).")] = None,
    deid: Annotated[list[str] | None, typer.Option(
        "--deid", help="De-identification option KEY=VALUE (repeatable), e.g. retain_long_dates=off.")] = None,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True, help="More output.")] = 0,
    version: Annotated[bool | None, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
) -> None:
    """Convert and de-identify INPUT_DIR into the BIDS dataset OUTPUT_DIR."""
    try:
        cli_values = {
            "input_dir": input_dir, "output_dir": output_dir, "analysis_level": analysis_level,
            "participant_labels": tuple(participant_label or ()), "heuristic": heuristic,
            "label_mapping": label_mapping, "slide_mapping": slide_mapping, "work_dir": work_dir, "keep_work": keep_work,
            "private_dir": private_dir, "n_procs": n_procs, "mem_gb": mem_gb, "dry_run": dry_run,
            "list_participants": list_participants, "follow_symlinks": follow_symlinks,
            "deface": deface, "skull_strip": skull_strip, "deface_method": deface_method,
            "redact": redact,
            "ocr_all_series": ocr_all_series, "wsi_bids": wsi_bids, "verify": verify, "show_values": show_values,
            "verbose": verbose or None, "deid": parse_key_values(deid or []),
        }
        cfg = build_config(cli_values, config)
        _check_paths(cfg)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(EXIT_USAGE) from None
    if cfg.analysis_level == "group":
        from bidsdeid.group import run_group

        raise typer.Exit(run_group(cfg, console))
    raise typer.Exit(_participant(cfg))


def _participant(cfg: RunConfig) -> int:
    from bidsdeid.convert import ConvertError
    from bidsdeid.pipeline import plan_lines, prepare, run_participants

    try:
        private, found, subjects = prepare(cfg)
    except (ValueError, FileNotFoundError, ConvertError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    if cfg.list_participants:
        for subject in subjects:
            print(subject.label)
        return EXIT_OK
    for failure in found.failures:
        _print_failure(failure)
    if cfg.verbose:
        for skipped in found.skipped:
            console.print(f"[dim]skipped {_one_line(str(skipped.path))}: {skipped.reason}[/dim]",
                          soft_wrap=True)
    if cfg.dry_run:
        for line in plan_lines(subjects):
            print(line)
        return EXIT_FAILED if found.failures else EXIT_OK
    if cfg.participant_labels and not subjects:
        console.print("[red]error:[/red] no subject matches --participant-label")
        return EXIT_USAGE
    total = sum(1 for s in subjects for ses in s.sessions for x in ses.series if x.target)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=not cfg.verbose) as bar:
        task = bar.add_task("converting series", total=total)
        summary = run_participants(cfg, private, found, subjects,
                                   progress=lambda _: bar.advance(task))
    for failure in summary.failures:
        if failure not in found.failures:
            _print_failure(failure)
    if cfg.verify:
        from bidsdeid.group import verify_subjects

        summary.leaks = verify_subjects(cfg, private, summary.subjects, console)
    _print_summary(cfg, found, summary)
    return EXIT_OK if summary.ok else EXIT_FAILED


def _one_line(text: str) -> str:
    """Control characters (newlines, ANSI escapes) shown as ``\\xNN``, markup escaped."""
    return escape(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text))


def _print_failure(failure: Failure) -> None:
    """One line per failed input: the file and the reason (console only, never OUTPUT_DIR)."""
    console.print(f"[red]ERROR[/red] {_one_line(str(failure.path))}: {_one_line(failure.reason)}",
                  soft_wrap=True)


def _print_summary(cfg: RunConfig, found, summary) -> None:
    table = Table(title="bidsdeid participant summary", show_header=False)
    table.add_row("input files", str(found.n_files))
    table.add_row("skipped (not imaging / DICOMDIR / links)", str(len(found.skipped)))
    table.add_row("participants", str(len(summary.subjects)))
    table.add_row("series converted", str(summary.series_converted))
    table.add_row("series skipped by heuristic", str(summary.series_skipped))
    table.add_row("files written", str(summary.files_written))
    table.add_row("failures", str(len(summary.failures)))
    if cfg.verify:
        table.add_row("residual identifiers", str(summary.leaks))
    table.add_row("output", str(cfg.output_dir))
    console.print(table)


@demo_app.command()
def demo(
    directory: Annotated[Path, typer.Argument(help="Folder to create the demo DICOM input in.")],
    patients: Annotated[int, typer.Option(help="Number of synthetic patients.")] = 3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write a synthetic multi-patient DICOM study with planted identifiers (no download)."""
    from bidsdeid.demo import make_demo

    manifest = make_demo(directory, n_patients=patients, seed=seed)
    console.print(f"demo input written to {manifest.root} ({len(manifest.patients)} patients)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "demo":
        sys.argv.pop(1)
        demo_app(prog_name="bidsdeid demo")
    else:
        app(prog_name="bidsdeid")
