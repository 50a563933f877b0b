#!/usr/bin/env python3
"""Generate bidsdeid/data/annex_e.json from a machine-readable DICOM PS3.15 Table E.1-1.

The input is ``standard/confidentiality_profile_attributes.json`` of the innolitics/dicom-standard
project (a JSON list, one object per row of Table E.1-1). The output is the compact table that
``bidsdeid.deid.profile`` loads: tag -> name, basic profile action, and the action of each option
column that has one.

Usage::

    python scripts/gen_annex_e.py confidentiality_profile_attributes.json \
        --commit <innolitics commit> > bidsdeid/data/annex_e.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# innolitics column key -> our option column name (the standard's column titles, snake-cased).
OPTION_COLUMNS = {
    "rtnSafePrivOpt": "retain_safe_private",
    "rtnUIDsOpt": "retain_uids",
    "rtnDevIdOpt": "retain_device_identity",
    "rtnInstIdOpt": "retain_institution_identity",
    "rtnPatCharsOpt": "retain_patient_characteristics",
    "rtnLongFullDatesOpt": "retain_long_full_dates",
    "rtnLongModifDatesOpt": "retain_long_modified_dates",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}
KNOWN_KEYS = {"name", "tag", "stdCompIOD", "basicProfile", "id", *OPTION_COLUMNS}
ACTION = re.compile(r"^(?:[DZXKCU]\*?)(?:/[DZXKCU]\*?)*$")
TAG = re.compile(r"^\(([0-9A-FX]{4}),([0-9A-FX]{4})\)$")
PRIVATE_ROW = "(GGGG,EEEE) WHERE GGGG IS ODD"


def clean_name(name: str) -> str:
    """Drop footnote references such as "\\n\\n(see Note 12)" that the table carries."""
    return re.sub(r"\s*\(see Note \d+\)", "", " ".join(name.split())).strip()


def convert_row(row: dict) -> tuple[str, dict]:
    unknown = set(row) - KNOWN_KEYS
    if unknown:
        raise ValueError(f"row {row.get('tag')}: unknown column(s) {sorted(unknown)}")
    basic = row["basicProfile"].strip()
    if not ACTION.match(basic):
        raise ValueError(f"row {row['tag']}: unexpected basic action {basic!r}")
    entry: dict = {"name": clean_name(row["name"]), "action": basic}
    options = {}
    for column, option in OPTION_COLUMNS.items():
        if column in row:
            value = row[column].strip()
            if not ACTION.match(value):
                raise ValueError(f"row {row['tag']}: unexpected {column} action {value!r}")
            options[option] = value
    if options:
        entry["options"] = options
    if row.get("stdCompIOD") == "Y":
        entry["in_std_iod"] = True
    tag = row["tag"].strip().upper()
    if tag == PRIVATE_ROW:
        return "private", entry
    if not TAG.match(tag):
        raise ValueError(f"unexpected tag {row['tag']!r}")
    return tag, entry


def convert(rows: list[dict], commit: str | None) -> dict:
    attributes: dict[str, dict] = {}
    private = None
    for row in rows:
        tag, entry = convert_row(row)
        if tag == "private":
            private = entry
        elif tag in attributes:
            raise ValueError(f"duplicate tag {tag}")
        else:
            attributes[tag] = entry
    if private is None:
        raise ValueError("the table has no private-attributes row")
    source = "DICOM PS3.15 Table E.1-1 (Application Level Confidentiality Profile Attributes), " \
             "machine-readable copy standard/confidentiality_profile_attributes.json of " \
             "github.com/innolitics/dicom-standard"
    if commit:
        source += f" at commit {commit}"
    return {
        "_source": source,
        "_edition": "not recorded in the source file; the row set matches the 2019-2023 "
                    "editions (e.g. Device Label, Dosimetric Objective UID are present)",
        "_regenerate": "python scripts/gen_annex_e.py confidentiality_profile_attributes.json "
                       "--commit <sha> > bidsdeid/data/annex_e.json",
        "_actions": "D dummy, Z zero-length or dummy, X remove, K keep, C clean, U replace UID; "
                    "X/Z, X/D, Z/D, X/Z/D, X/Z/U* choose by the attribute's Type in the IOD",
        "option_columns": sorted(OPTION_COLUMNS.values()),
        "private": private,
        "attributes": dict(sorted(attributes.items())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="confidentiality_profile_attributes.json")
    parser.add_argument("--commit", help="innolitics/dicom-standard commit the file was taken from")
    args = parser.parse_args(argv)
    table = convert(json.loads(args.source.read_text(encoding="utf-8")), args.commit)
    json.dump(table, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
