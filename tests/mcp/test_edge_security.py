"""The MCP/REST HTTP edge is authenticated and browser-safe: bearer tokens from a rotating file on every route but
/healthz, one Host/Origin policy for REST and MCP routes (also when bound to 0.0.0.0), and no cross-site "simple"
POSTs. Real uvicorn servers on loopback, driven by httpx and the official `mcp` client."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from agentworld.auth import AUTH_METADATA_KEY, TOKEN_ENV, TOKEN_FILE_ENV, TokenFile, bearer
from agentworld.transport.mcp_server import serve_mcp_in_thread
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

ENV = "library_lending_1"
TASK = "task_1"
TOKEN = "right-token"
JSON = {"Content-Type": "application/json"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "edge-test", "version": "1"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", **JSON}


def _auth(token: str) -> dict[str, str]:
    return {AUTH_METADATA_KEY: bearer(token)}


@pytest.fixture
def token_path(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# agentworld edge tokens\n{TOKEN}\n")
    return path


@contextlib.contextmanager
def serving(target: Any, host: str = "127.0.0.1", connect: str = "127.0.0.1", **options: Any) -> Iterator[str]:
    """An MCP edge on an ephemeral port; yields the base URL to reach it at `connect`."""
    handle = serve_mcp_in_thread(target, host=host, port=0, **options)
    try:
        yield f"http://{connect}:{handle.port}"
    finally:
        handle.stop()


def _new_session(http: httpx.Client, headers: dict[str, str] | None = None) -> str:
    r = http.post(f"/envs/{ENV}/sessions", json={"task_id": TASK}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["session_id"]


def _initialize(http: httpx.Client, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return http.post(path, json=INITIALIZE, headers={**MCP_HEADERS, **(headers or {})})


def _assert_unauthenticated(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer"), r.headers
    body = r.json()
    assert body["error"] == "unauthenticated" and AUTH_METADATA_KEY in body["message"], body


async def _tools_over_mcp(url: str, headers: dict[str, str] | None = None) -> tuple[int, bool]:
    """Through the official client: how many tools the session has, and whether a tool call failed."""
    async with create_mcp_http_client(headers=headers) as client:
        async with streamable_http_client(url, http_client=client) as (read, write):
            async with ClientSession(read, write) as mcp:
                await mcp.initialize()
                tools = (await mcp.list_tools()).tools
                result = await mcp.call_tool("list_my_loans", {"status": "active"})
                if not result.is_error:
                    assert len(json.loads(result.content[0].text)) == 2
                return len(tools), result.is_error


# -- no token configured -----------------------------------------------------------------------------------------


async def test_without_a_token_loopback_works_as_before(envd):
    with serving(envd.runtime) as base, httpx.Client(base_url=base) as http:
        assert http.get("/envs").json()[0]["env_id"] == ENV
        session_id = _new_session(http)
        assert await _tools_over_mcp(f"{base}/sessions/{session_id}/mcp") == (21, False)
        assert http.post(f"/sessions/{session_id}/verify", json={}).status_code == 200
        assert http.delete(f"/sessions/{session_id}").status_code == 204
        assert await _tools_over_mcp(f"{base}/envs/{ENV}/mcp") == (21, False)


# -- bearer tokens -----------------------------------------------------------------------------------------------


def test_rest_routes_need_a_listed_token(envd, token_path):
    with serving(envd.runtime, token=TokenFile(token_path)) as base, httpx.Client(base_url=base) as http:
        for headers in (None, _auth("wrong-token"), {AUTH_METADATA_KEY: TOKEN}, {AUTH_METADATA_KEY: "Basic eA=="}):
            _assert_unauthenticated(http.get("/envs", headers=headers))
            _assert_unauthenticated(http.post(f"/envs/{ENV}/sessions", json={}, headers=headers))
            _assert_unauthenticated(http.post("/sessions/s-any/verify", json={}, headers=headers))
            _assert_unauthenticated(http.delete("/sessions/s-any", headers=headers))
        missing, wrong = http.get("/envs"), http.get("/envs", headers=_auth("wrong-token"))
        assert "invalid_token" not in missing.headers["www-authenticate"]
        assert 'error="invalid_token"' in wrong.headers["www-authenticate"]  # RFC 6750: a token was presented

        right = _auth(TOKEN)
        assert http.get("/envs", headers=right).status_code == 200
        session_id = _new_session(http, right)
        assert http.post(f"/sessions/{session_id}/verify", json={}, headers=right).status_code == 200
        assert http.delete(f"/sessions/{session_id}", headers=right).status_code == 204


def test_mcp_routes_need_a_listed_token(envd, token_path):
    with serving(envd.runtime, token=TokenFile(token_path)) as base, httpx.Client(base_url=base) as http:
        session_id = _new_session(http, _auth(TOKEN))
        for path in (f"/envs/{ENV}/mcp", f"/sessions/{session_id}/mcp"):
            _assert_unauthenticated(_initialize(http, path))
            _assert_unauthenticated(_initialize(http, path, _auth("wrong-token")))
            _assert_unauthenticated(http.get(path, headers={"Accept": "text/event-stream"}))
            _assert_unauthenticated(http.delete(path, headers={"mcp-session-id": "any"}))
            r = _initialize(http, path, _auth(TOKEN))
            assert r.status_code == 200, r.text


def test_healthz_needs_no_token_nor_a_known_host(envd, token_path):
    """Probes (kubelet sends Host: <pod IP>:<port>) reach /healthz; it says nothing but that the edge is up."""
    with serving(envd.runtime, host="0.0.0.0", token=TokenFile(token_path)) as base, \
            httpx.Client(base_url=base) as http:
        assert http.get("/healthz").json() == {"ok": True}
        probe = {"Host": "10.1.2.3:8765", "Origin": "https://evil.example"}
        assert http.get("/healthz", headers=probe).status_code == 200
        _assert_unauthenticated(http.get("/healthz/"))  # only the exact probe route is exempt


def test_a_rotated_token_file_takes_effect_without_a_restart(envd, token_path):
    tokens = TokenFile(token_path, recheck_s=0.05)

    def status(token: str) -> int:
        return http.get("/envs", headers=_auth(token)).status_code

    with serving(envd.runtime, token=tokens) as base, httpx.Client(base_url=base) as http:
        assert (status(TOKEN), status("next-token")) == (200, 401)
        token_path.write_text(f"{TOKEN}\nnext-token\n")  # overlap: both work while clients move over
        wait_until(lambda: status("next-token") == 200, "the added token to be accepted")
        assert status(TOKEN) == 200
        token_path.write_text("next-token\n")
        wait_until(lambda: status(TOKEN) == 401, "the removed token to be refused")
        assert status("next-token") == 200


async def test_official_mcp_client_with_a_token_header(envd, token_path):
    with serving(envd.runtime, token=TokenFile(token_path)) as base, httpx.Client(base_url=base) as http:
        session_id = _new_session(http, _auth(TOKEN))
        for url in (f"{base}/sessions/{session_id}/mcp", f"{base}/envs/{ENV}/mcp"):
            assert await _tools_over_mcp(url, _auth(TOKEN)) == (21, False)


# -- the gateway's shape: MCP edge -> gRPC (envd or gateway) with a token on both hops -----------------------------


@pytest.fixture(scope="module")
def grpc_with_token(mini_library_bundle_dir: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A token-protected envd of our own (stopping a gRPC server closes its runtime, so the shared one is not used)."""
    from agentworld.bundle import load_bundle
    from agentworld.runtime import EnvRuntime, RuntimeConfig
    from agentworld.transport.grpc_server import serve_in_thread

    path = tmp_path_factory.mktemp("grpc-token") / "tokens"
    path.write_text(f"{TOKEN}\n")
    runtime = EnvRuntime([load_bundle(mini_library_bundle_dir)], RuntimeConfig(call_timeout_s=10.0))
    with serve_in_thread(runtime, tokens=TokenFile(path)) as server:
        yield server.address, path


async def test_mcp_edge_presents_its_token_to_grpc(grpc_with_token, monkeypatch):
    address, path = grpc_with_token
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(TOKEN_FILE_ENV, raising=False)
    tokens = TokenFile(path)
    with serving(address, token=tokens, backend_token=tokens) as base, httpx.Client(base_url=base) as http:
        assert http.get("/envs", headers=_auth(TOKEN)).json()[0]["env_id"] == ENV
        assert await _tools_over_mcp(f"{base}/envs/{ENV}/mcp", _auth(TOKEN)) == (21, False)
    with serving(address) as base, httpx.Client(base_url=base) as http:  # no backend token: gRPC refuses the hop
        r = http.get("/envs")
        assert r.status_code >= 400 and "bearer token" in r.json()["message"], r.text


def test_backend_token_needs_a_grpc_address(envd, token_path):
    with pytest.raises(ValueError, match="backend_token"):
        serve_mcp_in_thread(envd.runtime, port=0, backend_token=TokenFile(token_path))


# -- browsers: cross-site requests and DNS rebinding ----------------------------------------------------------------


def test_cross_site_posts_are_refused(envd):
    """What an HTML form or a no-cors fetch from another site can send must not create or verify sessions."""
    before = envd.runtime.stats().active_sessions
    with serving(envd.runtime) as base, httpx.Client(base_url=base) as http:
        body = json.dumps({"task_id": TASK})
        evil = {"Origin": "https://evil.example"}
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            r = http.post(f"/envs/{ENV}/sessions", content=body, headers={**evil, "Content-Type": content_type})
            assert r.status_code == 403 and r.json()["error"] == "forbidden_origin", r.text
            r = http.post(f"/envs/{ENV}/sessions", content=body, headers={"Content-Type": content_type})
            assert r.status_code == 415 and "application/json" in r.json()["message"], r.text
        r = http.post(f"/envs/{ENV}/sessions", content=body)  # a fetch() of raw bytes declares no type at all
        assert r.status_code == 415, r.text
        r = http.post(f"/envs/{ENV}/sessions", json={}, headers=evil)
        assert r.status_code == 403, r.text
        r = http.post(f"/envs/{ENV}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **evil})
        assert r.status_code == 403, r.text
        for origin in ("null", "http://127.0.0.1.evil.example", "ftp://localhost", "http://evil.example:80"):
            assert http.get("/envs", headers={"Origin": origin}).status_code == 403, origin
        assert http.delete("/sessions/s-any", headers={"Content-Type": "text/plain"}).status_code == 415
        assert envd.runtime.stats().active_sessions == before

        same_site = {"Origin": base.replace("127.0.0.1", "localhost"), **JSON}
        r = http.post(f"/envs/{ENV}/sessions", content=body, headers=same_site)
        assert r.status_code == 201, r.text
        session_id = r.json()["session_id"]
        r = http.post(f"/sessions/{session_id}/verify", content=b"{}",
                      headers={"Content-Type": "application/json; charset=utf-8"})
        assert r.status_code == 200, r.text
        assert http.delete(f"/sessions/{session_id}").status_code == 204  # DELETE can't be a simple request


@pytest.mark.parametrize("bind", ["127.0.0.1", "0.0.0.0"])
def test_foreign_host_is_refused_on_every_route(envd, bind):
    with serving(envd.runtime, host=bind) as base, httpx.Client(base_url=base) as http:
        session_id = _new_session(http)
        for host in ("evil.example", "evil.example:80", "localhost.evil.example:1", "0.0.0.0:80", "10.0.0.1"):
            foreign = {"Host": host}
            for r in (http.get("/envs", headers=foreign),
                      http.post(f"/envs/{ENV}/sessions", json={}, headers=foreign),
                      http.post(f"/sessions/{session_id}/verify", json={}, headers=foreign),
                      http.delete(f"/sessions/{session_id}", headers=foreign),
                      _initialize(http, f"/envs/{ENV}/mcp", foreign),
                      _initialize(http, f"/sessions/{session_id}/mcp", foreign)):
                assert r.status_code == 421 and r.json()["error"] == "misdirected", (host, r.text)
        for host in ("localhost", "LOCALHOST:9", "127.0.0.1:1", "[::1]:8765"):
            assert http.get("/envs", headers={"Host": host}).status_code == 200, host
        assert _initialize(http, f"/envs/{ENV}/mcp", {"Host": "localhost:1"}).status_code == 200


def test_allowed_host_names_and_the_bound_address(envd):
    allowed = ["agentworld-gateway.agentworld.svc:*", "exact.example:8080", "bare.example"]
    with serving(envd.runtime, host="127.0.0.2", connect="127.0.0.2", allowed_hosts=allowed) as base, \
            httpx.Client(base_url=base) as http:
        port = base.rpartition(":")[2]

        def status(host: str, origin: str | None = None) -> int:
            headers = {"Host": host} | ({"Origin": origin} if origin else {})
            return http.get("/envs", headers=headers).status_code

        for host in (f"127.0.0.2:{port}", "agentworld-gateway.agentworld.svc", "agentworld-gateway.agentworld.svc:80",
                     "Agentworld-Gateway.agentworld.svc:8765", "exact.example:8080", "bare.example", "localhost:1"):
            assert status(host) == 200, host
        for host in ("127.0.0.3:1", "x.agentworld-gateway.agentworld.svc:1", "agentworld-gateway.agentworld.svc.evil:1",
                     "exact.example:8081", "exact.example", "bare.example:81"):
            assert status(host) == 421, host
        assert status("bare.example", "https://agentworld-gateway.agentworld.svc:443") == 200
        assert status("bare.example", "http://exact.example:8080") == 200
        assert status("bare.example", "http://exact.example") == 403
        assert status("bare.example", "https://evil.example") == 403
        session_id = _new_session(http, {"Host": "agentworld-gateway.agentworld.svc:8765"})
        r = _initialize(http, f"/sessions/{session_id}/mcp", {"Host": "exact.example:8080"})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("bad", ["", "http://name.example", "name.example/path", "*", "name:port", "a b"])
def test_malformed_allowed_hosts_fail_at_start(envd, bad):
    with pytest.raises(ValueError, match="allowed host"):
        serve_mcp_in_thread(envd.runtime, port=0, allowed_hosts=[bad])
