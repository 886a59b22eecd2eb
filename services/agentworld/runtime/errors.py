"""Typed runtime errors. Transports map each class to one status code; messages say what to fix."""

from __future__ import annotations


class EnvError(Exception):
    """Base class of every error the runtime raises on purpose."""


class NotFound(EnvError):
    """Unknown environment, session, task, tool or snapshot."""


class InvalidArgument(EnvError):
    """The request is malformed: bad JSON, arguments that fail the tool's schema, bad sizes."""


class ResourceExhausted(EnvError):
    """A limit was reached (sessions per process, payload size)."""


class DeadlineExceeded(EnvError):
    """A tool call ran past its timeout; its writes were rolled back."""


class FailedPrecondition(EnvError):
    """The session cannot take this call in its current state (closed, or stuck in a runaway call)."""


class BundleLoadError(EnvError):
    """A bundle's schema, seed or app failed to load."""
