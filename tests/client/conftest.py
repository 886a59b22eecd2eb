"""Client fixtures on top of the shared ones (tests/conftest.py: mini_library imported, a real envd serving it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentworld.bundle import Bundle, load_bundle


@pytest.fixture(scope="session")
def mini_bundle(mini_library_bundle_dir: Path) -> Bundle:
    return load_bundle(mini_library_bundle_dir)


@pytest.fixture(scope="session")
def client_envd(envd_address: str) -> str:
    """Address of the shared envd serving mini_library."""
    return envd_address


def start_envd(bundle: Bundle, port: int = 0, **config: object):  # -> RunningServer
    """An extra envd on its own thread (custom limits, a fixed port)."""
    from agentworld.runtime import EnvRuntime, RuntimeConfig
    from agentworld.transport.grpc_server import serve_in_thread

    return serve_in_thread(EnvRuntime([bundle], RuntimeConfig(**config)), port=port)  # type: ignore[arg-type]
