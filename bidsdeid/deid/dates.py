"""Date and time shifting: one keyed offset per subject, applied to every date it has."""

from __future__ import annotations

import datetime as dt
import re

_DA = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")


def shift_da(value: str, days: int) -> str:
    """Shift a DICOM DA (``YYYYMMDD``); anything unparsable becomes empty."""
    m = _DA.match(value.strip())
    if not m:
        return ""
    try:
        day = dt.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return ""
    return (day + dt.timedelta(days=days)).strftime("%Y%m%d")


def shift_dt(value: str, days: int) -> str:
    """Shift the date part of a DICOM DT (``YYYYMMDDHHMMSS.FFFFFF&ZZXX``), keeping the rest."""
    value = value.strip()
    if len(value) < 8:
        return ""
    shifted = shift_da(value[:8], days)
    return shifted + value[8:] if shifted else ""


def shift_iso(value: str, days: int) -> str:
    """Shift an ISO date or date-time string (``YYYY-MM-DD[THH:MM:SS...]``) as in JSON sidecars."""
    m = _ISO_DATE.match(value.strip())
    if not m:
        return ""
    try:
        day = dt.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return ""
    return (day + dt.timedelta(days=days)).isoformat() + value.strip()[10:]
