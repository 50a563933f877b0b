"""Safe private allow-list and identifier blanking inside kept private values."""

from __future__ import annotations

import gzip

from bidsdeid.deid.identifiers import IdentifierSearch
from bidsdeid.deid.private import csa_item_spans, safe_private
from bidsdeid.deid.synthetic import csa2_header

SEARCH = IdentifierSearch.of({"Doeberg^Johnathan", "MRN99887766",
                              "1.2.826.0.1.3680043.10.999.1.1"})


def test_allow_list_matches_creator_group_and_offset_ignoring_case_and_padding():
    allow = safe_private()
    assert allow.allows("SIEMENS CSA HEADER ", 0x0029, 0x10)
    assert allow.allows("siemens mr header", 0x0019, 0x29), "MosaicRefAcqTimes"
    assert not allow.allows("SIEMENS CSA HEADER", 0x0029, 0x11)
    assert not allow.allows("SIEMENS CSA HEADER", 0x0031, 0x10), "creator in the wrong group"
    assert not allow.allows("ACME PACS 01", 0x0029, 0x10)


def test_csa_items_are_blanked_with_same_length_filler():
    csa = csa2_header({"PatientName": "Doeberg^Johnathan", "Coil": "HeadNeck_20",
                       "Ref": "MRN99887766 seen"})
    cleaned = SEARCH.blank_bytes(csa)
    assert len(cleaned) == len(csa) and csa_item_spans(cleaned) == csa_item_spans(csa)
    assert b"Doeberg" not in cleaned and b"Johnathan" not in cleaned
    assert b"MRN99887766" not in cleaned and b" seen" in cleaned
    assert b"HeadNeck_20" in cleaned


def test_csa_record_names_are_not_treated_as_text():
    csa = csa2_header({"Johnathan": "x"})  # a tag *name* equal to a token stays intact
    assert SEARCH.blank_bytes(csa) == csa


def test_uids_inside_private_bytes_are_blanked():
    value = b"ref=1.2.826.0.1.3680043.10.999.1.1;"
    assert SEARCH.blank_bytes(value) == b"ref=" + b"X" * 30 + b";"


def test_compressed_private_value_holding_an_identifier_is_dropped():
    assert SEARCH.blank_bytes(gzip.compress(b"patient MRN99887766")) is None
    clean = gzip.compress(b"TR 2000 TE 30")
    assert SEARCH.blank_bytes(clean) == clean


def test_unparseable_csa_falls_back_to_scanning_all_bytes():
    value = b"SV10\x04\x03\x02\x01" + b"\xff" * 8 + b"Doeberg"
    assert SEARCH.blank_bytes(value).endswith(b"XXXXXXX")
