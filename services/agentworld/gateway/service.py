"""EnvService served by the gateway: places sessions on backends and forwards each call, as raw bytes, to the
backend that holds the session."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from agentworld import placement
from agentworld.v1 import env_pb2 as pb

from .conn import SERVICE
from .core import Gateway
from .registry import Backend, NoBackendError, RouteError

# Requests bound to one session (all carry `session_id` as field 1), forwarded untouched.
_LOST = ((placement.LOST_TRAILER, "1"),)  # tells clients not to retry

_ROUTED: dict[str, Any] = {
    "ListTools": pb.ListToolsRequest,
    "CallTool": pb.CallToolRequest,
    "Reset": pb.ResetRequest,
    "Snapshot": pb.SnapshotRequest,
    "Restore": pb.RestoreRequest,
    "Verify": pb.VerifyRequest,
    "GetStateHash": pb.GetStateHashRequest,
}

Handler = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


class GatewayService:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.reg = gateway.registry

    # -- helpers ---------------------------------------------------------------------------------------------
    @staticmethod
    async def _parse(cls: Any, raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            return cls.FromString(raw)
        except DecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {cls.__name__}: {exc}")
            raise AssertionError("unreachable") from exc

    async def _route(self, session_id: str, context: grpc.aio.ServicerContext) -> Backend:
        try:
            return self.reg.route(session_id)
        except RouteError as exc:
            await context.abort(exc.code, str(exc), _LOST if exc.lost else ())
            raise AssertionError("unreachable") from exc

    async def _forward(
        self, backend: Backend, method: str, raw: bytes, context: grpc.aio.ServicerContext, session_id: str
    ) -> bytes:
        try:
            return await backend.conn.call(method, raw, context.time_remaining())
        except grpc.aio.AioRpcError as exc:
            # Removed while the call was in flight (its channel closed: CANCELLED), or unreachable now.
            lost = not backend.alive or (exc.code() == grpc.StatusCode.UNAVAILABLE and await self.gw.confirm_dead(backend))
            if lost:
                why = self.reg.gone.get(backend.node_id, f"backend {backend.name} ({backend.address}) is gone")
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"session {session_id} was lost: {why}", _LOST)
            await context.abort(exc.code(), exc.details() or exc.code().name)
            raise AssertionError("unreachable") from exc

    def _place(self, sessions: list[pb.SessionInfo], backend: Backend) -> None:
        self.reg.created(backend, len(sessions))
        if self.gw.direct:  # the client talks to the backend from now on
            for session in sessions:
                session.backend_address = backend.address

    # -- handlers --------------------------------------------------------------------------------------------
    def routed(self, method: str) -> Handler:
        request_cls = _ROUTED[method]

        async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            session_id = (await self._parse(request_cls, raw, context)).session_id
            backend = await self._route(session_id, context)
            return await self._forward(backend, method, raw, context, session_id)

        return handle

    async def create_session(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request = await self._parse(pb.CreateSessionRequest, raw, context)
        try:
            candidates = self.reg.candidates(request.env_id)
        except NoBackendError as exc:
            await context.abort(exc.code, str(exc))
            raise AssertionError("unreachable") from exc
        failures: list[str] = []
        exhausted = True
        for backend in candidates:  # least loaded first; spill over when one is full or unreachable
            backend.pending += 1
            try:
                reply = await backend.conn.call("CreateSession", raw, context.time_remaining())
            except grpc.aio.AioRpcError as exc:
                code = exc.code() if backend.alive else grpc.StatusCode.UNAVAILABLE  # removed mid-call
                if code == grpc.StatusCode.FAILED_PRECONDITION:  # shutting down: no more sessions there
                    backend.reported_draining = True
                elif code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
                    await context.abort(code, exc.details() or code.name)
                exhausted &= code == grpc.StatusCode.RESOURCE_EXHAUSTED
                failures.append(f"{backend.name}: {code.name} {exc.details()}")
                if code == grpc.StatusCode.UNAVAILABLE:
                    await self.gw.confirm_dead(backend)
                continue
            finally:
                backend.pending -= 1
            if not self.gw.direct:
                self.reg.created(backend)
                return reply
            response = pb.CreateSessionResponse.FromString(reply)
            self._place([response.session], backend)
            return response.SerializeToString()
        code = grpc.StatusCode.RESOURCE_EXHAUSTED if exhausted else grpc.StatusCode.UNAVAILABLE
        await context.abort(code, f"no backend could create a {request.env_id!r} session: " + "; ".join(failures))
        raise AssertionError("unreachable")

    async def fork(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        session_id = (await self._parse(pb.ForkRequest, raw, context)).session_id
        backend = await self._route(session_id, context)
        reply = await self._forward(backend, "Fork", raw, context, session_id)
        response = pb.ForkResponse.FromString(reply)
        self._place(list(response.sessions), backend)  # children live where the parent's state is
        return response.SerializeToString() if self.gw.direct else reply

    async def close_session(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        session_id = (await self._parse(pb.CloseSessionRequest, raw, context)).session_id
        try:
            backend = self.reg.route(session_id)
        except RouteError as exc:
            node = placement.node_of(session_id)
            if node is not None and node in self.reg.gone:  # lost with its backend: nothing left to close
                return b""
            await context.abort(exc.code, str(exc))
            raise AssertionError("unreachable") from exc
        reply = await self._forward(backend, "CloseSession", raw, context, session_id)
        self.reg.closed(backend)
        return reply

    async def list_envs(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return pb.ListEnvsResponse(envs=self.reg.envs()).SerializeToString()

    async def get_stats(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Totals over live backends (their last health-check figures, kept current by this gateway's creates and
        closes). Draining: the gateway is shutting down, or every live backend is draining."""
        live = self.reg.live()
        out = pb.GetStatsResponse(backends=len(live),
                                  draining=self.gw.draining or bool(live) and all(b.draining for b in live))
        env_ids: set[str] = set()
        for backend in live:
            stats = backend.stats
            out.active_sessions += backend.load
            out.max_sessions += backend.max_sessions
            if stats is not None:
                for name in ("tool_calls", "tool_errors", "sessions_created", "sessions_expired", "rss_bytes",
                             "memory_budget_bytes", "memory_used_bytes", "snapshots", "workers"):
                    setattr(out, name, getattr(out, name) + getattr(stats, name))
            env_ids |= backend.env_ids
        out.env_ids.extend(sorted(env_ids))
        return out.SerializeToString()

    async def keep_alive(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """A client's lease spans every backend its sessions are on: renew it on all of them."""
        await self._parse(pb.KeepAliveRequest, raw, context)
        backends = self.reg.live()
        replies = await asyncio.gather(*(b.conn.call("KeepAlive", raw, context.time_remaining()) for b in backends),
                                       return_exceptions=True)
        out = pb.KeepAliveResponse()
        for reply in replies:
            if isinstance(reply, bytes):
                answer = pb.KeepAliveResponse.FromString(reply)
                out.ttl_s = min(out.ttl_s, answer.ttl_s) if out.ttl_s else answer.ttl_s
                out.sessions += answer.sessions
            elif isinstance(reply, grpc.aio.AioRpcError) and reply.code() == grpc.StatusCode.INVALID_ARGUMENT:
                await context.abort(reply.code(), reply.details() or "invalid lease_id")
        return out.SerializeToString()

    def fast_path(self) -> list[str]:
        """Methods the router may send straight to a session's backend: those bound to one session, except where
        this gateway must see the reply (Fork in direct mode names the children's backend)."""
        methods = [*_ROUTED, "CloseSession", "Fork"]
        return [m for m in methods if not (self.gw.direct and m == "Fork")]

    def handler(self) -> grpc.GenericRpcHandler:
        handlers: dict[str, Handler] = {m: self.routed(m) for m in _ROUTED}
        handlers.update(
            CreateSession=self.create_session,
            Fork=self.fork,
            CloseSession=self.close_session,
            ListEnvs=self.list_envs,
            GetStats=self.get_stats,
            KeepAlive=self.keep_alive,
        )
        # No (de)serializers: handlers take and return the wire bytes, so forwarded payloads are never re-encoded.
        return grpc.method_handlers_generic_handler(
            SERVICE, {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in handlers.items()}
        )
