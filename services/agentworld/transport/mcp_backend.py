"""What the MCP front end needs from whatever holds the sessions, and two implementations.

`RuntimeBackend` serves an in-process `EnvRuntime` (inside envd); `ClientBackend` serves anything speaking the
gRPC contract (a gateway, or a remote envd) through `AsyncEnvClient`. Both raise `BackendError` with a kind the
MCP layer maps to a tool error result or a JSON-RPC error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from agentworld.auth import StaticToken, TokenFile
    from agentworld.client import AsyncEnvClient
    from agentworld.runtime import EnvRuntime

ErrorKind = Literal["not_found", "invalid_argument", "unavailable", "exhausted", "failed"]


class BackendError(Exception):
    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class ToolOutcome:
    is_error: bool
    content: str
    http_status: int = 0
    duration_ms: float = 0.0


@dataclass(frozen=True)
class EnvSummary:
    env_id: str
    title: str
    description: str
    tasks: list[dict[str, str]] = field(default_factory=list)


@runtime_checkable
class McpBackend(Protocol):
    """The session surface MCP exposes: list envs, open/close sessions, list and call tools, verify."""

    async def list_envs(self) -> list[EnvSummary]: ...
    async def create_session(self, env_id: str, task_id: str | None = None) -> str: ...
    async def list_tools(self, session_id: str) -> list[dict[str, Any]]: ...
    async def call_tool(self, session_id: str, name: str, arguments: dict[str, Any]) -> ToolOutcome: ...
    async def verify(self, session_id: str, final_answer: str | None = None) -> dict[str, Any]: ...
    async def reset(self, session_id: str) -> None: ...
    async def close_session(self, session_id: str) -> None: ...
    async def aclose(self) -> None: ...


def _runtime_kind(exc: Exception) -> ErrorKind:
    from agentworld.runtime import errors

    if isinstance(exc, errors.NotFound):
        return "not_found"
    if isinstance(exc, errors.InvalidArgument):
        return "invalid_argument"
    if isinstance(exc, errors.ResourceExhausted):
        return "exhausted"
    if isinstance(exc, errors.Unavailable):
        return "unavailable"
    return "failed"


class RuntimeBackend:
    """An in-process EnvRuntime (envd's own MCP port). Cheap calls run inline; tool calls use the async twins."""

    def __init__(self, runtime: EnvRuntime) -> None:
        self.runtime = runtime

    def _wrap(self, exc: Exception) -> BackendError:
        return BackendError(_runtime_kind(exc), str(exc))

    async def list_envs(self) -> list[EnvSummary]:
        return [
            EnvSummary(e.env_id, e.title, e.description,
                       [{"task_id": t.task_id, "instruction": t.instruction, "kind": t.kind} for t in e.tasks])
            for e in self.runtime.envs()
        ]

    async def create_session(self, env_id: str, task_id: str | None = None) -> str:
        from agentworld.runtime import errors

        try:
            return (await self.runtime.acreate_session(env_id, task_id)).session_id
        except errors.EnvError as exc:
            raise self._wrap(exc) from exc

    async def list_tools(self, session_id: str) -> list[dict[str, Any]]:
        from agentworld.runtime import errors

        try:
            specs = self.runtime.list_tools(session_id)
        except errors.EnvError as exc:
            raise self._wrap(exc) from exc
        return [{"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in specs]

    async def call_tool(self, session_id: str, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        from agentworld.runtime import errors

        try:
            r = await self.runtime.acall_tool(session_id, name, arguments)
        except errors.EnvError as exc:
            raise self._wrap(exc) from exc
        return ToolOutcome(r.is_error, r.content, r.http_status, r.duration_ms)

    async def verify(self, session_id: str, final_answer: str | None = None) -> dict[str, Any]:
        from agentworld.runtime import errors

        try:
            v = await self.runtime.averify(session_id, final_answer=final_answer)
        except errors.EnvError as exc:
            raise self._wrap(exc) from exc
        return {"outcome": v.outcome, "reward": v.reward, "details": v.details, "duration_ms": v.duration_ms}

    async def reset(self, session_id: str) -> None:
        from agentworld.runtime import errors

        try:
            await self.runtime.areset(session_id)
        except errors.EnvError as exc:
            raise self._wrap(exc) from exc

    async def close_session(self, session_id: str) -> None:
        from agentworld.runtime import errors

        try:
            await self.runtime.aclose_session(session_id)
        except errors.EnvError as exc:
            raise self._wrap(exc) from exc

    async def aclose(self) -> None:
        """The runtime belongs to envd; it closes it."""


def _client_kind(exc: Exception) -> ErrorKind:
    from agentworld.client import errors

    if isinstance(exc, errors.NotFoundError):
        return "not_found"
    if isinstance(exc, errors.InvalidArgumentError):
        return "invalid_argument"
    if isinstance(exc, errors.UnavailableError):
        return "unavailable"
    if isinstance(exc, errors.ResourceExhaustedError):
        return "exhausted"
    return "failed"


class ClientBackend:
    """Sessions behind a gRPC address (the gateway, or envd in another process), through AsyncEnvClient."""

    def __init__(self, client: AsyncEnvClient | str, owns_client: bool | None = None,
                 token: StaticToken | TokenFile | None = None) -> None:
        """`token`: what the client made for an address presents (None: the client's default, $AGENTWORLD_TOKEN or
        $AGENTWORLD_TOKEN_FILE); a client passed in already carries its own."""
        if isinstance(client, str):
            from agentworld.client import AsyncEnvClient

            client = AsyncEnvClient(client, token=token)
            owns_client = True if owns_client is None else owns_client
        elif token is not None:
            raise ValueError(_TOKEN_NEEDS_ADDRESS)
        self.client = client
        self.owns_client = bool(owns_client)
        self._tools: dict[str, list[dict[str, Any]]] = {}
        self._lock = asyncio.Lock()

    async def _do(self, coro):  # noqa: ANN001, ANN202 - any client coroutine
        from agentworld.client import EnvClientError

        try:
            return await coro
        except EnvClientError as exc:
            raise BackendError(_client_kind(exc), exc.message) from exc

    async def list_envs(self) -> list[EnvSummary]:
        envs = await self._do(self.client.list_envs())
        return [
            EnvSummary(e.env_id, e.title, e.description,
                       [{"task_id": t.task_id, "instruction": t.instruction, "kind": t.kind} for t in e.tasks])
            for e in envs
        ]

    async def create_session(self, env_id: str, task_id: str | None = None) -> str:
        session = await self._do(self.client.create_session(env_id, task_id))
        return session.session_id

    async def list_tools(self, session_id: str) -> list[dict[str, Any]]:
        return await self._do(self.client.session(session_id).list_tools())

    async def call_tool(self, session_id: str, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        r = await self._do(self.client.session(session_id).call_tool(name, arguments))
        return ToolOutcome(r.is_error, r.content, r.http_status, r.duration_ms)

    async def verify(self, session_id: str, final_answer: str | None = None) -> dict[str, Any]:
        v = await self._do(self.client.session(session_id).verify(final_answer=final_answer))
        return {"outcome": v.outcome, "reward": v.reward, "details": v.details, "duration_ms": v.duration_ms}

    async def reset(self, session_id: str) -> None:
        await self._do(self.client.session(session_id).reset())

    async def close_session(self, session_id: str) -> None:
        await self._do(self.client.session(session_id).close())

    async def aclose(self) -> None:
        if self.owns_client:
            await self.client.close()


_TOKEN_NEEDS_ADDRESS = ("a backend token (the MCP edge's backend_token) is for a gRPC address only: an AsyncEnvClient "
                        "carries its own token and an in-process runtime needs none")


def as_backend(target: Any, token: StaticToken | TokenFile | None = None) -> McpBackend:
    """An McpBackend for an EnvRuntime, an AsyncEnvClient, a gRPC address, or a backend itself. `token` goes to the
    gRPC client made for an address (refused for other targets rather than silently dropped)."""
    if isinstance(target, str):
        return ClientBackend(target, token=token)
    if token is not None:
        raise ValueError(_TOKEN_NEEDS_ADDRESS)
    if isinstance(target, McpBackend):
        return target
    from agentworld.client import AsyncEnvClient

    if isinstance(target, AsyncEnvClient):
        return ClientBackend(target, owns_client=False)
    return RuntimeBackend(target)
