"""Keyed UID remapping: deterministic, key-dependent, valid, and blind to well-known UIDs."""

from __future__ import annotations

import re

from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from bidsdeid.deid.apply import ScrubContext, scrub_dataset
from bidsdeid.deid.options import DeidOptions
from bidsdeid.deid.synthetic import mr_image
from bidsdeid.deid.uids import names_a_class, remap_uid

UID = "1.3.12.2.1107.5.2.32.35131.2014031012493950715786673"
VALID_UID = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")


def test_remapped_uid_is_a_valid_2_25_uid_within_64_characters():
    new = remap_uid(UID, b"k" * 32)
    assert VALID_UID.match(new) and len(new) <= 64


def test_same_key_same_uid_and_different_key_different_uid():
    assert remap_uid(UID, b"a" * 32) == remap_uid(UID, b"a" * 32)
    assert remap_uid(UID, b"a" * 32) != remap_uid(UID, b"b" * 32)
    assert remap_uid(UID, b"a" * 32) != remap_uid(UID + "1", b"a" * 32)


def test_class_attributes_are_recognised_whatever_their_value():
    assert names_a_class("SOPClassUID") and names_a_class("ReferencedSOPClassUID")
    assert names_a_class("TransferSyntaxUID") and names_a_class("CodingSchemeUID")
    assert not names_a_class("SOPInstanceUID") and not names_a_class("FrameOfReferenceUID")


def test_well_known_and_private_class_uids_are_never_remapped():
    ds = mr_image()
    ds.SOPClassUID = MRImageStorage
    ds.RelatedGeneralSOPClassUID = "1.3.12.2.1107.5.9.1"  # a vendor's private SOP class
    ds.ReferencedSOPClassUID = CTImageStorage
    ds.UID = ExplicitVRLittleEndian  # a well-known UID in an instance attribute
    ctx = ScrubContext(key=b"k" * 32, date_shift_days=0, participant_label="a",
                       identifiers=frozenset())
    scrub_dataset(ds, ctx, DeidOptions())
    assert ds.SOPClassUID == MRImageStorage
    assert ds.RelatedGeneralSOPClassUID == "1.3.12.2.1107.5.9.1"
    assert ds.ReferencedSOPClassUID == CTImageStorage
    assert ds.UID == ExplicitVRLittleEndian
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_retain_uids_keeps_instance_uids():
    ds = mr_image()
    original = ds.StudyInstanceUID
    ctx = ScrubContext(key=b"k" * 32, date_shift_days=0, participant_label="a",
                       identifiers=frozenset())
    scrub_dataset(ds, ctx, DeidOptions(retain_uids=True))
    assert ds.StudyInstanceUID == original
