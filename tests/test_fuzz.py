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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    """True when pydicom still reads the planted PatientName from the mutated bytes."""
    try:
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), force=True)
        return str(ds.get("PatientName", "")) == PLANTED_NAME
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
        if _leak_is_checkable(data):
            out = dst.read_bytes().lower()
            leaked = [p for p in PLANTED if p.lower().encode() in out]
            assert leaked == [], f"scrubbed file still holds {leaked}"


@pytest.mark.parametrize("vr", ["UN", "OB"])
def test_unknown_public_byte_element_loses_the_name(tmp_path, vr):
    ds = pydicom.dcmread(CORPUS / "explicit_le.dcm")
    ds.add_new(0x00089999, vr, f"{PLANTED_NAME} ".encode())
    ds.save_as(tmp_path / "in.dcm", enforce_file_format=True)
    scrub_file(tmp_path / "in.dcm", tmp_path / "out.dcm", CTX, DeidOptions())
    assert b"fuzzington" not in (tmp_path / "out.dcm").read_bytes().lower()


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


def test_wildcard_key_with_an_identifier_is_dropped():
    sidecar = {"FWF_DVS Fuzzington": 1, "sWipMemBlockAdFree[Fuzzington^Felicity]": 2.0}
    clean, stats = sanitize_sidecar(sidecar, POLICY, DeidOptions(), -40000, [PLANTED_NAME])
    text = json.dumps([clean, dict(stats.fields)]).lower()
    assert "fuzzington" not in text, text
