"""Fixtures: mini_library served by real envd processes (`agentworld serve`) behind a gateway on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentworld.bundle import Bundle, load_bundle
from agentworld.gateway import Gateway, ProcessSource, RunningGateway, serve_in_thread

ENV = "library_lending_1"


@pytest.fixture(scope="session")
def gw_bundle_dir(mini_library_bundle_dir: Path) -> Path:
    return mini_library_bundle_dir


@pytest.fixture(scope="session")
def gw_bundle(gw_bundle_dir: Path) -> Bundle:
    return load_bundle(gw_bundle_dir)


def start_pool_gateway(bundle_dir: Path, replicas: int = 2, respawn_backoff_s: tuple[float, ...] | None = None,
                       **gateway_options: object) -> tuple[RunningGateway, ProcessSource]:
    source = ProcessSource.for_bundles([bundle_dir], replicas, serve_args=["--verifier-workers", "1"])
    if respawn_backoff_s is not None:
        source.respawn_backoff_s = respawn_backoff_s
    gateway = Gateway(health_interval_s=0.5, **gateway_options)  # type: ignore[arg-type]
    return serve_in_thread(gateway, [source]), source


@pytest.fixture(scope="module")
def pool_gateway(gw_bundle_dir: Path) -> Iterator[tuple[RunningGateway, ProcessSource]]:
    """A gateway over two envd processes, shared by a module's tests (none of which kills a backend)."""
    running, source = start_pool_gateway(gw_bundle_dir)
    try:
        yield running, source
    finally:
        running.stop()
