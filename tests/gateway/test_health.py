"""Health that tells the truth: NOT_SERVING with no live backend, draining reported, a dead pool envd restarted."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from agentworld.bundle import Bundle
from agentworld.client import EnvClient, NotFoundError, UnavailableError
from agentworld.gateway import Gateway, StaticSource, serve_in_thread
from agentworld.runtime import EnvRuntime, RuntimeConfig
from agentworld.transport.grpc_server import serve_in_thread as envd_in_thread
from tests.waiting import wait_until

from .conftest import ENV, start_pool_gateway
from .processes import health

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def test_no_live_backend_means_not_serving_and_unavailable(gw_bundle: Bundle) -> None:
    runtime = EnvRuntime([gw_bundle], RuntimeConfig(node_id="only"))
    envd = envd_in_thread(runtime)
    port = envd.port
    running = serve_in_thread(Gateway(health_interval_s=0.2), [StaticSource([envd.address], retry_s=0.2)])
    try:
        assert health(running.address) == SERVING
        envd.stop()
        wait_until(lambda: health(running.address) == NOT_SERVING, "the gateway to say NOT_SERVING")
        with EnvClient(running.address, retry_backoff=()) as client:
            with pytest.raises(UnavailableError, match="no live backend"):
                client.create_session(ENV)
            assert client.get_stats().backends == 0
            envd = envd_in_thread(EnvRuntime([gw_bundle], RuntimeConfig(node_id="only")), port=port)
            wait_until(lambda: health(running.address) == SERVING, "the gateway to serve again")
            client.create_session(ENV).close()
    finally:
        running.stop()
        envd.stop()


def test_draining_is_reported(gw_bundle: Bundle) -> None:
    envd = envd_in_thread(EnvRuntime([gw_bundle]))
    running = serve_in_thread(Gateway(), [StaticSource([envd.address])])
    try:
        with EnvClient(running.address) as client:
            assert client.get_stats().draining is False
            running.gateway.set_draining(envd.address)  # type: ignore[union-attr]
            assert client.get_stats().draining is True  # every backend drains: no new sessions anywhere
    finally:
        running.stop()
        envd.stop()


def test_the_local_pool_restarts_a_dead_envd(gw_bundle_dir: Path) -> None:
    running, source = start_pool_gateway(gw_bundle_dir, replicas=1, respawn_backoff_s=(0.2, 0.4))
    try:
        with EnvClient(running.address) as client:
            old = client.create_session(ENV)
            (first,) = source.pool.members
            os.kill(first.pid, signal.SIGKILL)
            wait_until(lambda: source.respawns == 1 and client.get_stats().backends == 1, "envd-0 to be restarted")
            (second,) = source.pool.members
            assert second.pid != first.pid
            with pytest.raises(NotFoundError, match="created before backend envd-0 restarted"):
                old.state_hash()
            with client.create_session(ENV, "task_1") as fresh:
                assert fresh.session_id.endswith("@envd-0")
                assert not fresh.call_tool("list_my_loans", {"status": "active"}).is_error
    finally:
        running.stop()
