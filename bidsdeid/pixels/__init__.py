"""Burned-in text redaction in DICOM pixel data (issue 5), run on scrubbed copies before conversion.

``needs_pixel_check`` decides which series go through it; ``redact_file`` fills the text of one
file; ``PixelError`` means a file whose text cannot be removed, whose series must be left out.
"""

from .codecs import PixelError
from .redact import RedactionResult, needs_pixel_check, redact_file

__all__ = ["PixelError", "RedactionResult", "needs_pixel_check", "redact_file"]
