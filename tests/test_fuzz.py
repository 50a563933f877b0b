"""Property-based fuzzing of the DICOM discovery/scrub path and of the sidecar sanitizer.

DICOM inputs are the seeds of ``tests/fuzz_corpus/`` with byte-level mutations (flips,
interesting length values, insertions, deletions, truncation). Bounded for CI: a fixed number of
examples, derandomized, no example database. ``BIDSDEID_FUZZ_EXAMPLES=5000
BIDSDEID_FUZZ_RANDOM=1 pytest tests/test_fuzz.py`` runs a longer, randomized session.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from pydicom.errors import BytesLengthException

from bidsdeid.deid.apply import DeidError, ScrubContext, scrub_file
from bidsdeid.deid.options import DeidOptions
from bidsdeid.discover import discover
from bidsdeid.sanitize import load_sidecar_policy, sanitize_sidecar

CORPUS = Path(__file__).parent / "fuzz_corpus"
SEEDS = {path.name: path.read_bytes() for path in sorted(CORPUS.glob("*.dcm"))}
PLANTED_NAME, PLANTED_ID = "Fuzzington^Felicity", "FZ004217"
PLANTED = ("Fuzzington", "Felicity", PLANTED_ID)
FUZZ = settings(
    max_examples=int(os.environ.get("BIDSDEID_FUZZ_EXAMPLES", "150")),
    derandomize=not os.environ.get("BIDSDEID_FUZZ_RANDOM"),
    database=None, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
CTX = ScrubContext(key=b"\x01" * 32, date_shift_days=-40000, participant_label="fuzz01",
                   identifiers=frozenset({PLANTED_NAME, PLANTED_ID}))

# Length values that break parsers: zero, odd, undefined, just past the end, 2 and 4 GB.
# Exceptions scrub_file lets escape today (deid/apply.py bug, see the xfail test below).
KNOWN_ESCAPES = (struct.error, NotImplementedError, BytesLengthException)
INTERESTING = [0, 1, 3, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFF0, 0x7FFFFFFF, 0x80000000, 2000]

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(0, 7)),
    st.tuples(st.just("length16"), st.integers(0, 1 << 16), st.sampled_from(INTERESTING)),
    st.tuples(st.just("length32"), st.integers(0, 1 << 16), st.sampled_from(INTERESTING)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 16)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16), st.just(0)),
)


def mutate(data: bytes, steps: list[tuple]) -> bytes:
    """Apply mutation steps; positions wrap around the current length."""
    buf = bytearray(data)
    for kind, where, arg in steps:
        at = where % max(len(buf), 1)
        if kind == "flip" and buf:
            buf[at] ^= 1 << arg
        elif kind == "length16":
            buf[at:at + 2] = struct.pack("<H", arg & 0xFFFF)
        elif kind == "length32":
            buf[at:at + 4] = struct.pack("<I", arg & 0xFFFFFFFF)
        elif kind == "insert":
            buf[at:at] = arg
        elif kind == "delete":
            del buf[at:at + arg]
        elif kind == "truncate":
            del buf[at:]
    return bytes(buf)


def _leak_is_checkable(data: bytes) -> bool:
    """True when pydicom still reads the planted PatientName from the mutated bytes and the
    known leak through unknown public byte elements (see the xfail test below) cannot occur."""
    try:
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), force=True)
        if str(ds.get("PatientName", "")) != PLANTED_NAME:
            return False
        return not any(not elem.tag.is_private and elem.VR in ("UN", "OB")
                       and elem.tag != 0x7FE00010 for elem in ds.iterall())
    except Exception:  # noqa: BLE001 - unreadable: nothing to compare
        return False


@FUZZ
@given(seed=st.sampled_from(sorted(SEEDS)), steps=st.lists(mutation, min_size=1, max_size=4))
def test_discovery_accounts_for_every_file_and_never_raises(seed, steps):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.dcm"
        path.write_bytes(mutate(SEEDS[seed], steps))
        found = discover(Path(tmp))
        placed = (sum(len(s.files) for s in found.series) + len(found.failures)
                  + len(found.skipped) + len(found.twix) + len(found.slides))
        assert found.n_files == 1 and placed == 1, "a file was lost or counted twice"
        for failure in found.failures:
            assert not any(p.lower() in failure.reason.lower() for p in PLANTED), failure.reason


@FUZZ
@given(seed=st.sampled_from(sorted(SEEDS)), steps=st.lists(mutation, min_size=1, max_size=4))
def test_scrub_raises_only_deid_error_and_never_leaks_the_name(seed, steps):
    data = mutate(SEEDS[seed], steps)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.dcm", Path(tmp) / "out.dcm"
        src.write_bytes(data)
        try:
            scrub_file(src, dst, CTX, DeidOptions())
        except DeidError as exc:
            assert not dst.exists(), "a refused file must not be written"
            assert not any(p.lower() in str(exc).lower() for p in PLANTED), str(exc)
            return
        except KNOWN_ESCAPES:
            reject()  # known bug, documented by test_malformed_file_meta_raises_deid_error
        if _leak_is_checkable(data):
            out = dst.read_bytes().lower()
            leaked = [p for p in PLANTED if p.lower().encode() in out]
            assert leaked == [], f"scrubbed file still holds {leaked}"


@pytest.mark.xfail(strict=True, reason=(
    "deid/apply.py _Scrubber._unlisted_action returns 'K' for a public attribute missing from "
    "the dictionary whose VR is UN or OB (an implicit VR file with an unknown or mis-coded tag, "
    "e.g. fuzz mutation ('length16', 175, 0) of implicit_bare.dcm turns (0008,1140) into "
    "(0000,1140)): its bytes, a nested PatientName included, are copied unscanned. Fix: for "
    "unknown public UN/OB elements use IdentifierSearch.blank_bytes as _keep_private does, or "
    "remove them (and drop group 0000 command elements outright)"), raises=AssertionError)
@pytest.mark.parametrize("vr", ["UN", "OB"])
def test_unknown_public_byte_element_loses_the_name(tmp_path, vr):
    ds = pydicom.dcmread(CORPUS / "explicit_le.dcm")
    ds.add_new(0x00089999, vr, f"{PLANTED_NAME} ".encode())
    ds.save_as(tmp_path / "in.dcm", enforce_file_format=True)
    scrub_file(tmp_path / "in.dcm", tmp_path / "out.dcm", CTX, DeidOptions())
    assert b"fuzzington" not in (tmp_path / "out.dcm").read_bytes().lower()


@pytest.mark.xfail(strict=True, reason=(
    "deid/apply.py _read catches (EOFError, OSError, ValueError, KeyError, TypeError, "
    "AttributeError, InvalidDicomError) but not struct.error (a file cut inside its file meta) "
    "nor NotImplementedError (an unknown VR) nor pydicom's BytesLengthException (a length that "
    "is not a whole number of values), all three found in the file meta: scrub_file "
    "breaks its 'raises DeidError' contract, the pipeline reports 'internal error' for the whole "
    "series, and for a DICOM slide pipeline._clean_raw_files lets it end the run. Fix: add "
    "struct.error, NotImplementedError and BytesLengthException to that except clause, or map "
    "any Exception to DeidError(type name)"), raises=KNOWN_ESCAPES)
@pytest.mark.parametrize(("seed", "steps"), [
    ("encapsulated.dcm", [("truncate", 152, 0)]),
    ("encapsulated.dcm", [("flip", 136, 0)]),
    ("explicit_le.dcm", [("flip", 137, 1)]),
], ids=["cut-in-file-meta", "unknown-vr-in-file-meta", "odd-length-in-file-meta"])
def test_malformed_file_meta_raises_deid_error(tmp_path, seed, steps):
    src = tmp_path / "in.dcm"
    src.write_bytes(mutate(SEEDS[seed], steps))
    with pytest.raises(DeidError):
        scrub_file(src, tmp_path / "out.dcm", CTX, DeidOptions())


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_every_seed_is_discovered_and_scrubbed_clean(seed, tmp_path):
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / seed
    src.write_bytes(SEEDS[seed])
    assert [len(s.files) for s in discover(tmp_path / "in").series] == [1]
    scrub_file(src, tmp_path / "out.dcm", CTX, DeidOptions())
    out = (tmp_path / "out.dcm").read_bytes().lower()
    assert [p for p in PLANTED if p.lower().encode() in out] == []


# --- sidecar sanitizer --------------------------------------------------------------------------

POLICY = load_sidecar_policy()
SIDECAR_SEED = json.loads((CORPUS / "sidecar.json").read_text())
POLICY_KEYS = sorted(k for k in POLICY.fields if "*" not in k)
WILDCARD_KEYS = [k.replace("*", "[3]") if "[*]" not in k else k.replace("[*]", "[12]")
                 for k in POLICY.fields if "*" in k]
# Identifiers are whole words: a separator (not a letter or digit) on each side, as the text
# cleaner requires to tell a name from a longer word.
SEPARATORS = st.sampled_from([" ", "_", "^", "-", "/", ":", "(", ")", ",", "\t", ""])
identifier = st.sampled_from([PLANTED_NAME, *PLANTED, PLANTED_NAME.replace("^", " ")])
word = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


@st.composite
def text_with_identifier(draw) -> str:
    before, after = draw(word), draw(word)
    left = draw(SEPARATORS) if before and before[-1].isalnum() else ""
    right = draw(SEPARATORS) if after and after[0].isalnum() else ""
    left = left or (" " if before and before[-1].isalnum() else "")
    right = right or (" " if after and after[0].isalnum() else "")
    return f"{before}{left}{draw(identifier)}{right}{after}"


leaf = st.one_of(text_with_identifier(), word, st.integers(), st.floats(allow_nan=False),
                 st.booleans(), st.none())
json_value = st.recursive(leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(word, inner, max_size=3)), max_leaves=8)
sidecar_key = st.one_of(st.sampled_from(POLICY_KEYS), st.sampled_from(WILDCARD_KEYS),
                        st.sampled_from(sorted(SIDECAR_SEED)), word)


@FUZZ
@given(extra=st.dictionaries(sidecar_key, json_value, max_size=12))
def test_sanitized_sidecar_holds_no_identifier(extra):
    sidecar = SIDECAR_SEED | extra
    clean, stats = sanitize_sidecar(sidecar, POLICY, DeidOptions(), -40000,
                                    [PLANTED_NAME, PLANTED_ID])
    text = json.dumps(clean, ensure_ascii=False).lower()
    leaked = [p for p in PLANTED if p.lower() in text]
    assert leaked == [], f"sanitized sidecar still holds {leaked}: {text[:400]}"
    assert set(clean) <= set(sidecar), "the sanitizer may only remove or rewrite keys"
    assert not any(p.lower() in key.lower() for key in stats.fields for p in PLANTED)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "sanitize.SidecarPolicy.action_for lets '*' in a policy key (FWF_DVS*, "
    "sWipMemBlockAdFree*) match any characters, and sanitize_sidecar copies a matched key's "
    "name unchecked into the sidecar and into the stats that the audit writes: a key such as "
    "'FWF_DVS Fuzzington' survives. Fix: let '*' match only digits, brackets, dots and "
    "underscores (what dcm2niix writes there), or drop keys for which _reportable(name) "
    "differs from name"))
def test_wildcard_key_with_an_identifier_is_dropped():
    sidecar = {"FWF_DVS Fuzzington": 1, "sWipMemBlockAdFree[Fuzzington^Felicity]": 2.0}
    clean, stats = sanitize_sidecar(sidecar, POLICY, DeidOptions(), -40000, [PLANTED_NAME])
    text = json.dumps([clean, dict(stats.fields)]).lower()
    assert "fuzzington" not in text, text
