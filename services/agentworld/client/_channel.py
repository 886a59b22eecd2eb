"""Channel settings and the retry schedule shared by both clients."""

from __future__ import annotations

import uuid

import grpc

from agentworld.limits import DEFAULT_LEASE_TTL_S, MAX_MESSAGE_BYTES

from .errors import ClientClosedError, EnvClientError, from_rpc_error

DEFAULT_TIMEOUT_S = 30.0
# Waits before retrying an idempotent call that failed with UNAVAILABLE (3 retries, then the error surfaces).
RETRY_BACKOFF_S: tuple[float, ...] = (0.05, 0.1, 0.2)

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Reconnect quickly after a server restart (gRPC's default first backoff is 1 s, growing to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 0),
]


def new_lease_id() -> str:
    """A client's lease: random, so two clients never share one."""
    return f"lease-{uuid.uuid4().hex}"


def keepalive_interval(server_ttl_s: float | None) -> float:
    """Renew three times per lease TTL (the server's, once it has said)."""
    return max(0.05, (server_ttl_s or DEFAULT_LEASE_TTL_S) / 3)


def should_retry(exc: grpc.RpcError, idempotent: bool, attempt: int, backoff: tuple[float, ...]) -> float | None:
    """Seconds to wait before the next attempt, or None to give up."""
    if not idempotent or attempt >= len(backoff):
        return None
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    return backoff[attempt] if code == grpc.StatusCode.UNAVAILABLE else None


def translate(exc: BaseException, method: str) -> EnvClientError:
    """The typed error for whatever a stub call raised."""
    if isinstance(exc, grpc.RpcError):
        return from_rpc_error(exc, method)
    # grpc raises ValueError("Cannot invoke RPC on closed channel!") once the channel is closed.
    return ClientClosedError(str(exc) or "client is closed", method=method)
