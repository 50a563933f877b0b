"""Decide which OCR words identify the subject, in the manner of Presidio's DICOM redactor.

A word identifies when it matches, fuzzily, one of the subject's own header values (name parts,
IDs, accession, dates in any usual layout), or has an identifier's shape whatever the subject
(dates, long digit runs, e-mail: ``bidsdeid.deid.text``), or is a frequent person name
(``bidsdeid/data/pixel_names.json``). OCR confuses look-alike glyphs (0/O, 1/I/l, 5/S, 8/B), so
words and identifiers are compared in a form where those are the same.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import cache
from importlib import resources

from bidsdeid.deid.text import clean_text, identifier_tokens

FUZZY_RATIO = 0.8  # difflib ratio above which an OCR word is taken for an identifier token
MIN_FUZZY_LENGTH = 4  # shorter tokens must match exactly (after look-alike folding)

_LOOKALIKES = str.maketrans({"0": "O", "Q": "O", "D": "O", "1": "I", "L": "I", "|": "I",
                             "!": "I", "5": "S", "8": "B", "2": "Z", "6": "G"})
_I = re.IGNORECASE
_MONTHS = "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC"
# Dates with a month name, which the generic numeric patterns do not cover.
_MONTH_DATES = (
    re.compile(rf"\b\d{{1,2}}[\s./-]*(?:{_MONTHS})[A-Z]*[\s.,/-]*(?:19|20)?\d{{2}}\b", _I),
    re.compile(rf"\b(?:{_MONTHS})[A-Z]*[\s.,/-]*\d{{1,2}}[\s.,/-]+(?:19|20)\d{{2}}\b", _I),
)


def fold(text: str) -> str:
    """Upper case, letters and digits only, look-alike glyphs made equal."""
    return re.sub(r"[^A-Z0-9|!]", "", text.upper()).translate(_LOOKALIKES)


@cache
def person_names() -> frozenset[str]:
    text = resources.files("bidsdeid").joinpath("data/pixel_names.json").read_text("utf-8")
    table = json.loads(text)
    return frozenset(fold(n) for n in table["family_names"] + table["given_names"])


def _date_layouts(value: str) -> set[str]:
    """Digit strings a DICOM date (YYYYMMDD) shows as when burned in, in any field order."""
    if not re.fullmatch(r"(?:19|20)\d{6}", value):
        return set()
    y, m, d = value[:4], value[4:6], value[6:8]
    return {y + m + d, d + m + y, m + d + y, d + m + y[2:], m + d + y[2:], y[2:] + m + d}


@dataclass(frozen=True)
class IdentifierMatcher:
    """The subject's identifier tokens in folded form, ready to test OCR words against."""

    raw: tuple[str, ...]
    folded: frozenset[str]
    dates: frozenset[str]

    @classmethod
    def from_values(cls, identifiers: Iterable[str]) -> IdentifierMatcher:
        raw = tuple(str(v) for v in identifiers if str(v).strip())
        tokens = identifier_tokens(raw)
        dates = set().union(*(_date_layouts(t) for t in tokens)) if tokens else set()
        return cls(raw, frozenset(f for f in map(fold, tokens) if f), frozenset(dates))

    def word_matches(self, word: str) -> bool:
        """One OCR word (which may have glued neighbours, e.g. ``Name:DOE^JOHN``)."""
        if clean_text(word, self.raw) != word or any(p.search(word) for p in _MONTH_DATES):
            return True
        digits = re.sub(r"\D", "", word)
        if len(digits) >= 6 and digits in self.dates:
            return True
        folded = fold(word)
        if not folded:
            return False
        parts = {folded} | {fold(p) for p in re.split(r"[\^,;:.\s'\"`*‘’“”]+", word)}
        if parts & person_names():
            return True
        for token in self.folded:
            for part in parts:
                if part == token:
                    return True
                long_enough = min(len(token), len(part)) >= MIN_FUZZY_LENGTH
                if long_enough and (token in part or
                                    SequenceMatcher(None, part, token).ratio() >= FUZZY_RATIO):
                    return True
        return False

    def line_matches(self, words: Sequence[str]) -> set[int]:
        """Indexes of words that are part of an identifier spanning several words of a line."""
        text = ""
        spans = []
        for word in words:
            start = len(text) + (1 if text else 0)
            text = f"{text} {word}" if text else word
            spans.append((start, len(text)))
        hits: set[int] = set()
        for pattern in _MONTH_DATES:
            for found in pattern.finditer(text):
                hits |= {i for i, (start, end) in enumerate(spans)
                         if start < found.end() and end > found.start()}
        # Whole values with spaces in them (e.g. a name "DOE JOHN" read as two words).
        cleaned = clean_text(text, self.raw)
        if cleaned != text:
            hits |= {i for i, w in enumerate(words) if w not in cleaned.split(" ")}
        return hits
