"""Atomic writes and scratch folders."""

from __future__ import annotations

import fcntl
import os

from bidsdeid.fsutil import atomic_write_text, scratch_dir


def test_atomic_write_leaves_no_temp_file(tmp_path):
    atomic_write_text(tmp_path / "a.json", "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_scratch_dir_is_removed_after_the_run(tmp_path):
    with scratch_dir(tmp_path) as work:
        (work / "x").write_text("data")
    assert not work.exists()


def test_scratch_dir_is_kept_on_request(tmp_path):
    with scratch_dir(tmp_path, keep=True) as work:
        pass
    assert work.exists()


def test_folders_of_killed_runs_are_removed_but_live_ones_kept(tmp_path):
    dead = tmp_path / "bidsdeid-dead"
    (dead / "series-001").mkdir(parents=True)
    live = tmp_path / "bidsdeid-live"
    live.mkdir()
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with scratch_dir(tmp_path, grace_seconds=0):
            assert not dead.exists(), "an unlocked folder of a killed run must go"
            assert live.exists(), "a folder another run holds must stay"
    finally:
        os.close(fd)
