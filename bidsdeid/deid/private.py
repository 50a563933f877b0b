"""Safe private elements: the allow-list dcm2niix needs, and identifier scrubbing of their bytes.

Kept private values are opaque to the profile, so they are scanned for the subject's own
identifier values. Replacements are same-length filler bytes: element lengths, and the item
lengths inside a Siemens CSA header, stay valid.
"""

from __future__ import annotations

import gzip
import json
import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType

from bidsdeid.deid.text import bounded_alternatives

FILLER = ord("X")
_CSA2_MAGIC = b"SV10"
_CSA_TAG = struct.Struct("<64si4s3i")      # name, vm, vr, syngodt, n_items, xx
_CSA_ITEM = struct.Struct("<4i")
_MAX_CSA_TAGS = 1000                         # real headers hold ~100; guards against garbage
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class SafePrivateList:
    blocks: Mapping[tuple[str, int], frozenset[int]]  # (creator upper-case, group) -> offsets

    def allows(self, creator: str, group: int, offset: int) -> bool:
        offsets = self.blocks.get((creator.strip().upper(), group))
        return offsets is not None and offset in offsets


@lru_cache(maxsize=1)
def safe_private() -> SafePrivateList:
    table = json.loads(resources.files("bidsdeid.data").joinpath("safe_private.json")
                       .read_text("utf-8"))
    blocks: dict[tuple[str, int], set[int]] = {}
    for block in table["blocks"]:
        key = (block["creator"].strip().upper(), int(block["group"], 16))
        blocks.setdefault(key, set()).update(int(e, 16) for e in block["elements"])
    return SafePrivateList(MappingProxyType({k: frozenset(v) for k, v in blocks.items()}))


@lru_cache(maxsize=256)
def identifier_bytes_pattern(tokens: frozenset[str]) -> re.Pattern[bytes] | None:
    """Case-insensitive byte pattern for identifier tokens, not inside a longer alphanumeric run."""
    encoded = set()
    for token in tokens:
        for codec in ("utf-8", "latin-1"):
            try:
                encoded.add(token.encode(codec))
            except UnicodeEncodeError:
                pass
    if not encoded:
        return None
    # latin-1 decoding maps bytes 1:1, so the str pattern builder serves byte tokens too
    pattern = bounded_alternatives(t.decode("latin-1") for t in encoded)
    return re.compile(pattern.encode("latin-1"), re.IGNORECASE)


def _fill(match: re.Match[bytes]) -> bytes:
    return bytes([FILLER]) * len(match.group())


def csa_item_spans(value: bytes) -> list[tuple[int, int]] | None:
    """(start, end) of every item's data in a CSA2 (``SV10``) header, or None if not parseable.

    Layout (nibabel's ``siemens_csa`` docs): 16-byte header with the tag count; per tag a 84-byte
    record then its items, each a 16-byte record whose second int is the data length, the data
    padded to 4 bytes.
    """
    if not value.startswith(_CSA2_MAGIC) or len(value) < 16:
        return None
    (n_tags,) = struct.unpack_from("<I", value, 8)
    if n_tags > _MAX_CSA_TAGS:
        return None
    pos, spans = 16, []
    for _ in range(n_tags):
        if pos + _CSA_TAG.size > len(value):
            return None
        n_items = _CSA_TAG.unpack_from(value, pos)[4]
        pos += _CSA_TAG.size
        if not 0 <= n_items <= _MAX_CSA_TAGS:
            return None
        for _ in range(n_items):
            if pos + _CSA_ITEM.size > len(value):
                return None
            length = _CSA_ITEM.unpack_from(value, pos)[1]
            pos += _CSA_ITEM.size
            if length < 0 or pos + length > len(value):
                return None
            if length:
                spans.append((pos, pos + length))
            pos += (length + 3) // 4 * 4
    return spans


def _blank(value: bytes, pattern: re.Pattern[bytes] | None, literals: tuple[bytes, ...]) -> bytes:
    if pattern is not None:
        value = pattern.sub(_fill, value)
    for literal in literals:
        if literal in value:
            value = value.replace(literal, bytes([FILLER]) * len(literal))
    return value


def blank_identifiers(value: bytes, pattern: re.Pattern[bytes] | None,
                      literals: tuple[bytes, ...] = ()) -> bytes | None:
    """``value`` with identifier bytes replaced by same-length filler.

    CSA2 headers are scrubbed item by item (their binary records are left alone). A gzip
    payload is searched after decompression; if it holds an identifier the result is None, which
    means: remove the element (it cannot be rewritten byte for byte). ``literals`` are exact
    byte strings (UIDs) blanked the same way.
    """
    if (pattern is None and not literals) or not value:
        return value
    if value.startswith(_GZIP_MAGIC):
        try:
            payload = gzip.decompress(value)
        except (OSError, EOFError, zlib.error):
            payload = value
        return None if _blank(payload, pattern, literals) != payload else value
    spans = csa_item_spans(value)
    if spans is None:
        return _blank(value, pattern, literals)
    scrubbed = bytearray(value)
    for start, end in spans:
        part = value[start:end]
        cleaned = _blank(part, pattern, literals)
        if cleaned != part:
            scrubbed[start:end] = cleaned
    return bytes(scrubbed)
