"""The gRPC edge of envd: agentworld.v1.EnvService over EnvRuntime, plus grpc.health.v1 and reflection.

Thin by design: convert protobuf <-> runtime types and map runtime errors to status codes.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agentworld.auth import TokenFile
from agentworld.limits import GRPC_SERVER_OPTIONS
from agentworld.runtime import EnvRuntime, SessionInfo
from agentworld.runtime import errors as rt_errors
from agentworld.transport.background import BackgroundServer, start_in_thread
from agentworld.transport.grpc_auth import interceptors
from agentworld.v1 import env_pb2, env_pb2_grpc

log = logging.getLogger("agentworld.envd")

SERVICE_NAME = env_pb2.DESCRIPTOR.services_by_name["EnvService"].full_name
MAX_DETAILS_CHARS = 2000  # status details travel in headers: never let a message overflow them

STATUS_OF = {
    rt_errors.NotFound: grpc.StatusCode.NOT_FOUND,
    rt_errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    rt_errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    rt_errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    rt_errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    rt_errors.Aborted: grpc.StatusCode.ABORTED,
    rt_errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}

R = TypeVar("R")


def status_for(exc: rt_errors.EnvError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return grpc.StatusCode.INTERNAL


def _mapped(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Turn runtime errors into gRPC statuses carrying the error's message."""

    @functools.wraps(method)
    async def wrapper(self: EnvServicer, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await method(self, request, context)
        except rt_errors.EnvError as exc:
            details = str(exc)
            if len(details) > MAX_DETAILS_CHARS:
                details = details[:MAX_DETAILS_CHARS] + f"... ({len(details)} characters)"
            await context.abort(status_for(exc), details)
        except Exception:
            log.exception("internal error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method.__name__}; see the server log")

    return wrapper


def session_pb(info: SessionInfo) -> env_pb2.SessionInfo:
    return env_pb2.SessionInfo(
        session_id=info.session_id, env_id=info.env_id, task_id=info.task_id or "", state_hash=info.state_hash
    )


class EnvServicer(env_pb2_grpc.EnvServiceServicer):
    def __init__(self, runtime: EnvRuntime) -> None:
        self.rt = runtime

    @_mapped
    async def ListEnvs(self, request, context):
        envs = [
            env_pb2.EnvInfo(
                env_id=e.env_id,
                title=e.title,
                description=e.description,
                content_hash=e.content_hash,
                tool_count=e.tool_count,
                table_count=e.table_count,
                tasks=[env_pb2.TaskInfo(task_id=t.task_id, instruction=t.instruction, kind=t.kind) for t in e.tasks],
            )
            for e in self.rt.envs()
        ]
        return env_pb2.ListEnvsResponse(envs=envs)

    @_mapped
    async def CreateSession(self, request, context):
        info = await self.rt.acreate_session(request.env_id, request.task_id or None, request.lease_id or None)
        return env_pb2.CreateSessionResponse(session=session_pb(info))

    @_mapped
    async def ListTools(self, request, context):
        tools = [
            env_pb2.Tool(name=t.name, description=t.description, input_schema_json=t.input_schema_json)
            for t in self.rt.list_tools(request.session_id)
        ]
        return env_pb2.ListToolsResponse(tools=tools)

    @_mapped
    async def CallTool(self, request, context):
        # The call's own timeout (else envd's), and never past the RPC's deadline: a caller that gave up finds
        # nothing committed.
        timeout = request.timeout_ms / 1000 if request.timeout_ms else self.rt.config.call_timeout_s
        remaining = context.time_remaining()
        result = await self.rt.acall_tool(request.session_id, request.tool_name, request.arguments_json,
                                          timeout if remaining is None else min(timeout, max(remaining, 0.001)),
                                          request.call_id or None)
        return env_pb2.CallToolResponse(
            is_error=result.is_error, content=result.content, http_status=result.http_status,
            duration_ms=result.duration_ms,
        )

    @_mapped
    async def Reset(self, request, context):
        return env_pb2.ResetResponse(state_hash=await self.rt.areset(request.session_id))

    @_mapped
    async def Snapshot(self, request, context):
        snap = await self.rt.asnapshot(request.session_id, export=request.export, ttl_s=request.ttl_s or None)
        return env_pb2.SnapshotResponse(snapshot_id=snap.snapshot_id, state_hash=snap.state_hash, data=snap.data or b"")

    @_mapped
    async def Restore(self, request, context):
        source = request.WhichOneof("source")
        digest = await self.rt.arestore(
            request.session_id,
            snapshot_id=request.snapshot_id if source == "snapshot_id" else None,
            data=request.data if source == "data" else None,
        )
        return env_pb2.RestoreResponse(state_hash=digest)

    @_mapped
    async def Fork(self, request, context):
        children = await self.rt.afork(request.session_id, request.n)
        return env_pb2.ForkResponse(sessions=[session_pb(c) for c in children])

    @_mapped
    async def Verify(self, request, context):
        answer = request.final_answer if request.has_final_answer or request.final_answer else None
        verdict = await self.rt.averify(request.session_id, request.task_id or None, answer)
        return env_pb2.VerifyResponse(
            outcome=verdict.outcome, reward=verdict.reward, details_json=json.dumps(verdict.details, default=str),
            duration_ms=verdict.duration_ms,
        )

    @_mapped
    async def GetStateHash(self, request, context):
        return env_pb2.GetStateHashResponse(state_hash=await self.rt.astate_hash(request.session_id))

    @_mapped
    async def CloseSession(self, request, context):
        await self.rt.aclose_session(request.session_id)
        return env_pb2.CloseSessionResponse()

    @_mapped
    async def GetStats(self, request, context):
        s = self.rt.stats()
        return env_pb2.GetStatsResponse(
            active_sessions=s.active_sessions, max_sessions=s.max_sessions, tool_calls=s.tool_calls,
            tool_errors=s.tool_errors, sessions_created=s.sessions_created, sessions_expired=s.sessions_expired,
            rss_bytes=s.rss_bytes, env_ids=s.env_ids, draining=s.draining,
            memory_budget_bytes=s.memory_budget_bytes, memory_used_bytes=s.memory_used_bytes,
            snapshots=s.snapshots, workers=s.workers, sandbox_layers=s.sandbox_layers, node_id=s.node_id,
        )

    @_mapped
    async def KeepAlive(self, request, context):
        ttl_s, sessions = await self.rt.akeep_alive(request.lease_id)
        return env_pb2.KeepAliveResponse(ttl_s=ttl_s, sessions=sessions)


def build_server(runtime: EnvRuntime, address: str, tokens: TokenFile | None = None
                 ) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """An aio server with EnvService, health (SERVING) and reflection bound to `address`; returns the port.
    With `tokens`, every call but health checks needs one of them."""
    server = grpc.aio.server(options=GRPC_SERVER_OPTIONS, interceptors=interceptors(tokens))
    env_pb2_grpc.add_EnvServiceServicer_to_server(EnvServicer(runtime), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind gRPC server to {address}")
    return server, port, health_servicer


async def serve(runtime: EnvRuntime, host: str = "127.0.0.1", port: int = 50051,
                on_ready: Callable[[int], None] | None = None, stop: asyncio.Event | None = None,
                tokens: TokenFile | None = None) -> None:
    """Serve until `stop` is set (or forever); reports NOT_SERVING while draining, then closes the runtime."""
    server, bound, health_servicer = build_server(runtime, f"{host}:{port}", tokens)
    await runtime.astart()
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if on_ready:
        on_ready(bound)
    try:
        if stop is None:
            await server.wait_for_termination()
        else:
            await stop.wait()
    finally:
        runtime.draining = True
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.stop(grace=2.0)
        runtime.close()


@dataclass
class RunningServer(BackgroundServer):
    """An envd on a background thread (tests, benchmarks, the demo)."""

    runtime: EnvRuntime | None = None


def serve_in_thread(runtime: EnvRuntime, host: str = "127.0.0.1", port: int = 0,
                    tokens: TokenFile | None = None) -> RunningServer:
    """Start envd on a daemon thread with its own event loop; returns once it is accepting calls."""

    def run(on_ready: Callable[[int], None], stop: asyncio.Event) -> Awaitable[None]:
        return serve(runtime, host, port, on_ready=on_ready, stop=stop, tokens=tokens)

    bound, loop, stop, thread = start_in_thread(run, host, "envd-grpc", timeout_s=30)
    return RunningServer(bound, host, loop, stop, thread, runtime=runtime)
