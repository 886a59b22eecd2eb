"""The gateway over real envd processes: placement, routing, groups, draining, direct mode, ListEnvs/GetStats."""

from __future__ import annotations

from collections import Counter

import pytest

from agentworld.bundle import Bundle
from agentworld.client import (
    EnvClient,
    EnvNotFound,
    FailedPreconditionError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from agentworld.gateway import Gateway, ProcessSource, RunningGateway, StaticSource, serve_in_thread
from tests.waiting import wait_until

from .conftest import ENV


@pytest.fixture
def client(pool_gateway: tuple[RunningGateway, ProcessSource]):
    with EnvClient(pool_gateway[0].address) as c:
        yield c


def _backend_of(running: RunningGateway, session_id: str) -> str:
    return running.gateway.registry.route(session_id).address


def test_reference_episodes_end_to_end(client: EnvClient, gw_bundle: Bundle) -> None:
    for task in gw_bundle.tasks:
        with client.create_session(ENV, task.id) as session:
            assert {t["name"] for t in session.tools} >= {c.tool for c in task.solution}
            for call in task.solution:
                result = session.call_tool(call.tool, call.arguments)
                assert not result.is_error, (task.id, result.content)
            verdict = session.verify(final_answer=task.expected_answer)
            assert verdict.outcome == "complete" and verdict.reward == 1.0, (task.id, verdict)
            assert session.reset() == session.initial_state_hash


def test_sessions_spread_over_backends(client: EnvClient, pool_gateway: tuple[RunningGateway, ProcessSource]) -> None:
    running, source = pool_gateway
    sessions = [client.create_session(ENV) for _ in range(8)]
    try:
        placed = Counter(_backend_of(running, s.session_id) for s in sessions)
        assert set(placed) == {r.address for r in source.pool.members}
        assert sorted(placed.values()) == [4, 4]  # least loaded first
    finally:
        for s in sessions:
            s.close()
    # Closes may bypass the gateway's own books (the router sends them straight on): the backends' reports settle it.
    wait_until(lambda: all(b.load == 0 for b in running.gateway.registry.live()), "the closes in the load figures")


def test_group_of_8_identical_start_on_one_backend(
    client: EnvClient, pool_gateway: tuple[RunningGateway, ProcessSource]
) -> None:
    running, _ = pool_gateway
    with client.create_group(ENV, "task_1", 8) as group:
        assert len(group) == 8 and len({s.session_id for s in group}) == 8
        hashes = {s.state_hash() for s in group}
        assert len(hashes) == 1
        assert len({_backend_of(running, s.session_id) for s in group}) == 1  # forks live with their state
        group[3].call_tool("renew_loan", {"loan_id": 1})
        assert group[3].verify().outcome == "complete"
        assert {s.state_hash() for i, s in enumerate(group) if i != 3} == hashes


def test_snapshot_restore_fork_through_gateway(client: EnvClient) -> None:
    with client.create_session(ENV, "task_2") as session:
        snap = session.snapshot(export=True)
        session.call_tool("return_loan", {"loan_id": 2})
        changed = session.state_hash()
        (kid,) = session.fork(1)
        with kid:
            assert kid.state_hash() == changed
        assert session.restore(snap) == snap.state_hash
        assert session.restore(snap.data) == snap.state_hash  # type: ignore[arg-type]


def test_listenvs_union_and_stats(client: EnvClient, pool_gateway: tuple[RunningGateway, ProcessSource]) -> None:
    envs = client.list_envs()
    assert [e.env_id for e in envs] == [ENV] and len(envs[0].tasks) == 10
    with client.create_session(ENV), client.create_session(ENV):
        # Earlier tests' closes and forks settle in the figures with the backends' next reports.
        stats = wait_until(lambda: (s := client.get_stats()).active_sessions == 2 and s, "2 active sessions")
        assert stats.env_ids == [ENV] and stats.backends == 2
        assert stats.max_sessions == 2 * 4096 and not stats.draining


def test_errors_pass_through(client: EnvClient) -> None:
    with pytest.raises(EnvNotFound, match="no_such_env"):
        client.create_session("no_such_env")
    with pytest.raises(NotFoundError, match="unknown session"):
        client.session("s-never-made").call_tool("list_branches")
    with client.create_session(ENV) as session, pytest.raises(NotFoundError, match="no_such_tool"):
        session.call_tool("no_such_tool", {})


def test_malformed_request_is_invalid_argument(pool_gateway: tuple[RunningGateway, ProcessSource]) -> None:
    import grpc

    with grpc.insecure_channel(pool_gateway[0].address) as channel:
        call = channel.unary_unary("/agentworld.v1.EnvService/CallTool")
        with pytest.raises(grpc.RpcError) as info:
            call(b"\xff\xff\xff", timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_draining_backend_gets_no_new_sessions(
    client: EnvClient, pool_gateway: tuple[RunningGateway, ProcessSource]
) -> None:
    running, source = pool_gateway
    drained, other = (r.address for r in source.pool.members)
    old = client.create_session(ENV)
    while _backend_of(running, old.session_id) != drained:  # get one session onto the backend we drain
        old.close()
        old = client.create_session(ENV)
    running.call(lambda: running.gateway.set_draining(drained, True))
    try:
        fresh = [client.create_session(ENV) for _ in range(6)]
        assert {_backend_of(running, s.session_id) for s in fresh} == {other}
        assert not old.call_tool("list_branches").is_error  # existing sessions keep working
        running.call(lambda: running.gateway.set_draining(other, True))
        with pytest.raises(UnavailableError, match="draining"):
            client.create_session(ENV)
        for s in fresh:
            s.close()
    finally:
        running.call(lambda: running.gateway.set_draining(drained, False))
        running.call(lambda: running.gateway.set_draining(other, False))
        old.close()


def test_direct_mode_hands_out_backend_address(pool_gateway: tuple[RunningGateway, ProcessSource]) -> None:
    _, source = pool_gateway
    addresses = [r.address for r in source.pool.members]
    direct = serve_in_thread(Gateway(direct=True), [StaticSource(addresses)])
    try:
        with EnvClient(direct.address, direct=True) as c, c.create_session(ENV, "task_1") as session:
            assert session.info.backend_address in addresses
            assert session._address == session.info.backend_address  # calls skip the gateway
            session.call_tool("renew_loan", {"loan_id": 1})
            assert session.verify().outcome == "complete"
            (kid,) = session.fork(1)
            assert kid.info.backend_address == session.info.backend_address
            kid.close()
    finally:
        direct.stop()


def test_full_backends_spill_over_then_resource_exhausted(gw_bundle: Bundle) -> None:
    """In-process envds with 2 sessions each: placement skips full backends; when all are full, RESOURCE_EXHAUSTED."""
    from agentworld.runtime import EnvRuntime, RuntimeConfig
    from agentworld.transport.grpc_server import serve_in_thread as envd_in_thread

    envds = [envd_in_thread(EnvRuntime([gw_bundle], RuntimeConfig(max_sessions=2))) for _ in range(2)]
    running = serve_in_thread(Gateway(), [StaticSource([e.address for e in envds])])
    try:
        with EnvClient(running.address) as client:
            sessions = [client.create_session(ENV) for _ in range(4)]
            assert Counter(_backend_of(running, s.session_id) for s in sessions) == {e.address: 2 for e in envds}
            with pytest.raises(ResourceExhaustedError, match="session limit of 2 reached"):
                client.create_session(ENV)
            sessions.pop().close()
            sessions.append(client.create_session(ENV))  # room again
            for s in sessions:
                s.close()
    finally:
        running.stop()
        for e in envds:
            e.stop()


def test_expired_session_leaves_the_gateway(gw_bundle: Bundle) -> None:
    """Nothing about a session outlives it in the gateway: calls get the backend's answer naming it, and the
    backend's load report (what placement uses) drops it."""
    from agentworld.runtime import EnvRuntime, RuntimeConfig
    from agentworld.transport.grpc_server import serve_in_thread as envd_in_thread
    from tests.waiting import wait_until

    envd = envd_in_thread(EnvRuntime([gw_bundle], RuntimeConfig(idle_ttl_s=0.3)))
    running = serve_in_thread(Gateway(health_interval_s=0.2), [StaticSource([envd.address])])
    try:
        with EnvClient(running.address, lease=False) as client:  # idle TTL: for sessions no lease keeps alive
            session = client.create_session(ENV)
            assert client.get_stats().active_sessions == 1
            wait_until(lambda: client.get_stats().active_sessions == 0, "the expired session to leave the figures")
            with pytest.raises((NotFoundError, FailedPreconditionError), match=session.session_id):
                session.state_hash()
    finally:
        running.stop()
        envd.stop()


def test_a_lease_is_renewed_on_every_backend_through_the_gateway(gw_bundle: Bundle) -> None:
    """KeepAlive through a gateway reaches each backend holding the client's sessions; when the client goes,
    every backend closes them."""
    from agentworld.runtime import EnvRuntime, RuntimeConfig
    from agentworld.transport.grpc_server import serve_in_thread as envd_in_thread
    from tests.waiting import holds_for, wait_until

    envds = [envd_in_thread(EnvRuntime([gw_bundle], RuntimeConfig(lease_ttl_s=1.0))) for _ in range(2)]
    running = serve_in_thread(Gateway(), [StaticSource([e.address for e in envds])])
    try:
        with EnvClient(running.address) as observer:
            client = EnvClient(running.address)
            sessions = [client.create_session(ENV) for _ in range(6)]
            assert {_backend_of(running, s.session_id) for s in sessions} == {e.address for e in envds}
            holds_for(lambda: observer.get_stats().active_sessions == 6, "the client's 6 sessions", window_s=2.5)
            client._stop.set()  # the client stops renewing, as a dead one would
            wait_until(lambda: observer.get_stats().sessions_expired == 6, "both backends to reap the sessions")
            client.close()
    finally:
        running.stop()
        for e in envds:
            e.stop()
