"""Bearer-token authentication for gRPC servers (envd and the gateway): every call but health checks needs a token
from the server's token file; anything else gets UNAUTHENTICATED saying how to send one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health

from agentworld.auth import AUTH_METADATA_KEY, UNAUTHENTICATED_HINT, TokenFile

EXEMPT_PREFIXES = (f"/{health.SERVICE_NAME}/",)  # kubelet and load balancer probes carry no token


def _denied(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as the real one that only refuses the call."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: TokenFile) -> None:
        self.tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(EXEMPT_PREFIXES):
            return handler
        presented = next((v for k, v in details.invocation_metadata or () if k == AUTH_METADATA_KEY), None)
        if self.tokens.accepts(presented if isinstance(presented, str) else None):
            return handler
        why = "no bearer token" if presented is None else "the bearer token is not accepted"
        return _denied(handler, f"{why}: {UNAUTHENTICATED_HINT}")


def interceptors(tokens: TokenFile | None) -> list[grpc.aio.ServerInterceptor]:
    return [BearerTokenInterceptor(tokens)] if tokens is not None else []
