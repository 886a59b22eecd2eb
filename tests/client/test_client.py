"""EnvClient and AsyncEnvClient against a real envd on loopback: the surface trainers code against."""

from __future__ import annotations

import socket
import threading
import time

import grpc
import pytest

from agentworld.bundle import Bundle
from agentworld.client import (
    AsyncEnvClient,
    ClientClosedError,
    EnvClient,
    EnvClientError,
    EnvInfo,
    EnvNotFound,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    Snapshot,
    ToolResult,
    UnavailableError,
    Verdict,
)
from agentworld.client.errors import FailedPreconditionError

from .conftest import start_envd

ENV = "library_lending_1"


@pytest.fixture
def client(client_envd: str):
    with EnvClient(client_envd) as c:
        yield c


def test_list_envs_returns_dataclasses(client: EnvClient, mini_bundle: Bundle) -> None:
    envs = client.list_envs()
    assert [e.env_id for e in envs] == [ENV]
    env = envs[0]
    assert isinstance(env, EnvInfo)
    assert {t.task_id for t in env.tasks} == {t.id for t in mini_bundle.tasks}
    assert env.tool_count == 21 and env.table_count > 0
    assert {t.kind for t in env.tasks} == {"query", "mutation"}


def test_tools_are_dicts_with_schemas_and_cached(client: EnvClient) -> None:
    with client.create_session(ENV) as session:
        tools = session.tools
        assert session.tools is tools  # fetched once
        by_name = {t["name"]: t for t in tools}
        assert set(tools[0]) == {"name", "description", "input_schema"}
        schema = by_name["renew_loan"]["input_schema"]
        assert schema["type"] == "object" and "loan_id" in schema["properties"]


def test_every_reference_solution_verifies_complete(client: EnvClient, mini_bundle: Bundle) -> None:
    for task in mini_bundle.tasks:
        with client.create_session(ENV, task.id) as session:
            assert session.task_id == task.id and session.env_id == ENV
            for call in task.solution:
                result = session.call_tool(call.tool, call.arguments)
                assert isinstance(result, ToolResult) and not result.is_error, (task.id, call, result.content)
                result.json()  # tools answer JSON
            verdict = session.verify(final_answer=task.expected_answer)
            assert isinstance(verdict, Verdict)
            assert verdict.outcome == "complete" and verdict.complete and verdict.reward == 1.0, (task.id, verdict)


def test_untouched_mutation_task_is_not_complete(client: EnvClient, mini_bundle: Bundle) -> None:
    task = next(t for t in mini_bundle.tasks if t.kind == "mutation")
    with client.create_session(ENV) as session:
        verdict = session.verify(task.id)  # explicit task id (the session has none)
        assert verdict.outcome == "others" and verdict.reward == 0.0
        assert isinstance(verdict.details, dict)


def test_reset_snapshot_restore_fork_reproduce_hashes(client: EnvClient, mini_bundle: Bundle) -> None:
    task = next(t for t in mini_bundle.tasks if t.kind == "mutation")
    with client.create_session(ENV, task.id) as session:
        initial = session.state_hash()
        assert initial == session.initial_state_hash
        snap0 = session.snapshot(export=True)
        assert isinstance(snap0, Snapshot) and snap0.state_hash == initial and snap0.data
        for call in task.solution:
            session.call_tool(call.tool, call.arguments)
        after = session.state_hash()
        assert after != initial
        snap1 = session.snapshot()
        assert snap1.data is None and snap1.state_hash == after

        kids = session.fork(3)
        try:
            assert len({k.session_id for k in kids} | {session.session_id}) == 4
            assert {k.state_hash() for k in kids} == {after}
        finally:
            for k in kids:
                k.close()

        assert session.reset() == initial
        assert session.restore(snap1) == after  # a Snapshot, by id
        assert session.restore(snap0.data) == initial  # exported bytes  # type: ignore[arg-type]
        assert session.restore(snap1.snapshot_id) == after  # an id string
        # A Snapshot whose id this server does not know falls back to its exported bytes.
        foreign = Snapshot(snapshot_id="snap-from-elsewhere", state_hash=initial, data=snap0.data)
        assert session.restore(foreign) == initial
        with pytest.raises(NotFoundError):
            session.restore("snap-from-elsewhere")


def test_sessions_are_isolated(client: EnvClient, mini_bundle: Bundle) -> None:
    task = next(t for t in mini_bundle.tasks if t.kind == "mutation")
    with client.create_session(ENV) as a, client.create_session(ENV) as b:
        assert a.state_hash() == b.state_hash()
        for call in task.solution:
            a.call_tool(call.tool, call.arguments)
        assert a.state_hash() != b.state_hash() == b.initial_state_hash


def test_group_of_8_starts_from_identical_state(client: EnvClient) -> None:
    active_before = client.get_stats().active_sessions
    with client.create_group(ENV, "task_1", 8) as group:
        assert len(group) == 8 and len({s.session_id for s in group}) == 8
        assert len({s.state_hash() for s in group}) == 1
        assert all(s.task_id == "task_1" for s in group)
        group[0].call_tool("renew_loan", {"loan_id": 1})  # independent afterwards
        assert len({s.state_hash() for s in group}) == 2
        assert client.get_stats().active_sessions == active_before + 8
    assert client.get_stats().active_sessions == active_before


def test_bad_input_raises_typed_errors(client: EnvClient) -> None:
    with pytest.raises(EnvNotFound) as info:
        client.create_session("no_such_env")
    assert info.value.code == grpc.StatusCode.NOT_FOUND and "no_such_env" in info.value.message
    with client.create_session(ENV) as session:
        with pytest.raises(NotFoundError, match="no_such_tool"):
            session.call_tool("no_such_tool", {})
        with pytest.raises(InvalidArgumentError) as bad:
            session.call_tool("renew_loan", {"loan_id": "not-a-number"})
        assert "loan_id" in bad.value.message
        with pytest.raises(InvalidArgumentError):
            session.call_tool("renew_loan", "{not json")
        with pytest.raises(TypeError):
            session.call_tool("renew_loan", [1])  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            session.fork(0)
    with pytest.raises(NotFoundError):
        client.session("s-does-not-exist").state_hash()


def test_closed_session_and_attach(client: EnvClient) -> None:
    session = client.create_session(ENV)
    attached = client.session(session.session_id)
    assert attached.state_hash() == session.initial_state_hash
    session.close()
    session.close()  # idempotent
    with pytest.raises((FailedPreconditionError, NotFoundError)) as info:
        attached.call_tool("list_branches", {})
    assert isinstance(info.value, EnvClientError) and info.value.message
    attached.close()  # already gone on the server: not an error


def test_resource_exhausted_at_session_limit(mini_bundle: Bundle) -> None:
    server = start_envd(mini_bundle, max_sessions=2)
    try:
        with EnvClient(server.address) as c:
            a, b = c.create_session(ENV), c.create_session(ENV)
            with pytest.raises(ResourceExhaustedError):
                c.create_session(ENV)
            a.close()
            c.create_session(ENV).close()
            b.close()
    finally:
        server.stop()


def test_closed_client_raises() -> None:
    c = EnvClient("127.0.0.1:1")
    c.close()
    with pytest.raises(ClientClosedError):
        c.list_envs()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_idempotent_calls_retry_until_server_is_back(mini_bundle: Bundle) -> None:
    """ListEnvs retries on UNAVAILABLE with backoff; Snapshot (a repeat would make a second one) fails at once."""
    port = _free_port()
    with EnvClient(f"127.0.0.1:{port}", retry_backoff=(0.05, 0.1, 0.2)) as quick:
        started = time.monotonic()
        with pytest.raises(UnavailableError):
            quick.session("s-0123456789abcdef01234567@envd-0").snapshot()
        assert time.monotonic() - started < 0.3  # not retried
        started = time.monotonic()
        with pytest.raises(UnavailableError):
            quick.get_stats()
        assert time.monotonic() - started >= 0.3  # retried through the whole schedule (50 + 100 + 200 ms)
    with EnvClient(f"127.0.0.1:{port}", retry_backoff=(0.1, 0.2, 0.4, 0.8, 1.6, 3.2)) as c:
        holder: dict[str, object] = {}
        timer = threading.Timer(0.3, lambda: holder.setdefault("server", start_envd(mini_bundle, port=port)))
        timer.start()
        try:
            envs = c.list_envs()  # first attempts fail; a retry reaches the server once it is up
            assert [e.env_id for e in envs] == [ENV]
        finally:
            timer.join()
            holder["server"].stop()  # type: ignore[attr-defined]


async def test_async_client_same_surface(client_envd: str, mini_bundle: Bundle) -> None:
    task = next(t for t in mini_bundle.tasks if t.kind == "mutation")
    async with AsyncEnvClient(client_envd) as c:
        envs = await c.list_envs()
        assert envs[0].env_id == ENV
        async with await c.create_session(ENV, task.id) as session:
            tools = await session.tools
            assert await session.tools is tools
            assert "renew_loan" in {t["name"] for t in tools}
            initial = await session.state_hash()
            snap = await session.snapshot()
            for call in task.solution:
                assert not (await session.call_tool(call.tool, call.arguments)).is_error
            verdict = await session.verify()
            assert verdict.outcome == "complete"
            kids = await session.fork(2)
            assert {await k.state_hash() for k in kids} == {await session.state_hash()}
            for k in kids:
                await k.close()
            assert await session.restore(snap) == initial
            assert await session.reset() == initial
            with pytest.raises(InvalidArgumentError):
                await session.call_tool("renew_loan", {"loan_id": "x"})
        with pytest.raises(EnvNotFound):
            await c.create_session("nope")
        async with await c.create_group(ENV, task.id, 8) as group:
            hashes = {await s.state_hash() for s in group}
            assert len(group) == 8 and hashes == {initial}
        stats = await c.get_stats()
        assert stats.env_ids == [ENV]


async def test_async_idempotent_retry(mini_bundle: Bundle) -> None:
    port = _free_port()
    async with AsyncEnvClient(f"127.0.0.1:{port}", retry_backoff=(0.05, 0.05)) as c:
        with pytest.raises(UnavailableError):
            await c.list_envs()
        with pytest.raises(UnavailableError):
            await c.create_session(ENV)
