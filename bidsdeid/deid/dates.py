"""Date and time shifting: one keyed offset per subject, applied to every date it has."""

from __future__ import annotations

import datetime as dt
import re

_DA = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")


def _shifted(match: re.Match[str] | None, days: int) -> dt.date | None:
    """The date of a (year, month, day) match moved by ``days``; None if there is no real date."""
    if not match:
        return None
    try:
        return dt.date(int(match[1]), int(match[2]), int(match[3])) + dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return None


def shift_da(value: str, days: int) -> str:
    """Shift a DICOM DA (``YYYYMMDD``); anything unparsable becomes empty."""
    day = _shifted(_DA.match(value.strip()), days)
    return day.strftime("%Y%m%d") if day else ""


def shift_dt(value: str, days: int) -> str:
    """Shift the date part of a DICOM DT (``YYYYMMDDHHMMSS.FFFFFF&ZZXX``), keeping the rest."""
    value = value.strip()
    if len(value) < 8:
        return ""
    shifted = shift_da(value[:8], days)
    return shifted + value[8:] if shifted else ""


def shift_iso(value: str, days: int) -> str:
    """Shift an ISO date or date-time string (``YYYY-MM-DD[THH:MM:SS...]``) as in JSON sidecars."""
    day = _shifted(_ISO_DATE.match(value.strip()), days)
    return day.isoformat() + value.strip()[10:] if day else ""
