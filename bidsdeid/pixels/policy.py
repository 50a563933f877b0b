"""Which series go through burned-in text redaction: a decision on header values alone.

Kept apart from the OCR code so that the pipeline can decide without importing Tesseract,
Pillow and the codecs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Series that may carry burned-in text (issue 5): ultrasound, secondary capture, other.
TEXT_MODALITIES = frozenset({"US", "SC", "OT"})
TEXT_IMAGE_TYPES = frozenset({"SECONDARY", "SCREENSHOT"})


def needs_pixel_check(header: Mapping[str, Any], force: bool = False) -> bool:
    """Whether a series may hold burned-in text and must go through pixel redaction."""
    if force:
        return True
    if str(header.get("Modality", "")).upper() in TEXT_MODALITIES:
        return True
    if str(header.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        return True
    image_type = header.get("ImageType", ())
    values = image_type.split("\\") if isinstance(image_type, str) else list(image_type or ())
    return any(str(v).strip().upper() in TEXT_IMAGE_TYPES for v in values)
