"""Apply the PS3.15 Annex E profile with options to a DICOM header, in place.

The decisions live in ``profile`` (which action), ``uids``, ``dates``, ``values`` and ``private``
(how); this module walks the dataset, nested sequences included, and applies them. Elements the
profile keeps unchanged are never decoded, and ``writer`` copies their bytes from the input.
"""

from __future__ import annotations

import collections
import io
import os
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pydicom
from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from bidsdeid.deid import profile, writer
from bidsdeid.deid.dates import shift_da, shift_dt
from bidsdeid.deid.identifiers import IdentifierSearch, subject_identifiers
from bidsdeid.deid.method import record_method
from bidsdeid.deid.options import DeidOptions
from bidsdeid.deid.private import safe_private
from bidsdeid.deid.uids import is_well_known, names_a_class, remap_uid
from bidsdeid.deid.values import as_value, dummy_value, generalise_age, text_values

__all__ = ["DeidError", "ScrubContext", "ScrubStats", "scrub_dataset", "scrub_file",
           "subject_identifiers"]

_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN"})
_BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
_BINARY_NUMBER_VRS = frozenset({"AT", "FD", "FL", "OD", "OF", "OL", "OV", "SL", "SS", "SV",
                                "UL", "US", "UV"})
_OVERLAY_DATA = 0x3000
_PATIENT_NAME, _PATIENT_ID = 0x00100010, 0x00100020
# File meta elements naming the sending/receiving stations or carrying private data.
_IDENTIFYING_META = (0x00020016, 0x00020017, 0x00020018, 0x00020026, 0x00020027, 0x00020028,
                     0x00020100, 0x00020102)



class DeidError(Exception):
    """A file that cannot be de-identified; the message gives the reason, never a header value."""


@dataclass(frozen=True)
class ScrubContext:
    key: bytes                       # pseudonym key from PrivateDir
    date_shift_days: int
    participant_label: str
    identifiers: frozenset[str]      # the subject's original identifier values

    @property
    def subject(self) -> str:
        """``sub-<label>``, the value written as Patient's Name and Patient ID."""
        return "sub-" + self.participant_label.removeprefix("sub-")


@dataclass
class ScrubStats:
    actions: collections.Counter = field(default_factory=collections.Counter)
    # key "(gggg,eeee) Keyword:ACTION" -> count; never a value

    def merge(self, other: ScrubStats) -> None:
        self.actions.update(other.actions)

    def count(self, tag: int, action: str) -> None:
        self.actions[_stats_key(int(tag), action)] += 1


@lru_cache(maxsize=8192)
def _stats_key(tag: int, action: str) -> str:
    keyword = "private" if tag >> 16 & 1 else (keyword_for_tag(tag) or "unknown")
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword}:{action}"


@lru_cache(maxsize=4096)
def _dictionary_vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, (str, bytes, list, MultiValue)) and not value)


def _vr_of(element: DataElement | RawDataElement) -> str:
    vr = element.VR or _dictionary_vr(element.tag)
    return vr.split(" or ")[0]


@dataclass
class _Scrubber:
    ctx: ScrubContext
    options: DeidOptions
    sop_class_uid: str
    search: IdentifierSearch
    encodings: list[str]
    stats: ScrubStats
    # ``stats`` split by the top-level element that caused each count (-1: the dataset as a
    # whole), kept only when asked for: the series shortcut reuses a file's counts per element.
    by_top: dict[int, ScrubStats] | None = None
    top: int = -1

    def count(self, tag: int, action: str) -> None:
        self.stats.count(tag, action)
        if self.by_top is not None:
            self.by_top.setdefault(self.top, ScrubStats()).count(tag, action)

    # --- walking ------------------------------------------------------------------------------

    def dataset(self, ds: pydicom.Dataset, nested: bool) -> None:
        plan = profile.planned_actions(self.options, self.sop_class_uid, nested)
        for tag in map(int, list(ds.keys())):  # plain ints: BaseTag comparisons are slow
            if tag >> 16 & 1:
                continue  # private: decided per block below
            if not nested:
                self.top = tag
            if not tag & 0xFFFF:  # group lengths are retired and would be wrong after edits
                del ds[tag]
                continue
            element = ds.get_item(tag)
            vr = _vr_of(element)
            action = plan.get(tag) or self._unlisted_action(element, tag, vr, nested)
            if action == "K" and vr == "AS":
                action = "C"  # kept ages are generalised (89 and over -> 089Y)
            if action != "K" or vr == "SQ":
                self.apply(ds, tag, element, action, vr)
            if action != "K":
                self.count(tag, action)
        self.private_elements(ds, nested)

    def _unlisted_action(self, element: DataElement | RawDataElement, tag: int, vr: str,
                         nested: bool) -> str:
        """Action for an attribute Table E.1-1 does not list (``K`` means untouched)."""
        if tag >> 16 == 0x0000 or vr == "UN" or (vr in _BINARY_VRS and not keyword_for_tag(tag)):
            return "X"  # command group, or bytes of a tag no dictionary knows: nothing to check
        if tag >> 16 & 0xFF01 in (0x5000, 0x6000):
            return self._graphics_action(tag)
        if vr == "UI":
            keep = self.options.retain_uids or names_a_class(keyword_for_tag(tag) or "")
            return "K" if keep else "U"
        if vr in ("DA", "DT"):
            if self.options.retain_long_dates == "off":
                return profile.resolve_combined("X/Z/D", None if nested else
                                                profile.type_of(tag, self.sop_class_uid))
            return "C" if self.options.retain_long_dates == "modified" else "K"
        if vr == "PN":
            return profile.resolve_combined("X/Z/D", None if nested else
                                            profile.type_of(tag, self.sop_class_uid))
        if vr in _TEXT_VRS and self._holds_identifier(element):
            return "C"
        return "K"

    def _graphics_action(self, tag: int) -> str:
        """Curves (50xx) and overlay planes (60xx) stay whole (K) or go whole.

        Their bitmaps cannot be cleaned here, so Clean Graphics removes them; only an overlay's
        comments (60xx,4000) are cleaned as text when the plane is kept.
        """
        group_base = tag & 0xFFFF0000
        if tag >> 16 & 0xFF00 == 0x5000:
            return "K" if profile.repeating_action(group_base, self.options) == "K" else "X"
        if profile.repeating_action(group_base | _OVERLAY_DATA, self.options) != "K":
            return "X"
        return profile.repeating_action(tag, self.options) or "K"

    def _holds_identifier(self, element: DataElement | RawDataElement) -> bool:
        value = element.value
        if not isinstance(value, bytes):
            value = str(value).encode("utf-8", "replace")
        return self.search.found_in(value)

    # --- one element ------------------------------------------------------------------------

    def apply(self, ds: pydicom.Dataset, tag: int, element: DataElement | RawDataElement,
              action: str, vr: str) -> None:
        if tag in (_PATIENT_NAME, _PATIENT_ID) and action in "ZDC":
            ds[tag] = DataElement(tag, vr, self.ctx.subject)
            return
        if action == "X":
            del ds[tag]
            return
        if vr == "SQ":
            if action == "Z":
                ds[tag] = DataElement(tag, "SQ", Sequence())
            else:  # K, C, D, U on a sequence: keep its items, de-identified one by one
                for item in ds[tag].value:
                    self.dataset(item, nested=True)
            return
        if action == "Z":
            if not _is_empty(element.value):  # an empty element is left as read (and copied)
                ds[tag] = DataElement(tag, vr, None)
        elif action == "D":
            value = self._uids(self._values(element, vr)) if vr == "UI" else dummy_value(vr)
            ds[tag] = DataElement(tag, vr, value)
        elif action == "U" and vr == "UI":
            if not names_a_class(keyword_for_tag(tag) or ""):
                ds[tag] = DataElement(tag, vr, self._uids(self._values(element, vr)))
        elif action == "C":
            self.clean(ds, tag, element, vr)

    def _values(self, element: DataElement | RawDataElement, vr: str) -> list[str]:
        return text_values(element, vr, self.encodings)

    def clean(self, ds: pydicom.Dataset, tag: int, element: DataElement | RawDataElement,
              vr: str) -> None:
        """Action C: shift dates, generalise ages, redact identifiers from text."""
        values = self._values(element, vr)
        if not values:
            return
        if vr in ("DA", "DT"):
            if self.options.retain_long_dates != "modified":
                return
            shift = shift_da if vr == "DA" else shift_dt
            cleaned = [shift(v, self.ctx.date_shift_days) for v in values]
        elif vr == "AS":
            cleaned = [generalise_age(v) for v in values]
        elif vr in _TEXT_VRS:
            cleaned = [self.search.clean_text(v) for v in values]
        else:
            return
        if cleaned != values:  # an untouched element is copied byte for byte on writing
            ds[tag] = DataElement(tag, vr, as_value(cleaned))

    def _uids(self, values: list[str]) -> str | list[str]:
        if self.options.retain_uids:
            return as_value(values)
        key = self.ctx.key
        return as_value([uid if is_well_known(uid) else remap_uid(uid, key) for uid in values])

    # --- private elements ---------------------------------------------------------------------

    def private_elements(self, ds: pydicom.Dataset, nested: bool) -> None:
        # keys(), not iteration: iterating a Dataset decodes every element
        private_tags = [tag for tag in ds.keys() if tag.group & 1]  # noqa: SIM118
        if not private_tags:
            return
        creators = {(tag.group, tag.element): str(ds[tag].value)
                    for tag in private_tags if 0x10 <= tag.element <= 0xFF}
        kept_blocks = set()
        allow = safe_private()
        # Table E.1-1's private row: X, or C ("keep if safe, cleaned") under Retain Safe Private.
        retain_safe = profile.option_action(profile.annex_e().private, self.options) == "C"
        for tag in private_tags:
            if tag.element <= 0xFF:
                continue
            if not nested:
                self.top = int(tag)
            block = (tag.group, tag.element >> 8)
            override = profile.override_for(tag, self.options)
            creator = creators.get(block)
            keep = (override == "K") or (
                override is None and retain_safe and creator is not None
                and allow.allows(creator, tag.group, tag.element & 0xFF))
            if keep and self._keep_private(ds, tag):
                kept_blocks.add(block)
                self.count(tag, "C")
            else:
                del ds[tag]
                self.count(tag, "X")
        for tag in private_tags:
            if tag.element <= 0xFF and (tag.group, tag.element) not in kept_blocks:
                del ds[tag]

    def _keep_private(self, ds: pydicom.Dataset, tag: int) -> bool:
        """Scrub a kept private element's value; False if it must go after all."""
        element = ds.get_item(tag)
        vr = _vr_of(element)
        if vr == "SQ":
            for item in ds[tag].value:
                self.dataset(item, nested=True)
            return True
        if vr in _BINARY_NUMBER_VRS:  # numbers cannot spell a name; scanning them risks damage
            return True
        if isinstance(element, RawDataElement):
            value = element.value or b""
            cleaned = self.search.blank_bytes(value)
            if cleaned is None:
                return False
            if cleaned != value:
                ds[tag] = element._replace(value=cleaned, length=len(cleaned))
            return True
        return not self._holds_identifier(element)


def scrub_dataset(ds: pydicom.Dataset, ctx: ScrubContext, options: DeidOptions) -> ScrubStats:
    """De-identify ``ds`` in place (file meta included); returns what was done, per tag."""
    return _scrub_dataset(ds, ctx, options, attribute=False).stats


def _scrub_dataset(ds: pydicom.Dataset, ctx: ScrubContext, options: DeidOptions,
                   attribute: bool) -> _Scrubber:
    """``scrub_dataset``, returning the scrubber (its context and, if asked, per-element counts)."""
    search = IdentifierSearch.of(set(ctx.identifiers) | subject_identifiers(ds))
    encodings = convert_encodings(ds.get("SpecificCharacterSet") or "ISO_IR 6")
    scrubber = _Scrubber(ctx, options, str(ds.get("SOPClassUID", "")), search, encodings,
                         ScrubStats(), {} if attribute else None)
    scrubber.dataset(ds, nested=False)
    scrubber.top = -1
    for tag in (_PATIENT_NAME, _PATIENT_ID):
        if profile.override_for(tag, options) is None:
            ds[tag] = DataElement(tag, "PN" if tag == _PATIENT_NAME else "LO", ctx.subject)
    record_method(ds, options)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for tag in _IDENTIFYING_META:
            if tag in meta:
                del meta[tag]
                scrubber.count(tag, "X")
        if "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return scrubber


_UNDEFINED_LENGTH = 0xFFFFFFFF


def _check_complete(ds: pydicom.Dataset, size: int) -> None:
    """Raise DeidError unless the dataset's last element ends exactly at the end of the file."""
    if not len(ds):
        has_meta = "TransferSyntaxUID" in getattr(ds, "file_meta", {})
        raise DeidError("truncated DICOM" if has_meta else "not a DICOM file")
    last = ds.get_item(max(ds.keys()))
    if not isinstance(last, RawDataElement) or last.length == _UNDEFINED_LENGTH:
        return  # undefined lengths are read up to their delimiter, which pydicom requires
    if len(last.value or b"") < last.length or last.value_tell + last.length != size:
        raise DeidError("truncated DICOM")
    if "PixelData" not in ds and "Rows" in ds and "FloatPixelData" not in ds \
            and "DoubleFloatPixelData" not in ds:
        raise DeidError("truncated DICOM (image without pixel data)")


def _read(data: bytes) -> pydicom.Dataset:
    """Parse a whole file; bare datasets without preamble are accepted if they look like DICOM."""
    try:
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
        except InvalidDicomError:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            if "SOPClassUID" not in ds:
                raise DeidError("not a DICOM file") from None
        _check_complete(ds, len(data))
    except DeidError:
        raise
    except (EOFError, struct.error) as exc:
        raise DeidError(f"truncated DICOM ({type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on malformed files
        raise DeidError(f"unreadable DICOM ({type(exc).__name__})") from None
    return ds


def _ensure_transfer_syntax(ds: pydicom.Dataset) -> None:
    """A bare dataset (no file meta) is written with the encoding it was read in."""
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, _little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit
                                          else ExplicitVRLittleEndian)
    writer.complete_file_meta(ds)


def _replace_file(path: Path, data: bytes) -> None:
    """Write through a temp name beside ``path`` then rename: the file appears whole or not at all.

    No per-file fsync (unlike bidsdeid.fsutil): forcing each of thousands of small files to disk
    costs more than de-identifying it, and a run that dies is simply run again. The temp name
    matches ``.*.tmp`` so fsutil.remove_stale_temps cleans leftovers.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def scrub_file(src: Path, dst: Path, ctx: ScrubContext, options: DeidOptions) -> ScrubStats:
    """Read ``src`` whole, de-identify, write ``dst`` atomically with the same transfer syntax.

    Pixel data bytes are written back untouched. Raises DeidError for unreadable input.
    """
    check_not_input(src, dst)
    encoded, scrubber = scrub_bytes(read_input(src), ctx, options)
    _replace_file(Path(dst), encoded)
    return scrubber.stats


def check_not_input(src: Path, dst: Path) -> None:
    if Path(dst).resolve() == Path(src).resolve():
        raise DeidError("output would overwrite the input")


def read_input(src: Path) -> bytes:
    try:
        return Path(src).read_bytes()
    except OSError as exc:
        raise DeidError(f"cannot read file ({type(exc).__name__})") from None


def scrub_bytes(data: bytes, ctx: ScrubContext, options: DeidOptions,
                attribute: bool = False) -> tuple[bytes, _Scrubber]:
    """The de-identified encoding of a whole file, and the scrubber that made it."""
    ds = _read(data)
    untouched = writer.snapshot(ds)
    scrubber = _scrub_dataset(ds, ctx, options, attribute)
    _ensure_transfer_syntax(ds)
    try:
        return writer.encode(ds, data, untouched), scrubber
    except (ValueError, TypeError, OverflowError) as exc:
        raise DeidError(f"cannot encode the de-identified header ({type(exc).__name__})") from None
