"""Defacing and skull-stripping of anatomical NIfTI volumes with a small 3D CNN."""

from bidsdeid.deface.apply import DefaceResult, deface_file
from bidsdeid.deface.infer import DefaceError, load_model

__all__ = ["DefaceError", "DefaceResult", "deface_file", "load_model"]
