"""Burned-in text redaction in DICOM pixel data (issue 5), run on scrubbed copies before conversion.

``needs_pixel_check`` (``policy``) decides which series go through it; ``redact_file`` fills the
text of one file; ``PixelError`` means a file whose text cannot be removed, whose series must be
left out. The OCR side (Tesseract, Pillow, codecs) is imported on first use only.
"""

from __future__ import annotations

import importlib
from typing import Any

from .policy import needs_pixel_check

__all__ = ["PixelError", "RedactionResult", "needs_pixel_check", "redact_file"]
_LAZY = {"PixelError": "codecs", "RedactionResult": "redact", "redact_file": "redact"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
