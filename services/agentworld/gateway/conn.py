"""A gateway's connection to one backend: raw (bytes in, bytes out) method callables so forwarding never re-encodes."""

from __future__ import annotations

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

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
    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.raw = {m: self.channel.unary_unary(f"/{SERVICE}/{m}") for m in METHODS}
        self._health = health_pb2_grpc.HealthStub(self.channel)

    async def health(self, timeout: float) -> bool:
        """True when the backend says SERVING; raises grpc.RpcError when it cannot be reached."""
        resp = await self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        return resp.status == health_pb2.HealthCheckResponse.SERVING

    async def stats(self, timeout: float) -> pb.GetStatsResponse:
        raw = await self.raw["GetStats"](pb.GetStatsRequest().SerializeToString(), timeout=timeout)
        return pb.GetStatsResponse.FromString(raw)

    async def envs(self, timeout: float) -> list[pb.EnvInfo]:
        raw = await self.raw["ListEnvs"](pb.ListEnvsRequest().SerializeToString(), timeout=timeout)
        return list(pb.ListEnvsResponse.FromString(raw).envs)

    async def close(self) -> None:
        await self.channel.close()
