"""Exactly-once tool calls (CallToolRequest.call_id) and calls whose RPC goes away mid-call, on a real envd."""

from __future__ import annotations

import asyncio
import json
import threading

import grpc
import grpc.aio
import pytest

from agentworld.bundle import load_bundle
from agentworld.client import EnvClient, InvalidArgumentError
from agentworld.limits import CALL_IDS_KEPT
from agentworld.runtime import EnvRuntime, RuntimeConfig
from agentworld.transport.grpc_server import serve_in_thread
from agentworld.v1 import env_pb2 as pb
from agentworld.v1 import env_pb2_grpc
from tests.runtime.hostile_env import hostile_bundle
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    runtime = EnvRuntime([load_bundle(hostile_bundle(tmp_path_factory.mktemp("hostile")))],
                         RuntimeConfig(call_timeout_s=10.0, workers=1, idle_ttl_s=0))
    with serve_in_thread(runtime) as server:
        yield server, runtime


@pytest.fixture
def client(served):
    with EnvClient(served[0].address) as c:
        yield c


def test_the_same_call_id_returns_the_first_outcome(client) -> None:
    with client.create_session("hostile") as session:
        first = session.call_tool("add_mark", {"label": "a"}, call_id="call-1")
        again = session.call_tool("add_mark", {"label": "a"}, call_id="call-1")
        assert (again.content, again.http_status) == (first.content, first.http_status)
        assert session.call_tool("list_marks").json() == ["seed", "a"]
        with pytest.raises(InvalidArgumentError, match="call-1.*another call"):
            session.call_tool("add_mark", {"label": "b"}, call_id="call-1")
        other = client.create_session("hostile")  # ids are per session
        other.call_tool("add_mark", {"label": "a"}, call_id="call-1")
        assert other.call_tool("list_marks").json() == ["seed", "a"]
        other.close()


def test_a_duplicate_while_the_first_runs_waits_for_it(client, served) -> None:
    _, runtime = served
    with client.create_session("hostile") as session:
        results: list[object] = []
        args = {"seconds": 0.5, "label": "slow"}
        first = threading.Thread(target=lambda: results.append(
            session.call_tool("slow_sync_write", args, call_id="dup")))
        first.start()
        wait_until(lambda: runtime.reg.sessions[session.session_id].lock.locked(), "the first call to be running")
        results.append(session.call_tool("slow_sync_write", args, call_id="dup"))
        first.join()
        assert len(results) == 2 and all(not r.is_error for r in results)  # type: ignore[attr-defined]
        assert session.call_tool("list_marks").json() == ["seed", "slow"]


def test_outcomes_that_left_nothing_are_not_remembered(client) -> None:
    """A call rolled back at its deadline may be sent again with its id, and then it runs."""
    with client.create_session("hostile") as session:
        with pytest.raises(Exception, match="deadline"):
            session.call_tool("slow_sync_write", {"seconds": 2, "label": "x"}, timeout_s=0.2, call_id="retry-me")
        assert not session.call_tool("slow_sync_write", {"seconds": 0, "label": "x"}, timeout_s=5,
                                     call_id="retry-me").is_error
        assert session.call_tool("list_marks").json() == ["seed", "x"]


def test_only_the_last_call_ids_are_kept(client, served) -> None:
    _, runtime = served
    with client.create_session("hostile") as session:
        for i in range(CALL_IDS_KEPT + 5):
            session.call_tool("echo_path", {"value": str(i)}, call_id=f"c{i}")
        kept = runtime.reg.sessions[session.session_id].calls
        assert len(kept) == CALL_IDS_KEPT and "c0" not in kept and f"c{CALL_IDS_KEPT + 4}" in kept


def test_a_call_whose_rpc_is_cancelled_still_finishes_before_the_next(served) -> None:
    """The client gives up on a call mid-way (its RPC is cancelled): the call still commits or rolls back, its
    worker takes no other call until then, and the next call on the session gets its own answer."""
    server, runtime = served

    async def run() -> tuple[list[str], str]:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = env_pb2_grpc.EnvServiceStub(channel)
            sid = (await stub.CreateSession(pb.CreateSessionRequest(env_id="hostile"))).session.session_id
            slow = asyncio.ensure_future(stub.CallTool(pb.CallToolRequest(
                session_id=sid, tool_name="slow_sync_write", arguments_json='{"seconds": 0.5, "label": "late"}')))
            await asyncio.to_thread(wait_until, lambda: runtime.reg.sessions[sid].lock.locked(), "the call to run")
            slow.cancel()
            echo = await stub.CallTool(pb.CallToolRequest(session_id=sid, tool_name="echo_path",
                                                          arguments_json='{"value": "mine"}'))
            listed = await stub.CallTool(pb.CallToolRequest(session_id=sid, tool_name="list_marks"))
            return json.loads(listed.content), echo.content

    marks, echo = asyncio.run(run())
    assert '"value":"mine"' in echo.replace(" ", "")
    assert marks == ["seed", "late"]  # the cancelled call ran to its end, once


def test_call_id_is_checked(client) -> None:
    with client.create_session("hostile") as session, pytest.raises(InvalidArgumentError, match="call_id"):
        session.call_tool("list_marks", call_id="x" * 500)
