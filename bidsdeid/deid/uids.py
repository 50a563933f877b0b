"""Keyed, deterministic UID remapping.

``remap_uid`` is a pure function of (key, original UID), so every file, run and parallel job that
shares the pseudonym key maps a UID to the same new one, and references between objects
(ReferencedSOPInstanceUID, FrameOfReferenceUID, ...) stay consistent without any shared table.
"""

from __future__ import annotations

import hashlib
import hmac

from pydicom.uid import UID_dictionary

# UI attributes naming a kind of thing, not an instance: never remapped, even when the value is a
# vendor's private class UID that pydicom's dictionary does not know.
_CLASS_SUFFIXES = ("ClassUID", "TransferSyntaxUID", "TransferSyntaxUIDInFile", "CodingSchemeUID",
                   "MappingResourceUID", "ContextGroupExtensionCreatorUID", "CreatorVersionUID")


def remap_uid(uid: str, key: bytes) -> str:
    """``2.25.<128-bit integer>`` from HMAC-SHA256(key, uid); at most 44 characters."""
    digest = hmac.new(key, b"uid\x00" + uid.strip("\x00 ").encode("ascii", "replace"),
                      hashlib.sha256).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def is_well_known(uid: str) -> bool:
    """A UID defined by the standard (SOP classes, transfer syntaxes, coding schemes, ...)."""
    return uid in UID_dictionary


def names_a_class(keyword: str) -> bool:
    """Whether an attribute holds a class/syntax/scheme UID rather than an instance UID."""
    return keyword.endswith(_CLASS_SUFFIXES) or "SOPClasses" in keyword
