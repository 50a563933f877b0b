"""bidsdeid: raw clinical and research imaging to a de-identified BIDS dataset."""

__version__ = "0.1.0"
