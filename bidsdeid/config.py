"""Run configuration: defaults, a TOML file, then command-line options, in that order of strength."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bidsdeid.deid.options import DeidOptions

AnalysisLevel = Literal["participant", "group"]
SkullStrip = Literal["off", "mask", "brain", "both"]
DefaceMethod = Literal["cnn", "template"]
RedactMode = Literal["all", "identifiers", "off"]


def available_cpus() -> int:
    """CPUs this process may run on (respects taskset, cgroups and SLURM's binding)."""
    return len(os.sched_getaffinity(0))


class ConfigError(ValueError):
    """A usage error: bad option value or config file (exit code 2)."""


@dataclass(frozen=True)
class RunConfig:
    input_dir: Path
    output_dir: Path
    analysis_level: AnalysisLevel
    participant_labels: tuple[str, ...] = ()
    heuristic: str = "default"
    label_mapping: Path | None = None  # TSV patient_id -> participant_id
    slide_mapping: Path | None = None  # TSV slide path (relative to INPUT_DIR) -> patient_id
    work_dir: Path | None = None
    keep_work: bool = False
    private_dir: Path | None = None
    n_procs: int = field(default_factory=lambda: available_cpus())
    mem_gb: float | None = None  # memory budget for the worker processes of one participant
    dry_run: bool = False
    list_participants: bool = False
    verbose: int = 0
    follow_symlinks: bool = False
    deface: bool = True
    skull_strip: SkullStrip = "off"
    deface_method: DefaceMethod = "cnn"
    redact: RedactMode = "all"
    ocr_all_series: bool = False
    verify: bool = False
    show_values: bool = False
    wsi_bids: bool = False
    deid: DeidOptions = field(default_factory=DeidOptions)


_PATH_FIELDS = {"input_dir", "output_dir", "label_mapping", "slide_mapping", "work_dir",
                "private_dir"}
_CHOICES = {
    "analysis_level": ("participant", "group"),
    "skull_strip": ("off", "mask", "brain", "both"),
    "deface_method": ("cnn", "template"),
    "redact": ("all", "identifiers", "off"),
}


def _coerce(name: str, value: Any, base: Path) -> Any:
    if name in _PATH_FIELDS and value is not None:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base / path)
    if name == "participant_labels":
        values = [value] if isinstance(value, str) else list(value)
        return tuple(str(v).removeprefix("sub-") for v in values)
    if name in _CHOICES and value not in _CHOICES[name]:
        raise ConfigError(f"{name} must be one of {', '.join(_CHOICES[name])}, not {value!r}")
    if name == "n_procs" and (not isinstance(value, int) or value < 1):
        raise ConfigError(f"n_procs must be a positive integer, not {value!r}")
    if name == "mem_gb" and (not isinstance(value, int | float) or value <= 0):
        raise ConfigError(f"mem_gb must be a positive number, not {value!r}")
    return value


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from exc


def build_config(cli: dict[str, Any], config_file: Path | None = None) -> RunConfig:
    """Merge dataclass defaults < TOML file < CLI values that were given (not None)."""
    known = {f.name for f in dataclasses.fields(RunConfig)}
    merged: dict[str, Any] = {}
    deid_table: dict[str, Any] = {}
    if config_file is not None:
        data = load_toml(config_file)
        deid_table = dict(data.pop("deid", {}))
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{config_file}: unknown option(s) {', '.join(sorted(unknown))}")
        base = config_file.resolve().parent
        merged.update({k: _coerce(k, v, base) for k, v in data.items()})
    cwd = Path.cwd()
    deid_cli = cli.pop("deid", None) or {}
    merged.update({k: _coerce(k, v, cwd) for k, v in cli.items() if v is not None and v != ()})
    try:
        merged["deid"] = DeidOptions.from_mapping(deid_table | deid_cli)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    missing = {"input_dir", "output_dir", "analysis_level"} - set(merged)
    if missing:
        raise ConfigError(f"missing {', '.join(sorted(missing))}")
    return RunConfig(**merged)


def parse_key_values(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs from the command line; true/false become booleans."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}")
        lowered = value.lower()
        result[key.strip()] = {"true": True, "false": False}.get(lowered, value)
    return result
