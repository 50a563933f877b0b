"""Post-conversion sanitizer: dcm2niix's JSON sidecars and NIfTI headers.

dcm2niix runs on DICOM whose headers were already scrubbed; this stage is the second line of
defence. Every sidecar key goes through a field policy (``data/sidecar_policy.json``): keys the
policy does not know are dropped and counted, so a new dcm2niix release cannot leak a new field.
NIfTI files lose every free-text header field and every header extension, while the voxel bytes
and the spatial header fields stay byte-identical.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any

from isal import igzip

from bidsdeid.deid.dates import shift_dt, shift_iso
from bidsdeid.deid.options import DeidOptions
from bidsdeid.deid.text import clean_text
from bidsdeid.deid.values import MAX_AGE_YEARS, generalise_age
from bidsdeid.fsutil import atomic_write_text

POLICY_PATH = Path(__file__).parent / "data" / "sidecar_policy.json"
_OPTION = "option:"
_ACTIONS = frozenset({"keep", "shift", "time", "age", "clean", "drop"})
_LONG_DATES = {"modified": "shift", "full": "keep", "off": "drop"}
_SWITCHES = frozenset(f.name for f in fields(DeidOptions) if f.type in ("bool", bool))

NEUTRAL_DESCRIP = b"bidsdeid"
_COPY_CHUNK = 1 << 20
# Re-gzipping dominated the NIfTI rewrite: ISA-L (python-isal) level 1 deflates 15-30x faster
# than zlib level 1 on MR volumes, for files about the size zlib -1 makes.
_GZIP_LEVEL = 1


class SanitizeError(Exception):
    """A sidecar or NIfTI file that cannot be sanitized; the message names the file."""


@dataclass(frozen=True)
class SidecarPolicy:
    """Sidecar key -> action (``keep``, ``shift``, ``time``, ``age``, ``clean``, ``drop``,
    ``option:NAME``); ``data/sidecar_policy.json`` says what each one does.

    A ``*`` in a key matches any run of characters.
    """

    fields: Mapping[str, str]

    def action_for(self, name: str) -> str | None:
        """The policy's action for ``name``; ``None`` when the policy does not know it."""
        action = self.fields.get(name)
        if action is not None:
            return action
        for pattern, action in self.fields.items():
            if "*" in pattern and _wildcard(pattern).fullmatch(name):
                return action
        return None


def _wildcard(pattern: str) -> re.Pattern[str]:
    # "*" stands for an index or number ("FWF_DVS12", "sWipMemBlock[3].adFree"), never free text
    return re.compile(r"[0-9.\[\]_]*".join(re.escape(part) for part in pattern.split("*")))


def load_sidecar_policy(path: Path | None = None) -> SidecarPolicy:
    """Load and check a sidecar policy file (default: the shipped ``sidecar_policy.json``)."""
    path = path or POLICY_PATH
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))["fields"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SanitizeError(f"{path}: not a sidecar policy ({exc!r})") from exc
    if not isinstance(fields, dict):
        raise SanitizeError(f"{path}: 'fields' must map field names to actions")
    for name, action in fields.items():
        if not _is_valid_action(action):
            raise SanitizeError(f"{path}: field {name!r} has unknown action {action!r}")
    return SidecarPolicy(dict(fields))


def _is_valid_action(action: object) -> bool:
    if not isinstance(action, str):
        return False
    if action.startswith(_OPTION):
        return action[len(_OPTION):] in _SWITCHES
    return action in _ACTIONS


@dataclass
class SanitizeStats:
    """What happened to each field: ``"Name:action"`` -> count (names only, never values).

    Actions are the ones applied (``keep``, ``shift``, ``age``, ``clean``, ``drop``),
    ``clean-forced`` for a kept value that mentioned one of the subject's identifiers, and
    ``unknown-dropped`` for keys the policy does not list.
    """

    fields: collections.Counter = field(default_factory=collections.Counter)

    def merge(self, other: SanitizeStats) -> None:
        self.fields.update(other.fields)


def _effective_action(policy_action: str, options: DeidOptions) -> str:
    """Resolve a policy action against the options into keep, shift, age, clean or drop."""
    if policy_action.startswith(_OPTION):
        return "keep" if getattr(options, policy_action[len(_OPTION):]) else "drop"
    if policy_action == "shift":
        return _LONG_DATES[options.retain_long_dates]
    if policy_action == "age":
        return "age" if options.retain_patient_characteristics else "drop"
    if policy_action == "time":
        return "drop" if options.retain_long_dates == "off" else "keep"
    return policy_action


_DROP = object()  # marks a value that cannot be kept


def sanitize_sidecar(
    sidecar: dict, policy: SidecarPolicy, options: DeidOptions, date_shift_days: int,
    identifiers: Iterable[str],
) -> tuple[dict, SanitizeStats]:
    """Apply ``policy`` to one sidecar; returns the new sidecar (key order kept) and stats."""
    identifiers = tuple(str(value) for value in identifiers)
    stats = SanitizeStats()
    clean: dict[str, Any] = {}
    for name, value in sidecar.items():
        policy_action = policy.action_for(name)
        if policy_action is None:
            stats.fields[f"{_reportable(name, identifiers)}:unknown-dropped"] += 1
            continue
        action = _effective_action(policy_action, options)
        result = _apply(action, value, date_shift_days, identifiers)
        if result is _DROP:
            stats.fields[f"{name}:drop"] += 1
            continue
        guarded = _map_strings(result, lambda s: _without_identifiers(s, identifiers))
        if guarded != result:
            action = "clean-forced"
        clean[name] = guarded
        stats.fields[f"{name}:{action}"] += 1
    return clean, stats


def _apply(action: str, value: Any, days: int, identifiers: tuple[str, ...]) -> Any:
    if action == "keep":
        return value
    if action == "clean":
        return _map_strings(value, lambda s: clean_text(s, identifiers))
    if action == "shift":
        return _shift_value(value, days)
    if action == "age":
        return _capped_age(value)
    return _DROP


def _shift_value(value: Any, days: int) -> Any:
    """Shift every date in ``value``; anything that is not a parsable date drops the field."""
    if isinstance(value, str):
        shifted = shift_iso(value, days) if "-" in value[:5] else shift_dt(value, days)
        return shifted or _DROP
    if isinstance(value, list):
        items = [_shift_value(item, days) for item in value]
        return _DROP if any(item is _DROP for item in items) else items
    return _DROP


def _capped_age(value: Any) -> Any:
    """Ages over the Safe Harbor limit become the limit; years (dcm2niix) or DICOM AS strings."""
    if isinstance(value, bool):
        return _DROP
    if isinstance(value, int | float):
        return min(value, MAX_AGE_YEARS)
    if isinstance(value, str):
        return generalise_age(value) or _DROP
    return _DROP


def _map_strings(value: Any, transform: Callable[[str], str]) -> Any:
    """Apply ``transform`` to every string in a JSON value, dict keys included."""
    if isinstance(value, str):
        return transform(value)
    if isinstance(value, list):
        return [_map_strings(item, transform) for item in value]
    if isinstance(value, dict):
        return {transform(k): _map_strings(v, transform) for k, v in value.items()}
    return value


def _without_identifiers(text: str, identifiers: tuple[str, ...]) -> str:
    """``text`` unchanged unless it mentions one of the subject's identifiers; then cleaned."""
    if identifiers and clean_text(text, identifiers) != clean_text(text):
        return clean_text(text, identifiers)
    return text


def _reportable(name: str, identifiers: tuple[str, ...]) -> str:
    """An unknown key's name for the stats, unless the name itself looks identifying."""
    return name if clean_text(name, identifiers) == name else "<identifying-name>"


def sanitize_sidecar_file(path: Path, policy: SidecarPolicy, options: DeidOptions,
                          date_shift_days: int, identifiers: Iterable[str]) -> SanitizeStats:
    """Sanitize one sidecar in place (atomic rewrite, dcm2niix key order, 2-space indent)."""
    try:
        # strict=False: dcm2niix copies control characters of descriptions raw into the JSON
        sidecar = json.loads(path.read_bytes(), strict=False)
    except (OSError, ValueError) as exc:
        raise SanitizeError(f"{path}: cannot read JSON sidecar ({exc})") from exc
    if not isinstance(sidecar, dict):
        raise SanitizeError(f"{path}: JSON sidecar is not an object")
    clean, stats = sanitize_sidecar(sidecar, policy, options, date_shift_days, identifiers)
    atomic_write_text(path, json.dumps(clean, indent=2, ensure_ascii=False) + "\n")
    return stats


@dataclass(frozen=True)
class _NiftiLayout:
    """Byte layout of the header fields the sanitizer touches."""

    header_size: int
    magic: tuple[int, bytes]  # byte offset, single-file magic
    vox_offset: tuple[int, str]  # byte offset, struct format
    text_fields: tuple[tuple[int, int], ...]  # (offset, length) of descrip first, then the rest


# NIfTI-1: data_type, db_name (ANALYZE leftovers), descrip, aux_file, intent_name.
_NIFTI1 = _NiftiLayout(header_size=348, magic=(344, b"n+1\0"), vox_offset=(108, "f"),
                       text_fields=((148, 80), (4, 10), (14, 18), (228, 24), (328, 16)))
# NIfTI-2: descrip, aux_file, intent_name, unused_str.
_NIFTI2 = _NiftiLayout(header_size=540, magic=(4, b"n+2\0"), vox_offset=(168, "q"),
                       text_fields=((240, 80), (320, 24), (508, 16), (525, 15)))


def _is_gz(path: Path) -> bool:
    if path.name.endswith(".nii.gz"):
        return True
    if path.name.endswith(".nii"):
        return False
    raise SanitizeError(f"{path}: not a .nii or .nii.gz file")


def sanitize_nifti(path: Path, dst: Path | None = None) -> None:
    """Rewrite a .nii or .nii.gz without free-text header fields or header extensions.

    descrip becomes ``bidsdeid``; aux_file, intent_name and the unused text fields are zeroed;
    extensions are removed (vox_offset moves to right after the header). All other header bytes
    (dims, datatype, scaling, qform/sform and their codes) and the voxel bytes are copied as they
    are. The file is streamed, so memory use does not grow with the image. With ``dst`` the
    result goes there instead (``.nii`` -> ``.nii.gz`` compresses it in the same pass).
    """
    dst = dst or path
    compressed_in, compressed_out = _is_gz(path), _is_gz(dst)
    opener: Callable[..., IO[bytes]] = igzip.open if compressed_in else open
    try:
        with opener(path, "rb") as source:
            header = _clean_header(source, path)
            _replace_atomically(dst, lambda target: _write_nifti(target, header, source,
                                                                 compressed_out))
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise SanitizeError(f"{path}: cannot rewrite NIfTI ({exc})") from exc


def _clean_header(source: IO[bytes], path: Path) -> bytes:
    """Read the header and skip the extensions; return the cleaned header + empty extender."""
    head = source.read(4)
    if len(head) < 4:
        raise SanitizeError(f"{path}: too short for a NIfTI header")
    layout, order = _layout_of(head, path)
    header = bytearray(head + source.read(layout.header_size - 4))
    if len(header) < layout.header_size:
        raise SanitizeError(f"{path}: truncated NIfTI header")
    magic_at, magic = layout.magic
    if bytes(header[magic_at:magic_at + len(magic)]) != magic:
        raise SanitizeError(f"{path}: not a single-file NIfTI (no {magic!r} magic)")
    offset, fmt = layout.vox_offset
    (vox_offset,) = struct.unpack_from(order + fmt, header, offset)
    first_voxel = int(vox_offset)
    if first_voxel < layout.header_size + 4:
        raise SanitizeError(f"{path}: vox_offset {vox_offset} is inside the header")
    skipped = source.read(first_voxel - layout.header_size)  # extender + extensions
    if len(skipped) < first_voxel - layout.header_size:
        raise SanitizeError(f"{path}: file ends before vox_offset {vox_offset}")
    for position, length in layout.text_fields:
        header[position:position + length] = bytes(length)
    descrip_at = layout.text_fields[0][0]
    header[descrip_at:descrip_at + len(NEUTRAL_DESCRIP)] = NEUTRAL_DESCRIP
    struct.pack_into(order + fmt, header, offset, layout.header_size + 4)
    return bytes(header) + bytes(4)  # extender: no extensions follow


def _layout_of(head: bytes, path: Path) -> tuple[_NiftiLayout, str]:
    for layout in (_NIFTI1, _NIFTI2):
        for order in ("<", ">"):
            if struct.unpack(order + "i", head)[0] == layout.header_size:
                return layout, order
    raise SanitizeError(f"{path}: not a NIfTI-1 or NIfTI-2 header")


def _write_nifti(target: IO[bytes], header: bytes, source: IO[bytes], compressed: bool) -> None:
    if compressed:
        # No file name and no time stamp in the gzip header: the temp name must not leak.
        with igzip.GzipFile(filename="", mode="wb", fileobj=target, compresslevel=_GZIP_LEVEL,
                           mtime=0) as packed:
            packed.write(header)
            shutil.copyfileobj(source, packed, _COPY_CHUNK)
    else:
        target.write(header)
        shutil.copyfileobj(source, target, _COPY_CHUNK)


def _replace_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Stream ``write`` into a temp file beside ``path``, then swap it in."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as target:
            write(target)
            target.flush()
            os.fsync(target.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
