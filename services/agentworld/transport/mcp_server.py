"""MCP (Streamable HTTP, the official `mcp` SDK) in front of environment sessions, as AWM serves its environments.

Routes of the ASGI app `build_mcp_app(target)`; `target` is an EnvRuntime (envd), a gRPC address or
AsyncEnvClient (the gateway), or any `McpBackend`:

- `/sessions/{session_id}/mcp`   MCP endpoint bound to an existing session (any number of MCP connections may share
                                 it, e.g. AWM's agent opens one per call): one episode's own state.
- `/envs/{env_id}/mcp[?task_id=]` MCP endpoint on the edge's shared session of that environment (and task), as AWM's
                                 server is one database: writes persist across MCP connections while the edge runs.
- `GET /envs`, `POST /envs/{env_id}/sessions` ({"task_id"}), `POST /sessions/{id}/verify` ({"final_answer"}),
  `POST /sessions/{id}/reset`, `POST /envs/{env_id}/reset[?task_id=]` (the shared session), `DELETE /sessions/{id}`,
  `GET /healthz`: the plain-HTTP rest of an episode (create, reset, verify, close). MCP itself has no reset: the
  tool list stays exactly the environment's.

Tool errors (the environment's own 4xx/5xx, unknown tools, arguments failing the schema, a lost session) come back
as results with `isError: true`, so an agent sees them; malformed MCP requests get JSON-RPC errors.

One policy (`EdgeGuard`, wrapping the whole app) guards every route but `GET /healthz`, whatever the bind address:
a Host outside the allowed names gets 421 (DNS rebinding), an Origin that is not http(s)://<allowed name> gets 403,
a POST that is not `application/json` gets 415 (no HTML form or no-cors fetch can send one), and with a token file
a request without one of its bearer tokens gets 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from agentworld.auth import AUTH_METADATA_KEY, LOOPBACK_HOSTS, SCHEME, UNAUTHENTICATED_HINT, StaticToken, TokenFile
from agentworld.runtime.errors import clip
from agentworld.transport.mcp_backend import BackendError, McpBackend, as_backend

log = logging.getLogger(__name__)

MCP_METHODS = ["GET", "POST", "DELETE"]
HEALTHZ_PATH = "/healthz"  # the one route open to anyone: probes carry no token and name the pod by its IP
JSON_MEDIA_TYPE = "application/json"
WILDCARD_BINDS = ("0.0.0.0", "::", "")  # bind addresses that are not a name any client uses
_HTTP_STATUS = {"not_found": 404, "invalid_argument": 400, "unavailable": 503, "exhausted": 429, "failed": 409}


class _SessionBinder:
    """Which environment session a request talks to: the one in the path (/sessions/{id}/mcp), or the edge's shared
    session of the environment (and task) on /envs/{env_id}/mcp[?task_id=].

    The shared session is what AWM's server is: one database that every MCP connection reads and writes, for as long
    as this edge runs (AWM's agent opens a new MCP session per tool call, so a session per connection would lose
    every write). It is made on first use; if it ended meanwhile (closed, or idle past envd's TTL) the next request
    gets a new one. Episodes that need their own state mint a session (POST /envs/{env_id}/sessions)."""

    def __init__(self, backend: McpBackend) -> None:
        self.backend = backend
        self._shared: dict[tuple[str, str | None], str] = {}  # (env id, task id) -> env session id
        self._lock = asyncio.Lock()

    @staticmethod
    def shared_key(request: Request) -> tuple[str, str | None]:
        return request.path_params["env_id"], request.query_params.get("task_id") or None

    async def session_for(self, request: Request | None, fresh: bool = False) -> str:
        if request is None:
            raise MCPError(types.INVALID_REQUEST, "agentworld MCP is served over Streamable HTTP only")
        if "session_id" in request.path_params:
            return request.path_params["session_id"]
        return await self.shared(self.shared_key(request), fresh)

    async def shared(self, key: tuple[str, str | None], fresh: bool = False) -> str:
        """The shared session for (env id, task id); `fresh`: the last one is gone, make another."""
        async with self._lock:
            session_id = self._shared.get(key)
            if session_id is None or fresh:
                try:
                    session_id = self._shared[key] = await self.backend.create_session(*key)
                except BackendError as exc:
                    raise MCPError(types.INVALID_PARAMS, exc.message) from exc
            return session_id

    def is_shared(self, request: Request | None) -> bool:
        return request is not None and "env_id" in request.path_params

    async def release_all(self) -> None:
        for session_id in list(self._shared.values()):
            with contextlib.suppress(BackendError):
                await self.backend.close_session(session_id)
        self._shared.clear()


ENDED = ("not_found", "failed")  # a shared session that ended (closed, expired): start another


def _tool_error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


def build_mcp_server(backend: McpBackend, binder: _SessionBinder) -> Server[Any]:
    """The low-level MCP server: tools/list and tools/call on the request's session."""

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        session_id = await binder.session_for(ctx.request)
        try:
            try:
                tools = await backend.list_tools(session_id)
            except BackendError as exc:
                if not (binder.is_shared(ctx.request) and exc.kind in ENDED):
                    raise
                tools = await backend.list_tools(await binder.session_for(ctx.request, fresh=True))
        except BackendError as exc:
            code = types.INVALID_PARAMS if exc.kind in ("not_found", "invalid_argument") else types.INTERNAL_ERROR
            raise MCPError(code, exc.message) from exc
        return types.ListToolsResult(
            tools=[
                types.Tool(name=t["name"], description=t.get("description") or None,
                           input_schema=t.get("input_schema") or {"type": "object", "properties": {}})
                for t in tools
            ]
        )

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        session_id = await binder.session_for(ctx.request)
        arguments = dict(params.arguments or {})
        try:
            try:
                outcome = await backend.call_tool(session_id, params.name, arguments)
            except BackendError as exc:
                if not (binder.is_shared(ctx.request) and exc.kind in ENDED and session_id in exc.message):
                    raise
                session_id = await binder.session_for(ctx.request, fresh=True)
                outcome = await backend.call_tool(session_id, params.name, arguments)
        except BackendError as exc:
            return _tool_error(exc.message)
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=outcome.content)], is_error=outcome.is_error
        )

    return Server(
        "agentworld",
        version="1",
        instructions="Tools of an agentworld environment session. Call one tool at a time.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


@dataclass
class _McpEndpoint:
    """ASGI endpoint for the SDK's session manager (a plain class: Starlette would wrap a function or method as a
    request handler)."""

    manager: StreamableHTTPSessionManager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.manager.handle_request(scope, receive, send)


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BackendError("invalid_argument", f"request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BackendError("invalid_argument", "request body must be a JSON object")
    return body


def _error_response(exc: BackendError) -> JSONResponse:
    return JSONResponse({"error": exc.kind, "message": exc.message}, status_code=_HTTP_STATUS.get(exc.kind, 500))


_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?")  # a DNS name or IPv4 address, lower-cased


def _split_host(value: str) -> tuple[str, str | None] | None:
    """(name, port) of a Host header value or an allowed-host pattern, lower-cased; None if malformed. IPv6 keeps
    its brackets, as in a Host header."""
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value.partition("]")
        if not bracket:
            return None
        try:
            ipaddress.IPv6Address(name[1:])
        except ValueError:
            return None
        name += "]"
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:] if rest else None
    else:
        name, colon, port_text = value.partition(":")
        port = port_text if colon else None
        if not _NAME.fullmatch(name):
            return None
    if port is not None and not (port == "*" or (port.isdigit() and len(port) <= 5)):
        return None
    return name, port


def _host_form(address: str) -> str:
    """An address as it appears in a Host header (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


@dataclass(frozen=True)
class _HostPattern:
    """An allowed Host: `name` (no port, i.e. the scheme's default), `name:port`, or `name:*` (any port or none)."""

    name: str
    port: str | None

    @classmethod
    def parse(cls, pattern: str) -> _HostPattern:
        parsed = _split_host(pattern)
        if parsed is None:
            raise ValueError(f"allowed host {pattern!r}: give NAME, NAME:PORT or NAME:* (IPv6 as [ADDR]:PORT), "
                             "without a scheme or path")
        return cls(*parsed)

    def matches(self, name: str, port: str | None) -> bool:
        return name == self.name and (self.port == "*" or port == self.port)


class EdgePolicy:
    """Who may use the HTTP edge: the allowed Host names (and Origins built from them) and, optionally, tokens."""

    def __init__(self, token: TokenFile | None = None, allowed_hosts: Sequence[str] = (),
                 bind_host: str | None = None) -> None:
        names = [f"{_host_form(h)}:*" for h in LOOPBACK_HOSTS]
        if bind_host is not None and bind_host not in WILDCARD_BINDS:
            names.append(f"{_host_form(bind_host)}:*")
        self.token = token
        self.hosts = tuple(_HostPattern.parse(p) for p in [*names, *allowed_hosts])

    def host_allowed(self, host: str | None) -> bool:
        parsed = _split_host(host) if host else None
        return parsed is not None and parsed[1] != "*" and any(p.matches(*parsed) for p in self.hosts)

    def origin_allowed(self, origin: str) -> bool:
        """http(s)://<allowed host>; `null` (sandboxed frames, files) and anything else is foreign."""
        try:
            url = urlsplit(origin.strip())
        except ValueError:
            return False
        if url.scheme not in ("http", "https") or url.path or url.query or url.fragment or "@" in url.netloc:
            return False
        return self.host_allowed(url.netloc)

    def refusal(self, method: str, path: str, headers: Headers) -> Response | None:
        """Why this request may not reach the app (as the response to send), or None to let it through."""
        if path == HEALTHZ_PATH and method in ("GET", "HEAD"):
            return None
        if not self.host_allowed(headers.get("host")):
            return _refuse(421, "misdirected", f"Host {clip(headers.get('host', ''))} is not a name of this "
                           "server; start it with --allowed-host NAME (NAME:* for any port) to serve under that name")
        origin = headers.get("origin")
        if origin is not None and not self.origin_allowed(origin):
            return _refuse(403, "forbidden_origin", f"Origin {clip(origin)} is not allowed: requests from web "
                           "pages must come from http(s)://<an allowed host>")
        if self.token is not None:
            presented = headers.get(AUTH_METADATA_KEY)
            if not self.token.accepts(presented):
                why = "no bearer token" if presented is None else "the bearer token is not accepted"
                challenge = f'{SCHEME} realm="agentworld"' + ("" if presented is None else ', error="invalid_token"')
                return _refuse(401, "unauthenticated", f"{why}: {UNAUTHENTICATED_HINT}",
                               {"WWW-Authenticate": challenge})
        # No HTML form and no no-cors fetch can send a JSON POST; a DELETE is never such a "simple" request.
        content_type = headers.get("content-type")
        if method == "POST" or (method == "DELETE" and content_type is not None):
            media_type = (content_type or "").partition(";")[0].strip().lower()
            if media_type != JSON_MEDIA_TYPE:
                need = "needs" if method == "POST" else "takes no body, or one with"
                return _refuse(415, "unsupported_media_type", f"{method} {need} 'Content-Type: {JSON_MEDIA_TYPE}' "
                               f"(got {clip(content_type or '')}; a POST needs it even with an empty body)")
        return None


def _refuse(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": error, "message": message}, status_code=status, headers=headers)


class EdgeGuard:
    """ASGI middleware applying an EdgePolicy to every HTTP request before any route (MCP and REST alike) sees it.
    Other scopes pass: lifespan must, and the app has no WebSocket routes."""

    def __init__(self, app: ASGIApp, policy: EdgePolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.policy.refusal(scope["method"], scope["path"], Headers(scope=scope))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_mcp_app(
    target: Any,
    *,
    host: str | None = None,
    token: TokenFile | None = None,
    allowed_hosts: Sequence[str] = (),
    backend_token: StaticToken | TokenFile | None = None,
    session_idle_timeout_s: float | None = 600.0,
    max_mcp_sessions: int | None = 10_000,
) -> Starlette:
    """The ASGI app (see the module docstring). `target`: EnvRuntime, gRPC address, AsyncEnvClient or McpBackend.

    `host`: the interface it will be served on; unless a wildcard (0.0.0.0, ::) it is an allowed Host name, beside
    the loopback names and `allowed_hosts` (NAME, NAME:PORT, NAME:*). `token`: require one of its bearer tokens
    (None: no authentication). `backend_token`: what the gRPC client presents when `target` is an address (None:
    $AGENTWORLD_TOKEN / $AGENTWORLD_TOKEN_FILE, as any client).
    """
    policy = EdgePolicy(token, allowed_hosts, bind_host=host)  # malformed names fail here, before anything starts
    backend = as_backend(target, token=backend_token)
    binder = _SessionBinder(backend)
    server = build_mcp_server(backend, binder)
    manager = StreamableHTTPSessionManager(
        server, session_idle_timeout=session_idle_timeout_s, max_sessions=max_mcp_sessions,
        # EdgeGuard enforces Host/Origin for every route; a second, differently worded copy here would only drift.
        security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    endpoint = _McpEndpoint(manager)

    async def list_envs(request: Request) -> Response:
        try:
            envs = await backend.list_envs()
        except BackendError as exc:
            return _error_response(exc)
        return JSONResponse([{"env_id": e.env_id, "title": e.title, "description": e.description,
                              "tasks": e.tasks, "mcp_path": f"/envs/{e.env_id}/mcp"} for e in envs])

    async def create_session(request: Request) -> Response:
        try:
            body = await _json_body(request)
            session_id = await backend.create_session(request.path_params["env_id"], body.get("task_id") or None)
        except BackendError as exc:
            return _error_response(exc)
        return JSONResponse({"session_id": session_id, "mcp_path": f"/sessions/{session_id}/mcp"}, status_code=201)

    async def verify(request: Request) -> Response:
        try:
            body = await _json_body(request)
            verdict = await backend.verify(request.path_params["session_id"], body.get("final_answer"))
        except BackendError as exc:
            return _error_response(exc)
        return JSONResponse(verdict)

    async def reset(request: Request) -> Response:
        try:
            if "env_id" in request.path_params:
                session_id = await binder.shared(binder.shared_key(request))
            else:
                session_id = request.path_params["session_id"]
            await backend.reset(session_id)
        except BackendError as exc:
            return _error_response(exc)
        except MCPError as exc:
            return JSONResponse({"error": "invalid_argument", "message": exc.error.message}, status_code=400)
        return JSONResponse({"session_id": session_id, "reset": True})

    async def close_session(request: Request) -> Response:
        try:
            await backend.close_session(request.path_params["session_id"])
        except BackendError as exc:
            return _error_response(exc)
        return Response(status_code=204)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with manager.run():
            try:
                yield
            finally:
                await binder.release_all()
                await backend.aclose()

    return Starlette(
        routes=[
            Route("/sessions/{session_id}/mcp", endpoint=endpoint, methods=MCP_METHODS),
            Route("/envs/{env_id}/mcp", endpoint=endpoint, methods=MCP_METHODS),
            Route("/envs", endpoint=list_envs, methods=["GET"]),
            Route("/envs/{env_id}/sessions", endpoint=create_session, methods=["POST"]),
            Route("/sessions/{session_id}/verify", endpoint=verify, methods=["POST"]),
            Route("/sessions/{session_id}/reset", endpoint=reset, methods=["POST"]),
            Route("/envs/{env_id}/reset", endpoint=reset, methods=["POST"]),
            Route("/sessions/{session_id}", endpoint=close_session, methods=["DELETE"]),
            Route(HEALTHZ_PATH, endpoint=healthz, methods=["GET"]),
        ],
        middleware=[Middleware(EdgeGuard, policy=policy)],
        lifespan=lifespan,
    )


class _Server:
    """uvicorn without its signal handling: the process that embeds us (envd, the CLI) owns SIGINT/SIGTERM."""

    @staticmethod
    def make(target: Any, host: str, port: int, **app_options: Any) -> Any:
        import uvicorn

        class QuietServer(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):  # noqa: ANN202 - uvicorn's hook
                yield

        config = uvicorn.Config(build_mcp_app(target, host=host, **app_options), host=host, port=port,
                                log_level="warning", lifespan="on", access_log=False)
        return QuietServer(config)


def bound_port(server: Any) -> int:
    return server.servers[0].sockets[0].getsockname()[1]


async def serve_mcp(target: Any, host: str = "127.0.0.1", port: int = 8765,
                    on_ready: Callable[[int], None] | None = None, *,
                    token: TokenFile | None = None, allowed_hosts: Sequence[str] = (),
                    backend_token: StaticToken | TokenFile | None = None, **app_options: Any) -> None:
    """Serve MCP on host:port until cancelled, then shut it down gracefully.

    envd runs it beside its gRPC server: `loop.create_task(serve_mcp(runtime, host, mcp_port, token=tokens))`. The
    HTTP server runs on its own thread and event loop, so a busy MCP client never stalls the gRPC loop and the
    embedding process's shutdown (which cancels every task) cannot tear uvicorn apart mid-way. The keywords are
    `build_mcp_app`'s.
    """
    handle = await asyncio.to_thread(serve_mcp_in_thread, target, host, port, token=token,
                                     allowed_hosts=allowed_hosts, backend_token=backend_token, **app_options)
    if on_ready is not None:
        on_ready(handle.port)
    try:
        while handle.thread.is_alive():
            await asyncio.sleep(0.5)
        raise RuntimeError(f"the MCP server on {host}:{port} stopped unexpectedly")
    finally:
        handle._server.should_exit = True
        with contextlib.suppress(BaseException):
            await asyncio.to_thread(handle.stop)


class McpServerHandle:
    """A running MCP HTTP server (uvicorn in a daemon thread with its own event loop)."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self.thread = thread

    @property
    def port(self) -> int:
        """The bound port (useful with port=0)."""
        return bound_port(self._server)

    def wait(self) -> None:
        while self.thread.is_alive():
            self.thread.join(0.5)  # a timed join keeps Ctrl-C deliverable

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> McpServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_mcp_in_thread(target: Any, host: str = "127.0.0.1", port: int = 8765,
                        startup_timeout_s: float = 15.0, *, token: TokenFile | None = None,
                        allowed_hosts: Sequence[str] = (), backend_token: StaticToken | TokenFile | None = None,
                        **app_options: Any) -> McpServerHandle:
    """Serve MCP on a daemon thread; returns once listening (tests, `agentworld mcp`, embedding in sync code).

    `token`, `allowed_hosts`, `backend_token` and `app_options` (session_idle_timeout_s, max_mcp_sessions) go to
    `build_mcp_app`.
    """
    server = _Server.make(target, host, port, token=token, allowed_hosts=allowed_hosts,
                          backend_token=backend_token, **app_options)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced to the caller below (uvicorn exits on bind errors)
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"mcp-http-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if failure or not thread.is_alive():
            detail = f"{type(failure[0]).__name__}: {failure[0]}" if failure else "exited"
            raise OSError(f"MCP server on {host}:{port} failed to start ({detail}; is the port in use?)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"MCP server on {host}:{port} did not start within {startup_timeout_s:.0f} s")
        time.sleep(0.02)
    return McpServerHandle(server, thread)
