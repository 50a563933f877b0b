"""The identifying values of one DICOM header, to search for wherever text or bytes survive."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import lru_cache

import pydicom
from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, tag_for_keyword

from bidsdeid.deid.private import blank_identifiers, identifier_bytes_pattern
from bidsdeid.deid.text import REDACTED, clean_text, identifier_tokens
from bidsdeid.deid.values import text_values

# Attributes whose values identify the subject, the visit, the staff or the site.
_IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers",
    "PatientTelecomInformation", "IssuerOfPatientID", "MedicalRecordLocator", "AdmissionID",
    "AccessionNumber", "StudyID", "RequestedProcedureID", "PerformedProcedureStepID",
    "ScheduledProcedureStepID", "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID",
    "ReferringPhysicianName", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "PerformingPhysicianName", "OperatorsName", "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord", "RequestingPhysician", "ConsultingPhysicianName",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "DeviceSerialNumber", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
    "StudyDate", "SeriesDate", "AcquisitionDate",
)
_PERSON_NAME_VR = "PN"
_IDENTIFYING_TAGS = frozenset(tag_for_keyword(k) for k in _IDENTIFYING_KEYWORDS)
_BIRTH_DATE = tag_for_keyword("PatientBirthDate")


def birth_date_forms(value: str) -> set[str]:
    """A DA birth date as it may be written elsewhere: ISO, European and US forms."""
    try:
        day = dt.datetime.strptime(value.strip(), "%Y%m%d").date()
    except ValueError:
        return {value} if value.strip() else set()
    return {day.strftime(f) for f in ("%Y%m%d", "%Y-%m-%d", "%d.%m.%Y", "%m/%d/%Y", "%d/%m/%Y")}


def _element_strings(ds: pydicom.Dataset, tag: int, encodings: list[str]) -> list[str]:
    """The element's values, plus name parts (family, given, "given family") of person names."""
    element = ds.get_item(tag)
    vr = element.VR or dictionary_VR(tag)
    found = []
    for value in text_values(element, vr, encodings):
        found.append(value)
        if vr == _PERSON_NAME_VR:
            parts = [p for p in value.split("=")[0].split("^") if p]
            found.extend(parts)
            if len(parts) >= 2:
                found.append(f"{parts[1]} {parts[0]}")
    return found


def subject_identifiers(ds: pydicom.Dataset) -> set[str]:
    """Identifying values of a header (whole values, name components, birth-date forms)."""
    encodings = convert_encodings(ds.get("SpecificCharacterSet") or "ISO_IR 6")
    found: set[str] = set()
    for tag in _IDENTIFYING_TAGS & ds.keys():
        found.update(_element_strings(ds, tag, encodings))
    if _BIRTH_DATE in ds:
        for value in _element_strings(ds, _BIRTH_DATE, encodings):
            found.update(birth_date_forms(value))
    for item in ds.get("OtherPatientIDsSequence") or []:
        if item.get("PatientID"):
            found.add(str(item.PatientID))
    return {value.strip() for value in found if value.strip()}


_UID_SHAPE = re.compile(r"^[0-9]+(?:\.[0-9]+)+$")


@lru_cache(maxsize=256)
def _tokens(values: frozenset[str]) -> frozenset[str]:
    return identifier_tokens(values)  # the same for every file of a subject: computed once


@dataclass(frozen=True)
class IdentifierSearch:
    """A subject's identifiers, prepared for searching text and bytes.

    Name-like values become one regex over their tokens, compiled once per subject (the token
    set is the same for every file of a subject). UIDs differ in every file, so they are
    searched as literals instead of defeating that cache.
    """
    tokens: frozenset[str]
    pattern: re.Pattern[bytes] | None
    uids: tuple[bytes, ...]

    @classmethod
    def of(cls, values: set[str] | frozenset[str]) -> IdentifierSearch:
        uids = {v for v in values if _UID_SHAPE.match(v) and len(v) > 8}
        tokens = _tokens(frozenset(values) - uids)
        return cls(tokens, identifier_bytes_pattern(tokens),
                    tuple(sorted((u.encode("ascii") for u in uids), key=len, reverse=True)))

    def found_in(self, value: bytes) -> bool:
        return (self.pattern is not None and self.pattern.search(value) is not None) or any(
            uid in value for uid in self.uids)

    def clean_text(self, text: str) -> str:
        text = clean_text(text, self.tokens)
        for uid in self.uids:
            text = text.replace(uid.decode("ascii"), REDACTED)
        return text

    def blank_bytes(self, value: bytes) -> bytes | None:
        """Same-length scrub of a private value (None: the element must be removed)."""
        return blank_identifiers(value, self.pattern, self.uids)
