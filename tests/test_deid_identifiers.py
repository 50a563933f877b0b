"""Which values of a header identify its subject, and how they are searched."""

from __future__ import annotations

from bidsdeid.deid.identifiers import IdentifierSearch, birth_date_forms, subject_identifiers
from bidsdeid.deid.synthetic import PlantedSubject, mr_image

SUBJECT = PlantedSubject()


def test_header_identifiers_cover_patient_visit_staff_site_and_device():
    found = subject_identifiers(mr_image(SUBJECT))
    expected = {SUBJECT.patient_name, SUBJECT.family, SUBJECT.given, SUBJECT.patient_id,
                SUBJECT.accession, SUBJECT.study_id, SUBJECT.address, SUBJECT.phone,
                SUBJECT.institution, SUBJECT.station, SUBJECT.serial, "Hippocrates",
                "Nightingale", SUBJECT.study_date, "1965-03-04", "04.03.1965", "03/04/1965"}
    assert expected <= found, sorted(expected - found)
    assert mr_image(SUBJECT).StudyInstanceUID in found


def test_birth_date_forms_include_iso_european_and_us_spellings():
    assert {"19650304", "1965-03-04", "04.03.1965", "03/04/1965"} <= birth_date_forms("19650304")


def test_search_redacts_name_tokens_and_uids_in_text():
    search = IdentifierSearch.of({"Doeberg^Johnathan", "1.2.3.4.5.6.7.8.9"})
    cleaned = search.clean_text("johnathan DOEBERG ref 1.2.3.4.5.6.7.8.9")
    assert "johnathan" not in cleaned.lower() and "doeberg" not in cleaned.lower()
    assert "1.2.3.4.5.6.7.8.9" not in cleaned


def test_search_does_not_match_inside_longer_words():
    search = IdentifierSearch.of({"Lee^Ann"})
    assert search.clean_text("Fleece sleeve") == "Fleece sleeve"
