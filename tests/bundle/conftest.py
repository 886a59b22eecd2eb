"""Fixtures for bundle tests: the shared mini_library scenario in AWM format, imported once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

MINI_LIBRARY = Path(__file__).parents[2].parent / "shared/awm/mini_library"


@pytest.fixture(scope="session")
def mini_library() -> Path:
    assert MINI_LIBRARY.is_dir(), f"{MINI_LIBRARY} is missing (the shared AWM sample beside the repo root)"
    return MINI_LIBRARY


@pytest.fixture
def awm_copy(tmp_path: Path, mini_library: Path) -> Path:
    """A writable copy of mini_library, for tests that corrupt or trim the input."""
    dest = tmp_path / "awm_in"
    shutil.copytree(mini_library, dest)
    return dest


@pytest.fixture(scope="session")
def imported(tmp_path_factory: pytest.TempPathFactory, mini_library: Path):
    """mini_library imported once: (ImportResult, output directory)."""
    from agentworld.bundle.awm_import import import_awm

    out = tmp_path_factory.mktemp("imported")
    return import_awm(mini_library, out), out
