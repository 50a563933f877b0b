"""Helpers for tests that look at whole folder trees: hashes and byte scans."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path


def tree_hashes(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (symlinks recorded by target, not followed)."""
    hashes = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            hashes[rel] = "link:" + str(path.readlink())
        elif path.is_file():
            hashes[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def file_texts(path: Path) -> Iterable[bytes]:
    data = path.read_bytes()
    yield data
    if path.name.endswith(".gz"):
        yield gzip.decompress(data)


def find_tokens(root: Path, tokens: Iterable[str]) -> list[str]:
    """Every (place, token) where a token occurs in a path or in file bytes (gz decompressed)."""
    tokens = [t for t in tokens if t]
    hits = []
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        for token in tokens:
            if token.lower() in rel.lower():
                hits.append(f"path {rel}: {token}")
        if not path.is_file():
            continue
        for blob in file_texts(path):
            lowered = blob.lower()
            for token in tokens:
                if token.lower().encode() in lowered:
                    hits.append(f"{rel}: {token}")
    return sorted(set(hits))


def run_cli(*args: str | Path, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "bidsdeid", *map(str, args)],
                          capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"bidsdeid {args} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def assert_bids_valid(root: Path) -> None:
    """Both BIDS validators report 0 errors (skips the test when a validator is missing)."""
    import pytest

    from bidsdeid.validate import run_bids_validator, run_bids_validator_deno

    for result in (run_bids_validator(root), run_bids_validator_deno(root)):
        if not result.ran:
            pytest.skip(f"{result.tool} not available: {result.messages}")
        assert result.errors == 0, f"{result.tool}: " + "\n".join(result.messages)
