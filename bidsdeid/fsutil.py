"""Atomic file writes: every output file appears whole or not at all."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
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


_SCRATCH_PREFIX = "bidsdeid-"
_SCRATCH_GRACE_SECONDS = 60  # a live run locks its folder right after creating it


@contextlib.contextmanager
def scratch_dir(parent: Path | None, keep: bool = False,
                grace_seconds: float = _SCRATCH_GRACE_SECONDS) -> Iterator[Path]:
    """A fresh ``bidsdeid-*`` work folder, locked while the run lives, removed at the end.

    It also removes the folders of killed runs beside it (unlocked and older than a minute):
    they may hold images that were not yet defaced or redacted.
    """
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=_SCRATCH_PREFIX, dir=parent))
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _remove_dead_scratch(root, grace_seconds)
        yield root
    finally:
        os.close(fd)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _remove_dead_scratch(own: Path, grace_seconds: float) -> None:
    now = time.time()
    for other in own.parent.glob(f"{_SCRATCH_PREFIX}*"):
        if other == own or not other.is_dir() or other.is_symlink():
            continue
        try:
            if now - other.stat().st_ctime < grace_seconds:
                continue
            fd = os.open(other, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live run holds it
        else:
            shutil.rmtree(other, ignore_errors=True)
        finally:
            os.close(fd)
