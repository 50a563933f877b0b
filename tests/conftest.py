"""Shared fixtures: paths to the optional ../shared data and tool availability."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def pytest_configure(config):
    """Under pytest-xdist, share the CPUs between the workers: torch's default of one thread
    per CPU in every worker oversubscribes them, and the small tensor operations of the
    registration tests then run several times slower."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        from bidsdeid.pipeline import cpu_share

        torch.set_num_threads(cpu_share(workers))


def shared_path(*parts: str) -> Path:
    """Path into ../shared/data, skipping the test with a reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def require_tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed")
    return found
