"""Shared fixtures: the AWM mini_library scenario imported once, and a real envd serving it on loopback.

Area-specific fixtures live in each tests/<area>/conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
AWM_MINI_LIBRARY = REPO_ROOT.parent / "shared" / "awm" / "mini_library"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_infrastructure(what: str) -> None:
    """Skip locally, but fail under CI=true: CI must have installed `what` (tests/infra/install-*.sh)."""
    if IN_CI:
        pytest.fail(f"{what} is not available; CI must install it (make infra)")
    pytest.skip(f"{what} is not available here (run `make infra`)")


@pytest.fixture(scope="session")
def awm_mini_library() -> Path:
    assert AWM_MINI_LIBRARY.is_dir(), f"{AWM_MINI_LIBRARY} is missing (shared/ beside the checkout)"
    return AWM_MINI_LIBRARY


@pytest.fixture(scope="session")
def mini_library_bundle_dir(tmp_path_factory: pytest.TempPathFactory, awm_mini_library: Path) -> Path:
    from agentworld.bundle.awm_import import import_awm

    (bundle_dir,) = import_awm(awm_mini_library, tmp_path_factory.mktemp("mini-library"))
    return bundle_dir


@pytest.fixture(scope="session")
def envd(mini_library_bundle_dir: Path) -> Iterator:
    """A real envd (gRPC on 127.0.0.1, ephemeral port) serving mini_library for the whole test session."""
    from agentworld.bundle import load_bundle
    from agentworld.runtime import EnvRuntime, RuntimeConfig
    from agentworld.transport.grpc_server import serve_in_thread

    runtime = EnvRuntime([load_bundle(mini_library_bundle_dir)], RuntimeConfig(call_timeout_s=10.0))
    with serve_in_thread(runtime) as server:
        yield server


@pytest.fixture(scope="session")
def envd_address(envd) -> str:
    return envd.address
