"""Typed runtime errors. Transports map each class to one status code; messages say what to fix."""

from __future__ import annotations

ECHO_LIMIT = 64  # characters of a client-supplied value an error message repeats back


def clip(value: object, limit: int = ECHO_LIMIT) -> str:
    """`repr(value)`, cut to `limit` characters: error messages never echo a huge id or name back whole."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text)} characters)"


class EnvError(Exception):
    """Base class of every error the runtime raises on purpose."""


class NotFound(EnvError):
    """Unknown environment, session, task, tool or snapshot (or a snapshot that was released or expired)."""


class InvalidArgument(EnvError):
    """The request is malformed: bad JSON, arguments that fail the tool's schema, bad sizes."""


class ResourceExhausted(EnvError):
    """A limit was reached: sessions per process, the memory budget, the verification queue."""


class DeadlineExceeded(EnvError):
    """A tool call ran past its deadline; nothing it wrote was kept."""


class FailedPrecondition(EnvError):
    """The session cannot take this call in its current state (closed, expired), or the server is shutting down."""


class Aborted(EnvError):
    """The environment's code took down the process running the call (crash, exit, out of memory); nothing it
    wrote was kept and the session is at its last committed state."""


class Unavailable(EnvError):
    """The sandbox that runs environment code is not running (restarting, or it failed to start)."""


class BundleLoadError(EnvError):
    """A bundle's files, schema, seed or app failed to load."""
