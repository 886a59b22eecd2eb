"""MCP Streamable HTTP in front of sessions, exercised with the official `mcp` SDK client.

Two fronts: the runtime in-process (envd's own MCP port) and a gRPC address (how the gateway is served).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from agentworld.transport.mcp_server import serve_mcp_in_thread

pytestmark = pytest.mark.timeout(120)

ENV = "library_lending_1"


@pytest.fixture(scope="module", params=["runtime", "grpc"])
def mcp_url(request, envd) -> Iterator[str]:
    target = envd.runtime if request.param == "runtime" else envd.address
    handle = serve_mcp_in_thread(target, host="127.0.0.1", port=0)
    yield f"http://127.0.0.1:{handle.port}"
    handle.stop()


async def _new_session(base: str, task_id: str | None = None) -> str:
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{base}/envs/{ENV}/sessions", json={"task_id": task_id} if task_id else {})
        assert r.status_code == 201, r.text
        return r.json()["session_id"]


async def test_list_and_call_tools(mcp_url):
    session_id = await _new_session(mcp_url, "task_1")
    async with streamable_http_client(f"{mcp_url}/sessions/{session_id}/mcp") as (read, write):
        async with ClientSession(read, write) as mcp:
            await mcp.initialize()
            tools = (await mcp.list_tools()).tools
            by_name = {t.name: t for t in tools}
            assert len(tools) == 21 and "renew_loan" in by_name
            assert by_name["renew_loan"].input_schema["properties"]["loan_id"]["type"] == "integer"
            result = await mcp.call_tool("list_my_loans", {"status": "active"})
            assert not result.is_error
            loans = json.loads(result.content[0].text)
            assert {loan["book_title"] for loan in loans} == {"A Wizard of Earthsea", "Project Hail Mary"}
            renewed = await mcp.call_tool("renew_loan", {"loan_id": 1})
            assert not renewed.is_error, renewed.content[0].text
    # The state lives in the session, whatever MCP connection touched it: verify over HTTP says complete.
    async with httpx.AsyncClient() as http:
        verdict = (await http.post(f"{mcp_url}/sessions/{session_id}/verify", json={})).json()
        assert verdict["outcome"] == "complete"
        assert (await http.delete(f"{mcp_url}/sessions/{session_id}")).status_code == 204
        gone = await http.post(f"{mcp_url}/sessions/{session_id}/verify", json={})
        assert gone.status_code in (404, 409) and session_id in gone.json()["message"], gone.text


async def test_errors_are_flagged(mcp_url):
    session_id = await _new_session(mcp_url)
    async with streamable_http_client(f"{mcp_url}/sessions/{session_id}/mcp") as (read, write):
        async with ClientSession(read, write) as mcp:
            await mcp.initialize()
            unknown = await mcp.call_tool("no_such_tool", {})
            assert unknown.is_error and "no_such_tool" in unknown.content[0].text
            invalid = await mcp.call_tool("renew_loan", {"loan_id": "abc"})
            assert invalid.is_error and "loan_id" in invalid.content[0].text
            refused = await mcp.call_tool("renew_loan", {"loan_id": 999999})  # the app answers 200, success false
            assert not refused.is_error and json.loads(refused.content[0].text)["success"] is False
    async with streamable_http_client(f"{mcp_url}/sessions/s-doesnotexist/mcp") as (read, write):
        async with ClientSession(read, write) as mcp:
            await mcp.initialize()
            lost = await mcp.call_tool("list_my_loans", {})
            assert lost.is_error and "s-doesnotexist" in lost.content[0].text


async def _one_call(url: str, tool: str, arguments: dict) -> str:
    """What AWM's agent does for every tool call: a new MCP session, one call, the session ended."""
    async with streamable_http_client(url) as (read, write):
        async with ClientSession(read, write) as mcp:
            await mcp.initialize()
            result = await mcp.call_tool(tool, arguments)
            assert not result.is_error, result.content[0].text
            return result.content[0].text


async def test_env_endpoint_keeps_writes_across_mcp_connections_like_awms_server(mcp_url, envd):
    # Before: each MCP connection got a fresh environment session, so every write an AWM-style agent made vanished.
    url = f"{mcp_url}/envs/{ENV}/mcp?task_id=task_2"

    async def renewals() -> int:
        loans = json.loads(await _one_call(url, "list_my_loans", {"status": "active"}))
        return sum(loan["renewal_count"] for loan in loans)

    before = envd.runtime.stats().active_sessions
    assert await renewals() == 0
    await _one_call(url, "renew_loan", {"loan_id": 1})
    assert await renewals() == 1  # the write persisted into the next MCP connection
    assert envd.runtime.stats().active_sessions == before + 1  # one shared session for all those connections
    async with httpx.AsyncClient() as http:  # reset over REST: the shared session back at its initial state
        r = await http.post(f"{mcp_url}/envs/{ENV}/reset?task_id=task_2", json={})
        assert r.status_code == 200, r.text
    assert await renewals() == 0
    other = f"{mcp_url}/envs/{ENV}/mcp?task_id=task_3"  # another task: another shared session
    loans = json.loads(await _one_call(other, "list_my_loans", {"status": "active"}))
    assert sum(loan["renewal_count"] for loan in loans) == 0


async def test_minted_session_urls_isolate_episodes_and_reset(mcp_url):
    first, second = await _new_session(mcp_url, "task_1"), await _new_session(mcp_url, "task_1")
    await _one_call(f"{mcp_url}/sessions/{first}/mcp", "renew_loan", {"loan_id": 1})
    loans = json.loads(await _one_call(f"{mcp_url}/sessions/{second}/mcp", "list_my_loans", {"status": "active"}))
    assert sum(loan["renewal_count"] for loan in loans) == 0  # the other episode's write is not here
    async with httpx.AsyncClient() as http:
        assert (await http.post(f"{mcp_url}/sessions/{first}/verify", json={})).json()["outcome"] == "complete"
        assert (await http.post(f"{mcp_url}/sessions/{first}/reset", json={})).status_code == 200
        assert (await http.post(f"{mcp_url}/sessions/{first}/verify", json={})).json()["outcome"] == "others"
        missing = await http.post(f"{mcp_url}/sessions/s-nope/reset", json={})
        assert missing.status_code in (404, 409) and "s-nope" in missing.json()["message"]


async def test_auto_negotiating_client_works_on_the_env_endpoint(mcp_url):
    from mcp import Client

    async with Client(f"{mcp_url}/envs/{ENV}/mcp?task_id=task_4") as client:
        assert not (await client.call_tool("renew_loan", {"loan_id": 1})).is_error
        loans = json.loads((await client.call_tool("list_my_loans", {"status": "active"})).content[0].text)
        assert sum(loan["renewal_count"] for loan in loans) == 1  # both calls hit the same session


async def test_http_helpers_report_errors(mcp_url):
    async with httpx.AsyncClient() as http:
        envs = (await http.get(f"{mcp_url}/envs")).json()
        assert envs[0]["env_id"] == ENV and len(envs[0]["tasks"]) == 10
        r = await http.post(f"{mcp_url}/envs/nope/sessions", json={})
        assert r.status_code == 404 and "nope" in r.json()["message"]
        r = await http.post(f"{mcp_url}/envs/{ENV}/sessions", content=b"[1]",
                            headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        # Loopback servers refuse other Host headers (DNS rebinding): a web page cannot drive the tools.
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        r = await http.post(f"{mcp_url}/envs/{ENV}/mcp", json=init, headers={
            "Host": "evil.example:80", "Accept": "application/json, text/event-stream"})
        assert r.status_code in (400, 403, 421), r.text


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_envd_serves_mcp_beside_grpc(mini_library_bundle_dir):
    """`agentworld serve --mcp-port`: the real envd process, its MCP port, and a clean SIGTERM shutdown."""
    import asyncio
    import signal
    import subprocess
    import sys
    import time

    grpc_port, mcp_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentworld", "serve", str(mini_library_bundle_dir), "--port", str(grpc_port),
         "--mcp-port", str(mcp_port), "--verifier-workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        base = f"http://127.0.0.1:{mcp_port}"
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as http:
            while True:
                assert proc.poll() is None, proc.stdout.read()
                try:
                    if (await http.get(f"{base}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "envd's MCP port never came up"
                await asyncio.sleep(0.2)
        async with streamable_http_client(f"{base}/envs/{ENV}/mcp") as (read, write):
            async with ClientSession(read, write) as mcp:
                await mcp.initialize()
                assert len((await mcp.list_tools()).tools) == 21
                assert not (await mcp.call_tool("list_branches", {})).is_error
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_the_shared_session_outlives_abandoned_mcp_sessions_and_ends_with_the_edge(envd):
    """Clients that vanish without DELETE, or whose MCP sessions idle out, leave the shared session as it was (AWM's
    server keeps its database); stopping the edge closes it."""
    import asyncio

    handle = serve_mcp_in_thread(envd.runtime, port=0, session_idle_timeout_s=0.5)
    url = f"http://127.0.0.1:{handle.port}/envs/{ENV}/mcp"
    before = envd.runtime.stats().active_sessions
    try:
        async with streamable_http_client(url, terminate_on_close=False) as (read, write):
            async with ClientSession(read, write) as mcp:
                await mcp.initialize()
                assert not (await mcp.call_tool("renew_loan", {"loan_id": 1})).is_error
        await asyncio.sleep(1.0)  # past the MCP idle timeout: the SDK has dropped that MCP session
        loans = json.loads(await _one_call(url, "list_my_loans", {"status": "active"}))
        assert sum(loan["renewal_count"] for loan in loans) == 1
        assert envd.runtime.stats().active_sessions == before + 1
    finally:
        handle.stop()
    assert envd.runtime.stats().active_sessions == before
