"""Typed client errors: one class per gRPC status code the contract uses, each carrying `.code` and the server's message.

Catch `EnvClientError` for everything; catch a subclass to react to one condition (e.g. `ResourceExhaustedError`
to back off when a server is at its session limit).
"""

from __future__ import annotations

import grpc


class EnvClientError(Exception):
    """Base class: a call failed. `.code` is the gRPC status code, `.message` the server's explanation."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None, method: str | None = None) -> None:
        if code is not None:
            self.code = code
        self.message = message
        self.method = method
        where = f"{method}: " if method else ""
        super().__init__(f"{where}{self.code.name}: {message}")


class NotFoundError(EnvClientError):
    """Unknown environment, session, task, tool or snapshot."""

    code = grpc.StatusCode.NOT_FOUND


EnvNotFound = NotFoundError  # the name trainers reach for first


class InvalidArgumentError(EnvClientError):
    """The request is malformed: bad JSON, arguments failing the tool's schema (the message names the field)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ResourceExhaustedError(EnvClientError):
    """A server limit was reached (sessions per process, payload size): back off or go elsewhere."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceededError(EnvClientError):
    """A tool call (or the RPC itself) ran past its deadline; nothing that call wrote was kept."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class AbortedError(EnvClientError):
    """The environment's code took down the process running the call (a crash, an exit, out of memory); the
    session is at its last committed state and takes new calls."""

    code = grpc.StatusCode.ABORTED


class FailedPreconditionError(EnvClientError):
    """The session cannot take this call now (closed or expired), or the server is shutting down."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class UnavailableError(EnvClientError):
    """The server (or the backend holding this session) cannot be reached; the message names a lost session."""

    code = grpc.StatusCode.UNAVAILABLE


class UnauthenticatedError(EnvClientError):
    """The server requires a bearer token and got none, or one it does not list (pass `token=` to the client, or
    set $AGENTWORLD_TOKEN / $AGENTWORLD_TOKEN_FILE)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class ClientClosedError(EnvClientError):
    """The client was closed before this call."""

    code = grpc.StatusCode.CANCELLED


_BY_CODE: dict[grpc.StatusCode, type[EnvClientError]] = {
    cls.code: cls
    for cls in (
        NotFoundError,
        InvalidArgumentError,
        ResourceExhaustedError,
        DeadlineExceededError,
        AbortedError,
        FailedPreconditionError,
        UnavailableError,
        UnauthenticatedError,
    )
}


def from_rpc_error(err: grpc.RpcError, method: str | None = None) -> EnvClientError:
    """The typed exception for a failed RPC (works for sync `grpc.RpcError` and `grpc.aio.AioRpcError`)."""
    code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
    details = err.details() if callable(getattr(err, "details", None)) else str(err)
    cls = _BY_CODE.get(code, EnvClientError)
    return cls(details or code.name, code=code, method=method)


__all__ = [
    "AbortedError",
    "ClientClosedError",
    "DeadlineExceededError",
    "EnvClientError",
    "EnvNotFound",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "from_rpc_error",
]
