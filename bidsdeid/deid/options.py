"""De-identification options: the PS3.15 Annex E option columns plus per-attribute overrides.

Defaults suit an OpenNeuro release: safe private tags kept (dcm2niix needs them), UIDs remapped,
device and institution identity removed, patient characteristics kept (ages capped at 89 years),
dates shifted by a per-subject offset, and surviving descriptors cleaned of identifiers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from pydicom.datadict import tag_for_keyword

LONG_DATES = ("modified", "full", "off")
ACTIONS = frozenset("DZXKCU")
_TAG = re.compile(r"^\(?\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)?$")


def normalise_attribute(name: str) -> str:
    """``"(0008,103e)"``, ``"0008,103E"`` or ``"SeriesDescription"`` -> ``"(0008,103E)"``."""
    m = _TAG.match(name.strip())
    if m:
        return f"({m[1].upper()},{m[2].upper()})"
    tag = tag_for_keyword(name.strip())
    if tag is None:
        raise ValueError(f"override {name!r} is neither a (gggg,eeee) tag nor a DICOM keyword")
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _normalise_overrides(overrides: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(overrides, Mapping):
        pairs = list(overrides.items())
    else:
        pairs = [tuple(pair) for pair in overrides]
    result = {}
    for name, action in pairs:
        if not isinstance(name, str) or not isinstance(action, str):
            # ValueError like every other bad option: callers catch one type for config errors
            raise ValueError(f"override {name!r}: attribute and action must be strings")  # noqa: TRY004
        letter = action.strip().upper()
        if letter not in ACTIONS:
            raise ValueError(f"override {name!r}: action {action!r} is not one of "
                             f"{', '.join(sorted(ACTIONS))}")
        result[normalise_attribute(name)] = letter
    return tuple(sorted(result.items()))


@dataclass(frozen=True)
class DeidOptions:
    retain_safe_private: bool = True
    retain_uids: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_patient_characteristics: bool = True
    retain_long_dates: str = "modified"
    clean_descriptors: bool = True
    clean_structured_content: bool = True
    clean_graphics: bool = True
    overrides: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "retain_long_dates":
                if value not in LONG_DATES:
                    raise ValueError(f"retain_long_dates must be one of {', '.join(LONG_DATES)}, "
                                     f"not {value!r}")
            elif f.name == "overrides":
                object.__setattr__(self, "overrides", _normalise_overrides(value))
            elif not isinstance(value, bool):
                raise ValueError(f"{f.name} must be true or false, not {value!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DeidOptions:
        """Build from a config mapping (e.g. a TOML table); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown de-identification option(s): {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(sorted(known))}")
        return cls(**dict(data))

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for the audit record."""
        summary: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        summary["overrides"] = dict(self.overrides)
        return summary

    def column_enabled(self, column: str) -> bool:
        """Whether an Annex E option column (as named in annex_e.json) is in force."""
        if column == "retain_long_full_dates":
            return self.retain_long_dates == "full"
        if column == "retain_long_modified_dates":
            return self.retain_long_dates == "modified"
        return bool(getattr(self, column))
