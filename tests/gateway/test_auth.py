"""Bearer tokens on the gRPC edges: envd and the gateway refuse calls without a listed token (health checks
exempt), the gateway presents its token to its backends, and a rotated token file takes effect without a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from agentworld.auth import TokenFile
from agentworld.bundle import Bundle
from agentworld.client import EnvClient, UnauthenticatedError
from agentworld.gateway import Gateway, ProcessSource, serve_in_thread
from agentworld.runtime import EnvRuntime, RuntimeConfig
from agentworld.transport.grpc_server import serve_in_thread as envd_in_thread
from tests.waiting import wait_until

from .conftest import ENV
from .processes import health


def _token_file(tmp_path: Path, *tokens: str) -> Path:
    path = tmp_path / "tokens"
    path.write_text("# rotated by hand\n" + "\n".join(tokens) + "\n")
    return path


def _refused(address: str, token: str | None) -> bool:
    with EnvClient(address, token=token, retry_backoff=()) as client:
        try:
            client.list_envs()
        except UnauthenticatedError:
            return True
    return False


def test_envd_requires_a_listed_token_and_follows_rotation(gw_bundle: Bundle, tmp_path: Path) -> None:
    path = _token_file(tmp_path, "old-token")
    envd = envd_in_thread(EnvRuntime([gw_bundle], RuntimeConfig()), tokens=TokenFile(path, recheck_s=0.05))
    try:
        with EnvClient(envd.address, retry_backoff=()) as anonymous, pytest.raises(UnauthenticatedError,
                                                                                     match="no bearer token"):
            anonymous.create_session(ENV)
        with EnvClient(envd.address, token="wrong", retry_backoff=()) as wrong, pytest.raises(
                UnauthenticatedError, match="not accepted"):
            wrong.list_envs()
        assert health(envd.address) == health_pb2.HealthCheckResponse.SERVING  # probes need no token
        with EnvClient(envd.address, token=TokenFile(path)) as client, client.create_session(ENV) as session:
            assert session.call_tool("list_branches").json()

        path.write_text("old-token\nnew-token\n")  # overlap: both work while clients move
        wait_until(lambda: not _refused(envd.address, "new-token"), "the new token to be accepted")
        assert not _refused(envd.address, "old-token")
        path.write_text("new-token\n")
        wait_until(lambda: _refused(envd.address, "old-token"), "the old token to be refused")
        assert not _refused(envd.address, "new-token")
    finally:
        envd.stop()


def test_gateway_and_its_pool_share_one_token(gw_bundle_dir: Path, tmp_path: Path) -> None:
    path = _token_file(tmp_path, "cluster-secret")
    source = ProcessSource.for_bundles([gw_bundle_dir], 1, serve_args=["--verifier-workers", "1"], token_file=path)
    running = serve_in_thread(Gateway(tokens=TokenFile(path)), [source])
    try:
        assert _refused(running.address, None) and _refused(running.address, "guess")
        (replica,) = source.pool.members
        assert _refused(replica.address, None)  # the backend itself wants the token too
        with EnvClient(running.address, token="cluster-secret") as client:
            with client.create_session(ENV, "task_1") as session:
                assert not session.call_tool("list_my_loans", {"status": "active"}).is_error
                assert session.verify().reward in (0.0, 1.0)
            assert client.get_stats().backends == 1
    finally:
        running.stop()


def test_a_token_file_without_tokens_is_refused_at_start(tmp_path: Path) -> None:
    from agentworld.auth import TokenError

    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n")
    with pytest.raises(TokenError, match="holds no token"):
        TokenFile(empty)
    with pytest.raises(TokenError, match="cannot read"):
        TokenFile(tmp_path / "missing")
