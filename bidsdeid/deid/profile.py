"""PS3.15 Annex E Table E.1-1 plus options -> one action letter per attribute.

The table is data (``bidsdeid/data/annex_e.json``, generated from the standard by
``scripts/gen_annex_e.py``). Combined actions such as ``X/Z/D`` are resolved by the attribute's
Type in the object's IOD (``bidsdeid/data/deid_iod_types.json``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType

from pydicom.datadict import tag_for_keyword

from bidsdeid.deid.options import DeidOptions

# When several enabled options speak for one attribute, the one that keeps most wins.
_RETENTION = {"K": 3, "C": 2, "U": 1, "D": 1, "Z": 1, "X": 0}


@dataclass(frozen=True)
class ProfileEntry:
    name: str
    action: str                       # basic profile action, possibly combined ("X/Z/D")
    options: Mapping[str, str]        # option column -> action when that option is in force


def _load_json(name: str) -> dict:
    return json.loads(resources.files("bidsdeid.data").joinpath(name).read_text("utf-8"))


def _tag_int(text: str) -> int:
    return int(text[1:5], 16) << 16 | int(text[6:10], 16)


def _entry(raw: dict) -> ProfileEntry:
    return ProfileEntry(raw["name"], raw["action"], MappingProxyType(raw.get("options", {})))


@dataclass(frozen=True)
class AnnexE:
    entries: Mapping[int, ProfileEntry]     # exact tags
    repeating: Mapping[tuple[int, int], ProfileEntry]  # (0x5000|0x6000, element or -1)
    private: ProfileEntry

    def entry_for(self, tag: int) -> ProfileEntry | None:
        entry = self.entries.get(tag)
        if entry is not None:
            return entry
        group, element = tag >> 16, tag & 0xFFFF
        if group & 0xFF00 in (0x5000, 0x6000) and not group & 1:
            return (self.repeating.get((group & 0xFF00, element))
                    or self.repeating.get((group & 0xFF00, -1)))
        return None


@lru_cache(maxsize=1)
def annex_e() -> AnnexE:
    table = _load_json("annex_e.json")
    entries, repeating = {}, {}
    for text, raw in table["attributes"].items():
        if "X" in text[1:5]:  # (50XX,XXXX) curves, (60XX,eeee) overlays
            element = -1 if "X" in text[6:10] else int(text[6:10], 16)
            repeating[(int(text[1:3], 16) << 8, element)] = _entry(raw)
        else:
            entries[_tag_int(text)] = _entry(raw)
    return AnnexE(MappingProxyType(entries), MappingProxyType(repeating), _entry(table["private"]))


def option_action(entry: ProfileEntry, options: DeidOptions) -> str:
    """The entry's action once the enabled option columns have spoken (may still be combined)."""
    chosen = None
    for column, action in entry.options.items():
        enabled = options.column_enabled(column)
        if enabled and (chosen is None or _RETENTION[action] > _RETENTION[chosen]):
            chosen = action
    return chosen or entry.action


def resolve_combined(action: str, attribute_type: str | None) -> str:
    """Pick one letter of a combined action by Type: 1 -> D/U, 2 -> Z, 3 -> X.

    ``attribute_type`` None means unknown (nested attributes): take the choice that keeps the
    attribute valid whatever its Type (D, then U, then Z) since a dummy identifies no one.
    """
    choices = [part.rstrip("*") for part in action.split("/")]
    if len(choices) == 1:
        return choices[0]
    preference = {"1": "DUZX", "2": "ZDUX", "3": "XZDU"}.get(attribute_type or "", "DUZX")
    return next(letter for letter in preference if letter in choices)


@dataclass(frozen=True)
class IodTypes:
    """Top-level attribute Types of one IOD family (attributes absent here are Type 3)."""
    types: Mapping[int, str]

    def type_of(self, tag: int) -> str:
        return self.types.get(tag, "3")


@lru_cache(maxsize=64)
def iod_types(sop_class_uid: str) -> IodTypes:
    table = _load_json("deid_iod_types.json")
    merged = dict(table["default"])
    for family in table["iods"].values():
        if sop_class_uid in family["sop_classes"]:
            merged.update(family["types"])
    types = {}
    for keyword, attribute_type in merged.items():
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"deid_iod_types.json: unknown keyword {keyword}")
        types[tag] = attribute_type
    return IodTypes(MappingProxyType(types))


@lru_cache(maxsize=256)
def planned_actions(options: DeidOptions, sop_class_uid: str, nested: bool) -> Mapping[int, str]:
    """Final single-letter action for every exact tag of Table E.1-1 under ``options``.

    Top-level attributes are resolved with the IOD's Types; nested ones conservatively.
    User overrides replace the profile's action outright.
    """
    table = annex_e()
    types = iod_types(sop_class_uid)
    plan = {}
    for tag, entry in table.entries.items():
        attribute_type = None if nested else types.type_of(tag)
        plan[tag] = resolve_combined(option_action(entry, options), attribute_type)
    for name, letter in options.overrides:
        plan[_tag_int(name)] = letter
    return MappingProxyType(plan)


def override_for(tag: int, options: DeidOptions) -> str | None:
    """The user's override letter for an exact tag, if any."""
    for name, letter in options.overrides:
        if _tag_int(name) == tag:
            return letter
    return None


def repeating_action(tag: int, options: DeidOptions) -> str | None:
    """Action for a curve (50xx,xxxx) or overlay (60xx,3000/4000) element, None for others."""
    override = override_for(tag, options)
    if override is not None:
        return override
    table = annex_e()
    entry = table.entry_for(tag)
    if entry is None or tag in table.entries:
        return None
    return resolve_combined(option_action(entry, options), None)


def type_of(tag: int, sop_class_uid: str) -> str:
    """Type of a top-level attribute in the IOD of ``sop_class_uid`` (unlisted: "3")."""
    return iod_types(sop_class_uid).type_of(tag)
