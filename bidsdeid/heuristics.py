"""Map DICOM series to BIDS names with heuristics: declarative TOML rule files or Python plug-ins.

Rule files (``heuristics/*.toml``) hold an ordered list of ``[[rule]]`` tables; the first rule
whose conditions all hold decides. A rule looks like::

    [[rule]]
    name = "T1w"                                   # for messages only
    match = { "SeriesDescription|ProtocolName" = "mprage|t1w?", ImageType = { contains = "M" } }
    unless = { ImageType = { contains = ["DERIVED", "MPR"] } }
    datatype = "anat"
    suffix = "T1w"
    entities = { acq = "mprage" }

``match`` conditions must all hold, one ``unless`` condition suffices to reject. A condition
keys a header keyword, or several joined by ``|`` (any of them may satisfy it), to:

* a string: a case-insensitive regular expression searched in the value (list values are
  joined with ``\\``, the DICOM separator);
* ``{ contains = "X" }`` or ``{ contains = ["X", "Y"] }``: the list value (ImageType ...)
  has one of these items, case-insensitively;
* ``{ min = 1, max = 3 }``: a number in the closed range (either bound optional);
* ``{ absent = true }`` / ``{ absent = false }``: the keyword is missing or empty / present.

A rule either skips (``skip = "reason"``) or names a target: ``datatype``, ``suffix`` and
``entities``. An entity is a literal label or ``{ from = "SeriesDescription|ProtocolName",
regex = "task[-_]([a-z0-9]+)", choices = [...], default = "..." }``: the first capture group
found, optionally required to be one of ``choices`` (written as spelled there). If no value is
found and there is no ``default``, the rule does not match (``default = ""`` leaves the entity
out instead). Labels are reduced to letters and
digits and rejected when they look like an identifier (long digit runs, the patient's names or
IDs), so a heuristic cannot carry an identifier into a file name. ``datatype = "dicom"`` keeps
the series as de-identified (and burned-in-text redacted) DICOM under ``sourcedata/`` instead
of converting it. A file with ``extends = "default"`` tries its own rules first, then those of
that shipped heuristic.

Python plug-ins (``--heuristic my_rules.py``) define the contract::

    def infotodict(series: bidsdeid.records.Series) -> BidsTarget | str | None:
        '''Return where the series goes, a skip reason, or None for "no rule matched".'''

``series.header`` maps DICOM keywords of the first instance to plain values (str, int, float,
lists for multi-valued elements) plus ``NumberOfFiles``. Targets from plug-ins are validated
like those from rule files.

``assign_targets`` then handles one session at once: separate magnitude/phase series get
``part-mag``/``part-phase``, separate echoes of one acquisition ``echo-N`` (by EchoTime), and
repeated targets ``run-1``, ``run-2``... in acquisition order.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bidsdeid.deid.text import identifier_tokens
from bidsdeid.records import ENTITY_ORDER, BidsTarget, Series

NO_MATCH = "no heuristic rule matched"
UNSAFE_LABEL = "heuristic produced a label that is not a safe BIDS label"

# "dicom": no BIDS datatype; the series is kept as de-identified (and redacted) DICOM under
# sourcedata/ — for ultrasound, screen captures and other series dcm2niix cannot represent.
SOURCEDATA_DICOM = "dicom"
DATATYPES = frozenset({"anat", "func", "dwi", "fmap", "perf", SOURCEDATA_DICOM})
# Entities a heuristic may set: sub/ses come from the pseudonymisation, run from
# assign_targets, which sees the whole session.
HEURISTIC_ENTITIES = frozenset(ENTITY_ORDER) - {"sub", "ses", "run"}
_MAX_LABEL = 24
_LONG_DIGITS = re.compile(r"\d{5,}")  # MRNs, dates, accession numbers; not "b1000" or "mb4"
# Header values that identify the patient; a label containing one of their parts is refused.
_IDENTIFYING_FIELDS = (
    "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthDate",
    "AccessionNumber", "StudyID", "InstitutionName", "ReferringPhysicianName",
    "PerformingPhysicianName", "OperatorsName", "StationName", "DeviceSerialNumber",
)
_PHASE_IMAGE_TYPES = frozenset({"P", "PHASE"})
_PART_DATATYPES = frozenset({"anat", "func", "dwi"})

Classifier = Callable[[Series], "BidsTarget | str | None"]


class HeuristicError(ValueError):
    """A heuristic file or plug-in is invalid (message names the file and the problem)."""


@dataclass(frozen=True)
class Heuristic:
    """A named series -> BIDS target mapping, from a rule file or a Python plug-in."""

    name: str
    infotodict: Classifier = field(repr=False, compare=False)

    def classify(self, series: Series) -> BidsTarget | str:
        """The target of ``series``, or the reason to skip it."""
        result = self.infotodict(series)
        if result is None or result == "":
            return NO_MATCH
        if isinstance(result, str):
            return result
        if not isinstance(result, BidsTarget):
            raise HeuristicError(
                f"heuristic {self.name!r}: infotodict returned {type(result).__name__}, "
                "expected BidsTarget, str or None")
        _check_target(result, self.name)
        if not all(is_safe_label(value, series.header) for _, value in result.entities):
            return UNSAFE_LABEL
        return result


# ---------------------------------------------------------------------------------------------
# Loading


def shipped_heuristics_dir() -> Path:
    """Folder of the shipped rule files: inside the wheel, else the repository's heuristics/."""
    package = Path(__file__).resolve().parent
    installed = package / "_shipped" / "heuristics"
    return installed if installed.is_dir() else package.parent / "heuristics"


def shipped_heuristics() -> list[str]:
    """Names of the shipped rule files (``default`` ...)."""
    return sorted(path.stem for path in shipped_heuristics_dir().glob("*.toml"))


def load_heuristic(name_or_path: str) -> Heuristic:
    """Load a shipped heuristic by name, or a ``.toml`` rule file / ``.py`` plug-in by path."""
    path = Path(name_or_path)
    if path.suffix in (".toml", ".py"):
        if not path.is_file():
            raise HeuristicError(f"heuristic file not found: {path}")
    elif name_or_path in shipped_heuristics():
        path = shipped_heuristics_dir() / f"{name_or_path}.toml"
    else:
        raise HeuristicError(
            f"unknown heuristic {name_or_path!r}: give a .toml or .py file, or one of "
            f"{', '.join(shipped_heuristics()) or '(none shipped)'}")
    if path.suffix == ".py":
        return Heuristic(path.stem, _load_plugin(path))
    return Heuristic(path.stem, RuleSet.from_file(path))


def _load_plugin(path: Path) -> Classifier:
    spec = importlib.util.spec_from_file_location(f"bidsdeid_heuristic_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise HeuristicError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # a user's module may raise anything while importing
        raise HeuristicError(f"{path}: import failed: {type(error).__name__}: {error}") from error
    infotodict = getattr(module, "infotodict", None)
    if not callable(infotodict):
        raise HeuristicError(f"{path}: defines no function infotodict(series)")
    return infotodict


# ---------------------------------------------------------------------------------------------
# Rule files


@dataclass(frozen=True)
class Condition:
    """One test on one or more header keywords (any keyword may satisfy it)."""

    keywords: tuple[str, ...]
    pattern: re.Pattern[str] | None = None
    contains: frozenset[str] = frozenset()
    minimum: float | None = None
    maximum: float | None = None
    absent: bool | None = None

    def holds(self, header: Mapping[str, Any]) -> bool:
        return any(self._holds_for(header.get(keyword)) for keyword in self.keywords)

    def _holds_for(self, value: Any) -> bool:
        if self.absent is not None:
            return _is_empty(value) == self.absent
        if _is_empty(value):
            return False
        if self.pattern is not None:
            return self.pattern.search(_as_text(value)) is not None
        if self.contains:
            return any(str(item).strip().upper() in self.contains for item in _as_list(value))
        number = _as_number(value)
        return (number is not None
                and (self.minimum is None or number >= self.minimum)
                and (self.maximum is None or number <= self.maximum))


@dataclass(frozen=True)
class EntityTemplate:
    """An entity label taken from the header: first capture group of ``pattern``."""

    keywords: tuple[str, ...]
    pattern: re.Pattern[str]
    choices: tuple[str, ...] = ()
    default: str | None = None

    def label(self, header: Mapping[str, Any]) -> str | None:
        for keyword in self.keywords:
            value = header.get(keyword)
            if _is_empty(value):
                continue
            found = self.pattern.search(_as_text(value))
            if found is None:
                continue
            raw = next((group for group in found.groups() if group), found.group(0))
            label = self._choose(raw)
            if label is not None and is_safe_label(label, header):
                return label
        return self.default

    def _choose(self, raw: str) -> str | None:
        label = re.sub(r"[^A-Za-z0-9]", "", raw)
        if not self.choices:
            return label or None
        return next((choice for choice in self.choices if choice.lower() == label.lower()),
                    None)


@dataclass(frozen=True)
class Rule:
    name: str
    match: tuple[Condition, ...]
    unless: tuple[Condition, ...] = ()
    skip: str | None = None
    datatype: str = ""
    suffix: str = ""
    entities: tuple[tuple[str, str | EntityTemplate], ...] = ()

    def applies(self, header: Mapping[str, Any]) -> bool:
        return (all(c.holds(header) for c in self.match)
                and not any(c.holds(header) for c in self.unless))

    def decide(self, header: Mapping[str, Any]) -> BidsTarget | str | None:
        """Skip reason or target; None when a required entity cannot be filled."""
        if self.skip is not None:
            return self.skip
        labels = {}
        for key, value in self.entities:
            label = value if isinstance(value, str) else value.label(header)
            if label is None:
                return None
            labels[key] = label
        return BidsTarget(self.datatype, self.suffix).with_entities(**labels)


@dataclass(frozen=True)
class RuleSet:
    """An ordered rule list; calling it classifies a series (the plug-in contract)."""

    rules: tuple[Rule, ...]

    def __call__(self, series: Series) -> BidsTarget | str | None:
        for rule in self.rules:
            if rule.applies(series.header):
                decision = rule.decide(series.header)
                if decision is not None:
                    return decision
        return None

    @classmethod
    def from_file(cls, path: Path) -> RuleSet:
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise HeuristicError(f"{path}: not a readable TOML file: {error}") from error
        return cls.from_document(document, source=str(path))

    @classmethod
    def from_document(cls, document: Mapping[str, Any], source: str) -> RuleSet:
        """Rules of the document, then (``extends = "name"``) the rules of a shipped heuristic."""
        _refuse_unknown(document, {"description", "source", "rule", "extends"}, source)
        tables = document.get("rule")
        if not isinstance(tables, list) or not tables:
            raise HeuristicError(f"{source}: needs at least one [[rule]] table")
        rules = tuple(_parse_rule(table, f"{source}: rule {number}")
                      for number, table in enumerate(tables, start=1))
        parent = document.get("extends")
        if parent is None:
            return cls(rules)
        if parent not in shipped_heuristics() or Path(source).stem == parent:
            raise HeuristicError(f"{source}: extends {parent!r}, which is not another shipped "
                                 f"heuristic ({', '.join(shipped_heuristics())})")
        return cls(rules + cls.from_file(shipped_heuristics_dir() / f"{parent}.toml").rules)


def _parse_rule(table: Any, where: str) -> Rule:
    if not isinstance(table, dict):
        raise HeuristicError(f"{where}: must be a table")
    name = str(table.get("name", ""))
    where = f"{where} ({name})" if name else where
    _refuse_unknown(table, {"name", "match", "unless", "skip", "datatype", "suffix", "entities"},
                    where)
    match = _parse_conditions(table.get("match", {}), f"{where}: match")
    unless = _parse_conditions(table.get("unless", {}), f"{where}: unless")
    if "skip" in table:
        if {"datatype", "suffix", "entities"} & table.keys():
            raise HeuristicError(f"{where}: a rule either skips or names a target, not both")
        if not isinstance(table["skip"], str) or not table["skip"].strip():
            raise HeuristicError(f"{where}: skip must be a non-empty reason")
        return Rule(name, match, unless, skip=table["skip"])
    datatype, suffix = table.get("datatype"), table.get("suffix")
    if datatype not in DATATYPES:
        raise HeuristicError(f"{where}: datatype must be one of {sorted(DATATYPES)}")
    if not isinstance(suffix, str) or not suffix.isalnum():
        raise HeuristicError(f"{where}: suffix must be letters and digits")
    entities = table.get("entities", {})
    if not isinstance(entities, dict):
        raise HeuristicError(f"{where}: entities must be a table")
    parsed = tuple((key, _parse_entity(key, value, f"{where}: entity {key}"))
                   for key, value in entities.items())
    return Rule(name, match, unless, datatype=datatype, suffix=suffix, entities=parsed)


def _parse_conditions(table: Any, where: str) -> tuple[Condition, ...]:
    if not isinstance(table, dict):
        raise HeuristicError(f"{where}: must be a table of keyword = condition")
    return tuple(_parse_condition(key, value, f"{where}.{key}") for key, value in table.items())


def _parse_condition(key: str, value: Any, where: str) -> Condition:
    keywords = _keywords(key, where)
    if isinstance(value, str):
        return Condition(keywords, pattern=_regex(value, where))
    if not isinstance(value, dict) or not value:
        raise HeuristicError(f"{where}: expected a regex string or a table")
    _refuse_unknown(value, {"contains", "min", "max", "absent"}, where)
    if "absent" in value:
        if len(value) > 1 or not isinstance(value["absent"], bool):
            raise HeuristicError(f"{where}: absent takes true/false and nothing else")
        return Condition(keywords, absent=value["absent"])
    if "contains" in value:
        if {"min", "max"} & value.keys():
            raise HeuristicError(f"{where}: contains cannot be combined with min/max")
        items = value["contains"]
        items = [items] if isinstance(items, str) else items
        if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
            raise HeuristicError(f"{where}: contains takes a string or a list of strings")
        return Condition(keywords, contains=frozenset(i.strip().upper() for i in items))
    bounds = [value.get("min"), value.get("max")]
    if not all(b is None or (isinstance(b, int | float) and not isinstance(b, bool))
               for b in bounds):
        raise HeuristicError(f"{where}: min/max must be numbers")
    return Condition(keywords, minimum=bounds[0], maximum=bounds[1])


def _parse_entity(key: str, value: Any, where: str) -> str | EntityTemplate:
    if key not in HEURISTIC_ENTITIES:
        allowed = ", ".join(e for e in ENTITY_ORDER if e in HEURISTIC_ENTITIES)
        raise HeuristicError(f"{where}: not an entity a heuristic may set (allowed: {allowed})")
    if isinstance(value, str):
        if not value.isalnum() or not value.isascii():
            raise HeuristicError(f"{where}: label {value!r} must be letters and digits")
        return value
    if not isinstance(value, dict):
        raise HeuristicError(f"{where}: expected a label or a table with from/regex")
    _refuse_unknown(value, {"from", "regex", "choices", "default"}, where)
    if not isinstance(value.get("from"), str) or not isinstance(value.get("regex"), str):
        raise HeuristicError(f"{where}: needs from = \"Keyword\" and regex = \"...\"")
    choices = value.get("choices", [])
    if not isinstance(choices, list) or not all(
            isinstance(c, str) and c.isalnum() and c.isascii() for c in choices):
        raise HeuristicError(f"{where}: choices must be a list of letter/digit labels")
    default = value.get("default")
    if default is not None and not (isinstance(default, str) and default.isascii()
                                    and (default.isalnum() or default == "")):
        raise HeuristicError(f"{where}: default must be a letter/digit label, or \"\" to "
                             "leave the entity out")
    return EntityTemplate(_keywords(value["from"], where), _regex(value["regex"], where),
                          tuple(choices), default)


def _keywords(key: str, where: str) -> tuple[str, ...]:
    keywords = tuple(part.strip() for part in key.split("|"))
    if not all(k.isidentifier() for k in keywords):
        raise HeuristicError(f"{where}: {key!r} is not a header keyword (or keywords joined by |)")
    return keywords


def _regex(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as error:
        raise HeuristicError(f"{where}: invalid regular expression {pattern!r}: {error}") from error


def _refuse_unknown(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise HeuristicError(f"{where}: unknown key(s) {', '.join(unknown)} "
                             f"(allowed: {', '.join(sorted(allowed))})")


# ---------------------------------------------------------------------------------------------
# Header values and labels


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | tuple) and len(value) == 0)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):
        return value.split("\\")
    return [value]


def _as_text(value: Any) -> str:
    return "\\".join(str(item) for item in _as_list(value))


def _as_number(value: Any) -> float | None:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def is_safe_label(label: str, header: Mapping[str, Any]) -> bool:
    """Whether ``label`` may name a file: short, letters and digits, no identifier in it."""
    if not (label.isascii() and label.isalnum() and 0 < len(label) <= _MAX_LABEL):
        return False
    if _LONG_DIGITS.search(label):
        return False
    values = (_as_text(header[k]) for k in _IDENTIFYING_FIELDS if not _is_empty(header.get(k)))
    lowered = label.lower()
    return not any(token.lower() in lowered for token in identifier_tokens(values)
                   if token.isalnum())


def _check_target(target: BidsTarget, heuristic: str) -> None:
    if target.datatype not in DATATYPES:
        raise HeuristicError(f"heuristic {heuristic!r}: datatype {target.datatype!r} is not one "
                             f"of {sorted(DATATYPES)}")
    if not (target.suffix.isascii() and target.suffix.isalnum()):
        raise HeuristicError(f"heuristic {heuristic!r}: suffix {target.suffix!r} must be "
                             "letters and digits")
    for key, _ in target.entities:
        if key not in HEURISTIC_ENTITIES:
            raise HeuristicError(f"heuristic {heuristic!r}: entity {key!r} cannot be set by a "
                                 "heuristic")


# ---------------------------------------------------------------------------------------------
# Session-level naming: part, echo, run


def assign_targets(session_series: list[Series], heuristic: Heuristic) -> None:
    """Set ``target`` or ``skip_reason`` on every series of one session."""
    mapped: list[Series] = []
    for series in session_series:
        decision = heuristic.classify(series)
        if isinstance(decision, str):
            series.target, series.skip_reason = None, decision
        else:
            series.target, series.skip_reason = decision, None
            mapped.append(series)
    for group in _group_by_target(mapped).values():
        _add_part(group)
    for group in _group_by_target(mapped).values():
        _add_echo(group)
    for group in _group_by_target(mapped).values():
        _add_run(group)


def _group_by_target(series: list[Series]) -> dict[BidsTarget, list[Series]]:
    groups: dict[BidsTarget, list[Series]] = defaultdict(list)
    for item in sorted(series, key=lambda s: s.sort_key):
        assert item.target is not None
        groups[item.target].append(item)
    return groups


def _is_phase(series: Series) -> bool:
    """Whether the series holds phase images (ImageType value 3 is P or PHASE)."""
    return any(str(item).strip().upper() in _PHASE_IMAGE_TYPES
               for item in _as_list(series.header.get("ImageType", [])))


def _add_part(group: list[Series]) -> None:
    """Separate magnitude and phase series of one acquisition: part-mag / part-phase."""
    target = group[0].target
    assert target is not None
    if target.datatype not in _PART_DATATYPES or "part" in dict(target.entities):
        return
    n_phase = sum(_is_phase(s) for s in group)
    if n_phase in (0, len(group)):
        return
    for series in group:
        series.target = target.with_entities(part="phase" if _is_phase(series) else "mag")


def _add_echo(group: list[Series]) -> None:
    """Separate echo series of one acquisition: echo-N in EchoTime order.

    An acquisition is the series of one target sharing a SeriesDescription; field-map
    magnitudes (or phases) become magnitude1/magnitude2 instead, as BIDS names them.
    """
    target = group[0].target
    assert target is not None
    if "echo" in dict(target.entities):
        return
    acquisitions: dict[str, list[Series]] = defaultdict(list)
    for series in group:
        acquisitions[str(series.header.get("SeriesDescription", ""))].append(series)
    for members in acquisitions.values():
        echo_times = sorted({t for s in members
                             if (t := _as_number(s.header.get("EchoTime"))) is not None})
        if len(echo_times) < 2:
            continue
        for series in members:
            echo_time = _as_number(series.header.get("EchoTime"))
            if echo_time is None:
                continue
            number = echo_times.index(echo_time) + 1
            if target.datatype != "fmap":
                series.target = target.with_entities(echo=str(number))
            elif target.suffix in ("magnitude", "phase"):
                series.target = BidsTarget(target.datatype, f"{target.suffix}{number}",
                                           target.entities)


def _add_run(group: list[Series]) -> None:
    """A target that occurs more than once gets run-1, run-2 ... in acquisition order."""
    if len(group) < 2:
        return
    for number, series in enumerate(group, start=1):
        assert series.target is not None
        series.target = series.target.with_entities(run=str(number))
