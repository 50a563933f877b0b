"""Free-text cleaning: remove the subject's own identifiers and identifier-shaped strings.

Used for every text value that an option lets survive (descriptions, comments, JSON sidecar
strings), so that "T1 for John Doe 1234567" loses the name and the number, not only by tag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

REDACTED = "X"

# Shapes that identify whatever the tag: dates, long digit runs (MRNs, accession numbers, phone
# numbers), e-mail addresses. Digits inside sequence names ("ep2d", "2x2x2") are shorter.
_GENERIC = [
    re.compile(r"\b(?:19|20)\d{2}[-/.]?(?:0[1-9]|1[0-2])[-/.]?(?:0[1-9]|[12]\d|3[01])\b"),
    re.compile(r"\b(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|1[0-2])[-/.](?:19|20)?\d{2}\b"),
    re.compile(r"\+?\(?\d[\d ()\-]{6,}\d"),
    re.compile(r"\d{6,}"),
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),
]

_MIN_TOKEN = 3  # shorter name parts ("Li", "Al") match too much ordinary text


def identifier_tokens(identifiers: Iterable[str]) -> frozenset[str]:
    """Split identifier values into the tokens to look for (whole values and name parts)."""
    tokens: set[str] = set()
    for value in identifiers:
        value = str(value).strip()
        if not value:
            continue
        if len(value) >= _MIN_TOKEN:
            tokens.add(value)
        for part in re.split(r"[\^=,\s]+", value):
            if len(part) >= _MIN_TOKEN:
                tokens.add(part)
    return frozenset(tokens)


def bounded_alternatives(tokens: Iterable[str]) -> str:
    """Regex alternation of ``tokens``, each only where it is not part of a longer word/number.

    A name is found when no letter continues it (so "99ALDRIC" gives up "Aldric", but "Annual"
    does not give up "Ann"); a number when no digit continues it; a mixed token when no letter
    or digit does. Longest first, so "Doe^John" wins over "Doe".
    """
    parts = []
    for token in sorted(tokens, key=len, reverse=True):
        if token.isalpha():
            edge = "A-Za-z"
        elif token.isdigit():
            edge = "0-9"
        else:
            edge = "A-Za-z0-9"
        parts.append(f"(?<![{edge}]){re.escape(token)}(?![{edge}])")
    return "|".join(parts)


@lru_cache(maxsize=256)
def _token_pattern(tokens: frozenset[str]) -> re.Pattern[str] | None:
    if not tokens:
        return None
    return re.compile(bounded_alternatives(tokens), re.IGNORECASE)


@lru_cache(maxsize=256)
def _frozen_tokens(identifiers: frozenset[str]) -> frozenset[str]:
    return identifier_tokens(identifiers)


def clean_text(value: str, identifiers: Iterable[str] = ()) -> str:
    """Return ``value`` with identifier tokens and identifier-shaped strings replaced."""
    tokens = (_frozen_tokens(identifiers) if isinstance(identifiers, frozenset)
              else identifier_tokens(identifiers))
    pattern = _token_pattern(tokens)
    if pattern is not None:
        value = pattern.sub(REDACTED, value)
    for generic in _GENERIC:
        value = generic.sub(REDACTED, value)
    return value
