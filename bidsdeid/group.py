"""The group stage: check a finished dataset independently of how it was written.

Residual-identifier scan against the private dir's identifiers, both BIDS validators, a pybids
summary, and the HTML report. Leaks and validator errors give exit code 1.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from bidsdeid.config import RunConfig
from bidsdeid.privatedir import PrivateDir, default_private_dir


def _private(cfg: RunConfig) -> PrivateDir:
    return PrivateDir.open(cfg.private_dir or default_private_dir(cfg.output_dir), create=False)


def verify_subjects(cfg: RunConfig, private: PrivateDir, labels: list[str], console: Console) -> int:
    """Scan the given subjects' output for their identifiers; returns the number of hits."""
    from bidsdeid.verify import format_leaks, scan_output

    leaks = scan_output(cfg.output_dir, private.load_identifiers(), subjects=labels)
    for line in format_leaks(leaks, cfg.show_values):
        console.print(f"[red]LEAK[/red] {escape(line)}", soft_wrap=True)
    return len(leaks)


def run_group(cfg: RunConfig, console: Console) -> int:
    from bidsdeid.report import write_report
    from bidsdeid.validate import layout_summary, run_bids_validator, run_bids_validator_deno
    from bidsdeid.verify import format_leaks, scan_output

    if not (cfg.output_dir / "dataset_description.json").exists():
        console.print(f"[red]error:[/red] {escape(str(cfg.output_dir))} is not a BIDS dataset "
                      "(no dataset_description.json)")
        return 2
    try:
        identifiers = _private(cfg).load_identifiers()
    except FileNotFoundError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}: the group stage needs the private "
                      "dir of the run")
        return 2
    leaks = scan_output(cfg.output_dir, identifiers)
    for line in format_leaks(leaks, cfg.show_values):
        console.print(f"[red]LEAK[/red] {escape(line)}", soft_wrap=True)
    validators = [run_bids_validator(cfg.output_dir), run_bids_validator_deno(cfg.output_dir)]
    for result in validators:
        state = f"{result.errors} errors, {result.warnings} warnings" if result.ran else "not run"
        console.print(f"{result.tool} {result.version}: {state}")
        for message in result.messages[: 20 if cfg.verbose else 5]:
            console.print(f"  {escape(message)}", soft_wrap=True)
    summary = layout_summary(cfg.output_dir)
    report = write_report(cfg.output_dir, leaks, validators, summary)
    console.print(f"residual identifiers: {len(leaks)}; report: {report}")
    failed = bool(leaks) or any(r.ran and r.errors for r in validators)
    return 1 if failed else 0
