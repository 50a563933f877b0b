"""Atomic file writes: every output file appears whole or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def _temp_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = _temp_beside(path)
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def atomic_copy(src: Path, dst: Path, mode: int = 0o644) -> None:
    """Copy ``src`` to ``dst`` through a temp name in the destination folder."""
    tmp = _temp_beside(dst)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temps(root: Path, pattern: str = ".*.tmp") -> int:
    """Delete temp-file leftovers of an interrupted run under ``root``; returns how many.

    Only call it on folders no other live job writes into (a subject's own folders).
    """
    count = 0
    if root.exists():
        for tmp in root.rglob(pattern):
            tmp.unlink(missing_ok=True)
            count += 1
    return count
