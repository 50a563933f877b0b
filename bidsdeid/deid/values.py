"""Element values as text, and their replacements: dummies by VR (action D), generalised ages."""

from __future__ import annotations

import re

from pydicom.charset import decode_bytes
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue

# Dummies are valid for their VR (length, character set) so Type 1 attributes stay valid.
_DUMMY_TEXT = "ANONYMIZED"
_DUMMIES: dict[str, object] = {
    "AE": "ANONYMIZED", "AS": "000Y", "CS": "ANONYMIZED", "DA": "19000101", "DS": "0",
    "DT": "19000101000000", "IS": "0", "LO": _DUMMY_TEXT, "LT": _DUMMY_TEXT, "PN": "ANONYMIZED",
    "SH": "ANONYMIZED", "ST": _DUMMY_TEXT, "TM": "000000", "UC": _DUMMY_TEXT, "UR": "",
    "UT": _DUMMY_TEXT, "FL": 0.0, "FD": 0.0, "SL": 0, "SS": 0, "UL": 0, "US": 0, "SV": 0,
    "UV": 0, "AT": 0,
}
MAX_AGE_YEARS = 89  # HIPAA Safe Harbor and BIDS: ages of 89 and over are reported as 89
_AGE = re.compile(r"^(\d{3})([DWMY])$")


def dummy_value(vr: str) -> object:
    """A harmless non-empty value of the given VR; binary VRs get an empty value."""
    return _DUMMIES.get(vr, b"")


def generalise_age(value: str) -> str:
    """Cap a DICOM AS age at ``089Y``; unparsable ages become empty."""
    m = _AGE.match(value.strip())
    if not m:
        return ""
    number, unit = int(m[1]), m[2]
    years = {"D": number / 365.25, "W": number / 52.18, "M": number / 12, "Y": number}[unit]
    return f"{MAX_AGE_YEARS:03d}Y" if years >= MAX_AGE_YEARS else m[0]


_SINGLE_VALUED_TEXT = frozenset({"LT", "ST", "UT", "UR"})
_DELIMITERS = {0x5C, 0x5E, 0x3D}  # backslash, caret, equals: multi-value and PN separators


def text_values(element: DataElement | RawDataElement, vr: str, encodings: list[str]) -> list[str]:
    """An element's values as strings; raw elements are decoded without converting them.

    Skipping pydicom's element conversion matters: most elements a scrub touches are replaced
    by a value computed from this text, so the converted object would be thrown away.
    """
    if isinstance(element, RawDataElement):
        raw = element.value or b""
        # ASCII without ISO 2022 escapes reads the same in every DICOM character set
        plain = raw.isascii() and b"\x1b" not in raw
        text = raw.decode("ascii") if plain else decode_bytes(raw, encodings, _DELIMITERS)
        values = [text] if vr in _SINGLE_VALUED_TEXT else text.split("\\")
        return [v.strip("\x00 ") if vr != "LT" else v.rstrip("\x00 ") for v in values if v]
    value = element.value
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, MultiValue) else [str(value)]


def as_value(values: list[str]) -> str | list[str]:
    """The value to store for a list of strings (single values are plain strings)."""
    return values[0] if len(values) == 1 else values
