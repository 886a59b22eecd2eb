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


async def test_env_endpoint_gives_each_connection_its_own_session(mcp_url, envd):
    async def borrow_and_count(url: str, borrow: bool) -> int:
        async with streamable_http_client(url) as (read, write):
            async with ClientSession(read, write) as mcp:
                await mcp.initialize()
                if borrow:
                    assert not (await mcp.call_tool("renew_loan", {"loan_id": 1})).is_error
                loans = json.loads((await mcp.call_tool("list_my_loans", {"status": "active"})).content[0].text)
                return sum(loan["renewal_count"] for loan in loans)

    url = f"{mcp_url}/envs/{ENV}/mcp"
    before = envd.runtime.stats().active_sessions
    assert await borrow_and_count(url, True) == 1
    assert await borrow_and_count(url, False) == 0  # a fresh session: the first connection's write is not here
    assert envd.runtime.stats().active_sessions == before  # ending the MCP session closed its env session


async def test_auto_negotiating_client_falls_back_to_a_stateful_session(mcp_url):
    from mcp import Client

    async with Client(f"{mcp_url}/envs/{ENV}/mcp") as client:
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


async def test_abandoned_mcp_sessions_release_their_env_sessions(envd):
    """A client that vanishes without DELETE: once its MCP session idles out, its env session is closed too."""
    import asyncio

    handle = serve_mcp_in_thread(envd.runtime, port=0, session_idle_timeout_s=0.5)
    url = f"http://127.0.0.1:{handle.port}/envs/{ENV}/mcp"
    try:
        before = envd.runtime.stats().active_sessions
        async with streamable_http_client(url, terminate_on_close=False) as (read, write):
            async with ClientSession(read, write) as mcp:
                await mcp.initialize()
                assert not (await mcp.call_tool("list_branches", {})).is_error
        assert envd.runtime.stats().active_sessions == before + 1
        await asyncio.sleep(1.0)
        async with streamable_http_client(url) as (read, write):  # any new binding sweeps the idle ones
            async with ClientSession(read, write) as mcp:
                await mcp.initialize()
                await mcp.list_tools()
        assert envd.runtime.stats().active_sessions == before
    finally:
        handle.stop()
