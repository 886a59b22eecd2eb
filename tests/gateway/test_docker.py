"""`DockerSource`: the gateway over hardened envd containers from agentworld.images (real Docker engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentworld.client import EnvClient, UnavailableError
from agentworld.gateway import DockerSource, Gateway, serve_in_thread

from ..conftest import missing_infrastructure
from .conftest import ENV


def test_gateway_over_docker_containers(gw_bundle_dir: Path) -> None:
    try:
        from agentworld.images.build import docker_client

        engine = docker_client(timeout=30)
    except Exception as exc:  # DockerUnavailable, or the images area missing
        missing_infrastructure(f"a Docker engine ({exc})")
    source = DockerSource([gw_bundle_dir.parent], replicas=2)
    running = serve_in_thread(Gateway(health_interval_s=0.5), [source], timeout_s=600)
    try:
        registry = running.gateway.registry
        assert len(registry.live()) == 2
        with EnvClient(running.address) as client:
            with client.create_group(ENV, "task_1", 8) as group:
                assert len({s.state_hash() for s in group}) == 1
                group[0].call_tool("renew_loan", {"loan_id": 1})
                assert group[0].verify().outcome == "complete"
            a, b = client.create_session(ENV), client.create_session(ENV)
            home = registry.route(a.session_id)
            assert registry.route(b.session_id) is not home
            victim = next(c for c in source.docker.backends if c.address == home.address)
            engine.containers.get(victim.container_id).kill()
            with pytest.raises(UnavailableError, match=a.session_id):
                a.call_tool("list_branches")
            assert not b.call_tool("list_branches").is_error
            b.close()
    finally:
        running.stop()
    left = engine.containers.list(all=True, filters={"label": f"dev.agentworld.backend={source.docker.id}"})
    assert not left, "containers left behind after the gateway stopped"
