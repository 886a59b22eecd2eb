"""BackendConn, the gateway's connection to one backend: a call in flight when its backend is removed must end with
a status the gateway can answer with."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from agentworld.gateway.conn import SERVICE, BackendConn
from agentworld.v1 import env_pb2 as pb

RAW = pb.GetStateHashRequest(session_id="s-x@n").SerializeToString()


class FrozenBackend:
    """A real gRPC server whose GetStateHash never answers (a backend that froze mid-call)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            SERVICE, {"GetStateHash": grpc.unary_unary_rpc_method_handler(self._hang)}),))
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"

    async def _hang(self, _request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        self.started.set()
        await asyncio.Event().wait()
        return b""


@pytest.fixture
async def frozen() -> AsyncIterator[FrozenBackend]:
    backend = FrozenBackend()
    await backend.server.start()
    try:
        yield backend
    finally:
        await backend.server.stop(None)


async def test_a_call_in_flight_fails_with_cancelled_when_the_connection_is_closed(frozen: FrozenBackend) -> None:
    # Before: closing the channel made the waiting call raise asyncio.CancelledError, which cancelled the gateway's
    # own handler, so its caller got no status until its deadline (the router's resend of a call on a just-killed
    # backend, removed by the health check meanwhile, timed out instead of saying the session was lost).
    conn = BackendConn(frozen.address)
    call = asyncio.ensure_future(conn.call("GetStateHash", RAW, timeout=600))
    await asyncio.wait_for(frozen.started.wait(), timeout=60)
    await conn.close()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.CANCELLED and frozen.address in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError, match="was closed"):  # and later calls fail at once
        await conn.call("GetStateHash", RAW, timeout=600)


async def test_cancelling_the_caller_still_cancels_it(frozen: FrozenBackend) -> None:
    """Only a close turns cancellation into a status: a caller that is itself cancelled sees CancelledError."""
    conn = BackendConn(frozen.address)
    try:
        call = asyncio.ensure_future(conn.call("GetStateHash", RAW, timeout=600))
        await asyncio.wait_for(frozen.started.wait(), timeout=60)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    finally:
        await conn.close()
