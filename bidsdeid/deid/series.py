"""De-identify the files of one series, deciding each distinct element encoding once.

Files of a series share most of their header byte for byte. The first file goes through the
full engine (``apply.scrub_bytes``) and becomes the template. A later file whose context (file
meta, character set, SOP class, patient identity, private creators, set of tags) matches reuses
the template's output for every top-level element encoded identically, and only the elements
that differ (instance UIDs, positions, pixels, ...) go through the engine. The result is byte
for byte what the full engine writes for that file alone (``tests/test_deid_series.py``); a
file that fits no template goes through the full engine and becomes a template itself.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.charset import convert_encodings
from pydicom.filereader import read_dataset

from bidsdeid.deid import writer
from bidsdeid.deid.apply import (
    ScrubContext,
    ScrubStats,
    _replace_file,
    _Scrubber,
    check_not_input,
    read_input,
    scrub_bytes,
)
from bidsdeid.deid.identifiers import _BIRTH_DATE, _IDENTIFYING_TAGS, IdentifierSearch
from bidsdeid.deid.options import DeidOptions
from bidsdeid.elements import ElementError, Span, file_spans

_META_GROUP_LENGTH = 0x00020000
_MEDIA_SOP_INSTANCE = 0x00020003
_SOP_INSTANCE = 0x00080018
_CHARACTER_SET = 0x00080005
# Elements the engine reads as context for the whole dataset (the subject's identifiers, the
# IOD, the character set) or writes itself (identity, de-identification record): a file whose
# value differs from the template's goes through the full engine.
# The SOP Instance UID is also one of the identifiers searched for in text, but it differs in
# every file: it is swapped in the search instead (see ``_Template.search_for``).
_CONTEXT_TAGS = (frozenset(_IDENTIFYING_TAGS) - {_SOP_INSTANCE}) | {
    _BIRTH_DATE,
    0x00101002,  # Other Patient IDs Sequence
    0x00080016,  # SOP Class UID
    _CHARACTER_SET,
    0x00100010,  # Patient's Name
    0x00100020,  # Patient ID
    0x00120062,  # Patient Identity Removed
    0x00120063,  # De-identification Method
    0x00120064,  # De-identification Method Code Sequence
    0x00280303,  # Longitudinal Temporal Information Modified
}


def _is_creator(tag: int) -> bool:
    return bool(tag >> 16 & 1) and 0x10 <= tag & 0xFFFF <= 0xFF


def _block_of(tag: int) -> tuple[int, int] | None:
    """(group, block) of a private data element; None for public tags and creators."""
    if not tag >> 16 & 1 or tag & 0xFFFF <= 0xFF:
        return None
    return tag >> 16, tag >> 8 & 0xFF


# Templates kept per series: a series may mix encodings (files with and without preamble) or
# shapes (the first slice without a reference to itself); a few cover them all.
_MAX_TEMPLATES = 4
_UID_SHAPE = re.compile(rb"[0-9]+(?:\.[0-9]+)+")


def _instance_uid(element: bytes) -> bytes | None:
    """The value of an encoded SOP Instance UID element, if it is a plain UID."""
    value = element[8:].rstrip(b"\x00 ")  # UI: an 8-byte header in either VR encoding
    return value if len(value) > 8 and _UID_SHAPE.fullmatch(value) else None


def _only_as_itself(data: bytes, uid: bytes, meta: list[Span], sop_instance: bytes) -> bool:
    """True if ``uid`` occurs in ``data`` only in the SOP Instance UID element and the file
    meta's copy of it: then swapping it in the identifier search is exact."""
    expected = sop_instance.count(uid) + sum(
        data[s.start:s.end].count(uid) for s in meta if s.tag == _MEDIA_SOP_INSTANCE)
    return data.count(uid) == expected


@dataclass
class _Template:
    """The full engine's result on one file, split per element."""

    implicit: bool
    meta_in: dict[int, bytes]    # input file meta, without group length and instance UID
    meta_out: dict[int, bytes]   # output file meta, without group length
    elements_in: dict[int, bytes]
    elements_out: dict[int, bytes]
    stats_by_tag: dict[int, ScrubStats]
    scrubber: _Scrubber
    parent_encoding: list[str]
    writer_encodings: object
    kept_blocks: frozenset[tuple[int, int]]
    instance_uid: bytes

    @classmethod
    def of(cls, source: bytes, output: bytes, scrubber: _Scrubber) -> _Template | None:
        try:
            layout_in, data_in = file_spans(source)
            layout_out, data_out = file_spans(output)
        except ElementError:
            return None
        implicit, meta_in, meta_out = layout_in.implicit, layout_in.meta, layout_out.meta
        if layout_out.implicit != implicit:
            return None
        elements_in = {s.tag: source[s.start:s.end] for s in data_in}
        sop_instance = elements_in.get(_SOP_INSTANCE, b"")
        instance_uid = _instance_uid(sop_instance)
        if instance_uid is None or instance_uid not in scrubber.search.uids \
                or not _only_as_itself(source, instance_uid, meta_in, sop_instance):
            return None
        elements_out = {s.tag: output[s.start:s.end] for s in data_out}
        charset = next((source[s.start:s.end] for s in data_in if s.tag == _CHARACTER_SET), None)
        ds = pydicom.Dataset()
        if charset is not None:
            ds = read_dataset(io.BytesIO(charset), implicit, True)
        by_tag = scrubber.by_top or {}
        return cls(
            implicit,
            {s.tag: source[s.start:s.end] for s in meta_in
             if s.tag not in (_META_GROUP_LENGTH, _MEDIA_SOP_INSTANCE)},
            {s.tag: output[s.start:s.end] for s in meta_out if s.tag != _META_GROUP_LENGTH},
            elements_in,
            elements_out,
            by_tag,
            scrubber,
            convert_encodings(ds.get("SpecificCharacterSet") or "ISO_IR 6"),
            ds.get("SpecificCharacterSet", "iso8859"),
            frozenset(b for t in elements_out if (b := _block_of(t)) is not None),
            instance_uid,
        )

    def search_for(self, instance_uid: bytes) -> IdentifierSearch:
        """The engine's identifier search for a file differing only by its instance UID."""
        search = self.scrubber.search
        uids = (set(search.uids) - {self.instance_uid}) | {instance_uid}
        return IdentifierSearch(search.tokens, search.pattern,
                                tuple(sorted(uids, key=len, reverse=True)))

    def scrub(self, data: bytes) -> tuple[bytes, ScrubStats] | None:
        """The de-identified file and its counts, or None if ``data`` does not fit."""
        try:
            layout, elements = file_spans(data)
        except ElementError:
            return None
        if layout.implicit != self.implicit:
            return None
        meta = layout.meta
        meta_in = {s.tag: data[s.start:s.end] for s in meta
                   if s.tag not in (_META_GROUP_LENGTH, _MEDIA_SOP_INSTANCE)}
        if meta_in != self.meta_in or len(elements) != len(self.elements_in):
            return None
        differing: list[Span] = []
        sop_instance = b""
        for span in elements:
            template = self.elements_in.get(span.tag)
            if template is None:
                return None
            encoded = data[span.start:span.end]
            if span.tag == _SOP_INSTANCE:
                sop_instance = encoded
            if template != encoded:
                if span.tag in _CONTEXT_TAGS or _is_creator(span.tag):
                    return None
                differing.append(span)
        instance_uid = _instance_uid(sop_instance)
        if instance_uid is None or not _only_as_itself(data, instance_uid, meta, sop_instance):
            return None
        out = dict(self.elements_out)
        stats = ScrubStats()
        stats.merge(self.stats_by_tag.get(-1, ScrubStats()))
        changed = {s.tag for s in differing}
        for tag in self.elements_in:
            if tag not in changed and tag in self.stats_by_tag:
                stats.merge(self.stats_by_tag[tag])
        if differing and not self._scrub_differing(data, elements, differing, out, stats,
                                                   self.search_for(instance_uid)):
            return None
        sop_instance = out.get(_SOP_INSTANCE)
        if sop_instance is None or _MEDIA_SOP_INSTANCE not in self.meta_out:
            return None
        meta_out = dict(self.meta_out)
        # A UI element has an 8-byte header in both implicit and explicit VR.
        meta_out[_MEDIA_SOP_INSTANCE] = writer.encode_meta_element(
            _MEDIA_SOP_INSTANCE, "UI", sop_instance[8:].rstrip(b"\x00 ").decode("ascii"))
        parts = [writer.PREAMBLE, writer.file_meta_group([meta_out[t] for t in sorted(meta_out)])]
        parts.extend(out[t] for t in sorted(out))
        return b"".join(parts), stats

    def _scrub_differing(self, data: bytes, elements: list[Span], differing: list[Span],
                         out: dict[int, bytes], stats: ScrubStats,
                         search: IdentifierSearch) -> bool:
        """Run the engine on the differing elements alone; False if the result cannot be
        merged exactly (a private block kept in one file and dropped in the other)."""
        blocks = {b for s in differing if (b := _block_of(s.tag)) is not None}
        extra = [s for s in elements
                 if s.tag == _CHARACTER_SET or (_is_creator(s.tag)
                                                and (s.tag >> 16, s.tag & 0xFF) in blocks)]
        parts = sorted(differing + extra, key=lambda s: s.tag)
        buffer = b"".join(data[s.start:s.end] for s in parts)
        try:
            mini = read_dataset(io.BytesIO(buffer), self.implicit, True,
                                parent_encoding=self.parent_encoding)
        except Exception:  # noqa: BLE001 - anything pydicom cannot read: the full engine decides
            return False
        untouched = writer.snapshot(mini)
        scrubber = _Scrubber(self.scrubber.ctx, self.scrubber.options,
                             self.scrubber.sop_class_uid, search,
                             self.scrubber.encodings, ScrubStats(), {})
        try:
            scrubber.dataset(mini, nested=False)
        except Exception:  # noqa: BLE001 - same as above
            return False
        for span in differing:
            tag = span.tag
            stats.merge(scrubber.by_top.get(tag, ScrubStats()))
            if tag not in mini:
                out.pop(tag, None)
                continue
            elem = mini.get_item(tag)
            copied = (writer._source_range(elem, self.implicit, True, buffer)
                      if untouched.get(tag) is elem else None)
            try:
                out[tag] = (buffer[copied[0]:copied[1]] if copied is not None else
                            writer._encode_element(elem, self.implicit, True,
                                                   self.writer_encodings))
            except (ValueError, TypeError, OverflowError):
                return False
        kept = {b for t in out if (b := _block_of(t)) is not None}
        return kept & blocks == self.kept_blocks & blocks


class SeriesScrubber:
    """Scrubs the files of one series in turn (see the module docstring)."""

    def __init__(self, ctx: ScrubContext, options: DeidOptions) -> None:
        self.ctx, self.options = ctx, options
        self._templates: list[_Template] = []  # most recent first
        self.shortcut_files = 0

    def scrub_file(self, src: Path, dst: Path) -> ScrubStats:
        """Like ``apply.scrub_file``: read ``src``, write the de-identified ``dst`` atomically."""
        check_not_input(src, dst)
        data = read_input(src)
        result = next((r for t in self._templates if (r := t.scrub(data)) is not None), None)
        if result is not None:
            encoded, stats = result
            self.shortcut_files += 1
        else:  # the full engine; its result becomes a template for the files that follow
            encoded, scrubber = scrub_bytes(data, self.ctx, self.options, attribute=True)
            stats = scrubber.stats
            template = _Template.of(data, encoded, scrubber)
            if template is not None:
                self._templates = [template, *self._templates[:_MAX_TEMPLATES - 1]]
        _replace_file(Path(dst), encoded)
        return stats
