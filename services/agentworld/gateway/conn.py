"""A gateway's connection to one backend: raw (bytes in, bytes out) method callables so forwarding never re-encodes."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentworld.auth import AUTH_METADATA_KEY, TokenFile, bearer
from agentworld.client._channel import CHANNEL_OPTIONS
from agentworld.v1 import env_pb2 as pb

SERVICE = "agentworld.v1.EnvService"
METHODS = (
    "ListEnvs",
    "CreateSession",
    "ListTools",
    "CallTool",
    "Reset",
    "Snapshot",
    "Restore",
    "Fork",
    "Verify",
    "GetStateHash",
    "CloseSession",
    "GetStats",
    "KeepAlive",
)


class BackendConn:
    def __init__(self, address: str, tokens: TokenFile | None = None) -> None:
        self.address = address
        self.tokens = tokens
        self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._methods = {m: self.channel.unary_unary(f"/{SERVICE}/{m}") for m in METHODS}
        self._health = health_pb2_grpc.HealthStub(self.channel)
        self._in_flight: set[grpc.aio.UnaryUnaryCall] = set()
        self.closed = False

    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        return ((AUTH_METADATA_KEY, bearer(self.tokens.current())),) if self.tokens is not None else None

    async def call(self, method: str, raw: bytes, timeout: float | None) -> bytes:
        """Forward one request's bytes; returns the reply's. A call still waiting when the connection is closed (its
        backend was removed) fails with CANCELLED: grpc.aio would leave it waiting out its whole deadline."""
        if self.closed:
            raise _closed_error(self.address)
        call = self._methods[method](raw, timeout=timeout, metadata=self.metadata())
        self._in_flight.add(call)
        try:
            return await call
        except asyncio.CancelledError:
            if self.closed and not _current_task_cancelling():
                raise _closed_error(self.address) from None
            raise
        finally:
            self._in_flight.discard(call)

    async def health(self, timeout: float) -> bool:
        """True when the backend says SERVING; raises grpc.RpcError when it cannot be reached."""
        resp = await self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        return resp.status == health_pb2.HealthCheckResponse.SERVING

    async def stats(self, timeout: float) -> pb.GetStatsResponse:
        raw = await self.call("GetStats", pb.GetStatsRequest().SerializeToString(), timeout)
        return pb.GetStatsResponse.FromString(raw)

    async def envs(self, timeout: float) -> list[pb.EnvInfo]:
        raw = await self.call("ListEnvs", pb.ListEnvsRequest().SerializeToString(), timeout)
        return list(pb.ListEnvsResponse.FromString(raw).envs)

    async def close(self) -> None:
        self.closed = True
        for call in list(self._in_flight):
            call.cancel()
        await self.channel.close()


def _closed_error(address: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.CANCELLED, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                f"the connection to backend {address} was closed (the backend was removed)")


def _current_task_cancelling() -> bool:
    """True when the caller itself is being cancelled (not just the gRPC call under it)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
