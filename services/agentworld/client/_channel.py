"""Channel settings and the retry schedule shared by both clients."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

import grpc

from agentworld.auth import AUTH_METADATA_KEY, StaticToken, TokenFile, bearer, client_token
from agentworld.limits import DEFAULT_LEASE_TTL_S, MAX_MESSAGE_BYTES
from agentworld.placement import LOST_TRAILER

from .errors import ClientClosedError, EnvClientError, from_rpc_error

DEFAULT_TIMEOUT_S = 30.0
# Waits before resending a call that failed with UNAVAILABLE (7 retries over about 6 s, then the error surfaces):
# long enough for a gateway replica to restart, or for the channel to move to another replica.
RETRY_BACKOFF_S: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)

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


def channel_target(address: str) -> tuple[str, list[tuple[str, Any]]]:
    """The gRPC target and extra channel options for `address`: HOST:PORT, any gRPC target (dns:///name:port), or
    several IP:PORT separated by commas (gateway replicas: calls spread round-robin, and move off a dead one)."""
    if "," not in address:
        return address, []
    parts = [a.strip() for a in address.split(",") if a.strip()]
    for part in parts:
        host = part.rpartition(":")[0].strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"address list {address!r}: give IP:PORT entries (for names use dns:///NAME:PORT)"
                             ) from None
    scheme = "ipv6" if all(":" in a.rpartition(":")[0] for a in parts) else "ipv4"
    return f"{scheme}:{','.join(parts)}", [("grpc.lb_policy_name", "round_robin")]


Credentials = StaticToken | TokenFile


def credentials(token: str | Credentials | None) -> Credentials | None:
    """A client's token: given (a value, or an object with `.current()`), else $AGENTWORLD_TOKEN(_FILE)."""
    if token is None or isinstance(token, str):
        return client_token(token)
    return token


def call_metadata(creds: Credentials | None) -> tuple[tuple[str, str], ...] | None:
    return ((AUTH_METADATA_KEY, bearer(creds.current())),) if creds is not None else None


def should_retry(exc: grpc.RpcError, retryable: bool, attempt: int, backoff: tuple[float, ...]) -> float | None:
    """Seconds to wait before the next attempt, or None to give up. Only UNAVAILABLE is retried, and not when the
    gateway says the session was lost with its backend (no retry can bring it back)."""
    if not retryable or attempt >= len(backoff):
        return None
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    if code != grpc.StatusCode.UNAVAILABLE:
        return None
    trailers = exc.trailing_metadata() if callable(getattr(exc, "trailing_metadata", None)) else None
    if any(key == LOST_TRAILER for key, _ in trailers or ()):
        return None
    return backoff[attempt]


def translate(exc: BaseException, method: str) -> EnvClientError:
    """The typed error for whatever a stub call raised."""
    if isinstance(exc, grpc.RpcError):
        return from_rpc_error(exc, method)
    # grpc raises ValueError("Cannot invoke RPC on closed channel!") once the channel is closed.
    return ClientClosedError(str(exc) or "client is closed", method=method)
